//! Attribute types and the decoding of structured attribute values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::MAGIC_COOKIE;
use crate::message::TransactionId;

/// An attribute type code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeType(pub u16);

impl AttributeType {
    /// 0x0001 (RFC 8489 §14.1)
    pub const MAPPED_ADDRESS: Self = Self(0x0001);
    /// 0x0006 (RFC 8489 §14.3)
    pub const USERNAME: Self = Self(0x0006);
    /// 0x0008 (RFC 8489 §14.5)
    pub const MESSAGE_INTEGRITY: Self = Self(0x0008);
    /// 0x0009 (RFC 8489 §14.8)
    pub const ERROR_CODE: Self = Self(0x0009);
    /// 0x000A (RFC 8489 §14.9)
    pub const UNKNOWN_ATTRIBUTES: Self = Self(0x000a);
    /// 0x000C (RFC 8656 §18.1)
    pub const CHANNEL_NUMBER: Self = Self(0x000c);
    /// 0x000D (RFC 8656 §18.2)
    pub const LIFETIME: Self = Self(0x000d);
    /// 0x0012 (RFC 8656 §18.3)
    pub const XOR_PEER_ADDRESS: Self = Self(0x0012);
    /// 0x0013 (RFC 8656 §18.4)
    pub const DATA: Self = Self(0x0013);
    /// 0x0014 (RFC 8489 §14.9)
    pub const REALM: Self = Self(0x0014);
    /// 0x0015 (RFC 8489 §14.10)
    pub const NONCE: Self = Self(0x0015);
    /// 0x0016 (RFC 8656 §18.5)
    pub const XOR_RELAYED_ADDRESS: Self = Self(0x0016);
    /// 0x0017 (RFC 8656 §18.7)
    pub const REQUESTED_ADDRESS_FAMILY: Self = Self(0x0017);
    /// 0x0018 (RFC 8656 §18.6)
    pub const EVEN_PORT: Self = Self(0x0018);
    /// 0x0019 (RFC 8656 §18.8)
    pub const REQUESTED_TRANSPORT: Self = Self(0x0019);
    /// 0x001A (RFC 8656 §18.9)
    pub const DONT_FRAGMENT: Self = Self(0x001a);
    /// 0x001C (RFC 8489 §14.6)
    pub const MESSAGE_INTEGRITY_SHA256: Self = Self(0x001c);
    /// 0x001D (RFC 8489 §14.12)
    pub const PASSWORD_ALGORITHM: Self = Self(0x001d);
    /// 0x001E (RFC 8489 §14.4)
    pub const USERHASH: Self = Self(0x001e);
    /// 0x0020 (RFC 8489 §14.2)
    pub const XOR_MAPPED_ADDRESS: Self = Self(0x0020);
    /// 0x0022 (RFC 8656 §18.10)
    pub const RESERVATION_TOKEN: Self = Self(0x0022);
    /// 0x0024 (RFC 8445 §16.1)
    pub const PRIORITY: Self = Self(0x0024);
    /// 0x0025 (RFC 8445 §16.1)
    pub const USE_CANDIDATE: Self = Self(0x0025);
    /// 0x002A (RFC 6062 §6.2)
    pub const CONNECTION_ID: Self = Self(0x002a);
    /// 0x8000 (RFC 8656 §18.11)
    pub const ADDITIONAL_ADDRESS_FAMILY: Self = Self(0x8000);
    /// 0x8001 (RFC 8656 §18.12)
    pub const ADDRESS_ERROR_CODE: Self = Self(0x8001);
    /// 0x8002 (RFC 8489 §14.11)
    pub const PASSWORD_ALGORITHMS: Self = Self(0x8002);
    /// 0x8003 (RFC 8489 §14.16)
    pub const ALTERNATE_DOMAIN: Self = Self(0x8003);
    /// 0x8004 (RFC 8656 §18.13)
    pub const ICMP: Self = Self(0x8004);
    /// 0x8022 (RFC 8489 §14.14)
    pub const SOFTWARE: Self = Self(0x8022);
    /// 0x8023 (RFC 8489 §14.15)
    pub const ALTERNATE_SERVER: Self = Self(0x8023);
    /// 0x8028 (RFC 8489 §14.7)
    pub const FINGERPRINT: Self = Self(0x8028);
    /// 0x8029 (RFC 8445 §16.1)
    pub const ICE_CONTROLLED: Self = Self(0x8029);
    /// 0x802A (RFC 8445 §16.1)
    pub const ICE_CONTROLLING: Self = Self(0x802a);

