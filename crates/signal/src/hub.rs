//! The room/presence state machine behind `/ws`.
//!
//! A [`Hub`] holds every connection, peer and room of one server. The glue feeds it
//! [`Input`]s — a connection opened, a frame arrived, a connection ended, time passed — and after
//! **every** input drains [`Hub::poll_output`] until it returns [`Output::Timeout`], sending the
//! frames and closing the connections it names, then calls back with [`Input::Timeout`] at the
//! deadline. The hub never reads the clock: every input carries `now`.
//!
//! Connections and peers are separate on purpose: a peer outlives a dropped connection for the
//! resume grace, and a new connection can take it back with the resume token.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};
use tracing::{debug, trace};

use crate::names::{DisplayName, RoomName};
use crate::protocol::{
    self, ChatMessage, ClientMessage, ErrorCode, IceServer, Join, LeaveReason, Limits, PeerId,
    PeerInfo, RoomSettings, ServerMessage, SignalFrom, SignalTo, Welcome,
};
use crate::rate::TokenBucket;

mod chat;

/// A connection that has more than 5 × `message_burst` messages dropped within this window is
/// closed with 1008.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// Identifies one WebSocket connection; chosen by the glue, unique for the hub's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Limits and settings of a hub. The defaults are the documented ones (`docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Largest text or binary frame accepted; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    /// Most peers in one room (including peers inside their resume grace).
    pub max_peers_per_room: usize,
    /// Sustained messages per second per connection.
    pub messages_per_second: u32,
    /// Burst size of the per-connection message rate.
    pub message_burst: u32,
    /// How long a peer whose connection dropped may be resumed.
    pub resume_grace: Duration,
    /// A connection silent for this long is closed with 4001.
    pub idle_timeout: Duration,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Signals kept for a peer inside its resume grace.
    pub max_queued_signals: usize,
    /// The ICE servers announced in `welcome`.
    pub ice_servers: Vec<IceServer>,
    /// More ICE servers made for each peer as it joins (TURN entries with short-lived
    /// credentials); appended after `ice_servers`.
    pub ice_server_source: Option<IceServerSource>,
    /// Checks the token of every `join` (fresh or resume). `None`: rooms are open and every
    /// peer has every grant.
    pub authorizer: Option<Authorizer>,
    /// Longest `chat` text, in characters.
    pub max_chat_chars: usize,
    /// Sustained `chat` messages per second per connection (within the general message rate).
    pub chat_per_second: u32,
    /// Burst of the chat rate.
    pub chat_burst: u32,
    /// Most stored messages a joiner receives in `chat_history`.
    pub chat_history_on_join: usize,
    /// Joins (fresh or resume) per second from one client address, sustained; bursts of twice
    /// as many. 0 disables the limit.
    pub joins_per_sec_per_ip: u32,
    /// Most client addresses the per-address join limit tracks.
    pub limit_table_size: usize,
}

/// What a joined peer may do, as the [`Authorizer`] found in its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGrants {
    /// The token's identity (`sub`), shown to administrators; `None` without auth.
    pub identity: Option<String>,
    /// May send media through the SFU.
    pub publish: bool,
}

impl PeerGrants {
    /// Everything allowed: rooms without auth.
    pub fn open() -> Self {
        PeerGrants {
            identity: None,
            publish: true,
        }
    }
}

/// Why the [`Authorizer`] refused a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRefusal {
    /// Not authenticated (`unauthorized`, close 4401) or not allowed (`forbidden`, close 4403).
    pub forbidden: bool,
    /// The explanation sent in the error frame.
    pub message: String,
}

/// The signature of an [`Authorizer`]: `(room, token) -> grants or refusal`.
pub type AuthorizeFn = dyn Fn(&str, Option<&str>) -> Result<PeerGrants, JoinRefusal> + Send + Sync;

/// The function that checks a join's token for a room. Supplied by the glue, which reads the
/// clock and holds the API secret; the hub stays sans-IO.
#[derive(Clone)]
pub struct Authorizer(pub std::sync::Arc<AuthorizeFn>);

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorizer(..)")
    }
}

impl PartialEq for Authorizer {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Authorizer {}

/// A room as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// Room name.
    pub name: String,
    /// Peers in the room, including those inside their resume grace.
    pub peers: usize,
    /// Of these, peers whose SFU offer was answered.
    pub sfu_peers: usize,
}

/// A peer as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    /// Peer id.
    pub id: PeerId,
    /// Display name.
    pub name: String,
    /// The token's identity, when auth is on.
    pub identity: Option<String>,
    /// Whether its connection is attached (false inside the resume grace).
    pub connected: bool,
    /// Whether the SFU answered its offer.
    pub sfu: bool,
    /// Whether it may send media through the SFU.
    pub publish: bool,
}

