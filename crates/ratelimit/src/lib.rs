//! Per-source-address rate limits for Switchboard's abuse limits: a token bucket per client
//! address, in a table of bounded size.
//!
//! The table never grows past its capacity, however many addresses send (a flood with spoofed
//! source addresses cannot make it eat memory): buckets that have refilled completely carry no
//! information and are swept out (at most once a second), and when the table is still full an
//! arbitrary entry is evicted, which at worst hands that address a fresh burst. IPv6 addresses
//! are limited per /64, the block one subscriber usually holds.
//!
//! What this crate is not: a clock or a socket. Every call carries `now`; `signal`, `turn` and
//! the server's glue each keep their own [`PerIp`] tables.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The default table size: 65,536 addresses, about 3 MiB at most.
pub const DEFAULT_TABLE_SIZE: usize = 65_536;

/// A token bucket per client address: `rate` events per second sustained, bursts of `burst`.
#[derive(Debug, Clone)]
pub struct PerIp {
    rate_per_sec: u64,
    burst_milli: u64,
    capacity: usize,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in thousandths, so refills stay exact in integers.
    milli: u64,
    last: Instant,
}

impl PerIp {
    /// A limiter allowing `rate_per_sec` events per second and bursts of `burst` per address,
    /// tracking at most `capacity` addresses. A rate of 0 disables the limit.
    pub fn new(rate_per_sec: u32, burst: u32, capacity: usize) -> Self {
        PerIp {
            rate_per_sec: u64::from(rate_per_sec),
            burst_milli: u64::from(burst.max(1)) * 1000,
            capacity: capacity.max(1),
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Whether this limiter limits anything (a rate of 0 does not).
    pub fn enabled(&self) -> bool {
        self.rate_per_sec > 0
    }

    /// Takes one token for `ip` at `now`: `true` when the event is allowed.
    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        let key = key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            self.make_room(now);
        }
        let (rate, burst) = (self.rate_per_sec, self.burst_milli);
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            milli: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last);
        if elapsed >= Duration::from_micros(100) {
            let refill = (elapsed.as_micros() as u64).saturating_mul(rate) / 1000;
            bucket.milli = bucket.milli.saturating_add(refill).min(burst);
            bucket.last = now;
        }
        if bucket.milli >= 1000 {
            bucket.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Addresses tracked now (at most the capacity).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Frees at least one slot: sweeps refilled buckets (once a second at most), else evicts
    /// one entry.
    fn make_room(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1));
        if due {
            self.last_sweep = Some(now);
            let (rate, burst) = (self.rate_per_sec, self.burst_milli);
            // A bucket is full again once `burst / rate` seconds have passed since its last use.
            let full_after = Duration::from_micros(burst.saturating_mul(1000) / rate.max(1));
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < full_after);
        }
        if self.buckets.len() >= self.capacity
            && let Some(victim) = self.buckets.keys().next().copied()
        {
            self.buckets.remove(&victim);
        }
    }
}

/// IPv4 addresses as they are; IPv6 by their /64 (IPv4-mapped IPv6 as the IPv4 address).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn burst_then_rate_per_address() {
        let t0 = Instant::now();
        let mut limit = PerIp::new(5, 10, 100);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        assert_eq!((0..20).filter(|_| limit.try_take(a, t0)).count(), 10);
        // Another address has its own bucket.
        assert!(limit.try_take(b, t0));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| limit.try_take(a, t1)).count(), 5);
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut limit = PerIp::new(1, 1, 100);
        assert!(limit.try_take(ip("2001:db8:1:2::1"), t0));
        assert!(!limit.try_take(ip("2001:db8:1:2::ffff"), t0));
        assert!(limit.try_take(ip("2001:db8:1:3::1"), t0));
        assert!(limit.try_take(ip("192.0.2.9"), t0));
        assert!(!limit.try_take(ip("::ffff:192.0.2.9"), t0));
    }

    #[test]
    fn a_spoofed_flood_cannot_grow_the_table() {
        let t0 = Instant::now();
        let mut limit = PerIp::new(10, 20, 1000);
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 10);
            let _ = limit.try_take(IpAddr::from(i.to_be_bytes()), now);
            assert!(limit.len() <= 1000);
        }
        // A steady sender stays limited through the flood's evictions most of the time, and
        // refilled entries are swept once they carry no information.
        let later = t0 + Duration::from_secs(60);
        let _ = limit.try_take(ip("198.51.100.1"), later);
        assert!(limit.len() <= 2, "{}", limit.len());
    }

    #[test]
    fn zero_rate_disables() {
        let mut limit = PerIp::new(0, 0, 1);
        let now = Instant::now();
        assert!((0..1000).all(|i| limit.try_take(IpAddr::from([10, 0, 0, (i % 250) as u8]), now)));
        assert!(limit.is_empty());
    }
}
