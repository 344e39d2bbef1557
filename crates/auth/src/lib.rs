//! Switchboard access tokens: JSON Web Tokens signed with HMAC-SHA-256 (RFC 7519, RFC 7515),
//! naming an identity, a room and what the bearer may do there.
//!
//! An operator holds an API key (a public name, the token's `iss`) and its secret. Tokens are
//! minted with [`mint`] (`switchboard token`) and checked with [`Verifier::verify`], which takes
//! the current unix time as an argument: this crate reads no clock and does no I/O. The `server`
//! crate decides what each grant allows (`docs/security.md`).
//!
//! The claims:
//!
//! | claim | meaning |
//! |---|---|
//! | `iss` | the API key that signed the token |
//! | `sub` | the bearer's identity |
//! | `exp` | expiry, unix seconds (required) |
//! | `nbf` | not valid before, unix seconds (optional) |
//! | `room` | the room the token is for, or `"*"` for any room |
//! | `grants` | `{"publish": bool, "subscribe": bool, "admin": bool}`, each false when absent |
//!
//! What this crate is not: a general JWT library. It accepts exactly `alg: HS256`, compact
//! serialization, and the claims above (others are ignored).

pub mod fuzz;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Room claim value meaning "any room".
pub const ANY_ROOM: &str = "*";

/// Shortest API secret accepted, in bytes: HS256 keys shorter than the hash output weaken the MAC
/// (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest token accepted, in bytes; longer input is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The fixed JOSE header of every token this crate mints.
const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    /// Send media: WHIP ingest, and media into the SFU from a call.
    #[serde(skip_serializing_if = "is_false")]
    pub publish: bool,
    /// Join a room over signaling and receive its media (WHEP, the SFU, peer-to-peer).
    #[serde(skip_serializing_if = "is_false")]
    pub subscribe: bool,
    /// Use the admin API (`/api/v1`) and `/metrics`.
    #[serde(skip_serializing_if = "is_false")]
    pub admin: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// One grant, for [`Claims::require`] and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// [`Grants::publish`].
    Publish,
    /// [`Grants::subscribe`].
    Subscribe,
    /// [`Grants::admin`].
    Admin,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grant::Publish => "publish",
            Grant::Subscribe => "subscribe",
            Grant::Admin => "admin",
        })
    }
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signs the token.
    pub iss: String,
    /// The bearer's identity.
    pub sub: String,
    /// Not valid before this unix time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// A room name, or [`ANY_ROOM`].
    pub room: String,
    /// What the bearer may do.
    #[serde(default)]
    pub grants: Grants,
}

impl Claims {
    /// Whether the token is for `room` (or for any room).
    pub fn allows_room(&self, room: &str) -> bool {
        self.room == ANY_ROOM || self.room == room
    }

    /// `Ok` when the token is for `room`, else [`AuthError::WrongRoom`].
    pub fn check_room(&self, room: &str) -> Result<(), AuthError> {
        if self.allows_room(room) {
            Ok(())
        } else {
            Err(AuthError::WrongRoom {
                token_room: self.room.chars().take(64).collect(),
                room: room.chars().take(64).collect(),
            })
        }
    }

