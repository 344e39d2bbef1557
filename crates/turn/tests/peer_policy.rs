//! The deny-by-default peer address policy on every path.

mod common;

use common::*;
use turn::{PeerPolicy, ServerConfig};

const DENIED: &[&str] = &[
    "127.0.0.1:22",
    "[::ffff:127.0.0.1]:22",
    "[::1]:22",
    "10.0.0.1:80",
    "[::ffff:10.0.0.1]:80",
    "169.254.169.254:80",
    "100.64.0.1:80",
    "0.0.0.0:80",
    "224.0.0.1:80",
];

#[test]
fn create_permission_and_channel_bind_refuse_internal_peers_with_403() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    for (i, peer) in DENIED.iter().enumerate() {
        if peer.starts_with("[::1]") {
            continue; // an IPv6 peer on an IPv4 relay is 443, checked below
        }
        assert_eq!(
            error_of(&alice.create_permission(&mut world, peer)),
            Some(403),
            "{peer}"
        );
        let channel = 0x4000 + i as u16;
        assert_eq!(
            error_of(&alice.channel_bind(&mut world, channel, peer)),
            Some(403),
            "{peer}"
        );
    }
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "[::1]:22")),
        Some(443)
    );
    assert!(world.server.stats().denied_peers >= 16);
}

#[test]
fn send_indications_to_internal_peers_are_dropped() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    for peer in ["127.0.0.1:22", "[::ffff:127.0.0.1]:22"] {
        assert!(
            world
                .client_sends(alice.five, &send_indication(peer, b"x"))
                .is_none()
        );
    }
    assert_eq!(world.server.stats().denied_peers, 2);
}

#[test]
fn dangerous_allow_loopback_opens_loopback_only() {
    let mut world = World::new(ServerConfig {
        policy: PeerPolicy {
            dangerous_allow_loopback: true,
            ..PeerPolicy::default()
        },
        ..ServerConfig::default()
    });
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "127.0.0.1:9")),
        None
    );
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "[::ffff:127.0.0.1]:9")),
        None
    );
    assert_eq!(
        error_of(&alice.create_permission(&mut world, "10.0.0.1:9")),
        Some(403)
    );
}
