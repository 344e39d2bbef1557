//! STUN message header and the borrowed message view (RFC 8489 §5, §14).

use std::fmt;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::attributes::{self, AttributeType, ErrorCode, PasswordAlgorithm};
use crate::{FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE};

/// Why bytes are not a STUN message. Malformed input: the caller drops the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer than 20 bytes, or fewer than the header's length field says.
    Truncated,
    /// The first two bits are not zero.
    NotStun,
    /// The magic cookie is wrong (an RFC 3489 client, or not STUN).
    BadMagicCookie,
    /// The length field is not a multiple of 4, or bytes follow the message.
    BadLength,
    /// An attribute runs past the end of the message.
    BadAttribute,
    /// FINGERPRINT is not the last attribute, or integrity appears twice.
    BadAttributeOrder,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "truncated STUN message",
            ParseError::NotStun => "not a STUN message",
            ParseError::BadMagicCookie => "wrong magic cookie",
            ParseError::BadLength => "bad STUN length",
            ParseError::BadAttribute => "attribute overruns the message",
            ParseError::BadAttributeOrder => "attributes after FINGERPRINT or repeated integrity",
        })
    }
}

impl std::error::Error for ParseError {}

/// The 96-bit transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

/// Message class (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 0b00
    Request,
    /// 0b01
    Indication,
    /// 0b10
    SuccessResponse,
    /// 0b11
    ErrorResponse,
}

/// Message method (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// 0x001 (RFC 8489)
    pub const BINDING: Method = Method(0x001);
    /// 0x003 (RFC 8656)
    pub const ALLOCATE: Method = Method(0x003);
    /// 0x004
    pub const REFRESH: Method = Method(0x004);
    /// 0x006
    pub const SEND: Method = Method(0x006);
    /// 0x007
    pub const DATA: Method = Method(0x007);
    /// 0x008
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// 0x009
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// 0x00A (RFC 6062)
    pub const CONNECT: Method = Method(0x00a);
    /// 0x00B (RFC 6062)
    pub const CONNECTION_BIND: Method = Method(0x00b);
    /// 0x00C (RFC 6062)
    pub const CONNECTION_ATTEMPT: Method = Method(0x00c);
}

/// Method and class together, as the 14-bit message type encodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// A type from its parts.
    pub const fn new(method: Method, class: Class) -> Self {
        MessageType { method, class }
    }

    /// The wire value: method bits M0–M11 interleaved with class bits C0, C1 (RFC 8489 §5).
    pub fn to_u16(self) -> u16 {
        let m = self.method.0 & 0x0fff;
        let c = match self.class {
            Class::Request => 0,
            Class::Indication => 1,
            Class::SuccessResponse => 2,
            Class::ErrorResponse => 3,
        };
        (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
    }

    /// Decodes the wire value (the top two bits must already be known to be zero).
    pub fn from_u16(value: u16) -> Self {
        let method = (value & 0x000f) | ((value & 0x00e0) >> 1) | ((value & 0x3e00) >> 2);
        let class = match ((value >> 4) & 1) | ((value >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        };
        MessageType {
            method: Method(method),
            class,
        }
    }
}

/// Which integrity attribute a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// None.
    None,
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256), possibly alongside MESSAGE-INTEGRITY.
    Sha256,
}

