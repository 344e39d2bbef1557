//! The TURN client against the crate's server: Allocate through the 401 challenge, wrong
//! credentials, stale nonces, other errors, and deallocation.

mod client_sim;
mod common;

use std::time::Duration;

use client_sim::{CLIENT_ADDR, Sim, addr};
use common::PEER;
use stun::{AttributeType, Message};
use turn::{
    ClientConfig, ClientCredentials, ClientError, ClientEvent, RequestFailure, ServerConfig,
};

#[test]
fn allocates_through_the_401_challenge() {
    let mut sim = Sim::new(ServerConfig::default());
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    let first = sim.client.poll_transmit().expect("Allocate");
    let unsigned = Message::parse(&first.contents).expect("parses");
    assert!(!unsigned.has(AttributeType::USERNAME));
    sim.deliver_to_server(&first.contents);
    // The 401 taught the client REALM and NONCE: the second Allocate is signed.
    let second = sim.client.poll_transmit().expect("signed Allocate");
    let signed = Message::parse(&second.contents).expect("parses");
    assert_eq!(signed.text(AttributeType::USERNAME), Some("alice"));
    assert_eq!(signed.text(AttributeType::REALM), Some(common::REALM));
    assert!(signed.verify_integrity(&stun::long_term_key_md5("alice", common::REALM, "alice-pw")));
    assert_ne!(signed.transaction_id(), unsigned.transaction_id());
    sim.deliver_to_server(&second.contents);
    sim.pump();
    let events = sim.take_events();
    let [
        ClientEvent::Allocated {
            relayed,
            mapped,
            lifetime,
        },
    ] = events.as_slice()
    else {
        panic!("expected Allocated, got {events:?}");
    };
    assert_eq!(*mapped, addr(CLIENT_ADDR));
    assert_eq!(*lifetime, Duration::from_secs(600));
    assert!(sim.world.relays.open.contains(relayed));
    assert_eq!(sim.client.relayed(), Some(*relayed));
    assert_eq!(sim.client.mapped(), Some(addr(CLIENT_ADDR)));
    assert_eq!(sim.world.server.stats().allocations, 1);
    assert_eq!(sim.client.stats().integrity_failures, 0);
    assert_eq!(sim.client.allocate(now), Err(ClientError::NotIdle));
}

#[test]
fn a_wrong_password_fails_with_401() {
    let mut sim = Sim::with(
        ServerConfig::default(),
        ClientCredentials::new("alice", "guess"),
        ClientConfig::default(),
    );
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    sim.pump();
    let events = sim.take_events();
    match events.as_slice() {
        [ClientEvent::AllocationFailed(RequestFailure::Rejected { code: 401, reason })] => {
            assert_eq!(reason, "Unauthenticated");
        }
        other => panic!("expected AllocationFailed 401, got {other:?}"),
    }
    assert_eq!(
        sim.client_transmits, 2,
        "one unsigned try, one signed, no more"
    );
    assert_eq!(sim.client.relayed(), None);
    assert_eq!(sim.client.poll_timeout(), None, "nothing left to do");
    assert_eq!(sim.world.server.stats().auth_failures, 1);
    // An unknown user is refused the same way.
    let mut sim = Sim::with(
        ServerConfig::default(),
        ClientCredentials::new("nobody", "x"),
        ClientConfig::default(),
    );
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    sim.pump();
    assert_eq!(
        sim.take_events().first().and_then(|e| match e {
            ClientEvent::AllocationFailed(f) => f.code(),
            _ => None,
        }),
        Some(401)
    );
}

#[test]
fn a_stale_nonce_is_replaced_and_the_request_retried() {
    let mut sim = Sim::new(ServerConfig {
        nonce_lifetime_secs: 60,
        ..ServerConfig::default()
    });
    let relay = sim.allocate();
    // Past the nonce's expiry, but well before the allocation's refresh.
    sim.advance(Duration::from_secs(120));
    assert!(sim.take_events().is_empty());
    let before = sim.client_transmits;
    let now = sim.now();
    sim.client
        .create_permission(addr(PEER).ip(), now)
        .expect("allocated");
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::PermissionCreated(addr(PEER).ip())]
    );
    assert_eq!(sim.client_transmits - before, 2, "438, then the retry");
    assert_eq!(sim.world.server.stats().stale_nonces, 1);
    // The new nonce is kept: the next request goes through at once.
    let before = sim.client_transmits;
    let now = sim.now();
    sim.client.bind_channel(addr(PEER), now).expect("allocated");
    sim.pump();
    assert_eq!(sim.client_transmits - before, 1);
    assert!(matches!(
        sim.take_events().as_slice(),
        [ClientEvent::ChannelBound { .. }]
    ));
    sim.send(addr(PEER), b"still relayed");
    assert_eq!(
        sim.take_to_peers(),
        [(relay, addr(PEER), b"still relayed".to_vec())]
    );
}

#[test]
fn other_errors_end_the_attempt_with_code_and_reason() {
    let mut sim = Sim::new(ServerConfig {
        max_allocations_per_user: 0,
        ..ServerConfig::default()
    });
    let now = sim.now();
    sim.client.allocate(now).expect("idle");
    sim.pump();
    assert_eq!(
        sim.take_events(),
        [ClientEvent::AllocationFailed(RequestFailure::Rejected {
            code: 486,
            reason: "Allocation Quota Reached".into(),
        })]
    );
    // Idle again, and the nonce is remembered: another try is signed from the start.
    let before = sim.client_transmits;
    sim.client.allocate(now).expect("idle again");
    sim.pump();
    assert_eq!(sim.client_transmits - before, 1);
}

#[test]
fn deallocate_deletes_the_allocation_on_the_server() {
    let mut sim = Sim::new(ServerConfig::default());
    let relay = sim.allocate();
    let now = sim.now();
    sim.client
        .create_permission(addr(PEER).ip(), now)
        .expect("allocated");
    sim.pump();
    sim.take_events();
    sim.client.deallocate(now).expect("allocated");
    assert_eq!(sim.client.relayed(), None);
    assert_eq!(
        sim.client.create_permission(addr(PEER).ip(), now),
        Err(ClientError::NoAllocation)
    );
    sim.pump();
    assert_eq!(sim.take_events(), [ClientEvent::Deallocated]);
    assert_eq!(sim.world.server.stats().allocations, 0);
    assert!(!sim.world.relays.open.contains(&relay));
    assert_eq!(sim.client.poll_timeout(), None);
    // A new allocation can follow.
    let again = sim.allocate();
    assert_ne!(again, relay);
}

#[test]
fn deallocate_gives_up_quietly_when_the_server_is_gone() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.allocate();
    sim.drop_to_server = usize::MAX;
    let now = sim.now();
    sim.client.deallocate(now).expect("allocated");
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.take_events(), [ClientEvent::Deallocated]);
    assert_eq!(sim.client.stats().timeouts, 1);
}
