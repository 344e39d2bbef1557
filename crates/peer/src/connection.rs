//! One WebRTC peer connection: str0m driven over tokio UDP sockets.
//!
//! This is the only module that talks to str0m. Every call into the engine goes through
//! [`guarded`], so a panic inside it ends this connection with an error instead of the process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::net::{Protocol, Receive};
use str0m::{
    Candidate, CandidateKind, Event, IceConnectionState, Input, Output, Rtc, RtcConfig, RtcError,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tracing::{debug, trace, warn};

/// Bytes the data channels may hold unacknowledged; with the round trip it bounds throughput
/// (256 KiB over 50 ms is about 5 MB/s). It is not larger because the SCTP stack walks every
/// chunk in flight on each poll: on loopback 128 KiB moves about 32 MB/s, 256 KiB about 25 and
/// 1 MiB about 12 (BENCHMARKS.md).
const MAX_BUFFERED: usize = 256 * 1024;
/// Largest datagram we expect (the engine keeps packets below the path MTU).
const RECV_BUFFER: usize = 2048;
/// Datagrams handed to the engine before its output is drained again: fewer polls per
/// datagram, and the receiver sends one SACK per batch. The DTLS layer refuses more than 30
/// queued records ("receive queue full").
const RECV_BATCH: usize = 16;

/// How often ICE checks the selected pair (and the longest wait between retransmissions).
const ICE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the connected peer may send nothing (data, ICE checks or their answers, which come
/// every second) before we report the path lost. The ICE agent alone would wait at least 15 s
/// after the last check it received.
const SILENCE: std::time::Duration = std::time::Duration::from_secs(4);

/// Where the peer looks for local candidates.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Also offer loopback addresses (tests, and peers on the same machine).
    pub loopback: bool,
    /// A TURN server to allocate a relayed candidate on, over UDP.
    pub relay: Option<RelayServer>,
    /// The same over TCP (`turn:...?transport=tcp`): for networks that let no UDP out. When
    /// both are given both are tried at once, and UDP wins if it answers within
    /// [`UDP_GRACE`] of TCP.
    pub relay_tcp: Option<RelayServer>,
    /// Offer only the relayed candidate: every packet goes through the TURN server.
    pub relay_only: bool,
}

/// A TURN server and the credentials for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayServer {
    /// The server's address.
    pub server: SocketAddr,
    /// TURN username.
    pub username: String,
    /// TURN password.
    pub password: String,
}

/// How long allocating the relayed candidate may take.
const ALLOCATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a TURN-over-UDP allocation may still finish after one over TCP did: UDP relays
/// better (no head-of-line blocking) and brings a server-reflexive candidate, so it is worth a
/// short wait; this covers two retransmissions of a lost request.
pub const UDP_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);
/// Bytes queued for a TURN TCP connection beyond which relayed datagrams are dropped (as a full
/// UDP socket buffer would).
const TCP_BACKLOG: usize = 1 << 20;

/// How we reach the TURN server.
enum Link {
    /// Datagrams; also carries our server-reflexive candidate's traffic.
    Udp(UdpSocket),
    /// A TCP stream of STUN messages and ChannelData frames (RFC 8656 §12.5).
    Tcp {
        stream: TcpStream,
        decoder: net::StreamDecoder,
        /// Framed bytes the socket has not taken yet.
        backlog: Vec<u8>,
    },
}

impl Link {
    /// Sends one datagram to `destination` (over TCP: one frame to the server, padded to 4
    /// bytes). Best effort, like UDP: a full buffer drops it.
    fn send(&mut self, data: &[u8], destination: SocketAddr) {
        match self {
            Link::Udp(socket) => {
                if let Err(err) = socket.try_send_to(data, destination) {
                    trace!(%destination, %err, "send failed");
                }
            }
            Link::Tcp {
                stream, backlog, ..
            } => {
                if backlog.len() + data.len() > TCP_BACKLOG {
                    trace!("TURN TCP backlog full; dropping a datagram");
                    return;
                }
                backlog.extend_from_slice(data);
                // ChannelData is padded to a multiple of 4 on streams; STUN messages already are.
                backlog.resize(backlog.len() + (4 - data.len() % 4) % 4, 0);
                Self::write_backlog(stream, backlog);
            }
        }
    }

    fn write_backlog(stream: &TcpStream, backlog: &mut Vec<u8>) {
        while !backlog.is_empty() {
            match stream.try_write(backlog) {
                Ok(n) => {
                    backlog.drain(..n);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    debug!(%err, "TURN TCP write failed");
                    backlog.clear();
                }
            }
        }
    }

    /// Writes what the TCP socket would not take earlier.
    fn flush_backlog(&mut self) {
        if let Link::Tcp {
            stream, backlog, ..
        } = self
        {
            Self::write_backlog(stream, backlog);
        }
    }

