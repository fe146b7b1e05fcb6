//! Open files: one type per kind of file that can be opened, each with its own constructor and
//! its own read, write, truncate, flush and release behaviour. [`super::QueueFs`] finds the open
//! file of a request and makes one call on it.
//!
//! | opened file                    | type                  |
//! |--------------------------------|-----------------------|
//! | `in`                           | [`PublishHandle`]     |
//! | `next`, `wait`, `claim`        | [`DeliverHandle`]     |
//! | `ddmq.yaml` opened for writing | [`ConfigHandle`]      |
//! | `ack`, `nack`                  | [`IdsHandle`]         |
//! | `work/<id>`                    | [`WorkEntryHandle`]   |
//! | `status`, bodies, `ddmq.yaml` read | [`SnapshotHandle`] |
//!
//! # Closing is committing
//!
//! FLUSH is the only request whose error reaches close(), and close() waits for its answer;
//! RELEASE comes after close() returned and its error reaches nobody. So the work a program
//! counts on is done at FLUSH, by these rules (the types below carry them out):
//!
//! - **Publishing.** The bytes written to an open `in` since its last publish are the pending
//!   message. A FLUSH from the process that opened the file (any of its threads) publishes
//!   the pending message, if there is one, and returns the publish's error; a FLUSH with
//!   nothing pending does nothing (the shell's close of its duplicate before the first write).
//!   So `exec 3> in; printf a >&3; printf b >&3` publishes `a`, then `b`; `(echo a; /bin/echo
//!   b) > in` publishes one message, because FLUSHes from other processes (children that
//!   inherited the descriptor) publish nothing; what is still pending when the last holder
//!   is gone is published at RELEASE (children that wrote after the opener closed).
//!   Each byte is in exactly one message, in the order written.
//! - **Bytes as a file holds them.** Without O_APPEND a write lands at its offset, counted from
//!   where the pending message starts (so seeks leave zero-filled holes and ftruncate sets the
//!   length, as on a file); with O_APPEND every write goes at the end, whatever offset the
//!   kernel passes. A write or truncation reaching back into a published message fails.
//! - **Refusals.** A write that makes the message too large (EFBIG) or not UTF-8 (EILSEQ) fails
//!   and ends the pending message: it is discarded at the next close, which does not report
//!   the error again; so does a write that cannot store the body (ENOSPC, EDQUOT, EIO: a body
//!   past the memory stage is stored as it is written, see `body`). Refusals found only at
//!   close (a character cut off at the end) and the publish's own errors (the same, for a small
//!   body; ENOENT for a deleted queue) fail close(). No message and no partial file are left
//!   either way.
//! - **Killed writers.** A FLUSH from a task being killed by a signal (see [`super::caller`])
//!   publishes nothing. If that was the last holder, RELEASE discards the pending bytes;
//!   otherwise they stay pending for the others. Nothing ever fails with EINTR for it.
//! - **Reading.** A FLUSH from a process that read a message of `next`/`wait` to its end acks
//!   it (claim leaves it in flight); if that process is being killed, it does not count as
//!   having read it. RELEASE gives the message back unless a live reader got all of it.
//!   FLUSHes of other holders decide nothing.
//! - **Leases.** While `next`, `wait`, `claim` or a `work/<id>` is open, its message's lease is
//!   renewed ([`super::lease`]). Once the lease is known lost (the ack found nothing, or the
//!   message left `work/` through no request of this mount), every FLUSH fails with EIO.
//!
//! Only a FLUSH with something at stake asks /proc whether its task is dying (one read per
//! publish or ack); comparing a closer with the opener asks /proc only when the task ids
//! differ (a thread or a child).
//!

mod config;
mod deliver;
mod ids;
mod publish;
mod work;

pub(in crate::fs) use config::ConfigHandle;
pub(in crate::fs) use deliver::DeliverHandle;
pub(in crate::fs) use ids::IdsHandle;
pub(in crate::fs) use publish::PublishHandle;
pub(in crate::fs) use work::WorkEntryHandle;

use super::lease::{Lease, Leases};
use super::{FsError, FsErrorKind, Result};
use crate::engine::{Broker, Queue};
use std::sync::Arc;

/// What a handle needs from the filesystem to act: the engine, its own path for errors, the
/// check for a caller being killed, and the leases of open files.
pub(in crate::fs) struct Ctx<'a> {
    pub broker: &'a Broker,
    pub path: &'a str,
    pub killed: &'a (dyn Fn(u32) -> bool + Send + Sync),
    pub leases: &'a Leases,
}

