//! The server's configuration: a TOML file, then command-line flags over it.
//!
//! Every field has a documented default, so an empty file (or none) is a working configuration.
//! Unknown keys are errors, and [`Config::validate`] names the field that is out of range.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use signal::{HubConfig, IceServer};

use crate::turn_loop::TurnSettings;

/// Everything `switchboard serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP listener (web app, `/ws`, `/healthz`). Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// How long a shutdown waits for connections to close, in seconds. Default 5.
    pub shutdown_grace_secs: u64,
    /// Log line format: `text` (for people) or `json` (one object per line). Default `text`.
    pub log_format: LogFormat,
    /// Signaling limits.
    pub signaling: SignalingConfig,
    /// ICE servers announced to clients, as `[[ice_servers]]` tables with `urls`, and for TURN
    /// `username` and `credential`. Default: none besides the built-in TURN server's own.
    pub ice_servers: Vec<IceServer>,
    /// The built-in STUN/TURN server.
    pub turn: TurnConfig,
    /// Certificate and key for HTTPS/WSS on `http` and TURN over TLS.
    pub tls: TlsConfig,
    /// The SFU (group calls through the server, WHIP/WHEP).
    pub sfu: SfuConfig,
    /// Per-client-address abuse limits.
    pub limits: crate::limits::LimitsConfig,
    /// API key and secret for access tokens (`docs/security.md`).
    pub auth: crate::access::AuthConfig,
    /// Directory of the SQLite database `switchboard.db` (rooms created through the admin API,
    /// chat history of persistent rooms); created with mode 0700 when missing. `"none"` keeps
    /// them in memory, lost at exit. `switchboard serve` defaults to
    /// `$XDG_DATA_HOME/switchboard`, else `~/.local/share/switchboard`; a `Config` built in
    /// code with `None` stays in memory.
    pub data_dir: Option<std::path::PathBuf>,
    /// `fsync` the database at every commit, so that a power loss loses no acknowledged chat
    /// message either (a process crash never does). Default false.
    pub data_fsync: bool,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's
    /// fields), for log collectors.
    Json,
}

/// The `[sfu]` table: the selective forwarding unit and its media port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuConfig {
    /// Run it. Default true.
    pub enabled: bool,
    /// The one UDP port all SFU media uses. Default `127.0.0.1:7882`; port 0 lets the system
    /// choose.
    pub listen: SocketAddr,
    /// Addresses put in answers as candidates (a public address in front of a NAT). Default:
    /// the listening address, or every interface's address when that is 0.0.0.0.
    pub announce: Vec<IpAddr>,
    /// Most participants in one SFU room. Default 100.
    pub max_per_room: usize,
    /// Most SFU participants in total. Default 2000.
    pub max_participants: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7882)),
            announce: Vec::new(),
            max_per_room: 100,
            max_participants: 2000,
        }
    }
}

impl SfuConfig {
    /// The SFU thread's settings.
    pub fn settings(&self) -> crate::sfu_loop::SfuSettings {
        crate::sfu_loop::SfuSettings {
            listen: self.listen,
            announce: self.announce.clone(),
            max_per_room: self.max_per_room,
            max_participants: self.max_participants,
        }
    }
}

/// The `[tls]` table: a certificate chain and private key in PEM files, or one generated at
/// start. With either, the HTTP listener serves HTTPS/WSS and TURN also listens over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain file.
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key file.
    pub key: Option<std::path::PathBuf>,
    /// Generate a self-signed certificate at start for localhost, the loopback addresses, the
    /// HTTP listening address and `turn.external_host`; its fingerprints are printed. For tests
    /// and private setups: browsers warn unless told the fingerprint. Default false.
    pub self_signed: bool,
    /// Serve HTTPS/WSS on `http` when a certificate is configured. Default true; false keeps
    /// plain HTTP there (behind a TLS-terminating proxy) while TURN over TLS still uses it.
    pub https: bool,
    /// The certificate generated for `self_signed` (set by the server at start).
    #[serde(skip)]
    pub generated: Option<crate::tls::GeneratedCert>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            self_signed: false,
            https: true,
            generated: None,
        }
    }
}

