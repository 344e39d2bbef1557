//! Active speaker detection from the audio levels publishers put in their RTP headers
//! (RFC 6464: the level in -dBov, 0 loudest, 127 silence).
//!
//! Each publisher's score is how far its packets of the last second rose above a noise floor,
//! summed and divided by the packets a second holds: loud speech scores high, and so does
//! steady speech with pauses between words, while a cough or background hum stays low. The
//! loudest publisher above a minimum score is the speaker; a challenger must beat the current
//! speaker by a margin, so two people talking at once do not make the highlight flicker.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Levels quieter than this (in -dBov) are the noise floor.
const FLOOR_DBOV: u8 = 60;
/// The window scores are taken over.
const WINDOW: Duration = Duration::from_secs(1);
/// Audio packets in a window (20 ms each).
const PACKETS_PER_WINDOW: f64 = 50.0;
/// The score someone needs to count as speaking (an average of 3 dB above the floor).
const MIN_SCORE: f64 = 3.0;
/// A challenger must score this many times the current speaker to take over.
const MARGIN: f64 = 1.5;

/// The speaker state of one room, keyed by publisher label.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    levels: HashMap<String, VecDeque<(Instant, u8)>>,
    current: Option<String>,
}

impl SpeakerDetector {
    /// One audio packet's level from `who` (`dbov` as carried: 0..=127 below full scale).
    pub(crate) fn observe(&mut self, who: &str, dbov: u8, now: Instant) {
        let recent = self.levels.entry(who.to_owned()).or_default();
        recent.push_back((now, dbov.min(127)));
        while recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            recent.pop_front();
        }
    }

    /// Who speaks now.
    pub(crate) fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Forgets a publisher that left.
    pub(crate) fn remove(&mut self, who: &str) {
        self.levels.remove(who);
        if self.current.as_deref() == Some(who) {
            self.current = None;
        }
    }

    fn score(&self, who: &str, now: Instant) -> f64 {
        let Some(recent) = self.levels.get(who) else {
            return 0.0;
        };
        let sum: u32 = recent
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)
            .map(|(_, dbov)| u32::from(FLOOR_DBOV.saturating_sub(*dbov)))
            .sum();
        f64::from(sum) / PACKETS_PER_WINDOW
    }

    /// Re-evaluates; returns the new speaker when it changed (`Some(None)`: nobody speaks).
    pub(crate) fn evaluate(&mut self, now: Instant) -> Option<Option<String>> {
        let loudest = self
            .levels
            .keys()
            .map(|who| (who.clone(), self.score(who, now)))
            .filter(|(_, score)| *score >= MIN_SCORE)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let current = self
            .current
            .as_ref()
            .map(|c| self.score(c, now))
            .filter(|score| *score >= MIN_SCORE);
        let next = match (loudest, current) {
            (None, _) => None,
            (Some((who, _)), None) => Some(who),
            (Some((who, score)), Some(current)) if score > current * MARGIN => Some(who),
            (Some(_), Some(_)) => self.current.clone(),
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

    /// `who` sends 20 ms packets for `ms`, at `dbov` for `on` packets then silence for `off`.
    fn talk(
        d: &mut SpeakerDetector,
        who: &str,
        dbov: u8,
        start: Instant,
        ms: u64,
        on: u64,
        off: u64,
    ) {
        for i in 0..ms / 20 {
            let level = if i % (on + off) < on { dbov } else { 127 };
            d.observe(who, level, start + Duration::from_millis(i * 20));
        }
    }

    #[test]
    fn the_loud_one_speaks_and_silence_ends_it() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        talk(&mut d, "a", 20, t0, 1000, 1, 0);
        talk(&mut d, "b", 110, t0, 1000, 1, 0);
        let t1 = t0 + Duration::from_millis(980);
        assert_eq!(d.evaluate(t1), Some(Some("a".into())));
        assert_eq!(d.evaluate(t1), None);
        assert_eq!(d.evaluate(t0 + Duration::from_secs(3)), Some(None));
    }

    #[test]
    fn speech_with_pauses_counts_but_a_short_click_does_not() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        // Half the packets at -20 dBov, half silent: words with pauses.
        talk(&mut d, "a", 20, t0, 1000, 5, 5);
        // One loud packet in a second of silence.
        talk(&mut d, "b", 0, t0, 20, 1, 0);
        assert_eq!(
            d.evaluate(t0 + Duration::from_millis(980)),
            Some(Some("a".into()))
        );
    }

    #[test]
    fn a_slightly_louder_challenger_does_not_take_over_but_a_much_louder_one_does() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        talk(&mut d, "a", 30, t0, 1000, 1, 0);
        assert_eq!(
            d.evaluate(t0 + Duration::from_millis(980)),
            Some(Some("a".into()))
        );
        let t1 = t0 + Duration::from_secs(1);
        talk(&mut d, "a", 30, t1, 1000, 1, 0);
        talk(&mut d, "b", 26, t1, 1000, 1, 0);
        assert_eq!(d.evaluate(t1 + Duration::from_millis(980)), None);
        let t2 = t1 + Duration::from_secs(1);
        talk(&mut d, "a", 50, t2, 1000, 1, 0);
        talk(&mut d, "b", 5, t2, 1000, 1, 0);
        assert_eq!(
            d.evaluate(t2 + Duration::from_millis(980)),
            Some(Some("b".into()))
        );
    }
}
