//! The TURN client (RFC 8656) over UDP: one allocation on one server, its permissions and
//! channels, without I/O.
//!
//! A driver owns the socket and the clock. After creating the [`Client`] and after every
//! `handle_*` call or method that starts a request, it drains [`Client::poll_transmit`] (send
//! each datagram to the server) and [`Client::poll_event`], then waits for a datagram or for
//! [`Client::poll_timeout`], whichever comes first:
//!
//! ```no_run
//! # use std::net::UdpSocket;
//! # use std::time::Instant;
//! # use turn::{Client, ClientCredentials, ClientEvent};
//! # fn run(socket: UdpSocket, server: std::net::SocketAddr) -> std::io::Result<()> {
//! let credentials = ClientCredentials::new("user", "pass");
//! let mut client = Client::new(server, credentials);
//! client.allocate(Instant::now()).expect("a new client is idle");
//! let mut buf = vec![0u8; 65_536];
//! loop {
//!     while let Some(transmit) = client.poll_transmit() {
//!         socket.send_to(&transmit.contents, transmit.destination)?;
//!     }
//!     while let Some(event) = client.poll_event() {
//!         if let ClientEvent::Allocated { relayed, .. } = event {
//!             println!("relayed candidate {relayed}");
//!         }
//!     }
//!     let wait = client.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
//!     socket.set_read_timeout(wait.filter(|w| !w.is_zero()))?;
//!     match socket.recv_from(&mut buf) {
//!         Ok((len, from)) => {
//!             if let Some(received) = client.handle_input(from, &buf[..len], Instant::now()) {
//!                 println!("{} bytes from {}", received.data.len(), received.peer);
//!             }
//!         }
//!         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
//!             || e.kind() == std::io::ErrorKind::TimedOut => {}
//!         Err(e) => return Err(e),
//!     }
//!     client.handle_timeout(Instant::now());
//! }
//! # }
//! ```
//!
//! Requests are retransmitted on RFC 8489's schedule (§6.2.1); the allocation is refreshed
//! before it expires, and permissions and channels are refreshed while traffic passes through
//! them. Responses to authenticated requests must carry a valid MESSAGE-INTEGRITY; anything
//! malformed or unexpected is dropped and counted in [`ClientStats`].

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stun::{
    AttributeType, ChannelData, Class, Message, MessageType, MessageWriter, Method, PacketKind,
    TransactionId,
};
use tracing::{debug, trace, warn};

/// A long-term credential (RFC 8489 §9.2): the username and password the server knows.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The username (for REST credentials, `EXPIRY[:NAME]`).
    pub username: String,
    /// The password.
    pub password: String,
}

impl ClientCredentials {
    /// Credentials from their parts.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        ClientCredentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Timing of a [`Client`]. The defaults are RFC 8489's and RFC 8656's.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// First retransmission timeout, doubled after each transmission (RFC 8489 §6.2.1: 500 ms).
    pub rto: Duration,
    /// Transmissions of a request before it fails (Rc, 7).
    pub max_transmissions: u32,
    /// How long to wait after the last transmission, in multiples of `rto` (Rm, 16).
    pub last_wait_rtos: u32,
    /// Allocation lifetime to ask for; `None` takes the server's default (600 s).
    pub lifetime: Option<Duration>,
    /// Refresh the allocation this long before it expires (60 s; half the lifetime when that is
    /// shorter than twice this).
    pub refresh_margin: Duration,
    /// Refresh a permission this long after it was installed, if traffic used it meanwhile
    /// (240 s: permissions last 300 s, RFC 8656 §9).
    pub permission_refresh: Duration,
    /// Refresh a channel binding this long after it was made, if traffic used it meanwhile
    /// (540 s: bindings last 600 s, RFC 8656 §12).
    pub channel_refresh: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            rto: Duration::from_millis(500),
            max_transmissions: 7,
            last_wait_rtos: 16,
            lifetime: None,
            refresh_margin: Duration::from_secs(60),
            permission_refresh: Duration::from_secs(240),
            channel_refresh: Duration::from_secs(540),
        }
    }
}

