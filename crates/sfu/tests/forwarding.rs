//! The SFU core with real str0m peers on a virtual clock: a WHIP-style publisher's frames reach
//! a WHEP-style viewer byte for byte; a publisher that leaves frees the viewer's slot for the
//! next one; junk datagrams are counted and change nothing.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::{Input, JoinRequest, Output, Protocol, Role, Sfu, SfuConfig, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::Receive;
use str0m::{Candidate, Event, Rtc};

const SFU_ADDR: &str = "10.0.0.1:7882";

/// One datagram in flight.
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
    frames: Vec<Vec<u8>>,
}

impl Client {
    fn new(addr: &str, now: Instant) -> Client {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Client {
            addr,
            rtc,
            mid: None,
            connected: false,
            frames: Vec::new(),
        }
    }

    /// Offers one video m-line in `direction`, joins through the SFU, applies the answer.
    fn join(
        &mut self,
        sfu: &mut Sfu,
        now: Instant,
        room: &str,
        label: &str,
        role: Role,
        direction: Direction,
    ) {
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let joined = sfu
            .join(
                now,
                JoinRequest {
                    room,
                    label,
                    role,
                    offer: &offer.to_sdp_string(),
                },
            )
            .unwrap();
        let answer = SdpAnswer::from_sdp_string(&joined.answer).unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.mid = Some(mid);
    }

    /// Drains the engine: datagrams into `net`, events noted; returns the next timeout.
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
                str0m::Output::Event(Event::MediaData(data)) => {
                    self.frames.push(data.data.to_vec())
                }
                str0m::Output::Event(_) => {}
            }
        }
    }
}

/// A tiny network of clients around one SFU, on a virtual clock.
struct World {
    now: Instant,
    sfu: Sfu,
    clients: Vec<Client>,
    net: VecDeque<Packet>,
    events: Vec<SfuEvent>,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        let sfu = Sfu::new(SfuConfig {
            candidates: vec![SFU_ADDR.parse().unwrap()],
            ..SfuConfig::default()
        });
        World {
            now,
            sfu,
            clients: Vec::new(),
            net: VecDeque::new(),
            events: Vec::new(),
        }
    }

    fn drain_sfu(&mut self) -> Option<Instant> {
        loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => self.net.push_back(Packet {
                    from: t.source,
                    to: t.destination,
                    data: t.contents,
                }),
                Output::Event(e) => self.events.push(e),
                Output::Timeout(t) => return t,
            }
        }
    }

    /// Runs the world for `duration` in steps of at most 5 ms, delivering every datagram.
    fn run(&mut self, duration: Duration, mut each_step: impl FnMut(&mut World)) {
        let end = self.now + duration;
        while self.now < end {
            each_step(self);
            let mut next = self.now + Duration::from_millis(5);
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
            self.sfu.handle_input(Input::Timeout(self.now));
            for c in &mut self.clients {
                c.rtc.handle_input(str0m::Input::Timeout(self.now)).unwrap();
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        if p.to == sfu_addr {
            self.sfu.handle_input(Input::Receive {
                now: self.now,
                proto: Protocol::Udp,
                source: p.from,
                destination: p.to,
                contents: &p.data,
            });
        } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == p.to) {
            let receive = Receive {
                proto: str0m::net::Protocol::Udp,
                source: p.from,
                destination: p.to,
                contents: p.data.as_slice().try_into().unwrap(),
            };
            let _ = c.rtc.handle_input(str0m::Input::Receive(self.now, receive));
        }
    }
}

/// A VP8 keyframe-shaped payload (frame tag with the key bit clear, start code, 320x240).
fn vp8_frame(n: u32) -> Vec<u8> {
    let mut f = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    f.extend_from_slice(&n.to_be_bytes());
    f.extend(std::iter::repeat_n(0x55, 600));
    f
}

/// Writes frame `n` on client `i` when it is connected.
fn publish(w: &mut World, i: usize, n: &mut u32) {
    let now = w.now;
    let c = &mut w.clients[i];
    if !c.connected {
        return;
    }
    let Some(mid) = c.mid else { return };
    let Some(writer) = c.rtc.writer(mid) else {
        return;
    };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == Codec::Vp8)
        .map(|p| p.pt())
    else {
        return;
    };
    let time = MediaTime::from_90khz(u64::from(*n) * 3000);
    writer.write(pt, now, time, vp8_frame(*n)).unwrap();
    *n += 1;
}

