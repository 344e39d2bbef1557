//! Drives the sans-IO TURN [`turn::Server`] over real sockets on one dedicated thread.
//!
//! One `mio` poll owns the UDP listener, the TCP listener, every TCP client connection and
//! every relay socket, so the protocol core needs no lock and no channel: a datagram is read,
//! handed to the core, and its answer sent, all on this thread. The core opens relay sockets
//! through [`RelayTable`], its [`RelayAllocator`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use net::StreamDecoder;
use net::batch::{BATCH, RecvBatch, SendBatch};
use slab::Slab;
use std::os::fd::AsRawFd;
use tracing::{debug, info, warn};
use turn::{
    Credentials, Destination, Family, FiveTuple, RelayAllocator, Transmit, Transport, TurnStats,
};

const UDP: Token = Token(0);
const TCP_LISTENER: Token = Token(1);
const WAKER: Token = Token(2);
const TLS_LISTENER: Token = Token(3);
const RELAY_BASE: usize = 1 << 24;
const TCP_BASE: usize = 1 << 25;
/// Largest datagram read; anything larger is truncated by the kernel and dropped as malformed.
const MAX_DATAGRAM: usize = 65_536;
/// A TCP client whose unsent output exceeds this is disconnected (it stopped reading).
const MAX_TCP_BACKLOG: usize = 4 << 20;
/// How often the shared counters are refreshed.
const STATS_INTERVAL: Duration = Duration::from_millis(250);

/// What the TURN thread needs to start.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// UDP and TCP listening address (same port for both).
    pub listen: SocketAddr,
    /// Address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// IPv6 relay address, when IPv6 allocations are offered.
    pub relay_ip6: Option<IpAddr>,
    /// Inclusive relay port range.
    pub relay_ports: (u16, u16),
    /// Protocol settings.
    pub server: turn::ServerConfig,
    /// Who may allocate.
    pub credentials: Credentials,
    /// TURN over TLS (`turns:`): listening address and certificate, when configured.
    pub tls: Option<TlsListener>,
}

