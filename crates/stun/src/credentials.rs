//! Long-term credential keys and USERHASH (RFC 8489 §9.2.2, §14.4).

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// The MD5 long-term key: `MD5(username ":" realm ":" password)`.
///
/// The password is used as given: operators' passwords are ASCII in practice, and OpaqueString
/// preparation (RFC 8265) leaves ASCII unchanged.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut hasher = Md5::new();
    hasher.update(username.as_bytes());
    hasher.update(b":");
    hasher.update(realm.as_bytes());
    hasher.update(b":");
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

/// The SHA-256 long-term key: `SHA-256(username ":" realm ":" password)`.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(username.as_bytes());
    hasher.update(b":");
    hasher.update(realm.as_bytes());
    hasher.update(b":");
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

/// USERHASH: `SHA-256(username ":" realm)`.
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(username.as_bytes());
    hasher.update(b":");
    hasher.update(realm.as_bytes());
    hasher.finalize().into()
}
