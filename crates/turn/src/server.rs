//! The TURN server: allocations, permissions, channels, and the STUN Binding service.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun::{
    AttributeType, ChannelData, Class, ErrorCode, Integrity, Message, MessageType, MessageWriter,
    Method, PacketKind,
};
use tracing::{debug, trace};

use crate::auth::{Credentials, NonceCheck, NonceIssuer};
use crate::policy::PeerPolicy;
use crate::rate::ByteBucket;

/// REQUESTED-TRANSPORT value for UDP (RFC 8656 §18.8: the IANA protocol number).
const TRANSPORT_UDP: u8 = 17;

/// Attributes a TURN server understands in requests; others in 0x0000–0x7FFF get 420.
const KNOWN: &[AttributeType] = &[
    AttributeType::MAPPED_ADDRESS,
    AttributeType::USERNAME,
    AttributeType::ERROR_CODE,
    AttributeType::UNKNOWN_ATTRIBUTES,
    AttributeType::CHANNEL_NUMBER,
    AttributeType::LIFETIME,
    AttributeType::XOR_PEER_ADDRESS,
    AttributeType::DATA,
    AttributeType::REALM,
    AttributeType::NONCE,
    AttributeType::XOR_RELAYED_ADDRESS,
    AttributeType::REQUESTED_ADDRESS_FAMILY,
    AttributeType::EVEN_PORT,
    AttributeType::REQUESTED_TRANSPORT,
    AttributeType::RESERVATION_TOKEN,
    AttributeType::PASSWORD_ALGORITHM,
    AttributeType::USERHASH,
    AttributeType::XOR_MAPPED_ADDRESS,
    AttributeType::PRIORITY,
    AttributeType::USE_CANDIDATE,
];

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// TCP with STUN/ChannelData framing.
    Tcp,
    /// TLS over TCP (`turns:`).
    Tls,
}

/// The client side of an allocation: RFC 8656's 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// The server's listening address it reached.
    pub server: SocketAddr,
    /// The transport.
    pub transport: Transport,
}

/// Address family of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4
    V4,
    /// IPv6
    V6,
}

impl Family {
    fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Opens and closes relay sockets for the server. The glue binds a real socket in `allocate`.
pub trait RelayAllocator {
    /// Binds a relay transport address of `family` (an even port when `even_port`); `None` when
    /// none is available.
    fn allocate(&mut self, family: Family, even_port: bool) -> Option<SocketAddr>;
    /// Binds an even port and the next one above it (EVEN-PORT with the R bit, RFC 8656
    /// §7.2); `None` when no such pair is free.
    fn allocate_pair(&mut self, family: Family) -> Option<(SocketAddr, SocketAddr)>;
    /// The allocation or reservation using `relay` is gone: close its socket.
    fn release(&mut self, relay: SocketAddr);
}

/// How long a reserved relay port waits for its Allocate with RESERVATION-TOKEN
/// (RFC 8656 §7.2: about 30 seconds).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// What a timer in the expiry heap is for; checked against the state when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expiry {
    Allocation(u64),
    Reservation(u64),
}

/// Where a [`Transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To a client over the transport it used.
    Client(FiveTuple),
    /// From a relay address to a peer.
    Peer {
        /// The relay socket to send from.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
}

/// A packet to send, borrowing the input or the server's scratch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Transmit<'a> {
    /// Where.
    pub destination: Destination,
    /// What.
    pub payload: &'a [u8],
}

/// Settings of a TURN server. The defaults are RFC 8656's and Switchboard's documented ones.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Allocation lifetime when the client asks for none or less (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted (3600 s).
    pub max_lifetime: Duration,
    /// Permission lifetime (300 s, fixed by the RFC).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (600 s, fixed by the RFC).
    pub channel_lifetime: Duration,
    /// Nonce validity in seconds (600).
    pub nonce_lifetime_secs: u64,
    /// Most allocations in total.
    pub max_allocations: usize,
    /// Most allocations per username.
    pub max_allocations_per_user: usize,
    /// Most permissions per allocation.
    pub max_permissions: usize,
    /// Most channels per allocation.
    pub max_channels: usize,
    /// Relayed bytes per second per allocation, both directions together (0: unlimited).
    pub max_bytes_per_sec_per_allocation: u64,
    /// Relayed bytes per second for the whole server (0: unlimited).
    pub max_bytes_per_sec_total: u64,
    /// SOFTWARE in responses; none by default (it only helps attackers fingerprint servers).
    pub software: Option<String>,
    /// Which peers may be relayed to.
    pub policy: PeerPolicy,
    /// Requests without MESSAGE-INTEGRITY (Binding, and the first Allocate that gets the 401
    /// challenge) per second from one source address, sustained; bursts of twice as many. Over
    /// it they are dropped unanswered (a client retransmits). 0 disables the limit.
    pub unauthenticated_per_sec_per_ip: u32,
    /// Most source addresses the per-address limit tracks.
    pub limit_table_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime_secs: 600,
            max_allocations: 10_000,
            max_allocations_per_user: 128,
            max_permissions: 64,
            max_channels: 64,
            max_bytes_per_sec_per_allocation: 12_500_000,
            max_bytes_per_sec_total: 0,
            software: None,
            policy: PeerPolicy::default(),
            unauthenticated_per_sec_per_ip: 50,
            limit_table_size: ratelimit::DEFAULT_TABLE_SIZE,
        }
    }
}