/// A datagram for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTransmit {
    /// The server's address (the one the client was made with).
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Application data relayed from a peer, borrowing the input datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The peer that sent it to the relayed address.
    pub peer: SocketAddr,
    /// The data.
    pub data: &'a [u8],
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestFailure {
    /// The server answered with an error response.
    Rejected {
        /// ERROR-CODE's number, e.g. 401 or 437.
        code: u16,
        /// ERROR-CODE's reason phrase.
        reason: String,
    },
    /// No answer after every retransmission (RFC 8489 §6.2.1).
    TimedOut,
    /// The server answered with a response that lacks an attribute it must carry.
    BadResponse(&'static str),
}

impl RequestFailure {
    /// The error code, for a [`RequestFailure::Rejected`].
    pub fn code(&self) -> Option<u16> {
        match self {
            RequestFailure::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestFailure::Rejected { code, reason } => write!(f, "{code} {reason}"),
            RequestFailure::TimedOut => f.write_str("no response from the TURN server"),
            RequestFailure::BadResponse(what) => write!(f, "bad response: {what}"),
        }
    }
}

/// What happened, for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The allocation exists: `relayed` is the relayed transport address (the relay candidate),
    /// `mapped` the client's address as the server saw it (a server-reflexive candidate).
    Allocated {
        /// XOR-RELAYED-ADDRESS.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS.
        mapped: SocketAddr,
        /// The lifetime granted.
        lifetime: Duration,
    },
    /// The Allocate request failed; the client is idle again.
    AllocationFailed(RequestFailure),
    /// A Refresh succeeded.
    Refreshed {
        /// The lifetime granted from now.
        lifetime: Duration,
    },
    /// A Refresh was rejected: the allocation is gone, and the client is idle again.
    RefreshFailed(RequestFailure),
    /// The allocation's lifetime ran out before a Refresh got through; the client is idle again.
    Expired,
    /// [`Client::deallocate`] is done (answered or not); the client is idle again.
    Deallocated,
    /// A permission for this peer IP is installed.
    PermissionCreated(IpAddr),
    /// CreatePermission failed, at first or on a refresh; the permission is gone.
    PermissionFailed {
        /// The peer IP.
        peer: IpAddr,
        /// Why.
        failure: RequestFailure,
    },
    /// No traffic used this permission since it was last installed, so it was not refreshed
    /// and is gone.
    PermissionExpired(IpAddr),
    /// A channel is bound: [`Client::send_to`] now uses ChannelData for this peer.
    ChannelBound {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
    /// ChannelBind failed, at first or on a refresh; traffic to this peer falls back to Send
    /// indications.
    ChannelBindFailed {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
        /// Why.
        failure: RequestFailure,
    },
}

/// A misuse of the API by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// [`Client::allocate`] while an allocation exists or is being made or deleted.
    NotIdle,
    /// The operation needs an allocation, and there is none (yet).
    NoAllocation,
    /// The peer's address family differs from the relayed address's.
    FamilyMismatch,
    /// [`Client::send_to`] a peer with no permission (never created, failed or expired).
    NoPermission(IpAddr),
    /// Every channel number of the allocation is taken.
    NoChannelNumbers,
    /// The data does not fit in one datagram.
    TooLarge,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotIdle => f.write_str("an allocation exists or is in progress"),
            ClientError::NoAllocation => f.write_str("no allocation"),
            ClientError::FamilyMismatch => f.write_str("peer and relay address families differ"),
            ClientError::NoPermission(ip) => write!(f, "no permission for {ip}"),
            ClientError::NoChannelNumbers => f.write_str("no channel numbers left"),
            ClientError::TooLarge => f.write_str("data too large for one datagram"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Counters; all monotonic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent again after a timeout.
    pub retransmissions: u64,
    /// Requests that got no answer at all.
    pub timeouts: u64,
    /// Datagrams not from the server's address.
    pub foreign_dropped: u64,
    /// Datagrams that were not well-formed STUN or ChannelData, or lacked what they must carry.
    pub malformed_dropped: u64,
    /// Responses to no outstanding request, ChannelData on an unknown channel, and STUN
    /// messages a client does not take (requests, other indications).
    pub unmatched_dropped: u64,
    /// Responses whose MESSAGE-INTEGRITY was missing or wrong.
    pub integrity_failures: u64,
    /// Datagrams sent to peers with [`Client::send_to`].
    pub packets_sent: u64,
    /// Bytes (application data) sent to peers.
    pub bytes_sent: u64,
    /// Datagrams received from peers.
    pub packets_received: u64,
    /// Bytes (application data) received from peers.
    pub bytes_received: u64,
}

/// Largest application payload [`Client::send_to`] takes: what fits in a Send indication
/// (65,535 bytes of attributes, less a v6 XOR-PEER-ADDRESS and the DATA header).
pub const MAX_PAYLOAD: usize = 65_504;

/// Channel numbers the client picks from (RFC 8656 §12: 0x4000–0x4FFF).
const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x4fff;

/// REQUESTED-TRANSPORT: UDP (RFC 8656 §18.8).
const TRANSPORT_UDP: u8 = 17;

/// How many 438 Stale Nonce answers one request may get before it fails.
const MAX_STALE_RETRIES: u8 = 3;

/// A TURN client: one allocation on one server.
pub struct Client {
    server: SocketAddr,
    credentials: ClientCredentials,
    config: ClientConfig,
    auth: Option<Auth>,
    state: State,
    transactions: Vec<Transaction>,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    next_channel: u16,
    transmits: VecDeque<ClientTransmit>,
    events: VecDeque<ClientEvent>,
    seed: [u8; 32],
    counter: u64,
    stats: ClientStats,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// An idle client for `server`, with the default timing.
    pub fn new(server: SocketAddr, credentials: ClientCredentials) -> Self {
        Client::with_config(server, credentials, ClientConfig::default())
    }

    /// An idle client with the given timing.
    pub fn with_config(
        server: SocketAddr,
        credentials: ClientCredentials,
        config: ClientConfig,
    ) -> Self {
        Client {
            server,
            credentials,
            config,
            auth: None,
            state: State::Idle,
            transactions: Vec::new(),
            permissions: Vec::new(),
            channels: Vec::new(),
            next_channel: *CHANNELS.start(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            seed: random_seed(),
            counter: 0,
            stats: ClientStats::default(),
        }
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed transport address, while allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Allocated(a) => Some(a.relayed),
            _ => None,
        }
    }

    /// The client's address as the server saw it, while allocated.
    pub fn mapped(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Allocated(a) => Some(a.mapped),
            _ => None,
        }
    }

    /// The channel bound to `peer`, once ChannelBind succeeded and while it is refreshed.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        let peer = canonical(peer);
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.state.carries_data())
            .map(|c| c.number)
    }

    /// Whether a permission for `ip` is installed.
    pub fn has_permission(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.state != PermissionState::Creating)
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Starts an Allocate request for a UDP relay. The first attempt carries no credentials;
    /// the server's 401 supplies REALM and NONCE, and the request is sent again signed.
    pub fn allocate(&mut self, now: Instant) -> Result<(), ClientError> {
        if !matches!(self.state, State::Idle) {
            return Err(ClientError::NotIdle);
        }
        debug!(server = %self.server, "allocating");
        self.state = State::Allocating;
        self.start(Request::Allocate, now, Retries::default());
        Ok(())
    }

    /// Deletes the allocation (a Refresh with LIFETIME 0, RFC 8656 §8). Permissions and
    /// channels go at once; [`ClientEvent::Deallocated`] follows the answer or its absence.
    /// An Allocate still in flight is abandoned (the server lets an allocation it made expire).
    pub fn deallocate(&mut self, now: Instant) -> Result<(), ClientError> {
        match self.state {
            State::Allocated(_) => {
                self.clear();
                self.state = State::Deallocating;
                debug!(server = %self.server, "deallocating");
                self.start(
                    Request::Refresh { lifetime: Some(0) },
                    now,
                    Retries::default(),
                );
                Ok(())
            }
            State::Allocating => {
                self.clear();
                self.state = State::Idle;
                Ok(())
            }
            State::Idle | State::Deallocating => Err(ClientError::NoAllocation),
        }
    }

    /// Installs a permission for `peer` (CreatePermission, RFC 8656 §10): the relay then passes
    /// datagrams from any port of that IP. It is refreshed as long as traffic uses it or a
    /// channel to that IP is bound. Asking again for a permission that exists or is being
    /// created changes nothing.
    pub fn create_permission(&mut self, peer: IpAddr, now: Instant) -> Result<(), ClientError> {
        let peer = peer.to_canonical();
        self.check_peer(peer)?;
        if let Some(permission) = self.permissions.iter_mut().find(|p| p.ip == peer) {
            permission.used = true;
            return Ok(());
        }
        self.permissions.push(Permission {
            ip: peer,
            state: PermissionState::Creating,
            used: false,
        });
        self.start(Request::CreatePermission(peer), now, Retries::default());
        Ok(())
    }

    /// Binds a channel to `peer` (ChannelBind, RFC 8656 §12.1), which also installs a permission
    /// for its IP; returns the channel number. Until [`ClientEvent::ChannelBound`],
    /// [`Client::send_to`] uses Send indications. A binding is refreshed as long as traffic
    /// uses it; binding a peer again reuses its number.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<u16, ClientError> {
        let peer = canonical(peer);
        self.check_peer(peer.ip())?;
        if let Some(channel) = self.channels.iter_mut().find(|c| c.peer == peer) {
            channel.used = true;
            let number = channel.number;
            if channel.state == ChannelState::Lapsed {
                channel.state = ChannelState::Binding;
                self.start(
                    Request::ChannelBind { number, peer },
                    now,
                    Retries::default(),
                );
            }
            return Ok(number);
        }
        if !CHANNELS.contains(&self.next_channel) {
            return Err(ClientError::NoChannelNumbers);
        }
        let number = self.next_channel;
        self.next_channel += 1;
        self.channels.push(Channel {
            number,
            peer,
            state: ChannelState::Binding,
            used: false,
        });
        self.start(
            Request::ChannelBind { number, peer },
            now,
            Retries::default(),
        );
        Ok(number)
    }

    /// Encodes `data` for `peer`, appending the datagram to send to [`Client::server`] to
    /// `out`: ChannelData when a channel is bound, else a Send indication. Needs a permission
    /// (or a channel) for the peer's IP, possibly still being created.
    pub fn send_to(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ClientError> {
        if !matches!(self.state, State::Allocated(_)) {
            return Err(ClientError::NoAllocation);
        }
        if data.len() > MAX_PAYLOAD {
            return Err(ClientError::TooLarge);
        }
        let peer = canonical(peer);
        let channel = self
            .channels
            .iter_mut()
            .find(|c| c.peer == peer && c.state != ChannelState::Lapsed);
        let has_channel = channel.is_some();
        let permission = self.permissions.iter_mut().find(|p| p.ip == peer.ip());
        if permission.is_none() && !has_channel {
            return Err(ClientError::NoPermission(peer.ip()));
        }
        if let Some(permission) = permission {
            permission.used = true;
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        if let Some(channel) = channel {
            channel.used = true;
            if channel.state.carries_data() {
                trace!(
                    channel = channel.number,
                    bytes = data.len(),
                    "ChannelData out"
                );
                ChannelData {
                    channel: channel.number,
                    data,
                }
                .encode(out);
                return Ok(());
            }
        }
        trace!(bytes = data.len(), "Send indication out");
        let tid = self.indication_tid();
        let mut w = MessageWriter::new(out, MessageType::new(Method::SEND, Class::Indication), tid);
        w.xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
            .attribute(AttributeType::DATA, data);
        w.finish();
        Ok(())
    }

    /// A datagram that arrived from `from`. Returns relayed application data (a Data
    /// indication or ChannelData); responses update the state and may queue events and
    /// transmits. Anything not from the server, malformed or unexpected is dropped and counted.
    #[must_use]
    pub fn handle_input<'a>(
        &mut self,
        from: SocketAddr,
        packet: &'a [u8],
        now: Instant,
    ) -> Option<Received<'a>> {
        if canonical(from) != canonical(self.server) {
            self.stats.foreign_dropped += 1;
            return None;
        }
        match stun::classify(packet) {
            PacketKind::ChannelData => {
                let Ok(frame) = ChannelData::parse(packet) else {
                    self.stats.malformed_dropped += 1;
                    return None;
                };
                let peer = match self.channels.iter_mut().find(|c| c.number == frame.channel) {
                    Some(channel) if matches!(self.state, State::Allocated(_)) => {
                        channel.used = true;
                        channel.peer
                    }
                    _ => {
                        self.stats.unmatched_dropped += 1;
                        return None;
                    }
                };
                Some(self.received(peer, frame.data))
            }
            PacketKind::Stun => {
                let Ok(message) = Message::parse(packet) else {
                    self.stats.malformed_dropped += 1;
                    return None;
                };
                if message.verify_fingerprint() == Some(false) {
                    self.stats.malformed_dropped += 1;
                    return None;
                }
                match message.class() {
                    Class::Indication if message.method() == Method::DATA => {
                        self.handle_data(&message)
                    }
                    Class::SuccessResponse | Class::ErrorResponse => {
                        self.handle_response(&message, now);
                        None
                    }
                    _ => {
                        self.stats.unmatched_dropped += 1;
                        None
                    }
                }
            }
            PacketKind::Other => {
                self.stats.malformed_dropped += 1;
                None
            }
        }
    }

    /// Retransmits requests, fails those out of time, refreshes what is due, and expires the
    /// allocation if its lifetime ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        // A timer may make another due at once (a Refresh that ran out is retried): go again
        // until none is, so that `poll_timeout` is later than `now` on return.
        loop {
            let due = self.due(now);
            if due.is_empty() {
                return;
            }
            self.fire(due, now);
        }
    }

    /// When to call [`Client::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers().map(|(at, _)| at).min()
    }

    /// The next datagram to send to the server.
    pub fn poll_transmit(&mut self) -> Option<ClientTransmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

