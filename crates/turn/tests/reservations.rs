//! EVEN-PORT with the R bit and RESERVATION-TOKEN (RFC 8656 §7.2), as RTP/RTCP clients use them.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use stun::{AttributeType, Message, Method};
use turn::ServerConfig;

fn allocate_even_reserving(world: &mut World, client: &mut Client) -> (std::net::SocketAddr, u64) {
    let response = client.request(world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
            .attribute(AttributeType::EVEN_PORT, &[0x80]);
    });
    let m = Message::parse(&response).unwrap();
    assert_eq!(error_of(&response), None);
    let relay = m.xor_address(AttributeType::XOR_RELAYED_ADDRESS).unwrap();
    (relay, m.u64(AttributeType::RESERVATION_TOKEN).unwrap())
}

fn allocate_with_token(world: &mut World, client: &mut Client, token: u64) -> Vec<u8> {
    client.request(world, Method::ALLOCATE, &move |w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
            .u64(AttributeType::RESERVATION_TOKEN, token);
    })
}

#[test]
fn the_reserved_odd_port_goes_to_the_allocate_with_the_token() {
    let mut world = World::new(ServerConfig::default());
    let mut rtp = Client::new("203.0.113.5:1000", "alice", "alice-pw");
    let (even, token) = allocate_even_reserving(&mut world, &mut rtp);
    assert_eq!(even.port() % 2, 0);
    let mut rtcp = Client::new("203.0.113.5:1001", "alice", "alice-pw");
    let response = allocate_with_token(&mut world, &mut rtcp, token);
    let odd = Message::parse(&response)
        .unwrap()
        .xor_address(AttributeType::XOR_RELAYED_ADDRESS);
    assert_eq!(odd.unwrap().port(), even.port() + 1);
    // A token works once.
    let mut again = Client::new("203.0.113.5:1002", "alice", "alice-pw");
    assert_eq!(
        error_of(&allocate_with_token(&mut world, &mut again, token)),
        Some(508)
    );
}

#[test]
fn an_unused_reservation_is_released_after_30_seconds() {
    let mut world = World::new(ServerConfig::default());
    let mut rtp = Client::alice();
    let (_, token) = allocate_even_reserving(&mut world, &mut rtp);
    assert_eq!(world.relays.open.len(), 2);
    world.advance(Duration::from_secs(31));
    assert_eq!(world.relays.open.len(), 1, "the reserved port is closed");
    let mut rtcp = Client::new("203.0.113.5:1001", "alice", "alice-pw");
    assert_eq!(
        error_of(&allocate_with_token(&mut world, &mut rtcp, token)),
        Some(508)
    );
}

#[test]
fn a_token_together_with_even_port_is_400() {
    let mut world = World::new(ServerConfig::default());
    let mut client = Client::alice();
    let response = client.request(&mut world, Method::ALLOCATE, &|w| {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17)
            .attribute(AttributeType::EVEN_PORT, &[0])
            .u64(AttributeType::RESERVATION_TOKEN, 7);
    });
    assert_eq!(error_of(&response), Some(400));
}