/// A parsed STUN message borrowing the datagram.
///
/// Attributes after MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT (RFC 8489 §14.5): [`Message::attributes`] yields only those before it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    bytes: &'a [u8],
    message_type: MessageType,
    transaction_id: TransactionId,
    /// End of the attributes that count (the start of the first integrity or fingerprint).
    covered_end: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    mi_sha1: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header.
    mi_sha256: Option<usize>,
    /// Offset of the FINGERPRINT attribute header.
    fingerprint: Option<usize>,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("type", &self.message_type)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Message<'a> {
    /// Parses one whole message; trailing bytes are an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let raw_type = u16::from_be_bytes([bytes[0], bytes[1]]);
        if raw_type & 0xc000 != 0 {
            return Err(ParseError::NotStun);
        }
        let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        if length % 4 != 0 {
            return Err(ParseError::BadLength);
        }
        if bytes.len() < HEADER_LEN + length {
            return Err(ParseError::Truncated);
        }
        if bytes.len() > HEADER_LEN + length {
            return Err(ParseError::BadLength);
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&bytes[8..20]);

        let mut message = Message {
            bytes,
            message_type: MessageType::from_u16(raw_type),
            transaction_id: TransactionId(transaction_id),
            covered_end: bytes.len(),
            mi_sha1: None,
            mi_sha256: None,
            fingerprint: None,
        };
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            if message.fingerprint.is_some() {
                return Err(ParseError::BadAttributeOrder);
            }
            let (kind, value_len) = attribute_header(bytes, offset)?;
            let padded = value_len.div_ceil(4) * 4;
            if offset + 4 + padded > bytes.len() {
                return Err(ParseError::BadAttribute);
            }
            let integrity_seen = message.mi_sha1.is_some() || message.mi_sha256.is_some();
            match AttributeType(kind) {
                AttributeType::MESSAGE_INTEGRITY => {
                    if value_len != 20 || integrity_seen {
                        return Err(ParseError::BadAttributeOrder);
                    }
                    message.covered_end = message.covered_end.min(offset);
                    message.mi_sha1 = Some(offset);
                }
                AttributeType::MESSAGE_INTEGRITY_SHA256 => {
                    // 16 to 32 bytes, a multiple of 4 (RFC 8489 §14.6); we only produce 32.
                    if !(16..=32).contains(&value_len)
                        || value_len % 4 != 0
                        || message.mi_sha256.is_some()
                    {
                        return Err(ParseError::BadAttributeOrder);
                    }
                    message.covered_end = message.covered_end.min(offset);
                    message.mi_sha256 = Some(offset);
                }
                AttributeType::FINGERPRINT => {
                    if value_len != 4 {
                        return Err(ParseError::BadAttribute);
                    }
                    message.covered_end = message.covered_end.min(offset);
                    message.fingerprint = Some(offset);
                }
                _ => {}
            }
            offset += 4 + padded;
        }
        Ok(message)
    }

    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Method and class.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.message_type.method
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.message_type.class
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// Attributes before any integrity or fingerprint attribute, in order, with values
    /// unpadded.
    pub fn attributes(&self) -> impl Iterator<Item = (AttributeType, &'a [u8])> + 'a {
        let bytes = self.bytes;
        let end = self.covered_end;
        let mut offset = HEADER_LEN;
        std::iter::from_fn(move || {
            if offset >= end {
                return None;
            }
            // Layout was checked by `parse`.
            let (kind, len) = attribute_header(bytes, offset).ok()?;
            let value = bytes.get(offset + 4..offset + 4 + len)?;
            offset += 4 + len.div_ceil(4) * 4;
            Some((AttributeType(kind), value))
        })
    }

    /// The first attribute of this type (before integrity), unpadded.
    pub fn attribute(&self, kind: AttributeType) -> Option<&'a [u8]> {
        self.attributes().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    /// Whether the attribute is present.
    pub fn has(&self, kind: AttributeType) -> bool {
        self.attribute(kind).is_some()
    }

    /// Comprehension-required attributes (0x0000–0x7FFF) not in `known` (RFC 8489 §15: answer
    /// 420 with UNKNOWN-ATTRIBUTES).
    pub fn unknown_required(
        &self,
        known: &'a [AttributeType],
    ) -> impl Iterator<Item = AttributeType> + 'a {
        self.attributes()
            .map(|(k, _)| k)
            .filter(move |k| k.is_comprehension_required() && !known.contains(k))
    }

    /// A text attribute (USERNAME, REALM, NONCE, SOFTWARE) as UTF-8.
    pub fn text(&self, kind: AttributeType) -> Option<&'a str> {
        std::str::from_utf8(self.attribute(kind)?).ok()
    }

    /// An XOR-*-ADDRESS attribute, decoded.
    pub fn xor_address(&self, kind: AttributeType) -> Option<SocketAddr> {
        attributes::decode_xor_address(self.attribute(kind)?, &self.transaction_id)
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_addresses(
        &self,
        kind: AttributeType,
    ) -> impl Iterator<Item = Option<SocketAddr>> + 'a {
        let tid = self.transaction_id;
        self.attributes()
            .filter(move |(k, _)| *k == kind)
            .map(move |(_, v)| attributes::decode_xor_address(v, &tid))
    }

    /// A 32-bit attribute (LIFETIME, PRIORITY).
    pub fn u32(&self, kind: AttributeType) -> Option<u32> {
        let value: [u8; 4] = self.attribute(kind)?.try_into().ok()?;
        Some(u32::from_be_bytes(value))
    }

    /// A 64-bit attribute (ICE-CONTROLLING, ICE-CONTROLLED, RESERVATION-TOKEN).
    pub fn u64(&self, kind: AttributeType) -> Option<u64> {
        let value: [u8; 8] = self.attribute(kind)?.try_into().ok()?;
        Some(u64::from_be_bytes(value))
    }

    /// The first byte of a 4-byte attribute whose other bytes are RFFU (REQUESTED-TRANSPORT,
    /// REQUESTED-ADDRESS-FAMILY).
    pub fn first_byte(&self, kind: AttributeType) -> Option<u8> {
        let value = self.attribute(kind)?;
        (value.len() == 4).then(|| value[0])
    }

    /// CHANNEL-NUMBER (RFC 8656 §18.1).
    pub fn channel_number(&self) -> Option<u16> {
        let value = self.attribute(AttributeType::CHANNEL_NUMBER)?;
        (value.len() == 4).then(|| u16::from_be_bytes([value[0], value[1]]))
    }

    /// EVEN-PORT's R bit (RFC 8656 §18.6).
    pub fn even_port(&self) -> Option<bool> {
        let value = self.attribute(AttributeType::EVEN_PORT)?;
        (value.len() == 1).then(|| value[0] & 0x80 != 0)
    }

    /// ERROR-CODE (RFC 8489 §14.8).
    pub fn error_code(&self) -> Option<ErrorCode<'a>> {
        attributes::decode_error_code(self.attribute(AttributeType::ERROR_CODE)?)
    }

    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
    pub fn unknown_attributes(&self) -> Option<impl Iterator<Item = AttributeType> + 'a> {
        let value = self.attribute(AttributeType::UNKNOWN_ATTRIBUTES)?;
        (value.len() % 2 == 0).then(|| {
            value
                .chunks_exact(2)
                .map(|c| AttributeType(u16::from_be_bytes([c[0], c[1]])))
        })
    }

    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11), `None` if absent or malformed.
    pub fn password_algorithms(&self) -> Option<impl Iterator<Item = PasswordAlgorithm> + 'a> {
        attributes::decode_password_algorithms(self.attribute(AttributeType::PASSWORD_ALGORITHMS)?)
    }

    /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
    pub fn password_algorithm(&self) -> Option<PasswordAlgorithm> {
        attributes::decode_password_algorithms(self.attribute(AttributeType::PASSWORD_ALGORITHM)?)?
            .next()
    }

    /// The strongest integrity attribute present.
    pub fn integrity(&self) -> Integrity {
        match (self.mi_sha256, self.mi_sha1) {
            (Some(_), _) => Integrity::Sha256,
            (None, Some(_)) => Integrity::Sha1,
            (None, None) => Integrity::None,
        }
    }

    /// Checks the strongest integrity attribute with `key` (the short-term password, or a
    /// long-term key), in constant time. `false` when there is none.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        if let Some(offset) = self.mi_sha256 {
            let Some(expected) = attribute_value(self.bytes, offset) else {
                return false;
            };
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
            feed_with_length(&mut mac, self.bytes, offset, 4 + 32);
            let tag = mac.finalize().into_bytes();
            return tag[..expected.len()].ct_eq(expected).into();
        }
        if let Some(offset) = self.mi_sha1 {
            let Some(expected) = attribute_value(self.bytes, offset) else {
                return false;
            };
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
            feed_with_length(&mut mac, self.bytes, offset, 4 + 20);
            return mac
                .finalize()
                .into_bytes()
                .as_slice()
                .ct_eq(expected)
                .into();
        }
        false
    }

    /// Whether FINGERPRINT is present.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// Checks FINGERPRINT; `None` when absent.
    pub fn verify_fingerprint(&self) -> Option<bool> {
        let offset = self.fingerprint?;
        let value: [u8; 4] = attribute_value(self.bytes, offset)?.try_into().ok()?;
        // FINGERPRINT is last, so the length field already covers it.
        let crc = crc32fast::hash(&self.bytes[..offset]) ^ FINGERPRINT_XOR;
        Some(crc == u32::from_be_bytes(value))
    }
}

