//! The STUN (RFC 8489) and TURN (RFC 8656) wire format, without I/O.
//!
//! - [`Message::parse`] checks a datagram's header and attribute layout and gives a borrowed
//!   view; typed accessors ([`Message::xor_address`], [`Message::error_code`], ...) decode single
//!   attributes on demand. [`Message::verify_integrity`] and [`Message::verify_fingerprint`]
//!   check MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
//! - [`MessageWriter`] encodes a message into the caller's buffer, adding integrity and
//!   fingerprint last.
//! - [`ChannelData`] is TURN's 4-byte-header framing for channel traffic.
//! - [`classify`] tells STUN from ChannelData from anything else by the first byte
//!   (RFC 7983 demultiplexing).
//!
//! What this crate is not: a STUN client or a TURN server. State (transactions, allocations,
//! nonces) lives in the `turn` crate; sockets in the glue.

mod attributes;
mod channel_data;
mod credentials;
mod message;
mod writer;

pub use attributes::{AttributeType, ErrorCode, PasswordAlgorithm, addr_family};
pub use channel_data::{ChannelData, ChannelDataError, MAX_CHANNEL, MIN_CHANNEL};
pub use credentials::{long_term_key_md5, long_term_key_sha256, userhash};
pub use message::{Class, Integrity, Message, MessageType, Method, ParseError, TransactionId};
pub use writer::MessageWriter;

/// The magic cookie in every RFC 5389+ header (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// STUN header length (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;
/// XORed into the CRC-32 of FINGERPRINT (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// What a datagram or stream frame is, by its first byte (RFC 7983, RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// First two bits 00: a STUN message.
    Stun,
    /// 0x40–0x7F: TURN ChannelData (channel numbers 0x4000–0x7FFF).
    ChannelData,
    /// Anything else (DTLS, RTP, garbage, reserved channel ranges).
    Other,
}

/// Classifies a packet by its first byte.
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first() {
        Some(0x00..=0x03) => PacketKind::Stun,
        Some(0x40..=0x7f) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// Bodies of the fuzz targets, kept here so ordinary builds compile them.
pub mod fuzz {
    use super::*;

    /// Any bytes as a STUN message: no panic; a parsed message re-encodes to the same
    /// attributes, and integrity/fingerprint checks run without panicking.
    pub fn message(data: &[u8]) {
        let Ok(message) = Message::parse(data) else {
            return;
        };
        let _ = message.verify_fingerprint();
        let _ = message.verify_integrity(b"key");
        let _ = message.xor_address(AttributeType::XOR_MAPPED_ADDRESS);
        let _ = message.xor_address(AttributeType::XOR_PEER_ADDRESS);
        let _ = message.error_code();
        let _ = message.unknown_attributes().map(|i| i.count());
        let _ = message.password_algorithms().map(|i| i.count());
        let mut buf = Vec::new();
        let mut writer =
            MessageWriter::new(&mut buf, message.message_type(), message.transaction_id());
        for (kind, value) in message.attributes() {
            writer.attribute(kind, value);
        }
        writer.finish();
        let again = Message::parse(&buf).expect("a re-encoded message parses");
        assert!(
            again.attributes().eq(message.attributes()),
            "attributes round-trip"
        );
    }

    /// Any bytes as ChannelData: no panic; a parsed frame re-encodes to the same frame.
    pub fn channel_data(data: &[u8]) {
        let Ok(frame) = ChannelData::parse(data) else {
            return;
        };
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        let again = ChannelData::parse(&buf).expect("a re-encoded frame parses");
        assert_eq!(frame, again);
    }
}