    /// Reads what has arrived, up to `limit` datagrams or frames, handing each to `handle` with
    /// its source (over TCP always `server`); returns how many were read.
    fn read_ready(
        &mut self,
        buffer: &mut [u8],
        server: SocketAddr,
        limit: usize,
        mut handle: impl FnMut(SocketAddr, &[u8]) -> Result<()>,
    ) -> Result<usize> {
        let mut read = 0;
        match self {
            Link::Udp(socket) => {
                while read < limit {
                    match socket.try_recv_from(buffer) {
                        Ok((len, source)) => {
                            read += 1;
                            handle(source, &buffer[..len])?;
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(err) => {
                            trace!(%err, "TURN receive error");
                            read += 1;
                        }
                    }
                }
            }
            Link::Tcp {
                stream, decoder, ..
            } => {
                while read < limit {
                    match stream.try_read(buffer) {
                        Ok(0) => bail!("the TURN server closed the TCP connection"),
                        Ok(len) => decoder.extend(&buffer[..len]),
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(err) => bail!("TURN over TCP: {err}"),
                    }
                    while let Some(frame) = decoder
                        .next_frame()
                        .map_err(|err| anyhow!("TURN over TCP: {err}"))?
                    {
                        read += 1;
                        handle(server, frame)?;
                    }
                }
            }
        }
        Ok(read)
    }

    /// Ready to read, or to write a waiting backlog.
    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let ready = match self {
            Link::Udp(socket) => socket.poll_recv_ready(cx).is_ready(),
            Link::Tcp {
                stream, backlog, ..
            } => {
                stream.poll_read_ready(cx).is_ready()
                    || (!backlog.is_empty() && stream.poll_write_ready(cx).is_ready())
            }
        };
        if ready {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// The TURN allocation behind our relayed candidate.
struct Relay {
    client: turn::Client,
    link: Link,
    /// The local address of `socket`, where the server's datagrams arrive.
    local: SocketAddr,
    /// The relayed transport address, our candidate.
    relayed: SocketAddr,
    /// Our address as the TURN server saw it: a server-reflexive candidate with `local` as base.
    mapped: SocketAddr,
    /// Whether datagrams from others than the server may reach the engine on this socket
    /// (the server-reflexive candidate is offered).
    direct: bool,
    buf: Vec<u8>,
}

impl Relay {
    /// Sends what the client has queued (requests, refreshes) to the server.
    fn flush(&mut self) {
        while let Some(transmit) = self.client.poll_transmit() {
            self.link.send(&transmit.contents, transmit.destination);
        }
        while let Some(event) = self.client.poll_event() {
            debug!(?event, "TURN");
        }
    }

    /// Relays one datagram of ours to `peer`, binding a channel to it on first use.
    fn send(&mut self, peer: SocketAddr, data: &[u8], now: Instant) {
        if self.client.channel(peer).is_none()
            && let Err(err) = self.client.bind_channel(peer, now)
        {
            debug!(%peer, %err, "cannot bind a TURN channel");
            return;
        }
        self.buf.clear();
        match self.client.send_to(peer, data, &mut self.buf) {
            Ok(()) => self.link.send(&self.buf, self.client.server()),
            Err(err) => trace!(%peer, %err, "not relayed"),
        }
        self.flush();
    }

    /// Allocates on `udp` and `tcp` at once, preferring UDP (see [`UDP_GRACE`]).
    async fn allocate_any(udp: Option<&RelayServer>, tcp: Option<&RelayServer>) -> Result<Relay> {
        let (udp, tcp) = match (udp, tcp) {
            (Some(udp), Some(tcp)) => (udp, tcp),
            (Some(udp), None) => return Relay::allocate(udp, false).await,
            (None, Some(tcp)) => return Relay::allocate(tcp, true).await,
            (None, None) => bail!("no TURN server"),
        };
        let udp = Relay::allocate(udp, false);
        let tcp = Relay::allocate(tcp, true);
        tokio::pin!(udp, tcp);
        tokio::select! {
            result = &mut udp => match result {
                Ok(relay) => Ok(relay),
                Err(err) => {
                    debug!("TURN over UDP failed ({err:#}); waiting for TCP");
                    tcp.await
                }
            },
            result = &mut tcp => match result {
                Ok(relay) => match tokio::time::timeout(UDP_GRACE, &mut udp).await {
                    Ok(Ok(udp)) => Ok(udp),
                    _ => {
                        debug!("TURN over UDP did not answer; relaying over TCP");
                        Ok(relay)
                    }
                },
                Err(err) => {
                    debug!("TURN over TCP failed ({err:#}); waiting for UDP");
                    udp.await
                }
            },
        }
    }

    /// Allocates on `server` over UDP, or over TCP when `tcp`.
    async fn allocate(server: &RelayServer, tcp: bool) -> Result<Relay> {
        let (link, local) = if tcp {
            let stream = tokio::time::timeout(ALLOCATE_TIMEOUT, TcpStream::connect(server.server))
                .await
                .map_err(|_| anyhow!("TURN over TCP: no connection to {}", server.server))?
                .with_context(|| format!("TURN over TCP to {}", server.server))?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr()?;
            let link = Link::Tcp {
                stream,
                decoder: net::StreamDecoder::new(),
                backlog: Vec::new(),
            };
            (link, local)
        } else {
            // Bind to the address that routes to the server, so the socket's address can be
            // the base of a server-reflexive candidate.
            let unspecified: IpAddr = if server.server.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            let probe = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
            probe.connect(server.server)?;
            let socket = bind_udp(SocketAddr::new(probe.local_addr()?.ip(), 0))?;
            let local = socket.local_addr()?;
            (Link::Udp(socket), local)
        };
        let credentials =
            turn::ClientCredentials::new(server.username.clone(), server.password.clone());
        let client = if tcp {
            // RFC 8489 §6.2.2: no retransmissions over a reliable transport.
            let config = turn::ClientConfig {
                max_transmissions: 1,
                rto: ALLOCATE_TIMEOUT,
                last_wait_rtos: 1,
                ..turn::ClientConfig::default()
            };
            turn::Client::with_config(server.server, credentials, config)
        } else {
            turn::Client::new(server.server, credentials)
        };
        let mut relay = Relay {
            client,
            link,
            local,
            relayed: local,
            mapped: local,
            direct: false,
            buf: Vec::with_capacity(RECV_BUFFER),
        };
        relay
            .client
            .allocate(Instant::now())
            .map_err(|err| anyhow!("TURN: {err}"))?;
        let deadline = tokio::time::Instant::now() + ALLOCATE_TIMEOUT;
        let mut buffer = vec![0u8; RECV_BUFFER];
        loop {
            relay.flush_requests().await?;
            while let Some(event) = relay.client.poll_event() {
                match event {
                    turn::ClientEvent::Allocated {
                        relayed, mapped, ..
                    } => {
                        relay.relayed = relayed;
                        relay.mapped = mapped;
                        return Ok(relay);
                    }
                    turn::ClientEvent::AllocationFailed(failure) => {
                        bail!("the TURN server refused the allocation: {failure:?}")
                    }
                    other => debug!(?other, "TURN"),
                }
            }
            let wake = relay
                .client
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                _ = std::future::poll_fn(|cx| relay.link.poll_ready(cx)) => {
                    let Relay { client, link, .. } = &mut relay;
                    link.read_ready(&mut buffer, server.server, usize::MAX, |source, packet| {
                        let _ = client.handle_input(source, packet, Instant::now());
                        Ok(())
                    })?;
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= deadline {
                        bail!("the TURN server at {} did not answer", server.server);
                    }
                    relay.client.handle_timeout(Instant::now());
                }
            }
        }
    }
}

impl Relay {
    /// Sends the client's queued requests, waiting for the socket (only while allocating).
    async fn flush_requests(&mut self) -> Result<()> {
        while let Some(transmit) = self.client.poll_transmit() {
            match &mut self.link {
                Link::Udp(socket) => {
                    socket
                        .send_to(&transmit.contents, transmit.destination)
                        .await?;
                }
                Link::Tcp { stream, .. } => stream.write_all(&transmit.contents).await?,
            }
        }
        Ok(())
    }

    fn is_tcp(&self) -> bool {
        matches!(self.link, Link::Tcp { .. })
    }
}

/// What the connection reports to the application.
#[derive(Debug)]
pub enum PeerEvent {
    /// ICE and DTLS are up; again after a [`PeerEvent::Disconnected`] once ICE has a path.
    Connected,
    /// A data channel is open (ours, or one the remote peer created).
    ChannelOpen(ChannelId, String),
    /// A message arrived on a data channel.
    ChannelData(ChannelId, Vec<u8>),
    /// A channel's buffered amount fell below its low threshold.
    ChannelBufferedLow(ChannelId),
    /// A data channel closed.
    ChannelClosed(ChannelId),
    /// ICE lost the path to the peer (it may come back).
    Disconnected,
    /// The connection is over: closed by us, by the peer, or failed.
    Closed(String),
}

/// A peer connection and the sockets it owns.
pub struct Connection {
    rtc: Rtc,
    sockets: HashMap<SocketAddr, UdpSocket>,
    buffer: Vec<u8>,
    relay: Option<Relay>,
    pending_offer: Option<SdpPendingOffer>,
    remote_set: bool,
    early_candidates: Vec<Candidate>,
    closed: Option<String>,
    route: Route,
    /// The remote candidates we were given, to name the type of the one we send to.
    remote_candidates: Vec<(SocketAddr, CandidateType)>,
    /// Source and destination of the last DTLS datagram we sent.
    last_dtls: Option<(SocketAddr, SocketAddr)>,
    /// How candidates are gathered, again on an ICE restart.
    options: PeerOptions,
    /// Our candidates the engine has, with the socket address each uses, to withdraw those
    /// whose socket goes away.
    local_candidates: Vec<(SocketAddr, Candidate)>,
    /// ICE reported the path lost (or the peer fell silent) and no path is back since.
    ice_lost: bool,
    /// When a datagram from the peer last reached the engine.
    last_heard: Instant,
    /// DTLS is up: from then on silence means the path is lost.
    connected: bool,
    /// We reported the path lost because the peer fell silent, not because ICE said so.
    silent: bool,
}

/// A candidate's type, named as in SDP and `RTCIceCandidateStats.candidateType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateType {
    /// An address of one of the machine's interfaces.
    Host,
    /// An address a STUN/TURN server saw (the NAT's mapping).
    ServerReflexive,
    /// An address learned from a connectivity check, announced by nobody.
    PeerReflexive,
    /// A TURN relay's address.
    Relayed,
}

impl std::fmt::Display for CandidateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relayed => "relay",
        })
    }
}