impl Ctx<'_> {
    fn fail(&self, op: &'static str, kind: impl Into<FsErrorKind>) -> FsError {
        FsError::new(op, self.path, kind)
    }

    fn queue(&self, op: &'static str, name: &str) -> Result<Arc<Queue>> {
        self.broker.queue(name).map_err(|e| self.fail(op, e))
    }
}

/// The behaviour of one open file. Defaults: not readable, not writable, truncation ignored,
/// nothing to do at close.
pub(in crate::fs) trait OpenHandle: Send {
    /// READ by the task `pid`.
    fn read(&mut self, ctx: &Ctx, _offset: u64, _size: u32, _pid: u32) -> Result<Vec<u8>> {
        Err(ctx.fail("read", FsErrorKind::Access("write-only")))
    }

    fn write(&mut self, ctx: &Ctx, _offset: u64, _data: &[u8]) -> Result<u32> {
        Err(ctx.fail("write", FsErrorKind::Access("read-only")))
    }

    /// SETATTR size on the open file (the node was checked to be writable).
    fn truncate(&mut self, _ctx: &Ctx, _size: u64) -> Result<()> {
        Ok(())
    }

    /// Whether closes of this file matter: writers report errors at close, and readers of
    /// next/wait/claim are watched for being killed. Others (status, peeks) can skip FLUSH.
    fn needs_flush(&self) -> bool {
        true
    }

    /// Whether lseek may move the file position: `in` (holes and truncation give what a file
    /// would hold) and files whose content is fixed at open (`head -1 claim` seeks back to
    /// the end of the line it printed); `next` and `wait` are streams.
    fn seekable(&self) -> bool {
        false
    }

    /// The lease this open file keeps on its message while open, if any.
    fn lease(&self) -> Option<Arc<Lease>> {
        None
    }

    /// FLUSH: a close of a descriptor of this file by the task `pid`.
    fn flush(&mut self, _ctx: &Ctx, _pid: u32) -> Result<()> {
        Ok(())
    }

    /// RELEASE: the last descriptor is gone; `shutting_down` when the daemon stops instead.
    fn release(self: Box<Self>, _ctx: &Ctx, _shutting_down: bool) -> Result<()> {
        Ok(())
    }
}

/// Files other than `in` can only be emptied (what `>` does).
fn only_to_zero(ctx: &Ctx, size: u64) -> Result<()> {
    if size == 0 {
        Ok(())
    } else {
        Err(ctx.fail(
            "setattr",
            FsErrorKind::Invalid("only truncation to size 0 is supported".into()),
        ))
    }
}

fn slice_at(bytes: &[u8], offset: u64, size: u32) -> Vec<u8> {
    let start = (offset.min(bytes.len() as u64)) as usize;
    let end = start.saturating_add(size as usize).min(bytes.len());
    bytes[start..end].to_vec()
}

/// Writes `data` at `offset` of `buf`, growing it as needed.
fn place(buf: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[offset..end].copy_from_slice(data);
}

// ---------------------------------------------------------------------------------- snapshot

/// Content fixed at open: `status`, a message body, `ddmq.yaml` opened for reading.
pub(in crate::fs) struct SnapshotHandle {
    bytes: Vec<u8>,
    seekable: bool,
}

impl SnapshotHandle {
    /// A file as a file reads (a body, the settings): seekable.
    pub fn new(bytes: Vec<u8>) -> SnapshotHandle {
        SnapshotHandle {
            bytes,
            seekable: true,
        }
    }

    /// A report made at open (`status`): a stream, as it changes from one open to the next.
    pub fn stream(bytes: Vec<u8>) -> SnapshotHandle {
        SnapshotHandle {
            bytes,
            seekable: false,
        }
    }
}

impl OpenHandle for SnapshotHandle {
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32, _pid: u32) -> Result<Vec<u8>> {
        Ok(slice_at(&self.bytes, offset, size))
    }

    fn needs_flush(&self) -> bool {
        false
    }

    fn seekable(&self) -> bool {
        self.seekable
    }
}

/// The error of every close of a file whose lease was lost.
fn lease_lost(ctx: &Ctx, op: &'static str) -> FsError {
    ctx.fail(op, FsErrorKind::LeaseLost)
}
