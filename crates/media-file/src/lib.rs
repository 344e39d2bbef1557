//! Sans-IO readers for the media files that `switchboard stream` publishes: IVF with VP8 video,
//! H.264 Annex B elementary streams, and Ogg files carrying Opus audio.
//!
//! Each reader is fed the file's bytes in chunks of any size ([`Ivf::push`] and friends), is
//! told when the input ends ([`Ivf::finish`]), and hands out whole frames with their
//! presentation time ([`Ivf::next_frame`]). The readers never touch a file or a clock; they hold
//! at most one frame (or one Ogg page) plus the chunk being parsed, and every length is checked
//! against a limit, so a malformed file ends in an [`Error`] naming the byte offset, never in a
//! panic or an unbounded allocation.
//!
//! It is not a demuxer for containers in general: no MP4, no WebM, no Ogg multiplexing beyond
//! picking the first Opus stream.

mod error;
mod h264;
mod input;
mod ivf;
mod ogg;

pub use error::Error;
pub use h264::AnnexB;
pub use ivf::{Ivf, IvfHeader};
pub use ogg::{OggOpus, OpusHead, opus_packet_samples};

use std::time::Duration;

/// One frame of video (a whole access unit) or one audio packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame's bytes: a VP8 frame, an H.264 access unit in Annex B form (start codes kept),
    /// or one Opus packet.
    pub data: Vec<u8>,
    /// Presentation time from the start of the file.
    pub time: Duration,
    /// Presentation time in the codec's RTP clock (90 kHz video, 48 kHz Opus).
    pub rtp_time: u64,
    /// A frame a decoder can start from (VP8 key frame, H.264 IDR); always true for audio.
    pub keyframe: bool,
    /// Offset in the file of the frame's first byte (its header, for IVF).
    pub offset: u64,
}

/// What a file holds, told from its first bytes and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// IVF (VP8).
    Ivf,
    /// H.264 Annex B elementary stream.
    H264,
    /// Ogg (Opus).
    Ogg,
}

impl Kind {
    /// Recognises a file by its magic bytes (`DKIF`, `OggS`, an Annex B start code), falling back
    /// to its extension (`.ivf`, `.h264`/`.264`, `.ogg`/`.opus`).
    pub fn detect(start: &[u8], name: &str) -> Option<Kind> {
        if start.starts_with(b"DKIF") {
            return Some(Kind::Ivf);
        }
        if start.starts_with(b"OggS") {
            return Some(Kind::Ogg);
        }
        if start.starts_with(&[0, 0, 1]) || start.starts_with(&[0, 0, 0, 1]) {
            return Some(Kind::H264);
        }
        let lower = name.to_ascii_lowercase();
        let ext = lower.rsplit_once('.').map(|(_, ext)| ext).unwrap_or("");
        match ext {
            "ivf" => Some(Kind::Ivf),
            "h264" | "264" => Some(Kind::H264),
            "ogg" | "opus" => Some(Kind::Ogg),
            _ => None,
        }
    }

    /// Whether the file holds video.
    pub fn is_video(self) -> bool {
        matches!(self, Kind::Ivf | Kind::H264)
    }
}

/// Any of the readers, for callers that pick one at run time.
#[derive(Debug)]
pub enum Reader {
    /// IVF (VP8).
    Ivf(Ivf),
    /// H.264 Annex B.
    H264(AnnexB),
    /// Ogg/Opus.
    Ogg(OggOpus),
}

impl Reader {
    /// A reader for `kind`; `fps` sets the frame rate of H.264 streams (they carry no times).
    pub fn new(kind: Kind, fps: f64) -> Result<Reader, Error> {
        Ok(match kind {
            Kind::Ivf => Reader::Ivf(Ivf::new()),
            Kind::H264 => Reader::H264(AnnexB::new(fps)?),
            Kind::Ogg => Reader::Ogg(OggOpus::new()),
        })
    }

    /// Hands the next bytes of the file to the reader.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match self {
            Reader::Ivf(r) => r.push(bytes),
            Reader::H264(r) => r.push(bytes),
            Reader::Ogg(r) => r.push(bytes),
        }
    }

    /// Tells the reader that the file ends here.
    pub fn finish(&mut self) {
        match self {
            Reader::Ivf(r) => r.finish(),
            Reader::H264(r) => r.finish(),
            Reader::Ogg(r) => r.finish(),
        }
    }

    /// The next whole frame; `Ok(None)` when more input is needed (or, after
    /// [`finish`](Reader::finish), at the end).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        match self {
            Reader::Ivf(r) => r.next_frame(),
            Reader::H264(r) => r.next_frame(),
            Reader::Ogg(r) => r.next_frame(),
        }
    }

    /// Whether the reader wants more input before it can say more (false once finished).
    pub fn wants_input(&self) -> bool {
        match self {
            Reader::Ivf(r) => r.wants_input(),
            Reader::H264(r) => r.wants_input(),
            Reader::Ogg(r) => r.wants_input(),
        }
    }
}

/// Converts a time in `clock` Hz to a [`Duration`] without overflow for any `u64` input that
/// fits in a duration.
pub(crate) fn ticks_to_duration(ticks: u64, clock: u64) -> Duration {
    let secs = ticks / clock;
    let rest = ticks % clock;
    Duration::from_secs(secs) + Duration::from_nanos(rest * 1_000_000_000 / clock)
}

/// The body of the media-file fuzz target: the first byte picks the reader (IVF, H.264 Annex B,
/// Ogg/Opus) and the size of the pieces the rest is pushed in; every frame is read out. Any
/// bytes give frames or an error, never a panic, and the reader always ends.
pub fn fuzz_reader(data: &[u8]) {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => Kind::Ivf,
        1 => Kind::H264,
        _ => Kind::Ogg,
    };
    let Ok(mut reader) = Reader::new(kind, 30.0) else {
        return;
    };
    let piece = usize::from(selector / 3).max(1);
    let mut chunks = file.chunks(piece);
    // Every input byte yields at most one frame, plus a few at the end.
    for _ in 0..file.len() * 2 + 16 {
        match reader.next_frame() {
            Err(_) => return,
            Ok(Some(frame)) => {
                let _ = frame;
            }
            Ok(None) if reader.wants_input() => match chunks.next() {
                Some(chunk) => {
                    if reader.push(chunk).is_err() {
                        return;
                    }
                }
                None => reader.finish(),
            },
            Ok(None) => return,
        }
    }
    panic!("the reader neither ended nor failed");
}