impl From<CandidateKind> for CandidateType {
    fn from(kind: CandidateKind) -> Self {
        match kind {
            CandidateKind::Host => CandidateType::Host,
            CandidateKind::ServerReflexive => CandidateType::ServerReflexive,
            CandidateKind::PeerReflexive => CandidateType::PeerReflexive,
            CandidateKind::Relayed => CandidateType::Relayed,
        }
    }
}

/// The candidate pair our data flows over, like the selected pair in a browser's `getStats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidatePair {
    /// Our candidate's type.
    pub local: CandidateType,
    /// The other side's candidate's type (`PeerReflexive` when it was never announced).
    pub remote: CandidateType,
    /// Our relayed candidate reaches the TURN server over TCP.
    pub relay_over_tcp: bool,
}

impl std::fmt::Display for CandidatePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)?;
        if self.relay_over_tcp && self.local == CandidateType::Relayed {
            f.write_str(" (TURN over TCP)")?;
        }
        Ok(())
    }
}

/// Which of our candidates the connection's data leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Nothing sent yet.
    Unknown,
    /// A host candidate: straight from one of our interfaces.
    Host,
    /// Our server-reflexive candidate: direct, through our NAT's mapping.
    ServerReflexive,
    /// Our relayed candidate: through the TURN server.
    Relayed,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Unknown => "not connected yet",
            Route::Host => "directly",
            Route::ServerReflexive => "directly, through a NAT",
            Route::Relayed => "through the TURN relay",
        })
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("sockets", &self.sockets.keys().collect::<Vec<_>>())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Runs one call into the engine, turning a panic into an error.
fn guarded<T>(call: impl FnOnce() -> Result<T, RtcError>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result.map_err(|err| anyhow!("WebRTC engine: {err}")),
        Err(_) => Err(anyhow!(
            "the WebRTC engine panicked; this connection is closed"
        )),
    }
}

