//! Ogg pages (RFC 3533) carrying one Opus stream (RFC 7845): the identification header
//! `OpusHead`, the comment header `OpusTags`, then one Opus packet per Ogg packet. Packet times
//! come from each packet's TOC byte (RFC 6716 section 3.1), at 48 kHz.

use std::collections::VecDeque;

use crate::input::{Input, u16_le, u32_le};
use crate::{Error, Frame};

const PAGE_HEADER: usize = 27;
/// Largest Opus packet accepted (120 ms of the highest bitrate is well below).
const MAX_PACKET: usize = 64 * 1024;
const OPUS_CLOCK: u64 = 48_000;

/// RFC 3533 section 6: header_type flags.
const CONTINUED: u8 = 0x01;
const BEGIN_OF_STREAM: u8 = 0x02;
const END_OF_STREAM: u8 = 0x04;

/// The Opus identification header (RFC 7845 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    /// 1 (mono) or 2 (stereo).
    pub channels: u8,
    /// Samples (at 48 kHz) to drop at the start when decoding.
    pub pre_skip: u16,
    /// The sample rate of the original input, informational.
    pub input_sample_rate: u32,
}

/// Reads Opus packets out of an Ogg file.
#[derive(Debug, Default)]
pub struct OggOpus {
    input: Input,
    /// The serial number of the Opus stream, once its first page is seen.
    serial: Option<u32>,
    head: Option<OpusHead>,
    /// Packets of the stream seen so far (0 is OpusHead, 1 OpusTags).
    packets: u64,
    /// The packet being assembled across pages, and the offset of its first page.
    partial: Option<(u64, Vec<u8>)>,
    /// Bytes of an oversized comment header being skipped.
    skipping_tags: bool,
    samples: u64,
    ended: bool,
    out: VecDeque<Frame>,
}

impl OggOpus {
    /// A reader at the start of a file.
    pub fn new() -> OggOpus {
        OggOpus::default()
    }

    /// The identification header, once read.
    pub fn head(&self) -> Option<&OpusHead> {
        self.head.as_ref()
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
        !self.input.finished() && !self.ended
    }

