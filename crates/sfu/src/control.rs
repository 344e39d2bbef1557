//! The control channel: JSON messages between a room member's browser and the SFU over the
//! data channel the browser opens in its first offer (label `sfu`). Documented in `docs/sfu.md`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Longest chat line relayed, in characters.
pub(crate) const MAX_CHAT_CHARS: usize = 2000;
/// Largest control message accepted, in bytes.
pub(crate) const MAX_CONTROL_BYTES: usize = 256 * 1024;

/// Browser → SFU.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientMessage {
    /// The answer to our last offer.
    Answer { sdp: String },
    /// A new offer from the browser (ICE restart, a new transceiver).
    Offer { sdp: String },
    /// What each of the browser's sending m-lines carries: `audio`, `camera` or `screen`.
    Sources { sources: HashMap<String, Source> },
    /// The size each received video is shown at, in device pixels, keyed by our mid;
    /// width 0 means not shown.
    View { tracks: HashMap<String, ViewSize> },
    /// A chat line for everyone in the room.
    Chat { text: String },
    /// Whether the member's microphone and camera are on.
    State {
        #[serde(default = "yes")]
        audio: bool,
        #[serde(default = "yes")]
        video: bool,
    },
}

fn yes() -> bool {
    true
}

/// Rendered size of one video.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct ViewSize {
    pub(crate) width: u32,
    pub(crate) height: u32,
}

/// What a published track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A microphone (or any audio).
    Audio,
    /// A camera (or the first video).
    Camera,
    /// A shared screen or window.
    Screen,
}

/// SFU → browser.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage<'a> {
    /// A new offer; `tracks` says whose media each new or current m-line carries.
    Offer { sdp: String, tracks: Vec<TrackInfo> },
    /// The answer to the browser's offer.
    Answer { sdp: String },
    /// A chat line from someone in the room.
    Chat { from: &'a str, text: &'a str },
    /// Another member's microphone/camera state.
    State {
        from: &'a str,
        audio: bool,
        video: bool,
    },
    /// Who is speaking now (`null`: nobody).
    Speaker { peer: Option<&'a str> },
}

/// Whose media one of our m-lines carries.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TrackInfo {
    pub(crate) mid: String,
    /// The publisher's label (its signaling peer id, or `whip-N`).
    pub(crate) peer: String,
    pub(crate) kind: &'static str,
    pub(crate) source: Source,
}

impl ServerMessage<'_> {
    pub(crate) fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Keeps at most [`MAX_CHAT_CHARS`] characters of a chat line.
pub(crate) fn clip_chat(text: &str) -> &str {
    match text.char_indices().nth(MAX_CHAT_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_browser_messages() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"view","tracks":{"3":{"width":160,"height":90}}}"#)
                .expect("view");
        assert!(matches!(m, ClientMessage::View { tracks } if tracks["3"].width == 160));
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"sources","sources":{"0":"audio","1":"camera","2":"screen"}}"#,
        )
        .expect("sources");
        assert!(matches!(m, ClientMessage::Sources { sources } if sources["2"] == Source::Screen));
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"state","audio":false}"#).expect("state");
        assert!(matches!(
            m,
            ClientMessage::State {
                audio: false,
                video: true
            }
        ));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"chat"}"#).is_err());
    }

    #[test]
    fn chat_is_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_CHAT_CHARS + 10);
        assert_eq!(clip_chat(&long).chars().count(), MAX_CHAT_CHARS);
        assert_eq!(clip_chat("hi"), "hi");
    }

    #[test]
    fn server_messages_serialize_with_their_type() {
        let json = ServerMessage::Speaker { peer: Some("abc") }.to_json();
        assert_eq!(json, r#"{"type":"speaker","peer":"abc"}"#);
        let json = ServerMessage::Speaker { peer: None }.to_json();
        assert_eq!(json, r#"{"type":"speaker","peer":null}"#);
    }
}
