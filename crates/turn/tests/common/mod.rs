//! A virtual-clock harness: a TURN server, fake relay sockets, and a client that speaks
//! long-term-credential STUN.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun::{
    AttributeType, Class, ErrorCode, Message, MessageType, MessageWriter, Method, TransactionId,
};
use turn::{
    Credentials, Destination, Family, FiveTuple, RelayAllocator, Server, ServerConfig, Transport,
};

pub const REALM: &str = "switchboard.test";
pub const SERVER: &str = "198.51.100.1:3478";
pub const UNIX_START: u64 = 1_800_000_000;
/// A public address to use as a peer (no traffic is sent anywhere: this is all in memory).
pub const PEER: &str = "93.184.216.34:40000";
pub const PEER2: &str = "93.184.216.35:40000";

#[derive(Default)]
pub struct FakeRelays {
    pub next_port: u16,
    pub open: BTreeSet<SocketAddr>,
    pub capacity: usize,
}

impl RelayAllocator for FakeRelays {
    fn allocate(&mut self, family: Family, _even_port: bool) -> Option<SocketAddr> {
        if self.open.len() >= self.capacity {
            return None;
        }
        self.next_port += 1;
        let ip = match family {
            Family::V4 => "198.51.100.1",
            Family::V6 => "2001:db8::1",
        };
        let addr = SocketAddr::new(ip.parse().unwrap(), 50_000 + self.next_port);
        self.open.insert(addr);
        Some(addr)
    }

    fn allocate_pair(&mut self, family: Family) -> Option<(SocketAddr, SocketAddr)> {
        if self.open.len() + 2 > self.capacity {
            return None;
        }
        // The next call of `allocate` adds 1: make that land on an even port.
        if self.next_port % 2 == 0 {
            self.next_port += 1;
        }
        let even = self.allocate(family, true)?;
        let odd = self.allocate(family, false)?;
        Some((even, odd))
    }

    fn release(&mut self, relay: SocketAddr) {
        assert!(
            self.open.remove(&relay),
            "released a relay that was not open"
        );
    }
}

pub struct World {
    pub server: Server,
    pub relays: FakeRelays,
    pub start: Instant,
    pub now: Instant,
    pub secret: Vec<u8>,
}

impl World {
    pub fn new(config: ServerConfig) -> Self {
        let mut credentials = Credentials::new(REALM);
        credentials.add_user("alice", "alice-pw");
        credentials.add_user("bob", "bob-pw");
        let secret = b"rest-secret".to_vec();
        credentials.set_rest_secret(&secret);
        let start = Instant::now();
        World {
            server: Server::new(config, credentials, [9; 32], start, UNIX_START),
            relays: FakeRelays {
                capacity: 1000,
                ..FakeRelays::default()
            },
            start,
            now: start,
            secret,
        }
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now, &mut self.relays);
    }

    pub fn unix_now(&self) -> u64 {
        UNIX_START + (self.now - self.start).as_secs()
    }

    /// Sends a raw packet from a client; returns what the server sends back and where.
    pub fn client_sends(
        &mut self,
        five: FiveTuple,
        packet: &[u8],
    ) -> Option<(Destination, Vec<u8>)> {
        self.server
            .handle_client(self.now, five, packet, &mut self.relays)
            .map(|t| (t.destination, t.payload.to_vec()))
    }

    pub fn peer_sends(
        &mut self,
        relay: SocketAddr,
        peer: &str,
        payload: &[u8],
    ) -> Option<(Destination, Vec<u8>)> {
        self.server
            .handle_peer(self.now, relay, peer.parse().unwrap(), payload)
            .map(|t| (t.destination, t.payload.to_vec()))
    }
}

pub struct Client {
    pub five: FiveTuple,
    pub username: String,
    pub password: String,
    pub nonce: Option<String>,
    pub counter: u32,
}

impl Client {
    pub fn new(client_addr: &str, username: &str, password: &str) -> Self {
        Client {
            five: FiveTuple {
                client: client_addr.parse().unwrap(),
                server: SERVER.parse().unwrap(),
                transport: Transport::Udp,
            },
            username: username.into(),
            password: password.into(),
            nonce: None,
            counter: 0,
        }
    }

    pub fn alice() -> Self {
        Client::new("203.0.113.10:5000", "alice", "alice-pw")
    }