    /// `Ok` when the token carries `grant`, else [`AuthError::MissingGrant`].
    pub fn require(&self, grant: Grant) -> Result<(), AuthError> {
        let has = match grant {
            Grant::Publish => self.grants.publish,
            Grant::Subscribe => self.grants.subscribe,
            Grant::Admin => self.grants.admin,
        };
        if has {
            Ok(())
        } else {
            Err(AuthError::MissingGrant(grant))
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented where one is required.
    #[error("a token is required")]
    Missing,
    /// Not a compact HS256 JWT with the expected claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than HS256 (`none` included).
    #[error("token algorithm {0:?} is not accepted (only HS256)")]
    UnsupportedAlgorithm(String),
    /// The `iss` claim names no configured API key.
    #[error("the token's API key is not known to this server")]
    UnknownKey,
    /// The signature does not match.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token expired at {exp} (now {now})")]
    Expired {
        /// The `exp` claim.
        exp: u64,
        /// The time of the check.
        now: u64,
    },
    /// `nbf` has not come yet.
    #[error("the token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The `nbf` claim.
        nbf: u64,
        /// The time of the check.
        now: u64,
    },
    /// A valid token for another room.
    #[error("the token is for room {token_room:?}, not {room:?}")]
    WrongRoom {
        /// The token's `room` claim (shortened).
        token_room: String,
        /// The room asked for (shortened).
        room: String,
    },
    /// A valid token without a grant the action needs.
    #[error("the token does not grant {0}")]
    MissingGrant(Grant),
}

impl AuthError {
    /// Whether the bearer is authenticated but not allowed (HTTP 403, `forbidden`), as opposed
    /// to not authenticated at all (HTTP 401, `unauthorized`).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            AuthError::WrongRoom { .. } | AuthError::MissingGrant(_)
        )
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The API key is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error("the API key must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'")]
    BadKey,
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the API secret must be at least {MIN_SECRET_BYTES} bytes (it is {0})")]
    ShortSecret(usize),
}

/// An API key with its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    key: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ApiKey {
    /// Checks the key's characters and the secret's length.
    pub fn new(key: &str, secret: &[u8]) -> Result<Self, KeyError> {
        let key_ok = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !key_ok {
            return Err(KeyError::BadKey);
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret(secret.len()));
        }
        Ok(ApiKey {
            key: key.to_owned(),
            secret: secret.to_vec(),
        })
    }

    /// The public key name (`iss`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Mints a token for `claims`, whose `iss` is set to this key.
    pub fn mint(&self, claims: &Claims) -> String {
        let claims = Claims {
            iss: self.key.clone(),
            ..claims.clone()
        };
        mint(&self.secret, &claims)
    }
}

/// Mints the compact JWS of `claims` with HS256 under `secret`. `claims.iss` should be the API
/// key the verifier knows `secret` by.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    // Serializing a struct of strings, integers and booleans cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = URL_SAFE_NO_PAD.encode(HEADER_JSON);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = sign(secret, token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

fn sign(secret: &[u8], input: &[u8]) -> [u8; 32] {
    let mut mac = mac(secret);
    mac.update(input);
    mac.finalize().into_bytes().into()
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// Checks tokens against the configured API keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    keys: Vec<ApiKey>,
    leeway_secs: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

impl Verifier {
    /// A verifier for `keys` with [`DEFAULT_LEEWAY_SECS`].
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Verifier {
            keys,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// The same verifier with another clock-skew tolerance.
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Verifies `token` at unix time `now`: form, algorithm, key, signature, `exp` and `nbf`.
    /// Room and grants are the caller's to check ([`Claims::check_room`], [`Claims::require`]).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let malformed = |why: &str| AuthError::Malformed(why.to_owned());
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed("longer than 4096 bytes"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| malformed("the header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| malformed("the header is not a JSON object with \"alg\""))?;
        if header.alg != "HS256" {
            return Err(AuthError::UnsupportedAlgorithm(
                header.alg.chars().take(16).collect(),
            ));
        }
        let payload_bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| malformed("the payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload_bytes)
            .map_err(|e| AuthError::Malformed(format!("the claims are not as expected ({e})")))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| malformed("the signature is not base64url"))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.key == claims.iss)
            .ok_or(AuthError::UnknownKey)?;
        let signed_len = token.len() - signature_len(token);
        let expected = sign(&key.secret, &token.as_bytes()[..signed_len]);
        if signature.len() != expected.len() || !bool::from(expected.ct_eq(&signature[..])) {
            return Err(AuthError::BadSignature);
        }
        if now >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(self.leeway_secs) < nbf
        {
            return Err(AuthError::NotYetValid { nbf, now });
        }
        Ok(claims)
    }
}