/// Makes per-peer ICE server entries, e.g. TURN REST credentials naming the peer. Supplied by
/// the glue, which may read the clock and hold secrets.
#[derive(Clone)]
pub struct IceServerSource(pub std::sync::Arc<dyn Fn(PeerId) -> Vec<IceServer> + Send + Sync>);

impl std::fmt::Debug for IceServerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IceServerSource(..)")
    }
}

impl PartialEq for IceServerSource {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for IceServerSource {}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_frame_bytes: 64 * 1024,
            max_peers_per_room: 50,
            messages_per_second: 50,
            message_burst: 100,
            resume_grace: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
            max_connections: 20_000,
            max_queued_signals: 256,
            ice_servers: Vec::new(),
            ice_server_source: None,
            authorizer: None,
            max_chat_chars: 2000,
            chat_per_second: 5,
            chat_burst: 20,
            chat_history_on_join: 100,
            joins_per_sec_per_ip: 10,
            limit_table_size: ratelimit::DEFAULT_TABLE_SIZE,
        }
    }
}

/// A frame received on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame of this many bytes (its content never matters: v1 is text only).
    Binary(usize),
    /// A WebSocket ping or pong: activity, nothing to answer at this level.
    Control,
}

/// Something that happened, for [`Hub::handle_input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A WebSocket connection was accepted.
    Connected {
        /// Its id.
        conn: ConnId,
        /// Current time.
        now: Instant,
        /// The client's address, for the per-address limits (`None`: not limited by address).
        source: Option<std::net::IpAddr>,
    },
    /// A frame arrived.
    Frame {
        /// On which connection.
        conn: ConnId,
        /// Current time.
        now: Instant,
        /// The frame.
        frame: Frame,
    },
    /// The connection ended. `graceful` when the client sent a close frame with 1000 or 1001:
    /// its peer leaves at once; otherwise the peer enters its resume grace.
    Disconnected {
        /// Which connection.
        conn: ConnId,
        /// Current time.
        now: Instant,
        /// Whether the client closed it deliberately.
        graceful: bool,
    },
    /// Time has passed (the deadline from [`Output::Timeout`], or later).
    Timeout(Instant),
    /// The server is shutting down: every connection is closed with 1001, and so is any that
    /// connects afterwards.
    Shutdown,
    /// An administrator removes a peer: it is told (`kicked`, close 4003) and the others see it
    /// leave with reason `kicked`.
    Kick {
        /// Who.
        peer: PeerId,
    },
    /// An administrator closes a room: every peer in it is told (`room_closed`, close 4004) and
    /// removed. The name may be joined again afterwards.
    CloseRoom {
        /// The room's name.
        room: String,
    },
    /// A message from the SFU for one peer (its answer); dropped when the peer is detached.
    FromSfu {
        /// To whom.
        peer: PeerId,
        /// The message, normally [`ServerMessage::Sfu`].
        message: ServerMessage,
    },
    /// A persistent room's settings, loaded at start or changed through the admin API
    /// (`Some`), or the room was deleted (`None`: it lives on only while people are in it).
    RoomSettings {
        /// The room.
        room: String,
        /// Its settings.
        settings: Option<RoomSettings>,
        /// Its newest stored chat, oldest first; `None` keeps what the hub has.
        history: Option<Vec<ChatMessage>>,
    },
    /// A chat message from [`Output::StoreChat`] was committed: the hub broadcasts it.
    ChatStored {
        /// The room.
        room: String,
        /// The committed message.
        message: ChatMessage,
    },
    /// A chat message from [`Output::StoreChat`] could not be stored: its sender is told.
    ChatFailed {
        /// The sender.
        peer: PeerId,
        /// Why, for the sender.
        reason: String,
    },
}

/// What the glue must do, from [`Hub::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Send this message on this connection.
    Send(ConnId, ServerMessage),
    /// Close this connection with this code and reason; the hub has already forgotten it.
    Close(ConnId, CloseCode),
    /// A peer sent the SFU an offer: answer it with [`Input::FromSfu`].
    ToSfu {
        /// The peer's room.
        room: String,
        /// Who.
        peer: PeerId,
        /// The offer's SDP.
        sdp: String,
    },
    /// A chat message to commit to the room's history; answer with [`Input::ChatStored`] once it
    /// is committed, or [`Input::ChatFailed`].
    StoreChat {
        /// The room.
        room: String,
        /// The sender.
        peer: PeerId,
        /// The sender's display name.
        name: String,
        /// The text (already checked against the limits).
        text: String,
    },
    /// A peer left its room: the SFU drops it if it has it.
    SfuLeft {
        /// The room.
        room: String,
        /// Who.
        peer: PeerId,
    },
    /// Nothing more to do until this deadline (`None`: until the next input).
    Timeout(Option<Instant>),
}

