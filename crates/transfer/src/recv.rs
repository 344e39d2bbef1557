//! The receiving side: [`Receiver`] checks the offer, plans resumes, writes partial files and
//! renames them into place once verified.

use std::collections::VecDeque;
use std::mem;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::disk::{self, Found, PartFile};
use crate::error::{Error, Violation};
use crate::manifest::{Digest, Manifest};
use crate::wire::{self, ACK_INTERVAL, Message};

/// What a [`Receiver`] has to report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiverEvent {
    /// The sender offers these files; ask the user, then call [`Receiver::accept`] or
    /// [`Receiver::cancel`]. The names have passed every check already.
    Offered(Manifest),
    /// More data written.
    Progress {
        /// Bytes on disk for this transfer, over all files, including what was already there.
        bytes: u64,
        /// Total size of the transfer.
        total: u64,
    },
    /// One file is verified and in place.
    FileVerified {
        /// Its index in the manifest.
        file: u32,
        /// Where it is now.
        path: PathBuf,
    },
    /// Every file is verified; the transfer is done.
    Complete,
    /// The sender cancelled.
    Cancelled {
        /// The sender's reason.
        reason: String,
    },
}

/// The receiver's protocol state machine; reads and writes files under one output folder, owns
/// no socket.
///
/// Driving it: pass every message from the sender to [`handle`](Self::handle); after every call
/// (including ones that fail, and [`accept`](Self::accept)) send everything
/// [`poll_transmit`](Self::poll_transmit) returns and show what
/// [`poll_event`](Self::poll_event) returns. On [`ReceiverEvent::Offered`] ask the user, then
/// `accept` or [`cancel`](Self::cancel). Any error ends the transfer and queues a CANCEL saying
/// why; partial files stay on disk for a later resume (except one that failed verification).
/// The transfer is over when [`is_finished`](Self::is_finished), and succeeded if
/// [`is_complete`](Self::is_complete) — send the last VERIFIED before closing the channel.
///
/// Disk work happens inside these calls: `accept` hashes files that may be resumed or are
/// already in place, and `handle` writes chunks. Run the receiver where blocking is fine.
#[derive(Debug)]
pub struct Receiver {
    out: PathBuf,
    overwrite: bool,
    state: State,
    outbox: Outbox,
}

#[derive(Debug, Default)]
struct Outbox {
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ReceiverEvent>,
}

#[derive(Debug)]
enum State {
    AwaitingOffer,
    Offered(Offered),
    Receiving(Box<Receiving>),
    Complete,
    Closed,
}

#[derive(Debug)]
struct Offered {
    manifest: Manifest,
    /// Sanitised, relative to the output folder.
    paths: Vec<PathBuf>,
}

#[derive(Debug)]
struct Receiving {
    out: PathBuf,
    overwrite: bool,
    manifest: Manifest,
    paths: Vec<PathBuf>,
    plans: Vec<Plan>,
    /// The next file to start; files are taken strictly in order.
    next: usize,
    current: Option<Current>,
    bytes: u64,
    total: u64,
}

/// What to do for one file, decided at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The final file is already there with the right content.
    InPlace,
    /// The partial file is complete and its SHA-256 matches: rename it.
    PartComplete,
    /// Append to the partial file, which holds this many bytes.
    Resume(u64),
    /// Start an empty partial file.
    Fresh,
}

#[derive(Debug)]
struct Current {
    index: usize,
    part: PartFile,
    hasher: Sha256,
    offset: u64,
    acked: u64,
}

impl Receiver {
    /// A receiver writing under `out_dir` (created on accept if missing). With `overwrite`,
    /// existing files with other content are replaced; without it, the offer is refused if any
    /// is in the way.
    pub fn new(out_dir: impl Into<PathBuf>, overwrite: bool) -> Self {
        Receiver {
            out: out_dir.into(),
            overwrite,
            state: State::AwaitingOffer,
            outbox: Outbox::default(),
        }
    }

    /// Takes one message from the sender. On an error the transfer is over and a CANCEL for the
    /// peer is queued (unless the peer's own CANCEL ended it).
    pub fn handle(&mut self, message: &[u8]) -> Result<(), Error> {
        let result = self.handle_message(message);
        if let Err(e) = &result {
            self.fail(e);
        }
        self.settle();
        result
    }

