//! `in` opened for writing: the pending message and who publishes it (the rule is in the
//! module docs of [`super`]).

use super::{Ctx, OpenHandle};
use crate::engine::{self, PublishOptions, Queue};
use crate::fs::body::Body;
use crate::fs::{FsError, FsErrorKind, Result};
use std::path::Path;
use std::sync::Arc;

/// Why the pending body of an `in` will not be published.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    TooLarge(u64),
    NotUtf8,
    /// A write landed before the start of the pending message: in what was published already.
    Rewrite,
    /// Storing the body being written failed (ENOSPC, EDQUOT, EIO): the errno.
    Storage(i32),
}

impl Refusal {
    /// The refusal for a failed write or truncation of the body.
    fn of(e: engine::Error) -> Refusal {
        match e {
            engine::Error::NotUtf8 { .. } => Refusal::NotUtf8,
            engine::Error::TooLarge { limit, .. } => Refusal::TooLarge(limit),
            e => Refusal::Storage(FsError::new("write", "", e).errno()),
        }
    }

    fn kind(self, dir: &Path) -> FsErrorKind {
        match self {
            Refusal::TooLarge(limit) => FsErrorKind::TooLarge { limit },
            Refusal::NotUtf8 => FsErrorKind::NotUtf8,
            Refusal::Rewrite => FsErrorKind::Invalid(
                "a write or truncation reaches into a message already published".into(),
            ),
            Refusal::Storage(errno) => FsErrorKind::Engine(engine::Error::Io {
                op: "write",
                path: dir.to_path_buf(),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }
}

/// An open `in`. The bytes written since the last publish are the pending message; the
/// opener's close (FLUSH) publishes it, see the rule in the module docs.
pub(in crate::fs) struct PublishHandle {
    queue: Arc<Queue>,
    limit: u64,
    /// The task that opened the file: its closes publish.
    opener: u32,
    /// Opened with O_APPEND: each write goes at the end of the pending message, whatever
    /// offset the kernel passes (it passes its own idea of the file's size).
    append: bool,
    /// File offset where the pending message starts (non-append writes are placed relative
    /// to it, so seeks and holes give what a file would hold).
    start: u64,
    body: Body,
    /// Something was written (or truncated into existence) since the last publish.
    pending: bool,
    refused: Option<Refusal>,
    /// The refusal was already returned by a write: the close that ends the message does
    /// not report it a second time.
    refusal_reported: bool,
    /// The last close that found a pending message came from a task being killed: if it was
    /// the last holder, RELEASE discards the message.
    last_closer_killed: bool,
}

impl PublishHandle {
    /// Opens `in` of `queue` for the task `opener`: the queue's size limit is read now.
    pub fn open(ctx: &Ctx, queue: &str, append: bool, opener: u32) -> Result<PublishHandle> {
        let queue = ctx.queue("open", queue)?;
        let limit = queue
            .settings()
            .map_err(|e| ctx.fail("open", e))?
            .max_message_bytes;
        Ok(PublishHandle {
            queue,
            limit,
            opener,
            append,
            start: 0,
            body: Body::default(),
            pending: false,
            refused: None,
            refusal_reported: false,
            last_closer_killed: false,
        })
    }

    fn refuse(&mut self, ctx: &Ctx, r: Refusal) -> FsError {
        self.refused = Some(r);
        self.refusal_reported = true;
        // Its bytes are never needed: free them now (the file position still counts them).
        self.start += std::mem::take(&mut self.body).len();
        ctx.fail("write", r.kind(self.queue.dir()))
    }

    /// Ends the pending message without publishing it; the next write starts a new one.
    fn discard(&mut self) {
        self.start += self.body.len();
        self.body = Body::default();
        self.pending = false;
        self.refused = None;
        self.refusal_reported = false;
    }

    /// Publishes the pending message and starts the next one after it. Whatever happens, the
    /// pending message is over: a failed publish leaves nothing behind (the engine removes its
    /// temporary file) and its error is the caller's.
    fn publish(&mut self, ctx: &Ctx, op: &'static str) -> Result<()> {
        let body = std::mem::take(&mut self.body);
        let len = body.len();
        self.discard();
        self.start += len;
        body.publish(&self.queue, &PublishOptions::default())
            .map_err(|e| ctx.fail(op, e))
    }

    /// Whether `pid` is the opener or a thread of the opener's process (only then asks /proc).
    fn is_opener(&self, pid: u32) -> bool {
        pid == self.opener || crate::fs::caller::same_process(pid, self.opener)
    }
}

impl OpenHandle for PublishHandle {
    fn write(&mut self, ctx: &Ctx, offset: u64, data: &[u8]) -> Result<u32> {
        if let Some(r) = self.refused {
            return Err(ctx.fail("write", r.kind(self.queue.dir())));
        }
        let at = if self.append {
            self.body.len()
        } else if offset < self.start {
            return Err(self.refuse(ctx, Refusal::Rewrite));
        } else {
            offset - self.start
        };
        if at + data.len() as u64 > self.limit {
            return Err(self.refuse(ctx, Refusal::TooLarge(self.limit)));
        }
        if let Err(e) = self.body.write_at(&self.queue, at, data) {
            return Err(self.refuse(ctx, Refusal::of(e)));
        }
        self.pending = true;
        Ok(data.len() as u32)
    }

    /// ftruncate: the pending message gets the length a file would have (`>` truncates to 0
    /// before anything is written; `f.truncate(n)` and `cp --sparse` set the final length).
    fn truncate(&mut self, ctx: &Ctx, size: u64) -> Result<()> {
        if self.refused.is_some() {
            return Ok(());
        }
        if size < self.start {
            if size == 0 && !self.pending {
                return Ok(()); // `>` on a descriptor that already published: nothing to cut
            }
            return Err(self.refuse(ctx, Refusal::Rewrite));
        }
        let len = size - self.start;
        if len > self.limit {
            return Err(self.refuse(ctx, Refusal::TooLarge(self.limit)));
        }
        if len != self.body.len() {
            if let Err(e) = self.body.set_len(&self.queue, len) {
                return Err(self.refuse(ctx, Refusal::of(e)));
            }
            self.pending = true;
        }
        Ok(())
    }

    fn seekable(&self) -> bool {
        true
    }

    /// A close by the opener's process publishes what is pending (a close with nothing
    /// pending, like the shell's before its first write, publishes nothing). A close by
    /// another process (a child that inherited the descriptor) leaves it for the opener.
    /// A closer being killed publishes nothing.
    fn flush(&mut self, ctx: &Ctx, pid: u32) -> Result<()> {
        const OP: &str = "flush";
        if let Some(r) = self.refused {
            let reported = self.refusal_reported;
            self.discard();
            return if reported {
                Ok(())
            } else {
                Err(ctx.fail(OP, r.kind(self.queue.dir())))
            };
        }
        if !self.pending {
            return Ok(());
        }
        if (ctx.killed)(pid) {
            log::info!(
                "{}: pid {pid} was killed holding the file: what was written is published only if another holder closes it",
                ctx.path
            );
            self.last_closer_killed = true;
            return Ok(());
        }
        self.last_closer_killed = false;
        if self.is_opener(pid) {
            self.publish(ctx, OP)
        } else {
            Ok(())
        }
    }

    /// The last holder closed: what is still pending (written by children after the opener
    /// closed) is published unless the last closer was killed.
    fn release(mut self: Box<Self>, ctx: &Ctx, shutting_down: bool) -> Result<()> {
        if !self.pending || self.refused.is_some() || shutting_down {
            return Ok(());
        }
        if self.last_closer_killed {
            log::warn!(
                "{}: the last writer was killed before it closed: nothing is published",
                ctx.path
            );
            return Ok(());
        }
        self.publish(ctx, "release")
    }
}