/// Length of the signature part plus its leading dot.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

/// Parses a duration such as `90s`, `15m`, `1h`, `7d` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    value
        .checked_mul(scale)
        .filter(|&secs| secs > 0)
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-demo";
    /// Minted by Python's standard library (hmac, hashlib, base64, json with compact
    /// separators) for `vector_claims()` under `SECRET`.
    const PYTHON_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJBUElkZW1vIiwic3ViIjoiYWxpY2UiLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwicm9vbSI6InN0YW5kdXAiLCJncmFudHMiOnsicHVibGlzaCI6dHJ1ZSwic3Vic2NyaWJlIjp0cnVlfX0.vB4H6rYBkzIfBfCvaLSMi4LMZTGBUnNkKVoGpUaC4vI";
    /// The same claims with `alg: none` and no signature.
    const PYTHON_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJBUElkZW1vIiwic3ViIjoiYWxpY2UiLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwicm9vbSI6InN0YW5kdXAiLCJncmFudHMiOnsicHVibGlzaCI6dHJ1ZSwic3Vic2NyaWJlIjp0cnVlfX0.";
    /// The same claims signed with HS512 under the same secret.
    const PYTHON_HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJBUElkZW1vIiwic3ViIjoiYWxpY2UiLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwicm9vbSI6InN0YW5kdXAiLCJncmFudHMiOnsicHVibGlzaCI6dHJ1ZSwic3Vic2NyaWJlIjp0cnVlfX0.VBlVNKAh76bFbAbS6rogsEoVtujnekh6OK-SmzrbY_DmalvprZ8vtudrUQ9JUyDtxxLFbzgd36iz8haRzWcm2w";

    fn vector_claims() -> Claims {
        Claims {
            iss: "APIdemo".into(),
            sub: "alice".into(),
            nbf: Some(1_700_000_000),
            exp: 1_700_003_600,
            room: "standup".into(),
            grants: Grants {
                publish: true,
                subscribe: true,
                admin: false,
            },
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(vec![ApiKey::new("APIdemo", SECRET).expect("valid key")])
    }

    #[test]
    fn mints_the_same_bytes_as_another_implementation() {
        assert_eq!(mint(SECRET, &vector_claims()), PYTHON_TOKEN);
        let key = ApiKey::new("APIdemo", SECRET).expect("valid key");
        let claims = Claims {
            iss: String::new(),
            ..vector_claims()
        };
        assert_eq!(key.mint(&claims), PYTHON_TOKEN);
    }

    #[test]
    fn verifies_another_implementations_token() {
        let claims = verifier()
            .verify(PYTHON_TOKEN, 1_700_000_100)
            .expect("valid");
        assert_eq!(claims, vector_claims());
        assert!(claims.allows_room("standup"));
        assert!(claims.check_room("other").is_err());
        assert_eq!(claims.require(Grant::Publish), Ok(()));
        assert_eq!(
            claims.require(Grant::Admin),
            Err(AuthError::MissingGrant(Grant::Admin))
        );
    }

    #[test]
    fn refuses_other_algorithms() {
        assert_eq!(
            verifier().verify(PYTHON_NONE, 1_700_000_100),
            Err(AuthError::UnsupportedAlgorithm("none".into()))
        );
        assert_eq!(
            verifier().verify(PYTHON_HS512, 1_700_000_100),
            Err(AuthError::UnsupportedAlgorithm("HS512".into()))
        );
    }

    #[test]
    fn expiry_and_not_before_have_a_small_leeway() {
        let v = verifier();
        let exp = 1_700_003_600;
        assert!(v.verify(PYTHON_TOKEN, exp).is_ok());
        assert!(
            v.verify(PYTHON_TOKEN, exp + DEFAULT_LEEWAY_SECS - 1)
                .is_ok()
        );
        assert_eq!(
            v.verify(PYTHON_TOKEN, exp + DEFAULT_LEEWAY_SECS),
            Err(AuthError::Expired {
                exp,
                now: exp + DEFAULT_LEEWAY_SECS
            })
        );
        let nbf = 1_700_000_000;
        assert!(v.verify(PYTHON_TOKEN, nbf - DEFAULT_LEEWAY_SECS).is_ok());
        assert!(matches!(
            v.verify(PYTHON_TOKEN, nbf - DEFAULT_LEEWAY_SECS - 1),
            Err(AuthError::NotYetValid { .. })
        ));
        let strict = verifier().with_leeway(0);
        assert!(strict.verify(PYTHON_TOKEN, exp).is_err());
    }

    #[test]
    fn refuses_tampering_and_unknown_keys() {
        let now = 1_700_000_100;
        // Flip a character of the signature.
        let mut tampered = PYTHON_TOKEN.to_owned();
        let last = tampered.pop().expect("non-empty");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            verifier().verify(&tampered, now),
            Err(AuthError::BadSignature)
        );
        // Claims changed (room) with the old signature.
        let forged_payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                room: ANY_ROOM.into(),
                ..vector_claims()
            })
            .expect("encodes"),
        );
        let parts: Vec<&str> = PYTHON_TOKEN.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            verifier().verify(&forged, now),
            Err(AuthError::BadSignature)
        );
        // A truncated signature.
        let short = &PYTHON_TOKEN[..PYTHON_TOKEN.len() - 3];
        assert_eq!(verifier().verify(short, now), Err(AuthError::BadSignature));
        // Another secret under the same key name.
        let other = Verifier::new(vec![ApiKey::new("APIdemo", &[7u8; 32]).expect("valid key")]);
        assert_eq!(
            other.verify(PYTHON_TOKEN, now),
            Err(AuthError::BadSignature)
        );
        let unknown = Verifier::new(vec![ApiKey::new("APIother", SECRET).expect("valid key")]);
        assert_eq!(
            unknown.verify(PYTHON_TOKEN, now),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn malformed_tokens_are_named() {
        let v = verifier();
        assert_eq!(v.verify("", 0), Err(AuthError::Missing));
        for bad in [
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.e30.",
            "e30.e30.",
            "eyJhbGciOiJIUzI1NiJ9.e30.",
            "eyJhbGciOiJIUzI1NiJ9.e30=.x",
        ] {
            assert!(
                matches!(v.verify(bad, 0), Err(AuthError::Malformed(_))),
                "{bad}: {:?}",
                v.verify(bad, 0)
            );
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(v.verify(&huge, 0), Err(AuthError::Malformed(_))));
        // exp is required.
        let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"APIdemo","sub":"a","room":"r"}"#);
        let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        let unsigned = format!("{header}.{payload}");
        let token = format!(
            "{unsigned}.{}",
            URL_SAFE_NO_PAD.encode(sign(SECRET, unsigned.as_bytes()))
        );
        assert!(matches!(v.verify(&token, 0), Err(AuthError::Malformed(m)) if m.contains("exp")));
    }

    #[test]
    fn error_classes() {
        assert!(AuthError::MissingGrant(Grant::Publish).is_forbidden());
        assert!(
            AuthError::WrongRoom {
                token_room: "a".into(),
                room: "b".into()
            }
            .is_forbidden()
        );
        assert!(!AuthError::BadSignature.is_forbidden());
        assert!(!AuthError::Expired { exp: 1, now: 2 }.is_forbidden());
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(ApiKey::new("", SECRET), Err(KeyError::BadKey));
        assert_eq!(ApiKey::new("a b", SECRET), Err(KeyError::BadKey));
        assert_eq!(ApiKey::new("k", b"short"), Err(KeyError::ShortSecret(5)));
        let key = ApiKey::new("k", SECRET).expect("valid key");
        assert!(!format!("{key:?}").contains("0123"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        for bad in ["", "h", "1w", "0", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
