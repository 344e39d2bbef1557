//! Simulcast: what each publisher's layers look like, and which one each subscriber gets.
//!
//! A publisher sends the same video several times at different sizes (Chromium: up to three
//! RTP streams told apart by their RID). Per subscriber we forward exactly one of them, picked
//! from the size the subscriber renders the video at and its bandwidth estimate, and we only
//! switch at a keyframe of the new layer so the decoder never sees a reference it lacks. The
//! RTP time of the forwarded stream is rebased on every switch so it keeps increasing smoothly.

use std::time::{Duration, Instant};

/// How long a layer may be silent before it counts as paused (the publisher's encoder dropped
/// it, for CPU or bandwidth).
const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// The window over which a layer's bitrate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(1000);
/// A layer may use this share of the subscriber's estimate per video it receives.
const BWE_HEADROOM: f64 = 0.9;

/// What is known about one layer (one RID) of a published video.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) rid: String,
    /// Frame size from the latest keyframe, when the codec shows it (VP8).
    pub(crate) size: Option<(u16, u16)>,
    last_seen: Option<Instant>,
    rate: RateMeter,
}

impl Layer {
    /// Bits per second over the last complete window.
    pub(crate) fn bitrate(&self) -> u64 {
        self.rate.bitrate
    }
}

/// Bits per second of a stream, over windows of [`RATE_WINDOW`].
#[derive(Debug, Clone, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    window_bytes: u64,
    /// Over the last complete window.
    pub(crate) bitrate: u64,
}

impl RateMeter {
    /// Counts `bytes` sent or received at `now`.
    pub(crate) fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.bitrate = (self.window_bytes * 8 * 1000) / (elapsed.as_millis().max(1) as u64);
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
    }
}

/// The layers of one published video, smallest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerTable {
    layers: Vec<Layer>,
}

impl LayerTable {
    /// A table for these RIDs (as the publisher announced them, any order).
    pub(crate) fn new(rids: impl IntoIterator<Item = String>) -> LayerTable {
        let mut layers: Vec<Layer> = rids
            .into_iter()
            .map(|rid| Layer {
                rid,
                size: None,
                last_seen: None,
                rate: RateMeter::default(),
            })
            .collect();
        layers.sort_by_key(|l| conventional_rank(&l.rid));
        LayerTable { layers }
    }

    /// True when the video is simulcast (more than one layer).
    pub(crate) fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// Layers, smallest first.
    pub(crate) fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Counts a frame of `rid`; `size` when it is a keyframe whose size is known.
    pub(crate) fn observe(
        &mut self,
        rid: &str,
        now: Instant,
        bytes: usize,
        size: Option<(u16, u16)>,
    ) {
        let Some(layer) = self.layers.iter_mut().find(|l| l.rid == rid) else {
            return;
        };
        layer.last_seen = Some(now);
        if let Some(size) = size {
            layer.size = Some(size);
        }
        layer.rate.add(now, bytes);
        // Sizes from keyframes can reorder the table (a layer may be scaled differently).
        if size.is_some() {
            self.layers.sort_by_key(|l| {
                l.size
                    .map(|(w, h)| u32::from(w) * u32::from(h))
                    .unwrap_or_else(|| conventional_rank(&l.rid))
            });
        }
    }

