//! Access control glue: the `[auth]` configuration, the open-rooms refusal, and checking bearer
//! tokens for signaling, WHIP/WHEP and the admin API (`docs/security.md`).
//!
//! The token format and its verification live in the sans-IO `auth` crate; this module reads
//! the clock, holds the secret, and maps refusals to HTTP statuses and signaling errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use auth::{AuthError, Claims, Grant, Verifier};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::ConfigError;

/// The `[auth]` table: the API key and secret that sign access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The API key: the public name of the secret, the `iss` of every token. When set, every
    /// join, WHIP/WHEP request and admin call needs a token. Default: none (open rooms, which
    /// `serve` allows only on a loopback address).
    pub api_key: Option<String>,
    /// The API secret, at least 32 bytes. Prefer `api_secret_file` or the
    /// `SWITCHBOARD_API_SECRET` environment variable to keep it out of the config file.
    pub api_secret: Option<String>,
    /// A file holding the API secret (one line; the trailing newline is ignored).
    pub api_secret_file: Option<PathBuf>,
    /// Serve open rooms (no tokens) on a non-loopback address. Dangerous: anyone who reaches the
    /// port can join any room, publish into the SFU and use the TURN credentials handed out.
    /// Default false.
    pub dangerous_open_rooms: bool,
}

impl AuthConfig {
    /// The configured key with its secret (read from `api_secret_file` when given), `None` when
    /// no key is configured.
    pub fn api_key(&self) -> Result<Option<auth::ApiKey>, ConfigError> {
        let invalid =
            |field: &'static str, problem: String| ConfigError::Invalid { field, problem };
        let secret = match (&self.api_secret, &self.api_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "auth.api_secret_file",
                    "give either auth.api_secret or auth.api_secret_file, not both".into(),
                ));
            }
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid("auth.api_secret_file", format!("{}: {e}", path.display()))
                })?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            }
            (None, None) => None,
        };
        let (key, secret) = match (&self.api_key, secret) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(invalid(
                    "auth.api_secret",
                    "is required with auth.api_key (or auth.api_secret_file, or \
                     SWITCHBOARD_API_SECRET)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "auth.api_key",
                    "is required with an API secret".into(),
                ));
            }
            (Some(key), Some(secret)) => (key, secret),
        };
        match auth::ApiKey::new(key, secret.as_bytes()) {
            Ok(key) => Ok(Some(key)),
            Err(auth::KeyError::BadKey) => Err(invalid(
                "auth.api_key",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'".into(),
            )),
            Err(err) => Err(invalid(
                "auth.api_secret",
                format!("{err}; generate one with `openssl rand -hex 32`"),
            )),
        }
    }
}

/// Refuses open rooms on a non-loopback HTTP address unless the operator said
/// `dangerous_open_rooms`; returns the explanation to print.
pub fn open_rooms_refusal(
    http: SocketAddr,
    has_key: bool,
    dangerous_open_rooms: bool,
) -> Option<String> {
    if has_key || http.ip().is_loopback() || dangerous_open_rooms {
        return None;
    }
    Some(format!(
        "refusing to serve open rooms on {http}: without an API key anyone who can reach this \
         address could join any room, publish media and use the TURN relay.\n\
         Either configure an API key (`[auth] api_key` and `api_secret` in the config file, or \
         SWITCHBOARD_API_KEY and SWITCHBOARD_API_SECRET, or --api-key/--api-secret-file) and \
         hand out tokens made with `switchboard token`,\n\
         or listen on a loopback address (--http 127.0.0.1:8080),\n\
         or, knowing that rooms are then open to everyone, pass --dangerous-open-rooms \
         (`[auth] dangerous_open_rooms = true`)."
    ))
}

/// The running server's view of auth: `None` inside means open rooms.
#[derive(Clone, Default)]
pub struct Access {
    verifier: Option<Arc<Verifier>>,
}

impl Access {
    /// Tokens checked against `key`; `None`: open rooms.
    pub fn new(key: Option<auth::ApiKey>) -> Self {
        Access {
            verifier: key.map(|k| Arc::new(Verifier::new(vec![k]))),
        }
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// Verifies `token` now. Errors with [`AuthError::Missing`] when it is absent.
    pub fn verify(&self, token: Option<&str>) -> Result<Option<Claims>, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let token = token.ok_or(AuthError::Missing)?;
        verifier.verify(token, unix_now()).map(Some)
    }

    /// Checks a bearer token for `grant` in `room` (`None`: every room, i.e. the token's room
    /// must be `*`). `Ok(None)` when auth is off.
    pub fn check(
        &self,
        headers: &HeaderMap,
        room: Option<&str>,
        grant: Grant,
    ) -> Result<Option<Claims>, HttpRefusal> {
        // Open rooms: whatever the client sends (an encoder configured with a token) is ignored.
        if !self.enabled() {
            return Ok(None);
        }
        let token = bearer(headers)?;
        let Some(claims) = self.verify(token).map_err(HttpRefusal::from)? else {
            return Ok(None);
        };
        claims
            .check_room(room.unwrap_or(auth::ANY_ROOM))
            .and_then(|()| claims.require(grant))
            .map_err(HttpRefusal::from)?;
        Ok(Some(claims))
    }

