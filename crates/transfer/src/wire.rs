//! Wire format, version 1 (`docs/transfer.md`): every data-channel message is binary, one type
//! byte and then the body; integers are big-endian.

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// OFFER, sender → receiver: the manifest as UTF-8 JSON.
pub const OFFER: u8 = 0x01;
/// ACCEPT, receiver → sender: one start offset per file as UTF-8 JSON.
pub const ACCEPT: u8 = 0x02;
/// CHUNK, sender → receiver: u32 file index, u64 offset, data.
pub const CHUNK: u8 = 0x03;
/// ACK, receiver → sender: u32 file index, u64 bytes written so far.
pub const ACK: u8 = 0x04;
/// VERIFIED, receiver → sender: u32 file index.
pub const VERIFIED: u8 = 0x05;
/// CANCEL, either way: a reason as UTF-8 JSON.
pub const CANCEL: u8 = 0x06;

/// The protocol version carried in OFFER's `"v"`.
pub const VERSION: u64 = 1;
/// Data bytes per CHUNK a sender sends (the last chunk of a file may be shorter).
pub const CHUNK_SIZE: usize = 16 * 1024;
/// The most data bytes a receiver accepts in one CHUNK.
pub const MAX_CHUNK_DATA: usize = 64 * 1024;
/// The largest OFFER, ACCEPT or CANCEL message, type byte included.
pub const MAX_CONTROL_LEN: usize = 256 * 1024;
/// The most files one OFFER may list.
pub const MAX_FILES: usize = 10_000;
/// The largest size or offset in JSON: 2^53 − 1, so that JavaScript numbers hold it exactly.
pub const MAX_SIZE: u64 = (1 << 53) - 1;
/// A receiver acknowledges at least every this many bytes written, and at the end of each file.
pub const ACK_INTERVAL: u64 = 1024 * 1024;
/// The longest CANCEL reason this implementation sends, in bytes (longer ones are cut).
pub const MAX_REASON_LEN: usize = 1024;

/// CHUNK header: type byte, u32 file index, u64 offset.
pub const CHUNK_HEADER_LEN: usize = 1 + 4 + 8;

/// One decoded message, borrowing CHUNK data from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// The files on offer.
    Offer(Manifest),
    /// Where the sender starts each file, in manifest order.
    Accept {
        /// One offset per file; equal to the size when the receiver already has the file.
        offsets: Vec<u64>,
    },
    /// File data.
    Chunk {
        /// Index into the manifest.
        file: u32,
        /// Where `data` starts in the file.
        offset: u64,
        /// 1 to [`MAX_CHUNK_DATA`] bytes.
        data: &'a [u8],
    },
    /// Bytes of a file written to disk so far.
    Ack {
        /// Index into the manifest.
        file: u32,
        /// Bytes written to the partial file.
        offset: u64,
    },
    /// A file's SHA-256 matched and it is in place.
    Verified {
        /// Index into the manifest.
        file: u32,
    },
    /// The transfer is over.
    Cancel {
        /// Why, for a human.
        reason: String,
    },
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A zero-length message.
    #[error("empty message")]
    Empty,
    /// A type byte this version does not define.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// Shorter than its fixed fields.
    #[error("truncated {message} message")]
    Truncated {
        /// The message type.
        message: &'static str,
    },
    /// Bytes after the fixed fields of an ACK or VERIFIED.
    #[error("{message} message has extra bytes at the end")]
    TrailingBytes {
        /// The message type.
        message: &'static str,
    },
    /// Larger than the limit for its type.
    #[error("{message} message is {len} bytes, more than the {limit}-byte limit")]
    TooLong {
        /// The message type.
        message: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The JSON body does not parse, or lacks or mistypes a field.
    #[error("{message} message is not the expected JSON: {detail}")]
    BadJson {
        /// The message type.
        message: &'static str,
        /// The parser's explanation.
        detail: String,
    },
    /// An OFFER for another protocol version.
    #[error("the offer uses transfer protocol version {0}; this side speaks version {VERSION}")]
    UnsupportedVersion(u64),
    /// A `sha256` that is not 64 lowercase hex digits.
    #[error("file {index} in the offer: sha256 must be 64 lowercase hex digits")]
    BadDigest {
        /// The file's index.
        index: usize,
    },
    /// An OFFER with an empty `files` list.
    #[error("the offer lists no files")]
    NoFiles,
    /// More than [`MAX_FILES`] files or offsets.
    #[error("{message} message lists {count} files; at most {MAX_FILES} are allowed")]
    TooManyFiles {
        /// The message type.
        message: &'static str,
        /// How many there were.
        count: usize,
    },
    /// A size or offset above [`MAX_SIZE`].
    #[error("{message} message holds a size or offset above 2^53-1")]
    NumberTooLarge {
        /// The message type.
        message: &'static str,
    },
    /// A CHUNK with no data.
    #[error("CHUNK message carries no data")]
    EmptyChunk,
    /// A CHUNK with more than [`MAX_CHUNK_DATA`] bytes of data.
    #[error("CHUNK carries {len} data bytes; at most {MAX_CHUNK_DATA} are allowed")]
    ChunkTooLarge {
        /// The data length.
        len: usize,
    },
}