/// WebSocket close codes the hub uses (`docs/protocol.md`, "Close codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1008: kept flooding after `rate_limited`.
    PolicyViolation,
    /// 1009: a frame over `max_frame_bytes`.
    MessageTooBig,
    /// 1013: the server is at its connection limit.
    TryAgainLater,
    /// 4000: another connection resumed this peer.
    Replaced,
    /// 4001: no frame for `idle_timeout`.
    IdleTimeout,
    /// 4002: the client did not read its frames.
    SlowConsumer,
    /// 4003: an administrator removed the peer.
    Kicked,
    /// 4004: an administrator closed the room.
    RoomClosed,
    /// 4401: `join` without a valid token.
    Unauthorized,
    /// 4403: `join` with a token that does not allow it.
    Forbidden,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::TryAgainLater => 1013,
            CloseCode::Replaced => 4000,
            CloseCode::IdleTimeout => 4001,
            CloseCode::SlowConsumer => 4002,
            CloseCode::Kicked => 4003,
            CloseCode::RoomClosed => 4004,
            CloseCode::Unauthorized => 4401,
            CloseCode::Forbidden => 4403,
        }
    }

    /// The close reason text.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "server shutting down",
            CloseCode::PolicyViolation => "message rate exceeded",
            CloseCode::MessageTooBig => "frame too large",
            CloseCode::TryAgainLater => "server busy",
            CloseCode::Replaced => "resumed on another connection",
            CloseCode::IdleTimeout => "idle timeout",
            CloseCode::SlowConsumer => "client too slow to read",
            CloseCode::Kicked => "removed by an administrator",
            CloseCode::RoomClosed => "room closed by an administrator",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
        }
    }
}

/// Counters for metrics; monotonic unless named as a current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connections open now.
    pub connections: usize,
    /// Rooms that exist now.
    pub rooms: usize,
    /// Peers in rooms now (including those inside their resume grace).
    pub peers: usize,
    /// Frames received.
    pub frames_in: u64,
    /// Successful joins (fresh).
    pub joins: u64,
    /// Successful resumes.
    pub resumes: u64,
    /// Signals relayed (delivered or queued).
    pub signals_relayed: u64,
    /// Error frames sent.
    pub errors_sent: u64,
    /// Messages dropped for the rate limit.
    pub rate_limited: u64,
    /// Connections closed by the hub, any code.
    pub closed_by_server: u64,
    /// Peers removed when their resume grace ran out.
    pub grace_expired: u64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Connections refused at `max_connections` (1013).
    pub connections_refused: u64,
    /// Frames refused as malformed: bad JSON, unknown type, binary, a bad `signal` or `sfu`.
    pub malformed_frames: u64,
    /// Frames over `max_frame_bytes` (closed with 1009).
    pub oversized_frames: u64,
    /// Connections closed with 1008 for flooding.
    pub flood_closed: u64,
    /// Chat messages committed and broadcast.
    pub chats_stored: u64,
    /// Joins refused for the per-address join rate.
    pub joins_rate_limited: u64,
}

/// Signaling for one server: connections, peers and rooms.
pub struct Hub {
    config: HubConfig,
    rng: ChaCha12Rng,
    conns: HashMap<ConnId, Conn>,
    peers: HashMap<PeerId, Peer>,
    rooms: HashMap<RoomName, Room>,
    persistent: HashMap<RoomName, chat::Persistent>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    outputs: VecDeque<Output>,
    stats: HubStats,
    /// After [`Input::Shutdown`], new connections are closed with 1001 at once.
    shutting_down: bool,
    /// Joins per client address.
    joins_per_ip: ratelimit::PerIp,
}

/// A timer in the hub's table; checked against the current state when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The connection may have been idle for `idle_timeout`.
    Idle(ConnId),
    /// The peer's resume grace may have run out (if it is still absent in that same `epoch`).
    Grace { peer: PeerId, epoch: u64 },
}

struct Conn {
    peer: Option<PeerId>,
    source: Option<std::net::IpAddr>,
    last_seen: Instant,
    bucket: TokenBucket,
    /// Messages dropped for the rate limit since `drop_window_start`.
    dropped: u32,
    drop_window_start: Instant,
    last_rate_error: Option<Instant>,
    chat: TokenBucket,
}