    /// Types 0x0000–0x7FFF must be understood (RFC 8489 §14).
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

impl fmt::Debug for AttributeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttributeType({:#06x})", self.0)
    }
}

/// Address family bytes of the address attributes (RFC 8489 §14.1) and REQUESTED-ADDRESS-FAMILY
/// (RFC 8656 §18.7).
pub mod addr_family {
    /// IPv4.
    pub const IPV4: u8 = 0x01;
    /// IPv6.
    pub const IPV6: u8 = 0x02;
}

/// ERROR-CODE: a code from 300 to 699 and a reason phrase (RFC 8489 §14.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The number, e.g. 401.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

impl ErrorCode<'static> {
    /// 300 Try Alternate
    pub const TRY_ALTERNATE: Self = Self::new(300, "Try Alternate");
    /// 400 Bad Request
    pub const BAD_REQUEST: Self = Self::new(400, "Bad Request");
    /// 401 Unauthenticated
    pub const UNAUTHENTICATED: Self = Self::new(401, "Unauthenticated");
    /// 403 Forbidden
    pub const FORBIDDEN: Self = Self::new(403, "Forbidden");
    /// 420 Unknown Attribute
    pub const UNKNOWN_ATTRIBUTE: Self = Self::new(420, "Unknown Attribute");
    /// 437 Allocation Mismatch
    pub const ALLOCATION_MISMATCH: Self = Self::new(437, "Allocation Mismatch");
    /// 438 Stale Nonce
    pub const STALE_NONCE: Self = Self::new(438, "Stale Nonce");
    /// 440 Address Family not Supported
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: Self = Self::new(440, "Address Family not Supported");
    /// 441 Wrong Credentials
    pub const WRONG_CREDENTIALS: Self = Self::new(441, "Wrong Credentials");
    /// 442 Unsupported Transport Protocol
    pub const UNSUPPORTED_TRANSPORT: Self = Self::new(442, "Unsupported Transport Protocol");
    /// 443 Peer Address Family Mismatch
    pub const PEER_ADDRESS_FAMILY_MISMATCH: Self = Self::new(443, "Peer Address Family Mismatch");
    /// 486 Allocation Quota Reached
    pub const ALLOCATION_QUOTA_REACHED: Self = Self::new(486, "Allocation Quota Reached");
    /// 487 Role Conflict
    pub const ROLE_CONFLICT: Self = Self::new(487, "Role Conflict");
    /// 500 Server Error
    pub const SERVER_ERROR: Self = Self::new(500, "Server Error");
    /// 508 Insufficient Capacity
    pub const INSUFFICIENT_CAPACITY: Self = Self::new(508, "Insufficient Capacity");
}

impl<'a> ErrorCode<'a> {
    /// An error code with a reason phrase.
    pub const fn new(code: u16, reason: &'a str) -> Self {
        ErrorCode { code, reason }
    }
}

/// A PASSWORD-ALGORITHM entry (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithm(pub u16);

impl PasswordAlgorithm {
    /// 0x0001
    pub const MD5: Self = Self(0x0001);
    /// 0x0002
    pub const SHA256: Self = Self(0x0002);
}