/// A TLS listener for `turns:`.
#[derive(Clone)]
pub struct TlsListener {
    /// Listening address.
    pub listen: SocketAddr,
    /// The certificate and key to present.
    pub config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Reads a running TURN server's counters.
#[derive(Clone)]
pub struct TurnStatsReader(Arc<Mutex<TurnStats>>);

impl TurnStatsReader {
    /// The latest counters.
    pub fn read(&self) -> TurnStats {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A running TURN server thread.
pub struct TurnHandle {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    stats: Arc<Mutex<TurnStats>>,
    thread: Option<JoinHandle<()>>,
}

impl TurnHandle {
    /// Binds the listeners and starts the thread.
    pub fn start(settings: TurnSettings) -> io::Result<TurnHandle> {
        let (udp, tcp) = bind_pair(settings.listen)?;
        let addr = udp.local_addr()?;
        let tls = match &settings.tls {
            Some(tls) => {
                let listener = TcpListener::bind(tls.listen)?;
                let tls_addr = listener.local_addr()?;
                Some((listener, tls_addr, tls.config.clone()))
            }
            None => None,
        };
        let tls_addr = tls.as_ref().map(|(_, addr, _)| *addr);
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(TurnStats::default()));
        let mut nonce_secret = [0u8; 32];
        getrandom::fill(&mut nonce_secret).map_err(|e| io::Error::other(e.to_string()))?;
        let mut rng_seed = [0u8; 8];
        getrandom::fill(&mut rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
        let now = Instant::now();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let core = turn::Server::new(
            settings.server.clone(),
            settings.credentials.clone(),
            nonce_secret,
            now,
            unix_now,
        );
        let relays = RelayTable {
            registry: poll.registry().try_clone()?,
            sockets: Slab::new(),
            by_addr: HashMap::new(),
            ip4: settings.relay_ip,
            ip6: settings.relay_ip6,
            ports: settings.relay_ports,
            rng: u64::from_le_bytes(rng_seed) | 1,
        };
        let mut event_loop = EventLoop {
            poll,
            core,
            udp,
            udp_addr: addr,
            tcp,
            tls,
            relays,
            conns: Slab::new(),
            conn_by_client: HashMap::new(),
            buf: vec![0; MAX_DATAGRAM],
            batch: RecvBatch::new(),
            out: Outbox::default(),
            stop: stop.clone(),
            stats: stats.clone(),
        };
        event_loop.register()?;
        let thread = std::thread::Builder::new()
            .name("turn".into())
            .spawn(move || event_loop.run())?;
        info!(%addr, "TURN listening (udp, tcp)");
        if let Some(tls_addr) = tls_addr {
            info!(%tls_addr, "TURN listening (tls)");
        }
        Ok(TurnHandle {
            addr,
            tls_addr,
            stop,
            waker,
            stats,
            thread: Some(thread),
        })
    }

    /// The UDP (and TCP) listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listening address, when `turns:` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The latest counters (refreshed a few times a second).
    pub fn stats(&self) -> TurnStats {
        self.stats_reader().read()
    }

    /// A cheap handle that reads the counters from elsewhere (the HTTP side).
    pub fn stats_reader(&self) -> TurnStatsReader {
        TurnStatsReader(self.stats.clone())
    }

    /// Stops the thread, waits for it, and returns its final counters.
    pub fn shutdown(mut self) -> TurnStats {
        self.stop_thread();
        self.stats()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TurnHandle {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// UDP and TCP on the same address; with port 0, retries until both get the same free port.
fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    for _ in 0..32 {
        let udp = UdpSocket::from_std(net::bind_udp(addr)?);
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(err) if addr.port() == 0 && err.kind() == io::ErrorKind::AddrInUse => continue,
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    ))
}

struct EventLoop {
    poll: Poll,
    core: turn::Server,
    udp: UdpSocket,
    udp_addr: SocketAddr,
    tcp: TcpListener,
    tls: Option<(TcpListener, SocketAddr, Arc<rustls::ServerConfig>)>,
    relays: RelayTable,
    conns: Slab<TcpConn>,
    conn_by_client: HashMap<FiveTuple, usize>,
    /// TCP read buffer.
    buf: Vec<u8>,
    /// Datagrams read in one system call.
    batch: RecvBatch,
    /// Datagrams to send, flushed with one system call per socket.
    out: Outbox,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<TurnStats>>,
}

/// A TURN client on TCP or TLS.
struct TcpConn {
    stream: TcpStream,
    five: FiveTuple,
    decoder: StreamDecoder,
    link: Link,
}

/// What sits between the socket and the STUN framing.
enum Link {
    /// Plain TCP, with the output the socket has not taken yet.
    Plain { out: Vec<u8> },
    /// TLS; rustls buffers the output.
    Tls(Box<rustls::ServerConnection>),
}

impl TcpConn {
    /// Reads everything available into the decoder; `Ok(false)` once the client has closed.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match &mut self.link {
            Link::Plain { .. } => loop {
                match self.stream.read(buf) {
                    Ok(0) => return Ok(false),
                    Ok(len) => self.decoder.extend(&buf[..len]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            },
            Link::Tls(tls) => loop {
                match tls.read_tls(&mut self.stream) {
                    Ok(0) => return Ok(false),
                    Ok(_) => {
                        tls.process_new_packets().map_err(io::Error::other)?;
                        loop {
                            match tls.reader().read(buf) {
                                Ok(0) => return Ok(false),
                                Ok(len) => self.decoder.extend(&buf[..len]),
                                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                                Err(err) => return Err(err),
                            }
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            },
        }
    }

    /// Queues a frame for the client and writes what the socket takes.
    fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        match &mut self.link {
            Link::Plain { out } => out.extend_from_slice(payload),
            Link::Tls(tls) => tls.writer().write_all(payload)?,
        }
        self.flush()
    }

    /// Writes as much pending output as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.link {
            Link::Plain { out } => {
                while !out.is_empty() {
                    match self.stream.write(out) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(written) => {
                            out.drain(..written);
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(())
            }
            Link::Tls(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(())
            }
        }
    }

    /// Output not yet taken by the socket (for TLS, whether any is pending at all).
    fn backlog(&self) -> usize {
        match &self.link {
            Link::Plain { out } => out.len(),
            Link::Tls(tls) => usize::from(tls.wants_write()),
        }
    }
}

impl EventLoop {
    fn register(&mut self) -> io::Result<()> {
        let registry = self.poll.registry();
        registry.register(&mut self.udp, UDP, Interest::READABLE)?;
        registry.register(&mut self.tcp, TCP_LISTENER, Interest::READABLE)?;
        if let Some((listener, _, _)) = &mut self.tls {
            registry.register(listener, TLS_LISTENER, Interest::READABLE)?;
        }
        Ok(())
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_stats = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = self
                .core
                .poll_timeout()
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(STATS_INTERVAL)
                .min(STATS_INTERVAL);
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() != io::ErrorKind::Interrupted {
                    warn!(%err, "TURN poll failed; stopping");
                    break;
                }
            }
            let now = Instant::now();
            self.core.handle_timeout(now, &mut self.relays);
            for event in events.iter() {
                match event.token() {
                    UDP => self.read_udp(now),
                    TCP_LISTENER => self.accept(false),
                    TLS_LISTENER => self.accept(true),
                    WAKER => {}
                    Token(t) if t >= TCP_BASE => self.service_tcp(now, t - TCP_BASE),
                    Token(t) if t >= RELAY_BASE => self.read_relay(now, t - RELAY_BASE),
                    Token(_) => {}
                }
            }
            self.flush_peers();
            self.flush_clients();
            if now.duration_since(last_stats) >= STATS_INTERVAL {
                last_stats = now;
                if let Ok(mut shared) = self.stats.lock() {
                    *shared = self.core.stats();
                }
            }
        }
        if let Ok(mut shared) = self.stats.lock() {
            *shared = self.core.stats();
        }
        debug!("TURN thread stopped");
    }

    fn read_udp(&mut self, now: Instant) {
        loop {
            let count = match self.batch.recv(&self.udp) {
                Ok(count) => count,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    debug!(%err, "UDP receive error");
                    break;
                }
            };
            for i in 0..count {
                let Some((packet, from)) = self.batch.get(i) else {
                    continue;
                };
                let five = FiveTuple {
                    client: from,
                    server: self.udp_addr,
                    transport: Transport::Udp,
                };
                if let Some(transmit) = self.core.handle_client(now, five, packet, &mut self.relays)
                {
                    dispatch(
                        transmit,
                        &mut self.out,
                        &mut self.conns,
                        &self.conn_by_client,
                    );
                }
            }
            self.flush_peers();
            self.flush_clients_if_full();
        }
    }

    fn read_relay(&mut self, now: Instant, index: usize) {
        let Some((_, relay)) = self.relays.sockets.get(index) else {
            return;
        };
        let relay = *relay;
        loop {
            let Some((socket, _)) = self.relays.sockets.get(index) else {
                return;
            };
            let count = match self.batch.recv(socket) {
                Ok(count) => count,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    debug!(%err, "relay receive error");
                    return;
                }
            };
            for i in 0..count {
                let Some((payload, from)) = self.batch.get(i) else {
                    continue;
                };
                if let Some(transmit) = self.core.handle_peer(now, relay, from, payload) {
                    dispatch(
                        transmit,
                        &mut self.out,
                        &mut self.conns,
                        &self.conn_by_client,
                    );
                }
            }
            self.flush_clients_if_full();
        }
    }

    fn flush_peers(&mut self) {
        let relays = &self.relays;
        self.out
            .peers
            .flush(|via| relays.socket(via).map(|s| s.as_raw_fd()));
    }

    fn flush_clients(&mut self) {
        let fd = self.udp.as_raw_fd();
        self.out.clients.flush(|_| Some(fd));
    }

    fn flush_clients_if_full(&mut self) {
        if self.out.clients.len() >= BATCH {
            self.flush_clients();
        }
    }

    fn accept(&mut self, tls: bool) {
        loop {
            let listener = match (&self.tls, tls) {
                (Some((listener, _, _)), true) => listener,
                (_, false) => &self.tcp,
                (None, true) => return,
            };
            let (mut stream, client) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    debug!(%err, "TCP accept error");
                    return;
                }
            };
            let (server, link) = match (&self.tls, tls) {
                (Some((_, addr, config)), true) => {
                    match rustls::ServerConnection::new(config.clone()) {
                        Ok(mut connection) => {
                            connection.set_buffer_limit(Some(MAX_TCP_BACKLOG));
                            (*addr, Link::Tls(Box::new(connection)))
                        }
                        Err(err) => {
                            warn!(%err, "cannot start a TLS session");
                            continue;
                        }
                    }
                }
                _ => (self.udp_addr, Link::Plain { out: Vec::new() }),
            };
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let token = Token(TCP_BASE + entry.key());
            if let Err(err) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                debug!(%err, "cannot register a TCP client");
                continue;
            }
            let five = FiveTuple {
                client,
                server,
                transport: if tls { Transport::Tls } else { Transport::Tcp },
            };
            self.conn_by_client.insert(five, entry.key());
            entry.insert(TcpConn {
                stream,
                five,
                decoder: StreamDecoder::new(),
                link,
            });
        }
    }

    fn service_tcp(&mut self, now: Instant, index: usize) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let five = conn.five;
        let mut open = conn.fill(&mut self.buf).unwrap_or(false);
        // The decoder leaves the connection while the core answers its frames, so answers
        // can be queued on the connection (and others) without copying each frame.
        let mut decoder = std::mem::take(&mut conn.decoder);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    debug!(client = %five.client, %err, "closing a TCP client that sent garbage");
                    open = false;
                    break;
                }
            };
            if let Some(transmit) = self.core.handle_client(now, five, frame, &mut self.relays) {
                dispatch(
                    transmit,
                    &mut self.out,
                    &mut self.conns,
                    &self.conn_by_client,
                );
            }
        }
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        conn.decoder = decoder;
        if conn.flush().is_err() || conn.backlog() > MAX_TCP_BACKLOG {
            open = false;
        }
        if !open {
            self.close_tcp(index);
        }
    }

    fn close_tcp(&mut self, index: usize) {
        if !self.conns.contains(index) {
            return;
        }
        let mut conn = self.conns.remove(index);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.conn_by_client.remove(&conn.five);
        self.core
            .handle_transport_closed(conn.five, &mut self.relays);
    }
}