impl TlsConfig {
    /// The rustls server configuration, or `None` when no certificate is configured.
    pub fn server_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
        Ok(self.load()?.map(|(config, _)| config))
    }

    /// The rustls server configuration and the certificate's fingerprints, or `None` when no
    /// certificate is configured. A self-signed certificate not generated yet is generated
    /// (for localhost only) on each call: [`crate::Server::bind`] generates the one it uses.
    pub fn load(
        &self,
    ) -> Result<
        Option<(
            std::sync::Arc<rustls::ServerConfig>,
            crate::tls::TlsIdentity,
        )>,
        ConfigError,
    > {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid =
            |field: &'static str, problem: String| ConfigError::Invalid { field, problem };
        if self.self_signed {
            if self.cert.is_some() || self.key.is_some() {
                return Err(invalid(
                    "tls.self_signed",
                    "cannot be combined with tls.cert and tls.key".into(),
                ));
            }
            let generated = match &self.generated {
                Some(generated) => generated.clone(),
                None => crate::tls::self_signed(&crate::tls::self_signed_hosts(
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    &[],
                ))
                .map_err(|e| invalid("tls.self_signed", e))?,
            };
            let cert = CertificateDer::from(generated.cert);
            let key = PrivateKeyDer::try_from(generated.key)
                .map_err(|e| invalid("tls.self_signed", e.to_string()))?;
            let identity =
                crate::tls::identity(&cert, true).map_err(|e| invalid("tls.self_signed", e))?;
            let config = crate::tls::server_config(vec![cert], key)
                .map_err(|e| invalid("tls.self_signed", e.to_string()))?;
            return Ok(Some((std::sync::Arc::new(config), identity)));
        }
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => return Err(invalid("tls.key", "is required with tls.cert".into())),
            (None, Some(_)) => return Err(invalid("tls.cert", "is required with tls.key".into())),
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| invalid("tls.cert", format!("{}: {e}", cert.display())))?;
        let Some(first) = chain.first() else {
            return Err(invalid(
                "tls.cert",
                format!("{}: no certificate found", cert.display()),
            ));
        };
        let identity = crate::tls::identity(first, false)
            .map_err(|e| invalid("tls.cert", format!("{}: {e}", cert.display())))?;
        let private_key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| invalid("tls.key", format!("{}: {e}", key.display())))?;
        let config = crate::tls::server_config(chain, private_key)
            .map_err(|e| invalid("tls.key", format!("does not match the certificate: {e}")))?;
        Ok(Some((std::sync::Arc::new(config), identity)))
    }
}

