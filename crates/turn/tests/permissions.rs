//! Permissions: required for traffic both ways, installed by CreatePermission, expiring at 300 s.

mod common;

use std::time::Duration;

use common::*;
use stun::{AttributeType, Class, Message, Method};
use turn::{Destination, ServerConfig};

#[test]
fn traffic_needs_a_permission_and_flows_once_it_exists() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    let relay = alice.allocate(&mut world);
    assert!(
        world.peer_sends(relay, PEER, b"hi").is_none(),
        "no permission yet"
    );
    assert!(
        world
            .client_sends(alice.five, &send_indication(PEER, b"out"))
            .is_none()
    );
    assert_eq!(error_of(&alice.create_permission(&mut world, PEER)), None);

    let (dest, payload) = world
        .client_sends(alice.five, &send_indication(PEER, b"out"))
        .unwrap();
    assert_eq!(
        dest,
        Destination::Peer {
            relay,
            peer: PEER.parse().unwrap()
        }
    );
    assert_eq!(payload, b"out");

    let (dest, packet) = world.peer_sends(relay, PEER, b"back").unwrap();
    assert_eq!(dest, Destination::Client(alice.five));
    let m = Message::parse(&packet).unwrap();
    assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
    assert_eq!(
        m.xor_address(AttributeType::XOR_PEER_ADDRESS),
        Some(PEER.parse().unwrap())
    );
    assert_eq!(m.attribute(AttributeType::DATA), Some(&b"back"[..]));

    // A permission is per IP address: another port of the same host is allowed too.
    assert!(
        world
            .peer_sends(relay, "93.184.216.34:1234", b"x")
            .is_some()
    );
    assert!(world.peer_sends(relay, PEER2, b"x").is_none());
    let stats = world.server.stats();
    assert_eq!((stats.packets_to_peers, stats.packets_to_clients), (1, 2));
}

#[test]
fn permissions_expire_after_300_seconds_unless_refreshed() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    let relay = alice.allocate(&mut world);
    alice.create_permission(&mut world, PEER);
    alice.create_permission(&mut world, PEER2);
    world.advance(Duration::from_secs(200));
    alice.create_permission(&mut world, PEER2);
    world.advance(Duration::from_secs(100));
    assert!(
        world.peer_sends(relay, PEER, b"x").is_none(),
        "PEER expired at 300 s"
    );
    assert!(
        world.peer_sends(relay, PEER2, b"x").is_some(),
        "PEER2 refreshed at 200 s"
    );
}

#[test]
fn create_permission_without_a_peer_is_400_and_without_allocation_437() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    assert_eq!(
        error_of(&alice.create_permission(&mut world, PEER)),
        Some(437)
    );
    alice.allocate(&mut world);
    let response = alice.request(&mut world, Method::CREATE_PERMISSION, &|_| {});
    assert_eq!(error_of(&response), Some(400));
}