/// Why the client would wake up; `Client::timers` lists them, and the earliest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The allocation's lifetime runs out.
    AllocationExpiry,
    /// A request is due for retransmission, or out of time.
    Retransmit(TransactionId),
    /// Time to refresh the allocation.
    AllocationRefresh,
    /// Time to refresh (or let go) a permission.
    PermissionRefresh(IpAddr),
    /// Time to refresh (or let go) a channel binding.
    ChannelRefresh(u16),
}

#[derive(Debug)]
enum State {
    Idle,
    Allocating,
    Allocated(Allocation),
    /// The deleting Refresh is in flight.
    Deallocating,
}

#[derive(Debug)]
struct Allocation {
    relayed: SocketAddr,
    mapped: SocketAddr,
    expires: Instant,
    refresh_at: Instant,
    /// A Refresh is in flight.
    refreshing: bool,
}

/// The realm, nonce and key the server asked for.
struct Auth {
    realm: String,
    nonce: String,
    key: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh { lifetime: Option<u32> },
    CreatePermission(IpAddr),
    ChannelBind { number: u16, peer: SocketAddr },
}

impl Request {
    fn method(self) -> Method {
        match self {
            Request::Allocate => Method::ALLOCATE,
            Request::Refresh { .. } => Method::REFRESH,
            Request::CreatePermission(_) => Method::CREATE_PERMISSION,
            Request::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

/// Authentication retries a request has used: one 401, a few 438s.
#[derive(Debug, Clone, Copy, Default)]
struct Retries {
    unauthenticated: bool,
    stale: u8,
}

struct Transaction {
    tid: TransactionId,
    request: Request,
    bytes: Vec<u8>,
    /// The key it was signed with; `None` for an unauthenticated first Allocate.
    key: Option<[u8; 16]>,
    transmissions: u32,
    rto: Duration,
    next_at: Instant,
    retries: Retries,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermissionState {
    Creating,
    Installed { refresh_at: Instant },
    Refreshing,
}

struct Permission {
    ip: IpAddr,
    state: PermissionState,
    /// Traffic passed since it was last installed.
    used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    Binding,
    Bound {
        refresh_at: Instant,
    },
    Rebinding,
    /// Not refreshed, or failed: the number stays reserved for this peer, since a server holds
    /// a binding for 5 minutes after it expires (RFC 8656 §12).
    Lapsed,
}

impl ChannelState {
    fn carries_data(self) -> bool {
        matches!(self, ChannelState::Bound { .. } | ChannelState::Rebinding)
    }
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    state: ChannelState,
    used: bool,
}

impl Client {
    fn fire(&mut self, due: Vec<Timer>, now: Instant) {
        for timer in due {
            match timer {
                Timer::AllocationExpiry => {
                    debug!(server = %self.server, "allocation expired");
                    self.clear();
                    self.state = State::Idle;
                    self.events.push_back(ClientEvent::Expired);
                }
                Timer::Retransmit(tid) => self.retransmit(tid, now),
                Timer::AllocationRefresh => {
                    if let State::Allocated(allocation) = &mut self.state {
                        allocation.refreshing = true;
                        let lifetime = self.config.lifetime.map(secs);
                        self.start(Request::Refresh { lifetime }, now, Retries::default());
                    }
                }
                Timer::PermissionRefresh(ip) => self.refresh_permission(ip, now),
                Timer::ChannelRefresh(number) => self.refresh_channel(number, now),
            }
        }
    }

    fn timers(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        let allocation = match &self.state {
            State::Allocated(a) => Some(a),
            _ => None,
        };
        let expiry = allocation.map(|a| (a.expires, Timer::AllocationExpiry));
        let refresh = allocation
            .filter(|a| !a.refreshing)
            .map(|a| (a.refresh_at, Timer::AllocationRefresh));
        let transactions = self
            .transactions
            .iter()
            .map(|t| (t.next_at, Timer::Retransmit(t.tid)));
        let permissions = self.permissions.iter().filter_map(|p| match p.state {
            PermissionState::Installed { refresh_at } => {
                Some((refresh_at, Timer::PermissionRefresh(p.ip)))
            }
            _ => None,
        });
        let channels = self.channels.iter().filter_map(|c| match c.state {
            ChannelState::Bound { refresh_at } => {
                Some((refresh_at, Timer::ChannelRefresh(c.number)))
            }
            _ => None,
        });
        expiry
            .into_iter()
            .chain(transactions)
            .chain(refresh)
            .chain(permissions)
            .chain(channels)
    }

    /// Timers due at `now`, expiry first (it cancels the rest).
    fn due(&self, now: Instant) -> Vec<Timer> {
        let mut due: Vec<Timer> = self
            .timers()
            .filter(|(at, _)| *at <= now)
            .map(|(_, timer)| timer)
            .collect();
        if due.contains(&Timer::AllocationExpiry) {
            due.retain(|t| matches!(t, Timer::AllocationExpiry));
        }
        due
    }

    fn check_peer(&self, peer: IpAddr) -> Result<(), ClientError> {
        let State::Allocated(allocation) = &self.state else {
            return Err(ClientError::NoAllocation);
        };
        if peer.is_ipv4() != allocation.relayed.is_ipv4() {
            return Err(ClientError::FamilyMismatch);
        }
        Ok(())
    }

    /// Forgets permissions, channels and outstanding requests (the allocation is gone).
    fn clear(&mut self) {
        self.transactions.clear();
        self.permissions.clear();
        self.channels.clear();
        self.next_channel = *CHANNELS.start();
    }

    fn received<'a>(&mut self, peer: SocketAddr, data: &'a [u8]) -> Received<'a> {
        if let Some(permission) = self.permissions.iter_mut().find(|p| p.ip == peer.ip()) {
            permission.used = true;
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += data.len() as u64;
        trace!(bytes = data.len(), "data from peer");
        Received { peer, data }
    }

    fn handle_data<'a>(&mut self, message: &Message<'a>) -> Option<Received<'a>> {
        let (Some(peer), Some(data)) = (
            message.xor_address(AttributeType::XOR_PEER_ADDRESS),
            message.attribute(AttributeType::DATA),
        ) else {
            self.stats.malformed_dropped += 1;
            return None;
        };
        if !matches!(self.state, State::Allocated(_)) {
            self.stats.unmatched_dropped += 1;
            return None;
        }
        Some(self.received(canonical(peer), data))
    }

    fn handle_response(&mut self, message: &Message<'_>, now: Instant) {
        let tid = message.transaction_id();
        let Some(index) = self.transactions.iter().position(|t| t.tid == tid) else {
            self.stats.unmatched_dropped += 1;
            return;
        };
        let transaction = &self.transactions[index];
        if message.method() != transaction.request.method() {
            self.stats.malformed_dropped += 1;
            warn!(server = %self.server, "response method differs from the request's");
            return;
        }
        let error = match message.class() {
            Class::ErrorResponse => match message.error_code() {
                Some(e) => Some((e.code, e.reason.to_owned())),
                None => {
                    self.stats.malformed_dropped += 1;
                    warn!(server = %self.server, "error response without ERROR-CODE");
                    return;
                }
            },
            _ => None,
        };
        // 401 and 438 cannot be signed with a key the server has not accepted (RFC 8489
        // §9.2.5); every other answer to a signed request must be signed.
        let challenge = matches!(error, Some((401 | 438, _)));
        if let Some(key) = &transaction.key {
            if !challenge && !message.verify_integrity(key) {
                self.stats.integrity_failures += 1;
                warn!(server = %self.server, "response failed MESSAGE-INTEGRITY");
                return;
            }
        }
        let transaction = self.transactions.remove(index);
        let request = transaction.request;
        let retries = transaction.retries;
        match error {
            None => self.succeeded(request, message, now),
            Some((code @ (401 | 438), reason)) => {
                let retry = match code {
                    401 if !retries.unauthenticated => Some(Retries {
                        unauthenticated: true,
                        ..retries
                    }),
                    438 if retries.stale < MAX_STALE_RETRIES => Some(Retries {
                        stale: retries.stale + 1,
                        ..retries
                    }),
                    _ => None,
                };
                match retry {
                    Some(retries) if self.learn_nonce(message) => {
                        debug!(code, "retrying with the server's nonce");
                        self.start(request, now, retries);
                    }
                    _ => self.failed(request, RequestFailure::Rejected { code, reason }),
                }
            }
            Some((code, reason)) => self.failed(request, RequestFailure::Rejected { code, reason }),
        }
    }

    /// Takes REALM and NONCE from a 401 or 438; `false` when the answer lacks them.
    fn learn_nonce(&mut self, message: &Message<'_>) -> bool {
        let Some(nonce) = message.text(AttributeType::NONCE) else {
            return false;
        };
        let realm = match (message.text(AttributeType::REALM), &self.auth) {
            (Some(realm), _) => realm.to_owned(),
            (None, Some(auth)) => auth.realm.clone(),
            (None, None) => return false,
        };
        let key = match &self.auth {
            Some(auth) if auth.realm == realm => auth.key,
            _ => stun::long_term_key_md5(
                &self.credentials.username,
                &realm,
                &self.credentials.password,
            ),
        };
        self.auth = Some(Auth {
            realm,
            nonce: nonce.to_owned(),
            key,
        });
        true
    }

    fn succeeded(&mut self, request: Request, message: &Message<'_>, now: Instant) {
        let lifetime = message
            .u32(AttributeType::LIFETIME)
            .map(|s| Duration::from_secs(u64::from(s)));
        match request {
            Request::Allocate => {
                if !matches!(self.state, State::Allocating) {
                    return;
                }
                let (Some(relayed), Some(mapped), Some(lifetime)) = (
                    message.xor_address(AttributeType::XOR_RELAYED_ADDRESS),
                    message.xor_address(AttributeType::XOR_MAPPED_ADDRESS),
                    lifetime,
                ) else {
                    return self.failed(
                        request,
                        RequestFailure::BadResponse(
                            "Allocate success without XOR-RELAYED-ADDRESS, XOR-MAPPED-ADDRESS or LIFETIME",
                        ),
                    );
                };
                debug!(%relayed, %mapped, lifetime = lifetime.as_secs(), "allocated");
                self.state = State::Allocated(Allocation {
                    relayed,
                    mapped,
                    expires: now + lifetime,
                    refresh_at: self.refresh_at(now, lifetime),
                    refreshing: false,
                });
                self.events.push_back(ClientEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            Request::Refresh { lifetime: Some(0) } => self.deallocated(),
            Request::Refresh { .. } => {
                let Some(lifetime) = lifetime else {
                    return self.failed(
                        request,
                        RequestFailure::BadResponse("Refresh success without LIFETIME"),
                    );
                };
                let refresh_at = self.refresh_at(now, lifetime);
                if let State::Allocated(allocation) = &mut self.state {
                    allocation.expires = now + lifetime;
                    allocation.refresh_at = refresh_at;
                    allocation.refreshing = false;
                    debug!(lifetime = lifetime.as_secs(), "refreshed");
                    self.events.push_back(ClientEvent::Refreshed { lifetime });
                }
            }
            Request::CreatePermission(ip) => {
                let refresh_at = now + self.config.permission_refresh;
                if let Some(permission) = self.permissions.iter_mut().find(|p| p.ip == ip) {
                    if permission.state == PermissionState::Creating {
                        debug!(peer = %ip, "permission created");
                        self.events.push_back(ClientEvent::PermissionCreated(ip));
                    }
                    permission.state = PermissionState::Installed { refresh_at };
                }
            }
            Request::ChannelBind { number, peer } => {
                let refresh_at = now + self.config.channel_refresh;
                if let Some(channel) = self.channels.iter_mut().find(|c| c.number == number) {
                    if channel.state == ChannelState::Binding {
                        debug!(%peer, channel = number, "channel bound");
                        self.events.push_back(ClientEvent::ChannelBound {
                            peer,
                            channel: number,
                        });
                    }
                    channel.state = ChannelState::Bound { refresh_at };
                }
                // ChannelBind installs or refreshes the permission too (RFC 8656 §12.2).
                let refresh_at = now + self.config.permission_refresh;
                match self.permissions.iter_mut().find(|p| p.ip == peer.ip()) {
                    Some(permission) => {
                        if let PermissionState::Installed { .. } = permission.state {
                            permission.state = PermissionState::Installed { refresh_at };
                        }
                    }
                    None => self.permissions.push(Permission {
                        ip: peer.ip(),
                        state: PermissionState::Installed { refresh_at },
                        used: false,
                    }),
                }
            }
        }
    }

    fn failed(&mut self, request: Request, failure: RequestFailure) {
        debug!(?request, %failure, "request failed");
        match request {
            Request::Allocate => {
                if matches!(self.state, State::Allocating) {
                    self.clear();
                    self.state = State::Idle;
                    self.events
                        .push_back(ClientEvent::AllocationFailed(failure));
                }
            }
            Request::Refresh { lifetime: Some(0) } => self.deallocated(),
            Request::Refresh { .. } => {
                let State::Allocated(allocation) = &mut self.state else {
                    return;
                };
                if failure == RequestFailure::TimedOut {
                    // The refresh time has passed, so this tries again at once, until the
                    // allocation's expiry ends it.
                    allocation.refreshing = false;
                    return;
                }
                self.clear();
                self.state = State::Idle;
                self.events.push_back(ClientEvent::RefreshFailed(failure));
            }
            Request::CreatePermission(ip) => {
                self.permissions.retain(|p| p.ip != ip);
                self.events
                    .push_back(ClientEvent::PermissionFailed { peer: ip, failure });
            }
            Request::ChannelBind { number, peer } => {
                if let Some(channel) = self.channels.iter_mut().find(|c| c.number == number) {
                    channel.state = ChannelState::Lapsed;
                }
                self.events.push_back(ClientEvent::ChannelBindFailed {
                    peer,
                    channel: number,
                    failure,
                });
            }
        }
    }

    fn deallocated(&mut self) {
        if matches!(self.state, State::Deallocating) {
            debug!(server = %self.server, "deallocated");
            self.state = State::Idle;
            self.events.push_back(ClientEvent::Deallocated);
        }
    }

    fn refresh_at(&self, now: Instant, lifetime: Duration) -> Instant {
        if lifetime >= self.config.refresh_margin * 2 {
            now + lifetime - self.config.refresh_margin
        } else {
            now + lifetime / 2
        }
    }

    fn refresh_permission(&mut self, ip: IpAddr, now: Instant) {
        let Some(index) = self
            .permissions
            .iter()
            .position(|p| p.ip == ip && matches!(p.state, PermissionState::Installed { .. }))
        else {
            return;
        };
        // A bound channel needs its IP's permission for the peer's answers.
        let channel = self
            .channels
            .iter()
            .any(|c| c.peer.ip() == ip && c.state.carries_data());
        let permission = &mut self.permissions[index];
        if permission.used || channel {
            permission.used = false;
            permission.state = PermissionState::Refreshing;
            self.start(Request::CreatePermission(ip), now, Retries::default());
        } else {
            debug!(peer = %ip, "permission unused, not refreshed");
            self.permissions.remove(index);
            self.events.push_back(ClientEvent::PermissionExpired(ip));
        }
    }

    fn refresh_channel(&mut self, number: u16, now: Instant) {
        let Some(channel) = self
            .channels
            .iter_mut()
            .find(|c| c.number == number && matches!(c.state, ChannelState::Bound { .. }))
        else {
            return;
        };
        if channel.used {
            channel.used = false;
            channel.state = ChannelState::Rebinding;
            let peer = channel.peer;
            self.start(
                Request::ChannelBind { number, peer },
                now,
                Retries::default(),
            );
        } else {
            debug!(channel = number, "channel unused, not refreshed");
            channel.state = ChannelState::Lapsed;
        }
    }

    /// Sends a new request: a fresh transaction id, signed when a nonce is known.
    fn start(&mut self, request: Request, now: Instant, retries: Retries) {
        let tid = self.request_tid();
        // Never zero: a retransmission due at once would spin `handle_timeout`.
        let rto = self.config.rto.max(Duration::from_millis(1));
        let mut bytes = Vec::with_capacity(128);
        let mut w = MessageWriter::new(
            &mut bytes,
            MessageType::new(request.method(), Class::Request),
            tid,
        );
        match request {
            Request::Allocate => {
                w.first_byte(AttributeType::REQUESTED_TRANSPORT, TRANSPORT_UDP);
                if let Some(lifetime) = self.config.lifetime {
                    w.u32(AttributeType::LIFETIME, secs(lifetime));
                }
            }
            Request::Refresh { lifetime } => {
                if let Some(lifetime) = lifetime {
                    w.u32(AttributeType::LIFETIME, lifetime);
                }
            }
            Request::CreatePermission(ip) => {
                // The port is ignored (RFC 8656 §9).
                w.xor_address(AttributeType::XOR_PEER_ADDRESS, SocketAddr::new(ip, 0));
            }
            Request::ChannelBind { number, peer } => {
                w.channel_number(number)
                    .xor_address(AttributeType::XOR_PEER_ADDRESS, peer);
            }
        }
        let key = self.auth.as_ref().map(|auth| {
            w.attribute(
                AttributeType::USERNAME,
                self.credentials.username.as_bytes(),
            )
            .attribute(AttributeType::REALM, auth.realm.as_bytes())
            .attribute(AttributeType::NONCE, auth.nonce.as_bytes())
            .message_integrity(&auth.key);
            auth.key
        });
        w.fingerprint();
        w.finish();
        trace!(?request, signed = key.is_some(), "request");
        self.transmits.push_back(ClientTransmit {
            destination: self.server,
            contents: bytes.clone(),
        });
        self.transactions.push(Transaction {
            tid,
            request,
            bytes,
            key,
            transmissions: 1,
            rto,
            next_at: now + rto,
            retries,
        });
    }

    fn retransmit(&mut self, tid: TransactionId, now: Instant) {
        let Some(index) = self.transactions.iter().position(|t| t.tid == tid) else {
            return;
        };
        let max = self.config.max_transmissions.max(1);
        let last_wait = self.config.rto.max(Duration::from_millis(1)) * self.config.last_wait_rtos;
        let transaction = &mut self.transactions[index];
        if transaction.transmissions >= max {
            let transaction = self.transactions.remove(index);
            self.stats.timeouts += 1;
            return self.failed(transaction.request, RequestFailure::TimedOut);
        }
        transaction.transmissions += 1;
        transaction.rto *= 2;
        transaction.next_at = now
            + if transaction.transmissions == max {
                last_wait
            } else {
                transaction.rto
            };
        self.stats.retransmissions += 1;
        trace!(request = ?transaction.request, n = transaction.transmissions, "retransmit");
        self.transmits.push_back(ClientTransmit {
            destination: self.server,
            contents: transaction.bytes.clone(),
        });
    }

    /// Request transaction ids are unpredictable (RFC 8489 §6): HMAC of a counter under a
    /// random seed.
    fn request_tid(&mut self) -> TransactionId {
        self.counter += 1;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.seed).expect("HMAC takes any key");
        mac.update(&self.counter.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&tag[..12]);
        TransactionId(tid)
    }

    /// Indications are never answered, so their ids need only differ; and they are on the data
    /// path, so no HMAC.
    fn indication_tid(&mut self) -> TransactionId {
        self.counter += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.seed[..4]);
        tid[4..].copy_from_slice(&self.counter.to_be_bytes());
        TransactionId(tid)
    }
}

/// A 256-bit seed from std's `RandomState`, whose SipHash keys come from the operating system's
/// random source; distinct per call.
fn random_seed() -> [u8; 32] {
    let state = RandomState::new();
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_exact_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    seed
}

fn secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// IPv4-mapped IPv6 addresses are IPv4 addresses here, as on the server.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "198.51.100.1:3478";

