//! The server's configuration: a TOML file, then command-line flags over it.
//!
//! Every field has a documented default, so an empty file (or none) is a working configuration.
//! Unknown keys are errors, and [`Config::validate`] names the field that is out of range.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use signal::{HubConfig, IceServer};

/// Everything `switchboard serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP listener (web app, `/ws`, `/healthz`). Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// How long a shutdown waits for connections to close, in seconds. Default 5.
    pub shutdown_grace_secs: u64,
    /// Signaling limits.
    pub signaling: SignalingConfig,
    /// ICE servers announced to clients, as `[[ice_servers]]` tables with `urls`, and for TURN
    /// `username` and `credential`. Default: none (host candidates suffice on one machine or LAN).
    pub ice_servers: Vec<IceServer>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_secs: 5,
            signaling: SignalingConfig::default(),
            ice_servers: Vec::new(),
        }
    }
}

/// The `[signaling]` table (see `docs/protocol.md`, "Limits").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingConfig {
    /// Largest frame a client may send, in bytes. Default 65536.
    pub max_frame_bytes: usize,
    /// Most participants in one room. Default 6 (a browser full mesh).
    pub max_peers_per_room: usize,
    /// Sustained messages per second per connection. Default 50.
    pub messages_per_second: u32,
    /// Burst of messages per connection. Default 100.
    pub message_burst: u32,
    /// Seconds a dropped peer may resume. Default 30.
    pub resume_grace_secs: u64,
    /// Seconds of silence before a connection is closed. Default 45.
    pub idle_timeout_secs: u64,
    /// Most simultaneous WebSocket connections. Default 20000.
    pub max_connections: usize,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        let hub = HubConfig::default();
        SignalingConfig {
            max_frame_bytes: hub.max_frame_bytes,
            max_peers_per_room: hub.max_peers_per_room,
            messages_per_second: hub.messages_per_second,
            message_burst: hub.message_burst,
            resume_grace_secs: hub.resume_grace.as_secs(),
            idle_timeout_secs: hub.idle_timeout.as_secs(),
            max_connections: hub.max_connections,
        }
    }
}

/// A configuration that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the key and position).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's explanation.
        message: String,
    },
    /// A value is out of range.
    #[error("config field `{field}`: {problem}")]
    Invalid {
        /// The dotted field name, as in the file.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Config {
    /// Reads a TOML file. It is not validated yet: flags may still override it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text; the error text names the offending key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.signaling;
        check(
            "signaling.max_frame_bytes",
            s.max_frame_bytes,
            1024,
            16 << 20,
        )?;
        check(
            "signaling.max_peers_per_room",
            s.max_peers_per_room,
            2,
            10_000,
        )?;
        check(
            "signaling.messages_per_second",
            s.messages_per_second,
            1,
            100_000,
        )?;
        check("signaling.message_burst", s.message_burst, 1, 1_000_000)?;
        check("signaling.resume_grace_secs", s.resume_grace_secs, 0, 3600)?;
        check("signaling.idle_timeout_secs", s.idle_timeout_secs, 5, 3600)?;
        check(
            "signaling.max_connections",
            s.max_connections,
            1,
            10_000_000,
        )?;
        check("shutdown_grace_secs", self.shutdown_grace_secs, 0, 3600)?;
        for server in &self.ice_servers {
            if server.urls.is_empty() {
                return Err(ConfigError::Invalid {
                    field: "ice_servers.urls",
                    problem: "must list at least one URL".into(),
                });
            }
            if let Some(url) = server.urls.iter().find(|u| {
                !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:"))
            }) {
                return Err(ConfigError::Invalid {
                    field: "ice_servers.urls",
                    problem: format!("{url:?} is not a stun:, turn: or turns: URL"),
                });
            }
        }
        Ok(())
    }

    /// The signaling hub's settings.
    pub fn hub_config(&self) -> HubConfig {
        let s = &self.signaling;
        HubConfig {
            max_frame_bytes: s.max_frame_bytes,
            max_peers_per_room: s.max_peers_per_room,
            messages_per_second: s.messages_per_second,
            message_burst: s.message_burst,
            resume_grace: Duration::from_secs(s.resume_grace_secs),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            max_connections: s.max_connections,
            ice_servers: self.ice_servers.clone(),
            ..HubConfig::default()
        }
    }
}

fn check<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            field,
            problem: format!("{value} is out of range ({min} to {max})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml(""), Ok(Config::default()));
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn full_file_parses() {
        let config = Config::from_toml(
            r#"
            http = "0.0.0.0:9000"
            [signaling]
            max_peers_per_room = 8
            [[ice_servers]]
            urls = ["stun:192.0.2.1:3478"]
            "#,
        )
        .expect("valid");
        assert_eq!(config.http.port(), 9000);
        assert_eq!(config.signaling.max_peers_per_room, 8);
        assert_eq!(config.signaling.message_burst, 100);
        assert_eq!(config.ice_servers.len(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::from_toml("[signaling]\nmax_peers_per_room = \"six\"").unwrap_err();
        assert!(err.contains("max_peers_per_room"), "{err}");
        let err = Config::from_toml("htp = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.contains("htp"), "{err}");
        let err = Config::from_toml("http = \"localhost\"").unwrap_err();
        assert!(err.contains("http"), "{err}");
        let mut config = Config::default();
        config.signaling.max_peers_per_room = 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("signaling.max_peers_per_room"), "{err}");
        config = Config::default();
        config.ice_servers.push(IceServer {
            urls: vec!["http://x".into()],
            username: None,
            credential: None,
        });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ice_servers.urls"), "{err}");
    }
}
