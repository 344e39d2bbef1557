//! Drives the sans-IO signaling [`Hub`] on one tokio task.
//!
//! Connection tasks send [`HubCommand`]s in; the task feeds them to the hub, drains its outputs
//! into each connection's bounded outbound queue, and wakes at the hub's deadline.

use std::collections::HashMap;
use std::time::Instant;

use signal::protocol::SessionDescription;
use signal::{
    ConnId, Frame, Hub, HubStats, Input, Output, PeerId, PeerSummary, RoomSummary, ServerMessage,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Frames queued for one connection before it counts as a slow consumer (close 4002).
pub(crate) const OUTBOUND_QUEUE: usize = 256;

/// What a connection task tells the hub task.
#[derive(Debug)]
pub(crate) enum HubCommand {
    /// A WebSocket connection opened; `tx` is its outbound queue (capacity `OUTBOUND_QUEUE + 1`).
    Connected {
        conn: ConnId,
        tx: mpsc::Sender<Outgoing>,
        source: Option<std::net::IpAddr>,
    },
    /// A frame arrived on it.
    Frame { conn: ConnId, frame: Frame },
    /// It ended; `graceful` when the client said goodbye (close frame without a code, 1000 or 1001).
    Disconnected { conn: ConnId, graceful: bool },
    /// Close every connection with 1001.
    Shutdown,
    /// Report the hub's counters.
    Stats(oneshot::Sender<HubStats>),
    /// The SFU's answer (or refusal) for a peer's `sfu` offer.
    FromSfu {
        peer: PeerId,
        message: ServerMessage,
    },
    /// Admin API: every room.
    Rooms(oneshot::Sender<Vec<RoomSummary>>),
    /// Admin API: one room's peers (`None`: no such room).
    RoomPeers {
        room: String,
        reply: oneshot::Sender<Option<Vec<PeerSummary>>>,
    },
    /// Admin API: remove `peer` from `room`; replies whether it was there.
    Kick {
        room: String,
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    /// Admin API: close `room`; replies how many peers it had.
    CloseRoom {
        room: String,
        reply: oneshot::Sender<usize>,
    },
    /// A chat message was committed.
    ChatStored {
        room: String,
        message: signal::ChatMessage,
    },
    /// A chat message could not be stored.
    ChatFailed { peer: PeerId, reason: String },
    /// A persistent room was created or changed (`Some`) or deleted (`None`).
    RoomSettings {
        room: String,
        settings: Option<signal::RoomSettings>,
        history: Option<Vec<signal::ChatMessage>>,
    },
}

/// The store as the hub task sees it: where chat goes, and how commits come back.
pub(crate) struct StoreLink {
    pub(crate) store: crate::store_task::StoreHandle,
    pub(crate) hub: mpsc::WeakSender<HubCommand>,
}

/// The SFU as the hub task sees it: where offers go, and how answers come back.
#[derive(Clone)]
pub(crate) struct SfuLink {
    pub(crate) sfu: crate::sfu_loop::SfuHandle,
    pub(crate) hub: mpsc::WeakSender<HubCommand>,
}

/// What the hub task tells a connection task.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Send this text frame.
    Text(String),
    /// Send a close frame with this code and reason, then end.
    Close(u16, &'static str),
}

/// Runs the hub until every command sender is gone.
pub(crate) async fn run(
    mut hub: Hub,
    mut commands: mpsc::Receiver<HubCommand>,
    sfu: Option<SfuLink>,
    counters: std::sync::Arc<crate::metrics::Counters>,
    store: StoreLink,
) {
    let mut links: HashMap<ConnId, mpsc::Sender<Outgoing>> = HashMap::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let input = tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(HubCommand::Connected { conn, tx, source }) => {
                    links.insert(conn, tx);
                    Input::Connected { conn, now: Instant::now(), source }
                }
                Some(HubCommand::Frame { conn, frame }) => {
                    Input::Frame { conn, now: Instant::now(), frame }
                }
                Some(HubCommand::Disconnected { conn, graceful }) => {
                    links.remove(&conn);
                    Input::Disconnected { conn, now: Instant::now(), graceful }
                }
                Some(HubCommand::Shutdown) => Input::Shutdown,
                Some(HubCommand::Stats(reply)) => {
                    let _ = reply.send(hub.stats());
                    continue;
                }
                Some(HubCommand::FromSfu { peer, message }) => Input::FromSfu { peer, message },
                Some(HubCommand::Rooms(reply)) => {
                    let _ = reply.send(hub.rooms());
                    continue;
                }
                Some(HubCommand::RoomPeers { room, reply }) => {
                    let _ = reply.send(hub.room_peers(&room));
                    continue;
                }
                Some(HubCommand::Kick { room, peer, reply }) => {
                    let present = hub
                        .room_peers(&room)
                        .is_some_and(|peers| peers.iter().any(|p| p.id == peer));
                    let _ = reply.send(present);
                    if !present {
                        continue;
                    }
                    Input::Kick { peer }
                }
                Some(HubCommand::CloseRoom { room, reply }) => {
                    let _ = reply.send(hub.room_peers(&room).map_or(0, |p| p.len()));
                    Input::CloseRoom { room }
                }
                Some(HubCommand::ChatStored { room, message }) => {
                    Input::ChatStored { room, message }
                }
                Some(HubCommand::ChatFailed { peer, reason }) => Input::ChatFailed { peer, reason },
                Some(HubCommand::RoomSettings { room, settings, history }) => {
                    Input::RoomSettings { room, settings, history }
                }
            },
            () = sleep_until(deadline) => Input::Timeout(Instant::now()),
        };
        deadline = drive(&mut hub, &mut links, input, sfu.as_ref(), &counters, &store);
    }
}

