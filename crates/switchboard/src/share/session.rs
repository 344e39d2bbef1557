//! Meeting the other side of a transfer: signaling room, PAKE pairing, then a peer connection
//! whose DTLS fingerprint the pairing authenticated.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pairing::{Code, Pairing, PairingError, Role, Step};
use peer::{ChannelId, Connection, IceServer, PeerEvent, PeerOptions, SignalEvent, Signaling};
use serde_json::{Value, json};
use tracing::debug;

/// The label of the data channel that carries the transfer protocol.
pub(crate) const CHANNEL_LABEL: &str = "switchboard-transfer";
/// How long pairing plus connecting may take once both sides are in the room.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected, authenticated peer and the open transfer channel.
pub(crate) struct Meeting {
    pub(crate) conn: Connection,
    pub(crate) channel: ChannelId,
    /// The other side's peer id in the signaling room.
    pub(crate) peer: String,
    /// The other side's DTLS fingerprint, as the pairing authenticated it.
    pub(crate) remote_fingerprint: String,
}

/// Why a meeting did not happen; `WrongCode` is reported differently from plain failures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MeetError {
    /// The PAKE failed: the codes differ.
    #[error(
        "wrong code: the other side typed a different code (or someone guessed). Nothing was sent."
    )]
    WrongCode,
    /// The other side left or the connection failed; a sender may wait for another attempt.
    #[error("{0}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for MeetError {
    fn from(err: anyhow::Error) -> Self {
        MeetError::Failed(err)
    }
}

/// The peer id of the first other participant named `name`, waiting for one to join.
pub(crate) async fn wait_for_peer(signaling: &mut Signaling, name: &str) -> Result<String> {
    // The most recent one first: an earlier one may be a receiver that has since restarted.
    if let Some(index) = signaling.welcome.peers.iter().rposition(|p| p.name == name) {
        return Ok(signaling.welcome.peers.remove(index).id);
    }
    loop {
        match signaling.recv().await {
            SignalEvent::PeerJoined(peer) if peer.name == name => return Ok(peer.id),
            SignalEvent::Closed(reason) => bail!("the signaling connection closed: {reason}"),
            other => debug!(?other, "waiting for a peer"),
        }
    }
}

