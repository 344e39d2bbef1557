//! Drives the sans-IO [`sfu::Sfu`] on one dedicated thread that owns the media port.
//!
//! One `mio` poll watches the UDP socket and a waker; the HTTP and signaling side send
//! [`Command`]s (join with an offer, leave) through a channel and wake the thread. Every
//! datagram goes to the core, and its outputs are sent before the next one is read.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use net::batch::RecvBatch;
use sfu::{
    Input, Joined, Output, ParticipantId, Protocol, Role, Sfu, SfuConfig, SfuError, SfuEvent,
    SfuStats,
};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

const UDP: Token = Token(0);
const WAKER: Token = Token(1);
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
        reply: oneshot::Sender<Result<Joined, SfuError>>,
    },
    LeaveLabel {
        room: String,
        label: String,
    },
    Leave(ParticipantId),
    Rooms(oneshot::Sender<Vec<(String, Vec<String>)>>),
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
        let candidates = candidate_addresses(addr, &settings.announce);
        if candidates.is_empty() {
            return Err(io::Error::other(format!(
                "no address to announce for the media port {addr}: set [sfu] announce"
            )));
        }
        let config = SfuConfig {
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
            deadline: None,
            send_errors: 0,
        };
        let thread = std::thread::Builder::new()
            .name("sfu".into())
            .spawn(move || event_loop.run(&shared))?;
        if let Ok(mut slot) = inner.thread.lock() {
            *slot = Some(thread);
        }
        info!(%addr, candidates = ?candidates, "SFU media port listening (udp)");
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
        let (reply, answer) = oneshot::channel();
        let command = Command::Join {
            room: room.to_owned(),
            label: label.to_owned(),
            role,
            offer,
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
    deadline: Option<Instant>,
    send_errors: u64,
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
                drain(
                    &mut self.sfu,
                    &self.socket,
                    &self.events,
                    &mut self.deadline,
                    &mut self.send_errors,
                );
            }
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
                    if let Err(err) = &result {
                        debug!(%room, %label, %err, "SFU join refused");
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
            }
            self.drain();
        }
    }

    fn drain(&mut self) {
        drain(
            &mut self.sfu,
            &self.socket,
            &self.events,
            &mut self.deadline,
            &mut self.send_errors,
        );
    }
}

fn drain(
    sfu: &mut Sfu,
    socket: &UdpSocket,
    events: &Option<tokio::sync::mpsc::UnboundedSender<SfuEvent>>,
    deadline: &mut Option<Instant>,
    send_errors: &mut u64,
) {
    loop {
        match sfu.poll_output() {
            Output::Transmit(t) => {
                if let Err(err) = socket.send_to(&t.contents, t.destination) {
                    *send_errors += 1;
                    debug!(%err, to = %t.destination, "SFU send failed");
                }
            }
            Output::Event(event) => {
                if let Some(events) = events {
                    let _ = events.send(event);
                }
            }
            Output::Timeout(at) => {
                *deadline = at;
                break;
            }
        }
    }
}
