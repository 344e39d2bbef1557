//! TURN ChannelData messages (RFC 8656 §12.4).

/// A ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number, 0x4000–0x7FFF.
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

/// Why bytes are not a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelDataError {
    /// Shorter than the header or its length field.
    Truncated,
    /// The channel number is outside 0x4000–0x7FFF.
    BadChannel,
    /// More than three padding bytes follow the data.
    TrailingBytes,
}

impl std::fmt::Display for ChannelDataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelDataError::Truncated => "truncated ChannelData",
            ChannelDataError::BadChannel => "channel number outside 0x4000-0x7FFF",
            ChannelDataError::TrailingBytes => "bytes after ChannelData",
        })
    }
}

impl std::error::Error for ChannelDataError {}

/// Lowest valid channel number (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;
/// Highest channel number accepted. RFC 8656 narrowed the range to 0x4FFF, but RFC 5766's
/// 0x7FFF is what deployed clients (coturn's among them) still pick from, so it is accepted.
pub const MAX_CHANNEL: u16 = 0x7fff;

impl<'a> ChannelData<'a> {
    /// Parses one datagram: the data, plus at most the padding to a multiple of 4 (over UDP the
    /// padding may be absent).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ChannelDataError> {
        let header: [u8; 4] = bytes
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or(ChannelDataError::Truncated)?;
        let channel = u16::from_be_bytes([header[0], header[1]]);
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
            return Err(ChannelDataError::BadChannel);
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let data = bytes.get(4..4 + len).ok_or(ChannelDataError::Truncated)?;
        if bytes.len() > 4 + len.div_ceil(4) * 4 {
            return Err(ChannelDataError::TrailingBytes);
        }
        Ok(ChannelData { channel, data })
    }

    /// The length of the frame that starts with this 4-byte header on a stream transport,
    /// padding included (RFC 8656 §12.5); `None` for an invalid channel number.
    pub fn stream_frame_len(header: [u8; 4]) -> Option<usize> {
        let channel = u16::from_be_bytes([header[0], header[1]]);
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        Some(4 + len.div_ceil(4) * 4)
    }

    /// Appends the frame, unpadded (as for UDP).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = u16::try_from(self.data.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.data[..usize::from(len)]);
    }

    /// Appends the frame padded to a multiple of 4 (as stream transports require).
    pub fn encode_padded(&self, out: &mut Vec<u8>) {
        self.encode(out);
        let padding = (4 - self.data.len() % 4) % 4;
        out.extend(std::iter::repeat_n(0, padding));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let frame = ChannelData {
            channel: 0x4001,
            data: b"hello",
        };
        let mut udp = Vec::new();
        frame.encode(&mut udp);
        assert_eq!(udp, b"\x40\x01\x00\x05hello");
        assert_eq!(ChannelData::parse(&udp), Ok(frame));
        let mut tcp = Vec::new();
        frame.encode_padded(&mut tcp);
        assert_eq!(tcp.len(), 12);
        assert_eq!(ChannelData::parse(&tcp), Ok(frame));
        assert_eq!(ChannelData::stream_frame_len([0x40, 0x01, 0, 5]), Some(12));
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(
            ChannelData::parse(b"\x40\x01\x00"),
            Err(ChannelDataError::Truncated)
        );
        assert_eq!(
            ChannelData::parse(b"\x40\x01\x00\x08abc"),
            Err(ChannelDataError::Truncated)
        );
        assert_eq!(
            ChannelData::parse(b"\x80\x00\x00\x00"),
            Err(ChannelDataError::BadChannel)
        );
        assert_eq!(
            ChannelData::parse(b"\x3f\xff\x00\x00"),
            Err(ChannelDataError::BadChannel)
        );
        assert_eq!(
            ChannelData::parse(b"\x40\x00\x00\x01a\0\0\0\0"),
            Err(ChannelDataError::TrailingBytes)
        );
        assert_eq!(ChannelData::stream_frame_len([0x80, 0, 0, 0]), None);
        assert_eq!(ChannelData::stream_frame_len([0x7f, 0xff, 0, 0]), Some(4));
    }
}
