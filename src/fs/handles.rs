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
//!   the error again. Refusals found only at close (a character cut off at the end) and the
//!   publish's own errors (ENOSPC, EDQUOT, EIO, ENOENT for a deleted queue) fail close(). No
//!   message and no partial file are left either way.
//! - **Killed writers.** A FLUSH from a task being killed by a signal (see [`super::caller`])
//!   publishes nothing. If that was the last holder, RELEASE discards the pending bytes;
//!   otherwise they stay pending for the others. Nothing ever fails with EINTR for it.
//! - **Reading.** A FLUSH from a process that read a message of `next`/`wait` to its end acks
//!   it (claim leaves it in flight); if that process is being killed, it does not count as
//!   having read it. RELEASE gives the message back unless a live reader got all of it.
//!   FLUSHes of other holders decide nothing.
//!
//! Only a FLUSH with something at stake asks /proc whether its task is dying (one read per
//! publish or ack); comparing a closer with the opener asks /proc only when the task ids
//! differ (a thread or a child).
//!

use super::body::Body;
use super::{FsError, FsErrorKind, Result};
use crate::engine::{
    self, AckOutcome, Broker, Delivery, PublishOptions, Queue, RequeueOutcome, WorkName,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest `ddmq.yaml` accepted through the mount.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// What a handle needs from the filesystem to act: the engine, its own path for errors, and
/// the check for a caller being killed.
pub(super) struct Ctx<'a> {
    pub broker: &'a Broker,
    pub path: &'a str,
    pub killed: &'a (dyn Fn(u32) -> bool + Send + Sync),
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
pub(super) trait OpenHandle: Send {
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

    /// Whether lseek may move the file position (only `in`, where holes and truncation give
    /// what a file would hold); other files are streams.
    fn seekable(&self) -> bool {
        false
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
pub(super) struct SnapshotHandle {
    bytes: Vec<u8>,
}

impl SnapshotHandle {
    pub fn new(bytes: Vec<u8>) -> SnapshotHandle {
        SnapshotHandle { bytes }
    }
}

impl OpenHandle for SnapshotHandle {
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32, _pid: u32) -> Result<Vec<u8>> {
        Ok(slice_at(&self.bytes, offset, size))
    }

    fn needs_flush(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------- publish

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
pub(super) struct PublishHandle {
    queue: String,
    limit: u64,
    /// The task that opened the file: its closes publish.
    opener: u32,
    /// Opened with O_APPEND: each write goes at the end of the pending message, whatever
    /// offset the kernel passes (it passes its own idea of the file's size).
    append: bool,
    /// File offset where the pending message starts (non-append writes are placed relative
    /// to it, so seeks and holes give what a file would hold).
    start: u64,
    /// The queue's directory, where a large body is kept while it is written.
    dir: PathBuf,
    body: Body,
    /// Something was written (or truncated into existence) since the last publish.
    pending: bool,
    /// UTF-8 is checked as bytes arrive in order: the bytes of a character cut by a write's
    /// end wait here for the next write.
    utf8_carry: Vec<u8>,
    /// A write out of order or a truncation: the whole body is checked at publish instead.
    utf8_unordered: bool,
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
        let limit = ctx
            .queue("open", queue)?
            .settings()
            .map_err(|e| ctx.fail("open", e))?
            .max_message_bytes;
        Ok(PublishHandle {
            queue: queue.to_string(),
            limit,
            opener,
            append,
            start: 0,
            dir: ctx.broker.root().join(queue),
            body: Body::default(),
            pending: false,
            utf8_carry: Vec::new(),
            utf8_unordered: false,
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
        ctx.fail("write", r.kind(&self.dir))
    }

    /// Ends the pending message without publishing it; the next write starts a new one.
    fn discard(&mut self) {
        self.start += self.body.len();
        self.body = Body::default();
        self.pending = false;
        self.utf8_carry.clear();
        self.utf8_unordered = false;
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
        let bytes = body.into_bytes().map_err(|e| {
            ctx.fail(
                op,
                engine::Error::Io {
                    op: "read",
                    path: self.dir.clone(),
                    source: e,
                },
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ctx.fail(op, FsErrorKind::NotUtf8))?;
        ctx.queue(op, &self.queue)?
            .publish(serde_json::Value::String(text), &PublishOptions::default())
            .map_err(|e| ctx.fail(op, e))?;
        Ok(())
    }

    /// Checks bytes written in order: false if they cannot be UTF-8 whatever follows.
    fn utf8_ok(&mut self, data: &[u8]) -> bool {
        let joined;
        let bytes = if self.utf8_carry.is_empty() {
            data
        } else {
            joined = [self.utf8_carry.as_slice(), data].concat();
            &joined[..]
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => {
                self.utf8_carry.clear();
                true
            }
            Err(e) if e.error_len().is_none() => {
                self.utf8_carry = bytes[e.valid_up_to()..].to_vec();
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `pid` is the opener or a thread of the opener's process (only then asks /proc).
    fn is_opener(&self, pid: u32) -> bool {
        pid == self.opener || super::caller::same_process(pid, self.opener)
    }
}

impl OpenHandle for PublishHandle {
    fn write(&mut self, ctx: &Ctx, offset: u64, data: &[u8]) -> Result<u32> {
        if let Some(r) = self.refused {
            return Err(ctx.fail("write", r.kind(&self.dir)));
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
        if at != self.body.len() {
            self.utf8_unordered = true;
        }
        if !self.utf8_unordered && !self.utf8_ok(data) {
            return Err(self.refuse(ctx, Refusal::NotUtf8));
        }
        if let Err(e) = self.body.write_at(&self.dir, at, data) {
            return Err(self.refuse(ctx, Refusal::Storage(e.raw_os_error().unwrap_or(libc::EIO))));
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
            if let Err(e) = self.body.set_len(&self.dir, len) {
                return Err(
                    self.refuse(ctx, Refusal::Storage(e.raw_os_error().unwrap_or(libc::EIO)))
                );
            }
            self.utf8_unordered = true;
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
                Err(ctx.fail(OP, r.kind(&self.dir)))
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

// ---------------------------------------------------------------------------------- deliver

/// An open `next`, `wait` or `claim`: the claimed message and who read it to the end.
pub(super) struct DeliverHandle {
    queue: String,
    work: WorkName,
    bytes: Vec<u8>,
    /// How far the reads reached.
    handed: usize,
    /// Tasks whose read reached the end of the message (after the rest was handed over).
    finished_by: Vec<u32>,
    /// next and wait ack once the reader got everything; claim leaves the message in flight.
    ack_when_done: bool,
    /// Acked (or, for claim, left in flight for good): nothing is left to do at release.
    settled: bool,
}

impl DeliverHandle {
    /// A handle for a message just claimed from `queue`: `claim` reads its record as JSON and
    /// leaves it in flight; `next` and `wait` read its body and ack it once it was read whole.
    pub fn new(queue: &Queue, delivery: Delivery, record: bool) -> DeliverHandle {
        let bytes = if record {
            format!("{}\n", delivery.message.to_json()).into_bytes()
        } else {
            delivery.message.body_text().into_bytes()
        };
        DeliverHandle {
            queue: queue.name().to_string(),
            work: delivery.work_name,
            bytes,
            handed: 0,
            finished_by: Vec::new(),
            ack_when_done: !record,
            settled: false,
        }
    }

    /// The process of `pid` is one whose read reached the end.
    fn finished_by(&self, pid: u32) -> Option<usize> {
        self.finished_by.iter().position(|r| *r == pid).or_else(|| {
            self.finished_by
                .iter()
                .position(|r| super::caller::same_process(pid, *r))
        })
    }

    fn ack(&mut self, ctx: &Ctx, op: &'static str) -> Result<()> {
        self.settled = true;
        if self.ack_when_done {
            ctx.queue(op, &self.queue)?
                .ack(&self.work.to_string())
                .map_err(|e| ctx.fail(op, e))?;
        }
        Ok(())
    }
}

impl OpenHandle for DeliverHandle {
    /// READ at `offset` (offsets are honoured: under direct I/O a reader stops at an empty read).
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32, pid: u32) -> Result<Vec<u8>> {
        let data = slice_at(&self.bytes, offset, size);
        let end = offset as usize + data.len();
        if offset as usize <= self.handed {
            self.handed = self.handed.max(end);
        }
        if self.handed >= self.bytes.len() && !self.finished_by.contains(&pid) {
            self.finished_by.push(pid);
        }
        Ok(data)
    }

    /// The close of a process that read the message to the end acks it, unless that process
    /// is being killed (it may not have used what it read). Closes of other holders (a child
    /// that inherited the descriptor) decide nothing.
    fn flush(&mut self, ctx: &Ctx, pid: u32) -> Result<()> {
        if self.settled || self.finished_by.is_empty() {
            return Ok(());
        }
        let Some(i) = self.finished_by(pid) else {
            return Ok(());
        };
        if (ctx.killed)(pid) {
            log::info!(
                "{}: a reader (pid {pid}) was killed before it closed: unless another holder read it whole, the message goes back to the queue",
                ctx.path
            );
            self.finished_by.remove(i);
            return Ok(());
        }
        self.ack(ctx, "flush")
    }

    /// Gives the message back unless someone still alive read it whole.
    fn release(mut self: Box<Self>, ctx: &Ctx, _shutting_down: bool) -> Result<()> {
        const OP: &str = "release";
        if self.settled {
            return Ok(());
        }
        if !self.finished_by.is_empty() {
            return self.ack(ctx, OP);
        }
        let q = ctx.queue(OP, &self.queue)?;
        let fail = |e: engine::Error| ctx.fail(OP, e);
        // The lease may have been extended meanwhile: find its current name.
        if let Some(w) = q.resolve_in_flight(&self.work.to_string()).map_err(fail)? {
            q.give_back(&w).map_err(fail)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------- config

/// `ddmq.yaml` opened for writing: the new text, applied on flush or close.
pub(super) struct ConfigHandle {
    queue: String,
    /// The file as it was at open, for reads.
    snapshot: Vec<u8>,
    text: Vec<u8>,
    dirty: bool,
    refused: bool,
}

impl ConfigHandle {
    pub fn new(queue: &str, snapshot: Vec<u8>) -> ConfigHandle {
        ConfigHandle {
            queue: queue.to_string(),
            snapshot,
            text: Vec::new(),
            dirty: false,
            refused: false,
        }
    }
}

impl OpenHandle for ConfigHandle {
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32, _pid: u32) -> Result<Vec<u8>> {
        Ok(slice_at(&self.snapshot, offset, size))
    }

    fn write(&mut self, ctx: &Ctx, offset: u64, data: &[u8]) -> Result<u32> {
        const OP: &str = "write";
        if self.refused {
            return Err(ctx.fail(
                OP,
                FsErrorKind::Invalid("the settings written are refused".into()),
            ));
        }
        let offset = offset as usize;
        if offset + data.len() > MAX_CONFIG_BYTES {
            self.refused = true;
            return Err(ctx.fail(
                OP,
                FsErrorKind::TooLarge {
                    limit: MAX_CONFIG_BYTES as u64,
                },
            ));
        }
        place(&mut self.text, offset, data);
        self.dirty = true;
        // Shells ignore errors from close(): refuse bad settings here, where `echo` sees
        // it. Text is judged at line ends only, where a prefix of good YAML is good YAML.
        if self.text.ends_with(b"\n")
            && let Err(e) = ctx.broker.validate_queue_settings(&self.queue, &self.text)
        {
            self.refused = true;
            return Err(ctx.fail(OP, e));
        }
        Ok(data.len() as u32)
    }

    fn truncate(&mut self, ctx: &Ctx, size: u64) -> Result<()> {
        only_to_zero(ctx, size)?;
        self.text.clear();
        self.refused = false;
        Ok(())
    }

    /// Applies the new text at every close that follows a change.
    fn flush(&mut self, ctx: &Ctx, _pid: u32) -> Result<()> {
        const OP: &str = "flush";
        if self.refused {
            return Err(ctx.fail(
                OP,
                FsErrorKind::Invalid("the settings written were refused".into()),
            ));
        }
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        ctx.queue(OP, &self.queue)?
            .write_config_text(&self.text)
            .map_err(|e| ctx.fail(OP, e))
    }

    fn release(self: Box<Self>, ctx: &Ctx, shutting_down: bool) -> Result<()> {
        const OP: &str = "release";
        if self.dirty && !self.refused && !shutting_down {
            ctx.queue(OP, &self.queue)?
                .write_config_text(&self.text)
                .map_err(|e| ctx.fail(OP, e))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------- ids

/// `ack` or `nack`: ids, one a line; an incomplete last line waits here.
pub(super) struct IdsHandle {
    queue: String,
    nack: bool,
    partial: Vec<u8>,
}

impl IdsHandle {
    pub fn new(queue: &str, nack: bool) -> IdsHandle {
        IdsHandle {
            queue: queue.to_string(),
            nack,
            partial: Vec::new(),
        }
    }

    /// Acks or nacks the message one line names.
    fn settle(&self, ctx: &Ctx, line: &[u8]) -> Result<()> {
        let op = if self.nack { "nack" } else { "ack" };
        let id = std::str::from_utf8(line)
            .map_err(|_| ctx.fail(op, FsErrorKind::Invalid("a message id is ASCII".into())))?
            .trim();
        if id.is_empty() {
            return Ok(());
        }
        let q = ctx.queue(op, &self.queue)?;
        let found = if self.nack {
            q.nack(id, false).map_err(|e| ctx.fail(op, e))? != RequeueOutcome::NotFound
        } else {
            q.ack(id).map_err(|e| ctx.fail(op, e))? != AckOutcome::NotFound
        };
        if found {
            Ok(())
        } else {
            Err(ctx.fail(op, FsErrorKind::NotFound))
        }
    }
}

/// The next complete line of `buf`, removed from it.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=end).collect();
    line.pop();
    Some(line)
}

impl OpenHandle for IdsHandle {
    /// Settles each complete line as it arrives; the first failure is the write's error.
    fn write(&mut self, ctx: &Ctx, _offset: u64, data: &[u8]) -> Result<u32> {
        self.partial.extend_from_slice(data);
        let mut first_error = None;
        while let Some(line) = take_line(&mut self.partial) {
            if let Err(e) = self.settle(ctx, &line) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(data.len() as u32),
        }
    }

    fn truncate(&mut self, ctx: &Ctx, size: u64) -> Result<()> {
        only_to_zero(ctx, size)?;
        self.partial.clear();
        Ok(())
    }

    /// Settles a last line written without its newline.
    fn flush(&mut self, ctx: &Ctx, _pid: u32) -> Result<()> {
        let line = std::mem::take(&mut self.partial);
        self.settle(ctx, &line)
    }

    fn release(self: Box<Self>, ctx: &Ctx, shutting_down: bool) -> Result<()> {
        if shutting_down {
            Ok(())
        } else {
            self.settle(ctx, &self.partial)
        }
    }
}
