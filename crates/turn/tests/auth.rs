//! Long-term credentials, REST ephemeral credentials and stale nonces.

mod common;

use std::time::Duration;

use common::*;
use stun::{AttributeType, Class, Message, Method};
use turn::{ServerConfig, rest_credentials};

#[test]
fn an_unsigned_request_gets_401_with_realm_and_nonce_and_leaves_no_state() {
    let mut world = World::new(ServerConfig::default());
    let client = Client::alice();
    let tid = stun::TransactionId([1; 12]);
    let packet = client.encode(Method::ALLOCATE, tid, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    let (_, response) = world.client_sends(client.five, &packet).unwrap();
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::ErrorResponse);
    assert_eq!(m.error_code().unwrap().code, 401);
    assert_eq!(m.text(AttributeType::REALM), Some(REALM));
    assert_eq!(m.text(AttributeType::NONCE).unwrap().len(), 32);
    assert!(!m.has(AttributeType::SOFTWARE), "no SOFTWARE by default");
    assert_eq!(world.server.stats().allocations, 0);
}

#[test]
fn the_right_password_allocates_and_a_wrong_one_gets_401() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    let mut mallory = Client::new("203.0.113.66:5000", "alice", "guess");
    let response = mallory.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(401));
    let mut nobody = Client::new("203.0.113.67:5000", "nobody", "x");
    let response = nobody.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(401));
    assert_eq!(world.server.stats().auth_failures, 2);
    assert_eq!(world.server.stats().allocations, 1);
}

#[test]
fn rest_credentials_work_until_they_expire() {
    let mut world = World::new(ServerConfig::default());
    let expiry = world.unix_now() + 60;
    let (user, pass) = rest_credentials(&world.secret, expiry, "webclient");
    let mut client = Client::new("203.0.113.11:5000", &user, &pass);
    client.allocate(&mut world);
    world.advance(Duration::from_secs(61));
    let mut late = Client::new("203.0.113.12:5000", &user, &pass);
    let response = late.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(401));
    let (user, _) = rest_credentials(b"another secret", expiry + 3600, "x");
    let (_, pass) = rest_credentials(&world.secret, expiry + 3600, "y");
    let mut forged = Client::new("203.0.113.13:5000", &user, &pass);
    let response = forged.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    assert_eq!(error_of(&response), Some(401));
}

#[test]
fn a_stale_nonce_gets_438_and_a_fresh_nonce() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    world.advance(Duration::from_secs(601));
    // The client still holds the old nonce: the server answers 438 with a new one.
    let tid = alice.next_tid();
    let packet = alice.encode(Method::REFRESH, tid, &|_| {});
    let (_, response) = world.client_sends(alice.five, &packet).unwrap();
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.error_code().unwrap().code, 438);
    let fresh = m.text(AttributeType::NONCE).unwrap();
    assert_ne!(Some(fresh), alice.nonce.as_deref());
    assert_eq!(world.server.stats().stale_nonces, 1);
    // And with the fresh nonce the refresh goes through (allocation expired at 600 s, so 437).
    let response = alice.refresh(&mut world, None);
    assert_eq!(error_of(&response), Some(437));
}

#[test]
fn a_nonce_is_bound_to_the_client_address() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    alice.allocate(&mut world);
    let mut elsewhere = Client::new("203.0.113.99:6000", "alice", "alice-pw");
    elsewhere.nonce = alice.nonce.clone();
    let tid = elsewhere.next_tid();
    let packet = elsewhere.encode(Method::ALLOCATE, tid, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    });
    let (_, response) = world.client_sends(elsewhere.five, &packet).unwrap();
    assert_eq!(error_of(&response), Some(438));
}

#[test]
fn signed_request_missing_realm_or_nonce_is_400() {
    let mut world = World::new(ServerConfig::default());
    let client = Client::alice();
    let mut buf = Vec::new();
    let mut w = stun::MessageWriter::new(
        &mut buf,
        stun::MessageType::new(Method::ALLOCATE, Class::Request),
        stun::TransactionId([2; 12]),
    );
    w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
        .attribute(AttributeType::USERNAME, b"alice")
        .message_integrity(&client.key());
    w.finish();
    let (_, response) = world.client_sends(client.five, &buf).unwrap();
    assert_eq!(error_of(&response), Some(400));
}
