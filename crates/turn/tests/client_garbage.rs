//! The TURN client takes garbage, forgeries and random operation sequences without panicking:
//! every bad datagram is dropped and counted.

mod client_sim;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use client_sim::{Sim, addr};
use common::{PEER, PEER2};
use stun::{AttributeType, ChannelData, Class, Message, MessageType, MessageWriter, Method};
use turn::{ClientEvent, ClientStats, ServerConfig};

/// xorshift64*: deterministic, dependency-free noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn forged_responses_fail_integrity_and_are_ignored() {
    let mut sim = Sim::new(ServerConfig::default());
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    let unsigned = sim.client.poll_transmit().expect("Allocate");
    sim.deliver_to_server(&unsigned.contents);
    let signed = sim.client.poll_transmit().expect("signed Allocate");
    let tid = Message::parse(&signed.contents)
        .expect("parses")
        .transaction_id();
    let forged = |key: Option<&[u8]>| {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::SuccessResponse),
            tid,
        );
        w.xor_address(AttributeType::XOR_RELAYED_ADDRESS, addr("6.6.6.6:6666"))
            .xor_address(AttributeType::XOR_MAPPED_ADDRESS, addr("6.6.6.6:6667"))
            .u32(AttributeType::LIFETIME, 3600);
        if let Some(key) = key {
            w.message_integrity(key);
        }
        w.finish();
        buf
    };
    sim.deliver_to_client(&forged(None));
    sim.deliver_to_client(&forged(Some(b"not the key")));
    // An error a server could not have signed for any other reason is refused too.
    let mut unsigned_error = Vec::new();
    let mut w = MessageWriter::new(
        &mut unsigned_error,
        MessageType::new(Method::ALLOCATE, Class::ErrorResponse),
        tid,
    );
    w.error_code(stun::ErrorCode::FORBIDDEN);
    w.finish();
    sim.deliver_to_client(&unsigned_error);
    assert_eq!(sim.client.stats().integrity_failures, 3);
    assert!(sim.take_events().is_empty());
    // The genuine answer still counts.
    sim.deliver_to_server(&signed.contents);
    sim.pump();
    let events = sim.take_events();
    let [ClientEvent::Allocated { relayed, .. }] = events.as_slice() else {
        panic!("expected Allocated, got {events:?}");
    };
    assert!(sim.world.relays.open.contains(relayed));
}

#[test]
fn garbage_is_counted_never_a_panic() {
    let mut sim = Sim::new(ServerConfig::default());
    let server = sim.five.server;
    let now = sim.now();
    // Before any allocation.
    for packet in [
        &b""[..],
        b"\x00",
        b"\x40\x00\x00\x00",
        &[0u8; 20],
        &[0xffu8; 64],
    ] {
        assert!(sim.client.handle_input(server, packet, now).is_none());
    }
    assert!(
        sim.client
            .handle_input(addr("192.0.2.1:3478"), b"from elsewhere", now)
            .is_none()
    );
    assert_eq!(sim.client.stats().foreign_dropped, 1);

    let relay = sim.allocate();
    sim.client
        .create_permission(addr(PEER).ip(), now)
        .expect("allocated");
    sim.client
        .bind_channel(addr(PEER2), now)
        .expect("allocated");
    sim.pump();
    sim.take_events();

    // Real datagrams from the server to mutate: a Data indication, ChannelData, and responses
    // to requests long finished.
    let samples = capture(&mut sim, relay);
    assert!(samples.len() >= 4);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let before = sim.client.stats().clone();
    let mut fed = 0u64;
    let mut received = 0u64;
    for round in 0..20_000 {
        let packet = match round % 4 {
            // Noise with a plausible first byte.
            0 => {
                let len = rng.below(80);
                let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(first) = p.first_mut() {
                    *first = [0x00, 0x01, 0x40, 0x4f, 0x80][rng.below(5)];
                }
                p
            }
            // A real datagram with bytes flipped.
            1 | 2 => {
                let mut p = samples[rng.below(samples.len())].clone();
                for _ in 0..=rng.below(3) {
                    let i = rng.below(p.len());
                    p[i] ^= 1 << rng.below(8);
                }
                p
            }
            // A real datagram cut short or extended.
            _ => {
                let mut p = samples[rng.below(samples.len())].clone();
                if rng.below(2) == 0 {
                    p.truncate(rng.below(p.len()));
                } else {
                    p.extend((0..1 + rng.below(8)).map(|_| rng.next() as u8));
                }
                p
            }
        };
        fed += 1;
        if sim.client.handle_input(server, &packet, now).is_some() {
            received += 1;
        }
    }
    let after = sim.client.stats().clone();
    let dropped = |s: &ClientStats| {
        s.malformed_dropped + s.unmatched_dropped + s.integrity_failures + s.foreign_dropped
    };
    // With no request outstanding, every datagram is either data or counted as dropped.
    assert_eq!(dropped(&after) - dropped(&before), fed - received);
    assert_eq!(after.packets_received - before.packets_received, received);
    assert!(after.malformed_dropped > before.malformed_dropped);
    assert!(after.unmatched_dropped > before.unmatched_dropped);
    assert!(
        sim.client.poll_event().is_none(),
        "garbage raises no events"
    );

    // The client still works.
    sim.send(addr(PEER), b"after the storm");
    assert_eq!(
        sim.take_to_peers(),
        [(relay, addr(PEER), b"after the storm".to_vec())]
    );
    assert_eq!(sim.client.relayed(), Some(relay));
}

