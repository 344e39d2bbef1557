//! The pairing state machine: SPAKE2 over the code, then key confirmation that carries each
//! side's DTLS fingerprint.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use subtle::ConstantTimeEq;

use crate::code::Code;
use crate::fingerprint::normalize_fingerprint;

/// The SPAKE2 identity and the prefix of every confirmation MAC. A new protocol version changes
/// it, so old and new peers fail as "wrong code" instead of half-understanding each other.
pub const IDENTITY: &str = "switchboard-transfer-v1";

/// Which end of the transfer a peer is. Only the confirmation MAC depends on it (SPAKE2 runs in
/// symmetric mode), so that a confirmation reflected back to its sender does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The peer that has the file and printed the code.
    Sender,
    /// The peer that typed the code.
    Receiver,
}

impl Role {
    /// `"sender"` or `"receiver"`, as it enters the confirmation MAC.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }

    /// The other role.
    pub fn peer(self) -> Role {
        match self {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        }
    }
}

/// What to do after a message was handled.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Step {
    /// Relay these messages to the peer, in order (possibly none).
    Send(Vec<Value>),
    /// The peer proved it knows the code and will use this certificate. Check that the
    /// `a=fingerprint` of its SDP ([`sdp_fingerprint`](crate::sdp_fingerprint)) equals it.
    Verified {
        /// The peer's fingerprint, normalised like [`normalize_fingerprint`].
        remote_fingerprint: String,
    },
}