/// The addresses to gather host candidates on.
pub fn host_addresses(options: &PeerOptions) -> Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for interface in nix::ifaddrs::getifaddrs().context("listing network interfaces")? {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let usable = match ip {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified(),
            // Link-local IPv6 needs a scope id that candidates cannot carry.
            IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_unspecified(),
        };
        if usable && (options.loopback || !ip.is_loopback()) && !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Ok(addresses)
}

impl Connection {
    /// Binds one UDP socket per usable local address and builds the engine with those host
    /// candidates, plus the relayed (and server-reflexive) ones when a TURN server is given.
    pub async fn new(options: &PeerOptions) -> Result<Connection> {
        let mut rtc_config = RtcConfig::new().set_sctp_max_buffered_amount(MAX_BUFFERED);
        // Checks on the selected pair every second, and 7 unanswered ones (about 6.5 s) mean
        // the path is lost; the engine's defaults (3 s, 9) take about 21 s to notice.
        rtc_config.set_max_stun_rto(ICE_CHECK_INTERVAL);
        rtc_config.set_max_stun_retransmits(7);
        let mut conn = Connection {
            rtc: rtc_config.build(Instant::now()),
            sockets: HashMap::new(),
            buffer: vec![0; RECV_BUFFER],
            relay: None,
            pending_offer: None,
            remote_set: false,
            early_candidates: Vec::new(),
            closed: None,
            route: Route::Unknown,
            remote_candidates: Vec::new(),
            last_dtls: None,
            options: options.clone(),
            local_candidates: Vec::new(),
            ice_lost: false,
            last_heard: Instant::now(),
            connected: false,
            silent: false,
        };
        conn.gather_hosts()?;
        if options.relay.is_some() || options.relay_tcp.is_some() {
            match Relay::allocate_any(options.relay.as_ref(), options.relay_tcp.as_ref()).await {
                Ok(relay) => conn.adopt_relay(relay)?,
                Err(err) if options.relay_only => return Err(err),
                Err(err) => warn!("no relayed candidate: {err:#}"),
            }
        } else if options.relay_only {
            bail!("relay-only needs a TURN server");
        }
        if conn.sockets.is_empty() && conn.relay.is_none() {
            bail!("no network address to connect from (try the loopback option on one machine)");
        }
        Ok(conn)
    }

