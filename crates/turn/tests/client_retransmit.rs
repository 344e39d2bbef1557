//! The TURN client retransmits requests whose answers are lost (RFC 8489 §6.2.1) and gives up
//! after seven transmissions.

mod client_sim;
mod common;

use std::time::Duration;

use client_sim::{Sim, addr};
use common::PEER;
use turn::{ClientEvent, RequestFailure, ServerConfig};

#[test]
fn lost_challenges_are_recovered_by_retransmission() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.drop_to_client = 3;
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    sim.advance(Duration::from_secs(5));
    assert!(matches!(
        sim.take_events().as_slice(),
        [ClientEvent::Allocated { .. }]
    ));
    // 401s to the transmissions at 0, 0.5 and 1.5 s were lost; the one at 3.5 s got through.
    assert_eq!(sim.client.stats().retransmissions, 3);
    assert_eq!(sim.client_transmits, 5);
}

#[test]
fn a_lost_allocate_success_is_answered_again_not_allocated_twice() {
    let mut sim = Sim::new(ServerConfig::default());
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    let unsigned = sim.client.poll_transmit().expect("Allocate");
    sim.deliver_to_server(&unsigned.contents);
    // The server allocates on the signed request, but its success is lost twice.
    sim.drop_to_client = 2;
    sim.pump();
    assert_eq!(sim.world.server.stats().allocations, 1);
    assert!(sim.take_events().is_empty());
    sim.advance(Duration::from_millis(1499));
    assert!(sim.take_events().is_empty());
    sim.advance(Duration::from_millis(1));
    let events = sim.take_events();
    let [ClientEvent::Allocated { relayed, .. }] = events.as_slice() else {
        panic!("expected Allocated, got {events:?}");
    };
    assert!(sim.world.relays.open.contains(relayed));
    let server = sim.world.server.stats();
    assert_eq!((server.allocations, server.allocations_created), (1, 1));
}

#[test]
fn lost_requests_are_sent_again() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.allocate();
    sim.drop_to_server = 2;
    let now = sim.now();
    sim.client
        .create_permission(addr(PEER).ip(), now)
        .expect("allocated");
    sim.advance(Duration::from_millis(1499));
    assert!(sim.take_events().is_empty());
    sim.advance(Duration::from_millis(1));
    assert_eq!(
        sim.take_events(),
        [ClientEvent::PermissionCreated(addr(PEER).ip())]
    );
}

#[test]
fn seven_unanswered_transmissions_fail_the_request() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.drop_to_server = usize::MAX;
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    sim.advance(Duration::from_millis(39_499));
    assert!(sim.take_events().is_empty());
    assert_eq!(sim.client_transmits, 7);
    sim.advance(Duration::from_millis(1));
    assert_eq!(
        sim.take_events(),
        [ClientEvent::AllocationFailed(RequestFailure::TimedOut)]
    );
    assert_eq!(sim.client_transmits, 7);
    assert_eq!(sim.client.poll_timeout(), None);
}

#[test]
fn permission_and_channel_requests_time_out_into_events() {
    let mut sim = Sim::new(ServerConfig::default());
    let relay = sim.allocate();
    sim.drop_to_server = usize::MAX;
    let now = sim.now();
    sim.client
        .create_permission(addr(PEER).ip(), now)
        .expect("allocated");
    let channel = sim.client.bind_channel(addr(PEER), now).expect("allocated");
    sim.advance(Duration::from_secs(40));
    assert_eq!(
        sim.take_events(),
        [
            ClientEvent::PermissionFailed {
                peer: addr(PEER).ip(),
                failure: RequestFailure::TimedOut
            },
            ClientEvent::ChannelBindFailed {
                peer: addr(PEER),
                channel,
                failure: RequestFailure::TimedOut
            }
        ]
    );
    assert!(!sim.client.has_permission(addr(PEER).ip()));
    // The server is back: binding again works, with the same number.
    sim.drop_to_server = 0;
    let now = sim.now();
    assert_eq!(sim.client.bind_channel(addr(PEER), now), Ok(channel));
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::ChannelBound {
            peer: addr(PEER),
            channel
        }]
    );
    sim.send(addr(PEER), b"through");
    assert_eq!(
        sim.take_to_peers(),
        [(relay, addr(PEER), b"through".to_vec())]
    );
}
