//! IVF, the simple container libvpx and ffmpeg write VP8 into: a 32-byte file header, then per
//! frame a 12-byte header (size, u32 LE; timestamp, u64 LE) and the frame.

use crate::input::{Input, u16_le, u32_le, u64_le};
use crate::{Error, Frame};

/// Largest frame accepted (a 4K VP8 key frame is well below this).
pub const MAX_FRAME: u32 = 8 * 1024 * 1024;
const FILE_HEADER: usize = 32;
const FRAME_HEADER: usize = 12;
/// Longest header length field accepted; libvpx and ffmpeg write 32.
const MAX_HEADER: usize = 1024;
/// Latest timestamp accepted, in seconds (about 34 years): keeps the arithmetic in range.
const MAX_SECONDS: u128 = 1 << 30;

/// The IVF file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvfHeader {
    /// Codec, `VP80` for VP8.
    pub fourcc: [u8; 4],
    /// Frame width in pixels.
    pub width: u16,
    /// Frame height in pixels.
    pub height: u16,
    /// Time base numerator: a timestamp of `t` is `t * num / den` seconds.
    pub timebase_num: u32,
    /// Time base denominator.
    pub timebase_den: u32,
    /// Frame count as the writer recorded it (often 0 or wrong; not relied upon).
    pub frame_count: u32,
}

/// Reads VP8 frames out of an IVF file.
#[derive(Debug, Default)]
pub struct Ivf {
    input: Input,
    header: Option<IvfHeader>,
}

impl Ivf {
    /// A reader at the start of a file.
    pub fn new() -> Ivf {
        Ivf::default()
    }

