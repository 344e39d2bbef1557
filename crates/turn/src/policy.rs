//! Which peer addresses a TURN allocation may relay to.
//!
//! Deny by default everything that is not a public unicast address: loopback, unspecified,
//! private, CGNAT, link-local, multicast, reserved and documentation ranges — and the IPv6 forms
//! that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by
//! the address they embed. This is the class of bug behind coturn's CVE-2020-26262: a client that
//! may relay to `127.0.0.1` or `::ffff:127.0.0.1` reaches the server's own private services.
//! One predicate, [`PeerPolicy::check`], is used on every path (CreatePermission, ChannelBind,
//! Send).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// 127.0.0.0/8, ::1
    Loopback,
    /// 0.0.0.0/8, ::
    Unspecified,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7
    Private,
    /// 100.64.0.0/10
    SharedAddressSpace,
    /// 169.254/16, fe80::/10
    LinkLocal,
    /// 224/4, ff00::/8, 255.255.255.255
    Multicast,
    /// 240/4, 192.0.0.0/24, 198.18/15, 192.88.99.0/24, and other special-purpose ranges
    Reserved,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32
    Documentation,
    /// One of the server's own addresses.
    ServerAddress,
    /// In the operator's deny list.
    Configured,
}

/// The peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Allow loopback peers (`--dangerous-allow-loopback-peers`): for tests and single-host
    /// setups only.
    pub dangerous_allow_loopback: bool,
    /// Ranges allowed even though the defaults deny them (e.g. an internal 10.0.0.0/8 network).
    pub allow: Vec<IpNet>,
    /// Extra ranges to deny.
    pub deny: Vec<IpNet>,
    /// The server's own addresses (listeners and relays); denied unless allow-listed.
    pub server_addresses: Vec<IpAddr>,
}

impl PeerPolicy {
    /// `Ok` when `ip` may be a peer, else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Err(Denied::Configured);
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        if self
            .server_addresses
            .iter()
            .any(|own| canonical(*own) == ip)
        {
            if self.dangerous_allow_loopback && ip.is_loopback() {
                return Ok(());
            }
            return Err(Denied::ServerAddress);
        }
        match classify(ip) {
            Err(Denied::Loopback) if self.dangerous_allow_loopback => Ok(()),
            other => other,
        }
    }
}