struct Peer {
    name: DisplayName,
    room: RoomName,
    conn: Option<ConnId>,
    resume_token: String,
    /// Counts detachments, so an old grace timer cannot remove a peer that resumed and dropped again.
    epoch: u64,
    queued: VecDeque<ServerMessage>,
    grants: PeerGrants,
    /// The SFU answered its offer.
    sfu: bool,
}

struct Room {
    /// In join order.
    peers: Vec<PeerId>,
}

impl Hub {
    /// A hub with `config`, drawing peer ids and resume tokens from a CSPRNG seeded with `seed`
    /// (the glue passes operating-system randomness; tests a fixed seed).
    pub fn new(config: HubConfig, seed: [u8; 32]) -> Self {
        let config_joins = (config.joins_per_sec_per_ip, config.limit_table_size);
        Hub {
            config,
            rng: ChaCha12Rng::from_seed(seed),
            conns: HashMap::new(),
            peers: HashMap::new(),
            rooms: HashMap::new(),
            persistent: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            stats: HubStats::default(),
            shutting_down: false,
            joins_per_ip: ratelimit::PerIp::new(
                config_joins.0,
                config_joins.0.saturating_mul(2),
                config_joins.1,
            ),
        }
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Every room with its peer counts, sorted by name.
    pub fn rooms(&self) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|(name, room)| RoomSummary {
                name: name.as_str().to_owned(),
                peers: room.peers.len(),
                sfu_peers: room
                    .peers
                    .iter()
                    .filter(|p| self.peers.get(p).is_some_and(|p| p.sfu))
                    .count(),
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// The peers of `room` in join order, or `None` when no such room exists.
    pub fn room_peers(&self, room: &str) -> Option<Vec<PeerSummary>> {
        let room = self.rooms.get(&RoomName::parse(room).ok()?)?;
        Some(
            room.peers
                .iter()
                .filter_map(|id| {
                    let p = self.peers.get(id)?;
                    Some(PeerSummary {
                        id: *id,
                        name: p.name.as_str().to_owned(),
                        identity: p.grants.identity.clone(),
                        connected: p.conn.is_some(),
                        sfu: p.sfu,
                        publish: p.grants.publish,
                    })
                })
                .collect(),
        )
    }

    /// What `peer` may do, while it exists.
    pub fn grants(&self, peer: PeerId) -> Option<&PeerGrants> {
        self.peers.get(&peer).map(|p| &p.grants)
    }

    /// Current counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            connections: self.conns.len(),
            rooms: self.rooms.len(),
            peers: self.peers.len(),
            ..self.stats.clone()
        }
    }

