//! Channel bindings: ChannelData both ways, rebinding rules, expiry.

mod common;

use std::time::Duration;

use common::*;
use stun::ChannelData;
use turn::{Destination, ServerConfig};

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ChannelData { channel, data }.encode(&mut out);
    out
}

#[test]
fn channel_data_flows_both_ways() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    let relay = alice.allocate(&mut world);
    assert!(
        world
            .client_sends(alice.five, &channel_data(0x4000, b"x"))
            .is_none(),
        "unbound"
    );
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4000, PEER)),
        None
    );
    let (dest, payload) = world
        .client_sends(alice.five, &channel_data(0x4000, b"media"))
        .unwrap();
    assert_eq!(
        dest,
        Destination::Peer {
            relay,
            peer: PEER.parse().unwrap()
        }
    );
    assert_eq!(payload, b"media");
    // Peer traffic comes back as ChannelData (ChannelBind installs the permission too).
    let (_, packet) = world.peer_sends(relay, PEER, b"reply").unwrap();
    assert_eq!(
        ChannelData::parse(&packet).unwrap(),
        ChannelData {
            channel: 0x4000,
            data: b"reply"
        }
    );
    // Another port of the same host has the permission but no channel: a Data indication.
    let (_, packet) = world
        .peer_sends(relay, "93.184.216.34:9", b"other")
        .unwrap();
    assert!(ChannelData::parse(&packet).is_err());
}

#[test]
fn rebinding_rules() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4001, PEER)),
        None
    );
    // The same binding again refreshes it.
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4001, PEER)),
        None
    );
    // The number is taken by another peer; the peer already has another number.
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4001, PEER2)),
        Some(400)
    );
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4002, PEER)),
        Some(400)
    );
    // Out of range numbers.
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x3fff, PEER2)),
        Some(400)
    );
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x8000, PEER2)),
        Some(400)
    );
}

#[test]
fn channels_expire_after_600_seconds_and_stay_reserved_for_5_more_minutes() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    let relay = alice.allocate(&mut world);
    alice.channel_bind(&mut world, 0x4000, PEER);
    world.advance(Duration::from_secs(290));
    alice.create_permission(&mut world, PEER); // keep the permission, not the channel
    alice.refresh(&mut world, None);
    world.advance(Duration::from_secs(290));
    alice.create_permission(&mut world, PEER);
    alice.refresh(&mut world, None);
    world.advance(Duration::from_secs(20)); // 600 s
    assert!(
        world
            .client_sends(alice.five, &channel_data(0x4000, b"x"))
            .is_none(),
        "expired"
    );
    let (_, packet) = world.peer_sends(relay, PEER, b"x").unwrap();
    assert!(
        ChannelData::parse(&packet).is_err(),
        "a Data indication once the channel expired"
    );
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4000, PEER2)),
        Some(400),
        "cool-down"
    );
    world.advance(Duration::from_secs(300));
    alice.refresh(&mut world, None);
    assert_eq!(
        error_of(&alice.channel_bind(&mut world, 0x4000, PEER2)),
        None,
        "free again"
    );
}

#[test]
fn channel_data_on_tcp_is_padded() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.five.transport = turn::Transport::Tcp;
    let relay = alice.allocate(&mut world);
    alice.channel_bind(&mut world, 0x4000, PEER);
    let (_, packet) = world.peer_sends(relay, PEER, b"abcde").unwrap();
    assert_eq!(packet.len(), 12);
}
