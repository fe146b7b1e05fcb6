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

use super::{FsError, FsErrorKind, Result};
use crate::engine::{
    self, AckOutcome, Broker, Delivery, PublishOptions, Queue, RequeueOutcome, WorkName,
};
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
    fn read(&mut self, ctx: &Ctx, _offset: u64, _size: u32) -> Result<Vec<u8>> {
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

    /// FLUSH: a close of a descriptor of this file by the task `pid`.
    fn flush(&mut self, _ctx: &Ctx, _pid: u32) -> Result<()> {
        Ok(())
    }

    /// RELEASE: the last descriptor is gone; `shutting_down` when the daemon stops instead.
    fn release(self: Box<Self>, _ctx: &Ctx, _shutting_down: bool) -> Result<()> {
        Ok(())
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
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32) -> Result<Vec<u8>> {
        Ok(slice_at(&self.bytes, offset, size))
    }

    fn needs_flush(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------- publish

/// Why a writer's body will not be published.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    TooLarge(u64),
    NotUtf8,
    /// The writer was killed by a signal before it closed: what it wrote may be cut short.
    WriterKilled,
}

impl Refusal {
    fn kind(self) -> FsErrorKind {
        match self {
            Refusal::TooLarge(limit) => FsErrorKind::TooLarge { limit },
            Refusal::NotUtf8 => FsErrorKind::NotUtf8,
            Refusal::WriterKilled => FsErrorKind::Interrupted,
        }
    }
}

/// An open `in`: the bytes written so far.
pub(super) struct PublishHandle {
    queue: String,
    body: Vec<u8>,
    limit: u64,
    wrote: bool,
    /// The prefix of `body` known to be valid UTF-8.
    checked: usize,
    refused: Option<Refusal>,
}

impl PublishHandle {
    /// Opens `in` of `queue`: the queue's size limit is read now.
    pub fn open(ctx: &Ctx, queue: &str) -> Result<PublishHandle> {
        let limit = ctx
            .queue("open", queue)?
            .settings()
            .map_err(|e| ctx.fail("open", e))?
            .max_message_bytes;
        Ok(PublishHandle {
            queue: queue.to_string(),
            body: Vec::new(),
            limit,
            wrote: false,
            checked: 0,
            refused: None,
        })
    }
}

impl OpenHandle for PublishHandle {
    fn write(&mut self, ctx: &Ctx, offset: u64, data: &[u8]) -> Result<u32> {
        const OP: &str = "write";
        if let Some(r) = self.refused {
            return Err(ctx.fail(OP, r.kind()));
        }
        let offset = offset as usize;
        if (offset + data.len()) as u64 > self.limit {
            self.refused = Some(Refusal::TooLarge(self.limit));
            return Err(ctx.fail(OP, FsErrorKind::TooLarge { limit: self.limit }));
        }
        if offset < self.checked {
            self.checked = 0; // rewriting what was checked: check it all again
        }
        place(&mut self.body, offset, data);
        self.wrote = true;
        // Check UTF-8 as it arrives; a character cut by a chunk boundary is completed later.
        match std::str::from_utf8(&self.body[self.checked..]) {
            Ok(_) => self.checked = self.body.len(),
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => {
                self.refused = Some(Refusal::NotUtf8);
                return Err(ctx.fail(OP, FsErrorKind::NotUtf8));
            }
        }
        Ok(data.len() as u32)
    }

    fn truncate(&mut self, _ctx: &Ctx, _size: u64) -> Result<()> {
        self.body.clear();
        self.checked = 0;
        self.refused = None;
        Ok(())
    }

    fn flush(&mut self, ctx: &Ctx, pid: u32) -> Result<()> {
        const OP: &str = "flush";
        if (ctx.killed)(pid) {
            if self.wrote {
                log::warn!(
                    "{}: the writer (pid {pid}) was killed before it closed: nothing is published",
                    ctx.path
                );
                self.refused = Some(Refusal::WriterKilled);
            }
            return Ok(());
        }
        if let Some(r) = self.refused {
            return Err(ctx.fail(OP, r.kind()));
        }
        if self.wrote && std::str::from_utf8(&self.body[self.checked..]).is_err() {
            self.refused = Some(Refusal::NotUtf8);
            return Err(ctx.fail(OP, FsErrorKind::NotUtf8));
        }
        Ok(())
    }

    fn release(self: Box<Self>, ctx: &Ctx, shutting_down: bool) -> Result<()> {
        const OP: &str = "release";
        if !self.wrote || self.refused.is_some() || shutting_down {
            return Ok(());
        }
        let body = String::from_utf8(self.body).map_err(|_| ctx.fail(OP, FsErrorKind::NotUtf8))?;
        ctx.queue(OP, &self.queue)?
            .publish(serde_json::Value::String(body), &PublishOptions::default())
            .map_err(|e| ctx.fail(OP, e))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------- deliver

/// An open `next`, `wait` or `claim`: the claimed message and how much of it the reader got.
pub(super) struct DeliverHandle {
    queue: String,
    work: WorkName,
    bytes: Vec<u8>,
    handed: usize,
    read_any: bool,
    /// next and wait ack once the reader got everything; claim leaves the message in flight.
    ack_when_done: bool,
    /// The reader was killed by a signal as it closed: it may not have used what it read.
    reader_killed: bool,
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
            read_any: false,
            ack_when_done: !record,
            reader_killed: false,
        }
    }

    fn handed_over(&self) -> bool {
        self.read_any && self.handed >= self.bytes.len() && !self.reader_killed
    }
}

impl OpenHandle for DeliverHandle {
    /// READ at `offset` (offsets are honoured: under direct I/O a reader stops at an empty read).
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32) -> Result<Vec<u8>> {
        let data = slice_at(&self.bytes, offset, size);
        self.read_any = true;
        self.handed = self.handed.max(offset as usize + data.len());
        Ok(data)
    }

    fn flush(&mut self, ctx: &Ctx, pid: u32) -> Result<()> {
        if (ctx.killed)(pid) {
            log::info!(
                "{}: the reader (pid {pid}) was killed: the message goes back to the queue",
                ctx.path
            );
            self.reader_killed = true;
        }
        Ok(())
    }

    /// Acks a message whose body was handed over whole, gives back one that was not.
    fn release(self: Box<Self>, ctx: &Ctx, _shutting_down: bool) -> Result<()> {
        const OP: &str = "release";
        let q = ctx.queue(OP, &self.queue)?;
        let fail = |e: engine::Error| ctx.fail(OP, e);
        let done = self.handed_over();
        if done && self.ack_when_done {
            q.ack(&self.work.to_string()).map_err(fail)?;
        } else if !done {
            // The lease may have been extended meanwhile: find its current name.
            if let Some(w) = q.resolve_in_flight(&self.work.to_string()).map_err(fail)? {
                q.give_back(&w).map_err(fail)?;
            }
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
    fn read(&mut self, _ctx: &Ctx, offset: u64, size: u32) -> Result<Vec<u8>> {
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

    fn truncate(&mut self, _ctx: &Ctx, _size: u64) -> Result<()> {
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

    fn truncate(&mut self, _ctx: &Ctx, _size: u64) -> Result<()> {
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