fn attribute_header(bytes: &[u8], offset: usize) -> Result<(u16, usize), ParseError> {
    let header = bytes
        .get(offset..offset + 4)
        .ok_or(ParseError::BadAttribute)?;
    let kind = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    Ok((kind, len))
}

fn attribute_value(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let (_, len) = attribute_header(bytes, offset).ok()?;
    bytes.get(offset + 4..offset + 4 + len)
}

/// HMAC input: the message up to the integrity attribute, with the header's length field
/// rewritten to end just after that attribute (RFC 8489 §14.5).
fn feed_with_length(mac: &mut impl Mac, bytes: &[u8], offset: usize, attribute_len: usize) {
    let length = (offset - HEADER_LEN + attribute_len) as u16;
    mac.update(&bytes[..2]);
    mac.update(&length.to_be_bytes());
    mac.update(&bytes[4..offset]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips() {
        for method in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::SuccessResponse,
                Class::ErrorResponse,
            ] {
                let t = MessageType::new(Method(method), class);
                assert_eq!(MessageType::from_u16(t.to_u16()), t);
                assert_eq!(t.to_u16() & 0xc000, 0);
            }
        }
        // Known values (RFC 8489 §5, RFC 8656).
        let wire = |m, c| MessageType::new(m, c).to_u16();
        assert_eq!(wire(Method::BINDING, Class::Request), 0x0001);
        assert_eq!(wire(Method::BINDING, Class::SuccessResponse), 0x0101);
        assert_eq!(wire(Method::BINDING, Class::ErrorResponse), 0x0111);
        assert_eq!(wire(Method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(wire(Method::SEND, Class::Indication), 0x0016);
        assert_eq!(wire(Method::DATA, Class::Indication), 0x0017);
        assert_eq!(wire(Method::CHANNEL_BIND, Class::SuccessResponse), 0x0109);
    }

    fn header(length: u16) -> Vec<u8> {
        let mut bytes = vec![0x00, 0x01];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&[7; 12]);
        bytes
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(Message::parse(&[0; 19]), Err(ParseError::Truncated));
        let mut bad_cookie = header(0);
        bad_cookie[4] = 0;
        assert_eq!(Message::parse(&bad_cookie), Err(ParseError::BadMagicCookie));
        let mut not_stun = header(0);
        not_stun[0] = 0x80;
        assert_eq!(Message::parse(&not_stun), Err(ParseError::NotStun));
        assert_eq!(Message::parse(&header(3)), Err(ParseError::BadLength));
        assert_eq!(Message::parse(&header(4)), Err(ParseError::Truncated));
        let mut trailing = header(0);
        trailing.extend_from_slice(&[0; 4]);
        assert_eq!(Message::parse(&trailing), Err(ParseError::BadLength));
        assert!(Message::parse(&header(0)).is_ok());
    }

    #[test]
    fn rejects_overrunning_attributes() {
        let mut bytes = header(8);
        bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x08, b'a', b'b', b'c', b'd']);
        assert_eq!(Message::parse(&bytes), Err(ParseError::BadAttribute));
        let mut bytes = header(4);
        bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x01]);
        assert_eq!(Message::parse(&bytes), Err(ParseError::BadAttribute));
    }

    #[test]
    fn rejects_attributes_after_fingerprint() {
        let mut bytes = header(16);
        bytes.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]);
        bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b'a', b'b', b'c', b'd']);
        assert_eq!(Message::parse(&bytes), Err(ParseError::BadAttributeOrder));
    }
}
