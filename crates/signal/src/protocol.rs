//! Signaling protocol v1 messages (`docs/protocol.md`).
//!
//! Client frames are parsed with [`parse_client_frame`], which maps every failure to the
//! [`ErrorCode`] the server answers with. Server messages serialize with [`ServerMessage::to_json`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A peer's id in a room: 64 random bits, written as 16 lowercase hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl PeerId {
    /// Parses the 16-hex-character form.
    pub fn parse(text: &str) -> Option<PeerId> {
        if text.len() != 16 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(PeerId)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The `sfu` message from a client: an offer to the server's SFU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SfuOffer {
    /// Must be an `offer` with a non-empty SDP.
    pub description: SessionDescription,
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// Join a room, or resume a peer after a dropped connection.
    Join(Join),
    /// An SDP description or ICE candidate for one peer.
    Signal(SignalTo),
    /// An SDP offer for the server's SFU: the sender takes part in its room through the
    /// server instead of (or besides) the mesh. Answered with a `sfu` message.
    Sfu(SfuOffer),
    /// Leave the room.
    Leave,
    /// A chat message for a room that keeps its chat on the server: stored, then broadcast
    /// to the room (the sender included) as a server `chat`.
    Chat {
        /// The text, 1 to `max_chat_chars` characters.
        text: String,
    },
    /// Keepalive; answered with `pong`.
    Ping {
        /// Echoed in the `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

/// The `join` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// Protocol version; 1 when absent.
    #[serde(default = "default_version")]
    pub v: u32,
    /// Room name, validated by [`crate::RoomName::parse`].
    pub room: String,
    /// Display name, validated by [`crate::DisplayName::parse`].
    pub name: String,
    /// Resume a peer from an earlier `welcome`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// Access token (a JWT from `switchboard token`), required when the server has an API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn default_version() -> u32 {
    PROTOCOL_VERSION
}

/// Resume credentials from an earlier `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The peer id to take back.
    pub peer: String,
    /// The `resume_token` that came with it.
    pub token: String,
}

/// The `signal` message as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalTo {
    /// The addressee's peer id.
    pub to: String,
    /// The payload: a description or a candidate.
    #[serde(flatten)]
    pub payload: SignalPayload,
}

/// What a `signal` carries: exactly one of `description`, `candidate` or `app`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SignalPayload {
    /// An SDP offer, answer, pranswer or rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<SessionDescription>,
    /// An ICE candidate; `Some(None)` is the JSON `null` that ends the candidates.
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub candidate: Option<Option<IceCandidate>>,
    /// An application payload (a JSON object) the server relays without reading it, such as
    /// the pairing messages of a file transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<serde_json::Value>,
}

fn present_or_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An `RTCSessionDescriptionInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// `offer`, `answer`, `pranswer` or `rollback`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP text; may be empty only for `rollback`.
    #[serde(default)]
    pub sdp: String,
}

/// An `RTCIceCandidateInit`, in the protocol's snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` attribute; empty marks the end of a generation.
    pub candidate: String,
    /// The media stream identification tag.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// The m-line index.
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE ufrag the candidate belongs to.
    #[serde(default)]
    pub username_fragment: Option<String>,
}

/// One entry of the ICE server list handed to clients (an `RTCIceServer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// Answer to a successful `join`.
    Welcome(Welcome),
    /// Someone joined the room.
    PeerJoined {
        /// Who.
        peer: PeerInfo,
    },
    /// Someone left the room.
    PeerLeft {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A relayed `signal`.
    Signal(SignalFrom),
    /// Answer to `ping`.
    Pong {
        /// The `ping`'s id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// The SFU's answer to a `sfu` offer, or why it could not answer.
    Sfu {
        /// The answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<SessionDescription>,
        /// Why there is no answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A chat message, committed to the room's history (the sender's acknowledgement too).
    Chat(ChatMessage),
    /// The newest messages of the room's stored chat, oldest first; sent right after `welcome`
    /// in a room that keeps chat.
    ChatHistory {
        /// The messages.
        messages: Vec<ChatMessage>,
    },
    /// Something the client sent was refused.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl ServerMessage {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no I/O.
        serde_json::to_string(self).unwrap_or_else(|_| String::from(r#"{"type":"error"}"#))
    }

    /// An error frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }
}

/// The `welcome` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Welcome {
    /// Protocol version.
    pub v: u32,
    /// The joiner's peer id.
    pub peer: PeerId,
    /// The room joined.
    pub room: String,
    /// The joiner's display name as the server stored it (trimmed).
    pub name: String,
    /// Whether this resumed an earlier peer.
    pub resumed: bool,
    /// Secret for resuming this peer after a dropped connection.
    pub resume_token: String,
    /// Everyone else in the room.
    pub peers: Vec<PeerInfo>,
    /// ICE servers for `RTCPeerConnection`.
    pub ice_servers: Vec<IceServer>,
    /// The limits the server enforces.
    pub limits: Limits,
    /// The room's stored settings; absent for a room that exists only while people are in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_settings: Option<RoomSettings>,
}

/// The settings of a persistent room (created through the admin API), as the hub enforces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoomSettings {
    /// Most participants at once (replaces `max_peers_per_room` for this room).
    pub max_participants: usize,
    /// Chat messages the room keeps; 0: its chat is not stored and stays peer-to-peer.
    pub chat_history: usize,
}

/// A stored chat message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Unique and increasing in commit order (never reused).
    pub id: i64,
    /// When the server received it, Unix milliseconds.
    pub at: i64,
    /// The sender's peer id at the time.
    pub from: String,
    /// The sender's display name at the time.
    pub name: String,
    /// The text.
    pub text: String,
}

