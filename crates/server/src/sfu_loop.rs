//! Drives the sans-IO [`sfu::Sfu`] on one dedicated thread that owns the media port.
//!
//! One `mio` poll watches the UDP socket, the ICE-TCP listener on the same port number (RFC 6544,
//! each packet framed by a 2-byte length, RFC 4571) with its connections, and a waker; the HTTP
//! and signaling side send
//! [`Command`]s (join with an offer, leave) through a channel and wake the thread. Every
//! datagram goes to the core, and its outputs are sent before the next one is read.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use net::batch::{RecvBatch, SendBatch};
use sfu::{
    Input, Joined, Output, ParticipantId, Protocol, Role, Sfu, SfuConfig, SfuError, SfuEvent,
    SfuStats,
};
use slab::Slab;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

const UDP: Token = Token(0);
const WAKER: Token = Token(1);
const TCP_LISTENER: Token = Token(2);
const CONN_BASE: usize = 1 << 20;
/// Most ICE-TCP connections at once.
const MAX_TCP_CONNS: usize = 4096;
/// An ICE-TCP connection whose unsent output exceeds this is closed (it stopped reading).
const MAX_TCP_BACKLOG: usize = 2 << 20;
/// How often the shared counters are refreshed.
const STATS_INTERVAL: Duration = Duration::from_millis(250);

/// What the SFU thread needs to start.
#[derive(Debug, Clone)]
pub struct SfuSettings {
    /// The media port (UDP). Port 0 lets the system choose.
    pub listen: SocketAddr,
    /// Addresses announced as candidates; empty: the listening address, or every interface's
    /// address when it is unspecified (0.0.0.0).
    pub announce: Vec<IpAddr>,
    /// Most participants per room.
    pub max_per_room: usize,
    /// Most participants in total.
    pub max_participants: usize,
}

/// A request for the SFU thread.
enum Command {
    Join {
        room: String,
        label: String,
        role: Role,
        offer: String,
        may_publish: bool,
        reply: oneshot::Sender<Result<Joined, SfuError>>,
    },
    LeaveLabel {
        room: String,
        label: String,
    },
    Leave(ParticipantId),
    Rooms(oneshot::Sender<Vec<(String, Vec<String>)>>),
    RestartIce {
        id: ParticipantId,
        ufrag: String,
        pwd: String,
        reply: oneshot::Sender<Result<sfu::IceCredentials, SfuError>>,
    },
}

/// The running SFU; cheap to clone.
#[derive(Clone)]
pub struct SfuHandle {
    inner: Arc<Inner>,
}

