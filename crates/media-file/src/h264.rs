//! H.264 Annex B byte streams (ITU-T H.264 Annex B): NAL units behind `00 00 01` /
//! `00 00 00 01` start codes, grouped into access units (section 7.4.1.2.3). The stream carries
//! no times, so frames are spaced by a frame rate the caller gives.

use std::collections::VecDeque;
use std::time::Duration;

use crate::input::Input;
use crate::{Error, Frame};

/// Largest access unit accepted.
pub const MAX_ACCESS_UNIT: usize = 8 * 1024 * 1024;
/// Highest frame rate accepted.
const MAX_FPS: f64 = 1000.0;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// NAL unit types, H.264 table 7-1.
mod nal {
    pub const SLICE: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// Reads access units out of an H.264 Annex B stream.
#[derive(Debug)]
pub struct AnnexB {
    input: Input,
    fps: f64,
    /// Whether the first start code has been found.
    synced: bool,
    /// Where the search for the next start code resumes, relative to the unconsumed input.
    scan: usize,
    au: AccessUnit,
    frames: u64,
    out: VecDeque<Frame>,
}

#[derive(Debug, Default)]
struct AccessUnit {
    data: Vec<u8>,
    offset: u64,
    vcl: bool,
    idr: bool,
}

impl AnnexB {
    /// A reader that spaces frames `1 / fps` seconds apart.
    pub fn new(fps: f64) -> Result<AnnexB, Error> {
        if !(fps.is_finite() && fps > 0.0 && fps <= MAX_FPS) {
            return Err(Error::InvalidSetting(format!(
                "frame rate {fps} (expected more than 0 and at most {MAX_FPS})"
            )));
        }
        Ok(AnnexB {
            input: Input::default(),
            fps,
            synced: false,
            scan: 0,
            au: AccessUnit::default(),
            frames: 0,
            out: VecDeque::new(),
        })
    }

    /// Hands the next bytes of the file to the reader.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.input.push(bytes)
    }

    /// Tells the reader that the file ends here.
    pub fn finish(&mut self) {
        self.input.finish();
    }

    /// Whether the reader can use more input.
    pub fn wants_input(&self) -> bool {
        !self.input.finished()
    }