    /// Binds a socket for every usable local address that has none yet, and drops the sockets
    /// (and candidates) of addresses the machine no longer has.
    fn gather_hosts(&mut self) -> Result<()> {
        if self.options.relay_only {
            return Ok(());
        }
        let hosts = host_addresses(&self.options)?;
        let gone: Vec<SocketAddr> = self
            .sockets
            .keys()
            .filter(|addr| !hosts.contains(&addr.ip()))
            .copied()
            .collect();
        for addr in gone {
            debug!(%addr, "the address is gone");
            self.sockets.remove(&addr);
            self.forget_candidates(|socket| socket == addr);
        }
        for ip in hosts {
            if self.sockets.keys().any(|addr| addr.ip() == ip) {
                continue;
            }
            let socket = match bind_udp(SocketAddr::new(ip, 0)) {
                Ok(socket) => socket,
                Err(err) => {
                    debug!(%ip, %err, "skipping an address that cannot be bound");
                    continue;
                }
            };
            let local = socket.local_addr()?;
            match Candidate::host(local, "udp") {
                Ok(candidate) => self.add_local_candidate(candidate, local),
                Err(err) => {
                    debug!(%local, %err, "skipping an address the engine refuses");
                    continue;
                }
            }
            self.sockets.insert(local, socket);
        }
        Ok(())
    }

    /// Makes `relay` ours: its relayed candidate, and behind a NAT its server-reflexive one.
    /// A relay we had before is released and its candidates withdrawn.
    fn adopt_relay(&mut self, mut relay: Relay) -> Result<()> {
        if let Some(mut old) = self.relay.take() {
            let _ = old.client.deallocate(Instant::now());
            old.flush();
            let (relayed, local) = (old.relayed, old.local);
            self.forget_candidates(|socket| socket == local || socket == relayed);
        }
        let candidate = Candidate::relayed(relay.relayed, relay.local, "udp")
            .map_err(|err| anyhow!("relayed candidate: {err}"))?;
        self.add_local_candidate(candidate, relay.relayed);
        debug!(relayed = %relay.relayed, tcp = relay.is_tcp(), "relayed candidate");
        // Behind a NAT the mapped address differs from ours: offer it too (over TCP the mapping
        // is a TCP one, useless for UDP). Its base must also be a host candidate: the ICE agent
        // takes checks only on host and relayed candidates, and would drop every check that
        // comes through the NAT.
        if !self.options.relay_only
            && !relay.is_tcp()
            && relay.mapped != relay.local
            && let Ok(candidate) = Candidate::server_reflexive(relay.mapped, relay.local, "udp")
            && let Ok(base) = Candidate::host(relay.local, "udp")
        {
            self.add_local_candidate(base, relay.local);
            self.add_local_candidate(candidate, relay.local);
            relay.direct = true;
            debug!(mapped = %relay.mapped, "server-reflexive candidate");
        }
        self.relay = Some(relay);
        Ok(())
    }

    /// Gives the engine a candidate whose datagrams go through our `socket` address.
    fn add_local_candidate(&mut self, candidate: Candidate, socket: SocketAddr) {
        self.local_candidates.push((socket, candidate.clone()));
        self.rtc.add_local_candidate(candidate);
    }

    /// Withdraws from the engine our candidates whose socket address matches `gone`.
    fn forget_candidates(&mut self, gone: impl Fn(SocketAddr) -> bool) {
        let (forgotten, kept) = std::mem::take(&mut self.local_candidates)
            .into_iter()
            .partition::<Vec<_>, _>(|(socket, _)| gone(*socket));
        self.local_candidates = kept;
        for (_, candidate) in forgotten {
            self.rtc.direct_api().invalidate_candidate(&candidate);
        }
    }

    /// Gathers again: new local addresses, and a fresh TURN allocation (the old one may be
    /// what broke: a restarted or unreachable TURN server). Keeps the old relay when a new one
    /// cannot be had. Call before an ICE restart, on either side.
    pub async fn regather(&mut self) -> Result<()> {
        self.gather_hosts()?;
        let options = &self.options;
        if options.relay.is_some() || options.relay_tcp.is_some() {
            match Relay::allocate_any(options.relay.as_ref(), options.relay_tcp.as_ref()).await {
                Ok(relay) => self.adopt_relay(relay)?,
                Err(err) => warn!("no new relayed candidate: {err:#}"),
            }
        }
        Ok(())
    }

    /// Starts an ICE restart (RFC 8445 §9): gathers again and returns the offer with new ICE
    /// credentials and candidates. DTLS and the data channels carry on over the new path once
    /// the answer is applied with [`Connection::accept_answer`].
    pub async fn restart_ice(&mut self) -> Result<String> {
        self.regather().await?;
        let (offer, pending) = guarded(|| {
            let mut api = self.rtc.sdp_api();
            api.ice_restart(true);
            Ok(api.apply())
        })?
        .ok_or_else(|| anyhow!("nothing to offer"))?;
        self.pending_offer = Some(pending);
        // Candidates trickled for the new session wait for the answer: applying it flushes
        // the remote candidates the engine knows.
        self.remote_set = false;
        Ok(offer.to_sdp_string())
    }