/// Counters for metrics; `allocations` is current, the rest monotonic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations now.
    pub allocations: usize,
    /// Allocations created.
    pub allocations_created: u64,
    /// Binding requests answered.
    pub bindings: u64,
    /// STUN requests received (every method, answered or not).
    pub requests: u64,
    /// Packets relayed from clients to peers.
    pub packets_to_peers: u64,
    /// Bytes (payload) relayed from clients to peers.
    pub bytes_to_peers: u64,
    /// Packets relayed from peers to clients.
    pub packets_to_clients: u64,
    /// Bytes (payload) relayed from peers to clients.
    pub bytes_to_clients: u64,
    /// Requests refused for bad or missing credentials (401, 441).
    pub auth_failures: u64,
    /// Nonces found stale or foreign (438).
    pub stale_nonces: u64,
    /// Packets that were not well-formed STUN or ChannelData, dropped silently.
    pub malformed_dropped: u64,
    /// Requests or indications naming a peer the policy denies.
    pub denied_peers: u64,
    /// Packets dropped for lack of an allocation, permission or channel.
    pub unroutable_dropped: u64,
    /// Packets dropped by a bandwidth quota.
    pub bandwidth_dropped: u64,
    /// Unauthenticated requests dropped for the per-address rate.
    pub rate_limited: u64,
}

/// A TURN server's state.
pub struct Server {
    config: ServerConfig,
    credentials: Credentials,
    nonces: NonceIssuer,
    clock: (Instant, u64),
    allocations: HashMap<u64, Allocation>,
    by_five_tuple: HashMap<FiveTuple, u64>,
    by_relay: HashMap<SocketAddr, u64>,
    per_user: HashMap<String, usize>,
    expiries: BinaryHeap<Reverse<(Instant, Expiry)>>,
    /// Relay ports held for a later Allocate with RESERVATION-TOKEN: token → (relay, expiry).
    reservations: HashMap<u64, (SocketAddr, Instant)>,
    token_key: [u8; 32],
    next_id: u64,
    total_bandwidth: ByteBucket,
    unauthenticated: ratelimit::PerIp,
    scratch: Vec<u8>,
    stats: TurnStats,
}

struct Allocation {
    five: FiveTuple,
    relay: SocketAddr,
    username: String,
    key: [u8; 16],
    expires: Instant,
    /// The Allocate transaction, so a retransmission gets the same answer (RFC 8656 §7.2).
    allocate_tid: stun::TransactionId,
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
    bandwidth: ByteBucket,
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

/// A request that passed authentication.
struct Authenticated {
    username: String,
    key: [u8; 16],
    integrity: Integrity,
}

/// How to answer a request.
struct Reply<'k> {
    key: Option<&'k [u8; 16]>,
    integrity: Integrity,
    fingerprint: bool,
}