/// Decodes one data-channel message. Never panics; every malformed input is a [`WireError`].
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let (&kind, body) = bytes.split_first().ok_or(WireError::Empty)?;
    match kind {
        OFFER => {
            check_control_len("OFFER", bytes.len())?;
            Manifest::from_json(body).map(Message::Offer)
        }
        ACCEPT => {
            check_control_len("ACCEPT", bytes.len())?;
            let accept: AcceptJson = parse_json("ACCEPT", body)?;
            if accept.offsets.len() > MAX_FILES {
                return Err(WireError::TooManyFiles {
                    message: "ACCEPT",
                    count: accept.offsets.len(),
                });
            }
            if accept.offsets.iter().any(|&o| o > MAX_SIZE) {
                return Err(WireError::NumberTooLarge { message: "ACCEPT" });
            }
            Ok(Message::Accept {
                offsets: accept.offsets,
            })
        }
        CHUNK => {
            let (file, rest) = take_u32("CHUNK", body)?;
            let (offset, data) = take_u64("CHUNK", rest)?;
            if data.is_empty() {
                return Err(WireError::EmptyChunk);
            }
            if data.len() > MAX_CHUNK_DATA {
                return Err(WireError::ChunkTooLarge { len: data.len() });
            }
            Ok(Message::Chunk { file, offset, data })
        }
        ACK => {
            let (file, rest) = take_u32("ACK", body)?;
            let (offset, rest) = take_u64("ACK", rest)?;
            no_trailing("ACK", rest)?;
            Ok(Message::Ack { file, offset })
        }
        VERIFIED => {
            let (file, rest) = take_u32("VERIFIED", body)?;
            no_trailing("VERIFIED", rest)?;
            Ok(Message::Verified { file })
        }
        CANCEL => {
            check_control_len("CANCEL", bytes.len())?;
            let cancel: CancelJson = parse_json("CANCEL", body)?;
            Ok(Message::Cancel {
                reason: cancel.reason,
            })
        }
        other => Err(WireError::UnknownType(other)),
    }
}

