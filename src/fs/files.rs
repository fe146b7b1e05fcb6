//! Opening files of the tree and handing each request on an open file to its handle
//! ([`super::handles`]): which node opens as which kind of handle, and the lookup of open files.

use super::handles::{
    ConfigHandle, Ctx, DeliverHandle, IdsHandle, OpenHandle, PublishHandle, SnapshotHandle,
    WorkEntryHandle,
};
use super::lease::Lease;
use super::{
    Access, DirKind, FileKind, FsError, FsErrorKind, Node, OpenFile, QueueFs, Result, err,
};
use crate::engine::{ConsumeOptions, HeldDelivery, Queue, now_secs};
use crate::locking::LockRecovering;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an open asks for: its access mode and whether writes append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenMode {
    pub access: Access,
    pub append: bool,
    /// O_TRUNC: the file starts empty (ddmq.yaml otherwise starts from its current text).
    pub truncate: bool,
}

impl OpenMode {
    /// From open(2) flags.
    pub fn from_flags(flags: i32) -> OpenMode {
        OpenMode {
            access: Access::from_flags(flags),
            append: flags & libc::O_APPEND != 0,
            truncate: flags & libc::O_TRUNC != 0,
        }
    }
}

impl From<Access> for OpenMode {
    fn from(access: Access) -> OpenMode {
        OpenMode {
            access,
            append: false,
            truncate: false,
        }
    }
}

/// How the kernel should treat an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenInfo {
    /// Its closes matter (FLUSH is sent); snapshots skip it.
    pub needs_flush: bool,
    /// lseek may move its position (`in`); other files are streams.
    pub seekable: bool,
}

/// How long an `in` removed by a process stays missing for it.
const REMOVED_IN_FOR: Duration = Duration::from_secs(2);

/// `install` removes its destination, then creates it with O_EXCL. Removing `in` changes
/// nothing, but for the process that removed it `in` is missing until that process creates it
/// (or [`REMOVED_IN_FOR`] passes), so the exclusive create reaches [`QueueFs::create`].
pub(super) struct RemovedIn {
    node: Node,
    pid: u32,
    at: Instant,
}

impl QueueFs {
    pub(super) fn remember_removed_in(&self, node: &Node, pid: u32) {
        if pid == 0 {
            return;
        }
        let mut removed = self.removed_in.lock_recovering();
        removed.retain(|r| r.at.elapsed() < REMOVED_IN_FOR);
        removed.push(RemovedIn {
            node: node.clone(),
            pid,
            at: Instant::now(),
        });
    }

    /// True if `node` is an `in` that `pid` removed lately.
    pub(super) fn removed_in_by(&self, node: &Node, pid: u32) -> bool {
        if pid == 0 || !matches!(node, Node::File(_, FileKind::In)) {
            return false;
        }
        let removed = self.removed_in.lock_recovering();
        removed
            .iter()
            .any(|r| r.pid == pid && r.node == *node && r.at.elapsed() < REMOVED_IN_FOR)
    }

    /// True if opening `ino` may take long: `wait` (until a message comes), and `status` (a
    /// count of the queue's directories, tens of milliseconds at 100,000 waiting). The adapter
    /// runs such opens on a thread of their own, so the requests of everybody else (a publish,
    /// the pages of an `ls -l`) are not held up behind them, nor they behind those.
    pub fn open_may_block(&self, ino: u64) -> bool {
        matches!(
            self.inodes.lock_recovering().node(ino),
            Some(Node::File(_, FileKind::Wait | FileKind::Status))
        )
    }

