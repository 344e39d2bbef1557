//! Quotas: allocations per user and in total, permissions, channels, bandwidth.

mod common;

use common::*;
use stun::ChannelData;
use turn::ServerConfig;

#[test]
fn allocations_per_user_486_and_total_508() {
    let mut world = World::new(ServerConfig {
        max_allocations_per_user: 2,
        max_allocations: 3,
        ..ServerConfig::default()
    });
    for port in 1..=2 {
        Client::new(&format!("203.0.113.1:{port}"), "alice", "alice-pw").allocate(&mut world);
    }
    let mut third = Client::new("203.0.113.1:3", "alice", "alice-pw");
    let response = third.request(&mut world, stun::Method::ALLOCATE, &|w| {
        w.first_byte(stun::AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(486));
    Client::new("203.0.113.2:1", "bob", "bob-pw").allocate(&mut world);
    let mut fourth = Client::new("203.0.113.2:2", "bob", "bob-pw");
    let response = fourth.request(&mut world, stun::Method::ALLOCATE, &|w| {
        w.first_byte(stun::AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(508));
}

#[test]
fn no_relay_port_is_508() {
    let mut world = World::new(ServerConfig::default());
    world.relays.capacity = 0;
    let mut alice = Client::alice();
    let response = alice.request(&mut world, stun::Method::ALLOCATE, &|w| {
        w.first_byte(stun::AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(508));
}

#[test]
fn permissions_and_channels_per_allocation() {
    let mut world = World::new(ServerConfig {
        max_permissions: 2,
        max_channels: 1,
        ..ServerConfig::default()
    });
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "93.184.216.1:1")),
        None
    );
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "93.184.216.2:1")),
        None
    );
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "93.184.216.1:2")),
        None,
        "same IP"
    );
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "93.184.216.3:1")),
        Some(508)
    );
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4000, "93.184.216.1:1")),
        None
    );
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4001, "93.184.216.2:1")),
        Some(508)
    );
}

#[test]
fn bandwidth_per_allocation_drops_the_excess() {
    let mut world = World::new(ServerConfig {
        max_bytes_per_sec_per_allocation: 10_000,
        ..ServerConfig::default()
    });
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    alice.channel_bind(&mut world, 0x4000, PEER);
    let mut frame = Vec::new();
    ChannelData {
        channel: 0x4000,
        data: &[0u8; 1000],
    }
    .encode(&mut frame);
    let relayed = (0..20)
        .filter(|_| world.client_sends(alice.five, &frame).is_some())
        .count();
    assert_eq!(relayed, 10);
    assert_eq!(world.server.stats().bandwidth_dropped, 10);
    world.advance(std::time::Duration::from_secs(1));
    assert!(
        world.client_sends(alice.five, &frame).is_some(),
        "refilled after a second"
    );
}