/// Why a pairing failed. After any error the [`Pairing`] is finished: send [`reply`] if it has
/// one and stop.
///
/// [`reply`]: PairingError::reply
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The two sides used different codes (or someone in between guessed one): the peer's
    /// confirmation did not verify, or the peer reported that ours did not.
    #[error("wrong code")]
    WrongCode {
        /// The peer found the mismatch and told us; when false we found it, and
        /// [`PairingError::reply`] tells the peer.
        by_peer: bool,
    },
    /// The peer sent something that is not a pairing message: not an object, unknown or missing
    /// fields, bad base64, a SPAKE2 message of the wrong length, side or point, a fingerprint not
    /// in normal form.
    #[error("malformed pairing message: {0}")]
    Malformed(&'static str),
    /// The peer sent a valid message at the wrong time: a confirmation before its SPAKE2 message,
    /// a second SPAKE2 message, our own SPAKE2 message back, anything after verification.
    #[error("unexpected pairing message: {0}")]
    Unexpected(&'static str),
    /// The peer gave up for another reason than a wrong code (printable ASCII, at most 64
    /// characters of what it sent).
    #[error("the peer aborted the pairing: {0}")]
    PeerAborted(String),
    /// Our caller passed a local fingerprint that [`normalize_fingerprint`] rejects.
    #[error("invalid local DTLS fingerprint")]
    InvalidFingerprint,
    /// Our caller handed a message to a pairing that had already failed.
    #[error("the pairing already failed")]
    Finished,
}

impl PairingError {
    /// The message to send the peer before giving up, if any: `{"abort":"wrong_code"}` when we
    /// found the codes differ, `{"abort":"protocol_error"}` when the peer broke the protocol.
    pub fn reply(&self) -> Option<Value> {
        match self {
            PairingError::WrongCode { by_peer: false } => Some(json!({ "abort": "wrong_code" })),
            PairingError::Malformed(_) | PairingError::Unexpected(_) => {
                Some(json!({ "abort": "protocol_error" }))
            }
            _ => None,
        }
    }

    /// True for [`PairingError::WrongCode`], whoever found it.
    pub fn is_wrong_code(&self) -> bool {
        matches!(self, PairingError::WrongCode { .. })
    }
}

/// One side of a pairing. Sans-IO: feed it every pairing message the peer relays, in order,
/// and relay what it returns.
///
/// ```
/// use pairing::{Code, Pairing, Role, Step};
/// # fn main() -> Result<(), pairing::PairingError> {
/// let code = Code::parse("7-tiger-orbit").expect("valid code");
/// let fp_s = format!("sha-256 {}", ["AA"; 32].join(":"));
/// let fp_r = format!("sha-256 {}", ["BB"; 32].join(":"));
/// let (mut sender, s_pake) = Pairing::start(&code, Role::Sender, &fp_s)?;
/// let (mut receiver, r_pake) = Pairing::start(&code, Role::Receiver, &fp_r)?;
/// let Step::Send(s_confirm) = sender.handle(&r_pake)? else { unreachable!() };
/// let Step::Send(r_confirm) = receiver.handle(&s_pake)? else { unreachable!() };
/// assert_eq!(
///     sender.handle(&r_confirm[0])?,
///     Step::Verified { remote_fingerprint: fp_r }
/// );
/// assert_eq!(
///     receiver.handle(&s_confirm[0])?,
///     Step::Verified { remote_fingerprint: fp_s }
/// );
/// # Ok(())
/// # }
/// ```
pub struct Pairing {
    role: Role,
    local_fingerprint: String,
    state: State,
}

enum State {
    /// Our SPAKE2 message is out; waiting for the peer's.
    AwaitPake {
        spake: Spake2<Ed25519Group>,
        own_message: Vec<u8>,
    },
    /// Our confirmation is out; waiting for the peer's.
    AwaitConfirm {
        key: Vec<u8>,
    },
    Verified,
    Failed,
}

impl Pairing {
    /// Starts SPAKE2 with the normalised code as the password. Returns the pairing and the first
    /// message to send, `{"pake":"<base64>"}`.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn start(
        code: &Code,
        role: Role,
        local_fingerprint: &str,
    ) -> Result<(Pairing, Value), PairingError> {
        let local_fingerprint =
            normalize_fingerprint(local_fingerprint).ok_or(PairingError::InvalidFingerprint)?;
        let (spake, own_message) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(code.to_string()),
            &Identity::new(IDENTITY.as_bytes()),
        );
        Ok(Pairing::started(
            role,
            local_fingerprint,
            spake,
            own_message,
        ))
    }

    fn started(
        role: Role,
        local_fingerprint: String,
        spake: Spake2<Ed25519Group>,
        own_message: Vec<u8>,
    ) -> (Pairing, Value) {
        let first = json!({ "pake": BASE64.encode(&own_message) });
        let state = State::AwaitPake { spake, own_message };
        let pairing = Pairing {
            role,
            local_fingerprint,
            state,
        };
        (pairing, first)
    }

    /// Handles one message from the peer.
    ///
    /// The peer's SPAKE2 message yields our confirmation to send; the peer's confirmation yields
    /// [`Step::Verified`]. Any error finishes the pairing; see [`PairingError::reply`].
    pub fn handle(&mut self, message: &Value) -> Result<Step, PairingError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        if matches!(state, State::Failed) {
            return Err(PairingError::Finished);
        }
        let message = Message::parse(message)?;
        match (state, message) {
            (_, Message::Abort(reason)) => Err(abort_error(reason)),
            (State::AwaitPake { spake, own_message }, Message::Pake(peer_message)) => {
                if peer_message == own_message {
                    return Err(PairingError::Unexpected("our own SPAKE2 message came back"));
                }
                let key = spake.finish(&peer_message).map_err(|e| match e {
                    spake2::Error::WrongLength => {
                        PairingError::Malformed("SPAKE2 message of the wrong length")
                    }
                    spake2::Error::BadSide => {
                        PairingError::Malformed("SPAKE2 message not for symmetric mode")
                    }
                    spake2::Error::CorruptMessage => {
                        PairingError::Malformed("SPAKE2 message is not a curve point")
                    }
                })?;
                let mac = confirm_mac(&key, self.role, &self.local_fingerprint);
                let confirm = json!({
                    "confirm": BASE64.encode(mac),
                    "fingerprint": self.local_fingerprint,
                });
                self.state = State::AwaitConfirm { key };
                Ok(Step::Send(vec![confirm]))
            }
            (State::AwaitPake { .. }, Message::Confirm { .. }) => Err(PairingError::Unexpected(
                "confirmation before the SPAKE2 message",
            )),
            (State::AwaitConfirm { .. }, Message::Pake(_)) => {
                Err(PairingError::Unexpected("second SPAKE2 message"))
            }
            (State::AwaitConfirm { key }, Message::Confirm { mac, fingerprint }) => {
                let expected = confirm_mac(&key, self.role.peer(), fingerprint);
                if !bool::from(expected.as_slice().ct_eq(&mac)) {
                    return Err(PairingError::WrongCode { by_peer: false });
                }
                self.state = State::Verified;
                Ok(Step::Verified {
                    remote_fingerprint: fingerprint.to_owned(),
                })
            }
            (State::Verified, _) => Err(PairingError::Unexpected("message after verification")),
            (State::Failed, _) => Err(PairingError::Finished),
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the peer's confirmation verified.
    pub fn is_verified(&self) -> bool {
        matches!(self.state, State::Verified)
    }
}

