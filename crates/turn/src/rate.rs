//! A byte-rate token bucket for bandwidth quotas.

use std::time::Instant;

/// Allows `rate` bytes per second on average with bursts of one second's worth.
#[derive(Debug, Clone)]
pub(crate) struct ByteBucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl ByteBucket {
    /// `rate` of 0 means unlimited.
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        ByteBucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    pub(crate) fn try_take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        let refill = (elapsed.as_micros() as u64).saturating_mul(self.rate) / 1_000_000;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.rate);
            self.last = now;
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}
