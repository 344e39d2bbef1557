//! Forwarding RTP packets as they are: where a keyframe starts, and the per-subscriber rewriting
//! that makes packets from several sources (simulcast layers, one publisher after another) one
//! continuous stream on the subscriber's m-line: sequence numbers, and VP8 picture ids.

use str0m::format::Codec;
use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// Sequence numbers of a new source start this far past the last one sent, so a subscriber
/// that missed the previous source's last packets asks for nothing that exists on the new one.
const SEQ_GAP: u64 = 1;

/// Whether `payload` (an RTP payload of `codec`) is the first packet of a keyframe.
pub(crate) fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => Vp8Descriptor::parse(payload).is_ok_and(|d| d.starts_keyframe(payload)),
        Codec::H264 => h264_starts_keyframe(payload),
        _ => false,
    }
}

/// Whether keyframes of `codec` can be told from its payload (otherwise every packet may start
/// a stream).
pub(crate) fn keyframes_known(codec: Codec) -> bool {
    matches!(codec, Codec::Vp8 | Codec::H264)
}

/// The VP8 frame inside a packet that starts one (after the payload descriptor, RFC 7741 §4.2).
pub(crate) fn vp8_frame(payload: &[u8]) -> Option<&[u8]> {
    let first = *payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        at = 2;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at..)
}

/// H.264 (RFC 6184): an IDR slice or a sequence parameter set, alone, first in a STAP-A, or at
/// the start of an FU-A.
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        24 => {
            // STAP-A: 16-bit sizes, each followed by a NAL unit.
            let mut at = 1;
            while let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                let Some(&nal) = payload.get(at + 2) else {
                    return false;
                };
                if size > 0 && key(nal & 0x1f) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && key(fu & 0x1f)),
        t => key(t),
    }
}

/// Where a subscriber's m-line takes its packets from: a published track, and a simulcast layer.
pub(crate) type SourceKey = (u64, Option<str0m::media::Rid>);

/// One subscriber m-line's numbering: each new source continues where the last one ended.
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    source: Option<SourceKey>,
    /// Added to a source's extended sequence number.
    seq_offset: u64,
    /// The first sequence number sent for the current source: anything older from it (a late
    /// packet from before the switch) would collide with the previous source's numbers.
    seq_floor: u64,
    /// The highest sequence number sent.
    seq_last: Option<u64>,
    /// Added to VP8 picture ids (15 bits) and TL0PICIDX of the current source.
    picture_offset: u16,
    tl0_offset: u8,
    picture_last: Option<u16>,
    tl0_last: Option<u8>,
    /// The current source's first packet has not been seen yet.
    fresh: bool,
}

impl Rewriter {
    /// The outgoing sequence number for a packet of `source`, or `None` to drop it.
    pub(crate) fn sequence(&mut self, source: SourceKey, seq: u64) -> Option<u64> {
        if self.source != Some(source) {
            // Start from a sequence number with no rollover, as the receiver expects on a
            // stream's first packet (SRTP's rollover counter is not signalled).
            let next = self.seq_last.map_or(seq & 0xffff, |last| last + SEQ_GAP);
            self.source = Some(source);
            self.seq_offset = next.wrapping_sub(seq);
            self.seq_floor = next;
            self.fresh = true;
        }
        let out = seq.wrapping_add(self.seq_offset);
        if out < self.seq_floor {
            return None;
        }
        self.seq_last = Some(self.seq_last.map_or(out, |last| last.max(out)));
        Some(out)
    }