    /// Feeds one input. Drain [`Hub::poll_output`] until [`Output::Timeout`] before the next.
    pub fn handle_input(&mut self, input: Input) {
        debug_assert!(
            self.outputs.is_empty(),
            "poll_output must be drained after every input"
        );
        match input {
            Input::Connected { conn, now, source } => self.on_connected(conn, now, source),
            Input::Frame { conn, now, frame } => self.on_frame(conn, now, frame),
            Input::Disconnected {
                conn,
                now,
                graceful,
            } => {
                if let Some(conn) = self.conns.remove(&conn) {
                    self.release_peer(conn.peer, graceful, now);
                }
            }
            Input::Timeout(now) => self.on_timeout(now),
            Input::FromSfu { peer, message } => {
                let answered = matches!(
                    message,
                    ServerMessage::Sfu {
                        description: Some(_),
                        ..
                    }
                );
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.sfu |= answered;
                    if let Some(conn) = p.conn {
                        self.outputs.push_back(Output::Send(conn, message));
                    }
                }
            }
            Input::Kick { peer } => self.kick(peer),
            Input::CloseRoom { room } => self.close_room(&room),
            Input::RoomSettings {
                room,
                settings,
                history,
            } => self.on_room_settings(&room, settings, history),
            Input::ChatStored { room, message } => self.on_chat_stored(&room, message),
            Input::ChatFailed { peer, reason } => self.on_chat_failed(peer, reason),
            Input::Shutdown => {
                self.shutting_down = true;
                let all: Vec<ConnId> = self.conns.keys().copied().collect();
                for conn in all {
                    self.close(conn, CloseCode::GoingAway, None);
                }
            }
        }
    }

    /// The next thing to do; [`Output::Timeout`] when there is nothing until the deadline.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        Output::Timeout(self.timers.peek().map(|Reverse((deadline, _))| *deadline))
    }

    fn on_connected(&mut self, conn: ConnId, now: Instant, source: Option<std::net::IpAddr>) {
        if self.shutting_down {
            self.outputs
                .push_back(Output::Close(conn, CloseCode::GoingAway));
            self.stats.closed_by_server += 1;
            return;
        }
        if self.conns.len() >= self.config.max_connections {
            self.stats.connections_refused += 1;
            self.stats.errors_sent += 1;
            self.outputs.push_back(Output::Send(
                conn,
                ServerMessage::error(
                    ErrorCode::ServerBusy,
                    "the server is at its connection limit",
                ),
            ));
            self.outputs
                .push_back(Output::Close(conn, CloseCode::TryAgainLater));
            self.stats.closed_by_server += 1;
            return;
        }
        self.stats.connections_total += 1;
        let bucket = TokenBucket::new(
            self.config.messages_per_second,
            self.config.message_burst,
            now,
        );
        self.conns.insert(
            conn,
            Conn {
                peer: None,
                source,
                last_seen: now,
                bucket,
                dropped: 0,
                drop_window_start: now,
                last_rate_error: None,
                chat: TokenBucket::new(self.config.chat_per_second, self.config.chat_burst, now),
            },
        );
        self.arm(now + self.config.idle_timeout, Timer::Idle(conn));
    }

    fn on_frame(&mut self, conn_id: ConnId, now: Instant, frame: Frame) {
        let max_frame = self.config.max_frame_bytes;
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            trace!(conn = conn_id.0, "frame for a closed connection");
            return;
        };
        self.stats.frames_in += 1;
        conn.last_seen = now;
        if !conn.bucket.try_take(now) {
            self.stats.rate_limited += 1;
            if now.saturating_duration_since(conn.drop_window_start) > FLOOD_WINDOW {
                conn.drop_window_start = now;
                conn.dropped = 0;
            }
            conn.dropped += 1;
            if conn.dropped > 5 * self.config.message_burst {
                debug!(conn = conn_id.0, "closing a flooding connection");
                self.stats.flood_closed += 1;
                self.close(conn_id, CloseCode::PolicyViolation, Some(now));
                return;
            }
            let due = conn
                .last_rate_error
                .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1));
            if due {
                conn.last_rate_error = Some(now);
                self.send_error(
                    conn_id,
                    ErrorCode::RateLimited,
                    "message dropped: over the message rate",
                );
            }
            return;
        }
        let text = match frame {
            Frame::Text(text) if text.len() > max_frame => {
                self.stats.oversized_frames += 1;
                self.close(conn_id, CloseCode::MessageTooBig, Some(now));
                return;
            }
            Frame::Binary(len) if len > max_frame => {
                self.stats.oversized_frames += 1;
                self.close(conn_id, CloseCode::MessageTooBig, Some(now));
                return;
            }
            Frame::Text(text) => text,
            Frame::Binary(_) => {
                self.stats.malformed_frames += 1;
                self.send_error(
                    conn_id,
                    ErrorCode::BinaryUnsupported,
                    "binary frames are not part of protocol v1",
                );
                return;
            }
            Frame::Control => return,
        };
        match protocol::parse_client_frame(&text) {
            Ok(ClientMessage::Join(join)) => self.on_join(conn_id, join, now),
            Ok(ClientMessage::Signal(signal)) => self.on_signal(conn_id, signal),
            Ok(ClientMessage::Sfu(offer)) => {
                let joined = self
                    .conns
                    .get(&conn_id)
                    .and_then(|c| c.peer)
                    .and_then(|peer| Some((peer, self.peers.get(&peer)?.room.as_str().to_owned())));
                let publish = joined
                    .as_ref()
                    .and_then(|(peer, _)| self.peers.get(peer))
                    .is_none_or(|p| p.grants.publish);
                match joined {
                    Some(_) if !publish && sdp_sends_media(&offer.description.sdp) => self
                        .send_error(
                            conn_id,
                            ErrorCode::Forbidden,
                            "your token does not grant publish: offer to receive only \
                             (recvonly), or ask for a token with the publish grant",
                        ),
                    Some((peer, room)) => self.outputs.push_back(Output::ToSfu {
                        room,
                        peer,
                        sdp: offer.description.sdp,
                    }),
                    None => self.send_error(conn_id, ErrorCode::NotJoined, "join a room first"),
                }
            }
            Ok(ClientMessage::Leave) => {
                match self.conns.get_mut(&conn_id).and_then(|c| c.peer.take()) {
                    Some(peer) => self.remove_peer(peer, LeaveReason::Left),
                    None => self.send_error(conn_id, ErrorCode::NotJoined, "not in a room"),
                }
            }
            Ok(ClientMessage::Chat { text }) => self.on_chat(conn_id, text, now),
            Ok(ClientMessage::Ping { id }) => {
                self.outputs
                    .push_back(Output::Send(conn_id, ServerMessage::Pong { id }));
            }
            Err(err) => {
                self.stats.malformed_frames += 1;
                self.send_error(conn_id, err.code, err.message);
            }
        }
    }

    fn on_join(&mut self, conn_id: ConnId, join: Join, now: Instant) {
        if self.conns.get(&conn_id).is_some_and(|c| c.peer.is_some()) {
            return self.send_error(conn_id, ErrorCode::AlreadyJoined, "already in a room");
        }
        let source = self.conns.get(&conn_id).and_then(|c| c.source);
        if let Some(ip) = source
            && !self.joins_per_ip.try_take(ip, now)
        {
            self.stats.joins_rate_limited += 1;
            return self.send_error(
                conn_id,
                ErrorCode::RateLimited,
                "join refused: too many joins from your address; try again in a second",
            );
        }
        if join.v != protocol::PROTOCOL_VERSION {
            return self.send_error(
                conn_id,
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol version {}",
                    protocol::PROTOCOL_VERSION
                ),
            );
        }
        let room = match RoomName::parse(&join.room) {
            Ok(room) => room,
            Err(why) => {
                return self.send_error(
                    conn_id,
                    ErrorCode::BadRoomName,
                    format!("the room name {why}"),
                );
            }
        };
        let name = match DisplayName::parse(&join.name) {
            Ok(name) => name,
            Err(why) => {
                return self.send_error(
                    conn_id,
                    ErrorCode::BadDisplayName,
                    format!("the display name {why}"),
                );
            }
        };
        let grants = match &self.config.authorizer {
            None => PeerGrants::open(),
            Some(authorizer) => match (authorizer.0)(room.as_str(), join.token.as_deref()) {
                Ok(grants) => grants,
                Err(refusal) => {
                    let (code, close) = if refusal.forbidden {
                        (ErrorCode::Forbidden, CloseCode::Forbidden)
                    } else {
                        (ErrorCode::Unauthorized, CloseCode::Unauthorized)
                    };
                    debug!(conn = conn_id.0, room = %room, ?code, "join refused");
                    self.send_error(conn_id, code, refusal.message);
                    self.close(conn_id, close, None);
                    return;
                }
            },
        };
        match join.resume {
            Some(resume) => self.resume(
                conn_id,
                room,
                name,
                grants,
                &resume.peer,
                &resume.token,
                now,
            ),
            None => self.join_fresh(conn_id, room, name, grants),
        }
    }

    fn kick(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        if let Some(conn) = peer.conn {
            self.send_error(
                conn,
                ErrorCode::Kicked,
                "an administrator removed you from the room",
            );
            self.close(conn, CloseCode::Kicked, None);
        }
        debug!(peer = %id, "kicked");
        self.remove_peer(id, LeaveReason::Kicked);
    }

    fn close_room(&mut self, room: &str) {
        let Some(peers) = RoomName::parse(room)
            .ok()
            .and_then(|name| self.rooms.get(&name))
            .map(|r| r.peers.clone())
        else {
            return;
        };
        // Everyone is disconnected first, so nobody is told about the others leaving.
        for id in &peers {
            if let Some(conn) = self.peers.get(id).and_then(|p| p.conn) {
                self.send_error(
                    conn,
                    ErrorCode::RoomClosed,
                    "an administrator closed the room",
                );
                self.close(conn, CloseCode::RoomClosed, None);
            }
            if let Some(p) = self.peers.get_mut(id) {
                p.conn = None;
            }
        }
        for id in peers {
            self.remove_peer(id, LeaveReason::Kicked);
        }
        debug!(room, "closed");
    }

    fn join_fresh(
        &mut self,
        conn_id: ConnId,
        room: RoomName,
        name: DisplayName,
        grants: PeerGrants,
    ) {
        let occupancy = self.rooms.get(&room).map_or(0, |r| r.peers.len());
        let capacity = self.room_capacity(&room);
        if occupancy >= capacity {
            return self.send_error(
                conn_id,
                ErrorCode::RoomFull,
                format!("room {room} is full ({capacity} participants)"),
            );
        }
        let id = self.new_peer_id();
        let resume_token = self.new_token();
        let info = PeerInfo {
            id,
            name: name.as_str().to_owned(),
        };
        let others = self
            .rooms
            .get(&room)
            .map(|r| r.peers.clone())
            .unwrap_or_default();
        for &other in &others {
            self.deliver_presence(other, ServerMessage::PeerJoined { peer: info.clone() });
        }
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| Room { peers: Vec::new() })
            .peers
            .push(id);
        self.peers.insert(
            id,
            Peer {
                name,
                room: room.clone(),
                conn: Some(conn_id),
                resume_token,
                epoch: 0,
                queued: VecDeque::new(),
                grants,
                sfu: false,
            },
        );
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            conn.peer = Some(id);
        }
        self.stats.joins += 1;
        debug!(peer = %id, room = %room, "joined");
        self.send_welcome(conn_id, id, false);
    }

    #[allow(clippy::too_many_arguments)]
    fn resume(
        &mut self,
        conn_id: ConnId,
        room: RoomName,
        name: DisplayName,
        grants: PeerGrants,
        peer_text: &str,
        token: &str,
        now: Instant,
    ) {
        let found = PeerId::parse(peer_text).filter(|id| {
            self.peers.get(id).is_some_and(|p| {
                p.room == room && constant_time_eq(p.resume_token.as_bytes(), token.as_bytes())
            })
        });
        let Some(id) = found else {
            return self.send_error(
                conn_id,
                ErrorCode::ResumeFailed,
                "unknown or expired resume token; join again without resume",
            );
        };
        let new_token = self.new_token();
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let old_conn = peer.conn.replace(conn_id);
        peer.resume_token = new_token;
        peer.name = name;
        peer.grants = grants;
        peer.epoch += 1;
        let queued = std::mem::take(&mut peer.queued);
        if let Some(old) = old_conn {
            if let Some(conn) = self.conns.get_mut(&old) {
                conn.peer = None;
            }
            self.close(old, CloseCode::Replaced, Some(now));
        }
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            conn.peer = Some(id);
        }
        self.stats.resumes += 1;
        debug!(peer = %id, room = %room, queued = queued.len(), "resumed");
        self.send_welcome(conn_id, id, true);
        for message in queued {
            self.outputs.push_back(Output::Send(conn_id, message));
        }
    }

    fn send_welcome(&mut self, conn_id: ConnId, id: PeerId, resumed: bool) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let peers = self
            .rooms
            .get(&peer.room)
            .map(|room| {
                room.peers
                    .iter()
                    .filter(|&&other| other != id)
                    .filter_map(|other| {
                        self.peers.get(other).map(|p| PeerInfo {
                            id: *other,
                            name: p.name.as_str().to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let room_settings = self.room_settings(&peer.room);
        let max_peers_per_room = self.room_capacity(&peer.room);
        let room = peer.room.clone();
        let config = &self.config;
        let welcome = Welcome {
            v: protocol::PROTOCOL_VERSION,
            peer: id,
            room: peer.room.as_str().to_owned(),
            name: peer.name.as_str().to_owned(),
            resumed,
            resume_token: peer.resume_token.clone(),
            peers,
            ice_servers: {
                let mut servers = config.ice_servers.clone();
                if let Some(source) = &config.ice_server_source {
                    servers.extend((source.0)(id));
                }
                servers
            },
            limits: Limits {
                max_frame_bytes: config.max_frame_bytes,
                max_peers_per_room,
                messages_per_second: config.messages_per_second,
                message_burst: config.message_burst,
                resume_grace_secs: config.resume_grace.as_secs(),
                max_chat_chars: config.max_chat_chars,
                chat_per_second: config.chat_per_second,
                chat_burst: config.chat_burst,
                idle_timeout_secs: config.idle_timeout.as_secs(),
            },
            room_settings,
        };
        self.outputs
            .push_back(Output::Send(conn_id, ServerMessage::Welcome(welcome)));
        self.send_history(conn_id, &room);
    }

    fn on_signal(&mut self, conn_id: ConnId, signal: SignalTo) {
        let Some(from) = self.conns.get(&conn_id).and_then(|c| c.peer) else {
            return self.send_error(
                conn_id,
                ErrorCode::NotJoined,
                "join a room before signaling",
            );
        };
        let to = PeerId::parse(&signal.to).filter(|to| {
            *to != from
                && self.peers.get(to).is_some_and(|target| {
                    self.peers
                        .get(&from)
                        .is_some_and(|sender| sender.room == target.room)
                })
        });
        let Some(to) = to else {
            let shown: String = signal.to.chars().take(32).collect();
            return self.send_error(
                conn_id,
                ErrorCode::UnknownPeer,
                format!("no peer {shown:?} in this room"),
            );
        };
        self.stats.signals_relayed += 1;
        let message = ServerMessage::Signal(SignalFrom {
            from,
            payload: signal.payload,
        });
        let max_queued = self.config.max_queued_signals;
        let Some(target) = self.peers.get_mut(&to) else {
            return;
        };
        match target.conn {
            Some(conn) => self.outputs.push_back(Output::Send(conn, message)),
            None => {
                if target.queued.len() >= max_queued {
                    target.queued.pop_front();
                }
                target.queued.push_back(message);
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        while let Some(Reverse((deadline, timer))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Idle(conn_id) => {
                    let Some(conn) = self.conns.get(&conn_id) else {
                        continue;
                    };
                    let due = conn.last_seen + self.config.idle_timeout;
                    if due <= now {
                        debug!(conn = conn_id.0, "idle timeout");
                        self.close(conn_id, CloseCode::IdleTimeout, Some(now));
                    } else {
                        self.arm(due, Timer::Idle(conn_id));
                    }
                }
                Timer::Grace { peer, epoch } => {
                    let expired = self
                        .peers
                        .get(&peer)
                        .is_some_and(|p| p.conn.is_none() && p.epoch == epoch);
                    if expired {
                        debug!(peer = %peer, "resume grace ran out");
                        self.stats.grace_expired += 1;
                        self.remove_peer(peer, LeaveReason::Timeout);
                    }
                }
            }
        }
    }

    /// Closes a connection and forgets it. With `now`, its peer enters the resume grace (or
    /// leaves at once for a flooding connection); without, the peer is left as it is (shutdown).
    fn close(&mut self, conn_id: ConnId, code: CloseCode, now: Option<Instant>) {
        let Some(conn) = self.conns.remove(&conn_id) else {
            return;
        };
        self.stats.closed_by_server += 1;
        self.outputs.push_back(Output::Close(conn_id, code));
        if let Some(now) = now {
            self.release_peer(conn.peer, code == CloseCode::PolicyViolation, now);
        }
    }

    /// A connection is gone: its peer (if any) leaves now (`leave_now`) or enters the resume
    /// grace.
    fn release_peer(&mut self, peer: Option<PeerId>, leave_now: bool, now: Instant) {
        let Some(id) = peer else {
            return;
        };
        if leave_now {
            return self.remove_peer(id, LeaveReason::Left);
        }
        let grace = self.config.resume_grace;
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.conn = None;
            peer.epoch += 1;
            let epoch = peer.epoch;
            debug!(peer = %id, "connection lost; resume grace starts");
            self.arm(now + grace, Timer::Grace { peer: id, epoch });
        }
    }

    fn remove_peer(&mut self, id: PeerId, reason: LeaveReason) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        if let Some(conn) = peer.conn.and_then(|c| self.conns.get_mut(&c)) {
            conn.peer = None;
        }
        let others = match self.rooms.get_mut(&peer.room) {
            Some(room) => {
                room.peers.retain(|&p| p != id);
                if room.peers.is_empty() {
                    self.rooms.remove(&peer.room);
                    Vec::new()
                } else {
                    room.peers.clone()
                }
            }
            None => Vec::new(),
        };
        debug!(peer = %id, room = %peer.room, ?reason, "left");
        self.outputs.push_back(Output::SfuLeft {
            room: peer.room.as_str().to_owned(),
            peer: id,
        });
        for other in others {
            if let Some(p) = self.peers.get_mut(&other) {
                p.queued
                    .retain(|m| !matches!(m, ServerMessage::Signal(s) if s.from == id));
            }
            self.deliver_presence(other, ServerMessage::PeerLeft { peer: id, reason });
        }
    }

    /// Presence goes only to attached peers: a resuming peer learns the room from `welcome`.
    fn deliver_presence(&mut self, to: PeerId, message: ServerMessage) {
        if let Some(conn) = self.peers.get(&to).and_then(|p| p.conn) {
            self.outputs.push_back(Output::Send(conn, message));
        }
    }

    fn send_error(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        self.stats.errors_sent += 1;
        self.outputs
            .push_back(Output::Send(conn, ServerMessage::error(code, message)));
    }

    fn arm(&mut self, deadline: Instant, timer: Timer) {
        self.timers.push(Reverse((deadline, timer)));
    }

    fn new_peer_id(&mut self) -> PeerId {
        loop {
            let id = PeerId(self.rng.next_u64());
            if !self.peers.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_token(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// Whether an SDP offer sends audio or video: an active (non-zero port) `m=audio`/`m=video`
/// section whose direction is `sendrecv` (the default) or `sendonly`.
pub fn sdp_sends_media(sdp: &str) -> bool {
    let mut sends = false;
    let mut in_media = false;
    let mut active = false;
    let mut direction_sends = true;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            sends |= in_media && active && direction_sends;
            let mut fields = media.split(' ');
            let kind = fields.next().unwrap_or_default();
            let port = fields.next().unwrap_or_default();
            in_media = matches!(kind, "audio" | "video");
            active = port != "0";
            direction_sends = true;
        } else if in_media {
            match line {
                "a=recvonly" | "a=inactive" => direction_sends = false,
                "a=sendrecv" | "a=sendonly" => direction_sends = true,
                _ => {}
            }
        }
    }
    sends || (in_media && active && direction_sends)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
