//! The sending side: [`Outgoing`] finds and hashes the files, [`Sender`] runs the protocol.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::disk::{self, SourceFile};
use crate::error::{Error, Violation};
use crate::manifest::{Digest, FileEntry, Manifest};
use crate::wire::{self, CHUNK_HEADER_LEN, CHUNK_SIZE, MAX_FILES, MAX_SIZE, Message, WireError};

/// The files to send, walked and hashed, ready to offer.
#[derive(Debug, Clone)]
pub struct Outgoing {
    manifest: Manifest,
    sources: Vec<PathBuf>,
    skipped: Vec<PathBuf>,
}

/// What a [`Sender`] has to report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SenderEvent {
    /// The receiver accepted; `resumed` bytes it already had are not sent again.
    Accepted {
        /// Bytes the receiver already has (the sum of the ACCEPT offsets).
        resumed: u64,
    },
    /// The receiver reports more bytes written.
    Acked {
        /// Bytes the receiver has written, over all files, resumed ones included.
        bytes: u64,
        /// Total size of the transfer.
        total: u64,
    },
    /// One file arrived intact and is in place.
    FileVerified {
        /// Its index in the manifest.
        file: u32,
        /// Its name in the manifest.
        path: String,
    },
    /// Every file is verified; the transfer is done.
    Complete,
    /// The receiver cancelled (or declined the offer).
    Cancelled {
        /// The receiver's reason.
        reason: String,
    },
}

/// The sender's protocol state machine. Reads file data from disk when asked for a chunk; owns
/// no socket.
///
/// Driving it: send everything [`poll_transmit`](Self::poll_transmit) returns (the OFFER first),
/// pass every message from the receiver to [`handle`](Self::handle), drain
/// [`poll_event`](Self::poll_event) for the user, and while the data channel has room (its
/// buffered amount is below a threshold) send what [`next_chunk`](Self::next_chunk) returns.
/// After any call, including one that failed, drain `poll_transmit` again: a failure queues a
/// CANCEL for the peer. The transfer is over when [`is_finished`](Self::is_finished);
/// it succeeded if [`is_complete`](Self::is_complete).
#[derive(Debug)]
pub struct Sender {
    manifest: Manifest,
    sources: Vec<PathBuf>,
    phase: Phase,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<SenderEvent>,
    /// Per file: bytes handed out in CHUNKs (starting at the ACCEPT offset).
    sent: Vec<u64>,
    /// Per file: the receiver's latest ACK (starting at the ACCEPT offset).
    acked: Vec<u64>,
    verified: Vec<bool>,
    verified_count: usize,
    bytes_sent: u64,
    bytes_acked: u64,
    /// The next file that may still need CHUNKs.
    next_file: usize,
    reading: Option<(usize, SourceFile)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingAccept,
    Sending,
    Complete,
    Closed,
}

impl Outgoing {
    /// Walks `paths` (files and folders; folders recursively, names relative to each path's
    /// parent, so `photos/` gives `photos/a.jpg`), checks the names as a receiver will, and
    /// hashes every file. `progress(hashed, total)` is called as bytes are hashed.
    ///
    /// A path given here is followed if it is a symbolic link; links found inside folders are not
    /// followed but skipped, like sockets and FIFOs, and listed by [`skipped`](Self::skipped).
    /// Empty folders are not sent. Fails before hashing anything if there are no files, too many,
    /// a name a receiver would refuse, or a manifest too large for one OFFER.
    pub fn scan(
        paths: &[impl AsRef<Path>],
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Self, Error> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_owned()).collect();
        let walk = disk::walk(&paths)?;
        if walk.files.is_empty() {
            return Err(Error::NothingToSend);
        }
        if walk.files.len() > MAX_FILES {
            return Err(Error::TooManyFiles {
                count: walk.files.len(),
            });
        }
        if let Some(big) = walk.files.iter().find(|s| s.len > MAX_SIZE) {
            return Err(Error::FileTooLarge {
                path: big.path.clone(),
            });
        }
        // Names and size are checked with placeholder digests, which encode to the same length.
        let mut manifest = Manifest {
            files: walk
                .files
                .iter()
                .map(|s| FileEntry {
                    path: s.name.clone(),
                    size: s.len,
                    sha256: Digest([0; 32]),
                })
                .collect(),
        };
        manifest.safe_paths()?;
        encode_offer(&manifest)?;