    /// The file header, once read.
    pub fn header(&self) -> Option<&IvfHeader> {
        self.header.as_ref()
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

    /// The next frame; `Ok(None)` when more input is needed, or at the end once finished.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        let header = match self.header {
            Some(header) => header,
            None => match self.read_header()? {
                Some(header) => header,
                None => return Ok(None),
            },
        };
        let offset = self.input.offset();
        let available = self.input.available();
        if available.len() < FRAME_HEADER {
            if self.input.finished() && !available.is_empty() {
                return Err(Error::Truncated {
                    offset,
                    what: "IVF frame header",
                });
            }
            return Ok(None);
        }
        let size = u32_le(available, 0);
        let pts = u64_le(available, 4);
        if size == 0 {
            return Err(Error::malformed(offset, "IVF frame of size 0"));
        }
        if size > MAX_FRAME {
            return Err(Error::TooLarge {
                offset,
                what: "IVF frame",
                size: size.into(),
                limit: MAX_FRAME.into(),
            });
        }
        let end = FRAME_HEADER + size as usize;
        if available.len() < end {
            if self.input.finished() {
                return Err(Error::Truncated {
                    offset,
                    what: "IVF frame",
                });
            }
            return Ok(None);
        }
        let num = u128::from(header.timebase_num);
        let den = u128::from(header.timebase_den);
        let scaled = u128::from(pts) * num;
        if scaled / den > MAX_SECONDS {
            return Err(Error::malformed(
                offset + 4,
                format!("IVF timestamp {pts} is out of range"),
            ));
        }
        let nanos = scaled * 1_000_000_000 / den;
        let data = available[FRAME_HEADER..end].to_vec();
        self.input.consume(end);
        Ok(Some(Frame {
            // RFC 6386 section 9.1: bit 0 of the frame tag is 0 on a key frame.
            keyframe: data[0] & 0x01 == 0,
            data,
            time: std::time::Duration::from_nanos(nanos as u64),
            rtp_time: (scaled * 90_000 / den) as u64,
            offset,
        }))
    }

    fn read_header(&mut self) -> Result<Option<IvfHeader>, Error> {
        let available = self.input.available();
        if available.len() < FILE_HEADER {
            if self.input.finished() {
                return Err(Error::Truncated {
                    offset: 0,
                    what: "IVF file header",
                });
            }
            return Ok(None);
        }
        if &available[0..4] != b"DKIF" {
            return Err(Error::malformed(0, "not an IVF file (no DKIF signature)"));
        }
        let version = u16_le(available, 4);
        if version != 0 {
            return Err(Error::Unsupported {
                offset: 4,
                what: format!("IVF version {version}"),
            });
        }
        let header_len = usize::from(u16_le(available, 6));
        if !(FILE_HEADER..=MAX_HEADER).contains(&header_len) {
            return Err(Error::malformed(
                6,
                format!("IVF header length {header_len}"),
            ));
        }
        let mut fourcc = [0u8; 4];
        fourcc.copy_from_slice(&available[8..12]);
        if &fourcc != b"VP80" {
            return Err(Error::Unsupported {
                offset: 8,
                what: format!(
                    "IVF codec {:?} (only VP8, `VP80`, is played)",
                    String::from_utf8_lossy(&fourcc)
                ),
            });
        }
        let header = IvfHeader {
            fourcc,
            width: u16_le(available, 12),
            height: u16_le(available, 14),
            // ffmpeg and libvpx write the denominator (the rate) first.
            timebase_den: u32_le(available, 16),
            timebase_num: u32_le(available, 20),
            frame_count: u32_le(available, 24),
        };
        if header.timebase_den == 0 || header.timebase_num == 0 {
            return Err(Error::malformed(16, "IVF time base with a zero term"));
        }
        if available.len() < header_len {
            if self.input.finished() {
                return Err(Error::Truncated {
                    offset: 0,
                    what: "IVF file header",
                });
            }
            return Ok(None);
        }
        self.input.consume(header_len);
        self.header = Some(header);
        Ok(Some(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(num: u32, den: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"DKIF");
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&32u16.to_le_bytes());
        h.extend_from_slice(b"VP80");
        h.extend_from_slice(&320u16.to_le_bytes());
        h.extend_from_slice(&240u16.to_le_bytes());
        h.extend_from_slice(&den.to_le_bytes());
        h.extend_from_slice(&num.to_le_bytes());
        h.extend_from_slice(&2u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h
    }

    fn frame(pts: u64, data: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(&pts.to_le_bytes());
        f.extend_from_slice(data);
        f
    }

    fn read_all(bytes: &[u8], chunk: usize) -> Result<Vec<Frame>, Error> {
        let mut ivf = Ivf::new();
        let mut frames = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            ivf.push(piece)?;
            while let Some(f) = ivf.next_frame()? {
                frames.push(f);
            }
        }
        ivf.finish();
        while let Some(f) = ivf.next_frame()? {
            frames.push(f);
        }
        Ok(frames)
    }

    #[test]
    fn two_frames_any_chunking() {
        let mut file = header(1, 30);
        file.extend(frame(0, &[0x10, 1, 2, 3]));
        file.extend(frame(1, &[0x11, 4, 5]));
        for chunk in [1, 3, 7, 12, 1000] {
            let frames = read_all(&file, chunk).expect("valid file");
            assert_eq!(frames.len(), 2);
            assert!(frames[0].keyframe);
            assert!(!frames[1].keyframe);
            assert_eq!(frames[1].data, vec![0x11, 4, 5]);
            assert_eq!(frames[1].rtp_time, 3000);
            assert_eq!(frames[1].time.as_millis(), 33);
            assert_eq!(frames[1].offset, 32 + 16);
        }
    }

    #[test]
    fn truncated_frame_names_its_offset() {
        let mut file = header(1, 30);
        file.extend(frame(0, &[0x10, 1, 2, 3]));
        file.truncate(file.len() - 1);
        assert_eq!(
            read_all(&file, 5),
            Err(Error::Truncated {
                offset: 32,
                what: "IVF frame"
            })
        );
    }

    #[test]
    fn refuses_other_codecs_and_bad_headers() {
        let mut vp9 = header(1, 30);
        vp9[8..12].copy_from_slice(b"VP90");
        assert!(matches!(
            read_all(&vp9, 64),
            Err(Error::Unsupported { offset: 8, .. })
        ));
        let mut zero = header(1, 0);
        zero.extend(frame(0, &[0]));
        assert!(matches!(
            read_all(&zero, 64),
            Err(Error::Malformed { offset: 16, .. })
        ));
        assert!(matches!(
            read_all(b"RIFF0000000000000000000000000000", 64),
            Err(Error::Malformed { offset: 0, .. })
        ));
        assert!(matches!(
            read_all(b"DKIF", 64),
            Err(Error::Truncated { offset: 0, .. })
        ));
    }

    #[test]
    fn huge_sizes_and_timestamps_are_errors() {
        let mut file = header(1, 30);
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(&0u64.to_le_bytes());
        assert!(matches!(
            read_all(&file, 64),
            Err(Error::TooLarge { offset: 32, .. })
        ));
        let mut file = header(u32::MAX, 1);
        file.extend(frame(u64::MAX, &[0]));
        assert!(matches!(
            read_all(&file, 64),
            Err(Error::Malformed { offset: 36, .. })
        ));
        let mut file = header(1, 30);
        file.extend(frame(0, &[]));
        assert!(matches!(
            read_all(&file, 64),
            Err(Error::Malformed { offset: 32, .. })
        ));
    }
}