    fn active(&self, layer: &Layer, now: Instant) -> bool {
        layer
            .last_seen
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// The layer a subscriber should get: the smallest one at least as wide as it renders
    /// (`view` in device pixels; `None` = unknown, `Some((0, 0))` = not shown), no more than its
    /// share of the bandwidth estimate, among the layers that are being sent.
    pub(crate) fn choose(
        &self,
        now: Instant,
        view: Option<(u32, u32)>,
        bandwidth_share: Option<u64>,
        unknown_view_prefers_high: bool,
    ) -> Option<&str> {
        let active: Vec<&Layer> = self.layers.iter().filter(|l| self.active(l, now)).collect();
        let candidates = if active.is_empty() {
            self.layers.iter().collect()
        } else {
            active
        };
        let mut pick = match view {
            None if unknown_view_prefers_high => candidates.last().copied(),
            None => candidates.first().copied(),
            Some((w, h)) => candidates
                .iter()
                .copied()
                .find(|l| match l.size {
                    Some((lw, lh)) => u32::from(lw) >= w * 9 / 10 || u32::from(lh) >= h * 9 / 10,
                    None => false,
                })
                .or(candidates.last().copied()),
        };
        if let Some(share) = bandwidth_share {
            let budget = (share as f64 * BWE_HEADROOM) as u64;
            while let Some(layer) = pick {
                if layer.bitrate() <= budget {
                    break;
                }
                let index = candidates
                    .iter()
                    .position(|l| l.rid == layer.rid)
                    .unwrap_or(0);
                if index == 0 {
                    break;
                }
                pick = Some(candidates[index - 1]);
            }
        }
        pick.map(|l| l.rid.as_str())
    }
}

/// Orders common RID names small to large when sizes are not known yet.
fn conventional_rank(rid: &str) -> u32 {
    match rid {
        "q" | "l" | "lo" | "low" | "0" => 1,
        "h" | "m" | "mid" | "1" => 2,
        "f" | "hi" | "high" | "2" => 3,
        _ => 4,
    }
}

/// What a subscriber is being sent of one simulcast video, and the RTP time rebasing.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerState {
    current: Option<String>,
    target: Option<String>,
    /// Added to the publisher's RTP time of `current`.
    offset: u64,
    last_out: Option<(u64, Instant)>,
    /// Clock rate of the video (90 kHz in practice).
    clock: u64,
}

/// What to do with one incoming frame for one subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it with this RTP time.
    Forward(u64),
    /// Not for this subscriber.
    Drop,
}

impl LayerState {
    /// The layer being forwarded.
    pub(crate) fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Forgets what is forwarded (the m-line gets another publisher) but not the RTP time, so
    /// the next stream continues the timeline.
    pub(crate) fn rebind(&mut self) {
        self.current = None;
        self.target = None;
    }

    /// Sets the wanted layer; returns true when a keyframe of it is needed to switch.
    pub(crate) fn set_target(&mut self, rid: Option<&str>) -> bool {
        self.target = rid.map(str::to_owned);
        self.target.is_some() && self.target != self.current
    }

    /// The wanted layer when it differs from the current one (a switch is pending).
    pub(crate) fn pending(&self) -> Option<&str> {
        match (&self.target, &self.current) {
            (Some(t), c) if Some(t) != c.as_ref() => Some(t.as_str()),
            _ => None,
        }
    }

