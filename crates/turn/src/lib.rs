//! TURN (RFC 8656) server state machine, credentials and peer address policy, without I/O.
//!
//! The [`Server`] takes packets from clients and from peers (at relay addresses) plus time, and
//! answers with at most one packet to send for each, borrowing the input where it can: the
//! relay hot path (ChannelData and Send indications out, peer datagrams back) copies no more
//! than a 4-byte header. Relay sockets are opened and closed through a [`RelayAllocator`] the
//! glue supplies.
//!
//! What this crate is not: a socket loop. The `server` crate drives it over UDP, TCP and TLS.

pub mod auth;
pub mod client;
pub mod fuzz;
pub mod policy;
mod rate;
mod server;

pub use auth::{Credentials, NonceIssuer, rest_credentials, rest_password};
pub use client::{
    Client, ClientConfig, ClientCredentials, ClientError, ClientEvent, ClientStats, ClientTransmit,
    Received, RequestFailure,
};
pub use policy::{Denied, PeerPolicy};
pub use server::{
    Destination, Family, FiveTuple, RelayAllocator, Server, ServerConfig, Transmit, Transport,
    TurnStats,
};