    /// Accepts the pending offer: checks what is already under the output folder (refusing
    /// links, obstacles and, without `overwrite`, files that would be replaced — before writing
    /// anything), computes the resume offsets, queues ACCEPT, and finishes files the receiver
    /// already has (queueing their VERIFIED).
    pub fn accept(&mut self) -> Result<(), Error> {
        let State::Offered(offered) = &self.state else {
            return Err(Error::Misuse(
                "accept() needs an offer waiting for an answer",
            ));
        };
        let plans = match plan(&self.out, self.overwrite, offered) {
            Ok(plans) => plans,
            Err(e) => {
                self.fail(&e);
                return Err(e);
            }
        };
        let State::Offered(offered) = mem::replace(&mut self.state, State::Closed) else {
            return Err(Error::Misuse("accept() needs an offer"));
        };
        let offsets: Vec<u64> = plans
            .iter()
            .zip(&offered.manifest.files)
            .map(|(plan, file)| match plan {
                Plan::InPlace | Plan::PartComplete => file.size,
                Plan::Resume(len) => *len,
                Plan::Fresh => 0,
            })
            .collect();
        let accept = Message::Accept {
            offsets: offsets.clone(),
        }
        .to_vec()
        .map_err(|_| Error::Misuse("the offsets of a valid offer always encode"))?;
        self.outbox.transmit.push_back(accept);
        let mut receiving = Receiving {
            out: self.out.clone(),
            overwrite: self.overwrite,
            total: offered.manifest.total_size(),
            bytes: offsets.iter().sum(),
            manifest: offered.manifest,
            paths: offered.paths,
            plans,
            next: 0,
            current: None,
        };
        let result = receiving.advance(&mut self.outbox);
        self.state = State::Receiving(Box::new(receiving));
        if let Err(e) = &result {
            self.fail(e);
        }
        self.settle();
        result
    }

    /// Ends the transfer (or declines the offer), queueing a CANCEL with `reason` (cut to 1 KiB),
    /// unless it is already over. Partial files stay for a later resume.
    pub fn cancel(&mut self, reason: &str) {
        if !self.is_finished() {
            self.outbox.transmit.push_back(wire::cancel_message(reason));
            self.state = State::Closed;
        }
    }

    /// The next message to send (ACCEPT, ACK, VERIFIED, CANCEL), in order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.transmit.pop_front()
    }

    /// The next event for the user.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.outbox.events.pop_front()
    }

    /// The manifest once offered (while waiting for an answer or receiving).
    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.state {
            State::Offered(offered) => Some(&offered.manifest),
            State::Receiving(receiving) => Some(&receiving.manifest),
            _ => None,
        }
    }

    /// The output folder.
    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// Every file is verified and in place.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Complete)
    }

    /// The transfer is over: complete, cancelled by either side, or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Complete | State::Closed)
    }

    fn handle_message(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.is_finished() {
            return Err(Error::Finished);
        }
        let message = wire::decode(bytes)?;
        if let Message::Cancel { reason } = message {
            self.state = State::Closed;
            self.outbox
                .events
                .push_back(ReceiverEvent::Cancelled { reason });
            return Ok(());
        }
        match (&mut self.state, message) {
            (State::AwaitingOffer, Message::Offer(manifest)) => {
                let paths = manifest.safe_paths()?;
                self.outbox
                    .events
                    .push_back(ReceiverEvent::Offered(manifest.clone()));
                self.state = State::Offered(Offered { manifest, paths });
                Ok(())
            }
            (State::Receiving(receiving), Message::Chunk { file, offset, data }) => {
                receiving.chunk(file, offset, data, &mut self.outbox)
            }
            (state, message) => Err(Violation::Unexpected {
                message: message.name(),
                phase: match state {
                    State::AwaitingOffer => "waiting for an OFFER",
                    State::Offered(_) => "waiting for the user to accept the offer",
                    State::Receiving(_) => "receiving",
                    State::Complete | State::Closed => "finished",
                },
            }
            .into()),
        }
    }

    /// Moves to `Complete` once every file is verified.
    fn settle(&mut self) {
        if let State::Receiving(receiving) = &self.state {
            if receiving.is_done() {
                self.state = State::Complete;
                self.outbox.events.push_back(ReceiverEvent::Complete);
            }
        }
    }

    fn fail(&mut self, error: &Error) {
        if !self.is_finished() {
            self.outbox
                .transmit
                .push_back(wire::cancel_message(&error.peer_reason()));
            self.state = State::Closed;
        }
    }
}