#[test]
fn random_operation_sequences_keep_the_state_machine_sound() {
    let mut seen = std::collections::BTreeMap::<&'static str, usize>::new();
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut sim = Sim::new(ServerConfig {
            nonce_lifetime_secs: 120,
            ..ServerConfig::default()
        });
        let peers: [SocketAddr; 3] = [addr(PEER), addr(PEER2), addr("10.0.0.1:1")];
        let mut relay = None;
        for _ in 0..200 {
            let now = sim.now();
            let peer = peers[rng.below(peers.len())];
            match rng.below(10) {
                0 => {
                    let _ = sim.client.allocate(now);
                }
                1 => {
                    if sim.client.deallocate(now).is_ok() {
                        relay = None;
                    }
                }
                2 => {
                    let _ = sim.client.create_permission(peer.ip(), now);
                }
                3 => {
                    let _ = sim.client.bind_channel(peer, now);
                }
                4 => {
                    let mut out = Vec::new();
                    if sim.client.send_to(peer, b"data", &mut out).is_ok() {
                        sim.deliver_to_server(&out);
                    }
                }
                5 => {
                    if let Some(relay) = sim.world.relays.open.iter().next().copied() {
                        sim.peer_sends(relay, peer, b"back");
                    }
                }
                // Sometimes the server is unreachable until this comes up again.
                6 => sim.drop_to_server = [0, 1, 3, usize::MAX][rng.below(4)],
                7 => sim.drop_to_client = rng.below(4),
                _ => {
                    let secs = [0.3, 2.0, 45.0, 250.0, 700.0][rng.below(5)];
                    sim.advance(Duration::from_secs_f64(secs));
                }
            }
            sim.pump();
            for event in sim.take_events() {
                *seen.entry(event_name(&event)).or_default() += 1;
                match event {
                    ClientEvent::Allocated { relayed, .. } => relay = Some(relayed),
                    ClientEvent::Expired
                    | ClientEvent::Deallocated
                    | ClientEvent::RefreshFailed(_) => relay = None,
                    _ => {}
                }
            }
            assert_eq!(sim.client.relayed(), relay, "seed {seed}");
        }
        *seen.entry("relayed to a peer").or_default() += sim.take_to_peers().len();
        *seen.entry("received from a peer").or_default() += sim.take_received().len();
    }
    // The sequences reached every corner worth reaching.
    for name in [
        "Allocated",
        "AllocationFailed",
        "Refreshed",
        "Expired",
        "Deallocated",
        "PermissionCreated",
        "PermissionFailed",
        "ChannelBound",
        "ChannelBindFailed",
        "relayed to a peer",
        "received from a peer",
    ] {
        assert!(
            seen.get(name).copied().unwrap_or(0) > 0,
            "never saw {name}: {seen:?}"
        );
    }
}

fn event_name(event: &ClientEvent) -> &'static str {
    match event {
        ClientEvent::Allocated { .. } => "Allocated",
        ClientEvent::AllocationFailed(_) => "AllocationFailed",
        ClientEvent::Refreshed { .. } => "Refreshed",
        ClientEvent::RefreshFailed(_) => "RefreshFailed",
        ClientEvent::Expired => "Expired",
        ClientEvent::Deallocated => "Deallocated",
        ClientEvent::PermissionCreated(_) => "PermissionCreated",
        ClientEvent::PermissionFailed { .. } => "PermissionFailed",
        ClientEvent::PermissionExpired(_) => "PermissionExpired",
        ClientEvent::ChannelBound { .. } => "ChannelBound",
        ClientEvent::ChannelBindFailed { .. } => "ChannelBindFailed",
        _ => "other",
    }
}

/// Datagrams the server sent the client, recorded while exercising the relay.
fn capture(sim: &mut Sim, relay: SocketAddr) -> Vec<Vec<u8>> {
    let mut samples = Vec::new();
    let now = sim.now();
    // A Data indication and a ChannelData frame.
    for (peer, data) in [
        (addr(PEER), &b"indicated"[..]),
        (addr(PEER2), b"channelled"),
    ] {
        let answer = sim
            .world
            .server
            .handle_peer(now, relay, peer, data)
            .map(|t| t.payload.to_vec())
            .expect("relayed");
        samples.push(answer);
    }
    assert!(ChannelData::parse(&samples[1]).is_ok());
    // Responses: replay the client's requests to the server by hand and keep the answers.
    let mut other = common::Client::new(client_sim::CLIENT_ADDR, "alice", "alice-pw");
    samples.push(other.create_permission(&mut sim.world, PEER));
    samples.push(other.refresh(&mut sim.world, None));
    samples.push(other.channel_bind(&mut sim.world, 0x4000, PEER2));
    samples
}