impl Server {
    /// A server. `now` and `unix_now` are the same moment on the monotonic and the Unix clock
    /// (for REST credential and nonce expiry); `nonce_secret` must be random.
    pub fn new(
        config: ServerConfig,
        credentials: Credentials,
        nonce_secret: [u8; 32],
        now: Instant,
        unix_now: u64,
    ) -> Self {
        let nonces = NonceIssuer::new(nonce_secret, config.nonce_lifetime_secs);
        let total_bandwidth = ByteBucket::new(config.max_bytes_per_sec_total, now);
        let rate = config.unauthenticated_per_sec_per_ip;
        let unauthenticated =
            ratelimit::PerIp::new(rate, rate.saturating_mul(2), config.limit_table_size);
        Server {
            unauthenticated,
            config,
            credentials,
            nonces,
            clock: (now, unix_now),
            allocations: HashMap::new(),
            by_five_tuple: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            expiries: BinaryHeap::new(),
            reservations: HashMap::new(),
            token_key: nonce_secret,
            next_id: 1,
            total_bandwidth,
            scratch: Vec::with_capacity(1500),
            stats: TurnStats::default(),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> TurnStats {
        TurnStats {
            allocations: self.allocations.len(),
            ..self.stats.clone()
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        self.credentials.realm()
    }

    /// The next allocation expiry to call [`Server::handle_timeout`] at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// Expires allocations whose lifetime has run out.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut dyn RelayAllocator) {
        while let Some(&Reverse((at, expiry))) = self.expiries.peek() {
            if at > now {
                break;
            }
            self.expiries.pop();
            match expiry {
                Expiry::Allocation(id) => {
                    if self.allocations.get(&id).is_some_and(|a| a.expires <= now) {
                        debug!(allocation = id, "allocation expired");
                        self.remove_allocation(id, relays);
                    }
                }
                Expiry::Reservation(token) => {
                    if let Some((relay, _)) = self.reservations.remove(&token) {
                        debug!(%relay, "unused reservation released");
                        relays.release(relay);
                    }
                }
            }
        }
    }

    /// The client's TCP or TLS connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_transport_closed(&mut self, five: FiveTuple, relays: &mut dyn RelayAllocator) {
        if let Some(&id) = self.by_five_tuple.get(&five) {
            debug!(allocation = id, "client connection closed");
            self.remove_allocation(id, relays);
        }
    }

    /// A packet from a client. Returns the packet to send in answer, if any.
    pub fn handle_client<'a>(
        &'a mut self,
        now: Instant,
        five: FiveTuple,
        packet: &'a [u8],
        relays: &mut dyn RelayAllocator,
    ) -> Option<Transmit<'a>> {
        match stun::classify(packet) {
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
                    Class::Request => {
                        self.stats.requests += 1;
                        self.handle_request(now, five, &message, relays)?;
                        Some(Transmit {
                            destination: Destination::Client(five),
                            payload: &self.scratch,
                        })
                    }
                    Class::Indication if message.method() == Method::SEND => {
                        self.handle_send(now, five, message)
                    }
                    _ => None,
                }
            }
            PacketKind::ChannelData => {
                let Ok(frame) = ChannelData::parse(packet) else {
                    self.stats.malformed_dropped += 1;
                    return None;
                };
                self.handle_channel_data(now, five, frame)
            }
            PacketKind::Other => {
                self.stats.malformed_dropped += 1;
                None
            }
        }
    }

    /// A datagram from `peer` arriving at relay address `relay`.
    pub fn handle_peer<'a>(
        &'a mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &'a [u8],
    ) -> Option<Transmit<'a>> {
        let Some(&id) = self.by_relay.get(&relay) else {
            self.stats.unroutable_dropped += 1;
            return None;
        };
        let allocation = self.allocations.get_mut(&id)?;
        let peer = canonical(peer);
        let peer_ip = peer.ip();
        if !allocation.permits(peer_ip, now) || allocation.expires <= now {
            self.stats.unroutable_dropped += 1;
            return None;
        }
        if !admit(
            allocation,
            &mut self.total_bandwidth,
            &mut self.stats,
            payload.len(),
            now,
        ) {
            return None;
        }
        let five = allocation.five;
        let channel = allocation
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number);
        self.scratch.clear();
        match channel {
            Some(number) => {
                let frame = ChannelData {
                    channel: number,
                    data: payload,
                };
                if five.transport == Transport::Udp {
                    frame.encode(&mut self.scratch);
                } else {
                    frame.encode_padded(&mut self.scratch);
                }
            }
            None => {
                let mut w = MessageWriter::new(
                    &mut self.scratch,
                    MessageType::new(Method::DATA, Class::Indication),
                    data_indication_tid(id, self.stats.packets_to_clients),
                );
                w.xor_address(AttributeType::XOR_PEER_ADDRESS, peer)
                    .attribute(AttributeType::DATA, payload);
                w.finish();
            }
        }
        self.stats.packets_to_clients += 1;
        self.stats.bytes_to_clients += payload.len() as u64;
        trace!(allocation = id, bytes = payload.len(), "peer -> client");
        Some(Transmit {
            destination: Destination::Client(five),
            payload: &self.scratch,
        })
    }

    fn handle_channel_data<'a>(
        &mut self,
        now: Instant,
        five: FiveTuple,
        frame: ChannelData<'a>,
    ) -> Option<Transmit<'a>> {
        let Some(allocation) = self
            .by_five_tuple
            .get(&five)
            .and_then(|id| self.allocations.get_mut(id))
        else {
            self.stats.unroutable_dropped += 1;
            return None;
        };
        let Some(peer) = allocation
            .channels
            .iter()
            .find(|c| c.number == frame.channel && c.expires > now)
            .map(|c| c.peer)
        else {
            self.stats.unroutable_dropped += 1;
            return None;
        };
        if !admit(
            allocation,
            &mut self.total_bandwidth,
            &mut self.stats,
            frame.data.len(),
            now,
        ) {
            return None;
        }
        let relay = allocation.relay;
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += frame.data.len() as u64;
        Some(Transmit {
            destination: Destination::Peer { relay, peer },
            payload: frame.data,
        })
    }

    fn handle_send<'a>(
        &mut self,
        now: Instant,
        five: FiveTuple,
        message: Message<'a>,
    ) -> Option<Transmit<'a>> {
        let (Some(peer), Some(data)) = (
            message
                .xor_address(AttributeType::XOR_PEER_ADDRESS)
                .map(canonical),
            message.attribute(AttributeType::DATA),
        ) else {
            self.stats.malformed_dropped += 1;
            return None;
        };
        let Some(allocation) = self
            .by_five_tuple
            .get(&five)
            .and_then(|id| self.allocations.get_mut(id))
        else {
            self.stats.unroutable_dropped += 1;
            return None;
        };
        if Family::of(&peer) != Family::of(&allocation.relay) {
            self.stats.unroutable_dropped += 1;
            return None;
        }
        if self.config.policy.check(peer.ip()).is_err() {
            self.stats.denied_peers += 1;
            return None;
        }
        if !allocation.permits(peer.ip(), now) {
            self.stats.unroutable_dropped += 1;
            return None;
        }
        if !admit(
            allocation,
            &mut self.total_bandwidth,
            &mut self.stats,
            data.len(),
            now,
        ) {
            return None;
        }
        let relay = allocation.relay;
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += data.len() as u64;
        Some(Transmit {
            destination: Destination::Peer { relay, peer },
            payload: data,
        })
    }

    /// Answers a request into `self.scratch`; `None` when nothing is sent.
    fn handle_request(
        &mut self,
        now: Instant,
        five: FiveTuple,
        request: &Message<'_>,
        relays: &mut dyn RelayAllocator,
    ) -> Option<()> {
        let fingerprint = request.has_fingerprint();
        let plain = Reply {
            key: None,
            integrity: Integrity::None,
            fingerprint,
        };
        if request.integrity() == Integrity::None
            && !self.unauthenticated.try_take(five.client.ip(), now)
        {
            self.stats.rate_limited += 1;
            trace!(client = %five.client, "unauthenticated request over the rate; dropped");
            return None;
        }
        let unknown: Vec<AttributeType> = request.unknown_required(KNOWN).collect();
        if !unknown.is_empty() {
            self.error(request, ErrorCode::UNKNOWN_ATTRIBUTE, &plain, |w| {
                w.unknown_attributes(unknown.iter().copied());
            });
            return Some(());
        }
        let method = request.method();
        if method == Method::BINDING {
            self.stats.bindings += 1;
            self.respond(request, &plain, |w| {
                w.xor_address(AttributeType::XOR_MAPPED_ADDRESS, five.client);
            });
            return Some(());
        }
        if ![
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
        ]
        .contains(&method)
        {
            self.error(request, ErrorCode::BAD_REQUEST, &plain, |_| {});
            return Some(());
        }
        let auth = match self.authenticate(now, five, request) {
            Ok(auth) => auth,
            Err(()) => return Some(()),
        };
        let reply = Reply {
            key: Some(&auth.key),
            integrity: auth.integrity,
            fingerprint,
        };
        match method {
            Method::ALLOCATE => self.allocate(now, five, request, &auth, &reply, relays),
            Method::REFRESH => self.refresh(now, five, request, &auth, &reply, relays),
            Method::CREATE_PERMISSION => self.create_permission(now, five, request, &auth, &reply),
            _ => self.channel_bind(now, five, request, &auth, &reply),
        }
        Some(())
    }

    /// Checks long-term credentials (RFC 8489 §9.2.4). On failure the error response is
    /// already in `self.scratch`.
    fn authenticate(
        &mut self,
        now: Instant,
        five: FiveTuple,
        request: &Message<'_>,
    ) -> Result<Authenticated, ()> {
        let fingerprint = request.has_fingerprint();
        let plain = Reply {
            key: None,
            integrity: Integrity::None,
            fingerprint,
        };
        let unix_now = self.unix(now);
        let client_ip = five.client.ip();
        if request.integrity() == Integrity::None {
            self.challenge(
                request,
                ErrorCode::UNAUTHENTICATED,
                client_ip,
                unix_now,
                &plain,
            );
            return Err(());
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            request.text(AttributeType::USERNAME),
            request.text(AttributeType::REALM),
            request.text(AttributeType::NONCE),
        ) else {
            self.error(request, ErrorCode::BAD_REQUEST, &plain, |_| {});
            return Err(());
        };
        if self.nonces.check(nonce, client_ip, unix_now) != NonceCheck::Valid {
            self.stats.stale_nonces += 1;
            self.challenge(request, ErrorCode::STALE_NONCE, client_ip, unix_now, &plain);
            return Err(());
        }
        let key = match self.credentials.key(username, unix_now) {
            Ok(key) if realm == self.credentials.realm() && request.verify_integrity(&key) => key,
            _ => {
                self.stats.auth_failures += 1;
                debug!(client = %five.client, "authentication failed");
                self.challenge(
                    request,
                    ErrorCode::UNAUTHENTICATED,
                    client_ip,
                    unix_now,
                    &plain,
                );
                return Err(());
            }
        };
        Ok(Authenticated {
            username: username.to_owned(),
            key,
            integrity: request.integrity(),
        })
    }

    /// A 401 or 438 with REALM and a fresh NONCE.
    fn challenge(
        &mut self,
        request: &Message<'_>,
        error: ErrorCode<'static>,
        client: IpAddr,
        unix_now: u64,
        reply: &Reply<'_>,
    ) {
        let nonce = self.nonces.issue(client, unix_now);
        let realm = self.credentials.realm().to_owned();
        self.error(request, error, reply, |w| {
            w.attribute(AttributeType::REALM, realm.as_bytes())
                .attribute(AttributeType::NONCE, nonce.as_bytes());
        });
    }

    fn allocate(
        &mut self,
        now: Instant,
        five: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
        reply: &Reply<'_>,
        relays: &mut dyn RelayAllocator,
    ) {
        if let Some(existing) = self
            .by_five_tuple
            .get(&five)
            .and_then(|id| self.allocations.get(id))
        {
            if existing.allocate_tid == request.transaction_id() {
                // A retransmission: the same success again.
                let (relay, lifetime) = (existing.relay, remaining_secs(existing.expires, now));
                return self.respond(request, reply, |w| {
                    w.xor_address(AttributeType::XOR_RELAYED_ADDRESS, relay)
                        .u32(AttributeType::LIFETIME, lifetime)
                        .xor_address(AttributeType::XOR_MAPPED_ADDRESS, five.client);
                });
            }
            return self.error(request, ErrorCode::ALLOCATION_MISMATCH, reply, |_| {});
        }
        match request.first_byte(AttributeType::REQUESTED_TRANSPORT) {
            None => return self.error(request, ErrorCode::BAD_REQUEST, reply, |_| {}),
            Some(TRANSPORT_UDP) => {}
            Some(_) => return self.error(request, ErrorCode::UNSUPPORTED_TRANSPORT, reply, |_| {}),
        }
        if request.has(AttributeType::DONT_FRAGMENT) {
            // We cannot set DF on relayed datagrams, so say so (RFC 8656 §7.2).
            return self.error(request, ErrorCode::UNKNOWN_ATTRIBUTE, reply, |w| {
                w.unknown_attributes([AttributeType::DONT_FRAGMENT]);
            });
        }
        let even_port = request.even_port();
        let token = request.u64(AttributeType::RESERVATION_TOKEN);
        if request.has(AttributeType::RESERVATION_TOKEN)
            && (token.is_none()
                || even_port.is_some()
                || request.has(AttributeType::REQUESTED_ADDRESS_FAMILY))
        {
            return self.error(request, ErrorCode::BAD_REQUEST, reply, |_| {});
        }
        let family = match request.first_byte(AttributeType::REQUESTED_ADDRESS_FAMILY) {
            None | Some(stun::addr_family::IPV4) => Family::V4,
            Some(stun::addr_family::IPV6) => Family::V6,
            Some(_) => {
                return self.error(
                    request,
                    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                    reply,
                    |_| {},
                );
            }
        };
        let user_count = self.per_user.get(&auth.username).copied().unwrap_or(0);
        if user_count >= self.config.max_allocations_per_user {
            return self.error(request, ErrorCode::ALLOCATION_QUOTA_REACHED, reply, |_| {});
        }
        if self.allocations.len() >= self.config.max_allocations {
            return self.error(request, ErrorCode::INSUFFICIENT_CAPACITY, reply, |_| {});
        }
        let mut reservation = None;
        let relay = match (token, even_port) {
            (Some(token), _) => match self.reservations.remove(&token) {
                Some((relay, expires)) if expires > now => Some(relay),
                Some((relay, _)) => {
                    relays.release(relay);
                    None
                }
                None => None,
            },
            (None, Some(true)) => relays.allocate_pair(family).map(|(even, odd)| {
                let token = self.reservation_token();
                reservation = Some(token);
                self.reservations
                    .insert(token, (odd, now + RESERVATION_LIFETIME));
                self.expiries.push(Reverse((
                    now + RESERVATION_LIFETIME,
                    Expiry::Reservation(token),
                )));
                even
            }),
            (None, even) => relays.allocate(family, even.is_some()),
        };
        let Some(relay) = relay else {
            return self.error(request, ErrorCode::INSUFFICIENT_CAPACITY, reply, |_| {});
        };
        let lifetime = self.lifetime(request);
        let id = self.next_id;
        self.next_id += 1;
        let expires = now + lifetime;
        self.allocations.insert(
            id,
            Allocation {
                five,
                relay,
                username: auth.username.clone(),
                key: auth.key,
                expires,
                allocate_tid: request.transaction_id(),
                permissions: Vec::new(),
                channels: Vec::new(),
                bandwidth: ByteBucket::new(self.config.max_bytes_per_sec_per_allocation, now),
            },
        );
        self.by_five_tuple.insert(five, id);
        self.by_relay.insert(relay, id);
        *self.per_user.entry(auth.username.clone()).or_default() += 1;
        self.expiries
            .push(Reverse((expires, Expiry::Allocation(id))));
        self.stats.allocations_created += 1;
        debug!(allocation = id, %relay, lifetime = lifetime.as_secs(), "allocated");
        self.respond(request, reply, |w| {
            w.xor_address(AttributeType::XOR_RELAYED_ADDRESS, relay)
                .u32(AttributeType::LIFETIME, lifetime.as_secs() as u32);
            if let Some(token) = reservation {
                w.u64(AttributeType::RESERVATION_TOKEN, token);
            }
            w.xor_address(AttributeType::XOR_MAPPED_ADDRESS, five.client);
        });
    }

    /// An unguessable reservation token: a MAC of a counter under the server's secret.
    fn reservation_token(&mut self) -> u64 {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.token_key)
            .expect("HMAC takes any key");
        mac.update(b"reservation");
        mac.update(&self.next_id.to_be_bytes());
        mac.update(&(self.reservations.len() as u64).to_be_bytes());
        self.next_id += 1;
        let tag = mac.finalize().into_bytes();
        u64::from_be_bytes(tag[..8].try_into().expect("8 bytes"))
    }

    fn refresh(
        &mut self,
        now: Instant,
        five: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
        reply: &Reply<'_>,
        relays: &mut dyn RelayAllocator,
    ) {
        let Some(id) = self.owned_allocation(five, request, auth, reply) else {
            return;
        };
        if let Some(family) = request.first_byte(AttributeType::REQUESTED_ADDRESS_FAMILY) {
            let relay_family = self.allocations.get(&id).map(|a| Family::of(&a.relay));
            let asked = match family {
                stun::addr_family::IPV4 => Some(Family::V4),
                stun::addr_family::IPV6 => Some(Family::V6),
                _ => None,
            };
            if asked != relay_family {
                return self.error(
                    request,
                    ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                    reply,
                    |_| {},
                );
            }
        }
        if request.u32(AttributeType::LIFETIME) == Some(0) {
            debug!(allocation = id, "deleted by refresh");
            self.remove_allocation(id, relays);
            return self.respond(request, reply, |w| {
                w.u32(AttributeType::LIFETIME, 0);
            });
        }
        let lifetime = self.lifetime(request);
        let expires = now + lifetime;
        if let Some(allocation) = self.allocations.get_mut(&id) {
            allocation.expires = expires;
        }
        self.expiries
            .push(Reverse((expires, Expiry::Allocation(id))));
        self.respond(request, reply, |w| {
            w.u32(AttributeType::LIFETIME, lifetime.as_secs() as u32);
        });
    }

    fn create_permission(
        &mut self,
        now: Instant,
        five: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
        reply: &Reply<'_>,
    ) {
        let Some(id) = self.owned_allocation(five, request, auth, reply) else {
            return;
        };
        let mut peers = Vec::new();
        for peer in request.xor_addresses(AttributeType::XOR_PEER_ADDRESS) {
            match peer {
                Some(peer) => peers.push(canonical(peer)),
                None => return self.error(request, ErrorCode::BAD_REQUEST, reply, |_| {}),
            }
        }
        if peers.is_empty() {
            return self.error(request, ErrorCode::BAD_REQUEST, reply, |_| {});
        }
        if let Err(error) = self.check_peers(id, &peers) {
            return self.error(request, error, reply, |_| {});
        }
        let lifetime = self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let Some(allocation) = self.allocations.get_mut(&id) else {
            return;
        };
        allocation.permissions.retain(|(_, expires)| *expires > now);
        let new = peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| !allocation.permissions.iter().any(|(have, _)| have == ip))
            .collect::<std::collections::BTreeSet<_>>();
        if allocation.permissions.len() + new.len() > max {
            return self.error(request, ErrorCode::INSUFFICIENT_CAPACITY, reply, |_| {});
        }
        for peer in &peers {
            install_permission(allocation, peer.ip(), now + lifetime);
        }
        self.respond(request, reply, |_| {});
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        five: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
        reply: &Reply<'_>,
    ) {
        let Some(id) = self.owned_allocation(five, request, auth, reply) else {
            return;
        };
        let (Some(number), Some(peer)) = (
            request.channel_number(),
            request
                .xor_address(AttributeType::XOR_PEER_ADDRESS)
                .map(canonical),
        ) else {
            return self.error(request, ErrorCode::BAD_REQUEST, reply, |_| {});
        };
        if !(stun::MIN_CHANNEL..=stun::MAX_CHANNEL).contains(&number) {
            return self.error(request, ErrorCode::BAD_REQUEST, reply, |_| {});
        }
        if let Err(error) = self.check_peers(id, &[peer]) {
            return self.error(request, error, reply, |_| {});
        }
        let (channel_lifetime, permission_lifetime, max) = (
            self.config.channel_lifetime,
            self.config.permission_lifetime,
            self.config.max_channels,
        );
        let Some(allocation) = self.allocations.get_mut(&id) else {
            return;
        };
        // A binding holds its number and peer for 5 minutes after it expires (RFC 8656 §12).
        let cooldown = Duration::from_secs(300);
        allocation.channels.retain(|c| c.expires + cooldown > now);
        let by_number = allocation.channels.iter().position(|c| c.number == number);
        let by_peer = allocation.channels.iter().position(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(a), Some(b)) if a == b => allocation.channels[a].expires = now + channel_lifetime,
            (None, None) => {
                if allocation.channels.len() >= max {
                    return self.error(request, ErrorCode::INSUFFICIENT_CAPACITY, reply, |_| {});
                }
                allocation.channels.push(Channel {
                    number,
                    peer,
                    expires: now + channel_lifetime,
                });
            }
            // The number is bound to another peer, or the peer to another number.
            _ => return self.error(request, ErrorCode::BAD_REQUEST, reply, |_| {}),
        }
        install_permission(allocation, peer.ip(), now + permission_lifetime);
        self.respond(request, reply, |_| {});
    }

    /// The allocation of this 5-tuple, if the authenticated user owns it; else the error
    /// response (437 or 441) is written.
    fn owned_allocation(
        &mut self,
        five: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
        reply: &Reply<'_>,
    ) -> Option<u64> {
        let Some(&id) = self.by_five_tuple.get(&five) else {
            self.error(request, ErrorCode::ALLOCATION_MISMATCH, reply, |_| {});
            return None;
        };
        let owner_matches = self
            .allocations
            .get(&id)
            .is_some_and(|a| a.username == auth.username && a.key == auth.key);
        if !owner_matches {
            self.stats.auth_failures += 1;
            self.error(request, ErrorCode::WRONG_CREDENTIALS, reply, |_| {});
            return None;
        }
        Some(id)
    }

    /// Every peer must match the relay's family (443) and pass the policy (403).
    fn check_peers(&mut self, id: u64, peers: &[SocketAddr]) -> Result<(), ErrorCode<'static>> {
        let family = self.allocations.get(&id).map(|a| Family::of(&a.relay));
        for peer in peers {
            if Some(Family::of(peer)) != family {
                return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
            }
            if let Err(why) = self.config.policy.check(peer.ip()) {
                self.stats.denied_peers += 1;
                debug!(?why, "peer address denied");
                return Err(ErrorCode::FORBIDDEN);
            }
        }
        Ok(())
    }

    fn lifetime(&self, request: &Message<'_>) -> Duration {
        let asked = request
            .u32(AttributeType::LIFETIME)
            .map(|s| Duration::from_secs(u64::from(s)));
        match asked {
            Some(asked) if asked > self.config.default_lifetime => {
                asked.min(self.config.max_lifetime)
            }
            _ => self.config.default_lifetime,
        }
    }

    fn remove_allocation(&mut self, id: u64, relays: &mut dyn RelayAllocator) {
        let Some(allocation) = self.allocations.remove(&id) else {
            return;
        };
        self.by_five_tuple.remove(&allocation.five);
        self.by_relay.remove(&allocation.relay);
        if let Some(count) = self.per_user.get_mut(&allocation.username) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(&allocation.username);
            }
        }
        relays.release(allocation.relay);
    }

    fn unix(&self, now: Instant) -> u64 {
        self.clock.1 + now.saturating_duration_since(self.clock.0).as_secs()
    }

    fn respond(
        &mut self,
        request: &Message<'_>,
        reply: &Reply<'_>,
        build: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        self.write(request, Class::SuccessResponse, reply, build);
    }

    fn error(
        &mut self,
        request: &Message<'_>,
        error: ErrorCode<'_>,
        reply: &Reply<'_>,
        build: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        trace!(
            code = error.code,
            method = request.method().0,
            "error response"
        );
        self.write(request, Class::ErrorResponse, reply, |w| {
            w.error_code(error);
            build(w);
        });
    }

    fn write(
        &mut self,
        request: &Message<'_>,
        class: Class,
        reply: &Reply<'_>,
        build: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        self.scratch.clear();
        let mut w = MessageWriter::new(
            &mut self.scratch,
            MessageType::new(request.method(), class),
            request.transaction_id(),
        );
        build(&mut w);
        if let Some(software) = &self.config.software {
            w.attribute(AttributeType::SOFTWARE, software.as_bytes());
        }
        if let Some(key) = reply.key {
            match reply.integrity {
                Integrity::Sha256 => w.message_integrity_sha256(key),
                _ => w.message_integrity(key),
            };
        }
        if reply.fingerprint {
            w.fingerprint();
        }
        w.finish();
    }
}

