//! Allocation lifetimes: default, requested, maximum, refresh, delete, expiry, retransmission.

mod common;

use std::time::Duration;

use common::*;
use stun::{AttributeType, Message, Method};
use turn::ServerConfig;

fn allocate_asking(world: &mut World, client: &mut Client, lifetime: u32) -> Vec<u8> {
    client.request(world, Method::ALLOCATE, &move |w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
            .u32(AttributeType::LIFETIME, lifetime);
    })
}

#[test]
fn lifetimes_are_clamped_between_default_and_max() {
    let mut world = World::new(ServerConfig::default());
    let mut a = Client::new("203.0.113.1:1", "alice", "alice-pw");
    assert_eq!(lifetime_of(&allocate_asking(&mut world, &mut a, 60)), 600);
    let mut b = Client::new("203.0.113.1:2", "alice", "alice-pw");
    assert_eq!(
        lifetime_of(&allocate_asking(&mut world, &mut b, 1200)),
        1200
    );
    let mut c = Client::new("203.0.113.1:3", "alice", "alice-pw");
    assert_eq!(
        lifetime_of(&allocate_asking(&mut world, &mut c, 86_400)),
        3600
    );
    assert_eq!(lifetime_of(&c.refresh(&mut world, Some(7200))), 3600);
    assert_eq!(lifetime_of(&c.refresh(&mut world, None)), 600);
}

#[test]
fn allocation_expires_and_its_relay_is_released() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    let relay = alice.allocate(&mut world);
    assert!(world.relays.open.contains(&relay));
    world.advance(Duration::from_secs(599));
    assert_eq!(world.server.stats().allocations, 1);
    world.advance(Duration::from_secs(1));
    assert_eq!(world.server.stats().allocations, 0);
    assert!(world.relays.open.is_empty());
    assert_eq!(error_of(&alice.refresh(&mut world, None)), Some(437));
}

#[test]
fn refresh_extends_and_zero_deletes() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    world.advance(Duration::from_secs(500));
    assert_eq!(lifetime_of(&alice.refresh(&mut world, None)), 600);
    world.advance(Duration::from_secs(500));
    assert_eq!(
        world.server.stats().allocations,
        1,
        "refreshed at 500 s, alive at 1000 s"
    );
    let response = alice.refresh(&mut world, Some(0));
    assert_eq!(error_of(&response), None);
    assert_eq!(lifetime_of(&response), 0);
    assert_eq!(world.server.stats().allocations, 0);
    assert!(world.relays.open.is_empty());
    // The stale timer of the first lifetime fires harmlessly.
    world.advance(Duration::from_secs(4000));
}

#[test]
fn a_second_allocate_is_437_but_a_retransmission_gets_the_same_answer() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    let relay = alice.allocate(&mut world);
    // Retransmit the exact Allocate that succeeded (same transaction id).
    let tid = stun::TransactionId({
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&alice.counter.to_be_bytes());
        t
    });
    let packet = alice.encode(Method::ALLOCATE, tid, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    let (_, response) = world.client_sends(alice.five, &packet).unwrap();
    let m = Message::parse(&response).unwrap();
    assert_eq!(
        m.xor_address(AttributeType::XOR_RELAYED_ADDRESS),
        Some(relay)
    );
    let response = alice.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(437));
    assert_eq!(world.server.stats().allocations, 1);
}

#[test]
fn another_user_cannot_touch_an_allocation() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    let mut bob = Client::new("203.0.113.10:5000", "bob", "bob-pw"); // same 5-tuple
    assert_eq!(error_of(&bob.refresh(&mut world, Some(0))), Some(441));
    assert_eq!(world.server.stats().allocations, 1);
}

#[test]
fn closing_a_tcp_connection_deletes_its_allocation() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.five.transport = turn::Transport::Tcp;
    alice.allocate(&mut world);
    world
        .server
        .handle_transport_closed(alice.five, &mut world.relays);
    assert_eq!(world.server.stats().allocations, 0);
    assert!(world.relays.open.is_empty());
}
