//! Active speaker detection from the audio levels publishers put in their RTP headers
//! (RFC 6464: the level in -dBov, 0 loudest, 127 silence).
//!
//! Each audio track keeps a smoothed loudness; at every evaluation the loudest track above a
//! floor becomes the speaker if it beats the current one by a margin, so two people talking at
//! once do not make the highlight flicker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Levels quieter than this (in -dBov) count as silence.
const SILENCE_DBOV: u8 = 60;
/// A challenger must be this much louder (in smoothed dB) to take over.
const MARGIN_DB: f64 = 4.0;
/// A speaker who has sent no loud packet for this long stops being the speaker.
const QUIET_AFTER: Duration = Duration::from_millis(1500);
/// Smoothing factor of the exponential moving average per packet (about 20 ms each).
const ALPHA: f64 = 0.1;

#[derive(Debug, Clone)]
struct Level {
    smoothed: f64,
    last_loud: Option<Instant>,
}

/// The speaker state of one room, keyed by publisher label.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    levels: HashMap<String, Level>,
    current: Option<String>,
}

impl SpeakerDetector {
    /// One audio packet's level from `who` (`dbov` as carried: 0..=127 below full scale).
    pub(crate) fn observe(&mut self, who: &str, dbov: u8, now: Instant) {
        let loudness = f64::from(127u8.saturating_sub(dbov.min(127)));
        let level = self.levels.entry(who.to_owned()).or_insert(Level {
            smoothed: 0.0,
            last_loud: None,
        });
        level.smoothed += ALPHA * (loudness - level.smoothed);
        if dbov < SILENCE_DBOV {
            level.last_loud = Some(now);
        }
    }

    /// Forgets a publisher that left.
    pub(crate) fn remove(&mut self, who: &str) {
        self.levels.remove(who);
        if self.current.as_deref() == Some(who) {
            self.current = None;
        }
    }

    /// Re-evaluates; returns the new speaker when it changed (`Some(None)`: nobody speaks).
    pub(crate) fn evaluate(&mut self, now: Instant) -> Option<Option<String>> {
        let floor = f64::from(127 - SILENCE_DBOV);
        let speaking = |l: &Level| {
            l.smoothed >= floor
                && l.last_loud
                    .is_some_and(|t| now.saturating_duration_since(t) < QUIET_AFTER)
        };
        let loudest = self
            .levels
            .iter()
            .filter(|(_, l)| speaking(l))
            .max_by(|a, b| a.1.smoothed.total_cmp(&b.1.smoothed))
            .map(|(who, l)| (who.clone(), l.smoothed));
        let current_level = self
            .current
            .as_ref()
            .and_then(|c| self.levels.get(c))
            .filter(|l| speaking(l))
            .map(|l| l.smoothed);
        let next = match (loudest, current_level) {
            (None, _) => None,
            (Some((who, _)), None) => Some(who),
            (Some((who, level)), Some(current)) => {
                if level > current + MARGIN_DB {
                    Some(who)
                } else {
                    self.current.clone()
                }
            }
        };
        if next != self.current {
            self.current.clone_from(&next);
            Some(next)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talk(d: &mut SpeakerDetector, who: &str, dbov: u8, start: Instant, ms: u64) {
        for i in 0..ms / 20 {
            d.observe(who, dbov, start + Duration::from_millis(i * 20));
        }
    }

    #[test]
    fn the_loud_one_speaks_and_silence_ends_it() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        talk(&mut d, "a", 20, t0, 600);
        talk(&mut d, "b", 110, t0, 600);
        assert_eq!(
            d.evaluate(t0 + Duration::from_millis(600)),
            Some(Some("a".into()))
        );
        assert_eq!(d.evaluate(t0 + Duration::from_millis(700)), None);
        assert_eq!(d.evaluate(t0 + Duration::from_secs(3)), Some(None));
    }

    #[test]
    fn a_slightly_louder_challenger_does_not_take_over_but_a_much_louder_one_does() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        talk(&mut d, "a", 30, t0, 1000);
        assert_eq!(
            d.evaluate(t0 + Duration::from_secs(1)),
            Some(Some("a".into()))
        );
        let t1 = t0 + Duration::from_secs(1);
        talk(&mut d, "a", 30, t1, 1000);
        talk(&mut d, "b", 28, t1, 1000);
        assert_eq!(d.evaluate(t1 + Duration::from_secs(1)), None);
        let t2 = t1 + Duration::from_secs(1);
        talk(&mut d, "a", 40, t2, 1000);
        talk(&mut d, "b", 5, t2, 1000);
        assert_eq!(
            d.evaluate(t2 + Duration::from_secs(1)),
            Some(Some("b".into()))
        );
    }
}