/// Feeds one input and drains the outputs; connections found too slow to read are dropped and
/// fed back as disconnects.
fn drive(
    hub: &mut Hub,
    links: &mut HashMap<ConnId, mpsc::Sender<Outgoing>>,
    input: Input,
    sfu: Option<&SfuLink>,
    counters: &crate::metrics::Counters,
    store: &StoreLink,
) -> Option<Instant> {
    let mut pending = vec![input];
    let mut deadline = None;
    while let Some(input) = pending.pop() {
        hub.handle_input(input);
        loop {
            match hub.poll_output() {
                Output::Send(conn, message) => {
                    let Some(tx) = links.get(&conn) else { continue };
                    // One slot stays free for the close frame.
                    if tx.capacity() > 1 {
                        let _ = tx.try_send(Outgoing::Text(message.to_json()));
                    } else {
                        warn!(
                            conn = conn.0,
                            "outbound queue full; closing a slow consumer"
                        );
                        crate::metrics::Counters::bump(&counters.slow_consumers);
                        let code = signal::CloseCode::SlowConsumer;
                        let _ = tx.try_send(Outgoing::Close(code.code(), code.reason()));
                        links.remove(&conn);
                        pending.push(Input::Disconnected {
                            conn,
                            now: Instant::now(),
                            graceful: false,
                        });
                    }
                }
                Output::Close(conn, code) => {
                    debug!(conn = conn.0, code = code.code(), "closing connection");
                    if let Some(tx) = links.remove(&conn) {
                        let _ = tx.try_send(Outgoing::Close(code.code(), code.reason()));
                    }
                }
                Output::ToSfu { room, peer, sdp } => match sfu {
                    Some(link) => {
                        let publish = hub.grants(peer).is_none_or(|g| g.publish);
                        offer_to_sfu(link.clone(), room, peer, sdp, publish);
                    }
                    None => pending.push(Input::FromSfu {
                        peer,
                        message: ServerMessage::Sfu {
                            description: None,
                            error: Some("this server runs no SFU".into()),
                        },
                    }),
                },
                Output::StoreChat {
                    room,
                    peer,
                    name,
                    text,
                } => {
                    let queued = store
                        .store
                        .append_chat(store.hub.clone(), room, peer, name, text);
                    if !queued {
                        pending.push(Input::ChatFailed {
                            peer,
                            reason: "the server is busy; try again".into(),
                        });
                    }
                }
                Output::SfuLeft { room, peer } => {
                    if let Some(link) = sfu {
                        link.sfu.leave_label(&room, &peer.to_string());
                    }
                }
                Output::Timeout(next) => {
                    deadline = next;
                    break;
                }
            }
        }
    }
    deadline
}

/// Hands an offer to the SFU thread and brings its answer back to the hub.
/// `publish`: whether the peer's token grants sending media (the SFU ignores media it adds
/// later by renegotiation otherwise).
fn offer_to_sfu(link: SfuLink, room: String, peer: PeerId, sdp: String, publish: bool) {
    tokio::spawn(async move {
        let result = link
            .sfu
            .join_with_grants(&room, &peer.to_string(), sfu::Role::Member, sdp, publish)
            .await;
        let message = match result {
            Ok(joined) => ServerMessage::Sfu {
                description: Some(SessionDescription {
                    kind: "answer".into(),
                    sdp: joined.answer,
                }),
                error: None,
            },
            Err(err) => ServerMessage::Sfu {
                description: None,
                error: Some(err.to_string()),
            },
        };
        if let Some(hub) = link.hub.upgrade() {
            let _ = hub.send(HubCommand::FromSfu { peer, message }).await;
        }
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
