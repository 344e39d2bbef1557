//! One WebRTC peer connection: str0m driven over tokio UDP sockets.
//!
//! This is the only module that talks to str0m. Every call into the engine goes through
//! [`guarded`], so a panic inside it ends this connection with an error instead of the process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig, RtcError};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

/// Bytes the data channels may hold unacknowledged; with the round trip it bounds throughput.
const MAX_BUFFERED: usize = 1024 * 1024;
/// Largest datagram we expect (the engine keeps packets below the path MTU).
const RECV_BUFFER: usize = 2048;

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
    socket: Arc<UdpSocket>,
    /// The local address of `socket`, where the server's datagrams arrive.
    local: SocketAddr,
    /// The relayed transport address, our candidate.
    relayed: SocketAddr,
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

    /// Allocates on `server`, reading the answers from `packets`.
    async fn allocate(
        server: &RelayServer,
        packets: &mut mpsc::Receiver<Packet>,
        sockets: &mut Vec<JoinHandle<()>>,
        tx: &mpsc::Sender<Packet>,
    ) -> Result<Relay> {
        let unspecified: IpAddr = if server.server.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = Arc::new(bind_udp(SocketAddr::new(unspecified, 0))?);
        let local = socket.local_addr()?;
        sockets.push(tokio::spawn(read_socket(socket.clone(), local, tx.clone())));
        let credentials =
            turn::ClientCredentials::new(server.username.clone(), server.password.clone());
        let mut relay = Relay {
            client: turn::Client::new(server.server, credentials),
            socket,
            local,
            relayed: local,
            buf: Vec::with_capacity(RECV_BUFFER),
        };
        relay
            .client
            .allocate(Instant::now())
            .map_err(|err| anyhow!("TURN: {err}"))?;
        let deadline = tokio::time::Instant::now() + ALLOCATE_TIMEOUT;
        loop {
            while let Some(transmit) = relay.client.poll_transmit() {
                relay
                    .socket
                    .send_to(&transmit.contents, transmit.destination)
                    .await?;
            }
            while let Some(event) = relay.client.poll_event() {
                match event {
                    turn::ClientEvent::Allocated { relayed, .. } => {
                        relay.relayed = relayed;
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
                packet = packets.recv() => {
                    let packet = packet.ok_or_else(|| anyhow!("the sockets closed"))?;
                    if packet.destination == relay.local {
                        let _ = relay.client.handle_input(packet.source, &packet.data, Instant::now());
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

struct Packet {
    at: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
}

/// A peer connection and the sockets it owns.
pub struct Connection {
    rtc: Rtc,
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    packets: mpsc::Receiver<Packet>,
    readers: Vec<JoinHandle<()>>,
    relay: Option<Relay>,
    pending_offer: Option<SdpPendingOffer>,
    remote_set: bool,
    early_candidates: Vec<Candidate>,
    closed: Option<String>,
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
        let (tx, rx) = mpsc::channel(4096);
        let mut sockets = HashMap::new();
        let mut readers = Vec::new();
        let hosts = if options.relay_only {
            Vec::new()
        } else {
            host_addresses(options)?
        };
        for ip in hosts {
            let socket = match bind_udp(SocketAddr::new(ip, 0)) {
                Ok(socket) => Arc::new(socket),
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
            readers.push(tokio::spawn(read_socket(socket.clone(), local, tx.clone())));
            sockets.insert(local, socket);
        }
        let mut packets = rx;
        let relay = match &options.relay {
            Some(server) => match Relay::allocate(server, &mut packets, &mut readers, &tx).await {
                Ok(relay) => {
                    let candidate = Candidate::relayed(relay.relayed, relay.local, "udp")
                        .map_err(|err| anyhow!("relayed candidate: {err}"))?;
                    rtc.add_local_candidate(candidate);
                    debug!(relayed = %relay.relayed, "relayed candidate");
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
            packets,
            readers,
            relay,
            pending_offer: None,
            remote_set: false,
            early_candidates: Vec::new(),
            closed: None,
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
            self.rtc.add_remote_candidate(candidate);
        }
        self.tick();
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
                self.rtc.add_remote_candidate(candidate);
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
            let input = tokio::select! {
                packet = self.packets.recv() => match packet {
                    Some(packet) => Some(packet),
                    None => {
                        self.closed = Some("the sockets closed".into());
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => None,
            };
            let result = match input {
                Some(packet) => self.receive(packet),
                None => {
                    let now = Instant::now();
                    if let Some(relay) = &mut self.relay {
                        relay.client.handle_timeout(now);
                        relay.flush();
                    }
                    guarded(|| self.rtc.handle_input(Input::Timeout(now)))
                }
            };
            if let Err(err) = result {
                self.closed = Some(err.to_string());
            }
        }
    }

    fn receive(&mut self, packet: Packet) -> Result<()> {
        if let Some(relay) = &mut self.relay
            && packet.destination == relay.local
        {
            let Some(received) =
                relay
                    .client
                    .handle_input(packet.source, &packet.data, Instant::now())
            else {
                relay.flush();
                return Ok(());
            };
            let (peer, relayed) = (received.peer, relay.relayed);
            let Ok(contents) = received.data.try_into() else {
                return Ok(());
            };
            let input = Input::Receive(
                packet.at,
                Receive {
                    proto: Protocol::Udp,
                    source: peer,
                    destination: relayed,
                    contents,
                },
            );
            return guarded(|| self.rtc.handle_input(input));
        }
        let Ok(contents) = packet.data.as_slice().try_into() else {
            trace!(source = %packet.source, "dropping a datagram the engine does not take");
            return Ok(());
        };
        let input = Input::Receive(
            packet.at,
            Receive {
                proto: Protocol::Udp,
                source: packet.source,
                destination: packet.destination,
                contents,
            },
        );
        guarded(|| self.rtc.handle_input(input))
    }

    async fn transmit(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if let Some(relay) = &mut self.relay
            && source == relay.relayed
        {
            relay.send(destination, data, Instant::now());
            return;
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

impl Drop for Connection {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
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

async fn read_socket(socket: Arc<UdpSocket>, local: SocketAddr, packets: mpsc::Sender<Packet>) {
    loop {
        let mut buf = vec![0u8; RECV_BUFFER];
        match socket.recv_from(&mut buf).await {
            Ok((len, source)) => {
                buf.truncate(len);
                let packet = Packet {
                    at: Instant::now(),
                    source,
                    destination: local,
                    data: buf,
                };
                if packets.send(packet).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                // ICMP port unreachable and the like surface here on Linux; keep reading.
                trace!(%local, %err, "receive error");
            }
        }
    }
}