impl Message<'_> {
    /// Appends the encoded message to `out`. Fails, leaving `out` as it was, on anything
    /// [`decode`] would reject (too many files, a chunk too large or empty, a message too long).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        let result = self.encode_unchecked(out).and_then(|()| {
            let len = out.len() - start;
            match self {
                Message::Offer(_) | Message::Accept { .. } | Message::Cancel { .. } => {
                    check_control_len(self.name(), len)
                }
                _ => Ok(()),
            }
        });
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The encoded message in a new buffer.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// The message type's name as the specification writes it, such as `"CHUNK"`.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Offer(_) => "OFFER",
            Message::Accept { .. } => "ACCEPT",
            Message::Chunk { .. } => "CHUNK",
            Message::Ack { .. } => "ACK",
            Message::Verified { .. } => "VERIFIED",
            Message::Cancel { .. } => "CANCEL",
        }
    }

    fn encode_unchecked(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Message::Offer(manifest) => {
                out.push(OFFER);
                manifest.write_json(out)?;
            }
            Message::Accept { offsets } => {
                if offsets.len() > MAX_FILES {
                    return Err(WireError::TooManyFiles {
                        message: "ACCEPT",
                        count: offsets.len(),
                    });
                }
                if offsets.iter().any(|&o| o > MAX_SIZE) {
                    return Err(WireError::NumberTooLarge { message: "ACCEPT" });
                }
                out.push(ACCEPT);
                write_json(
                    "ACCEPT",
                    out,
                    &AcceptJson {
                        offsets: offsets.clone(),
                    },
                )?;
            }
            Message::Chunk { file, offset, data } => {
                if data.is_empty() {
                    return Err(WireError::EmptyChunk);
                }
                if data.len() > MAX_CHUNK_DATA {
                    return Err(WireError::ChunkTooLarge { len: data.len() });
                }
                chunk_header(*file, *offset, out);
                out.extend_from_slice(data);
            }
            Message::Ack { file, offset } => out.extend(ack_message(*file, *offset)),
            Message::Verified { file } => out.extend(verified_message(*file)),
            Message::Cancel { reason } => {
                out.push(CANCEL);
                write_json(
                    "CANCEL",
                    out,
                    &CancelJson {
                        reason: reason.clone(),
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Appends a CHUNK header; the caller appends 1 to [`MAX_CHUNK_DATA`] data bytes after it. Lets a
/// sender read file data straight into the message buffer.
pub fn chunk_header(file: u32, offset: u64, out: &mut Vec<u8>) {
    out.push(CHUNK);
    out.extend_from_slice(&file.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
}

/// Cuts a reason to at most [`MAX_REASON_LEN`] bytes on a character boundary.
pub(crate) fn cut_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// A CANCEL message; the reason is cut to [`MAX_REASON_LEN`] bytes, so this cannot fail.
pub(crate) fn cancel_message(reason: &str) -> Vec<u8> {
    let mut out = vec![CANCEL];
    // A string of at most 1 KiB always serialises and stays far below the limit.
    let _ = serde_json::to_writer(
        &mut out,
        &CancelJson {
            reason: cut_reason(reason),
        },
    );
    out
}

/// An ACK message.
pub(crate) fn ack_message(file: u32, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(ACK);
    out.extend_from_slice(&file.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

/// A VERIFIED message.
pub(crate) fn verified_message(file: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    out.push(VERIFIED);
    out.extend_from_slice(&file.to_be_bytes());
    out
}

#[derive(Serialize, Deserialize)]
struct AcceptJson {
    offsets: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct CancelJson {
    reason: String,
}

pub(crate) fn check_control_len(message: &'static str, len: usize) -> Result<(), WireError> {
    if len > MAX_CONTROL_LEN {
        return Err(WireError::TooLong {
            message,
            len,
            limit: MAX_CONTROL_LEN,
        });
    }
    Ok(())
}

pub(crate) fn parse_json<'de, T: Deserialize<'de>>(
    message: &'static str,
    body: &'de [u8],
) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|e| WireError::BadJson {
        message,
        detail: e.to_string(),
    })
}

pub(crate) fn write_json<T: Serialize>(
    message: &'static str,
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), WireError> {
    serde_json::to_writer(out, value).map_err(|e| WireError::BadJson {
        message,
        detail: e.to_string(),
    })
}

fn take_u32<'a>(message: &'static str, bytes: &'a [u8]) -> Result<(u32, &'a [u8]), WireError> {
    let (head, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(WireError::Truncated { message })?;
    Ok((u32::from_be_bytes(*head), rest))
}

fn take_u64<'a>(message: &'static str, bytes: &'a [u8]) -> Result<(u64, &'a [u8]), WireError> {
    let (head, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or(WireError::Truncated { message })?;
    Ok((u64::from_be_bytes(*head), rest))
}

fn no_trailing(message: &'static str, rest: &[u8]) -> Result<(), WireError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(WireError::TrailingBytes { message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Digest, FileEntry};

    fn manifest() -> Manifest {
        Manifest {
            files: vec![
                FileEntry {
                    path: "photos/a.jpg".into(),
                    size: 123,
                    sha256: Digest([0xab; 32]),
                },
                FileEntry {
                    path: "empty".into(),
                    size: 0,
                    sha256: Digest::of(b""),
                },
            ],
        }
    }

    fn round_trip(message: Message<'_>) {
        let bytes = message.to_vec().unwrap();
        assert_eq!(decode(&bytes).unwrap(), message);
    }

    #[test]
    fn every_type_round_trips() {
        round_trip(Message::Offer(manifest()));
        round_trip(Message::Accept {
            offsets: vec![0, 5, MAX_SIZE],
        });
        round_trip(Message::Chunk {
            file: 7,
            offset: 1 << 40,
            data: &[1, 2, 3],
        });
        round_trip(Message::Chunk {
            file: 0,
            offset: 0,
            data: &[9; MAX_CHUNK_DATA],
        });
        round_trip(Message::Ack {
            file: u32::MAX,
            offset: u64::MAX,
        });
        round_trip(Message::Verified { file: 3 });
        round_trip(Message::Cancel {
            reason: "disk full ✗".into(),
        });
    }

    #[test]
    fn binary_layouts() {
        let chunk = Message::Chunk {
            file: 0x0102_0304,
            offset: 0x0506_0708_090a_0b0c,
            data: b"xy",
        };
        assert_eq!(
            chunk.to_vec().unwrap(),
            [0x03, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, b'x', b'y']
        );
        let ack = Message::Ack {
            file: 2,
            offset: 0x10_0000,
        };
        assert_eq!(
            ack.to_vec().unwrap(),
            [0x04, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0x10, 0, 0]
        );
        assert_eq!(
            Message::Verified { file: 258 }.to_vec().unwrap(),
            [0x05, 0, 0, 1, 2]
        );
    }

    #[test]
    fn json_bodies() {
        let offer = Message::Offer(Manifest {
            files: vec![FileEntry {
                path: "a".into(),
                size: 0,
                sha256: Digest::of(b""),
            }],
        });
        assert_eq!(
            std::str::from_utf8(&offer.to_vec().unwrap()[1..]).unwrap(),
            r#"{"v":1,"files":[{"path":"a","size":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}"#
        );
        let accept = Message::Accept {
            offsets: vec![0, 16384],
        };
        assert_eq!(accept.to_vec().unwrap(), b"\x02{\"offsets\":[0,16384]}");
        let cancel = Message::Cancel {
            reason: "no".into(),
        };
        assert_eq!(cancel.to_vec().unwrap(), b"\x06{\"reason\":\"no\"}");
    }

    #[test]
    fn json_from_other_implementations() {
        // Whitespace, key order and unknown fields are the sender's business.
        let offer = b"\x01 { \"files\" : [ {\"sha256\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\", \"size\":0, \"path\":\"x\", \"mtime\": 5} ], \"v\": 1, \"extra\": true }";
        let Message::Offer(m) = decode(offer).unwrap() else {
            panic!("not an offer")
        };
        assert_eq!(m.files[0].path, "x");
        assert_eq!(
            decode(b"\x02{\"offsets\":[],\"x\":1}").unwrap(),
            Message::Accept { offsets: vec![] }
        );
    }

    #[test]
    fn truncated_and_trailing() {
        assert_eq!(decode(b""), Err(WireError::Empty));
        for len in 0..12 {
            let mut m = vec![CHUNK];
            m.extend(std::iter::repeat_n(0, len));
            assert_eq!(
                decode(&m),
                Err(if len < 12 {
                    WireError::Truncated { message: "CHUNK" }
                } else {
                    WireError::EmptyChunk
                })
            );
            m[0] = ACK;
            assert_eq!(decode(&m), Err(WireError::Truncated { message: "ACK" }));
        }
        assert_eq!(
            decode(&[CHUNK; 13]),
            Err(WireError::EmptyChunk),
            "header only"
        );
        assert_eq!(
            decode(&[ACK, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::TrailingBytes { message: "ACK" })
        );
        for len in 0..4 {
            let mut m = vec![VERIFIED];
            m.extend(std::iter::repeat_n(0, len));
            assert_eq!(
                decode(&m),
                Err(WireError::Truncated {
                    message: "VERIFIED"
                })
            );
        }
        assert_eq!(
            decode(&[VERIFIED, 0, 0, 0, 0, 0]),
            Err(WireError::TrailingBytes {
                message: "VERIFIED"
            })
        );
        let whole = Message::Offer(manifest()).to_vec().unwrap();
        for cut in 1..whole.len() {
            assert!(matches!(
                decode(&whole[..cut]),
                Err(WireError::BadJson {
                    message: "OFFER",
                    ..
                })
            ));
        }
        let whole = Message::Cancel { reason: "x".into() }.to_vec().unwrap();
        for cut in 1..whole.len() {
            assert!(decode(&whole[..cut]).is_err());
        }
        let whole = Message::Accept { offsets: vec![1] }.to_vec().unwrap();
        for cut in 1..whole.len() {
            assert!(decode(&whole[..cut]).is_err());
        }
    }

    #[test]
    fn garbage() {
        for kind in [0x00, 0x07, 0x7f, 0xff] {
            assert_eq!(decode(&[kind, 1, 2]), Err(WireError::UnknownType(kind)));
        }
        let bad_json: &[&[u8]] = &[
            b"\x01",
            b"\x01null",
            b"\x01{\"v\":1}",
            b"\x01{\"v\":\"1\",\"files\":[]}",
            b"\x01{\"v\":1,\"files\":[{\"path\":\"a\",\"size\":-1,\"sha256\":\"\"}]}",
            b"\x01{\"v\":1,\"files\":[{\"path\":\"a\",\"size\":1.5,\"sha256\":\"\"}]}",
            b"\x01\xff\xfe",
            b"\x02{\"offsets\":[-1]}",
            b"\x02{\"offsets\":[1.0]}",
            b"\x02{\"offsets\":\"0\"}",
            b"\x02{}",
            b"\x02[0]",
            b"\x06{}",
            b"\x06{\"reason\":5}",
            b"\x06\"text\"",
            b"\x06{\"reason\":\"a\"} trailing",
        ];
        for m in bad_json {
            assert!(
                matches!(decode(m), Err(WireError::BadJson { .. })),
                "{:?} -> {:?}",
                String::from_utf8_lossy(m),
                decode(m)
            );
        }
        assert_eq!(
            decode(b"\x01{\"v\":2,\"anything\":[]}"),
            Err(WireError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode(b"\x01{\"v\":1,\"files\":[]}"),
            Err(WireError::NoFiles)
        );
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        for digest in [upper, "e3b0", "zz", ""] {
            let json =
                format!(r#"{{"v":1,"files":[{{"path":"a","size":0,"sha256":"{digest}"}}]}}"#);
            let mut m = vec![OFFER];
            m.extend_from_slice(json.as_bytes());
            assert_eq!(decode(&m), Err(WireError::BadDigest { index: 0 }));
        }
        let json = format!(
            r#"{{"v":1,"files":[{{"path":"a","size":{},"sha256":"{}"}}]}}"#,
            MAX_SIZE + 1,
            Digest::of(b"").to_hex()
        );
        let mut m = vec![OFFER];
        m.extend_from_slice(json.as_bytes());
        assert_eq!(
            decode(&m),
            Err(WireError::NumberTooLarge { message: "OFFER" })
        );
        assert_eq!(
            decode(format!("\x02{{\"offsets\":[{}]}}", MAX_SIZE + 1).as_bytes()),
            Err(WireError::NumberTooLarge { message: "ACCEPT" })
        );
    }

    #[test]
    fn limits() {
        let mut chunk = vec![CHUNK; CHUNK_HEADER_LEN + MAX_CHUNK_DATA + 1];
        assert_eq!(
            decode(&chunk),
            Err(WireError::ChunkTooLarge {
                len: MAX_CHUNK_DATA + 1
            })
        );
        chunk.pop();
        assert!(decode(&chunk).is_ok());

        let big = Message::Cancel {
            reason: "x".repeat(MAX_CONTROL_LEN),
        };
        let mut out = vec![0xaa];
        assert!(matches!(
            big.encode(&mut out),
            Err(WireError::TooLong {
                message: "CANCEL",
                ..
            })
        ));
        assert_eq!(out, [0xaa], "a failed encode leaves the buffer alone");
        let mut raw = b"\x06{\"reason\":\"".to_vec();
        raw.resize(MAX_CONTROL_LEN + 1, b'x');
        assert!(matches!(decode(&raw), Err(WireError::TooLong { .. })));

        let offsets = vec![0; MAX_FILES + 1];
        assert!(matches!(
            Message::Accept {
                offsets: offsets.clone()
            }
            .to_vec(),
            Err(WireError::TooManyFiles { .. })
        ));
        let mut raw = b"\x02".to_vec();
        serde_json::to_writer(&mut raw, &AcceptJson { offsets }).unwrap();
        assert!(matches!(decode(&raw), Err(WireError::TooManyFiles { .. })));
        assert_eq!(
            Message::Chunk {
                file: 0,
                offset: 0,
                data: &[]
            }
            .to_vec(),
            Err(WireError::EmptyChunk)
        );
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_REASON_LEN);
        let cut = cut_reason(&long);
        assert!(cut.len() <= MAX_REASON_LEN && cut.len() >= MAX_REASON_LEN - 1);
        let Message::Cancel { reason } = decode(&cancel_message(&long)).unwrap() else {
            panic!("not a cancel")
        };
        assert_eq!(reason, cut);
    }
}