#[test]
fn a_publishers_frames_reach_a_viewer_unchanged() {
    let mut w = World::new();
    let mut publisher = Client::new("10.0.0.2:5000", w.now);
    publisher.join(
        &mut w.sfu,
        w.now,
        "live",
        "whip-1",
        Role::Publisher,
        Direction::SendOnly,
    );
    let mut viewer = Client::new("10.0.0.3:5000", w.now);
    viewer.join(
        &mut w.sfu,
        w.now,
        "live",
        "whep-1",
        Role::Viewer,
        Direction::RecvOnly,
    );
    w.clients.push(publisher);
    w.clients.push(viewer);

    let mut n = 0;
    let mut step = 0u32;
    w.run(Duration::from_secs(4), |w| {
        step += 1;
        // A frame every 35 ms or so.
        if step % 7 == 0 {
            publish(w, 0, &mut n);
        }
    });
    assert!(w.clients[0].connected && w.clients[1].connected);
    let frames = &w.clients[1].frames;
    assert!(
        frames.len() > 50,
        "viewer got {} of {n} frames",
        frames.len()
    );
    // Byte for byte, in order.
    for pair in frames.windows(2) {
        let a = u32::from_be_bytes(pair[0][10..14].try_into().unwrap());
        let b = u32::from_be_bytes(pair[1][10..14].try_into().unwrap());
        assert!(b > a, "frames in order");
    }
    let last = frames.last().unwrap();
    let k = u32::from_be_bytes(last[10..14].try_into().unwrap());
    assert_eq!(last, &vp8_frame(k));
    let stats = w.sfu.stats();
    assert_eq!(stats.participants, 2);
    assert_eq!(stats.tracks, 1);
    assert!(stats.media_forwarded as usize >= frames.len());
    assert!(
        w.events
            .iter()
            .filter(|e| matches!(e, SfuEvent::Connected { .. }))
            .count()
            == 2
    );
}

#[test]
fn when_the_publisher_leaves_the_viewer_gets_the_next_one() {
    let mut w = World::new();
    for (addr, label) in [("10.0.0.2:5000", "whip-a"), ("10.0.0.4:5000", "whip-b")] {
        let mut p = Client::new(addr, w.now);
        p.join(
            &mut w.sfu,
            w.now,
            "live",
            label,
            Role::Publisher,
            Direction::SendOnly,
        );
        w.clients.push(p);
    }
    let mut viewer = Client::new("10.0.0.3:5000", w.now);
    viewer.join(
        &mut w.sfu,
        w.now,
        "live",
        "whep-1",
        Role::Viewer,
        Direction::RecvOnly,
    );
    w.clients.push(viewer);

    let (mut a, mut b) = (0u32, 1_000_000u32);
    let mut step = 0u32;
    w.run(Duration::from_secs(3), |w| {
        step += 1;
        if step % 7 == 0 {
            publish(w, 0, &mut a);
            publish(w, 1, &mut b);
        }
    });
    let from_a = |frames: &[Vec<u8>]| {
        frames
            .iter()
            .filter(|f| u32::from_be_bytes(f[10..14].try_into().unwrap()) < 1_000_000)
            .count()
    };
    let before = w.clients[2].frames.len();
    assert!(before > 20, "viewer got {before} frames");
    assert_eq!(
        from_a(&w.clients[2].frames),
        before,
        "the first publisher only"
    );

    let first = w.sfu.find("live", "whip-a").unwrap();
    w.sfu.leave(w.now, first).unwrap();
    w.clients[2].frames.clear();
    w.run(Duration::from_secs(3), |w| {
        step += 1;
        if step % 7 == 0 {
            publish(w, 1, &mut b);
        }
    });
    let after = &w.clients[2].frames;
    assert!(
        after.len() > 20,
        "viewer got {} frames from the second publisher",
        after.len()
    );
    assert_eq!(from_a(after), 0);
    assert_eq!(w.sfu.stats().tracks, 1);
    assert!(
        w.events
            .iter()
            .any(|e| matches!(e, SfuEvent::Left { label, .. } if label == "whip-a"))
    );
}

