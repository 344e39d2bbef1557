//! Transfer codes and the PAKE that authenticates both peers' DTLS fingerprints.
//!
//! `switchboard send FILE` prints a code such as `7-tiger-orbit`; the receiver types it (in a
//! terminal or at `/recv/7-tiger-orbit` in a browser). Both peers then meet in a signaling room,
//! prove to each other that they know the same code, and bind that proof to the DTLS certificate
//! each will use, so the signaling server, which relays everything, can neither read nor
//! redirect the transfer. This crate is that protocol, without I/O: codes ([`Code`]), the
//! pairing state machine ([`Pairing`]) and fingerprint helpers. It does not open connections or
//! send anything; the `peer` crate and `web/js/pairing.js` drive it, and the latter implements
//! the same protocol byte for byte for browsers.
//!
//! # Protocol, version 1
//!
//! **Code.** `N-word-word`: `N` is a decimal number from 1 to 999 without leading zeros, the
//! words come from the 256-word list [`WORDS`] (read from `web/js/words.js`, shared with the
//! browser). Codes are generated from OS randomness (about 26 bits). Parsing trims, lowercases
//! and takes runs of spaces or dashes as separators; the normalised form is `N-word-word`.
//! No two words share their first three letters, so an unknown word gets the one listed word
//! with its first three letters as a suggestion.
//!
//! **Room.** Both peers join the signaling room `xfer-N`, the sender with role `"sender"`, the
//! receiver with `"receiver"`. The number is all the server learns of the code.
//!
//! **PAKE.** SPAKE2 in symmetric mode over the Ed25519 group, exactly as the `spake2` 0.4 crate
//! computes it: password = the normalised code as bytes, identity = [`IDENTITY`]
//! (`switchboard-transfer-v1`).
//! - password scalar `w` = HKDF-SHA256(salt = empty, ikm = password, info = `SPAKE2 pw`,
//!   48 bytes) read as a big-endian integer, mod the group order `L`;
//! - secret scalar `x` = 64 random bytes read as a little-endian integer, mod `L`;
//! - message = `0x53` (`'S'`) followed by the 32-byte compressed Edwards point `x·B + w·S`,
//!   where `B` is the Ed25519 base point and `S` the point with compressed form
//!   `6f00dae87c1be1a73b5922ef431cd8f57879569c222d22b1cd71e8546ab8e6f1`;
//! - on the peer's message `Y`: `K = x·(Y + (−w mod L)·S)`;
//! - key = SHA-256(SHA-256(password) ‖ SHA-256(identity) ‖ min(X, Y) ‖ max(X, Y) ‖ K), with
//!   `X`, `Y` the two 32-byte points (side byte removed) ordered bytewise and `K` compressed.
//!
//! Each side sends `{"pake":"<standard base64 of its 33-byte message>"}` as soon as it starts.
//!
//! **Key confirmation.** As soon as a side has the key it sends
//! `{"confirm":"<base64 of HMAC-SHA256(key, "switchboard-transfer-v1|" + role + "|" + fingerprint)>","fingerprint":"<fingerprint>"}`,
//! where `role` is the sending side's role and `fingerprint` its DTLS certificate fingerprint in
//! the form `sha-256 AB:CD:…` ([`normalize_fingerprint`]). The receiving side recomputes the MAC
//! for the peer's role and the fingerprint received and compares in constant time. A match
//! completes the pairing ([`Step::Verified`]); a mismatch means the codes differ, and the side
//! sends `{"abort":"wrong_code"}` and reports [`PairingError::WrongCode`], as does a side that
//! receives that abort. A side that receives a malformed or out-of-order message sends
//! `{"abort":"protocol_error"}`; any other abort reason is reported as
//! [`PairingError::PeerAborted`]. Messages have exactly the fields shown; base64 must be
//! canonical with padding.
//!
//! **Binding to DTLS.** After both confirmations verified, each side takes the fingerprint from
//! the peer's SDP ([`sdp_fingerprint`]) and goes on only if it equals the authenticated one;
//! the DTLS handshake then proves the peer holds that certificate.
//!
//! # What a wrong guess costs an attacker
//!
//! The signaling server sees the room number and can run one SPAKE2 exchange per attempt with
//! either side; each attempt tests one guess of the two words (1 in 65 536) and ends the
//! transfer with "wrong code", which the person sees.

mod code;
mod fingerprint;
mod pairing;

#[cfg(test)]
mod vectors;

pub use code::{Code, CodeError, WORDS};
pub use fingerprint::{normalize_fingerprint, sdp_fingerprint};
pub use pairing::{IDENTITY, Pairing, PairingError, Role, Step};

/// The body of a fuzz target for code parsing and the pairing state machine: the first byte
/// picks the role, the rest is newline-separated lines, each parsed as a code and as an SDP and,
/// when it is JSON, fed to a started [`Pairing`]. Nothing may panic.
///
/// Kept in the library so ordinary builds compile it.
pub fn fuzz_pairing(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = if first & 1 == 0 {
        Role::Sender
    } else {
        Role::Receiver
    };
    let fingerprint = format!("sha-256 {}", ["00"; 32].join(":"));
    let Ok((mut pairing, _)) = Pairing::start(&Code::first(), role, &fingerprint) else {
        return;
    };
    for line in String::from_utf8_lossy(rest).lines() {
        if let Ok(code) = Code::parse(line) {
            assert_eq!(Code::parse(&code.to_string()), Ok(code));
        }
        let _ = sdp_fingerprint(line);
        if let Ok(message) = serde_json::from_str(line) {
            let _ = pairing.handle(&message);
        }
    }
}