    pub fn next_tid(&mut self) -> TransactionId {
        self.counter += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.counter.to_be_bytes());
        TransactionId(tid)
    }

    /// Encodes a request; with a nonce known, signs it with the long-term key.
    pub fn encode(
        &self,
        method: Method,
        tid: TransactionId,
        attributes: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid);
        attributes(&mut w);
        if let Some(nonce) = &self.nonce {
            w.attribute(AttributeType::USERNAME, self.username.as_bytes())
                .attribute(AttributeType::REALM, REALM.as_bytes())
                .attribute(AttributeType::NONCE, nonce.as_bytes());
            let key = stun::long_term_key_md5(&self.username, REALM, &self.password);
            w.message_integrity(&key);
        }
        w.finish();
        buf
    }

    /// Sends a request, learning the nonce from a 401/438 and retrying once, as real clients
    /// do. Returns the final response bytes.
    pub fn request(
        &mut self,
        world: &mut World,
        method: Method,
        attributes: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        for attempt in 0..2 {
            let tid = self.next_tid();
            let packet = self.encode(method, tid, attributes);
            let (dest, response) = world.client_sends(self.five, &packet).expect("a response");
            assert_eq!(dest, Destination::Client(self.five));
            let parsed = Message::parse(&response).unwrap();
            assert_eq!(parsed.transaction_id(), tid);
            let code = parsed.error_code().map(|e| e.code);
            if attempt == 0 && matches!(code, Some(401 | 438)) {
                self.nonce = Some(parsed.text(AttributeType::NONCE).unwrap().to_owned());
                continue;
            }
            return response;
        }
        unreachable!("the loop returns on its second pass")
    }

    pub fn allocate(&mut self, world: &mut World) -> SocketAddr {
        let response = self.request(world, Method::ALLOCATE, &|w| {
            w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
        });
        let m = Message::parse(&response).unwrap();
        assert_eq!(
            m.class(),
            Class::SuccessResponse,
            "allocate failed: {:?}",
            m.error_code()
        );
        assert!(m.verify_integrity(&self.key()), "responses are signed");
        m.xor_address(AttributeType::XOR_RELAYED_ADDRESS).unwrap()
    }

    pub fn create_permission(&mut self, world: &mut World, peer: &str) -> Vec<u8> {
        let peer: SocketAddr = peer.parse().unwrap();
        self.request(world, Method::CREATE_PERMISSION, &move |w| {
            w.xor_address(AttributeType::XOR_PEER_ADDRESS, peer);
        })
    }

    pub fn channel_bind(&mut self, world: &mut World, channel: u16, peer: &str) -> Vec<u8> {
        let peer: SocketAddr = peer.parse().unwrap();
        self.request(world, Method::CHANNEL_BIND, &move |w| {
            w.channel_number(channel)
                .xor_address(AttributeType::XOR_PEER_ADDRESS, peer);
        })
    }

    pub fn refresh(&mut self, world: &mut World, lifetime: Option<u32>) -> Vec<u8> {
        self.request(world, Method::REFRESH, &move |w| {
            if let Some(lifetime) = lifetime {
                w.u32(AttributeType::LIFETIME, lifetime);
            }
        })
    }

    pub fn key(&self) -> [u8; 16] {
        stun::long_term_key_md5(&self.username, REALM, &self.password)
    }
}

/// The error code of a response, or `None` for a success.
pub fn error_of(response: &[u8]) -> Option<u16> {
    let m = Message::parse(response).unwrap();
    match m.class() {
        Class::ErrorResponse => Some(m.error_code().unwrap().code),
        _ => None,
    }
}

pub fn lifetime_of(response: &[u8]) -> u32 {
    Message::parse(response)
        .unwrap()
        .u32(AttributeType::LIFETIME)
        .unwrap()
}

pub fn send_indication(peer: &str, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::SEND, Class::Indication),
        TransactionId([0xaa; 12]),
    );
    w.xor_address(AttributeType::XOR_PEER_ADDRESS, peer.parse().unwrap())
        .attribute(AttributeType::DATA, data);
    w.finish();
    buf
}

pub fn is_error(response: &[u8], code: ErrorCode<'_>) -> bool {
    error_of(response) == Some(code.code)
}