/// Decides, for every file, what is already there; reads only.
fn plan(out: &Path, overwrite: bool, offered: &Offered) -> Result<Vec<Plan>, Error> {
    let mut plans = Vec::with_capacity(offered.paths.len());
    for (file, rel) in offered.manifest.files.iter().zip(&offered.paths) {
        let existing = disk::inspect(out, rel)?;
        let target = out.join(rel);
        if let Found::File(len) = existing.target {
            if len == file.size && disk::hash_existing(&target)? == file.sha256 {
                plans.push(Plan::InPlace);
                continue;
            }
            if !overwrite {
                return Err(Error::WouldOverwrite { path: target });
            }
        }
        plans.push(match existing.part {
            Found::File(len) if len == file.size => {
                if disk::hash_existing(&disk::part_path(&target))? == file.sha256 {
                    Plan::PartComplete
                } else {
                    Plan::Fresh
                }
            }
            Found::File(len) if len > 0 && len < file.size => Plan::Resume(len),
            _ => Plan::Fresh,
        });
    }
    Ok(plans)
}

impl Receiving {
    fn is_done(&self) -> bool {
        self.current.is_none() && self.next == self.manifest.files.len()
    }

    fn chunk(
        &mut self,
        file: u32,
        offset: u64,
        data: &[u8],
        outbox: &mut Outbox,
    ) -> Result<(), Error> {
        let Some(current) = self.current.as_mut() else {
            return Err(Violation::Unexpected {
                message: "CHUNK",
                phase: "every file has been received",
            }
            .into());
        };
        let expected = index_u32(current.index);
        if usize::try_from(file).map_or(true, |i| i >= self.manifest.files.len()) {
            return Err(Violation::UnknownFile { file }.into());
        }
        if file != expected {
            return Err(Violation::WrongFile { file, expected }.into());
        }
        if offset != current.offset {
            return Err(Violation::WrongOffset {
                file,
                offset,
                expected: current.offset,
            }
            .into());
        }
        let size = self.manifest.files[current.index].size;
        // offset <= size <= 2^53 and data is at most 64 KiB: no overflow.
        let end = offset + data.len() as u64;
        if end > size {
            return Err(Violation::PastEnd { file, end, size }.into());
        }
        current.part.append(data)?;
        current.hasher.update(data);
        current.offset = end;
        self.bytes += data.len() as u64;
        outbox.events.push_back(ReceiverEvent::Progress {
            bytes: self.bytes,
            total: self.total,
        });
        if end == size {
            outbox.transmit.push_back(wire::ack_message(file, end));
            self.finish_current(outbox)?;
            self.advance(outbox)
        } else {
            if end - current.acked >= ACK_INTERVAL {
                outbox.transmit.push_back(wire::ack_message(file, end));
                current.acked = end;
            }
            Ok(())
        }
    }

    /// Starts files in order until one needs data from the sender, finishing those that need
    /// none (already in place, partial file complete, or empty).
    fn advance(&mut self, outbox: &mut Outbox) -> Result<(), Error> {
        while self.current.is_none() && self.next < self.manifest.files.len() {
            let i = self.next;
            self.next += 1;
            let target = self.out.join(&self.paths[i]);
            let part = disk::part_path(&target);
            match self.plans[i] {
                Plan::InPlace => self.verified(i, outbox),
                Plan::PartComplete => {
                    disk::sync_existing(&part)?;
                    disk::rename_into_place(&part, &target, self.overwrite)?;
                    self.verified(i, outbox);
                }
                Plan::Resume(len) => {
                    let mut hasher = Sha256::new();
                    let part = PartFile::resume(part, len, &mut hasher)?;
                    self.current = Some(Current {
                        index: i,
                        part,
                        hasher,
                        offset: len,
                        acked: len,
                    });
                }
                Plan::Fresh => {
                    disk::create_folders(&self.out, &self.paths[i])?;
                    self.current = Some(Current {
                        index: i,
                        part: PartFile::create(part)?,
                        hasher: Sha256::new(),
                        offset: 0,
                        acked: 0,
                    });
                    if self.manifest.files[i].size == 0 {
                        self.finish_current(outbox)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the digest of the file just completed and renames it into place.
    fn finish_current(&mut self, outbox: &mut Outbox) -> Result<(), Error> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let entry = &self.manifest.files[current.index];
        if Digest(current.hasher.finalize().into()) != entry.sha256 {
            current.part.discard();
            return Err(Error::HashMismatch {
                name: entry.path.clone(),
            });
        }
        let target = self.out.join(&self.paths[current.index]);
        current.part.finish(&target, self.overwrite)?;
        self.verified(current.index, outbox);
        Ok(())
    }

    fn verified(&self, i: usize, outbox: &mut Outbox) {
        let file = index_u32(i);
        outbox.transmit.push_back(wire::verified_message(file));
        outbox.events.push_back(ReceiverEvent::FileVerified {
            file,
            path: self.out.join(&self.paths[i]),
        });
    }
}

/// Manifest indexes fit a u32: there are at most [`wire::MAX_FILES`].
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}
