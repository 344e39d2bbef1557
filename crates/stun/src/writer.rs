//! Encoding a STUN message into the caller's buffer.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::attributes::{self, AttributeType, ErrorCode, PasswordAlgorithm};
use crate::message::{MessageType, TransactionId};
use crate::{FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE};

/// Appends one STUN message to a buffer: header first, then attributes in call order, then
/// optionally MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT, which must come last.
///
/// The header's length field is kept current after every call, so the buffer always holds a
/// valid message from `start`.
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    tid: TransactionId,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message at the end of `buf`.
    pub fn new(buf: &'b mut Vec<u8>, message_type: MessageType, tid: TransactionId) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&message_type.to_u16().to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageWriter { buf, start, tid }
    }

    /// Adds an attribute with a raw value (padded with zeros).
    ///
    /// # Panics
    /// If the message would exceed 65,535 bytes of attributes: a caller bug, since every
    /// value we write is bounded far below that.
    pub fn attribute(&mut self, kind: AttributeType, value: &[u8]) -> &mut Self {
        let len = u16::try_from(value.len()).expect("attribute values are under 64 KiB");
        self.buf.extend_from_slice(&kind.0.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self.update_length();
        self
    }

    /// Adds an attribute whose value is written by `write` (then padded).
    pub fn attribute_with(
        &mut self,
        kind: AttributeType,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> &mut Self {
        let header = self.buf.len();
        self.buf.extend_from_slice(&kind.0.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        write(self.buf);
        let len =
            u16::try_from(self.buf.len() - header - 4).expect("attribute values are under 64 KiB");
        self.buf[header + 2..header + 4].copy_from_slice(&len.to_be_bytes());
        self.pad();
        self.update_length();
        self
    }

    /// An XOR-*-ADDRESS attribute.
    pub fn xor_address(&mut self, kind: AttributeType, addr: SocketAddr) -> &mut Self {
        let tid = self.tid;
        self.attribute_with(kind, |out| attributes::encode_xor_address(out, addr, &tid))
    }

    /// ERROR-CODE.
    pub fn error_code(&mut self, error: ErrorCode<'_>) -> &mut Self {
        self.attribute_with(AttributeType::ERROR_CODE, |out| {
            attributes::encode_error_code(out, error)
        })
    }

    /// UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(
        &mut self,
        kinds: impl IntoIterator<Item = AttributeType>,
    ) -> &mut Self {
        self.attribute_with(AttributeType::UNKNOWN_ATTRIBUTES, |out| {
            for kind in kinds {
                out.extend_from_slice(&kind.0.to_be_bytes());
            }
        })
    }

    /// A 32-bit attribute (LIFETIME, PRIORITY).
    pub fn u32(&mut self, kind: AttributeType, value: u32) -> &mut Self {
        self.attribute(kind, &value.to_be_bytes())
    }

    /// A 64-bit attribute (ICE-CONTROLLING, ICE-CONTROLLED, RESERVATION-TOKEN).
    pub fn u64(&mut self, kind: AttributeType, value: u64) -> &mut Self {
        self.attribute(kind, &value.to_be_bytes())
    }

    /// A 4-byte attribute with one meaningful first byte (REQUESTED-TRANSPORT,
    /// REQUESTED-ADDRESS-FAMILY).
    pub fn first_byte(&mut self, kind: AttributeType, value: u8) -> &mut Self {
        self.attribute(kind, &[value, 0, 0, 0])
    }

    /// CHANNEL-NUMBER.
    pub fn channel_number(&mut self, channel: u16) -> &mut Self {
        let [hi, lo] = channel.to_be_bytes();
        self.attribute(AttributeType::CHANNEL_NUMBER, &[hi, lo, 0, 0])
    }

    /// PASSWORD-ALGORITHMS listing `algorithms` without parameters.
    pub fn password_algorithms(&mut self, algorithms: &[PasswordAlgorithm]) -> &mut Self {
        self.attribute_with(AttributeType::PASSWORD_ALGORITHMS, |out| {
            for alg in algorithms {
                out.extend_from_slice(&alg.0.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        })
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1) over everything so far (RFC 8489 §14.5).
    pub fn message_integrity(&mut self, key: &[u8]) -> &mut Self {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        self.integrity_attribute(AttributeType::MESSAGE_INTEGRITY, 20, &mut mac);
        let tag = mac.finalize().into_bytes();
        self.attribute(AttributeType::MESSAGE_INTEGRITY, &tag)
    }

    /// MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, 32 bytes) over everything so far (RFC 8489 §14.6).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        self.integrity_attribute(AttributeType::MESSAGE_INTEGRITY_SHA256, 32, &mut mac);
        let tag = mac.finalize().into_bytes();
        self.attribute(AttributeType::MESSAGE_INTEGRITY_SHA256, &tag)
    }

    /// FINGERPRINT over everything so far (RFC 8489 §14.7). Add it last.
    pub fn fingerprint(&mut self) -> &mut Self {
        let length = self.body_len() + 8;
        self.set_length(length);
        let crc = crc32fast::hash(&self.buf[self.start..]) ^ FINGERPRINT_XOR;
        self.attribute(AttributeType::FINGERPRINT, &crc.to_be_bytes())
    }

    /// Ends the message; returns its length in bytes.
    pub fn finish(self) -> usize {
        self.buf.len() - self.start
    }

    /// Feeds the HMAC with the message as it will be once the integrity attribute is added.
    fn integrity_attribute(&mut self, _kind: AttributeType, tag_len: usize, mac: &mut impl Mac) {
        let length = self.body_len() + 4 + tag_len;
        self.set_length(length);
        mac.update(&self.buf[self.start..]);
    }

    fn body_len(&self) -> usize {
        self.buf.len() - self.start - HEADER_LEN
    }

    fn set_length(&mut self, length: usize) {
        let length = u16::try_from(length).expect("STUN messages are under 64 KiB");
        self.buf[self.start + 2..self.start + 4].copy_from_slice(&length.to_be_bytes());
    }

    fn update_length(&mut self) {
        self.set_length(self.body_len());
    }

    fn pad(&mut self) {
        let padding = (4 - (self.buf.len() - self.start) % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0, padding));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Class, Integrity, Message, Method};

    #[test]
    fn writes_what_the_parser_reads() {
        let tid = TransactionId([3; 12]);
        let mut buf = vec![0xee]; // the writer appends; earlier bytes stay
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::ErrorResponse),
            tid,
        );
        w.error_code(ErrorCode::STALE_NONCE)
            .attribute(AttributeType::REALM, b"example.org")
            .attribute(AttributeType::NONCE, b"abc")
            .xor_address(
                AttributeType::XOR_MAPPED_ADDRESS,
                "[2001:db8::7]:9".parse().expect("addr"),
            )
            .u32(AttributeType::LIFETIME, 600)
            .channel_number(0x4001)
            .message_integrity(b"key")
            .message_integrity_sha256(b"key")
            .fingerprint();
        let len = w.finish();
        assert_eq!(len, buf.len() - 1);
        let m = Message::parse(&buf[1..]).expect("parses");
        assert_eq!(m.class(), Class::ErrorResponse);
        assert_eq!(m.method(), Method::ALLOCATE);
        assert_eq!(m.error_code(), Some(ErrorCode::STALE_NONCE));
        assert_eq!(m.text(AttributeType::REALM), Some("example.org"));
        assert_eq!(m.text(AttributeType::NONCE), Some("abc"));
        assert_eq!(m.u32(AttributeType::LIFETIME), Some(600));
        assert_eq!(m.channel_number(), Some(0x4001));
        assert_eq!(
            m.xor_address(AttributeType::XOR_MAPPED_ADDRESS),
            Some("[2001:db8::7]:9".parse().expect("addr"))
        );
        assert_eq!(m.integrity(), Integrity::Sha256);
        assert!(m.verify_integrity(b"key"));
        assert!(!m.verify_integrity(b"other"));
        assert_eq!(m.verify_fingerprint(), Some(true));
    }

    #[test]
    fn tampering_breaks_integrity_and_fingerprint() {
        let tid = TransactionId([1; 12]);
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::BINDING, Class::Request),
            tid,
        );
        w.attribute(AttributeType::USERNAME, b"alice")
            .message_integrity(b"pw")
            .fingerprint();
        w.finish();
        let mut tampered = buf.clone();
        tampered[25] ^= 1; // inside USERNAME
        let m = Message::parse(&tampered).expect("still well-formed");
        assert!(!m.verify_integrity(b"pw"));
        assert_eq!(m.verify_fingerprint(), Some(false));
        let m = Message::parse(&buf).expect("parses");
        assert!(m.verify_integrity(b"pw"));
    }
}