    /// Whether an offer is waiting for its answer.
    pub fn has_pending_offer(&self) -> bool {
        self.pending_offer.is_some()
    }

    /// The path our data takes, judged by the last DTLS datagram we sent: relayed when either
    /// end of its pair is a relay (ours or the other side's).
    pub fn route(&self) -> Route {
        match self.candidate_pair() {
            Some(pair) if pair.remote == CandidateType::Relayed => Route::Relayed,
            Some(pair)
                if self.route == Route::Host
                    && matches!(
                        pair.remote,
                        CandidateType::ServerReflexive | CandidateType::PeerReflexive
                    ) =>
            {
                Route::ServerReflexive
            }
            _ => self.route,
        }
    }

    /// The candidate pair of the last DTLS datagram we sent; `None` before that. Our candidate's
    /// type is that of the socket it left from: a host socket behind a NAT is still `Host`, as
    /// browsers report it.
    pub fn candidate_pair(&self) -> Option<CandidatePair> {
        let (source, destination) = self.last_dtls?;
        let (local, relay_over_tcp) = match &self.relay {
            Some(relay) if source == relay.relayed => (CandidateType::Relayed, relay.is_tcp()),
            Some(relay) if source == relay.local => (CandidateType::ServerReflexive, false),
            _ => (CandidateType::Host, false),
        };
        let remote = self
            .remote_candidates
            .iter()
            .find(|(addr, _)| *addr == destination)
            .map(|(_, kind)| *kind)
            .unwrap_or(CandidateType::PeerReflexive);
        Some(CandidatePair {
            local,
            remote,
            relay_over_tcp,
        })
    }

    /// Our DTLS certificate fingerprint, e.g. `sha-256 AB:CD:...`.
    pub fn local_fingerprint(&mut self) -> String {
        self.rtc.direct_api().local_dtls_fingerprint().to_string()
    }

    /// Creates a reliable, ordered data channel labelled `label` and the offer that announces
    /// it.
    pub fn offer_with_channel(&mut self, label: &str) -> Result<String> {
        let (offer, pending) = guarded(|| {
            let mut api = self.rtc.sdp_api();
            api.add_channel_with_config(ChannelConfig {
                label: label.to_owned(),
                ..ChannelConfig::default()
            });
            Ok(api.apply())
        })?
        .ok_or_else(|| anyhow!("nothing to offer"))?;
        self.pending_offer = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// Applies the remote answer to our offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<()> {
        let answer = SdpAnswer::from_sdp_string(sdp).context("the answer is not valid SDP")?;
        let pending = self
            .pending_offer
            .take()
            .ok_or_else(|| anyhow!("an answer arrived but no offer is pending"))?;
        guarded(|| self.rtc.sdp_api().accept_answer(pending, answer))?;
        self.note_remote_candidates(sdp);
        self.remote_description_set();
        Ok(())
    }