struct Inner {
    commands: Mutex<Sender<Command>>,
    waker: Waker,
    addr: SocketAddr,
    stop: AtomicBool,
    stats: Mutex<SfuStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SfuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuHandle")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl SfuHandle {
    /// Binds the media port and starts the thread. `events` gets every [`SfuEvent`].
    pub fn start(
        settings: &SfuSettings,
        events: Option<tokio::sync::mpsc::UnboundedSender<SfuEvent>>,
    ) -> io::Result<SfuHandle> {
        let std_socket = net::bind_udp(settings.listen)?;
        let addr = std_socket.local_addr()?;
        let mut socket = UdpSocket::from_std(std_socket);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, UDP, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        // ICE-TCP on the same port number; if TCP cannot have it, UDP still works.
        let tcp = match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                let mut listener = TcpListener::from_std(listener);
                poll.registry()
                    .register(&mut listener, TCP_LISTENER, Interest::READABLE)?;
                Some(listener)
            }
            Err(err) => {
                warn!(%addr, %err, "no ICE-TCP for the SFU: cannot listen on TCP");
                None
            }
        };
        let candidates = candidate_addresses(addr, &settings.announce);
        if candidates.is_empty() {
            return Err(io::Error::other(format!(
                "no address to announce for the media port {addr}: set [sfu] announce"
            )));
        }
        let config = SfuConfig {
            tcp_candidates: if tcp.is_some() {
                candidates.clone()
            } else {
                Vec::new()
            },
            candidates: candidates.clone(),
            max_per_room: settings.max_per_room,
            max_participants: settings.max_participants,
            ..SfuConfig::default()
        };
        let (tx, rx) = channel();
        let inner = Arc::new(Inner {
            commands: Mutex::new(tx),
            waker,
            addr,
            stop: AtomicBool::new(false),
            stats: Mutex::new(SfuStats::default()),
            thread: Mutex::new(None),
        });
        let shared = inner.clone();
        let mut event_loop = EventLoop {
            poll,
            socket,
            addr,
            sfu: Sfu::new(config),
            commands: rx,
            events,
            batch: RecvBatch::new(),
            out: SendBatch::new(),
            deadline: None,
            send_errors: 0,
            tcp,
            conns: Slab::new(),
            conn_by_peer: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("sfu".into())
            .spawn(move || event_loop.run(&shared))?;
        if let Ok(mut slot) = inner.thread.lock() {
            *slot = Some(thread);
        }
        info!(%addr, candidates = ?candidates, "SFU media port listening (udp, tcp)");
        Ok(SfuHandle { inner })
    }

    /// The media port's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Counters, refreshed a few times a second.
    pub fn stats(&self) -> SfuStats {
        self.inner.stats.lock().map(|s| *s).unwrap_or_default()
    }

    fn send(&self, command: Command) -> bool {
        let sent = self
            .inner
            .commands
            .lock()
            .is_ok_and(|tx| tx.send(command).is_ok());
        let _ = self.inner.waker.wake();
        sent
    }

    /// Offers `offer` for `label` in `room`; resolves to the answer.
    pub async fn join(
        &self,
        room: &str,
        label: &str,
        role: Role,
        offer: String,
    ) -> Result<Joined, SfuError> {
        self.join_with_grants(room, label, role, offer, true).await
    }

    /// [`SfuHandle::join`] for a participant that may or may not publish media.
    pub async fn join_with_grants(
        &self,
        room: &str,
        label: &str,
        role: Role,
        offer: String,
        may_publish: bool,
    ) -> Result<Joined, SfuError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Join {
            room: room.to_owned(),
            label: label.to_owned(),
            role,
            offer,
            may_publish,
            reply,
        };
        if !self.send(command) {
            return Err(SfuError::ServerFull);
        }
        answer.await.unwrap_or(Err(SfuError::ServerFull))
    }

    /// Removes `label` from `room`, if it is there.
    pub fn leave_label(&self, room: &str, label: &str) {
        self.send(Command::LeaveLabel {
            room: room.to_owned(),
            label: label.to_owned(),
        });
    }

    /// Removes a participant.
    pub fn leave(&self, id: ParticipantId) {
        self.send(Command::Leave(id));
    }

    /// Restarts ICE for a participant that sent new ICE credentials; our new ones come back.
    pub async fn restart_ice(
        &self,
        id: ParticipantId,
        ufrag: &str,
        pwd: &str,
    ) -> Result<sfu::IceCredentials, SfuError> {
        let (reply, credentials) = oneshot::channel();
        let command = Command::RestartIce {
            id,
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
            reply,
        };
        if !self.send(command) {
            return Err(SfuError::UnknownParticipant);
        }
        credentials
            .await
            .unwrap_or(Err(SfuError::UnknownParticipant))
    }

    /// Room names with their participants' labels.
    pub async fn rooms(&self) -> Vec<(String, Vec<String>)> {
        let (reply, rooms) = oneshot::channel();
        self.send(Command::Rooms(reply));
        rooms.await.unwrap_or_default()
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let _ = self.inner.waker.wake();
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// The addresses announced as host candidates.
fn candidate_addresses(bound: SocketAddr, announce: &[IpAddr]) -> Vec<SocketAddr> {
    if !announce.is_empty() {
        return announce
            .iter()
            .map(|ip| SocketAddr::new(*ip, bound.port()))
            .collect();
    }
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut addrs: Vec<SocketAddr> = interfaces
        .filter_map(|i| {
            let addr = i.address?;
            let ip: IpAddr = if bound.is_ipv4() {
                addr.as_sockaddr_in()?.ip().into()
            } else {
                let ip = addr.as_sockaddr_in6()?.ip();
                if ip.segments()[0] & 0xffc0 == 0xfe80 {
                    return None;
                }
                ip.into()
            };
            (!ip.is_loopback()).then_some(SocketAddr::new(ip, bound.port()))
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

struct EventLoop {
    poll: Poll,
    socket: UdpSocket,
    addr: SocketAddr,
    sfu: Sfu,
    commands: Receiver<Command>,
    events: Option<tokio::sync::mpsc::UnboundedSender<SfuEvent>>,
    batch: RecvBatch,
    /// UDP output, sent with one `sendmmsg` per batch of input.
    out: SendBatch,
    deadline: Option<Instant>,
    send_errors: u64,
    tcp: Option<TcpListener>,
    conns: Slab<TcpConn>,
    conn_by_peer: HashMap<SocketAddr, usize>,
}

/// One ICE-TCP connection: RFC 4571 frames in and out.
struct TcpConn {
    stream: TcpStream,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    writable: bool,
}

impl EventLoop {
    fn run(&mut self, shared: &Inner) {
        let mut events = Events::with_capacity(256);
        let mut last_stats = Instant::now();
        while !shared.stop.load(Ordering::Relaxed) {
            let timeout = self
                .deadline
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or(STATS_INTERVAL)
                .min(STATS_INTERVAL);
            if let Err(err) = self.poll.poll(&mut events, Some(timeout))
                && err.kind() != io::ErrorKind::Interrupted
            {
                warn!(%err, "SFU poll failed; stopping");
                break;
            }
            for event in events.iter() {
                match event.token() {
                    UDP => self.read_udp(),
                    WAKER => self.read_commands(),
                    TCP_LISTENER => self.accept(),
                    Token(t) if t >= CONN_BASE => self.service_tcp(t - CONN_BASE),
                    _ => {}
                }
            }
            let now = Instant::now();
            if self.deadline.is_none_or(|d| d <= now) {
                self.sfu.handle_input(Input::Timeout(now));
                self.drain();
            }
            if now.duration_since(last_stats) >= STATS_INTERVAL {
                last_stats = now;
                if let Ok(mut stats) = shared.stats.lock() {
                    *stats = self.sfu.stats();
                }
            }
        }
        debug!(send_errors = self.send_errors, "SFU thread stopped");
    }

    fn read_udp(&mut self) {
        loop {
            let count = match self.batch.recv(&self.socket) {
                Ok(count) => count,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    debug!(%err, "SFU receive error");
                    break;
                }
            };
            let now = Instant::now();
            for i in 0..count {
                let Some((contents, source)) = self.batch.get(i) else {
                    continue;
                };
                self.sfu.handle_input(Input::Receive {
                    now,
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents,
                });
            }
            // Once per batch: a video frame's packets go out to each subscriber together.
            self.drain();
        }
    }

    fn read_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            let now = Instant::now();
            match command {
                Command::Join {
                    room,
                    label,
                    role,
                    offer,
                    may_publish,
                    reply,
                } => {
                    let result = self.sfu.join(
                        now,
                        sfu::JoinRequest {
                            room: &room,
                            label: &label,
                            role,
                            offer: &offer,
                        },
                    );
                    match &result {
                        Err(err) => debug!(%room, %label, %err, "SFU join refused"),
                        Ok(joined) if !may_publish => self.sfu.forbid_publishing(joined.id),
                        Ok(_) => {}
                    }
                    let _ = reply.send(result);
                }
                Command::LeaveLabel { room, label } => {
                    if let Some(id) = self.sfu.find(&room, &label) {
                        let _ = self.sfu.leave(now, id);
                    }
                }
                Command::Leave(id) => {
                    let _ = self.sfu.leave(now, id);
                }
                Command::Rooms(reply) => {
                    let _ = reply.send(self.sfu.rooms());
                }
                Command::RestartIce {
                    id,
                    ufrag,
                    pwd,
                    reply,
                } => {
                    let _ = reply.send(self.sfu.restart_ice(now, id, &ufrag, &pwd));
                }
            }
            self.drain();
        }
    }

    fn flush_udp(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let queued = self.out.len();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.socket);
        let sent = self.out.flush(|_| Some(fd));
        self.send_errors += (queued - sent) as u64;
    }

    fn accept(&mut self) {
        let Some(listener) = &self.tcp else { return };
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    debug!(%err, "ICE-TCP accept failed");
                    return;
                }
            };
            if self.conns.len() >= MAX_TCP_CONNS {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let index = entry.key();
            if self
                .poll
                .registry()
                .register(&mut stream, Token(CONN_BASE + index), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(TcpConn {
                stream,
                peer,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                writable: false,
            });
            self.conn_by_peer.insert(peer, index);
        }
    }

    fn service_tcp(&mut self, index: usize) {
        let mut buf = [0u8; 16 * 1024];
        let mut closed = false;
        loop {
            let Some(conn) = self.conns.get_mut(index) else {
                return;
            };
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => conn.inbuf.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            self.deliver_frames(index);
        }
        self.deliver_frames(index);
        if let Some(conn) = self.conns.get_mut(index) {
            flush_tcp(conn, &self.poll, index);
        }
        if closed {
            self.close_tcp(index);
        }
    }

    /// Hands every complete RFC 4571 frame of a connection to the SFU.
    fn deliver_frames(&mut self, index: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(index) else {
                return;
            };
            if conn.inbuf.len() < 2 {
                return;
            }
            let len = usize::from(u16::from_be_bytes([conn.inbuf[0], conn.inbuf[1]]));
            if conn.inbuf.len() < 2 + len {
                return;
            }
            let frame: Vec<u8> = conn.inbuf.drain(..2 + len).skip(2).collect();
            let source = conn.peer;
            self.sfu.handle_input(Input::Receive {
                now: Instant::now(),
                proto: Protocol::Tcp,
                source,
                destination: self.addr,
                contents: &frame,
            });
            self.drain();
        }
    }

    fn close_tcp(&mut self, index: usize) {
        if self.conns.contains(index) {
            let mut conn = self.conns.remove(index);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.conn_by_peer.remove(&conn.peer);
        }
    }

    fn drain(&mut self) {
        let mut overflowing = Vec::new();
        loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) if t.proto == Protocol::Tcp => {
                    let Some(&index) = self.conn_by_peer.get(&t.destination) else {
                        self.send_errors += 1;
                        continue;
                    };
                    let Some(conn) = self.conns.get_mut(index) else {
                        continue;
                    };
                    let Ok(len) = u16::try_from(t.contents.len()) else {
                        continue;
                    };
                    conn.outbuf.extend_from_slice(&len.to_be_bytes());
                    conn.outbuf.extend_from_slice(&t.contents);
                    flush_tcp(conn, &self.poll, index);
                    if conn.outbuf.len() > MAX_TCP_BACKLOG {
                        overflowing.push(index);
                    }
                }
                Output::Transmit(t) => {
                    self.out.push(self.addr, &t.contents, t.destination);
                    if self.out.len() >= 256 {
                        self.flush_udp();
                    }
                }
                Output::Event(event) => {
                    if let Some(events) = &self.events {
                        let _ = events.send(event);
                    }
                }
                Output::Timeout(at) => {
                    self.deadline = at;
                    break;
                }
            }
        }
        self.flush_udp();
        for index in overflowing {
            debug!("closing an ICE-TCP connection that stopped reading");
            self.close_tcp(index);
        }
    }
}

/// Writes what the connection can take; asks for a writable event when the rest must wait.
fn flush_tcp(conn: &mut TcpConn, poll: &Poll, index: usize) {
    while !conn.outbuf.is_empty() {
        match conn.stream.write(&conn.outbuf) {
            Ok(0) => break,
            Ok(n) => {
                conn.outbuf.drain(..n);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let want = !conn.outbuf.is_empty();
    if want != conn.writable {
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if poll
            .registry()
            .reregister(&mut conn.stream, Token(CONN_BASE + index), interest)
            .is_ok()
        {
            conn.writable = want;
        }
    }
}