/// A peer as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// Peer id.
    pub id: PeerId,
    /// Display name.
    pub name: String,
}

/// Why a peer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It sent `leave` or closed its connection cleanly.
    Left,
    /// Its connection was lost and the resume grace ran out.
    Timeout,
    /// An administrator removed it.
    Kicked,
}

/// A relayed `signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalFrom {
    /// The sender's peer id.
    pub from: PeerId,
    /// What it sent.
    #[serde(flatten)]
    pub payload: SignalPayload,
}

/// The limits announced in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest accepted frame.
    pub max_frame_bytes: usize,
    /// Most peers in one room.
    pub max_peers_per_room: usize,
    /// Sustained message rate per connection.
    pub messages_per_second: u32,
    /// Burst size of the message rate.
    pub message_burst: u32,
    /// How long a dropped peer may resume.
    pub resume_grace_secs: u64,
    /// Longest `chat` text, in characters.
    pub max_chat_chars: usize,
    /// Sustained `chat` messages per second per connection.
    pub chat_per_second: u32,
    /// Burst size of the chat rate.
    pub chat_burst: u32,
    /// Silence after which a connection is closed.
    pub idle_timeout_secs: u64,
}

/// The stable error codes of `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not a JSON object, or a field is missing or of the wrong type.
    BadJson,
    /// `type` is not a known message type.
    UnknownType,
    /// A binary frame; v1 is text only.
    BinaryUnsupported,
    /// `join.v` is not 1.
    UnsupportedVersion,
    /// The room name breaks the naming rule.
    BadRoomName,
    /// The display name breaks the naming rule.
    BadDisplayName,
    /// `join` on a connection already in a room.
    AlreadyJoined,
    /// `signal` or `leave` before `join`.
    NotJoined,
    /// The room is at its peer limit.
    RoomFull,
    /// Resume credentials unknown or expired.
    ResumeFailed,
    /// `signal.to` is not another peer in the room.
    UnknownPeer,
    /// A `signal` with neither or both payloads, or a bad description type.
    BadSignal,
    /// Over the message rate; the message was dropped.
    RateLimited,
    /// The server is at its connection limit.
    ServerBusy,
    /// `join` without a valid token (missing, malformed, bad signature, unknown key, expired or
    /// not yet valid) where the server requires one; the connection is closed with 4401.
    Unauthorized,
    /// A valid token that does not allow this: another room, or a missing grant. On `join` the
    /// connection is closed with 4403; on `sfu` only the offer is refused.
    Forbidden,
    /// An administrator removed this peer from its room; the connection is closed with 4003.
    Kicked,
    /// An administrator closed the room; the connection is closed with 4004.
    RoomClosed,
    /// `chat` in a room that keeps no chat on the server.
    ChatUnavailable,
    /// `chat` text empty or over `max_chat_chars`.
    BadChat,
    /// The chat message could not be stored, so it was not sent.
    ChatFailed,
}

/// Why a client frame was refused: the error code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The code sent back.
    pub code: ErrorCode,
    /// The message sent back.
    pub message: String,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
        }
    }
}

const CLIENT_TYPES: [&str; 6] = ["join", "signal", "sfu", "leave", "ping", "chat"];

/// Parses one text frame from a client and checks the shape of a `signal`.
pub fn parse_client_frame(text: &str) -> Result<ClientMessage, FrameError> {
    let message = match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => message,
        Err(err) => return Err(classify_parse_error(text, &err)),
    };
    if let ClientMessage::Signal(signal) = &message {
        check_signal_payload(&signal.payload)?;
    }
    if let ClientMessage::Sfu(offer) = &message
        && (offer.description.kind != "offer" || offer.description.sdp.is_empty())
    {
        return Err(FrameError::new(
            ErrorCode::BadSignal,
            "sfu carries an offer with a non-empty sdp",
        ));
    }
    Ok(message)
}

/// Tells `unknown_type` from `bad_json` after a failed parse.
fn classify_parse_error(text: &str, err: &serde_json::Error) -> FrameError {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(Envelope { kind: Some(kind) }) if !CLIENT_TYPES.contains(&kind.as_ref()) => {
            let shown: String = kind.chars().take(32).collect();
            FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {shown:?}"),
            )
        }
        Ok(Envelope { kind: None }) => {
            FrameError::new(ErrorCode::BadJson, "the message has no \"type\" field")
        }
        _ => FrameError::new(ErrorCode::BadJson, format!("malformed message: {err}")),
    }
}

