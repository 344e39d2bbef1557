//! The SFU core's cost per forwarded packet, without sockets or a kernel: one publisher and N
//! viewers (real str0m peers, as WHIP and WHEP clients) on a virtual clock, all in this process.
//! Only the time spent inside the SFU (`handle_input` and `poll_output`) is counted, so the figure
//! is what the routing core costs per packet, apart from the system calls `bench/sfu.sh` adds.
//!
//! ```text
//! cargo run --release -p switchboard-sfu --example fanout -- [VIEWERS] [SECONDS] [audio|video]
//! ```
//!
//! Under `valgrind --tool=callgrind --toggle-collect='fanout::measured*'` the instruction count is
//! repeatable whatever else the machine does.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::{Input, JoinRequest, Output, Protocol, Role, Sfu, SfuConfig};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::Receive;
use str0m::{Candidate, Event, Rtc};

const SFU_ADDR: &str = "10.0.0.1:7882";

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

struct Client {
    addr: SocketAddr,
    rtc: Rtc,
    mid: Option<Mid>,
    connected: bool,
    received: u64,
}

impl Client {
    fn new(addr: SocketAddr, now: Instant) -> Client {
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Client {
            addr,
            rtc,
            mid: None,
            connected: false,
            received: 0,
        }
    }

    /// Joins through the SFU; returns the time `Sfu::join` took.
    fn join(
        &mut self,
        sfu: &mut Sfu,
        now: Instant,
        label: &str,
        role: Role,
        kind: MediaKind,
    ) -> Duration {
        let direction = if role == Role::Publisher {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(kind, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let start = Instant::now();
        let joined = sfu
            .join(
                now,
                JoinRequest {
                    room: "bench",
                    label,
                    role,
                    offer: &offer.to_sdp_string(),
                },
            )
            .unwrap();
        let took = start.elapsed();
        let answer = SdpAnswer::from_sdp_string(&joined.answer).unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.mid = Some(mid);
        took
    }

    fn poll(&mut self, net: &mut VecDeque<Packet>) -> Instant {
        loop {
            match self.rtc.poll_output().unwrap() {
                str0m::Output::Timeout(t) => return t,
                str0m::Output::Transmit(t) => net.push_back(Packet {
                    from: self.addr,
                    to: t.destination,
                    data: t.contents.into(),
                }),
                str0m::Output::Event(Event::Connected) => self.connected = true,
                str0m::Output::Event(Event::MediaData(_)) => self.received += 1,
                str0m::Output::Event(_) => {}
            }
        }
    }
}

struct World {
    now: Instant,
    sfu: Sfu,
    clients: Vec<Client>,
    net: VecDeque<Packet>,
    /// Time spent inside the SFU.
    in_sfu: Duration,
    /// Past the warm-up: SFU calls go through [`measured`].
    measuring: bool,
}

/// Every SFU call once connected goes through here: `--toggle-collect=fanout::measured*` counts
/// the SFU's instructions and nothing else.
#[inline(never)]
fn measured<T>(sfu: &mut Sfu, f: impl FnOnce(&mut Sfu) -> T) -> T {
    f(sfu)
}

impl World {
    fn timed<T>(&mut self, f: impl FnOnce(&mut Sfu) -> T) -> T {
        if !self.measuring {
            return f(&mut self.sfu);
        }
        let start = Instant::now();
        let out = measured(&mut self.sfu, f);
        self.in_sfu += start.elapsed();
        out
    }

    fn drain_sfu(&mut self) -> Option<Instant> {
        loop {
            match self.timed(|sfu| sfu.poll_output()) {
                Output::Transmit(t) => self.net.push_back(Packet {
                    from: t.source,
                    to: t.destination,
                    data: t.contents,
                }),
                Output::Event(_) => {}
                Output::Timeout(t) => return t,
            }
        }
    }

    fn step(&mut self) {
        let mut next = self.now + Duration::from_millis(20);
        for _ in 0..100 {
            if let Some(t) = self.drain_sfu() {
                next = next.min(t);
            }
            for c in &mut self.clients {
                next = next.min(c.poll(&mut self.net));
            }
            if self.net.is_empty() {
                break;
            }
            while let Some(p) = self.net.pop_front() {
                self.deliver(p);
            }
        }
        self.now = next.max(self.now + Duration::from_micros(100));
        let now = self.now;
        self.timed(|sfu| sfu.handle_input(Input::Timeout(now)));
        for c in &mut self.clients {
            c.rtc.handle_input(str0m::Input::Timeout(now)).unwrap();
        }
    }

    fn deliver(&mut self, p: Packet) {
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        let now = self.now;
        if p.to == sfu_addr {
            self.timed(|sfu| {
                sfu.handle_input(Input::Receive {
                    now,
                    proto: Protocol::Udp,
                    source: p.from,
                    destination: p.to,
                    contents: &p.data,
                })
            });
        } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == p.to) {
            let receive = Receive {
                proto: str0m::net::Protocol::Udp,
                source: p.from,
                destination: p.to,
                contents: p.data.as_slice().try_into().unwrap(),
            };
            let _ = c.rtc.handle_input(str0m::Input::Receive(now, receive));
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let viewers: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let seconds: u64 = args.next().map_or(10, |a| a.parse().unwrap());
    let kind = match args.next().as_deref() {
        Some("video") => MediaKind::Video,
        _ => MediaKind::Audio,
    };
    let now = Instant::now();
    let mut w = World {
        now,
        sfu: Sfu::new(SfuConfig {
            candidates: vec![SFU_ADDR.parse().unwrap()],
            max_per_room: viewers + 1,
            ..SfuConfig::default()
        }),
        clients: Vec::new(),
        net: VecDeque::new(),
        in_sfu: Duration::ZERO,
        measuring: false,
    };
    let address =
        |i: usize| SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 2], 5000));
    let mut publisher = Client::new(address(0), now);
    let mut joining = publisher.join(&mut w.sfu, now, "whip-1", Role::Publisher, kind);
    w.clients.push(publisher);
    for i in 1..=viewers {
        let mut viewer = Client::new(address(i), now);
        joining += viewer.join(&mut w.sfu, now, &format!("whep-{i}"), Role::Viewer, kind);
        w.clients.push(viewer);
    }
    // Connect everyone before counting.
    let deadline = now + Duration::from_secs(10);
    while w.now < deadline && !w.clients.iter().all(|c| c.connected) {
        w.step();
    }
    let connected = w.clients.iter().filter(|c| c.connected).count();
    assert_eq!(connected, viewers + 1, "everyone connects");