/// Datagrams produced while handling one batch, sent together.
#[derive(Default)]
struct Outbox {
    /// To UDP clients, from the listening socket.
    clients: SendBatch,
    /// To peers, each from its relay socket.
    peers: SendBatch,
}

/// Queues or sends one packet the core produced.
fn dispatch(
    transmit: Transmit<'_>,
    out: &mut Outbox,
    conns: &mut Slab<TcpConn>,
    conn_by_client: &HashMap<FiveTuple, usize>,
) {
    match transmit.destination {
        Destination::Client(five) if five.transport == Transport::Udp => {
            out.clients.push(five.server, transmit.payload, five.client);
        }
        Destination::Client(five) => {
            if let Some(conn) = conn_by_client.get(&five).and_then(|&i| conns.get_mut(i)) {
                // A failed write shows up as an error on the connection's next event.
                let _ = conn.send(transmit.payload);
            }
        }
        Destination::Peer { relay, peer } => out.peers.push(relay, transmit.payload, peer),
    }
}

/// Relay sockets, opened and closed at the core's request.
struct RelayTable {
    registry: Registry,
    sockets: Slab<(UdpSocket, SocketAddr)>,
    by_addr: HashMap<SocketAddr, usize>,
    ip4: IpAddr,
    ip6: Option<IpAddr>,
    ports: (u16, u16),
    rng: u64,
}

