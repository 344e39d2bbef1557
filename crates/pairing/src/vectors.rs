//! Cross-implementation test vectors in `tests/data/vectors.json`, produced by this crate (with
//! the `spake2` crate's own arithmetic) and checked by `tests/e2e/pairing.test.mjs` against
//! `web/js/pairing.js`.
//!
//! `PAIRING_WRITE_VECTORS=1 cargo test -p switchboard-pairing vectors` rewrites the file;
//! without the variable the test fails when the file differs from what the crate computes.

use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use crate::{Code, Pairing, PairingError, Role, Step};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vectors.json");

struct Side {
    code: &'static str,
    fingerprint: String,
    random: [u8; 64],
}

fn fingerprint(algorithm: &str, len: usize, seed: u8) -> String {
    let bytes: Vec<String> = (0..len)
        .map(|i| {
            format!(
                "{:02X}",
                seed.wrapping_mul(31)
                    .wrapping_add((i as u8).wrapping_mul(7))
            )
        })
        .collect();
    format!("{algorithm} {}", bytes.join(":"))
}

/// 64 bytes that look random but are reproducible: SHA-512 of a label.
fn random(label: &str) -> [u8; 64] {
    Sha512::digest(format!("switchboard-pairing vectors/{label}").as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn outcome(result: Result<Step, PairingError>) -> &'static str {
    match result {
        Ok(Step::Verified { .. }) => "verified",
        Err(PairingError::WrongCode { by_peer: false }) => "wrong_code",
        other => panic!("unexpected outcome {other:?}"),
    }
}

fn case(name: &str, sender: Side, receiver: Side) -> Value {
    let start = |side: &Side, role| {
        let code = Code::parse(side.code).expect("vector codes are valid");
        Pairing::start_with_random(&code, role, &side.fingerprint, side.random)
            .expect("vector fingerprints are valid")
    };
    let (mut s, s_pake) = start(&sender, Role::Sender);
    let (mut r, r_pake) = start(&receiver, Role::Receiver);
    let Ok(Step::Send(s_confirm)) = s.handle(&r_pake) else {
        panic!("sender takes the receiver's pake")
    };
    let Ok(Step::Send(r_confirm)) = r.handle(&s_pake) else {
        panic!("receiver takes the sender's pake")
    };
    let s_key = hex(s.key().expect("sender has a key"));
    let r_key = hex(r.key().expect("receiver has a key"));
    let s_result = outcome(s.handle(&r_confirm[0]));
    let r_result = outcome(r.handle(&s_confirm[0]));
    json!({
        "name": name,
        "sender": {
            "code": sender.code,
            "fingerprint": sender.fingerprint,
            "random": hex(&sender.random),
            "pake": s_pake,
            "key": s_key,
            "confirm": s_confirm[0],
            "result": s_result,
        },
        "receiver": {
            "code": receiver.code,
            "fingerprint": receiver.fingerprint,
            "random": hex(&receiver.random),
            "pake": r_pake,
            "key": r_key,
            "confirm": r_confirm[0],
            "result": r_result,
        },
    })
}

fn vectors() -> Value {
    let side = |code, label: &str, fp: String| Side {
        code,
        fingerprint: fp,
        random: random(label),
    };
    let cases = vec![
        case(
            "same code",
            side(
                "7-tiger-orbit",
                "same/sender",
                fingerprint("sha-256", 32, 1),
            ),
            side(
                "7-tiger-orbit",
                "same/receiver",
                fingerprint("sha-256", 32, 2),
            ),
        ),
        case(
            "same code, largest number, SHA-384 and SHA-512 fingerprints",
            side(
                "999-zoo-able",
                "large/sender",
                fingerprint("sha-384", 48, 3),
            ),
            side(
                "999-zoo-able",
                "large/receiver",
                fingerprint("sha-512", 64, 4),
            ),
        ),
        case(
            "same code, random bytes all 0xff and all 0x00 (reduced mod L)",
            Side {
                code: "42-zebra-apple",
                fingerprint: fingerprint("sha-256", 32, 5),
                random: [0xff; 64],
            },
            Side {
                code: "42-zebra-apple",
                fingerprint: fingerprint("sha-256", 32, 6),
                random: [0x00; 64],
            },
        ),
        case(
            "wrong code: one word differs",
            side(
                "7-tiger-orbit",
                "wrong/sender",
                fingerprint("sha-256", 32, 7),
            ),
            side(
                "7-tiger-otter",
                "wrong/receiver",
                fingerprint("sha-256", 32, 8),
            ),
        ),
        case(
            "wrong code: words swapped",
            side(
                "318-lemon-ocean",
                "swapped/sender",
                fingerprint("sha-256", 32, 9),
            ),
            side(
                "318-ocean-lemon",
                "swapped/receiver",
                fingerprint("sha-256", 32, 10),
            ),
        ),
    ];
    json!({
        "about": "SPAKE2 (spake2 0.4, Ed25519, symmetric) pairing vectors; random = the 64 bytes \
                  reduced mod L into the secret scalar; produced by crates/pairing/src/vectors.rs",
        "identity": crate::IDENTITY,
        "cases": cases,
    })
}

#[test]
fn vectors_file_matches() {
    let computed = vectors();
    if std::env::var_os("PAIRING_WRITE_VECTORS").is_some() {
        let mut text = serde_json::to_string_pretty(&computed).expect("encodes");
        text.push('\n');
        std::fs::write(PATH, text).expect("write vectors.json");
        return;
    }
    let text = std::fs::read_to_string(PATH).expect("read tests/data/vectors.json");
    let committed: Value = serde_json::from_str(&text).expect("vectors.json is JSON");
    assert!(
        committed == computed,
        "tests/data/vectors.json differs from what the crate computes; \
         rerun with PAIRING_WRITE_VECTORS=1 if the change is intended"
    );
}

#[test]
fn same_random_same_message() {
    // The injected bytes really are the secret: equal bytes, equal message; different, different.
    let code = Code::parse("7-tiger-orbit").expect("valid");
    let fp = fingerprint("sha-256", 32, 1);
    let start = |random| {
        Pairing::start_with_random(&code, Role::Sender, &fp, random)
            .expect("valid")
            .1
    };
    assert_eq!(start([1; 64]), start([1; 64]));
    assert_ne!(start([1; 64]), start([2; 64]));
}