    fn client() -> Client {
        Client::new(
            SERVER.parse().expect("addr"),
            ClientCredentials::new("alice", "pw"),
        )
    }

    #[test]
    fn retransmits_on_rfc_8489_schedule_then_fails() {
        let mut client = client();
        let start = Instant::now();
        client.allocate(start).expect("idle");
        let first = client.poll_transmit().expect("Allocate");
        let mut sent_at = vec![Duration::ZERO];
        let mut now = start;
        while let Some(at) = client.poll_timeout() {
            now = at;
            client.handle_timeout(now);
            while let Some(again) = client.poll_transmit() {
                assert_eq!(again, first, "a retransmission is the same bytes");
                sent_at.push(now - start);
            }
        }
        let ms: Vec<u128> = sent_at.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(now - start, Duration::from_millis(39_500));
        assert_eq!(
            client.poll_event(),
            Some(ClientEvent::AllocationFailed(RequestFailure::TimedOut))
        );
        assert_eq!(client.stats().retransmissions, 6);
        assert_eq!(client.stats().timeouts, 1);
        // Idle again: another attempt may start.
        client.allocate(now).expect("idle again");
    }

    #[test]
    fn first_allocate_is_unsigned_with_fingerprint() {
        let mut client = client();
        client.allocate(Instant::now()).expect("idle");
        let transmit = client.poll_transmit().expect("Allocate");
        assert_eq!(transmit.destination, SERVER.parse().expect("addr"));
        let m = Message::parse(&transmit.contents).expect("parses");
        assert_eq!(m.method(), Method::ALLOCATE);
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.first_byte(AttributeType::REQUESTED_TRANSPORT), Some(17));
        assert_eq!(m.integrity(), stun::Integrity::None);
        assert!(!m.has(AttributeType::USERNAME));
        assert_eq!(m.verify_fingerprint(), Some(true));
        assert_eq!(client.allocate(Instant::now()), Err(ClientError::NotIdle));
    }

    #[test]
    fn transaction_ids_differ() {
        let mut a = client();
        let mut b = client();
        let ids: std::collections::BTreeSet<_> = (0..100)
            .flat_map(|_| [a.request_tid(), b.request_tid()])
            .collect();
        assert_eq!(ids.len(), 200);
    }

    #[test]
    fn api_misuse_is_an_error() {
        let mut client = client();
        let now = Instant::now();
        let peer: SocketAddr = "93.184.216.34:1".parse().expect("addr");
        assert_eq!(
            client.create_permission(peer.ip(), now),
            Err(ClientError::NoAllocation)
        );
        assert_eq!(
            client.bind_channel(peer, now),
            Err(ClientError::NoAllocation)
        );
        assert_eq!(
            client.send_to(peer, b"x", &mut Vec::new()),
            Err(ClientError::NoAllocation)
        );
        assert_eq!(client.deallocate(now), Err(ClientError::NoAllocation));
    }

    #[test]
    fn foreign_and_garbage_input_is_counted() {
        let mut client = client();
        let now = Instant::now();
        let server: SocketAddr = SERVER.parse().expect("addr");
        assert!(
            client
                .handle_input("192.0.2.9:1".parse().expect("addr"), b"x", now)
                .is_none()
        );
        assert!(client.handle_input(server, &[], now).is_none());
        assert!(client.handle_input(server, &[0xff; 40], now).is_none());
        assert!(client.handle_input(server, &[0x00; 19], now).is_none());
        assert!(
            client
                .handle_input(server, b"\x40\x00\x00\x02hi", now)
                .is_none()
        );
        let stats = client.stats();
        assert_eq!(stats.foreign_dropped, 1);
        assert_eq!(stats.malformed_dropped, 3);
        assert_eq!(stats.unmatched_dropped, 1);
    }
}