    /// The next Opus packet; `Ok(None)` when more input is needed, or at the end once finished.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if let Some(frame) = self.out.pop_front() {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            if !self.read_page()? {
                if self.input.finished() {
                    if self.head.is_none() {
                        return Err(Error::Truncated {
                            offset: self.input.offset(),
                            what: "Ogg Opus headers",
                        });
                    }
                    if let Some((offset, _)) = self.partial {
                        return Err(Error::Truncated {
                            offset,
                            what: "Opus packet continued past the last page",
                        });
                    }
                    self.ended = true;
                }
                return Ok(None);
            }
        }
    }

    /// Parses one page if it is all there; false when more input is needed.
    fn read_page(&mut self) -> Result<bool, Error> {
        let offset = self.input.offset();
        let available = self.input.available();
        if available.len() < PAGE_HEADER {
            if self.input.finished() && !available.is_empty() {
                return Err(Error::Truncated {
                    offset,
                    what: "Ogg page header",
                });
            }
            return Ok(false);
        }
        if &available[0..4] != b"OggS" {
            return Err(Error::malformed(offset, "no Ogg page (OggS) here"));
        }
        if available[4] != 0 {
            return Err(Error::Unsupported {
                offset: offset + 4,
                what: format!("Ogg version {}", available[4]),
            });
        }
        let flags = available[5];
        let serial = u32_le(available, 14);
        let crc = u32_le(available, 22);
        let segments = usize::from(available[26]);
        if available.len() < PAGE_HEADER + segments {
            if self.input.finished() {
                return Err(Error::Truncated {
                    offset,
                    what: "Ogg segment table",
                });
            }
            return Ok(false);
        }
        let table = &available[PAGE_HEADER..PAGE_HEADER + segments];
        let body: usize = table.iter().map(|&l| usize::from(l)).sum();
        let total = PAGE_HEADER + segments + body;
        if available.len() < total {
            if self.input.finished() {
                return Err(Error::Truncated {
                    offset,
                    what: "Ogg page",
                });
            }
            return Ok(false);
        }
        let page = &available[..total];
        if page_crc(page) != crc {
            return Err(Error::malformed(offset + 22, "Ogg page checksum mismatch"));
        }
        let page = page.to_vec();
        self.input.consume(total);
        if self.serial.is_none() {
            if flags & BEGIN_OF_STREAM == 0 {
                return Err(Error::malformed(
                    offset,
                    "the first Ogg page does not begin a stream",
                ));
            }
            let first = &page[PAGE_HEADER + segments..];
            if first.starts_with(b"OpusHead") {
                self.serial = Some(serial);
            } else if flags & BEGIN_OF_STREAM != 0 {
                // Another stream (say, Vorbis or video) multiplexed in: skip its pages.
                return Ok(true);
            }
        }
        if self.serial != Some(serial) {
            return Ok(true);
        }
        if flags & CONTINUED == 0 && self.partial.is_some() {
            return Err(Error::malformed(
                offset,
                "an Opus packet was left unfinished by the previous page",
            ));
        }
        let mut at = PAGE_HEADER + segments;
        let mut continued = flags & CONTINUED != 0;
        let mut start = at;
        for (i, &lacing) in page[PAGE_HEADER..PAGE_HEADER + segments].iter().enumerate() {
            at += usize::from(lacing);
            if lacing == 255 && i + 1 < segments {
                continue;
            }
            let piece = &page[start..at];
            start = at;
            let (packet_offset, mut packet) = match self.partial.take() {
                Some(partial) if continued => partial,
                // A continuation of a packet we never saw the start of: skip it.
                None if continued => {
                    continued = false;
                    continue;
                }
                _ => (offset, Vec::new()),
            };
            continued = false;
            if !self.skipping_tags {
                if packet.len() + piece.len() > MAX_PACKET {
                    if self.packets == 1 {
                        // A comment header with pictures: not needed, not kept.
                        self.skipping_tags = true;
                        packet.clear();
                    } else {
                        return Err(Error::TooLarge {
                            offset: packet_offset,
                            what: "Opus packet",
                            size: (packet.len() + piece.len()) as u64,
                            limit: MAX_PACKET as u64,
                        });
                    }
                } else {
                    packet.extend_from_slice(piece);
                }
            }
            if lacing == 255 {
                // The packet goes on in the next page.
                self.partial = Some((packet_offset, packet));
                break;
            }
            self.skipping_tags = false;
            self.packet(packet_offset, packet)?;
        }
        if flags & END_OF_STREAM != 0 {
            self.ended = true;
        }
        Ok(true)
    }

    fn packet(&mut self, offset: u64, packet: Vec<u8>) -> Result<(), Error> {
        let index = self.packets;
        self.packets += 1;
        match index {
            0 => {
                self.head = Some(parse_head(offset, &packet)?);
                Ok(())
            }
            1 => {
                if !packet.is_empty() && !packet.starts_with(b"OpusTags") {
                    return Err(Error::malformed(
                        offset,
                        "the second packet is not OpusTags",
                    ));
                }
                Ok(())
            }
            _ if packet.is_empty() => Ok(()),
            _ => {
                let Some(samples) = opus_packet_samples(&packet) else {
                    return Err(Error::malformed(
                        offset,
                        format!("Opus packet {index} has an invalid TOC"),
                    ));
                };
                let rtp_time = self.samples;
                self.samples += u64::from(samples);
                self.out.push_back(Frame {
                    data: packet,
                    time: crate::ticks_to_duration(rtp_time, OPUS_CLOCK),
                    rtp_time,
                    keyframe: true,
                    offset,
                });
                Ok(())
            }
        }
    }
}

fn parse_head(offset: u64, packet: &[u8]) -> Result<OpusHead, Error> {
    if packet.len() < 19 || !packet.starts_with(b"OpusHead") {
        return Err(Error::malformed(offset, "no valid OpusHead packet"));
    }
    let version = packet[8];
    if version >> 4 != 0 {
        return Err(Error::Unsupported {
            offset,
            what: format!("Opus header version {version}"),
        });
    }
    let channels = packet[9];
    let family = packet[18];
    if family != 0 || !(1..=2).contains(&channels) {
        return Err(Error::Unsupported {
            offset,
            what: format!(
                "Opus with {channels} channels (mapping family {family}); mono and stereo are played"
            ),
        });
    }
    Ok(OpusHead {
        channels,
        pre_skip: u16_le(packet, 10),
        input_sample_rate: u32_le(packet, 12),
    })
}

/// Samples (at 48 kHz) in one Opus packet, from its TOC byte and frame count (RFC 6716
/// section 3.1); `None` for a packet that is malformed at that level.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes of table 2, in samples at 48 kHz.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    // Section 3.2.5: at most 120 ms in a packet, and at least one frame.
    (frames > 0 && total <= 5760).then_some(total)
}

/// The Ogg CRC-32 (RFC 3533 section 6: polynomial 0x04c11db7, no reflection, zero initial
/// value), over the page with its checksum field taken as zero.
fn page_crc(page: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut r = (i as u32) << 24;
            let mut bit = 0;
            while bit < 8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04c1_1db7
                } else {
                    r << 1
                };
                bit += 1;
            }
            table[i] = r;
            i += 1;
        }
        table
    };
    let mut crc = 0u32;
    for (i, &byte) in page.iter().enumerate() {
        let byte = if (22..26).contains(&i) { 0 } else { byte };
        crc = (crc << 8) ^ TABLE[usize::from(((crc >> 24) as u8) ^ byte)];
    }
    crc
}