#[test]
fn junk_datagrams_are_counted_and_harm_nobody() {
    let mut w = World::new();
    let mut publisher = Client::new("10.0.0.2:5000", w.now);
    publisher.join(
        &mut w.sfu,
        w.now,
        "live",
        "whip-1",
        Role::Publisher,
        Direction::SendOnly,
    );
    let mut viewer = Client::new("10.0.0.3:5000", w.now);
    viewer.join(
        &mut w.sfu,
        w.now,
        "live",
        "whep-1",
        Role::Viewer,
        Direction::RecvOnly,
    );
    w.clients.push(publisher);
    w.clients.push(viewer);
    let mut n = 0;
    let mut step = 0u32;
    w.run(Duration::from_secs(2), |w| {
        step += 1;
        if step % 7 == 0 {
            publish(w, 0, &mut n);
        }
    });
    let junk: [&[u8]; 5] = [
        &[],
        &[0x80, 0x60, 0x00],
        &[0x80, 0xc8, 0xff, 0xff, 0, 0, 0, 1],
        &[
            0x00, 0x01, 0xff, 0xff, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ],
        &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
    ];
    let stranger: SocketAddr = "10.0.0.9:4000".parse().unwrap();
    let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
    for i in 0..1000 {
        w.sfu.handle_input(Input::Receive {
            now: w.now,
            proto: Protocol::Udp,
            source: stranger,
            destination: sfu_addr,
            contents: junk[i % junk.len()],
        });
        // Junk from a participant's own address too: its connection drops it.
        w.sfu.handle_input(Input::Receive {
            now: w.now,
            proto: Protocol::Udp,
            source: w.clients[0].addr,
            destination: sfu_addr,
            contents: junk[1 + i % (junk.len() - 1)],
        });
    }
    let frames = w.clients[1].frames.len();
    w.run(Duration::from_secs(2), |w| {
        step += 1;
        if step % 7 == 0 {
            publish(w, 0, &mut n);
        }
    });
    let stats = w.sfu.stats();
    assert!(stats.unroutable >= 1000, "{stats:?}");
    assert_eq!(stats.participants, 2);
    assert!(w.clients[1].frames.len() > frames + 30, "still forwarding");
}

#[test]
fn a_bad_offer_is_refused_with_a_reason() {
    let mut sfu = Sfu::new(SfuConfig {
        candidates: vec![SFU_ADDR.parse().unwrap()],
        ..SfuConfig::default()
    });
    let err = sfu
        .join(
            Instant::now(),
            JoinRequest {
                room: "r",
                label: "x",
                role: Role::Publisher,
                offer: "v=0\r\nnot sdp at all",
            },
        )
        .unwrap_err();
    assert!(matches!(err, sfu::SfuError::BadOffer(_)), "{err}");
    assert_eq!(sfu.stats().participants, 0);
}

#[test]
fn media_from_a_participant_forbidden_to_publish_is_not_forwarded() {
    let mut w = World::new();
    let mut sender = Client::new("10.0.0.2:5000", w.now);
    sender.join(
        &mut w.sfu,
        w.now,
        "live",
        "no-grant",
        Role::Publisher,
        Direction::SendOnly,
    );
    let id = w.sfu.find("live", "no-grant").unwrap();
    w.sfu.forbid_publishing(id);
    let mut viewer = Client::new("10.0.0.3:5000", w.now);
    viewer.join(
        &mut w.sfu,
        w.now,
        "live",
        "whep-1",
        Role::Viewer,
        Direction::RecvOnly,
    );
    w.clients.push(sender);
    w.clients.push(viewer);
    let mut n = 0;
    let mut step = 0u32;
    w.run(Duration::from_secs(2), |w| {
        step += 1;
        if step % 7 == 0 {
            publish(w, 0, &mut n);
        }
    });
    assert!(w.clients[0].connected && w.clients[1].connected);
    assert!(n > 20, "the sender wrote {n} frames");
    assert!(w.clients[1].frames.is_empty(), "nothing reaches the viewer");
    let stats = w.sfu.stats();
    assert_eq!(stats.tracks, 0);
    assert_eq!(stats.media_forwarded, 0);
}