    fn file_by_handle(&self, op: &'static str, fh: u64) -> Result<Arc<Mutex<OpenFile>>> {
        self.files
            .lock_recovering()
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::new(op, format!("handle {fh}"), FsErrorKind::BadHandle))
    }

    /// CREATE: only of `in` (what `install` does after removing it, which changes nothing):
    /// opens it for publishing. Every other name is refused, the tree has a fixed shape.
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: OpenMode,
        pid: u32,
        who: Option<&super::Caller>,
    ) -> Result<(super::Attr, u64)> {
        let is_in = matches!(self.node("create", parent)?, Node::Queue(_))
            && FileKind::from_name(name) == Some(FileKind::In);
        if !is_in {
            return Err(self.refuse("create", parent, name));
        }
        self.removed_in
            .lock_recovering()
            .retain(|r| r.pid != pid || r.at.elapsed() >= REMOVED_IN_FOR);
        let attr = self.lookup_by(parent, name, 0, who)?;
        match self.open(attr.ino, mode, pid) {
            Ok(fh) => Ok((attr, fh)),
            Err(e) => {
                self.forget(attr.ino, 1);
                Err(e)
            }
        }
    }

    /// OPEN. `pid` is the caller's, for noticing that a waiting reader is being killed.
    pub fn open(&self, ino: u64, mode: impl Into<OpenMode>, pid: u32) -> Result<u64> {
        const OP: &str = "open";
        let mode: OpenMode = mode.into();
        let access = mode.access;
        let node = self.node(OP, ino)?;
        let read_only_file = |what: &'static str| {
            if access.writes() {
                Err(err(OP, &node, FsErrorKind::Access(what)))
            } else {
                Ok(())
            }
        };
        let path = node.path();
        let ctx = self.ctx(&path);
        let handle: Box<dyn OpenHandle> = match &node {
            Node::Root | Node::Queue(_) | Node::Dir(..) => {
                return Err(err(OP, &node, FsErrorKind::IsDir));
            }
            Node::File(q, kind @ (FileKind::In | FileKind::Ack | FileKind::Nack)) => {
                if access != Access::Write {
                    return Err(err(
                        OP,
                        &node,
                        FsErrorKind::Access("write-only: it takes what is written to it"),
                    ));
                }
                self.writable(OP, &node)?;
                self.queue(OP, &node)?;
                match kind {
                    FileKind::In => Box::new(PublishHandle::open(&ctx, q, mode.append, pid)?),
                    _ => Box::new(IdsHandle::new(q, *kind == FileKind::Nack)),
                }
            }
            Node::File(_, kind @ (FileKind::Next | FileKind::Wait | FileKind::Claim)) => {
                read_only_file("read-only: opening it takes a message")?;
                self.writable(OP, &node)?;
                let queue = self.queue(OP, &node)?;
                if *kind == FileKind::Claim {
                    let delivery = queue.consume_one().map_err(|e| err(OP, &node, e))?;
                    let delivery = delivery.ok_or_else(|| err(OP, &node, FsErrorKind::Empty))?;
                    Box::new(DeliverHandle::claimed(&path, &queue, delivery))
                } else {
                    let held = self.take_held(&queue, &node, *kind, pid)?;
                    Box::new(DeliverHandle::held(&path, &queue, held))
                }
            }
            Node::File(_, FileKind::Status) => {
                read_only_file("read-only")?;
                let s = self
                    .queue(OP, &node)?
                    .status(true)
                    .map_err(|e| err(OP, &node, e))?;
                let age = s
                    .oldest_waiting_age
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "null".into());
                let mut text = format!(
                    "queue: {}\nwaiting: {}\nin_flight: {}\noldest_waiting_age: {age}\n",
                    node.queue().unwrap_or(""),
                    s.waiting,
                    s.in_flight
                );
                if let Some(e) = node.queue().and_then(|q| self.last_error(q)) {
                    text.push_str(&format!("last_error: {e}\n"));
                }
                Box::new(SnapshotHandle::stream(text.into_bytes()))
            }
            Node::File(q, FileKind::Config) => {
                let text = self
                    .queue(OP, &node)?
                    .read_config_text()
                    .map_err(|e| err(OP, &node, e))?
                    .into_bytes();
                if access.writes() {
                    self.writable(OP, &node)?;
                    Box::new(ConfigHandle::open(&ctx, q, text, mode)?)
                } else {
                    Box::new(SnapshotHandle::new(text))
                }
            }
            Node::Entry(q, DirKind::Work, id) => {
                let queue = self.queue(OP, &node)?;
                let found = self.find_in_flight(OP, &node, id)?;
                let missing = || err(OP, &node, FsErrorKind::NotFound);
                if access.writes() {
                    // touch opens for writing before it sets the times (which extends the
                    // lease): the open succeeds, and any write fails.
                    self.writable(OP, &node)?;
                    let w = found.ok_or_else(missing)?;
                    Box::new(WorkEntryHandle::new(Vec::new(), Lease::new(&path, q, w)))
                } else {
                    let w = found.ok_or_else(missing)?;
                    let msg = queue
                        .read_in_flight(&w)
                        .map_err(|e| err(OP, &node, e))?
                        .ok_or_else(missing)?;
                    Box::new(WorkEntryHandle::new(
                        msg.body_text().into_bytes(),
                        Lease::new(&path, q, w),
                    ))
                }
            }
            Node::Entry(_, DirKind::Messages, id) => {
                read_only_file("read-only: reading it takes nothing")?;
                let queue = self.queue(OP, &node)?;
                let msg = match self.find_waiting(OP, &node, id)? {
                    Some(w) => queue.read_waiting(&w).map_err(|e| err(OP, &node, e))?,
                    None => None,
                };
                Box::new(SnapshotHandle::new(
                    msg.ok_or_else(|| err(OP, &node, FsErrorKind::NotFound))?
                        .body_text()
                        .into_bytes(),
                ))
            }
        };
        self.insert_open_file(path, handle)
    }

    fn insert_open_file(&self, path: String, handle: Box<dyn OpenHandle>) -> Result<u64> {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        if let Some(lease) = handle.lease() {
            self.leases.hold(fh, lease);
        }
        self.files.lock_recovering().insert(
            fh,
            Arc::new(Mutex::new(OpenFile {
                path,
                handle: Some(handle),
            })),
        );
        Ok(fh)
    }

    /// Remembers why a write, close or release on a file of a queue failed, for its `status`
    /// (`last_error:`), where a user whose shell ignored close()'s error looks next.
    pub(super) fn note_error(&self, path: &str, e: &FsError) {
        if let Some((queue, _)) = path.split_once('/') {
            let at = now_secs();
            self.last_errors
                .lock_recovering()
                .insert(queue.to_string(), format!("{at} {e}"));
        }
    }

    fn last_error(&self, queue: &str) -> Option<String> {
        self.last_errors.lock_recovering().get(queue).cloned()
    }

    /// Takes a message for an open of next or wait, with one rename: the reader acks it at
    /// close, most often before its first renewal gives it a `work/` name (see [`Lease`]).
    /// No housekeeping (the daemon's own loop runs it).
    fn take_held(
        &self,
        queue: &Queue,
        node: &Node,
        kind: FileKind,
        pid: u32,
    ) -> Result<HeldDelivery> {
        const OP: &str = "open";
        let held = if kind == FileKind::Wait {
            let give_up = || self.shutting_down.load(Ordering::Relaxed) || (self.interrupted)(pid);
            let got = queue
                .consume_wait_held(self.opts.wait_limit, self.opts.wait_poll, &give_up)
                .map_err(|e| err(OP, node, e))?;
            if (self.interrupted)(pid) {
                // The reader is dying: it must not take the message with it.
                if let Some(h) = &got {
                    queue
                        .give_back_in_flight(&h.in_flight)
                        .map_err(|e| err(OP, node, e))?;
                }
                return Err(err(OP, node, FsErrorKind::Interrupted));
            }
            got
        } else {
            queue
                .consume_held(&ConsumeOptions { clean: false })
                .map_err(|e| err(OP, node, e))?
        };
        held.ok_or_else(|| err(OP, node, FsErrorKind::Empty))
    }

    /// Runs `f` on the open file `fh`, with the context its handle acts in.
    pub(super) fn with_handle<T>(
        &self,
        op: &'static str,
        fh: u64,
        f: impl FnOnce(&mut dyn OpenHandle, &Ctx) -> Result<T>,
    ) -> Result<T> {
        let file = self.file_by_handle(op, fh)?;
        let mut file = file.lock_recovering();
        let OpenFile { path, handle } = &mut *file;
        let result = match handle {
            Some(h) => f(h.as_mut(), &self.ctx(path)),
            None => Err(FsError::new(op, path.clone(), FsErrorKind::BadHandle)),
        };
        if let Err(e) = &result
            && matches!(op, "write" | "flush" | "setattr")
        {
            self.note_error(path, e);
        }
        result
    }

    pub(super) fn ctx<'a>(&'a self, path: &'a str) -> Ctx<'a> {
        Ctx {
            broker: &self.broker,
            path,
            killed: &*self.killed,
            leases: &self.leases,
        }
    }

    /// READ at `offset` (offsets are honoured: under direct I/O a reader stops at an empty read).
    /// `pid` is the reading task's: whoever reads a message to its end may ack it by closing.
    pub fn read(&self, fh: u64, offset: u64, size: u32, pid: u32) -> Result<Vec<u8>> {
        self.with_handle("read", fh, |h, ctx| h.read(ctx, offset, size, pid))
    }

    /// WRITE at `offset`; returns the bytes taken.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.with_handle("write", fh, |h, ctx| h.write(ctx, offset, data))
    }

    /// Whether closes of this handle matter: writers report errors at close, and readers of
    /// next/wait/claim are watched for being killed. Others (status, peeks) can skip FLUSH.
    pub fn needs_flush(&self, fh: u64) -> bool {
        self.open_info(fh).needs_flush
    }

    /// How the kernel should treat the open file `fh` (see [`OpenInfo`]).
    pub fn open_info(&self, fh: u64) -> OpenInfo {
        let files = self.files.lock_recovering();
        let file = files.get(&fh).map(|f| f.lock_recovering());
        match file.as_ref().and_then(|f| f.handle.as_ref()) {
            Some(h) => OpenInfo {
                needs_flush: h.needs_flush(),
                seekable: h.seekable(),
            },
            None => OpenInfo {
                needs_flush: true,
                seekable: false,
            },
        }
    }

    /// FLUSH: a close of the file by the process `pid`; the only request that reports an error
    /// to `close()`. A writer or reader killed by a signal is noticed here (see [`caller`]).
    pub fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        self.with_handle("flush", fh, |h, ctx| h.flush(ctx, pid))
    }

    /// RELEASE (the last close of the open file).
    pub fn release(&self, fh: u64) -> Result<()> {
        self.leases.release(fh);
        let file = self.files.lock_recovering().remove(&fh);
        let Some(file) = file else {
            return Err(FsError::new(
                "release",
                format!("handle {fh}"),
                FsErrorKind::BadHandle,
            ));
        };
        self.finish(&file, false)
    }

    /// Releases an open file, after any READ or WRITE still running on it.
    pub(super) fn finish(&self, file: &Mutex<OpenFile>, shutting_down: bool) -> Result<()> {
        let mut file = file.lock_recovering();
        let OpenFile { path, handle } = &mut *file;
        let result = match handle.take() {
            Some(h) => h.release(&self.ctx(path), shutting_down),
            None => Ok(()),
        };
        if let Err(e) = &result {
            self.note_error(path, e);
        }
        result
    }
}
