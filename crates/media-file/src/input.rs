//! The bytes a reader has been given and not yet consumed.

use crate::Error;

#[derive(Debug, Default)]
pub(crate) struct Input {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// File offset of `buf[0]`.
    base: u64,
    finished: bool,
}

impl Input {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.finished {
            return Err(Error::InvalidSetting(
                "bytes pushed after the end of the file was signalled".into(),
            ));
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    pub(crate) fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// File offset of the first unconsumed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.buf.len() - self.start);
        self.start = (self.start + n).min(self.buf.len());
    }
}

pub(crate) fn u16_le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}
