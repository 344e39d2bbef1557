//! Binding, unknown attributes, unsupported transports and families, malformed packets.

mod common;

use common::*;
use stun::{AttributeType, Class, Message, MessageType, MessageWriter, Method, TransactionId};
use turn::ServerConfig;

fn binding(fingerprint: bool, extra: Option<u16>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        TransactionId([4; 12]),
    );
    if let Some(kind) = extra {
        w.attribute(AttributeType(kind), b"????");
    }
    if fingerprint {
        w.fingerprint();
    }
    w.finish();
    buf
}

#[test]
fn binding_returns_the_mapped_address_and_nothing_more() {
    let mut world = World::new(ServerConfig::default());
    let client = Client::alice();
    let (_, response) = world
        .client_sends(client.five, &binding(false, None))
        .unwrap();
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(
        m.xor_address(AttributeType::XOR_MAPPED_ADDRESS),
        Some(client.five.client)
    );
    // Amplification budget: XOR-MAPPED-ADDRESS only, 32 bytes in all.
    assert_eq!(response.len(), 32);
    let (_, response) = world
        .client_sends(client.five, &binding(true, None))
        .unwrap();
    assert_eq!(
        Message::parse(&response).unwrap().verify_fingerprint(),
        Some(true)
    );
    assert_eq!(world.server.stats().bindings, 2);
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut world = World::new(ServerConfig::default());
    let client = Client::alice();
    let (_, response) = world
        .client_sends(client.five, &binding(false, Some(0x7777)))
        .unwrap();
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.error_code().unwrap().code, 420);
    assert_eq!(
        m.unknown_attributes().unwrap().collect::<Vec<_>>(),
        vec![AttributeType(0x7777)]
    );
    // Comprehension-optional ones are ignored.
    let (_, response) = world
        .client_sends(client.five, &binding(false, Some(0xc001)))
        .unwrap();
    assert_eq!(error_of(&response), None);
}

#[test]
fn tcp_relays_ipv6_typos_and_dont_fragment() {
    let mut world = World::new(ServerConfig::default());
    let mut alice = Client::alice();
    let tcp = alice.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 6);
    });
    assert_eq!(error_of(&tcp), Some(442));
    let none = alice.request(&mut world, Method::ALLOCATE, &|_| {});
    assert_eq!(error_of(&none), Some(400));
    let family = alice.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
            .first_byte(AttributeType::REQUESTED_ADDRESS_FAMILY, 9);
    });
    assert_eq!(error_of(&family), Some(440));
    let df = alice.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
            .attribute(AttributeType::DONT_FRAGMENT, &[]);
    });
    assert_eq!(error_of(&df), Some(420));
    let v6 = alice.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
            .first_byte(AttributeType::REQUESTED_ADDRESS_FAMILY, 2);
    });
    let relay = Message::parse(&v6)
        .unwrap()
        .xor_address(AttributeType::XOR_RELAYED_ADDRESS);
    assert!(relay.unwrap().is_ipv6());
}

#[test]
fn malformed_packets_are_dropped_silently_and_counted() {
    let mut world = World::new(ServerConfig::default());
    let client = Client::alice();
    let mut bad_fingerprint = binding(true, None);
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 1;
    for packet in [
        &b""[..],
        b"\x00\x01\x00",
        b"\x16\x03\x01\x00\x05hello", // TLS, not STUN
        b"\x40\x00\x00\x10short",     // ChannelData claiming more than it has
        &bad_fingerprint,
    ] {
        assert!(world.client_sends(client.five, packet).is_none());
    }
    assert_eq!(world.server.stats().malformed_dropped, 5);
}

#[test]
fn responses_never_come_back_for_responses_or_unknown_indications() {
    let mut world = World::new(ServerConfig::default());
    let client = Client::alice();
    let mut buf = Vec::new();
    MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::SuccessResponse),
        TransactionId([5; 12]),
    )
    .finish();
    assert!(world.client_sends(client.five, &buf).is_none());
    let mut buf = Vec::new();
    MessageWriter::new(
        &mut buf,
        MessageType::new(Method(0x0055), Class::Request),
        TransactionId([6; 12]),
    )
    .finish();
    let (_, response) = world.client_sends(client.five, &buf).unwrap();
    assert_eq!(error_of(&response), Some(400));
}
