//! Switchboard's signaling protocol, version 1, without any I/O.
//!
//! Two parts:
//! - [`protocol`]: the JSON messages browsers and native peers exchange with the server
//!   (`docs/protocol.md` is the normative description), their parsing and validation.
//! - [`hub`]: the room/presence state machine. It takes connection events, text frames and time
//!   in, and hands back frames to send, connections to close and its next deadline.
//!
//! What this crate is not: a WebSocket server. It owns no socket, spawns no task and never reads
//! the clock; the `server` crate drives it over tokio and axum.

pub mod hub;
pub mod protocol;

mod names;
mod rate;

pub use hub::{
    Authorizer, CloseCode, ConnId, Frame, Hub, HubConfig, HubStats, IceServerSource, Input,
    JoinRefusal, Output, PeerGrants, PeerSummary, RoomSummary,
};
pub use names::{DisplayName, NameError, RoomName};
pub use protocol::{
    ChatMessage, ClientMessage, ErrorCode, IceServer, PeerId, RoomSettings, ServerMessage,
};

/// The body of the signaling-frame fuzz target: parse arbitrary bytes as a client frame and, when
/// that succeeds, check that re-encoding the parsed message parses to the same value.
///
/// Kept in the library so ordinary builds compile it; `fuzz/` only wraps it.
pub fn fuzz_client_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = protocol::parse_client_frame(text) {
        let encoded = serde_json::to_string(&message).expect("client messages always encode");
        let again = protocol::parse_client_frame(&encoded).expect("an encoded message parses");
        assert_eq!(message, again, "parse -> encode -> parse must round-trip");
    }
}
