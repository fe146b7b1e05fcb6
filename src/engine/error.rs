//! The engine's one error type: every variant names the path, queue or name it is about. Advice
//! on which flag would fix an error belongs to the layer that has the flags (the CLI).

use std::io;
use std::path::{Path, PathBuf};

/// The engine's error: every variant names the path or name it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("root folder missing: {0}")]
    RootMissing(PathBuf),
    #[error("root folder uninitiated: {0} has no ddmq.yaml")]
    RootUninitiated(PathBuf),
    #[error("invalid queue name {0:?}: use letters, digits, '_' and '-' only (at most 255)")]
    InvalidQueueName(String),
    #[error("queue does not exist: {0}")]
    NoSuchQueue(PathBuf),
    #[error("{0} exists but is not a ddmq queue (no ddmq.yaml or no work/ directory)")]
    NotAQueue(PathBuf),
    #[error("queue {0} still holds messages")]
    QueueNotEmpty(PathBuf),
    #[error("{path} holds files that ddmq did not create ({names}); not deleting anything")]
    ForeignFiles { path: PathBuf, names: String },
    #[error("invalid message file name or id {0:?}")]
    InvalidMessageName(String),
    #[error("message not found: {0}")]
    MessageNotFound(String),
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("message of {size} bytes is larger than max_message_bytes ({limit}) of queue {queue}")]
    TooLarge {
        queue: String,
        size: u64,
        limit: u64,
    },
    #[error("a message body for queue {queue} is not UTF-8 text")]
    NotUtf8 { queue: String },
    #[error("{path}: corrupt message file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Error {
    /// The OS error behind this one, if any (for errno mapping in the layers above).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