fn check_signal_payload(payload: &SignalPayload) -> Result<(), FrameError> {
    match (&payload.description, &payload.candidate, &payload.app) {
        (None, None, Some(app)) if app.is_object() => Ok(()),
        (None, None, Some(_)) => Err(FrameError::new(
            ErrorCode::BadSignal,
            "app must be a JSON object",
        )),
        (Some(description), None, None) => match description.kind.as_str() {
            "offer" | "answer" | "pranswer" if !description.sdp.is_empty() => Ok(()),
            "rollback" => Ok(()),
            "offer" | "answer" | "pranswer" => Err(FrameError::new(
                ErrorCode::BadSignal,
                "the description has an empty sdp",
            )),
            _ => Err(FrameError::new(
                ErrorCode::BadSignal,
                "description.type must be offer, answer, pranswer or rollback",
            )),
        },
        (None, Some(_), None) => Ok(()),
        _ => Err(FrameError::new(
            ErrorCode::BadSignal,
            "a signal carries exactly one of description, candidate and app",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_payloads_are_objects_relayed_as_they_are() {
        let app = parse_client_frame(r#"{"type":"signal","to":"x","app":{"pake":"QUJD"}}"#);
        match app {
            Ok(ClientMessage::Signal(s)) => {
                assert_eq!(s.payload.app, Some(serde_json::json!({"pake": "QUJD"})));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"type":"signal","to":"x","app":"text"}"#,
            r#"{"type":"signal","to":"x","app":{},"candidate":null}"#,
        ] {
            assert_eq!(
                parse_client_frame(bad).map_err(|e| e.code),
                Err(ErrorCode::BadSignal),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_every_client_message() {
        let join = parse_client_frame(r#"{"type":"join","room":"r","name":"Ada","extra":1}"#);
        assert!(matches!(join, Ok(ClientMessage::Join(Join { v: 1, .. }))));
        assert_eq!(
            parse_client_frame(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"ping","id":7}"#),
            Ok(ClientMessage::Ping { id: Some(7) })
        );
        let offer = parse_client_frame(
            r#"{"type":"signal","to":"00000000000000aa","description":{"type":"offer","sdp":"v=0"}}"#,
        );
        assert!(matches!(offer, Ok(ClientMessage::Signal(_))));
        let end = parse_client_frame(r#"{"type":"signal","to":"x","candidate":null}"#);
        match end {
            Ok(ClientMessage::Signal(s)) => assert_eq!(s.payload.candidate, Some(None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classifies_errors() {
        let code = |text: &str| parse_client_frame(text).map_err(|e| e.code).err();
        assert_eq!(code("not json"), Some(ErrorCode::BadJson));
        assert_eq!(code("[1,2]"), Some(ErrorCode::BadJson));
        assert_eq!(code(r#"{"room":"r"}"#), Some(ErrorCode::BadJson));
        assert_eq!(code(r#"{"type":"dance"}"#), Some(ErrorCode::UnknownType));
        assert_eq!(
            code(r#"{"type":"join","room":5}"#),
            Some(ErrorCode::BadJson)
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"x"}"#),
            Some(ErrorCode::BadSignal)
        );
        assert_eq!(
            code(
                r#"{"type":"signal","to":"x","description":{"type":"offer","sdp":"v"},"candidate":null}"#
            ),
            Some(ErrorCode::BadSignal)
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"x","description":{"type":"bogus","sdp":"v"}}"#),
            Some(ErrorCode::BadSignal)
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"x","description":{"type":"answer","sdp":""}}"#),
            Some(ErrorCode::BadSignal)
        );
    }

    #[test]
    fn server_messages_match_the_documented_shape() {
        let relayed = ServerMessage::Signal(SignalFrom {
            from: PeerId(0xab),
            payload: SignalPayload {
                description: None,
                candidate: Some(None),
                app: None,
            },
        });
        assert_eq!(
            relayed.to_json(),
            r#"{"type":"signal","from":"00000000000000ab","candidate":null}"#
        );
        let left = ServerMessage::PeerLeft {
            peer: PeerId(1),
            reason: LeaveReason::Timeout,
        };
        assert_eq!(
            left.to_json(),
            r#"{"type":"peer_left","peer":"0000000000000001","reason":"timeout"}"#
        );
        let error = ServerMessage::error(ErrorCode::RoomFull, "full");
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
    }

    #[test]
    fn peer_ids_round_trip() {
        let id = PeerId(0x0123_4567_89ab_cdef);
        assert_eq!(PeerId::parse(&id.to_string()), Some(id));
        assert_eq!(PeerId::parse("0123456789ABCDEF"), None);
        assert_eq!(PeerId::parse("+123456789abcdef"), None);
        assert_eq!(PeerId::parse("123"), None);
    }

    #[test]
    fn fuzz_body_accepts_garbage() {
        for input in [
            &b"{\"type\":\"signal\",\"to\":\"a\",\"candidate\":{\"candidate\":\"\"}}"[..],
            b"\xff\xfe",
            b"{\"type\":\"join\",\"room\":\"\\u0000\",\"name\":\"\"}",
            b"{",
        ] {
            crate::fuzz_client_frame(input);
        }
    }
}
