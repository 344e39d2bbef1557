//! A sender and a receiver wired together in memory, and file helpers.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use transfer::{Error, Outgoing, Receiver, ReceiverEvent, Sender, SenderEvent, wire};

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a file, creating its folders.
pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Every path under `root`, relative, sorted; links are listed, not followed.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// Changes a message in flight.
pub type Tamper = Box<dyn FnMut(&mut Vec<u8>)>;

/// A sender and a receiver connected by two in-memory queues.
pub struct Pair {
    pub sender: Sender,
    pub receiver: Receiver,
    /// Accept offers as soon as they arrive.
    pub auto_accept: bool,
    /// Applied to every message on its way from the sender to the receiver.
    pub tamper: Option<Tamper>,
    /// Chunks the sender may hand out per step (its "room" in the channel).
    pub window: usize,
    pub sender_events: Vec<SenderEvent>,
    pub receiver_events: Vec<ReceiverEvent>,
    pub sender_errors: Vec<Error>,
    pub receiver_errors: Vec<Error>,
    /// Every message the sender sent, and every one the receiver sent.
    pub to_receiver_log: Vec<Vec<u8>>,
    pub to_sender_log: Vec<Vec<u8>>,
    to_receiver: VecDeque<Vec<u8>>,
    to_sender: VecDeque<Vec<u8>>,
}

impl Pair {
    pub fn new(paths: &[PathBuf], out: &Path, overwrite: bool) -> Pair {
        let outgoing = Outgoing::scan(paths, |_, _| {}).unwrap();
        Pair::with(
            Sender::new(outgoing).unwrap(),
            Receiver::new(out, overwrite),
        )
    }

    pub fn with(sender: Sender, receiver: Receiver) -> Pair {
        Pair {
            sender,
            receiver,
            auto_accept: true,
            tamper: None,
            window: 8,
            sender_events: Vec::new(),
            receiver_events: Vec::new(),
            sender_errors: Vec::new(),
            receiver_errors: Vec::new(),
            to_receiver_log: Vec::new(),
            to_sender_log: Vec::new(),
            to_receiver: VecDeque::new(),
            to_sender: VecDeque::new(),
        }
    }

    /// Moves everything one round; false when nothing moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        self.drain_receiver(); // what the test made the receiver queue directly
        while let Some(m) = self.sender.poll_transmit() {
            self.to_receiver.push_back(m);
        }
        for _ in 0..self.window {
            match self.sender.next_chunk() {
                Ok(Some(chunk)) => self.to_receiver.push_back(chunk),
                Ok(None) => break,
                Err(e) => {
                    self.sender_errors.push(e);
                    break;
                }
            }
        }
        while let Some(m) = self.sender.poll_transmit() {
            self.to_receiver.push_back(m);
        }
        self.sender_events
            .extend(std::iter::from_fn(|| self.sender.poll_event()));

        while let Some(mut m) = self.to_receiver.pop_front() {
            moved = true;
            if let Some(tamper) = &mut self.tamper {
                tamper(&mut m);
            }
            self.to_receiver_log.push(m.clone());
            if self.receiver.is_finished() {
                continue; // the channel is closed
            }
            if let Err(e) = self.receiver.handle(&m) {
                self.receiver_errors.push(e);
            }
            self.drain_receiver();
        }

        while let Some(m) = self.to_sender.pop_front() {
            moved = true;
            self.to_sender_log.push(m.clone());
            if self.sender.is_finished() {
                continue;
            }
            if let Err(e) = self.sender.handle(&m) {
                self.sender_errors.push(e);
            }
        }
        self.sender_events
            .extend(std::iter::from_fn(|| self.sender.poll_event()));
        while let Some(m) = self.sender.poll_transmit() {
            moved = true;
            self.to_receiver.push_back(m);
        }
        moved
    }

    fn drain_receiver(&mut self) {
        while let Some(event) = self.receiver.poll_event() {
            let offered = matches!(event, ReceiverEvent::Offered(_));
            self.receiver_events.push(event);
            if offered && self.auto_accept {
                if let Err(e) = self.receiver.accept() {
                    self.receiver_errors.push(e);
                }
            }
        }
        while let Some(m) = self.receiver.poll_transmit() {
            self.to_sender.push_back(m);
        }
    }

    /// Steps until nothing moves.
    pub fn run(&mut self) {
        for _ in 0..10_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the transfer did not settle");
    }

    /// Runs and asserts that both sides completed without errors.
    pub fn run_to_completion(&mut self) {
        self.run();
        assert!(self.sender_errors.is_empty(), "{:?}", self.sender_errors);
        assert!(
            self.receiver_errors.is_empty(),
            "{:?}",
            self.receiver_errors
        );
        assert!(self.sender.is_complete(), "{:?}", self.sender_events);
        assert!(self.receiver.is_complete(), "{:?}", self.receiver_events);
        assert_eq!(self.sender_events.last(), Some(&SenderEvent::Complete));
        assert_eq!(self.receiver_events.last(), Some(&ReceiverEvent::Complete));
        assert_eq!(self.sender.bytes_acked(), self.sender.total_bytes());
    }

    /// Messages of one type the sender sent.
    pub fn sent_of(&self, kind: u8) -> usize {
        self.to_receiver_log.iter().filter(|m| m[0] == kind).count()
    }

    /// Messages of one type the receiver sent.
    pub fn received_of(&self, kind: u8) -> usize {
        self.to_sender_log.iter().filter(|m| m[0] == kind).count()
    }

    /// The reason of the CANCEL the receiver sent, if any.
    pub fn receiver_cancel(&self) -> Option<String> {
        self.to_sender_log
            .iter()
            .find_map(|m| match wire::decode(m) {
                Ok(wire::Message::Cancel { reason }) => Some(reason),
                _ => None,
            })
    }
}

/// An OFFER for hand-made entries: `(path, content)`.
pub fn offer(files: &[(&str, &[u8])]) -> Vec<u8> {
    wire::Message::Offer(transfer::Manifest {
        files: files
            .iter()
            .map(|(path, content)| transfer::FileEntry {
                path: (*path).to_owned(),
                size: content.len() as u64,
                sha256: transfer::Digest::of(content),
            })
            .collect(),
    })
    .to_vec()
    .unwrap()
}

/// A CHUNK message.
pub fn chunk(file: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    wire::Message::Chunk { file, offset, data }
        .to_vec()
        .unwrap()
}

/// Pops every message the receiver queued.
pub fn drain(receiver: &mut Receiver) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| receiver.poll_transmit()).collect()
}