/// The `[turn]` table: the built-in STUN/TURN server (RFC 8489, RFC 8656).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Run it. Default true for `serve`.
    pub enabled: bool,
    /// UDP and TCP listening address. Default `127.0.0.1:3478`.
    pub listen: SocketAddr,
    /// Realm of the long-term credentials. Default `switchboard`.
    pub realm: String,
    /// Static users as `"USER:PASSWORD"`.
    pub users: Vec<String>,
    /// Shared secret for coturn-compatible REST credentials (`EXPIRY[:NAME]` usernames). When
    /// unset, `serve` makes a random one at start for its own web clients.
    pub secret: Option<String>,
    /// Lifetime of the REST credentials handed to web clients, in seconds. Default 43200 (12 h).
    pub credential_ttl_secs: u64,
    /// Address relay sockets bind to. Default: the listening address's IP (required when that
    /// is unspecified, like 0.0.0.0).
    pub relay_ip: Option<IpAddr>,
    /// Relay port range, `"LOW-HIGH"`. Default `"49152-65535"`.
    pub relay_ports: String,
    /// Host name or IP clients are told to use in `stun:`/`turn:` URLs. Default: the relay IP.
    pub external_host: Option<String>,
    /// Relay to loopback peers (127.0.0.0/8, ::1). Dangerous: a client could reach services
    /// on the server itself. For tests and single-machine setups only. Default false.
    pub dangerous_allow_loopback_peers: bool,
    /// Peer ranges allowed although the defaults deny them, e.g. `["10.0.0.0/8"]`.
    pub allowed_peer_ranges: Vec<String>,
    /// Extra peer ranges to deny.
    pub denied_peer_ranges: Vec<String>,
    /// Most allocations in total. Default 10000.
    pub max_allocations: usize,
    /// Most allocations per username. Default 128.
    pub max_allocations_per_user: usize,
    /// Relayed bytes per second per allocation (0 = unlimited). Default 12500000 (100 Mbit/s).
    pub max_bytes_per_sec_per_allocation: u64,
    /// Relayed bytes per second for the whole server (0 = unlimited). Default 0.
    pub max_bytes_per_sec_total: u64,
    /// Requests without credentials (STUN Binding, the Allocate that gets the 401 challenge)
    /// per second from one source address, sustained, with bursts of twice as many; more are
    /// dropped unanswered. 0 turns the limit off. Default 50.
    pub unauthenticated_per_sec_per_ip: u32,
    /// TURN over TLS (`turns:`) listening address, used when `[tls]` has a certificate.
    /// Default `127.0.0.1:5349`.
    pub tls_listen: SocketAddr,
}

impl Default for TurnConfig {
    fn default() -> Self {
        let core = turn::ServerConfig::default();
        TurnConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 3478)),
            realm: "switchboard".into(),
            users: Vec::new(),
            secret: None,
            credential_ttl_secs: 12 * 3600,
            relay_ip: None,
            relay_ports: "49152-65535".into(),
            external_host: None,
            dangerous_allow_loopback_peers: false,
            allowed_peer_ranges: Vec::new(),
            denied_peer_ranges: Vec::new(),
            max_allocations: core.max_allocations,
            max_allocations_per_user: core.max_allocations_per_user,
            max_bytes_per_sec_per_allocation: core.max_bytes_per_sec_per_allocation,
            max_bytes_per_sec_total: core.max_bytes_per_sec_total,
            unauthenticated_per_sec_per_ip: core.unauthenticated_per_sec_per_ip,
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 5349)),
        }
    }
}