impl Allocation {
    /// Whether a live permission covers `ip`.
    fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|(have, expires)| *have == ip && *expires > now)
    }
}

/// Charges `len` relayed bytes to the allocation's and the server's bandwidth quotas.
fn admit(
    allocation: &mut Allocation,
    total: &mut ByteBucket,
    stats: &mut TurnStats,
    len: usize,
    now: Instant,
) -> bool {
    let admitted = allocation.bandwidth.try_take(len, now) && total.try_take(len, now);
    if !admitted {
        stats.bandwidth_dropped += 1;
    }
    admitted
}

fn install_permission(allocation: &mut Allocation, ip: IpAddr, expires: Instant) {
    match allocation
        .permissions
        .iter_mut()
        .find(|(have, _)| *have == ip)
    {
        Some(entry) => entry.1 = expires,
        None => allocation.permissions.push((ip, expires)),
    }
}

/// Peers named as IPv4-mapped IPv6 addresses are IPv4 peers.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn remaining_secs(expires: Instant, now: Instant) -> u32 {
    expires.saturating_duration_since(now).as_secs() as u32
}

/// Data indications need a transaction id; only uniqueness matters (RFC 8656 §11.5).
fn data_indication_tid(allocation: u64, counter: u64) -> stun::TransactionId {
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&(allocation as u32).to_be_bytes());
    tid[4..].copy_from_slice(&counter.to_be_bytes());
    stun::TransactionId(tid)
}
