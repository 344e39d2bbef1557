//! What can go wrong, by who is at fault: the peer (malformed or out-of-order messages, a hostile
//! manifest, corrupted data), this side's file system, or the caller.

use std::io;
use std::path::PathBuf;

use crate::manifest::PathError;
use crate::wire::{MAX_FILES, WireError};

/// Everything a [`Sender`](crate::Sender), [`Receiver`](crate::Receiver) or
/// [`Outgoing::scan`](crate::Outgoing::scan) can fail with. Messages name the file and say what to
/// do where there is something to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer sent bytes that are not a valid message.
    #[error("malformed message from the peer: {0}")]
    Wire(#[from] WireError),
    /// The peer sent a valid message that breaks the protocol at this point.
    #[error("the peer broke the transfer protocol: {0}")]
    Protocol(#[from] Violation),
    /// A file name in the offer (or among the files to send) is unsafe or conflicts with another.
    #[error("file name {path:?} is not allowed: {problem}")]
    UnsafePath {
        /// The name as it appears in the manifest.
        path: String,
        /// What is wrong with it.
        problem: PathError,
    },
    /// A received file's SHA-256 differs from the offer; its partial file was deleted.
    #[error(
        "{name}: the received data does not match the SHA-256 in the offer (corrupted in transit, or \
         the file changed while it was sent); the partial file was deleted"
    )]
    HashMismatch {
        /// The file's name in the manifest.
        name: String,
    },
    /// The destination already holds a different file and overwriting was not allowed.
    #[error("{} already exists; refusing to overwrite it (allow overwriting to replace it)", path.display())]
    WouldOverwrite {
        /// The existing file.
        path: PathBuf,
    },
    /// A symbolic link sits where the receiver would create a folder or file.
    #[error("{} is a symbolic link; refusing to write through it", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a folder sits where a folder is needed, or a folder where a file is.
    #[error("{} is in the way: {what}", path.display())]
    Obstructed {
        /// The obstacle.
        path: PathBuf,
        /// What kind of obstacle it is.
        what: &'static str,
    },
    /// The disk filled up while writing; the partial file is kept so the transfer can resume.
    #[error(
        "{}: the disk is full; the partial file is kept, free some space and receive again to resume",
        path.display()
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Any other file-system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file being sent changed size after it was hashed.
    #[error("{} changed while it was being sent; send it again", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
    },
    /// A file or folder to send has a name that is not valid UTF-8.
    #[error("{} has a name that is not valid UTF-8; rename it to send it", path.display())]
    NonUtf8Name {
        /// The file or folder.
        path: PathBuf,
    },
    /// A path named to send has no final component to use as its name (such as `/`).
    #[error("{} has no name to send it under; name a file or folder inside it", path.display())]
    Unnamed {
        /// The path.
        path: PathBuf,
    },
    /// A path named to send is neither a regular file nor a folder.
    #[error("{} is not a regular file or folder", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A file to send is larger than a transfer can describe.
    #[error("{} is larger than 2^53-1 bytes, the most one file in a transfer may hold", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The paths to send hold no regular files.
    #[error("nothing to send: no regular files in the paths given (empty folders are not sent)")]
    NothingToSend,
    /// More files than one offer may carry.
    #[error("{count} files to send; one transfer carries at most {MAX_FILES}")]
    TooManyFiles {
        /// How many files there were.
        count: usize,
    },
    /// The encoded offer would exceed its size limit.
    #[error(
        "the list of files takes {len} bytes, more than the {limit} one offer may hold; send fewer \
         files or shorten their names"
    )]
    ManifestTooLarge {
        /// The encoded size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The caller used the API out of order (a bug in the caller).
    #[error("API misuse: {0}")]
    Misuse(&'static str),
    /// A message arrived or a call was made after the transfer ended.
    #[error("the transfer is already over")]
    Finished,
}

/// A well-formed message that the protocol does not allow at this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A message type that is not expected in the current phase.
    #[error("unexpected {message} while {phase}")]
    Unexpected {
        /// The message type, such as `"CHUNK"`.
        message: &'static str,
        /// What this side was doing.
        phase: &'static str,
    },
    /// A file index that is not in the offer.
    #[error("file index {file} is not in the offer")]
    UnknownFile {
        /// The index.
        file: u32,
    },
    /// ACCEPT does not hold exactly one offset per offered file.
    #[error("ACCEPT holds {got} offsets for {expected} files")]
    AcceptCount {
        /// Offsets received.
        got: usize,
        /// Files offered.
        expected: usize,
    },
    /// An ACCEPT offset beyond the file's size.
    #[error("ACCEPT offset {offset} for file {file} is beyond its size {size}")]
    AcceptOffset {
        /// The file index.
        file: u32,
        /// The offset.
        offset: u64,
        /// The file's size.
        size: u64,
    },
    /// A CHUNK for another file than the one being received.
    #[error("CHUNK for file {file} while file {expected} is being received")]
    WrongFile {
        /// The file index in the CHUNK.
        file: u32,
        /// The file being received.
        expected: u32,
    },
    /// A CHUNK that does not start where the file's data so far ends.
    #[error("CHUNK for file {file} at offset {offset}, expected offset {expected}")]
    WrongOffset {
        /// The file index.
        file: u32,
        /// The offset in the CHUNK.
        offset: u64,
        /// The offset expected.
        expected: u64,
    },
    /// A CHUNK that runs past the end of the file.
    #[error("CHUNK for file {file} ends at {end}, past its size {size}")]
    PastEnd {
        /// The file index.
        file: u32,
        /// Where the chunk ends.
        end: u64,
        /// The file's size.
        size: u64,
    },
    /// An ACK that goes backwards or covers bytes never sent.
    #[error("ACK for file {file} at offset {offset} goes backwards or covers bytes not sent")]
    BadAck {
        /// The file index.
        file: u32,
        /// The acknowledged offset.
        offset: u64,
    },
    /// VERIFIED for a file not yet completely sent, or a second time.
    #[error("VERIFIED for file {file}, which is not completely sent or was already verified")]
    BadVerified {
        /// The file index.
        file: u32,
    },
}

impl Error {
    /// The reason put in the CANCEL this error sends to the peer: what happened, without this
    /// side's local paths.
    pub(crate) fn peer_reason(&self) -> String {
        match self {
            Error::Wire(e) => format!("malformed message: {e}"),
            Error::Protocol(v) => format!("protocol error: {v}"),
            Error::UnsafePath { path, problem } => {
                format!("refused the offer: file name {path:?} is not allowed: {problem}")
            }
            Error::HashMismatch { name } => format!(
                "{name}: SHA-256 mismatch (corrupted in transit, or the file changed while it was sent)"
            ),
            Error::WouldOverwrite { .. } => {
                "refused: a file in the offer already exists on the receiving side".to_owned()
            }
            Error::Symlink { .. } | Error::Obstructed { .. } => {
                "refused: something on the receiving side is in the way of a file in the offer"
                    .to_owned()
            }
            Error::DiskFull { .. } => "the receiving disk is full".to_owned(),
            Error::Io { source, .. } => format!("file-system error: {source}"),
            Error::FileChanged { .. } => "a file changed while it was being sent".to_owned(),
            Error::NonUtf8Name { .. }
            | Error::Unnamed { .. }
            | Error::NotAFile { .. }
            | Error::FileTooLarge { .. }
            | Error::NothingToSend
            | Error::TooManyFiles { .. }
            | Error::ManifestTooLarge { .. }
            | Error::Misuse(_)
            | Error::Finished => format!("internal error: {self}"),
        }
    }
}