        let total = walk.files.iter().fold(0u64, |t, s| t.saturating_add(s.len));
        let mut hashed = 0u64;
        progress(0, total);
        for (entry, source) in manifest.files.iter_mut().zip(&walk.files) {
            let (size, digest) = disk::hash_file(&source.path, &mut |n| {
                hashed = hashed.saturating_add(n);
                progress(hashed, total.max(hashed));
            })?;
            if size > MAX_SIZE {
                return Err(Error::FileTooLarge {
                    path: source.path.clone(),
                });
            }
            entry.size = size;
            entry.sha256 = digest;
        }
        encode_offer(&manifest)?;
        Ok(Outgoing {
            manifest,
            sources: walk.files.into_iter().map(|s| s.path).collect(),
            skipped: walk.skipped,
        })
    }

    /// The manifest that will be offered.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Links and special files found inside folders and left out.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }
}

impl Sender {
    /// A sender for these files; the OFFER is queued for [`poll_transmit`](Self::poll_transmit).
    pub fn new(outgoing: Outgoing) -> Result<Self, Error> {
        let offer = encode_offer(&outgoing.manifest)?;
        let n = outgoing.manifest.files.len();
        Ok(Sender {
            manifest: outgoing.manifest,
            sources: outgoing.sources,
            phase: Phase::AwaitingAccept,
            transmit: VecDeque::from([offer]),
            events: VecDeque::new(),
            sent: vec![0; n],
            acked: vec![0; n],
            verified: vec![false; n],
            verified_count: 0,
            bytes_sent: 0,
            bytes_acked: 0,
            next_file: 0,
            reading: None,
        })
    }

    /// Takes one message from the receiver. On an error the transfer is over and a CANCEL for
    /// the peer is queued (unless the peer's own CANCEL ended it).
    pub fn handle(&mut self, message: &[u8]) -> Result<(), Error> {
        let result = self.handle_message(message);
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    /// The next CHUNK to send, read from disk, or `None` when there is nothing to send now
    /// (waiting for ACCEPT, every byte sent, or the transfer is over). Call it while the data
    /// channel has room. A read error (such as a file that shrank since it was hashed) ends the
    /// transfer and queues a CANCEL.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let result = self.read_chunk();
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    /// The next control message to send (OFFER, CANCEL), in order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event for the user.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// Ends the transfer, queueing a CANCEL with `reason` (cut to 1 KiB), unless it is already
    /// over.
    pub fn cancel(&mut self, reason: &str) {
        if !self.is_finished() {
            self.transmit.push_back(wire::cancel_message(reason));
            self.close();
        }
    }

    /// The manifest on offer.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The total size of the files offered.
    pub fn total_bytes(&self) -> u64 {
        self.manifest.total_size()
    }

    /// Bytes handed out in CHUNKs so far, counting what the receiver already had as sent.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Bytes the receiver has reported written, counting what it already had.
    pub fn bytes_acked(&self) -> u64 {
        self.bytes_acked
    }

    /// Every file is verified by the receiver.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Complete
    }

