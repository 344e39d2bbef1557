//! TURN options shared by `serve` and `turn`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use server::{TlsConfig, TurnConfig};

/// STUN/TURN server options; each overrides the same `[turn]` setting of `--config`.
#[derive(Debug, Args)]
pub(crate) struct TurnArgs {
    /// STUN/TURN listening address, UDP and TCP on the same port [default: 127.0.0.1:3478]
    #[arg(long = "turn", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// A static TURN user; repeat for several
    #[arg(long = "turn-user", value_name = "USER:PASS")]
    users: Vec<String>,

    /// Shared secret for coturn-compatible REST credentials (usernames `EXPIRY[:NAME]`,
    /// passwords base64(HMAC-SHA1(secret, username)))
    #[arg(
        long = "turn-secret",
        env = "SWITCHBOARD_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,

    /// Realm of the TURN credentials [default: switchboard]
    #[arg(long = "turn-realm", value_name = "REALM")]
    realm: Option<String>,

    /// Address relay sockets bind to [default: the TURN listening IP]
    #[arg(long, value_name = "IP")]
    relay_ip: Option<IpAddr>,

    /// Relay port range [default: 49152-65535]
    #[arg(long, value_name = "LOW-HIGH")]
    relay_ports: Option<String>,

    /// Host clients should use in stun:/turn: URLs [default: the relay IP]
    #[arg(long, value_name = "HOST")]
    turn_external_host: Option<String>,

    /// DANGEROUS: relay to loopback peers (127.0.0.0/8, ::1), letting TURN clients reach
    /// services on this machine. For tests and single-machine setups only
    #[arg(long)]
    dangerous_allow_loopback_peers: bool,

    /// Allow relaying to this range although the defaults deny it (e.g. 10.0.0.0/8); repeatable
    #[arg(long = "allow-peer", value_name = "CIDR")]
    allowed_peer_ranges: Vec<String>,

    /// Deny relaying to this range; repeatable
    #[arg(long = "deny-peer", value_name = "CIDR")]
    denied_peer_ranges: Vec<String>,

    /// Unauthenticated STUN/TURN requests (Binding, the first Allocate) per second from one
    /// source address; more are dropped. 0 turns the limit off [default: 50]
    #[arg(long = "turn-unauthenticated-per-sec", value_name = "N")]
    unauthenticated_per_sec_per_ip: Option<u32>,

    /// Most TURN allocations per username [default: 128]
    #[arg(long = "turn-max-allocations-per-user", value_name = "N")]
    max_allocations_per_user: Option<usize>,

    /// TURN over TLS (turns:) listening address, used with --tls-cert or --tls-self-signed
    /// [default: 127.0.0.1:5349]
    #[arg(long = "turn-tls", value_name = "ADDR:PORT")]
    tls_listen: Option<SocketAddr>,

    /// PEM certificate chain: the HTTP listener serves HTTPS/WSS (unless `https = false` in
    /// [tls]) and TURN also listens over TLS
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Generate a self-signed certificate at start (for localhost, the loopback addresses and
    /// the listening address) and print its fingerprints; instead of --tls-cert
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,
}

impl TurnArgs {
    /// Applies the given flags over the `[turn]` and `[tls]` settings.
    pub(crate) fn apply(self, config: &mut TurnConfig, tls: &mut TlsConfig) {
        if let Some(rate) = self.unauthenticated_per_sec_per_ip {
            config.unauthenticated_per_sec_per_ip = rate;
        }
        if let Some(max) = self.max_allocations_per_user {
            config.max_allocations_per_user = max;
        }
        if let Some(listen) = self.tls_listen {
            config.tls_listen = listen;
        }
        if self.tls_cert.is_some() {
            tls.cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            tls.key = self.tls_key;
        }
        if self.tls_self_signed {
            tls.self_signed = true;
            tls.cert = None;
            tls.key = None;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        config.users.extend(self.users);
        if self.secret.is_some() {
            config.secret = self.secret;
        }
        if let Some(realm) = self.realm {
            config.realm = realm;
        }
        if self.relay_ip.is_some() {
            config.relay_ip = self.relay_ip;
        }
        if let Some(ports) = self.relay_ports {
            config.relay_ports = ports;
        }
        if self.turn_external_host.is_some() {
            config.external_host = self.turn_external_host;
        }
        config.dangerous_allow_loopback_peers |= self.dangerous_allow_loopback_peers;
        config.allowed_peer_ranges.extend(self.allowed_peer_ranges);
        config.denied_peer_ranges.extend(self.denied_peer_ranges);
    }
}
