use thiserror::Error;

/// Why a file cannot be read. Every variant names the byte offset where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes at `offset` are not what the format requires.
    #[error("malformed file at byte {offset}: {what}")]
    Malformed {
        /// Offset in the file.
        offset: u64,
        /// What is wrong, in words.
        what: String,
    },
    /// The file is well formed but holds something this reader does not play (another codec).
    #[error("unsupported at byte {offset}: {what}")]
    Unsupported {
        /// Offset in the file.
        offset: u64,
        /// What it holds.
        what: String,
    },
    /// The file ends in the middle of a header or frame.
    #[error("the file is cut short at byte {offset} ({what})")]
    Truncated {
        /// Offset of the incomplete structure.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A frame or page is larger than the reader accepts.
    #[error("at byte {offset}: a {what} of {size} bytes is larger than the limit of {limit}")]
    TooLarge {
        /// Offset of the structure.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The caller passed an unusable setting (for example a frame rate of zero).
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

impl Error {
    pub(crate) fn malformed(offset: u64, what: impl Into<String>) -> Error {
        Error::Malformed {
            offset,
            what: what.into(),
        }
    }
}
