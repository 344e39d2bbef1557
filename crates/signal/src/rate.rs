//! A token bucket for the per-connection message rate.

use std::time::{Duration, Instant};

/// Allows `rate` messages per second on average and bursts of `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens available, in millitokens so refills stay exact in integers.
    milli: u64,
    burst_milli: u64,
    rate_per_sec: u64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst_milli = u64::from(burst.max(1)) * 1000;
        TokenBucket {
            milli: burst_milli,
            burst_milli,
            rate_per_sec: u64::from(rate_per_sec.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed >= Duration::from_micros(100) {
            let refill = (elapsed.as_micros() as u64).saturating_mul(self.rate_per_sec) / 1000;
            self.milli = self.milli.saturating_add(refill).min(self.burst_milli);
            self.last = now;
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(50, 100, t0);
        assert_eq!((0..150).filter(|_| bucket.try_take(t0)).count(), 100);
        // One second later exactly 50 more are allowed.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..150).filter(|_| bucket.try_take(t1)).count(), 50);
        // Refill never exceeds the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..150).filter(|_| bucket.try_take(t2)).count(), 100);
    }

    #[test]
    fn steady_sender_at_the_rate_is_never_limited() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(50, 100, t0);
        for i in 0..10_000u64 {
            assert!(bucket.try_take(t0 + Duration::from_millis(20 * i)));
        }
    }
}