    /// A patch renumbering a VP8 packet's picture id and TL0PICIDX (from its parsed payload
    /// `descriptor`) so they continue across sources; `None` when nothing needs to change. Call
    /// after [`Rewriter::sequence`] admitted the packet.
    pub(crate) fn vp8_patch(&mut self, descriptor: &Vp8Descriptor) -> Option<Vp8Patch> {
        let picture = descriptor.picture_id();
        let tl0 = descriptor.tl0_pic_idx();
        if self.fresh {
            self.fresh = false;
            if let (Some(p), Some(last)) = (picture, self.picture_last) {
                self.picture_offset = last.wrapping_add(1).wrapping_sub(p) & 0x7fff;
            }
            if let (Some(t), Some(last)) = (tl0, self.tl0_last) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(t);
            }
        }
        let picture_out = picture.map(|p| p.wrapping_add(self.picture_offset) & 0x7fff);
        let tl0_out = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        if let Some(p) = picture_out {
            self.picture_last = Some(p);
        }
        if let Some(t) = tl0_out {
            self.tl0_last = Some(t);
        }
        if self.picture_offset == 0 && self.tl0_offset == 0 {
            return None;
        }
        let mut patch = descriptor.patch();
        if let Some(p) = picture_out {
            patch = patch.picture_id(p);
        }
        if let Some(t) = tl0_out {
            patch = patch.tl0_pic_idx(t);
        }
        patch.build().ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_are_found_after_the_descriptor() {
        // X, S, PID 0; I with a 15-bit picture id; then a keyframe tag (P bit clear).
        let key = [0x90, 0x80, 0x81, 0x23, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a];
        assert!(starts_keyframe(Codec::Vp8, &key));
        assert_eq!(vp8_frame(&key).map(|f| f[0]), Some(0x50));
        let delta = [0x90, 0x80, 0x81, 0x24, 0x51, 0x42, 0x00];
        assert!(!starts_keyframe(Codec::Vp8, &delta));
        // Not the start of the frame.
        let middle = [0x80, 0x80, 0x81, 0x23, 0x50];
        assert!(!starts_keyframe(Codec::Vp8, &middle));
        assert!(!starts_keyframe(Codec::Vp8, &[]));
    }

    #[test]
    fn h264_keyframes_alone_aggregated_or_fragmented() {
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(Codec::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a]));
        // STAP-A: a 2-byte SEI (type 6) then an SPS.
        assert!(starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x67, 0x42]
        ));
        // FU-A start of an IDR, and its continuation.
        assert!(starts_keyframe(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c, 0x05, 0x00]));
        // A truncated STAP-A.
        assert!(!starts_keyframe(Codec::H264, &[0x78, 0x00]));
    }

    #[test]
    fn sequence_numbers_continue_across_sources_and_keep_gaps() {
        let mut r = Rewriter::default();
        let a = (1, None);
        let b = (2, None);
        assert_eq!(r.sequence(a, 70_000), Some(70_000 & 0xffff));
        let first = 70_000 & 0xffff;
        assert_eq!(r.sequence(a, 70_001), Some(first + 1));
        // A lost packet stays a gap, so the subscriber can ask for it.
        assert_eq!(r.sequence(a, 70_003), Some(first + 3));
        // A switch continues after the highest number sent.
        assert_eq!(r.sequence(b, 5), Some(first + 4));
        assert_eq!(r.sequence(b, 6), Some(first + 5));
        // A late packet of the new source from before its first one is dropped.
        assert_eq!(r.sequence(b, 4), None);
    }

    #[test]
    fn vp8_picture_ids_continue_across_sources() {
        let packet = |picture: u16, tl0: u8| {
            let [hi, lo] = (picture | 0x8000).to_be_bytes();
            // X, S; I, L and T (TL0PICIDX comes with a TID byte); then a keyframe tag.
            Vp8Descriptor::parse(&[0x90, 0xe0, hi, lo, tl0, 0x00, 0x50]).unwrap()
        };
        let mut r = Rewriter::default();
        r.sequence((1, None), 100);
        // The first source passes unchanged.
        assert!(r.vp8_patch(&packet(500, 9)).is_none());
        r.sequence((1, None), 101);
        assert!(r.vp8_patch(&packet(501, 10)).is_none());
        // The second source is renumbered to follow on.
        r.sequence((2, None), 40);
        assert!(r.vp8_patch(&packet(7000, 200)).is_some());
        assert_eq!(r.picture_last, Some(502));
        assert_eq!(r.tl0_last, Some(11));
        r.sequence((2, None), 41);
        assert!(r.vp8_patch(&packet(7001, 200)).is_some());
        assert_eq!(r.picture_last, Some(503));
    }
}