    /// Applies a remote offer and returns our answer.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp).context("the offer is not valid SDP")?;
        let answer = guarded(|| self.rtc.sdp_api().accept_offer(offer))?;
        self.note_remote_candidates(sdp);
        self.remote_description_set();
        Ok(answer.to_sdp_string())
    }

    /// Notes the types of the candidates a remote description carries (the engine takes them
    /// itself).
    fn note_remote_candidates(&mut self, sdp: &str) {
        for line in sdp.lines() {
            if let Some(text) = line.trim_end().strip_prefix("a=")
                && text.starts_with("candidate:")
                && let Ok(candidate) = Candidate::from_sdp_string(text)
            {
                self.remote_candidates
                    .push((candidate.addr(), candidate.kind().into()));
            }
        }
    }

    fn remote_description_set(&mut self) {
        self.remote_set = true;
        for candidate in std::mem::take(&mut self.early_candidates) {
            self.add_remote(candidate);
        }
        self.tick();
    }

    fn add_remote(&mut self, candidate: Candidate) {
        self.remote_candidates
            .push((candidate.addr(), candidate.kind().into()));
        let result = guarded(|| {
            self.rtc.add_remote_candidate(candidate);
            Ok(())
        });
        if let Err(err) = result {
            self.closed = Some(err.to_string());
        }
    }

    /// Gives the engine the current time. Its ICE agent schedules nothing before its first
    /// timeout, so without this a peer that receives nothing (relay-only, before the other side's
    /// permission exists) would never start its checks.
    fn tick(&mut self) {
        if let Err(err) = guarded(|| self.rtc.handle_input(Input::Timeout(Instant::now()))) {
            self.closed = Some(err.to_string());
        }
    }

    /// Adds a trickled remote candidate (`candidate:...`); ones the engine cannot use (mDNS
    /// names, TCP) are skipped.
    pub fn add_remote_candidate(&mut self, candidate: &str) {
        let text = candidate.strip_prefix("a=").unwrap_or(candidate);
        match Candidate::from_sdp_string(text) {
            Ok(candidate) if self.remote_set => {
                self.add_remote(candidate);
                self.tick();
            }
            Ok(candidate) => self.early_candidates.push(candidate),
            Err(err) => debug!(%candidate, %err, "skipping a remote candidate"),
        }
    }

    /// Writes one binary message; `Ok(false)` when the send buffer has no room for it now.
    pub fn write(&mut self, channel: ChannelId, data: &[u8]) -> Result<bool> {
        guarded(|| match self.rtc.channel(channel) {
            Some(mut channel) => channel.write(true, data),
            None => Ok(false),
        })
    }

    /// Bytes written to `channel` and not yet acknowledged by the peer.
    pub fn buffered_amount(&mut self, channel: ChannelId) -> usize {
        self.rtc
            .channel(channel)
            .map(|mut c| c.buffered_amount())
            .unwrap_or(0)
    }

    /// Asks for [`PeerEvent::ChannelBufferedLow`] once `channel` drains below `threshold`.
    pub fn set_buffered_low_threshold(&mut self, channel: ChannelId, threshold: usize) {
        if let Some(mut channel) = self.rtc.channel(channel) {
            channel.set_buffered_amount_low_threshold(threshold);
        }
    }

    /// How many more bytes the data channels accept right now.
    pub fn writable_bytes(&mut self, channel: ChannelId) -> usize {
        MAX_BUFFERED.saturating_sub(self.buffered_amount(channel))
    }

    /// Closes the connection; the next [`Connection::next_event`] returns `Closed`.
    pub fn close(&mut self) {
        self.rtc.disconnect();
        if let Some(relay) = &mut self.relay {
            let _ = relay.client.deallocate(Instant::now());
            relay.flush();
        }
        if self.closed.is_none() {
            self.closed = Some("closed".into());
        }
    }

    /// Drives the engine until it has something for the application. Cancel-safe: it can sit
    /// in a `select!` next to the signaling connection.
    pub async fn next_event(&mut self) -> PeerEvent {
        loop {
            if let Some(reason) = &self.closed {
                return PeerEvent::Closed(reason.clone());
            }
            let output = match guarded(|| self.rtc.poll_output()) {
                Ok(output) => output,
                Err(err) => {
                    self.closed = Some(err.to_string());
                    continue;
                }
            };
            let deadline = match output {
                Output::Timeout(at) => at,
                Output::Transmit(transmit) => {
                    self.transmit(transmit.source, transmit.destination, &transmit.contents)
                        .await;
                    continue;
                }
                Output::Event(event) => {
                    if let Some(event) = self.translate(event) {
                        return event;
                    }
                    continue;
                }
            };
            let deadline = match self.relay.as_ref().and_then(|r| r.client.poll_timeout()) {
                Some(relay_deadline) => deadline.min(relay_deadline),
                None => deadline,
            };
            if let Some(event) = self.check_silence() {
                return event;
            }
            let deadline = match self.connected && !self.ice_lost {
                true => deadline.min(self.last_heard + SILENCE),
                false => deadline,
            };
            // The sockets are read here rather than by tasks of their own: a channel hop per
            // datagram costs a cross-thread wakeup, and one datagram per poll makes the
            // receiver acknowledge every other packet.
            let mut progressed = false;
            if deadline <= Instant::now() {
                let now = Instant::now();
                if let Some(relay) = &mut self.relay {
                    relay.client.handle_timeout(now);
                    relay.flush();
                }
                if let Err(err) = guarded(|| self.rtc.handle_input(Input::Timeout(now))) {
                    self.closed = Some(err.to_string());
                    continue;
                }
                progressed = true;
            }
            match self.receive_ready() {
                Ok(read) => progressed |= read > 0,
                Err(err) => {
                    self.closed = Some(err.to_string());
                    continue;
                }
            }
            if progressed {
                // Nothing above awaits while datagrams keep coming: let the runtime run other
                // tasks (and cancel this one) now and then.
                tokio::task::coop::consume_budget().await;
            } else {
                tokio::select! {
                    _ = readable(&self.sockets, self.relay.as_ref().map(|r| &r.link)) => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
    }

    /// Reports the path lost when the peer has been silent for [`SILENCE`], and back when it
    /// is heard again without ICE having noticed anything.
    fn check_silence(&mut self) -> Option<PeerEvent> {
        if !self.connected {
            return None;
        }
        let quiet = self.last_heard.elapsed();
        if !self.ice_lost && quiet >= SILENCE {
            debug!(?quiet, "the peer fell silent");
            self.ice_lost = true;
            self.silent = true;
            return Some(PeerEvent::Disconnected);
        }
        if self.silent && quiet < SILENCE && self.rtc.is_connected() {
            self.silent = false;
            self.ice_lost = false;
            return Some(PeerEvent::Connected);
        }
        None
    }

    /// Hands up to [`RECV_BATCH`] datagrams already waiting in the sockets to the engine;
    /// returns how many were read.
    fn receive_ready(&mut self) -> Result<usize> {
        let Connection {
            rtc,
            sockets,
            buffer,
            relay,
            last_heard,
            ..
        } = self;
        let mut read = 0;
        for (&local, socket) in sockets.iter() {
            while read < RECV_BATCH {
                let (len, source) = match socket.try_recv_from(buffer) {
                    Ok(received) => received,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(err) => {
                        // ICMP port unreachable and the like surface here on Linux; keep reading.
                        trace!(%local, %err, "receive error");
                        read += 1;
                        continue;
                    }
                };
                read += 1;
                let Ok(contents) = buffer[..len].try_into() else {
                    trace!(%source, "dropping a datagram the engine does not take");
                    continue;
                };
                let now = Instant::now();
                *last_heard = now;
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    },
                );
                guarded(|| rtc.handle_input(input))?;
            }
        }
        if let Some(relay) = relay {
            relay.link.flush_backlog();
            let Relay {
                client,
                link,
                local,
                relayed,
                direct,
                ..
            } = relay;
            let server = client.server();
            let mut forward = false;
            read += link.read_ready(buffer, server, RECV_BATCH, |source, packet| {
                let now = Instant::now();
                if source != server {
                    // Straight to our server-reflexive candidate, not through the relay.
                    if *direct && let Ok(contents) = packet.try_into() {
                        *last_heard = now;
                        let input = Input::Receive(
                            now,
                            Receive {
                                proto: Protocol::Udp,
                                source,
                                destination: *local,
                                contents,
                            },
                        );
                        guarded(|| rtc.handle_input(input))?;
                    }
                    return Ok(());
                }
                let Some(received) = client.handle_input(source, packet, now) else {
                    forward = true;
                    return Ok(());
                };
                let Ok(contents) = received.data.try_into() else {
                    return Ok(());
                };
                *last_heard = now;
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: received.peer,
                        destination: *relayed,
                        contents,
                    },
                );
                guarded(|| rtc.handle_input(input))
            })?;
            if forward {
                relay.flush();
            }
        }
        Ok(read)
    }

    async fn transmit(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        // DTLS records (first byte 20–63, RFC 7983) carry the data; STUN checks may probe other
        // pairs, so only DTLS tells which path is in use.
        let dtls = data.first().is_some_and(|b| (20..=63).contains(b));
        if dtls {
            self.last_dtls = Some((source, destination));
        }
        if let Some(relay) = &mut self.relay {
            if dtls {
                self.route = if source == relay.relayed {
                    Route::Relayed
                } else if source == relay.local {
                    Route::ServerReflexive
                } else {
                    Route::Host
                };
            }
            if source == relay.relayed {
                relay.send(destination, data, Instant::now());
                return;
            }
            if source == relay.local {
                relay.link.send(data, destination);
                return;
            }
        }
        if dtls && self.relay.is_none() {
            self.route = Route::Host;
        }
        let Some(socket) = self.sockets.get(&source) else {
            warn!(%source, "the engine sent from an address we do not own");
            return;
        };
        match socket.try_send_to(data, destination) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(err) = socket.send_to(data, destination).await {
                    debug!(%destination, %err, "send failed");
                }
            }
            Err(err) => debug!(%destination, %err, "send failed"),
        }
    }

    fn translate(&mut self, event: Event) -> Option<PeerEvent> {
        match event {
            Event::Connected => {
                self.connected = true;
                self.last_heard = Instant::now();
                Some(PeerEvent::Connected)
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.silent = false;
                // Already reported when the peer fell silent.
                (!std::mem::replace(&mut self.ice_lost, true)).then_some(PeerEvent::Disconnected)
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) if self.ice_lost => {
                // Back after a loss (an ICE restart, or the path recovered by itself).
                self.ice_lost = false;
                self.silent = false;
                Some(PeerEvent::Connected)
            }
            Event::IceConnectionStateChange(state) => {
                debug!(?state, "ICE state");
                None
            }
            Event::ChannelOpen(id, label) => Some(PeerEvent::ChannelOpen(id, label)),
            Event::ChannelData(data) => Some(PeerEvent::ChannelData(data.id, data.data)),
            Event::ChannelBufferedAmountLow(id) => Some(PeerEvent::ChannelBufferedLow(id)),
            Event::ChannelClose(id) => Some(PeerEvent::ChannelClosed(id)),
            _ => None,
        }
    }
}

/// Socket buffers large enough that a burst of a full congestion window is not dropped by the
/// kernel before the reader gets to it (the default 208 KiB drops packets at a few MB/s).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a non-blocking UDP socket with large buffers.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Resolves once any of the sockets has a datagram to read (or the TURN TCP connection can take
/// its backlog). It reads nothing, so it is cancel-safe.
async fn readable(sockets: &HashMap<SocketAddr, UdpSocket>, relay: Option<&Link>) {
    std::future::poll_fn(|cx| {
        for socket in sockets.values() {
            if socket.poll_recv_ready(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        match relay {
            Some(link) => link.poll_ready(cx),
            None => std::task::Poll::Pending,
        }
    })
    .await
}