pub(crate) fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (value[1], value.len()) {
        (addr_family::IPV4, 8) => {
            let raw = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC_COOKIE;
            IpAddr::V4(Ipv4Addr::from(raw))
        }
        (addr_family::IPV6, 20) => {
            let mut raw = [0u8; 16];
            let mask = xor_mask(tid);
            for (i, byte) in raw.iter_mut().enumerate() {
                *byte = value[4 + i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(raw))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

pub(crate) fn encode_xor_address(out: &mut Vec<u8>, addr: SocketAddr, tid: &TransactionId) {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&[0, addr_family::IPV4]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&[0, addr_family::IPV6]);
            out.extend_from_slice(&port.to_be_bytes());
            let mask = xor_mask(tid);
            out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
}

/// The IPv6 XOR mask: magic cookie then transaction id (RFC 8489 §14.2).
fn xor_mask(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&tid.0);
    mask
}

pub(crate) fn decode_error_code(value: &[u8]) -> Option<ErrorCode<'_>> {
    if value.len() < 4 {
        return None;
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return None;
    }
    let reason = std::str::from_utf8(&value[4..]).ok()?;
    Some(ErrorCode {
        code: class * 100 + number,
        reason,
    })
}

pub(crate) fn encode_error_code(out: &mut Vec<u8>, error: ErrorCode<'_>) {
    out.extend_from_slice(&[
        0,
        0,
        (error.code / 100) as u8 & 0x07,
        (error.code % 100) as u8,
    ]);
    // The reason phrase is at most 128 characters (RFC 8489 §14.8).
    let mut end = error.reason.len().min(509);
    while !error.reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&error.reason.as_bytes()[..end]);
}

pub(crate) fn decode_password_algorithms(
    value: &[u8],
) -> Option<impl Iterator<Item = PasswordAlgorithm> + '_> {
    // Validate the whole list first so a malformed one is `None`, not a short iterator.
    let mut offset = 0;
    while offset < value.len() {
        let header = value.get(offset..offset + 4)?;
        let params = usize::from(u16::from_be_bytes([header[2], header[3]]));
        offset += 4 + params.div_ceil(4) * 4;
    }
    if offset != value.len() {
        return None;
    }
    let mut offset = 0;
    Some(std::iter::from_fn(move || {
        let header = value.get(offset..offset + 4)?;
        let params = usize::from(u16::from_be_bytes([header[2], header[3]]));
        offset += 4 + params.div_ceil(4) * 4;
        Some(PasswordAlgorithm(u16::from_be_bytes([
            header[0], header[1],
        ])))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_addresses_round_trip() {
        let tid = TransactionId([9; 12]);
        for addr in [
            "192.0.2.1:32853",
            "[2001:db8::1]:3478",
            "0.0.0.0:0",
            "[::ffff:127.0.0.1]:1",
        ] {
            let addr: SocketAddr = addr.parse().expect("valid");
            let mut out = Vec::new();
            encode_xor_address(&mut out, addr, &tid);
            assert_eq!(decode_xor_address(&out, &tid), Some(addr));
        }
        assert_eq!(decode_xor_address(&[0, 1, 0, 0, 0, 0, 0], &tid), None);
        assert_eq!(decode_xor_address(&[0, 3, 0, 0, 0, 0, 0, 0], &tid), None);
        assert_eq!(decode_xor_address(&[0, 2, 0, 0, 0, 0, 0, 0], &tid), None);
    }

    #[test]
    fn error_codes_round_trip_and_reject_bad_classes() {
        let mut out = Vec::new();
        encode_error_code(&mut out, ErrorCode::STALE_NONCE);
        assert_eq!(&out[..4], &[0, 0, 4, 38]);
        assert_eq!(decode_error_code(&out), Some(ErrorCode::STALE_NONCE));
        assert_eq!(decode_error_code(&[0, 0, 2, 0]), None);
        assert_eq!(decode_error_code(&[0, 0, 4, 100]), None);
        assert_eq!(decode_error_code(&[0, 0, 4]), None);
    }

    #[test]
    fn password_algorithms() {
        let value = [0, 2, 0, 0, 0, 1, 0, 0];
        let algs: Vec<_> = decode_password_algorithms(&value).expect("valid").collect();
        assert_eq!(
            algs,
            vec![PasswordAlgorithm::SHA256, PasswordAlgorithm::MD5]
        );
        assert!(decode_password_algorithms(&[0, 2, 0, 4, 0, 0]).is_none());
    }
}