/// IPv4-mapped addresses are IPv4 addresses for every purpose here.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The default verdict for an address, without configuration.
pub fn classify(ip: IpAddr) -> Result<(), Denied> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Result<(), Denied> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => Err(Denied::Unspecified),
        (127, _, _) => Err(Denied::Loopback),
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Err(Denied::Private),
        (100, 64..=127, _) => Err(Denied::SharedAddressSpace),
        (169, 254, _) => Err(Denied::LinkLocal),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Err(Denied::Documentation),
        // IETF protocol assignments, 6to4 relay anycast, benchmarking.
        (192, 0, 0) | (192, 88, 99) | (198, 18..=19, _) => Err(Denied::Reserved),
        (224..=239, _, _) => Err(Denied::Multicast),
        (240..=255, _, _) => {
            if ip.is_broadcast() {
                Err(Denied::Multicast)
            } else {
                Err(Denied::Reserved)
            }
        }
        _ => Ok(()),
    }
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), Denied> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Err(Denied::Unspecified);
    }
    if ip.is_loopback() {
        return Err(Denied::Loopback);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291 §2.5.5.1): judge the embedded address.
    if s[..6] == [0; 6] {
        return classify_v4(embedded_v4(s[6], s[7]));
    }
    // NAT64 well-known and local-use prefixes 64:ff9b::/96 and 64:ff9b:1::/48 (RFC 6052, 8215).
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        return classify_v4(embedded_v4(s[6], s[7]));
    }
    // 6to4 2002:V4ADDR::/48 (RFC 3056).
    if s[0] == 0x2002 {
        return classify_v4(embedded_v4(s[1], s[2]));
    }
    // Teredo 2001:0::/32 (RFC 4380): server IPv4 in bits 32–63, client IPv4 inverted in 96–127.
    if s[0] == 0x2001 && s[1] == 0 {
        classify_v4(embedded_v4(s[2], s[3]))?;
        return classify_v4(embedded_v4(!s[6], !s[7]));
    }
    match s[0] {
        0xfc00..=0xfdff => Err(Denied::Private),
        0xfe80..=0xfebf => Err(Denied::LinkLocal),
        // Deprecated site-local fec0::/10.
        0xfec0..=0xfeff => Err(Denied::Private),
        0xff00..=0xffff => Err(Denied::Multicast),
        0x2001 if s[1] == 0x0db8 => Err(Denied::Documentation),
        // ORCHIDv2, benchmarking 2001:2::/48, discard-only 100::/64, IPv4/IPv6 translation 64:ff9b:: handled above.
        0x2001 if (0x0010..=0x002f).contains(&s[1]) || (s[1] == 2 && s[2] == 0) => {
            Err(Denied::Reserved)
        }
        0x0100 if s[1..4] == [0, 0, 0] => Err(Denied::Reserved),
        // Only 2000::/3 is allocated global unicast.
        0x2000..=0x3fff => Ok(()),
        _ => Err(Denied::Reserved),
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(policy: &PeerPolicy, ip: &str) -> Result<(), Denied> {
        policy.check(ip.parse().expect("ip"))
    }

    #[test]
    fn denies_every_special_range_by_default() {
        let p = PeerPolicy::default();
        for (ip, why) in [
            ("127.0.0.1", Denied::Loopback),
            ("127.255.255.254", Denied::Loopback),
            ("::1", Denied::Loopback),
            ("0.0.0.0", Denied::Unspecified),
            ("0.1.2.3", Denied::Unspecified),
            ("::", Denied::Unspecified),
            ("10.0.0.1", Denied::Private),
            ("172.16.0.1", Denied::Private),
            ("172.31.255.255", Denied::Private),
            ("192.168.1.1", Denied::Private),
            ("fd00::1", Denied::Private),
            ("100.64.0.1", Denied::SharedAddressSpace),
            ("169.254.169.254", Denied::LinkLocal),
            ("fe80::1", Denied::LinkLocal),
            ("224.0.0.1", Denied::Multicast),
            ("255.255.255.255", Denied::Multicast),
            ("ff02::1", Denied::Multicast),
            ("240.0.0.1", Denied::Reserved),
            ("198.18.0.1", Denied::Reserved),
            ("192.0.0.8", Denied::Reserved),
            ("192.0.2.1", Denied::Documentation),
            ("198.51.100.7", Denied::Documentation),
            ("203.0.113.9", Denied::Documentation),
            ("2001:db8::1", Denied::Documentation),
        ] {
            assert_eq!(verdict(&p, ip), Err(why), "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_forms_are_judged_by_what_they_embed() {
        let p = PeerPolicy::default();
        for ip in [
            "::ffff:127.0.0.1", // IPv4-mapped (the 2026 coturn bypass)
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::127.0.0.1", // IPv4-compatible
            "::ffff:0.0.0.0",
            "64:ff9b::7f00:1",              // NAT64 of 127.0.0.1
            "64:ff9b:1::a00:1",             // local-use NAT64 of 10.0.0.1
            "2002:7f00:1::1",               // 6to4 of 127.0.0.1
            "2002:c0a8:101::1",             // 6to4 of 192.168.1.1
            "2001:0:7f00:1::1",             // Teredo server 127.0.0.1
            "2001:0:808:808:0:0:f5ff:fffe", // Teredo client 10.0.0.1 (inverted)
        ] {
            assert!(verdict(&p, ip).is_err(), "{ip} must be denied");
        }
        for ip in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(verdict(&p, ip), Ok(()), "{ip} embeds a public address");
        }
    }

    #[test]
    fn public_unicast_is_allowed() {
        let p = PeerPolicy::default();
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(verdict(&p, ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn options_open_and_close_ranges() {
        let p = PeerPolicy {
            dangerous_allow_loopback: true,
            ..PeerPolicy::default()
        };
        assert_eq!(verdict(&p, "127.0.0.1"), Ok(()));
        assert_eq!(verdict(&p, "::ffff:127.0.0.1"), Ok(()));
        assert_eq!(
            verdict(&p, "10.0.0.1"),
            Err(Denied::Private),
            "only loopback opens"
        );
        let p = PeerPolicy {
            allow: vec!["10.1.0.0/16".parse().expect("net")],
            deny: vec!["8.8.8.0/24".parse().expect("net")],
            server_addresses: vec!["1.2.3.4".parse().expect("ip")],
            ..PeerPolicy::default()
        };
        assert_eq!(verdict(&p, "10.1.2.3"), Ok(()));
        assert_eq!(verdict(&p, "::ffff:10.1.2.3"), Ok(()));
        assert_eq!(verdict(&p, "10.2.0.1"), Err(Denied::Private));
        assert_eq!(verdict(&p, "8.8.8.8"), Err(Denied::Configured));
        assert_eq!(verdict(&p, "1.2.3.4"), Err(Denied::ServerAddress));
        assert_eq!(verdict(&p, "::ffff:1.2.3.4"), Err(Denied::ServerAddress));
    }
}
