//! Long-term credential keys and USERHASH (RFC 8489 §9.2.2, §14.4).

use md5::{Digest, Md5};
use sha2::Sha256;

/// The MD5 long-term key: `MD5(username ":" realm ":" password)`.
///
/// The password is used as given: operators' passwords are ASCII in practice, and OpaqueString
/// preparation (RFC 8265) leaves ASCII unchanged.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    colon_joined_hash::<Md5>(&[username, realm, password]).into()
}

/// The SHA-256 long-term key: `SHA-256(username ":" realm ":" password)`.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    colon_joined_hash::<Sha256>(&[username, realm, password]).into()
}

/// USERHASH: `SHA-256(username ":" realm)`.
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    colon_joined_hash::<Sha256>(&[username, realm]).into()
}

/// The digest of `parts` joined with `:`.
fn colon_joined_hash<D: Digest>(parts: &[&str]) -> md5::digest::Output<D> {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize()
}
