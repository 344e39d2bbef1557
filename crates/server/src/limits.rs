//! Per-client-address abuse limits of the HTTP side: WebSocket connections per address and
//! WHIP/WHEP offers per second per address, and which address a request counts against when
//! it comes through a trusted reverse proxy.
//!
//! The joins-per-second limit lives in the signaling hub and the TURN one in the TURN core
//! (both sans-IO, both over [`ratelimit::PerIp`]); this module configures them too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{ConfigError, check};

/// The `[limits]` table. Every limit counts per client address (IPv6 per /64 for the rates);
/// 0 turns a limit off. See `docs/operations.md`, "Limits".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Simultaneous signaling WebSocket connections from one address; more are refused with
    /// HTTP 429 before the upgrade. Default 100.
    pub connections_per_ip: u32,
    /// Joins (fresh or resume) per second from one address, bursts of twice as many; more get
    /// the `rate_limited` error. Default 10.
    pub joins_per_sec_per_ip: u32,
    /// WHIP and WHEP offers (POST) per second from one address, bursts of twice as many; more
    /// get HTTP 429. Default 5.
    pub whip_per_sec_per_ip: u32,
    /// Most addresses each rate table tracks; when full, idle entries are swept and then
    /// arbitrary ones evicted, so a flood from spoofed addresses cannot grow memory. Default
    /// 65536.
    pub table_size: usize,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` or `Forwarded`
    /// header names the client for these limits. Default none: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connections_per_ip: 100,
            joins_per_sec_per_ip: 10,
            whip_per_sec_per_ip: 5,
            table_size: ratelimit::DEFAULT_TABLE_SIZE,
            trusted_proxies: Vec::new(),
        }
    }
}

impl LimitsConfig {
    /// Checks the ranges and the proxy list.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            "limits.connections_per_ip",
            self.connections_per_ip,
            0,
            10_000_000,
        )?;
        check(
            "limits.joins_per_sec_per_ip",
            self.joins_per_sec_per_ip,
            0,
            1_000_000,
        )?;
        check(
            "limits.whip_per_sec_per_ip",
            self.whip_per_sec_per_ip,
            0,
            1_000_000,
        )?;
        check("limits.table_size", self.table_size, 16, 10_000_000)?;
        self.proxies().map(|_| ())
    }

    fn proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        field: "limits.trusted_proxies",
                        problem: format!("{text:?} is not an address or CIDR range"),
                    })
            })
            .collect()
    }
}

/// The HTTP side's limits at run time, shared by every request.
#[derive(Clone)]
pub(crate) struct Limits {
    trusted: Arc<Vec<IpNet>>,
    connections_per_ip: u32,
    connections: Arc<Mutex<HashMap<IpAddr, u32>>>,
    whip: Arc<Mutex<ratelimit::PerIp>>,
}

/// One counted connection; the count goes down when it is dropped.
pub(crate) struct ConnectionSlot {
    ip: IpAddr,
    connections: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.connections.lock()
            && let Some(count) = map.get_mut(&self.ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    /// From a validated configuration.
    pub(crate) fn new(config: &LimitsConfig) -> Result<Self, ConfigError> {
        let rate = config.whip_per_sec_per_ip;
        Ok(Limits {
            trusted: Arc::new(config.proxies()?),
            connections_per_ip: config.connections_per_ip,
            connections: Arc::default(),
            whip: Arc::new(Mutex::new(ratelimit::PerIp::new(
                rate,
                rate.saturating_mul(2),
                config.table_size,
            ))),
        })
    }

    /// The address a request counts against: the TCP peer, or, when the peer is a trusted
    /// proxy, the client its forwarding headers name (the nearest address not itself a
    /// trusted proxy).
    pub(crate) fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer.ip());
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut hops = forwarded_for(headers);
        // Walk from the nearest hop back towards the client.
        while let Some(hop) = hops.pop() {
            if !self.is_trusted(hop) {
                return hop;
            }
        }
        peer
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Counts a new WebSocket connection from `ip`; `None` when it has too many.
    pub(crate) fn connect(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut map = self.connections.lock().ok()?;
        let count = map.entry(ip).or_insert(0);
        if self.connections_per_ip > 0 && *count >= self.connections_per_ip {
            if *count == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            ip,
            connections: self.connections.clone(),
        })
    }

    /// Takes a WHIP/WHEP offer from `ip`; false when it is over the rate.
    pub(crate) fn whip(&self, ip: IpAddr) -> bool {
        self.whip
            .lock()
            .map(|mut limiter| limiter.try_take(ip, Instant::now()))
            .unwrap_or(true)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The client chain from `Forwarded` (RFC 7239 `for=`) or else `X-Forwarded-For`, farthest
/// first; entries that are not addresses (obfuscated names, `unknown`) are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<IpAddr> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.eq_ignore_ascii_case("for").then(|| parse_node(value))?
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_node)
        .collect()
}

/// `192.0.2.1`, `"[2001:db8::1]:443"`, `192.0.2.1:80` → the address.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let inner = text.strip_prefix('[')?;
    let end = inner.find(']')?;
    inner[..end].parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> Limits {
        Limits::new(&LimitsConfig {
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            ..LimitsConfig::default()
        })
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let spoof = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(limits(&[]).client_ip(peer, &spoof), peer.ip());
        let l = limits(&["10.0.0.0/8"]);
        assert_eq!(
            l.client_ip(peer, &spoof),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // The client may prepend anything; the nearest untrusted hop counts.
        let chain = headers(&[("x-forwarded-for", "203.0.113.1, 198.51.100.7, 10.0.0.9")]);
        assert_eq!(
            l.client_ip(peer, &chain),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let rfc = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:443\"",
        )]);
        assert_eq!(
            l.client_ip(peer, &rfc),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(l.client_ip(peer, &headers(&[])), peer.ip());
    }

    #[test]
    fn connections_per_ip_are_counted_and_released() {
        let l = Limits::new(&LimitsConfig {
            connections_per_ip: 2,
            ..LimitsConfig::default()
        })
        .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.connect(ip).unwrap();
        let _b = l.connect(ip).unwrap();
        assert!(l.connect(ip).is_none());
        assert!(l.connect("192.0.2.2".parse().unwrap()).is_some());
        drop(a);
        assert!(l.connect(ip).is_some());
    }

    #[test]
    fn bad_proxy_names_the_field() {
        let config = LimitsConfig {
            trusted_proxies: vec!["10.0.0.0/40".into()],
            ..LimitsConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.trusted_proxies"), "{err}");
    }
}
