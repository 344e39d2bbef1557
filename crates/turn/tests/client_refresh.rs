//! The TURN client keeps its allocation, permissions and channels alive on a virtual clock, lets
//! unused ones lapse, and notices when the allocation is gone.

mod client_sim;
mod common;

use std::time::Duration;

use client_sim::{CLIENT_ADDR, Sim, addr};
use common::{PEER, PEER2};
use stun::ChannelData;
use turn::{
    ClientConfig, ClientCredentials, ClientError, ClientEvent, RequestFailure, ServerConfig,
};

#[test]
fn thirty_minutes_of_traffic_keep_everything_alive() {
    let mut sim = Sim::new(ServerConfig::default());
    let relay = sim.allocate();
    let (by_indication, by_channel) = (addr(PEER), addr(PEER2));
    let now = sim.now();
    sim.client
        .create_permission(by_indication.ip(), now)
        .expect("allocated");
    let channel = sim.client.bind_channel(by_channel, now).expect("allocated");
    sim.pump();
    assert_eq!(sim.take_events().len(), 2);

    let mut refreshes = 0;
    for minute in 1..=30 {
        sim.advance(Duration::from_secs(60));
        for event in sim.take_events() {
            match event {
                ClientEvent::Refreshed { lifetime } => {
                    assert_eq!(lifetime, Duration::from_secs(600));
                    refreshes += 1;
                }
                other => panic!("minute {minute}: unexpected {other:?}"),
            }
        }
        let out = format!("out {minute}");
        let back = format!("back {minute}");
        sim.send(by_indication, out.as_bytes());
        let datagram = sim.send(by_channel, out.as_bytes());
        assert_eq!(
            ChannelData::parse(&datagram).map(|f| f.channel),
            Ok(channel),
            "minute {minute}: the channel is still bound"
        );
        assert_eq!(
            sim.take_to_peers(),
            [
                (relay, by_indication, out.clone().into_bytes()),
                (relay, by_channel, out.into_bytes())
            ],
            "minute {minute}"
        );
        sim.peer_sends(relay, by_indication, back.as_bytes());
        sim.peer_sends(relay, by_channel, back.as_bytes());
        assert_eq!(
            sim.take_received(),
            [
                (by_indication, back.clone().into_bytes()),
                (by_channel, back.into_bytes())
            ],
            "minute {minute}"
        );
    }
    // Refreshed at 9, 18 and 27 minutes.
    assert_eq!(refreshes, 3);
    let server = sim.world.server.stats();
    assert_eq!((server.allocations, server.allocations_created), (1, 1));
    // Nonces last 10 minutes: some refresh met a stale one and retried.
    assert!(server.stale_nonces >= 1);
    assert_eq!(server.unroutable_dropped, 0);
    assert_eq!(sim.client.relayed(), Some(relay));
    assert_eq!(sim.client.stats().integrity_failures, 0);
    assert_eq!(sim.client.stats().timeouts, 0);
}

#[test]
fn unused_permissions_and_channels_lapse() {
    let mut sim = Sim::new(ServerConfig::default());
    let relay = sim.allocate();
    let now = sim.now();
    sim.client
        .create_permission(addr(PEER).ip(), now)
        .expect("allocated");
    let channel = sim
        .client
        .bind_channel(addr(PEER2), now)
        .expect("allocated");
    sim.pump();
    sim.take_events();
    sim.advance(Duration::from_secs(239));
    assert!(sim.take_events().is_empty());
    sim.advance(Duration::from_secs(1));
    // The channel's IP keeps its permission while the channel is bound.
    assert_eq!(
        sim.take_events(),
        [ClientEvent::PermissionExpired(addr(PEER).ip())]
    );
    assert!(sim.client.has_permission(addr(PEER2).ip()));
    let mut out = Vec::new();
    assert_eq!(
        sim.client.send_to(addr(PEER), b"x", &mut out),
        Err(ClientError::NoPermission(addr(PEER).ip()))
    );
    // The channel lapses at 9 minutes; the allocation itself is refreshed regardless.
    sim.advance(Duration::from_secs(300));
    assert_eq!(
        sim.take_events(),
        [ClientEvent::Refreshed {
            lifetime: Duration::from_secs(600)
        }]
    );
    assert_eq!(sim.client.channel(addr(PEER2)), None);
    // Binding the same peer again reuses its number, which the server still holds for it.
    sim.advance(Duration::from_secs(160));
    let now = sim.now();
    assert_eq!(sim.client.bind_channel(addr(PEER2), now), Ok(channel));
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::ChannelBound {
            peer: addr(PEER2),
            channel
        }]
    );
    sim.send(addr(PEER2), b"again");
    assert_eq!(
        sim.take_to_peers(),
        [(relay, addr(PEER2), b"again".to_vec())]
    );
}

#[test]
fn the_allocation_expires_when_the_server_stops_answering() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.allocate();
    sim.drop_to_server = usize::MAX;
    let start = sim.world.start;
    sim.run_until(start + Duration::from_millis(599_999));
    assert!(sim.take_events().is_empty(), "refreshes keep trying");
    assert!(sim.client.relayed().is_some());
    sim.run_until(start + Duration::from_secs(600));
    assert_eq!(sim.take_events(), [ClientEvent::Expired]);
    assert_eq!(sim.client.relayed(), None);
    assert_eq!(sim.client.poll_timeout(), None);
    let stats = sim.client.stats();
    assert_eq!(
        stats.timeouts, 1,
        "one refresh ran out, a second was cut off"
    );
}

#[test]
fn a_refresh_of_a_deleted_allocation_fails() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.allocate();
    // Someone with the same 5-tuple and credentials deletes it behind the client's back.
    let mut other = common::Client::new(CLIENT_ADDR, "alice", "alice-pw");
    assert_eq!(
        common::error_of(&other.refresh(&mut sim.world, Some(0))),
        None
    );
    sim.advance(Duration::from_secs(541));
    assert_eq!(
        sim.take_events(),
        [ClientEvent::RefreshFailed(RequestFailure::Rejected {
            code: 437,
            reason: "Allocation Mismatch".into()
        })]
    );
    assert_eq!(sim.client.relayed(), None);
    sim.allocate();
}

#[test]
fn asks_for_the_configured_lifetime() {
    let mut sim = Sim::with(
        ServerConfig::default(),
        ClientCredentials::new("alice", "alice-pw"),
        ClientConfig {
            lifetime: Some(Duration::from_secs(1800)),
            ..ClientConfig::default()
        },
    );
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    sim.pump();
    assert!(matches!(
        sim.take_events().as_slice(),
        [ClientEvent::Allocated { lifetime, .. }] if *lifetime == Duration::from_secs(1800)
    ));
    sim.advance(Duration::from_secs(1739));
    assert!(sim.take_events().is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        sim.take_events(),
        [ClientEvent::Refreshed {
            lifetime: Duration::from_secs(1800)
        }]
    );
}