impl fmt::Debug for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key or the SPAKE2 secret.
        let phase = match self.state {
            State::AwaitPake { .. } => "await-pake",
            State::AwaitConfirm { .. } => "await-confirm",
            State::Verified => "verified",
            State::Failed => "failed",
        };
        f.debug_struct("Pairing")
            .field("role", &self.role)
            .field("local_fingerprint", &self.local_fingerprint)
            .field("phase", &phase)
            .finish()
    }
}

/// `HMAC-SHA256(key, "switchboard-transfer-v1|" + role + "|" + fingerprint)`, `role` being the
/// side that sends the confirmation.
fn confirm_mac(key: &[u8], role: Role, fingerprint: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(IDENTITY.as_bytes());
    mac.update(b"|");
    mac.update(role.as_str().as_bytes());
    mac.update(b"|");
    mac.update(fingerprint.as_bytes());
    mac.finalize().into_bytes().into()
}

fn abort_error(reason: &str) -> PairingError {
    if reason == "wrong_code" {
        return PairingError::WrongCode { by_peer: true };
    }
    let shown = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect();
    PairingError::PeerAborted(shown)
}

/// A pairing message, checked for shape: exactly the fields of one kind, strings, canonical
/// base64, a 32-byte MAC and a normalised fingerprint.
enum Message<'a> {
    Pake(Vec<u8>),
    Confirm { mac: Vec<u8>, fingerprint: &'a str },
    Abort(&'a str),
}

impl<'a> Message<'a> {
    fn parse(value: &'a Value) -> Result<Message<'a>, PairingError> {
        let object = value
            .as_object()
            .ok_or(PairingError::Malformed("not a JSON object"))?;
        let string = |name: &str| match object.get(name) {
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(PairingError::Malformed("a field is not a string")),
            None => Ok(None),
        };
        let fields = (
            string("pake")?,
            string("confirm")?,
            string("fingerprint")?,
            string("abort")?,
        );
        match (fields, object.len()) {
            ((Some(pake), None, None, None), 1) => {
                Ok(Message::Pake(BASE64.decode(pake).map_err(|_| {
                    PairingError::Malformed("pake is not base64")
                })?))
            }
            ((None, Some(confirm), Some(fingerprint), None), 2) => {
                let mac = BASE64
                    .decode(confirm)
                    .map_err(|_| PairingError::Malformed("confirm is not base64"))?;
                if mac.len() != 32 {
                    return Err(PairingError::Malformed("confirm is not 32 bytes"));
                }
                if normalize_fingerprint(fingerprint).as_deref() != Some(fingerprint) {
                    return Err(PairingError::Malformed("fingerprint not in normal form"));
                }
                Ok(Message::Confirm { mac, fingerprint })
            }
            ((None, None, None, Some(reason)), 1) => Ok(Message::Abort(reason)),
            _ => Err(PairingError::Malformed(
                "not a pake, confirm or abort message",
            )),
        }
    }
}

#[cfg(test)]
impl Pairing {
    /// [`Pairing::start`] with the 64 bytes SPAKE2 reduces into its secret scalar given, for
    /// test vectors.
    pub(crate) fn start_with_random(
        code: &Code,
        role: Role,
        local_fingerprint: &str,
        random: [u8; 64],
    ) -> Result<(Pairing, Value), PairingError> {
        let local_fingerprint =
            normalize_fingerprint(local_fingerprint).ok_or(PairingError::InvalidFingerprint)?;
        let (spake, own_message) = Spake2::<Ed25519Group>::start_symmetric_with_rng(
            &Password::new(code.to_string()),
            &Identity::new(IDENTITY.as_bytes()),
            FixedRandom { bytes: random },
        );
        Ok(Pairing::started(
            role,
            local_fingerprint,
            spake,
            own_message,
        ))
    }

    /// The SPAKE2 key, once there is one.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        match &self.state {
            State::AwaitConfirm { key } => Some(key),
            _ => None,
        }
    }
}

/// Hands out 64 given bytes, once: all `Scalar::random` asks for.
#[cfg(test)]
struct FixedRandom {
    bytes: [u8; 64],
}

#[cfg(test)]
impl rand_core::RngCore for FixedRandom {
    fn next_u32(&mut self) -> u32 {
        unimplemented!("only fill_bytes is used")
    }

    fn next_u64(&mut self) -> u64 {
        unimplemented!("only fill_bytes is used")
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert_eq!(dest.len(), 64, "Scalar::random draws 64 bytes");
        dest.copy_from_slice(&self.bytes);
        self.bytes = [0; 64];
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
impl rand_core::CryptoRng for FixedRandom {}