/// Pairs with `peer` over the code and connects; the sender offers the data channel.
pub(crate) async fn meet(
    signaling: &mut Signaling,
    code: &Code,
    role: Role,
    peer: &str,
    options: &PeerOptions,
) -> Result<Meeting, MeetError> {
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        meet_inner(signaling, code, role, peer, options),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(MeetError::Failed(anyhow!(
            "could not connect to the other side within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

async fn meet_inner(
    signaling: &mut Signaling,
    code: &Code,
    role: Role,
    peer: &str,
    options: &PeerOptions,
) -> Result<Meeting, MeetError> {
    let mut options = options.clone();
    options.relay = IceServer::relay_server(&signaling.welcome.ice_servers).await;
    options.relay_tcp = IceServer::relay_server_tcp(&signaling.welcome.ice_servers).await;
    let mut conn = Connection::new(&options).await?;
    let local_fingerprint = conn.local_fingerprint();
    let (mut pairing, first) =
        Pairing::start(code, role, &local_fingerprint).map_err(|err| anyhow!("pairing: {err}"))?;
    signaling.app(peer, first);
    let remote_fingerprint = pair(signaling, &mut pairing, peer).await?;
    debug!(%remote_fingerprint, "pairing verified");

    let mut answered = false;
    if role == Role::Sender {
        let offer = conn.offer_with_channel(CHANNEL_LABEL)?;
        signaling.signal(
            peer,
            json!({"description": {"type": "offer", "sdp": offer}}),
        );
    }
    loop {
        tokio::select! {
            event = signaling.recv() => match event {
                SignalEvent::Signal { from, message } if from == peer => {
                    if let Some(description) = message.get("description") {
                        let sdp = description["sdp"].as_str().unwrap_or_default();
                        check_fingerprint(sdp, &remote_fingerprint)?;
                        match (role, description["type"].as_str()) {
                            (Role::Sender, Some("answer")) if !answered => {
                                conn.accept_answer(sdp)?;
                                answered = true;
                            }
                            (Role::Receiver, Some("offer")) if !answered => {
                                let answer = conn.accept_offer(sdp)?;
                                signaling.signal(
                                    peer,
                                    json!({"description": {"type": "answer", "sdp": answer}}),
                                );
                                answered = true;
                            }
                            (_, kind) => debug!(?kind, "ignoring a description"),
                        }
                    } else if let Some(candidate) = message.get("candidate") {
                        if let Some(text) = candidate.get("candidate").and_then(Value::as_str)
                            && !text.is_empty()
                        {
                            conn.add_remote_candidate(text);
                        }
                    } else if let Some(abort) = message.get("app").and_then(|a| a.get("abort")) {
                        return Err(anyhow!("the other side gave up: {abort}").into());
                    }
                }
                SignalEvent::PeerLeft(id) if id == peer => {
                    return Err(anyhow!("the other side left before the connection was up").into());
                }
                SignalEvent::Closed(reason) => {
                    return Err(anyhow!("the signaling connection closed: {reason}").into());
                }
                _ => {}
            },
            event = conn.next_event() => match event {
                PeerEvent::ChannelOpen(channel, label) if label == CHANNEL_LABEL => {
                    return Ok(Meeting {
                        conn,
                        channel,
                        peer: peer.to_owned(),
                        remote_fingerprint,
                    });
                }
                PeerEvent::Closed(reason) => {
                    return Err(anyhow!("the peer connection failed: {reason}").into());
                }
                other => debug!(?other, "connecting"),
            },
        }
    }
}

/// Runs the PAKE with `peer` until both fingerprints are authenticated.
async fn pair(
    signaling: &mut Signaling,
    pairing: &mut Pairing,
    peer: &str,
) -> Result<String, MeetError> {
    loop {
        match signaling.recv().await {
            SignalEvent::Signal { from, message } if from == peer => {
                let Some(app) = message.get("app") else {
                    debug!("ignoring a non-pairing signal before pairing finished");
                    continue;
                };
                match pairing.handle(app) {
                    Ok(Step::Send(messages)) => {
                        for message in messages {
                            signaling.app(peer, message);
                        }
                    }
                    Ok(Step::Verified { remote_fingerprint }) => return Ok(remote_fingerprint),
                    Err(err) => {
                        if let Some(reply) = err.reply() {
                            signaling.app(peer, reply);
                        }
                        return Err(pairing_failure(err));
                    }
                }
            }
            SignalEvent::Signal { from, .. } => {
                signaling.app(&from, json!({"abort": "busy"}));
            }
            SignalEvent::PeerLeft(id) if id == peer => {
                return Err(anyhow!("the other side left during pairing").into());
            }
            SignalEvent::Closed(reason) => {
                return Err(anyhow!("the signaling connection closed: {reason}").into());
            }
            _ => {}
        }
    }
}

fn pairing_failure(err: PairingError) -> MeetError {
    if err.is_wrong_code() {
        MeetError::WrongCode
    } else {
        MeetError::Failed(anyhow!("pairing failed: {err}"))
    }
}

/// Refuses a description whose certificate is not the one the pairing authenticated.
pub(crate) fn check_fingerprint(sdp: &str, authenticated: &str) -> Result<()> {
    let offered = pairing::sdp_fingerprint(sdp).context("the description has no fingerprint")?;
    if offered != authenticated {
        bail!(
            "the other side's certificate does not match the one the code authenticated; \
             someone between you (the signaling server?) tampered with the connection"
        );
    }
    Ok(())
}

/// Applies what the other side signals once connected: an ICE restart's offer (we gather again
/// and answer) or answer, and trickled candidates. Returns `false` for anything else, which the
/// caller handles. Descriptions must still carry the certificate the pairing authenticated.
pub(crate) async fn renegotiate(
    conn: &mut Connection,
    peer: &str,
    remote_fingerprint: &str,
    signaling: &mut Signaling,
    message: &Value,
) -> Result<bool> {
    if let Some(description) = message.get("description") {
        let sdp = description["sdp"].as_str().unwrap_or_default();
        check_fingerprint(sdp, remote_fingerprint)?;
        match description["type"].as_str() {
            Some("offer") => {
                conn.regather().await?;
                let answer = conn.accept_offer(sdp)?;
                signaling.signal(
                    peer,
                    json!({"description": {"type": "answer", "sdp": answer}}),
                );
                debug!("answered an ICE restart");
            }
            Some("answer") if conn.has_pending_offer() => {
                conn.accept_answer(sdp)?;
            }
            kind => debug!(?kind, "ignoring a description"),
        }
        return Ok(true);
    }
    if let Some(candidate) = message.get("candidate") {
        if let Some(text) = candidate.get("candidate").and_then(Value::as_str)
            && !text.is_empty()
        {
            conn.add_remote_candidate(text);
        }
        return Ok(true);
    }
    Ok(false)
}