    // Opus: a 120-byte packet every 20 ms. Video: 30 frames/s of 4 KB, a keyframe each 2 s.
    let interval = match kind {
        MediaKind::Audio => Duration::from_millis(20),
        MediaKind::Video => Duration::from_micros(33_333),
    };
    let before = w.sfu.stats();
    w.in_sfu = Duration::ZERO;
    w.measuring = true;
    let start = w.now;
    let end = start + Duration::from_secs(seconds);
    let mut next_write = w.now;
    let mut n: u64 = 0;
    while w.now < end {
        if w.now >= next_write {
            next_write += interval;
            let now = w.now;
            let c = &mut w.clients[0];
            let writer = c.rtc.writer(c.mid.unwrap()).unwrap();
            let codec = if kind == MediaKind::Audio {
                Codec::Opus
            } else {
                Codec::Vp8
            };
            let pt = writer
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
                .unwrap();
            let (time, payload) = if kind == MediaKind::Audio {
                (
                    MediaTime::new(n * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ),
                    vec![0x78; 120],
                )
            } else {
                let key = n % 60 == 0;
                let mut f = vec![
                    if key { 0x50 } else { 0x51 },
                    0x42,
                    0x00,
                    0x9d,
                    0x01,
                    0x2a,
                    0x40,
                    0x01,
                    0xf0,
                    0x00,
                ];
                f.resize(4000, 0x55);
                (MediaTime::from_90khz(n * 3000), f)
            };
            writer.write(pt, now, time, payload).unwrap();
            n += 1;
        }
        w.step();
    }
    let after = w.sfu.stats();
    let out = after.datagrams_out - before.datagrams_out;
    let inn = after.datagrams_in - before.datagrams_in;
    let received: u64 = w.clients[1..].iter().map(|c| c.received).sum();
    println!(
        "joins: {:.2} ms each in Sfu::join (answer and connection set-up)",
        joining.as_secs_f64() * 1e3 / (viewers + 1) as f64
    );
    println!(
        "{viewers} viewers, {seconds} s of {kind:?}: {n} written, {received} received by viewers, \
         datagrams in {inn} out {out}; time in the SFU {:.1} ms = {:.2} µs per datagram out",
        w.in_sfu.as_secs_f64() * 1e3,
        w.in_sfu.as_secs_f64() * 1e6 / out.max(1) as f64
    );
}