impl RelayTable {
    fn socket(&self, relay: SocketAddr) -> Option<&UdpSocket> {
        let index = *self.by_addr.get(&relay)?;
        self.sockets.get(index).map(|(socket, _)| socket)
    }

    fn random_port(&mut self, even: bool) -> u16 {
        // xorshift64: relay ports need to be unpredictable-ish, not cryptographic.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (low, high) = self.ports;
        let span = u64::from(high - low) + 1;
        let port = low + (self.rng % span) as u16;
        if even { port & !1 } else { port }
    }
}

impl RelayTable {
    /// Binds and registers a relay socket at exactly `addr`.
    fn bind_at(&mut self, addr: SocketAddr) -> Option<SocketAddr> {
        let mut socket = UdpSocket::from_std(net::bind_udp(addr).ok()?);
        let addr = socket.local_addr().ok()?;
        let entry = self.sockets.vacant_entry();
        let token = Token(RELAY_BASE + entry.key());
        self.registry
            .register(&mut socket, token, Interest::READABLE)
            .ok()?;
        self.by_addr.insert(addr, entry.key());
        entry.insert((socket, addr));
        Some(addr)
    }
}

impl RelayAllocator for RelayTable {
    fn allocate(&mut self, family: Family, even_port: bool) -> Option<SocketAddr> {
        let ip = match family {
            Family::V4 => Some(self.ip4).filter(IpAddr::is_ipv4),
            Family::V6 => self.ip6,
        }?;
        for _ in 0..64 {
            let port = self.random_port(even_port);
            if port < self.ports.0 {
                continue;
            }
            if let Some(addr) = self.bind_at(SocketAddr::new(ip, port)) {
                return Some(addr);
            }
        }
        warn!("no free relay port");
        None
    }

    fn allocate_pair(&mut self, family: Family) -> Option<(SocketAddr, SocketAddr)> {
        let ip = match family {
            Family::V4 => Some(self.ip4).filter(IpAddr::is_ipv4),
            Family::V6 => self.ip6,
        }?;
        for _ in 0..64 {
            let even = self.random_port(true);
            if even < self.ports.0 || even >= self.ports.1 {
                continue;
            }
            let Some(low) = self.bind_at(SocketAddr::new(ip, even)) else {
                continue;
            };
            match self.bind_at(SocketAddr::new(ip, even + 1)) {
                Some(high) => return Some((low, high)),
                None => self.release(low),
            }
        }
        warn!("no free relay port pair");
        None
    }

    fn release(&mut self, relay: SocketAddr) {
        if let Some(index) = self.by_addr.remove(&relay) {
            let (mut socket, _) = self.sockets.remove(index);
            let _ = self.registry.deregister(&mut socket);
        }
    }
}