    /// The signaling hub's authorizer: a join needs a token for its room with `subscribe`.
    pub fn authorizer(&self) -> Option<signal::Authorizer> {
        let access = self.clone();
        self.verifier.as_ref()?;
        Some(signal::Authorizer(Arc::new(move |room, token| {
            let refuse = |err: AuthError| signal::JoinRefusal {
                forbidden: err.is_forbidden(),
                message: explain(&err),
            };
            let claims = access.verify(token).map_err(refuse)?;
            let Some(claims) = claims else {
                return Ok(signal::PeerGrants::open());
            };
            claims
                .check_room(room)
                .and_then(|()| claims.require(Grant::Subscribe))
                .map_err(refuse)?;
            Ok(signal::PeerGrants {
                identity: Some(claims.sub.chars().take(128).collect()),
                publish: claims.grants.publish,
            })
        })))
    }
}

/// A refusal explained for people: what is wrong and what to do.
pub fn explain(err: &AuthError) -> String {
    match err {
        AuthError::Missing => {
            "this server requires an access token: ask its operator for one (`switchboard \
             token`) and pass it (?token= in the page address, --token on the command line)"
                .into()
        }
        AuthError::Expired { .. } => {
            format!("{err}: the access token has expired; ask for a new one")
        }
        other => other.to_string(),
    }
}

/// Why an HTTP request was refused: 401 (not authenticated) or 403 (not allowed).
#[derive(Debug)]
pub struct HttpRefusal {
    /// 401 or 403.
    pub status: StatusCode,
    /// `unauthorized` or `forbidden`.
    pub code: &'static str,
    /// The explanation.
    pub message: String,
}

impl From<AuthError> for HttpRefusal {
    fn from(err: AuthError) -> Self {
        let forbidden = err.is_forbidden();
        HttpRefusal {
            status: if forbidden {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            },
            code: if forbidden {
                "forbidden"
            } else {
                "unauthorized"
            },
            message: explain(&err),
        }
    }
}

impl HttpRefusal {
    /// A 403 with this explanation.
    pub fn forbidden(message: impl Into<String>) -> Self {
        HttpRefusal {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
        }
    }

    /// A plain-text response (WHIP/WHEP), with `WWW-Authenticate` on 401.
    pub fn plain(&self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        self.add_challenge(&mut response);
        response
    }

    /// A JSON response (`{"error": {"code", "message"}}`, the admin API).
    pub fn json(&self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        self.add_challenge(&mut response);
        response
    }

    fn add_challenge(&self, response: &mut Response) {
        if self.status == StatusCode::UNAUTHORIZED {
            let value = match self.message.contains("expired") {
                true => r#"Bearer realm="switchboard", error="invalid_token""#,
                false => r#"Bearer realm="switchboard""#,
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
    }
}

/// The token of an `Authorization: Bearer` header; `None` without the header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, HttpRefusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(HttpRefusal {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "the Authorization header must be `Bearer TOKEN`".into(),
        }),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_secret_validate_and_name_the_field() {
        let field = |config: AuthConfig| match config.api_key() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        assert!(matches!(AuthConfig::default().api_key(), Ok(None)));
        let good = AuthConfig {
            api_key: Some("APIkey".into()),
            api_secret: Some("x".repeat(32)),
            ..AuthConfig::default()
        };
        assert!(matches!(good.api_key(), Ok(Some(_))));
        assert_eq!(
            field(AuthConfig {
                api_secret: Some("x".repeat(31)),
                ..good.clone()
            }),
            "auth.api_secret"
        );
        assert_eq!(
            field(AuthConfig {
                api_secret: None,
                ..good.clone()
            }),
            "auth.api_secret"
        );
        assert_eq!(
            field(AuthConfig {
                api_key: None,
                ..good.clone()
            }),
            "auth.api_key"
        );
        assert_eq!(
            field(AuthConfig {
                api_key: Some("has space".into()),
                ..good.clone()
            }),
            "auth.api_key"
        );
        assert_eq!(
            field(AuthConfig {
                api_secret_file: Some("/nonexistent".into()),
                ..good.clone()
            }),
            "auth.api_secret_file"
        );
        assert_eq!(
            field(AuthConfig {
                api_secret: None,
                api_secret_file: Some("/nonexistent/secret".into()),
                ..good
            }),
            "auth.api_secret_file"
        );
    }

    #[test]
    fn open_rooms_only_on_loopback_unless_dangerous() {
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let v6: SocketAddr = "[::1]:8080".parse().expect("address");
        assert!(open_rooms_refusal(public, false, false).is_some());
        assert!(open_rooms_refusal(public, true, false).is_none());
        assert!(open_rooms_refusal(public, false, true).is_none());
        assert!(open_rooms_refusal(local, false, false).is_none());
        assert!(open_rooms_refusal(v6, false, false).is_none());
    }
}
