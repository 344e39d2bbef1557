//! Long-term credentials (RFC 8489 §9.2) and stateless nonces.
//!
//! Two kinds of users, both usable at once:
//! - static users (`--turn-user USER:PASS`), whose MD5 keys are computed once;
//! - coturn-compatible REST ephemeral credentials from a shared secret: the username is
//!   `EXPIRY[:NAME]` (EXPIRY in Unix seconds) and the password is
//!   `base64(HMAC-SHA1(secret, username))`, so any application holding the secret can mint
//!   credentials without talking to the server.
//!
//! Nonces carry their own expiry and a MAC over it and the client's IP, so the server keeps no
//! state for a client before it has authenticated.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Credentials the server accepts.
#[derive(Clone, Default)]
pub struct Credentials {
    realm: String,
    static_keys: HashMap<String, [u8; 16]>,
    rest_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("static_users", &self.static_keys.len())
            .field("rest_secret", &self.rest_secret.is_some())
            .finish()
    }
}

/// Why a username has no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// No such static user and not a REST username.
    UnknownUser,
    /// A REST username whose expiry has passed.
    Expired,
}

impl Credentials {
    /// Credentials for `realm`, initially accepting nobody.
    pub fn new(realm: impl Into<String>) -> Self {
        Credentials {
            realm: realm.into(),
            ..Credentials::default()
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Adds a static user.
    pub fn add_user(&mut self, username: &str, password: &str) {
        let key = stun::long_term_key_md5(username, &self.realm, password);
        self.static_keys.insert(username.to_owned(), key);
    }

    /// Accepts REST ephemeral credentials made with `secret`.
    pub fn set_rest_secret(&mut self, secret: &[u8]) {
        self.rest_secret = Some(secret.to_vec());
    }

    /// Whether any user can authenticate.
    pub fn is_empty(&self) -> bool {
        self.static_keys.is_empty() && self.rest_secret.is_none()
    }

    /// The long-term key for `username` at Unix time `unix_now`.
    pub fn key(&self, username: &str, unix_now: u64) -> Result<[u8; 16], KeyError> {
        if let Some(key) = self.static_keys.get(username) {
            return Ok(*key);
        }
        let Some(secret) = &self.rest_secret else {
            return Err(KeyError::UnknownUser);
        };
        let expiry_text = username.split(':').next().unwrap_or_default();
        let Ok(expiry) = expiry_text.parse::<u64>() else {
            return Err(KeyError::UnknownUser);
        };
        if expiry <= unix_now {
            return Err(KeyError::Expired);
        }
        let password = rest_password(secret, username);
        Ok(stun::long_term_key_md5(username, &self.realm, &password))
    }
}

/// The REST API password for `username`: `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints REST credentials valid until `expiry` (Unix seconds) for `name`.
pub fn rest_credentials(secret: &[u8], expiry: u64, name: &str) -> (String, String) {
    let username = if name.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{name}")
    };
    let password = rest_password(secret, &username);
    (username, password)
}

/// Issues and checks stateless nonces: `EXPIRY(hex, 16 chars)` + `MAC(hex, 16 chars)` where
/// MAC = HMAC-SHA256(server secret, expiry ‖ client IP) truncated to 64 bits.
#[derive(Clone)]
pub struct NonceIssuer {
    secret: [u8; 32],
    lifetime_secs: u64,
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by us for this client and still valid.
    Valid,
    /// Issued by us but expired: answer 438 with a fresh one.
    Stale,
    /// Not one of ours (or for another client): treat as stale too, so honest clients recover.
    Invalid,
}

impl NonceIssuer {
    /// An issuer with a random `secret` and nonces valid for `lifetime_secs`.
    pub fn new(secret: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer {
            secret,
            lifetime_secs,
        }
    }

    /// A nonce for `client` issued at `unix_now`.
    pub fn issue(&self, client: IpAddr, unix_now: u64) -> String {
        let expiry = unix_now + self.lifetime_secs;
        format!("{expiry:016x}{:016x}", self.mac(expiry, client))
    }

    /// Checks a nonce presented by `client`.
    pub fn check(&self, nonce: &str, client: IpAddr, unix_now: u64) -> NonceCheck {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (Ok(expiry), Ok(mac)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..], 16),
        ) else {
            return NonceCheck::Invalid;
        };
        let expected = self.mac(expiry, client);
        if !bool::from(mac.to_be_bytes().ct_eq(&expected.to_be_bytes())) {
            return NonceCheck::Invalid;
        }
        if expiry <= unix_now {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    fn mac(&self, expiry: u64, client: IpAddr) -> u64 {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key");
        mac.update(&expiry.to_be_bytes());
        match client {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        let tag = mac.finalize().into_bytes();
        u64::from_be_bytes(tag[..8].try_into().expect("8 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_match_the_coturn_scheme() {
        // base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently.
        let (user, pass) = rest_credentials(b"secret", 1_700_000_000, "alice");
        assert_eq!(user, "1700000000:alice");
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(b"secret").expect("key");
        mac.update(b"1700000000:alice");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(pass, expected);
        assert_eq!(pass.len(), 28);
    }

    #[test]
    fn keys_for_static_and_rest_users() {
        let mut creds = Credentials::new("example.org");
        creds.add_user("alice", "pw");
        creds.set_rest_secret(b"s3cret");
        assert_eq!(
            creds.key("alice", 0),
            Ok(stun::long_term_key_md5("alice", "example.org", "pw"))
        );
        let (user, pass) = rest_credentials(b"s3cret", 2_000, "bob");
        assert_eq!(
            creds.key(&user, 1_000),
            Ok(stun::long_term_key_md5(&user, "example.org", &pass))
        );
        assert_eq!(creds.key(&user, 2_000), Err(KeyError::Expired));
        assert_eq!(creds.key("mallory", 0), Err(KeyError::UnknownUser));
        assert_eq!(creds.key("notanumber:x", 0), Err(KeyError::UnknownUser));
        let none = Credentials::new("r");
        assert_eq!(none.key("1:x", 0), Err(KeyError::UnknownUser));
    }

    #[test]
    fn nonces_expire_and_bind_to_the_client() {
        let issuer = NonceIssuer::new([5; 32], 600);
        let me: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let nonce = issuer.issue(me, 1_000);
        assert_eq!(issuer.check(&nonce, me, 1_599), NonceCheck::Valid);
        assert_eq!(issuer.check(&nonce, me, 1_600), NonceCheck::Stale);
        assert_eq!(issuer.check(&nonce, other, 1_000), NonceCheck::Invalid);
        let mut forged = nonce.clone().into_bytes();
        forged[0] = b'f'; // push the expiry out
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(issuer.check(&forged, me, 1_000), NonceCheck::Invalid);
        assert_eq!(issuer.check("short", me, 1_000), NonceCheck::Invalid);
        assert_eq!(
            issuer.check("é".repeat(16).as_str(), me, 1_000),
            NonceCheck::Invalid
        );
    }
}