impl TurnConfig {
    /// Checks the TURN settings and turns them into what the TURN thread needs; TLS is on when
    /// `tls` has a certificate.
    pub fn settings(&self, tls: &TlsConfig) -> Result<TurnSettings, ConfigError> {
        let invalid =
            |field: &'static str, problem: String| ConfigError::Invalid { field, problem };
        if self.realm.is_empty()
            || self.realm.len() > 127
            || self.realm.chars().any(char::is_control)
        {
            return Err(invalid(
                "turn.realm",
                "must be 1 to 127 printable characters".into(),
            ));
        }
        let mut credentials = turn::Credentials::new(self.realm.clone());
        for user in &self.users {
            match user.split_once(':') {
                Some((name, password)) if !name.is_empty() && !password.is_empty() => {
                    credentials.add_user(name, password);
                }
                _ => {
                    return Err(invalid(
                        "turn.users",
                        format!("{user:?} is not USER:PASSWORD"),
                    ));
                }
            }
        }
        if let Some(secret) = &self.secret {
            if secret.len() < 16 {
                return Err(invalid(
                    "turn.secret",
                    "must be at least 16 characters".into(),
                ));
            }
            credentials.set_rest_secret(secret.as_bytes());
        }
        let relay_ip = match self.relay_ip {
            Some(ip) if ip.is_unspecified() => {
                return Err(invalid(
                    "turn.relay_ip",
                    "must be a concrete address, not 0.0.0.0 or ::".into(),
                ));
            }
            Some(ip) => ip,
            None if self.listen.ip().is_unspecified() => {
                return Err(invalid(
                    "turn.relay_ip",
                    "must be set when turn.listen is an unspecified address".into(),
                ));
            }
            None => self.listen.ip(),
        };
        let relay_ports = self
            .relay_ports
            .split_once('-')
            .and_then(|(low, high)| {
                Some((
                    low.trim().parse::<u16>().ok()?,
                    high.trim().parse::<u16>().ok()?,
                ))
            })
            .filter(|(low, high)| *low >= 1024 && low <= high)
            .ok_or_else(|| {
                invalid(
                    "turn.relay_ports",
                    format!("{:?} is not LOW-HIGH within 1024-65535", self.relay_ports),
                )
            })?;
        let parse_nets =
            |field: &'static str, list: &[String]| -> Result<Vec<IpNet>, ConfigError> {
                list.iter()
                    .map(|text| {
                        text.parse::<IpNet>()
                            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                            .map_err(|_| {
                                invalid(field, format!("{text:?} is not an address or CIDR range"))
                            })
                    })
                    .collect()
            };
        check("turn.max_allocations", self.max_allocations, 1, 10_000_000)?;
        check(
            "turn.max_allocations_per_user",
            self.max_allocations_per_user,
            1,
            10_000_000,
        )?;
        check(
            "turn.unauthenticated_per_sec_per_ip",
            self.unauthenticated_per_sec_per_ip,
            0,
            1_000_000,
        )?;
        check(
            "turn.credential_ttl_secs",
            self.credential_ttl_secs,
            60,
            7 * 86_400,
        )?;
        let policy = turn::PeerPolicy {
            dangerous_allow_loopback: self.dangerous_allow_loopback_peers,
            allow: parse_nets("turn.allowed_peer_ranges", &self.allowed_peer_ranges)?,
            deny: parse_nets("turn.denied_peer_ranges", &self.denied_peer_ranges)?,
            server_addresses: vec![self.listen.ip(), relay_ip],
        };
        Ok(TurnSettings {
            listen: self.listen,
            relay_ip,
            relay_ip6: None,
            relay_ports,
            server: turn::ServerConfig {
                max_allocations: self.max_allocations,
                max_allocations_per_user: self.max_allocations_per_user,
                max_bytes_per_sec_per_allocation: self.max_bytes_per_sec_per_allocation,
                max_bytes_per_sec_total: self.max_bytes_per_sec_total,
                unauthenticated_per_sec_per_ip: self.unauthenticated_per_sec_per_ip,
                policy,
                ..turn::ServerConfig::default()
            },
            credentials,
            tls: tls
                .server_config()?
                .map(|config| crate::turn_loop::TlsListener {
                    listen: self.tls_listen,
                    config,
                }),
        })
    }

    /// The host clients should put in `stun:`/`turn:` URLs.
    pub fn url_host(&self, relay_ip: IpAddr) -> String {
        match &self.external_host {
            Some(host) => host.clone(),
            None => match relay_ip {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            },
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_secs: 5,
            log_format: LogFormat::Text,
            limits: crate::limits::LimitsConfig::default(),
            signaling: SignalingConfig::default(),
            ice_servers: Vec::new(),
            turn: TurnConfig::default(),
            tls: TlsConfig::default(),
            sfu: SfuConfig::default(),
            auth: crate::access::AuthConfig::default(),
            data_dir: None,
            data_fsync: false,
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
    /// Longest chat message in a persistent room, in characters. Default 2000.
    pub max_chat_chars: usize,
    /// Sustained chat messages per second per connection. Default 5.
    pub chat_per_second: u32,
    /// Burst of chat messages per connection. Default 20.
    pub chat_burst: u32,
    /// Most stored chat messages a joiner receives. Default 100.
    pub chat_history_on_join: usize,
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
            max_chat_chars: hub.max_chat_chars,
            chat_per_second: hub.chat_per_second,
            chat_burst: hub.chat_burst,
            chat_history_on_join: hub.chat_history_on_join,
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
        check("signaling.max_chat_chars", s.max_chat_chars, 1, 60_000)?;
        check("signaling.chat_per_second", s.chat_per_second, 1, 100_000)?;
        check("signaling.chat_burst", s.chat_burst, 1, 1_000_000)?;
        check(
            "signaling.chat_history_on_join",
            s.chat_history_on_join,
            0,
            store::MAX_CHAT_HISTORY as usize,
        )?;
        if self
            .data_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(ConfigError::Invalid {
                field: "data_dir",
                problem: "must be a directory or \"none\"".into(),
            });
        }
        self.limits.validate()?;
        check("sfu.max_per_room", self.sfu.max_per_room, 1, 100_000)?;
        check(
            "sfu.max_participants",
            self.sfu.max_participants,
            1,
            1_000_000,
        )?;
        if self.turn.enabled {
            self.turn.settings(&self.tls)?;
        }
        self.auth.api_key()?;
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

    /// The signaling hub's settings (without per-peer TURN credentials, which [`crate::Server`]
    /// adds when it runs TURN).
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
            joins_per_sec_per_ip: self.limits.joins_per_sec_per_ip,
            limit_table_size: self.limits.table_size,
            ice_servers: self.ice_servers.clone(),
            ice_server_source: None,
            max_chat_chars: s.max_chat_chars,
            chat_per_second: s.chat_per_second,
            chat_burst: s.chat_burst,
            chat_history_on_join: s.chat_history_on_join,
            ..HubConfig::default()
        }
    }

    /// Where the database lives: `data_dir`, or memory when it is unset or `"none"`.
    pub fn data_location(&self) -> crate::DataLocation {
        match &self.data_dir {
            Some(dir) if dir.as_os_str() != "none" => crate::DataLocation::Dir(dir.clone()),
            _ => crate::DataLocation::Memory,
        }
    }
}