/// Builds Ogg pages, for tests of this crate.
#[cfg(test)]
pub(crate) fn test_page(
    flags: u8,
    serial: u32,
    seq: u32,
    granule: u64,
    packets: &[&[u8]],
) -> Vec<u8> {
    let mut table = Vec::new();
    let mut body = Vec::new();
    for packet in packets {
        let mut len = packet.len();
        while len >= 255 {
            table.push(255u8);
            len -= 255;
        }
        table.push(len as u8);
        body.extend_from_slice(packet);
    }
    let mut page = Vec::new();
    page.extend_from_slice(b"OggS");
    page.push(0);
    page.push(flags);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&serial.to_le_bytes());
    page.extend_from_slice(&seq.to_le_bytes());
    page.extend_from_slice(&[0; 4]);
    page.push(table.len() as u8);
    page.extend_from_slice(&table);
    page.extend_from_slice(&body);
    let crc = page_crc(&page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.push(1);
        h.push(2);
        h.extend_from_slice(&312u16.to_le_bytes());
        h.extend_from_slice(&48_000u32.to_le_bytes());
        h.extend_from_slice(&0i16.to_le_bytes());
        h.push(0);
        h
    }

    fn read_all(bytes: &[u8], chunk: usize) -> Result<Vec<Frame>, Error> {
        let mut r = OggOpus::new();
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

    fn file() -> Vec<u8> {
        let mut f = test_page(BEGIN_OF_STREAM, 7, 0, 0, &[&head()]);
        f.extend(test_page(0, 7, 1, 0, &[b"OpusTags\0\0\0\0\0\0\0\0"]));
        // 20 ms CELT (config 31), a 20 ms packet of two 10 ms frames, then a 300-byte packet
        // that spans a page boundary.
        let big: Vec<u8> = std::iter::once(0xf8)
            .chain(std::iter::repeat_n(7, 299))
            .collect();
        f.extend(test_page(0, 7, 2, 960, &[&[0xf8, 1, 2], &[0xf1, 3, 4]]));
        let mut spanning = test_page(0, 7, 3, 0, &[&big]);
        // Cut the page after the first 255-byte segment by hand: header, table [255], body.
        spanning.remove(PAGE_HEADER + 1);
        spanning.truncate(PAGE_HEADER + 1 + 255);
        spanning[26] = 1;
        let crc = page_crc(&spanning);
        spanning[22..26].copy_from_slice(&crc.to_le_bytes());
        f.extend(spanning);
        f.extend(test_page(
            CONTINUED | END_OF_STREAM,
            7,
            4,
            2880,
            &[&big[255..]],
        ));
        f
    }

    #[test]
    fn packets_and_times_any_chunking() {
        for chunk in [1, 13, 64, 4096] {
            let frames = read_all(&file(), chunk).expect("valid file");
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            assert_eq!(frames[0].data, [0xf8, 1, 2]);
            assert_eq!(frames[0].rtp_time, 0);
            assert_eq!(frames[1].rtp_time, 960);
            assert_eq!(frames[2].rtp_time, 1920);
            assert_eq!(frames[2].data.len(), 300);
            assert_eq!(frames[2].time.as_millis(), 40);
        }
    }

    #[test]
    fn corruption_names_the_offset() {
        let mut f = file();
        let at = f.len() - 3;
        f[at] ^= 0xff;
        let last_page = file().len() - (PAGE_HEADER + 1 + 45);
        assert_eq!(
            read_all(&f, 100),
            Err(Error::malformed(
                last_page as u64 + 22,
                "Ogg page checksum mismatch"
            ))
        );
        let mut cut = file();
        cut.truncate(cut.len() - 1);
        assert!(matches!(read_all(&cut, 100), Err(Error::Truncated { .. })));
        assert!(matches!(
            read_all(b"RIFF and more bytes than a page header", 8),
            Err(Error::Malformed { offset: 0, .. })
        ));
    }

    #[test]
    fn multichannel_is_refused() {
        let mut h = head();
        h[9] = 6;
        h[18] = 1;
        let f = test_page(BEGIN_OF_STREAM, 1, 0, 0, &[&h]);
        assert!(matches!(read_all(&f, 64), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn toc_durations() {
        assert_eq!(opus_packet_samples(&[0xf8]), Some(960)); // CELT FB 20 ms
        assert_eq!(opus_packet_samples(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(opus_packet_samples(&[0x18]), Some(2880)); // SILK NB 60 ms
        assert_eq!(opus_packet_samples(&[0xfb, 0x03]), Some(2880)); // 3 x 20 ms
        assert_eq!(opus_packet_samples(&[0xfb, 0x07]), None); // 140 ms
        assert_eq!(opus_packet_samples(&[0xfb]), None);
        assert_eq!(opus_packet_samples(&[]), None);
    }
}