    /// The next access unit; `Ok(None)` when more input is needed, or at the end once
    /// finished.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if let Some(frame) = self.out.pop_front() {
                return Ok(Some(frame));
            }
            if !self.synced && !self.sync()? {
                return Ok(None);
            }
            match self.next_nal()? {
                Some((offset, nal)) => self.add_nal(offset, &nal)?,
                None if self.input.finished() => {
                    self.emit();
                    return Ok(self.out.pop_front());
                }
                None => return Ok(None),
            }
        }
    }

    /// Skips to just past the first start code; false when it is not in the input yet.
    fn sync(&mut self) -> Result<bool, Error> {
        let available = self.input.available();
        let zeros = available.iter().take_while(|&&b| b == 0).count();
        match available.get(zeros) {
            Some(1) if zeros >= 2 => {
                self.input.consume(zeros + 1);
                self.synced = true;
                self.scan = 0;
                Ok(true)
            }
            Some(_) => Err(Error::malformed(
                self.input.offset() + zeros as u64,
                "not an H.264 Annex B stream (no start code)",
            )),
            None if self.input.finished() => {
                if available.is_empty() && self.input.offset() > 0 {
                    Ok(false)
                } else {
                    Err(Error::malformed(
                        self.input.offset(),
                        "no H.264 start code in the file",
                    ))
                }
            }
            None => Ok(false),
        }
    }

    /// The next whole NAL unit (without its start code), with its file offset.
    fn next_nal(&mut self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let offset = self.input.offset();
        let available = self.input.available();
        let mut i = self.scan;
        let found = loop {
            if i + 3 > available.len() {
                break None;
            }
            // Skip ahead by what the byte at i + 2 allows: a start code ends in `00 00 01`.
            match available[i + 2] {
                1 if available[i] == 0 && available[i + 1] == 0 => break Some(i),
                0 => i += 1,
                _ => i += 3,
            }
        };
        let (end, next) = match found {
            Some(at) => (at, at + 3),
            None if self.input.finished() => (available.len(), available.len()),
            None => {
                self.scan = available.len().saturating_sub(2);
                if available.len() > MAX_ACCESS_UNIT {
                    return Err(Error::TooLarge {
                        offset,
                        what: "H.264 NAL unit",
                        size: available.len() as u64,
                        limit: MAX_ACCESS_UNIT as u64,
                    });
                }
                return Ok(None);
            }
        };
        // Zeros before the next start code are trailing_zero_8bits (or its leading zero).
        let mut nal_end = end;
        while nal_end > 0 && available[nal_end - 1] == 0 {
            nal_end -= 1;
        }
        let nal = available[..nal_end].to_vec();
        self.input.consume(next);
        self.scan = 0;
        if nal.is_empty() && next == 0 {
            return Ok(None);
        }
        Ok(Some((offset, nal)))
    }

    fn add_nal(&mut self, offset: u64, nal: &[u8]) -> Result<(), Error> {
        let Some(&first) = nal.first() else {
            // Two start codes in a row: nothing between them.
            return Ok(());
        };
        if first & 0x80 != 0 {
            return Err(Error::malformed(
                offset,
                "H.264 NAL unit with the forbidden_zero_bit set",
            ));
        }
        let kind = first & 0x1f;
        let vcl = (nal::SLICE..=nal::IDR).contains(&kind);
        // Section 7.4.1.2.3: these start a new access unit once the current one has a slice;
        // so does a slice whose first_mb_in_slice is 0 (its ue(v) code begins with a 1 bit).
        let starts_au = match kind {
            nal::SEI | nal::SPS | nal::PPS | nal::AUD | 14..=18 => true,
            _ if vcl => nal.get(1).is_some_and(|b| b & 0x80 != 0),
            _ => false,
        };
        if self.au.vcl && starts_au {
            self.emit();
        }
        if self.au.data.is_empty() {
            self.au.offset = offset;
        }
        let size = self.au.data.len() + START_CODE.len() + nal.len();
        if size > MAX_ACCESS_UNIT {
            return Err(Error::TooLarge {
                offset: self.au.offset,
                what: "H.264 access unit",
                size: size as u64,
                limit: MAX_ACCESS_UNIT as u64,
            });
        }
        self.au.data.extend_from_slice(&START_CODE);
        self.au.data.extend_from_slice(nal);
        self.au.vcl |= vcl;
        self.au.idr |= kind == nal::IDR;
        Ok(())
    }

    fn emit(&mut self) {
        let au = std::mem::take(&mut self.au);
        if !au.vcl {
            // Parameter sets with no picture after them (end of stream): nothing to show.
            return;
        }
        let index = self.frames;
        self.frames += 1;
        let seconds = index as f64 / self.fps;
        self.out.push_back(Frame {
            data: au.data,
            time: Duration::from_secs_f64(seconds),
            rtp_time: (seconds * 90_000.0).round() as u64,
            keyframe: au.idr,
            offset: au.offset,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], chunk: usize) -> Result<Vec<Frame>, Error> {
        let mut r = AnnexB::new(30.0)?;
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            r.push(piece)?;
            while let Some(f) = r.next_frame()? {
                frames.push(f);
            }
        }
        r.finish();
        while let Some(f) = r.next_frame()? {
            frames.push(f);
        }
        Ok(frames)
    }

    /// SPS, PPS, IDR slice, then two non-IDR slices (first_mb_in_slice 0), the second split in
    /// two slices (the second with first_mb_in_slice != 0).
    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0x00, 0x1f]); // SPS
        s.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]); // PPS
        s.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33]); // IDR, mb 0
        s.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a, 0x02]); // P, mb 0
        s.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a, 0x03]); // P, mb 0
        s.extend_from_slice(&[0, 0, 1, 0x41, 0x40, 0x04, 0x00]); // P, mb != 0 (same picture)
        s
    }

    #[test]
    fn access_units_any_chunking() {
        for chunk in [1, 2, 3, 5, 8, 100] {
            let frames = read_all(&stream(), chunk).expect("valid stream");
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            assert!(frames[0].keyframe);
            assert_eq!(frames[0].offset, 4);
            assert_eq!(
                frames[0].data,
                [
                    0, 0, 0, 1, 0x67, 0x42, 0x00, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0,
                    0, 1, 0x65, 0x88, 0x84, 0x00, 0x33
                ]
            );
            assert!(!frames[1].keyframe);
            assert_eq!(frames[1].rtp_time, 3000);
            // The last picture's two slices, the trailing zero of the second not included.
            assert_eq!(
                frames[2].data,
                [0, 0, 0, 1, 0x41, 0x9a, 0x03, 0, 0, 0, 1, 0x41, 0x40, 0x04]
            );
        }
    }

    #[test]
    fn garbage_and_bad_settings_are_errors() {
        assert!(matches!(
            read_all(b"hello world", 4),
            Err(Error::Malformed { offset: 0, .. })
        ));
        assert!(matches!(
            read_all(&[0, 0, 0, 0], 4),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            read_all(&[0, 0, 1, 0xe5, 0x00], 4),
            Err(Error::Malformed { offset: 3, .. })
        ));
        assert!(AnnexB::new(0.0).is_err());
        assert!(AnnexB::new(f64::NAN).is_err());
        assert_eq!(read_all(&[], 4).map(|f| f.len()).ok(), None);
    }

    #[test]
    fn a_nal_without_end_is_bounded() {
        let mut r = AnnexB::new(30.0).expect("fps");
        r.push(&[0, 0, 1, 0x65]).expect("push");
        let chunk = vec![0x11u8; 1 << 20];
        let mut result = Ok(None);
        for _ in 0..10 {
            r.push(&chunk).expect("push");
            result = r.next_frame();
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(Error::TooLarge { .. })));
    }
}