    /// Decides for one frame of layer `rid` with publisher RTP time `time` (clock `clock` Hz).
    pub(crate) fn admit(
        &mut self,
        rid: &str,
        keyframe: bool,
        time: u64,
        clock: u64,
        now: Instant,
    ) -> Verdict {
        self.clock = clock;
        let is_current = self.current.as_deref() == Some(rid);
        let is_target = self.target.as_deref() == Some(rid);
        if is_target && !is_current && keyframe {
            // Switch: continue the outgoing timeline from where it was, advanced by the wall
            // time since the last forwarded frame.
            let next_out = match self.last_out {
                Some((out, at)) => {
                    let advance = (now.saturating_duration_since(at).as_micros() as u64 * clock
                        / 1_000_000)
                        .max(1);
                    out.wrapping_add(advance)
                }
                None => time,
            };
            self.offset = next_out.wrapping_sub(time);
            self.current = Some(rid.to_owned());
        } else if !is_current {
            return Verdict::Drop;
        }
        let out = time.wrapping_add(self.offset);
        self.last_out = Some((out, now));
        Verdict::Forward(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(now: Instant) -> LayerTable {
        let mut t = LayerTable::new(["f".into(), "q".into(), "h".into()]);
        t.observe("q", now, 1000, Some((160, 120)));
        t.observe("h", now, 1000, Some((320, 240)));
        t.observe("f", now, 1000, Some((640, 480)));
        t
    }

    #[test]
    fn layers_sort_small_to_large_by_name_then_by_size() {
        let t = LayerTable::new(["f".into(), "q".into(), "h".into()]);
        let rids: Vec<_> = t.layers().iter().map(|l| l.rid.as_str()).collect();
        assert_eq!(rids, ["q", "h", "f"]);
    }

    #[test]
    fn a_small_tile_gets_the_small_layer_and_a_big_one_the_big_layer() {
        let now = Instant::now();
        let t = table(now);
        assert_eq!(t.choose(now, Some((160, 90)), None, false), Some("q"));
        assert_eq!(t.choose(now, Some((300, 200)), None, false), Some("h"));
        assert_eq!(t.choose(now, Some((1280, 720)), None, false), Some("f"));
        assert_eq!(t.choose(now, None, None, false), Some("q"));
        assert_eq!(t.choose(now, None, None, true), Some("f"));
    }

    #[test]
    fn bandwidth_caps_the_layer() {
        let start = Instant::now();
        let mut t = table(start);
        // 1 s of traffic: q 100 kbit/s, h 400 kbit/s, f 1.2 Mbit/s.
        for (rid, bytes) in [("q", 12_500u64), ("h", 50_000), ("f", 150_000)] {
            t.observe(
                rid,
                start + Duration::from_millis(1001),
                bytes as usize,
                None,
            );
        }
        let now = start + Duration::from_millis(1002);
        // Window closes on the next observation.
        for rid in ["q", "h", "f"] {
            t.observe(rid, now + Duration::from_millis(1000), 0, None);
        }
        let now = now + Duration::from_millis(1000);
        assert_eq!(
            t.choose(now, Some((1280, 720)), Some(2_000_000), false),
            Some("f")
        );
        assert_eq!(
            t.choose(now, Some((1280, 720)), Some(600_000), false),
            Some("h")
        );
        assert_eq!(
            t.choose(now, Some((1280, 720)), Some(10_000), false),
            Some("q")
        );
    }

    #[test]
    fn a_paused_layer_is_skipped() {
        let start = Instant::now();
        let mut t = table(start);
        let later = start + Duration::from_secs(3);
        t.observe("q", later, 10, None);
        t.observe("h", later, 10, None);
        assert_eq!(t.choose(later, Some((1280, 720)), None, false), Some("h"));
    }

    #[test]
    fn switching_waits_for_a_keyframe_and_keeps_time_increasing() {
        let start = Instant::now();
        let mut s = LayerState::default();
        assert!(s.set_target(Some("q")));
        assert_eq!(s.admit("q", false, 1000, 90_000, start), Verdict::Drop);
        assert_eq!(
            s.admit("q", true, 1000, 90_000, start),
            Verdict::Forward(1000)
        );
        assert_eq!(s.current(), Some("q"));
        let t1 = start + Duration::from_millis(33);
        assert_eq!(
            s.admit("q", false, 3970, 90_000, t1),
            Verdict::Forward(3970)
        );
        assert!(s.set_target(Some("f")));
        // The other layer's frames are dropped until its keyframe.
        let t2 = start + Duration::from_millis(66);
        assert_eq!(s.admit("f", false, 500_000, 90_000, t2), Verdict::Drop);
        assert_eq!(
            s.admit("q", false, 6940, 90_000, t2),
            Verdict::Forward(6940)
        );
        let t3 = start + Duration::from_millis(100);
        let Verdict::Forward(out) = s.admit("f", true, 503_060, 90_000, t3) else {
            panic!("keyframe of the target must switch");
        };
        // 34 ms after the last forwarded frame at 90 kHz.
        assert_eq!(out, 6940 + 3060);
        assert_eq!(s.admit("q", false, 9910, 90_000, t3), Verdict::Drop);
        assert_eq!(s.pending(), None);
    }

    #[test]
    fn another_publisher_on_the_same_m_line_continues_the_timeline() {
        let start = Instant::now();
        let mut s = LayerState::default();
        s.set_target(Some(""));
        assert_eq!(
            s.admit("", true, 50_000, 90_000, start),
            Verdict::Forward(50_000)
        );
        s.rebind();
        s.set_target(Some(""));
        let later = start + Duration::from_millis(1000);
        // A new source with an unrelated timestamp: 1 s later on the outgoing timeline.
        assert_eq!(s.admit("", false, 7, 90_000, later), Verdict::Drop);
        assert_eq!(
            s.admit("", true, 7, 90_000, later),
            Verdict::Forward(140_000)
        );
        assert_eq!(
            s.admit("", false, 3007, 90_000, later),
            Verdict::Forward(143_000)
        );
    }
}
