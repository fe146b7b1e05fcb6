//! The filesystem layer's error: what went wrong, in which operation, on which path of the
//! synthetic tree. [`FsError::errno`] is the one place that decides what a caller sees.

use crate::engine;

/// A failed filesystem operation: the operation, the path in the mounted tree, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {kind}")]
pub struct FsError {
    pub op: &'static str,
    pub path: String,
    pub kind: FsErrorKind,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsErrorKind {
    #[error("no such file or directory")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("no open file with this handle")]
    BadHandle,
    #[error("no message waiting")]
    Empty,
    #[error("the caller was interrupted by a signal")]
    Interrupted,
    #[error("the mount is read-only")]
    ReadOnly,
    /// The file does not allow this kind of access (reading `in`, writing `next`).
    #[error("{0}")]
    Access(&'static str),
    /// The tree does not support this change at all (renaming, creating files).
    #[error("{0}")]
    NotSupported(&'static str),
    #[error("the message body is not UTF-8 text")]
    NotUtf8,
    #[error("the message body is larger than the queue's max_message_bytes ({limit})")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Invalid(String),
    /// The caller lacks the right (the daemon checks each request: see `access`).
    #[error("permission denied")]
    Denied,
    /// Only the owner (or whoever may publish, for `in`) may make this change.
    #[error("{0}")]
    NotPermitted(&'static str),
    /// The message of an open `next`, `wait`, `claim` or `work/<id>` left `work/` while the
    /// file was open, through no request of this mount.
    #[error(
        "the message's lease was lost while the file was open (it expired and was requeued, or \
         another client settled it): it may be delivered again"
    )]
    LeaseLost,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error(transparent)]
    Engine(#[from] engine::Error),
}

impl FsError {
    pub fn new(op: &'static str, path: impl Into<String>, kind: impl Into<FsErrorKind>) -> FsError {
        FsError {
            op,
            path: path.into(),
            kind: kind.into(),
        }
    }

    /// The errno a caller of the mounted filesystem sees for this error.
    pub fn errno(&self) -> i32 {
        use engine::Error as E;
        match &self.kind {
            FsErrorKind::NotFound => libc::ENOENT,
            FsErrorKind::Exists => libc::EEXIST,
            FsErrorKind::BadHandle => libc::EBADF,
            FsErrorKind::Empty => libc::ENODATA,
            FsErrorKind::Interrupted => libc::EINTR,
            FsErrorKind::ReadOnly => libc::EROFS,
            FsErrorKind::Access(_) => libc::EACCES,
            FsErrorKind::NotSupported(_) => libc::EPERM,
            FsErrorKind::NotUtf8 => libc::EILSEQ,
            FsErrorKind::TooLarge { .. } => libc::EFBIG,
            FsErrorKind::Invalid(_) => libc::EINVAL,
            FsErrorKind::Denied => libc::EACCES,
            FsErrorKind::NotPermitted(_) => libc::EPERM,
            FsErrorKind::LeaseLost => libc::EIO,
            FsErrorKind::IsDir => libc::EISDIR,
            FsErrorKind::NotDir => libc::ENOTDIR,
            FsErrorKind::Engine(e) => match e {
                E::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
                E::RootMissing(_) | E::NoSuchQueue(_) | E::MessageNotFound(_) => libc::ENOENT,
                E::RootUninitiated(_) | E::NotAQueue(_) => libc::ENOTDIR,
                E::InvalidQueueName(_)
                | E::InvalidMessageName(_)
                | E::Config { .. }
                | E::Invalid(_) => libc::EINVAL,
                E::QueueNotEmpty(_) | E::ForeignFiles { .. } => libc::ENOTEMPTY,
                E::TooLarge { .. } => libc::EFBIG,
                E::NotUtf8 { .. } => libc::EILSEQ,
                E::Corrupt { .. } => libc::EIO,
            },
        }
    }

    /// True for outcomes that are part of normal use (a missing name, an empty queue, a user
    /// refused what the modes do not grant), which the adapter logs quietly.
    /// An unknown id written to `ack` or `nack` is worth a warning: it is the writer's mistake.
    pub fn is_routine(&self) -> bool {
        if matches!(self.kind, FsErrorKind::Denied) {
            return true;
        }
        !matches!(self.op, "ack" | "nack")
            && matches!(
                self.errno(),
                libc::ENOENT | libc::ENODATA | libc::EINTR | libc::EEXIST | libc::ENOTEMPTY
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_covers_engine_errors() {
        let e = FsError::new("rmdir", "q", engine::Error::QueueNotEmpty("/r/q".into()));
        assert_eq!(e.errno(), libc::ENOTEMPTY);
        let e = FsError::new("open", "q/next", FsErrorKind::Empty);
        assert_eq!(e.errno(), libc::ENODATA);
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = FsError::new(
            "release",
            "q/in",
            engine::Error::Io {
                op: "write",
                path: "/r/q/x".into(),
                source: io,
            },
        );
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(
            e.to_string().starts_with("release q/in: write /r/q/x"),
            "{e}"
        );
    }
}
