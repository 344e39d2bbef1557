//! The native WebRTC peer: str0m driven over tokio sockets, and a client for Switchboard's
//! signaling.
//!
//! [`connection`] is the only module that touches the WebRTC engine; [`signaling`] speaks the
//! protocol in `docs/protocol.md`.

pub mod connection;
pub mod media;
pub mod signaling;
pub mod tls;
pub mod whip;

pub use connection::{
    CandidatePair, CandidateType, Connection, PeerEvent, PeerOptions, RelayServer, Route,
};
pub use signaling::{IceServer, SignalEvent, Signaling};
pub use str0m::channel::ChannelId;