    /// The transfer is over: complete, cancelled by either side, or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Complete | Phase::Closed)
    }

    fn handle_message(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.is_finished() {
            return Err(Error::Finished);
        }
        let message = wire::decode(bytes)?;
        match (self.phase, message) {
            (_, Message::Cancel { reason }) => {
                self.close();
                self.events.push_back(SenderEvent::Cancelled { reason });
                Ok(())
            }
            (Phase::AwaitingAccept, Message::Accept { offsets }) => self.on_accept(offsets),
            (Phase::Sending, Message::Ack { file, offset }) => self.on_ack(file, offset),
            (Phase::Sending, Message::Verified { file }) => self.on_verified(file),
            (phase, message) => Err(Violation::Unexpected {
                message: message.name(),
                phase: match phase {
                    Phase::AwaitingAccept => "waiting for ACCEPT",
                    _ => "sending",
                },
            }
            .into()),
        }
    }

    fn on_accept(&mut self, offsets: Vec<u64>) -> Result<(), Error> {
        if offsets.len() != self.manifest.files.len() {
            return Err(Violation::AcceptCount {
                got: offsets.len(),
                expected: self.manifest.files.len(),
            }
            .into());
        }
        for (i, (&offset, file)) in offsets.iter().zip(&self.manifest.files).enumerate() {
            if offset > file.size {
                return Err(Violation::AcceptOffset {
                    file: index_u32(i),
                    offset,
                    size: file.size,
                }
                .into());
            }
        }
        let resumed = offsets.iter().sum();
        self.sent.clone_from(&offsets);
        self.acked = offsets;
        self.bytes_sent = resumed;
        self.bytes_acked = resumed;
        self.phase = Phase::Sending;
        self.events.push_back(SenderEvent::Accepted { resumed });
        Ok(())
    }

    fn on_ack(&mut self, file: u32, offset: u64) -> Result<(), Error> {
        let i = self.index(file)?;
        if offset < self.acked[i] || offset > self.sent[i] {
            return Err(Violation::BadAck { file, offset }.into());
        }
        self.bytes_acked += offset - self.acked[i];
        self.acked[i] = offset;
        self.events.push_back(SenderEvent::Acked {
            bytes: self.bytes_acked,
            total: self.total_bytes(),
        });
        Ok(())
    }

    fn on_verified(&mut self, file: u32) -> Result<(), Error> {
        let i = self.index(file)?;
        let size = self.manifest.files[i].size;
        if self.verified[i] || self.sent[i] != size {
            return Err(Violation::BadVerified { file }.into());
        }
        self.verified[i] = true;
        self.verified_count += 1;
        self.bytes_acked += size - self.acked[i];
        self.acked[i] = size;
        self.events.push_back(SenderEvent::FileVerified {
            file,
            path: self.manifest.files[i].path.clone(),
        });
        if self.verified_count == self.manifest.files.len() {
            self.phase = Phase::Complete;
            self.reading = None;
            self.events.push_back(SenderEvent::Complete);
        }
        Ok(())
    }

    fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.phase != Phase::Sending {
            return Ok(None);
        }
        let files = &self.manifest.files;
        while self.next_file < files.len()
            && self.sent[self.next_file] == files[self.next_file].size
        {
            self.next_file += 1;
        }
        let i = self.next_file;
        let Some(entry) = files.get(i) else {
            self.reading = None;
            return Ok(None);
        };
        let offset = self.sent[i];
        let reader = match &mut self.reading {
            Some((open, reader)) if *open == i => reader,
            _ => {
                let reader = SourceFile::open(&self.sources[i], entry.size, offset)?;
                &mut self.reading.insert((i, reader)).1
            }
        };
        // Bounded by CHUNK_SIZE, so it fits a usize.
        let n = (entry.size - offset).min(CHUNK_SIZE as u64) as usize;
        let mut chunk = Vec::with_capacity(CHUNK_HEADER_LEN + n);
        wire::chunk_header(index_u32(i), offset, &mut chunk);
        reader.read_into(&mut chunk, n)?;
        self.sent[i] += n as u64;
        self.bytes_sent += n as u64;
        Ok(Some(chunk))
    }

    fn index(&self, file: u32) -> Result<usize, Error> {
        usize::try_from(file)
            .ok()
            .filter(|&i| i < self.manifest.files.len())
            .ok_or(Error::Protocol(Violation::UnknownFile { file }))
    }

    fn fail(&mut self, error: &Error) {
        if !self.is_finished() {
            self.transmit
                .push_back(wire::cancel_message(&error.peer_reason()));
            self.close();
        }
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.reading = None;
    }
}

/// The encoded OFFER, or why it cannot be sent.
fn encode_offer(manifest: &Manifest) -> Result<Vec<u8>, Error> {
    Message::Offer(manifest.clone())
        .to_vec()
        .map_err(|e| match e {
            WireError::TooLong { len, limit, .. } => Error::ManifestTooLarge { len, limit },
            WireError::TooManyFiles { count, .. } => Error::TooManyFiles { count },
            // Files, count and sizes were checked by `Outgoing::scan`.
            _ => Error::Misuse("the manifest cannot be encoded"),
        })
}

/// Manifest indexes fit a u32: there are at most [`MAX_FILES`].
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}
