//! Socket-level pieces shared by the server and the native peer.
//!
//! - [`StreamDecoder`]: splits a TCP/TLS byte stream into STUN messages and ChannelData frames
//!   (RFC 8656 §12.5: both are self-delimiting; ChannelData is padded to 4 bytes on streams).
//! - [`bind_udp`]: a UDP socket with large kernel buffers, for relays and listeners.
//! - [`batch`]: `recvmmsg`/`sendmmsg` batches.
//!
//! What this crate is not: a protocol. It only finds frame boundaries and opens sockets.

pub mod batch;

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Why a stream can no longer be decoded; the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The next frame starts with a byte that is neither STUN nor ChannelData.
    UnknownFrame(u8),
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::UnknownFrame(b) => write!(f, "stream frame starts with {b:#04x}"),
        }
    }
}

impl std::error::Error for FramingError {}

/// Reassembles STUN messages and ChannelData frames from a byte stream.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, if one has arrived. ChannelData frames are returned with their
    /// padding, which `ChannelData::parse` accepts.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let rest = &self.buf[self.start..];
        let Some(header) = rest.get(..4) else {
            self.compact();
            return Ok(None);
        };
        let header: [u8; 4] = [header[0], header[1], header[2], header[3]];
        let len = match stun::classify(&header) {
            stun::PacketKind::Stun => {
                stun::HEADER_LEN + usize::from(u16::from_be_bytes([header[2], header[3]]))
            }
            stun::PacketKind::ChannelData => stun::ChannelData::stream_frame_len(header)
                .ok_or(FramingError::UnknownFrame(header[0]))?,
            stun::PacketKind::Other => return Err(FramingError::UnknownFrame(header[0])),
        };
        if rest.len() < len {
            self.compact();
            return Ok(None);
        }
        let frame_start = self.start;
        self.start += len;
        Ok(Some(&self.buf[frame_start..frame_start + len]))
    }

    /// Moves unconsumed bytes to the front once the consumed part dominates.
    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Kernel buffer size asked for on relay and listener sockets; bursts of media would otherwise
/// overflow the default ~200 KiB.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Binds a non-blocking UDP socket at `addr` with large send and receive buffers.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The body of the stream-framing fuzz target (RFC 4571 / STUN and ChannelData over TCP): the
/// bytes arrive in pieces whose sizes come from the data itself; the decoder returns whole
/// frames whose lengths match their headers, or an error, and loses no byte.
pub fn fuzz_stream_decoder(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(selector).max(1);
    let mut decoder = StreamDecoder::new();
    let mut returned = 0usize;
    let mut fed = 0usize;
    for chunk in stream.chunks(piece) {
        decoder.extend(chunk);
        fed += chunk.len();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    match stun::classify(frame) {
                        stun::PacketKind::Stun => assert_eq!(
                            frame.len(),
                            stun::HEADER_LEN
                                + usize::from(u16::from_be_bytes([frame[2], frame[3]]))
                        ),
                        stun::PacketKind::ChannelData => assert!(
                            stun::ChannelData::parse(frame).is_ok(),
                            "a ChannelData frame with its padding parses"
                        ),
                        stun::PacketKind::Other => panic!("returned a frame of unknown kind"),
                    }
                    returned += frame.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert_eq!(returned + decoder.pending(), fed, "no byte is lost");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_frame(extra: u16) -> Vec<u8> {
        let mut frame = vec![0x00, 0x01];
        frame.extend_from_slice(&extra.to_be_bytes());
        frame.extend_from_slice(&0x2112_a442u32.to_be_bytes());
        frame.extend_from_slice(&[0; 12]);
        frame.extend(std::iter::repeat_n(0xab, usize::from(extra)));
        frame
    }

    #[test]
    fn splits_frames_delivered_byte_by_byte() {
        let mut stream = stun_frame(8);
        stream.extend_from_slice(b"\x40\x00\x00\x05hello\0\0\0");
        stream.extend_from_slice(&stun_frame(0));
        let mut decoder = StreamDecoder::new();
        let mut frames = Vec::new();
        for byte in &stream {
            decoder.extend(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().expect("valid stream") {
                frames.push(frame.to_vec());
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].len(), 28);
        assert_eq!(frames[1], b"\x40\x00\x00\x05hello\0\0\0");
        assert_eq!(frames[2].len(), 20);
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut decoder = StreamDecoder::new();
        decoder.extend(b"\x16\x03\x01\x02\x00"); // a TLS ClientHello on the plain port
        assert_eq!(decoder.next_frame(), Err(FramingError::UnknownFrame(0x16)));
        let mut decoder = StreamDecoder::new();
        decoder.extend(b"\x80\x00\x00\x00");
        assert_eq!(decoder.next_frame(), Err(FramingError::UnknownFrame(0x80)));
    }
}
