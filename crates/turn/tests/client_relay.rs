//! The TURN client's relay paths against the crate's server: permissions with Send and Data
//! indications, channels with ChannelData, and the server's peer policy.

mod client_sim;
mod common;

use client_sim::{Sim, addr};
use common::{PEER, PEER2};
use stun::{ChannelData, Class, Message, Method};
use turn::{ClientError, ClientEvent, PeerPolicy, RequestFailure, ServerConfig};

#[test]
fn permission_then_send_and_data_indications_both_ways() {
    let mut sim = Sim::new(ServerConfig::default());
    let relay = sim.allocate();
    let peer = addr(PEER);
    let now = sim.now();
    sim.client
        .create_permission(peer.ip(), now)
        .expect("allocated");
    assert!(!sim.client.has_permission(peer.ip()), "not yet answered");
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::PermissionCreated(peer.ip())]
    );
    assert!(sim.client.has_permission(peer.ip()));

    let datagram = sim.send(peer, b"hello peer");
    let m = Message::parse(&datagram).expect("a STUN message");
    assert_eq!((m.method(), m.class()), (Method::SEND, Class::Indication));
    assert_eq!(sim.take_to_peers(), [(relay, peer, b"hello peer".to_vec())]);

    // Any port of the permitted IP may answer; it arrives as a Data indication.
    let other_port = addr("93.184.216.34:9");
    sim.peer_sends(relay, peer, b"hello client");
    sim.peer_sends(relay, other_port, b"from another port");
    assert_eq!(
        sim.take_received(),
        [
            (peer, b"hello client".to_vec()),
            (other_port, b"from another port".to_vec())
        ]
    );
    // A peer without a permission is filtered by the server.
    sim.peer_sends(relay, addr(PEER2), b"nope");
    assert!(sim.take_received().is_empty());
    let stats = sim.client.stats();
    assert_eq!((stats.packets_sent, stats.bytes_sent), (1, 10));
    assert_eq!((stats.packets_received, stats.bytes_received), (2, 29));
}

#[test]
fn channel_data_both_ways() {
    let mut sim = Sim::new(ServerConfig::default());
    let relay = sim.allocate();
    let peer = addr(PEER);
    let now = sim.now();
    let channel = sim.client.bind_channel(peer, now).expect("allocated");
    assert_eq!(channel, 0x4000);
    assert_eq!(sim.client.channel(peer), None, "not yet bound");
    // Before the binding is confirmed, data goes as a Send indication (which the server drops:
    // the permission comes with the binding).
    let early = sim.send(peer, b"early");
    assert!(Message::parse(&early).is_ok());
    assert!(sim.take_to_peers().is_empty());
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::ChannelBound { peer, channel }]
    );
    assert_eq!(sim.client.channel(peer), Some(0x4000));
    assert!(
        sim.client.has_permission(peer.ip()),
        "ChannelBind installs it"
    );

    let datagram = sim.send(peer, b"media out");
    assert_eq!(
        ChannelData::parse(&datagram).expect("ChannelData"),
        ChannelData {
            channel: 0x4000,
            data: b"media out"
        }
    );
    assert_eq!(sim.take_to_peers(), [(relay, peer, b"media out".to_vec())]);
    sim.peer_sends(relay, peer, b"media back");
    assert_eq!(sim.take_received(), [(peer, b"media back".to_vec())]);

    // A second peer gets the next number; binding the first again returns its own.
    let now = sim.now();
    assert_eq!(sim.client.bind_channel(addr(PEER2), now), Ok(0x4001));
    assert_eq!(sim.client.bind_channel(peer, now), Ok(0x4000));
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::ChannelBound {
            peer: addr(PEER2),
            channel: 0x4001
        }]
    );
    sim.send(addr(PEER2), b"two");
    sim.peer_sends(relay, addr(PEER2), b"owt");
    assert_eq!(sim.take_to_peers(), [(relay, addr(PEER2), b"two".to_vec())]);
    assert_eq!(sim.take_received(), [(addr(PEER2), b"owt".to_vec())]);
}

#[test]
fn the_server_policy_decides_which_peers_are_reachable() {
    let private = addr("10.1.2.3:7000");
    // Denied by default: 403 for the permission and the channel.
    let mut sim = Sim::new(ServerConfig::default());
    sim.allocate();
    let now = sim.now();
    sim.client
        .create_permission(private.ip(), now)
        .expect("allocated");
    let channel = sim.client.bind_channel(private, now).expect("allocated");
    sim.pump();
    let forbidden = RequestFailure::Rejected {
        code: 403,
        reason: "Forbidden".into(),
    };
    assert_eq!(
        sim.take_events(),
        [
            ClientEvent::PermissionFailed {
                peer: private.ip(),
                failure: forbidden.clone()
            },
            ClientEvent::ChannelBindFailed {
                peer: private,
                channel,
                failure: forbidden
            }
        ]
    );
    let mut out = Vec::new();
    assert_eq!(
        sim.client.send_to(private, b"x", &mut out),
        Err(ClientError::NoPermission(private.ip()))
    );

    // Allowed when the operator opens the range.
    let mut sim = Sim::new(ServerConfig {
        policy: PeerPolicy {
            allow: vec!["10.0.0.0/8".parse().expect("net")],
            ..PeerPolicy::default()
        },
        ..ServerConfig::default()
    });
    let relay = sim.allocate();
    let now = sim.now();
    sim.client
        .create_permission(private.ip(), now)
        .expect("allocated");
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::PermissionCreated(private.ip())]
    );
    sim.send(private, b"inside");
    assert_eq!(sim.take_to_peers(), [(relay, private, b"inside".to_vec())]);
    sim.peer_sends(relay, private, b"outside");
    assert_eq!(sim.take_received(), [(private, b"outside".to_vec())]);
}

#[test]
fn misuse_is_refused() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.allocate();
    let now = sim.now();
    let mut out = Vec::new();
    assert_eq!(
        sim.client.send_to(addr(PEER), b"x", &mut out),
        Err(ClientError::NoPermission(addr(PEER).ip()))
    );
    assert_eq!(
        sim.client
            .create_permission(addr("[2001:db8::1]:1").ip(), now),
        Err(ClientError::FamilyMismatch)
    );
    assert_eq!(
        sim.client.bind_channel(addr("[2001:db8::1]:1"), now),
        Err(ClientError::FamilyMismatch)
    );
    sim.client
        .create_permission(addr(PEER).ip(), now)
        .expect("allocated");
    sim.pump();
    let too_big = vec![0u8; turn::client::MAX_PAYLOAD + 1];
    assert_eq!(
        sim.client.send_to(addr(PEER), &too_big, &mut out),
        Err(ClientError::TooLarge)
    );
    assert!(out.is_empty());
    // The largest payload fits in a Send indication.
    let biggest = vec![7u8; turn::client::MAX_PAYLOAD];
    sim.client
        .send_to(addr(PEER), &biggest, &mut out)
        .expect("fits");
    assert!(Message::parse(&out).is_ok());
}
