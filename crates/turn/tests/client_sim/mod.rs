//! The TURN client wired to the crate's own server on a virtual clock: datagrams pass in memory,
//! optionally dropped, and time jumps from one deadline to the next.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn::{
    Client, ClientConfig, ClientCredentials, ClientEvent, Destination, FiveTuple, ServerConfig,
    Transport,
};

use crate::common::{SERVER, World};

/// The client's address as the server sees it.
pub const CLIENT_ADDR: &str = "203.0.113.10:5000";

pub struct Sim {
    pub world: World,
    pub client: Client,
    pub five: FiveTuple,
    /// Datagrams from the server to the client to drop, starting with the next one.
    pub drop_to_client: usize,
    /// Datagrams from the client to the server to drop, starting with the next one.
    pub drop_to_server: usize,
    /// Events the client raised, in order, not yet taken.
    pub events: Vec<ClientEvent>,
    /// What the server relayed to peers: (relay, peer, payload).
    pub to_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// What the client handed up: (peer, data).
    pub received: Vec<(SocketAddr, Vec<u8>)>,
    /// Requests (datagrams the client queued), for counting.
    pub client_transmits: usize,
}

impl Sim {
    /// Alice (password `alice-pw`) against a server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Sim::with(
            config,
            ClientCredentials::new("alice", "alice-pw"),
            ClientConfig::default(),
        )
    }

    pub fn with(
        config: ServerConfig,
        credentials: ClientCredentials,
        client_config: ClientConfig,
    ) -> Self {
        let world = World::new(config);
        let server: SocketAddr = SERVER.parse().expect("addr");
        Sim {
            world,
            client: Client::with_config(server, credentials, client_config),
            five: FiveTuple {
                client: CLIENT_ADDR.parse().expect("addr"),
                server,
                transport: Transport::Udp,
            },
            drop_to_client: 0,
            drop_to_server: 0,
            events: Vec::new(),
            to_peers: Vec::new(),
            received: Vec::new(),
            client_transmits: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.world.now
    }

    pub fn elapsed(&self) -> Duration {
        self.world.now - self.world.start
    }

    /// Moves queued datagrams both ways until nothing is left to move; collects events.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(transmit) = self.client.poll_transmit() {
                moved = true;
                self.client_transmits += 1;
                assert_eq!(transmit.destination, self.five.server);
                self.deliver_to_server(&transmit.contents);
            }
            while let Some(event) = self.client.poll_event() {
                self.events.push(event);
            }
            if !moved {
                return;
            }
        }
    }

    /// A datagram from the client reaches the server (unless dropped); its answer goes back.
    pub fn deliver_to_server(&mut self, packet: &[u8]) {
        if self.drop_to_server > 0 {
            self.drop_to_server -= 1;
            return;
        }
        let now = self.world.now;
        let answer = self
            .world
            .server
            .handle_client(now, self.five, packet, &mut self.world.relays)
            .map(|t| (t.destination, t.payload.to_vec()));
        match answer {
            Some((Destination::Client(five), payload)) => {
                assert_eq!(five, self.five);
                self.deliver_to_client(&payload);
            }
            Some((Destination::Peer { relay, peer }, payload)) => {
                self.to_peers.push((relay, peer, payload));
            }
            None => {}
        }
    }

    /// A datagram from the server reaches the client (unless dropped).
    pub fn deliver_to_client(&mut self, packet: &[u8]) {
        if self.drop_to_client > 0 {
            self.drop_to_client -= 1;
            return;
        }
        let now = self.world.now;
        if let Some(received) = self.client.handle_input(self.five.server, packet, now) {
            self.received.push((received.peer, received.data.to_vec()));
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
    }

    /// Runs both sides' timers up to `deadline`, moving datagrams after each.
    pub fn run_until(&mut self, deadline: Instant) {
        self.pump();
        for _ in 0..100_000 {
            let next = [self.client.poll_timeout(), self.world.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let at = match next {
                Some(at) if at <= deadline => at.max(self.world.now),
                _ => deadline,
            };
            self.world.now = at;
            self.client.handle_timeout(at);
            if let Some(next) = self.client.poll_timeout() {
                assert!(next > at, "handle_timeout left a timer due");
            }
            self.world.server.handle_timeout(at, &mut self.world.relays);
            self.pump();
            if at >= deadline {
                return;
            }
        }
        panic!("timers did not settle before {deadline:?}");
    }

    pub fn advance(&mut self, by: Duration) {
        let deadline = self.world.now + by;
        self.run_until(deadline);
    }

    /// Starts an allocation and runs until it is made; returns the relayed address.
    pub fn allocate(&mut self) -> SocketAddr {
        let now = self.now();
        self.client.allocate(now).expect("idle");
        self.pump();
        match self.take_events().as_slice() {
            [ClientEvent::Allocated { relayed, .. }] => *relayed,
            other => panic!("expected one Allocated event, got {other:?}"),
        }
    }

    /// The client sends `data` to `peer` through the relay.
    pub fn send(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut datagram = Vec::new();
        self.client
            .send_to(peer, data, &mut datagram)
            .expect("send_to");
        self.deliver_to_server(&datagram);
        datagram
    }

    /// `peer` sends `data` to the relayed address; the server forwards it to the client.
    pub fn peer_sends(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let now = self.world.now;
        let forwarded = self
            .world
            .server
            .handle_peer(now, relay, peer, data)
            .map(|t| (t.destination, t.payload.to_vec()));
        if let Some((destination, payload)) = forwarded {
            assert_eq!(destination, Destination::Client(self.five));
            self.deliver_to_client(&payload);
        }
    }

    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }

    pub fn take_to_peers(&mut self) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.to_peers)
    }

    pub fn take_received(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.received)
    }
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}
