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
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig, RtcError};
use tokio::net::UdpSocket;
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

/// Where the peer looks for local candidates.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Also offer loopback addresses (tests, and peers on the same machine).
    pub loopback: bool,
    /// A TURN server to allocate a relayed candidate on.
    pub relay: Option<RelayServer>,
    /// Offer only the relayed candidate: every packet goes through the TURN server.
    pub relay_only: bool,
}

/// A TURN server and the credentials for it (UDP transport).
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

/// The TURN allocation behind our relayed candidate.
struct Relay {
    client: turn::Client,
    socket: UdpSocket,
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
            if let Err(err) = self
                .socket
                .try_send_to(&transmit.contents, transmit.destination)
            {
                debug!(%err, "TURN send failed");
            }
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
            Ok(()) => {
                if let Err(err) = self.socket.try_send_to(&self.buf, self.client.server()) {
                    trace!(%err, "TURN send failed");
                }
            }
            Err(err) => trace!(%peer, %err, "not relayed"),
        }
        self.flush();
    }

    /// Allocates on `server`.
    async fn allocate(server: &RelayServer) -> Result<Relay> {
        // Bind to the address that routes to the server, so the socket's address can be the
        // base of a server-reflexive candidate.
        let unspecified: IpAddr = if server.server.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let probe = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
        probe.connect(server.server)?;
        let socket = bind_udp(SocketAddr::new(probe.local_addr()?.ip(), 0))?;
        let local = socket.local_addr()?;
        let credentials =
            turn::ClientCredentials::new(server.username.clone(), server.password.clone());
        let mut relay = Relay {
            client: turn::Client::new(server.server, credentials),
            socket,
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
            while let Some(transmit) = relay.client.poll_transmit() {
                relay
                    .socket
                    .send_to(&transmit.contents, transmit.destination)
                    .await?;
            }
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
                received = relay.socket.recv_from(&mut buffer) => {
                    if let Ok((len, source)) = received {
                        let _ = relay.client.handle_input(source, &buffer[..len], Instant::now());
                    }
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

/// What the connection reports to the application.
#[derive(Debug)]
pub enum PeerEvent {
    /// ICE and DTLS are up.
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
    /// candidates.
    pub async fn new(options: &PeerOptions) -> Result<Connection> {
        let rtc_config = RtcConfig::new().set_sctp_max_buffered_amount(MAX_BUFFERED);
        let mut rtc = rtc_config.build(Instant::now());
        let mut sockets = HashMap::new();
        let hosts = if options.relay_only {
            Vec::new()
        } else {
            host_addresses(options)?
        };
        for ip in hosts {
            let socket = match bind_udp(SocketAddr::new(ip, 0)) {
                Ok(socket) => socket,
                Err(err) => {
                    debug!(%ip, %err, "skipping an address that cannot be bound");
                    continue;
                }
            };
            let local = socket.local_addr()?;
            let candidate = match Candidate::host(local, "udp") {
                Ok(candidate) => candidate,
                Err(err) => {
                    debug!(%local, %err, "skipping an address the engine refuses");
                    continue;
                }
            };
            rtc.add_local_candidate(candidate);
            sockets.insert(local, socket);
        }
        let relay = match &options.relay {
            Some(server) => match Relay::allocate(server).await {
                Ok(mut relay) => {
                    let candidate = Candidate::relayed(relay.relayed, relay.local, "udp")
                        .map_err(|err| anyhow!("relayed candidate: {err}"))?;
                    rtc.add_local_candidate(candidate);
                    debug!(relayed = %relay.relayed, "relayed candidate");
                    // Behind a NAT the mapped address differs from ours: offer it too.
                    if !options.relay_only
                        && relay.mapped != relay.local
                        && let Ok(candidate) =
                            Candidate::server_reflexive(relay.mapped, relay.local, "udp")
                    {
                        rtc.add_local_candidate(candidate);
                        relay.direct = true;
                        debug!(mapped = %relay.mapped, "server-reflexive candidate");
                    }
                    Some(relay)
                }
                Err(err) if options.relay_only => return Err(err),
                Err(err) => {
                    warn!("no relayed candidate: {err:#}");
                    None
                }
            },
            None if options.relay_only => bail!("relay-only needs a TURN server"),
            None => None,
        };
        if sockets.is_empty() && relay.is_none() {
            bail!("no network address to connect from (try the loopback option on one machine)");
        }
        Ok(Connection {
            rtc,
            sockets,
            buffer: vec![0; RECV_BUFFER],
            relay,
            pending_offer: None,
            remote_set: false,
            early_candidates: Vec::new(),
            closed: None,
            route: Route::Unknown,
        })
    }

    /// The path our data takes, judged by the source of the last DTLS datagram we sent.
    pub fn route(&self) -> Route {
        self.route
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
        self.remote_description_set();
        Ok(())
    }

    /// Applies a remote offer and returns our answer.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp).context("the offer is not valid SDP")?;
        let answer = guarded(|| self.rtc.sdp_api().accept_offer(offer))?;
        self.remote_description_set();
        Ok(answer.to_sdp_string())
    }

    fn remote_description_set(&mut self) {
        self.remote_set = true;
        for candidate in std::mem::take(&mut self.early_candidates) {
            self.add_remote(candidate);
        }
        self.tick();
    }

    fn add_remote(&mut self, candidate: Candidate) {
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
                    _ = readable(&self.sockets, self.relay.as_ref().map(|r| &r.socket)) => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
    }

    /// Hands up to [`RECV_BATCH`] datagrams already waiting in the sockets to the engine;
    /// returns how many were read.
    fn receive_ready(&mut self) -> Result<usize> {
        let Connection {
            rtc,
            sockets,
            buffer,
            relay,
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
                let input = Input::Receive(
                    Instant::now(),
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
            while read < RECV_BATCH {
                let (len, source) = match relay.socket.try_recv_from(buffer) {
                    Ok(received) => received,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(err) => {
                        trace!(%err, "TURN receive error");
                        read += 1;
                        continue;
                    }
                };
                read += 1;
                let now = Instant::now();
                if source != relay.client.server() {
                    // Straight to our server-reflexive candidate, not through the relay.
                    if relay.direct
                        && let Ok(contents) = buffer[..len].try_into()
                    {
                        let input = Input::Receive(
                            now,
                            Receive {
                                proto: Protocol::Udp,
                                source,
                                destination: relay.local,
                                contents,
                            },
                        );
                        guarded(|| rtc.handle_input(input))?;
                    }
                    continue;
                }
                let Some(received) = relay.client.handle_input(source, &buffer[..len], now) else {
                    relay.flush();
                    continue;
                };
                let (peer, relayed) = (received.peer, relay.relayed);
                let Ok(contents) = received.data.try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: peer,
                        destination: relayed,
                        contents,
                    },
                );
                guarded(|| rtc.handle_input(input))?;
            }
        }
        Ok(read)
    }

    async fn transmit(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        // DTLS records (first byte 20–63, RFC 7983) carry the data; STUN checks may probe other
        // pairs, so only DTLS tells which path is in use.
        let dtls = data.first().is_some_and(|b| (20..=63).contains(b));
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
                if let Err(err) = relay.socket.try_send_to(data, destination) {
                    trace!(%destination, %err, "send failed");
                }
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
            Event::Connected => Some(PeerEvent::Connected),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                Some(PeerEvent::Disconnected)
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

/// Resolves once any of the sockets has a datagram to read. It reads nothing, so it is
/// cancel-safe.
async fn readable(sockets: &HashMap<SocketAddr, UdpSocket>, relay: Option<&UdpSocket>) {
    std::future::poll_fn(|cx| {
        for socket in sockets.values().chain(relay) {
            if socket.poll_recv_ready(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