/// The body of the config fuzz target: any bytes as a TOML configuration file parse or fail
/// with an error naming the key, and validation never panics. (Certificate paths are dropped
/// first: validation would read them from disk.)
pub fn fuzz_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = Config::from_toml(text) else {
        return;
    };
    config.tls = TlsConfig::default();
    if config.validate().is_ok() {
        let _ = config.hub_config();
        let _ = config.sfu.settings();
    }
}

pub(crate) fn check<T: PartialOrd + std::fmt::Display>(
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
    fn the_documented_example_is_the_defaults() {
        let example = include_str!("../../../docs/switchboard.example.toml");
        let parsed = Config::from_toml(example).expect("the example parses");
        assert_eq!(
            parsed,
            Config::default(),
            "docs/switchboard.example.toml shows the defaults"
        );
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
    fn turn_settings_validate_and_name_the_field() {
        let mut config = Config::default();
        assert!(config.turn.settings(&config.tls).is_ok());
        let field = |config: &Config| match config.turn.settings(&config.tls) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        config.turn.users = vec!["nocolon".into()];
        assert_eq!(field(&config), "turn.users");
        config = Config::default();
        config.turn.relay_ports = "70000-80000".into();
        assert_eq!(field(&config), "turn.relay_ports");
        config = Config::default();
        config.turn.listen = "0.0.0.0:3478".parse().unwrap();
        assert_eq!(field(&config), "turn.relay_ip");
        config = Config::default();
        config.turn.allowed_peer_ranges = vec!["10.0.0.0/33".into()];
        assert_eq!(field(&config), "turn.allowed_peer_ranges");
        config = Config::default();
        config.turn.secret = Some("short".into());
        assert_eq!(field(&config), "turn.secret");
        let parsed =
            Config::from_toml("[turn]\nusers = [\"a:b\"]\nrelay_ports = \"50000-50100\"").unwrap();
        assert_eq!(
            parsed
                .turn
                .settings(&TlsConfig::default())
                .unwrap()
                .relay_ports,
            (50000, 50100)
        );
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
