//! File-transfer protocol over one reliable, ordered data channel: manifest, chunks,
//! acknowledgements, resume and verification (`docs/transfer.md` is the normative description).
//!
//! - [`wire`]: the binary messages, [`decode`] and [`Message::encode`].
//! - [`Outgoing`] walks and hashes the files to send; [`Sender`] runs the sending side.
//! - [`Receiver`] runs the receiving side: it checks every name before writing, resumes from
//!   `.part` files, verifies SHA-256 and renames into place.
//!
//! Both sides take messages in (`handle`) and hand messages and events out (`poll_transmit`,
//! `poll_event`; the sender also `next_chunk` when the channel has room). After every call,
//! including one that failed, drain `poll_transmit`: an error queues the CANCEL that tells the
//! peer why. There are no timers: the channel is reliable, and how long to wait for a silent
//! peer is the driver's decision.
//!
//! ```no_run
//! # fn channel_send(_: Vec<u8>) {}
//! # fn channel_recv() -> Vec<u8> { Vec::new() }
//! # fn channel_has_room() -> bool { true }
//! # fn main() -> Result<(), transfer::Error> {
//! use transfer::{Outgoing, Sender};
//! let outgoing = Outgoing::scan(&["photos/"], |hashed, total| eprint!("\r{hashed}/{total}"))?;
//! let mut sender = Sender::new(outgoing)?;
//! while !sender.is_finished() {
//!     while let Some(message) = sender.poll_transmit() {
//!         channel_send(message);
//!     }
//!     while let Some(event) = sender.poll_event() {
//!         println!("{event:?}");
//!     }
//!     if channel_has_room() {
//!         if let Some(chunk) = sender.next_chunk()? {
//!             channel_send(chunk);
//!             continue;
//!         }
//!     }
//!     sender.handle(&channel_recv())?;
//! }
//! # Ok(()) }
//! ```
//!
//! What this crate is not: a data-channel driver. It owns no socket and spawns nothing; file
//! system access is confined to one internal module and happens inside the calls, so drive it
//! where blocking is fine.

mod disk;
mod error;
pub mod manifest;
mod recv;
mod send;
pub mod wire;

pub use error::{Error, Violation};
pub use manifest::{Digest, FileEntry, Manifest, PathError, sanitize};
pub use recv::{Receiver, ReceiverEvent};
pub use send::{Outgoing, Sender, SenderEvent};
pub use wire::{CHUNK_SIZE, Message, WireError, decode};

/// The body of the transfer-message fuzz target: decode arbitrary bytes and, when that succeeds,
/// check the names of an offer and that encoding the message decodes to the same value.
///
/// Kept in the library so ordinary builds compile it; `fuzz/` only wraps it.
pub fn fuzz_decode(data: &[u8]) {
    let Ok(message) = decode(data) else {
        return;
    };
    if let Message::Offer(manifest) = &message {
        let _ = manifest.safe_paths();
        let _ = manifest.total_size();
    }
    let encoded = message.to_vec().expect("a decoded message encodes");
    let again = decode(&encoded).expect("an encoded message decodes");
    assert_eq!(message, again, "decode -> encode -> decode must round-trip");
}
