//! Opening files of the tree and handing each request on an open file to its handle
//! ([`super::handles`]): which node opens as which kind of handle, and the lookup of open files.

use super::handles::{
    ConfigHandle, Ctx, DeliverHandle, IdsHandle, OpenHandle, PublishHandle, SnapshotHandle,
};
use super::{
    Access, DirKind, FileKind, FsError, FsErrorKind, Node, OpenFile, QueueFs, Result, err,
};
use crate::engine::{Delivery, Queue};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

impl QueueFs {
    /// True if opening `ino` may block for long (`wait`): the adapter runs it on its own thread.
    pub fn open_may_block(&self, ino: u64) -> bool {
        matches!(
            self.inodes.lock().unwrap().node(ino),
            Some(Node::File(_, FileKind::Wait))
        )
    }

    pub(super) fn file(
        &self,
        op: &'static str,
        node: &Node,
        fh: u64,
    ) -> Result<Arc<Mutex<OpenFile>>> {
        self.files
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or_else(|| err(op, node, FsErrorKind::BadHandle))
    }

    fn file_by_handle(&self, op: &'static str, fh: u64) -> Result<Arc<Mutex<OpenFile>>> {
        self.files
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::new(op, format!("handle {fh}"), FsErrorKind::BadHandle))
    }

    /// OPEN. `pid` is the caller's, for noticing that a waiting reader is being killed.
    pub fn open(&self, ino: u64, access: Access, pid: u32) -> Result<u64> {
        const OP: &str = "open";
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
                    FileKind::In => Box::new(PublishHandle::open(&ctx, q)?),
                    _ => Box::new(IdsHandle::new(q, *kind == FileKind::Nack)),
                }
            }
            Node::File(_, kind @ (FileKind::Next | FileKind::Wait | FileKind::Claim)) => {
                read_only_file("read-only: opening it takes a message")?;
                self.writable(OP, &node)?;
                let (queue, delivery) = self.deliver(&node, *kind, pid)?;
                Box::new(DeliverHandle::new(
                    &queue,
                    delivery,
                    *kind == FileKind::Claim,
                ))
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
                let text = format!(
                    "queue: {}\nwaiting: {}\nin_flight: {}\noldest_waiting_age: {age}\n",
                    node.queue().unwrap_or(""),
                    s.waiting,
                    s.in_flight
                );
                Box::new(SnapshotHandle::new(text.into_bytes()))
            }
            Node::File(q, FileKind::Config) => {
                let text = self
                    .queue(OP, &node)?
                    .read_config_text()
                    .map_err(|e| err(OP, &node, e))?
                    .into_bytes();
                if access.writes() {
                    self.writable(OP, &node)?;
                    Box::new(ConfigHandle::new(q, text))
                } else {
                    Box::new(SnapshotHandle::new(text))
                }
            }
            Node::Entry(_, DirKind::Work, id) => {
                read_only_file("read-only: rm acks it, touch extends its lease")?;
                let queue = self.queue(OP, &node)?;
                let found = queue.resolve_in_flight(id).map_err(|e| err(OP, &node, e))?;
                let msg = match found {
                    Some(w) => queue.read_in_flight(&w).map_err(|e| err(OP, &node, e))?,
                    None => None,
                };
                Box::new(SnapshotHandle::new(
                    msg.ok_or_else(|| err(OP, &node, FsErrorKind::NotFound))?
                        .body_text()
                        .into_bytes(),
                ))
            }
            Node::Entry(_, DirKind::Messages, id) => {
                read_only_file("read-only: reading it takes nothing")?;
                let queue = self.queue(OP, &node)?;
                let waiting = queue.waiting().map_err(|e| err(OP, &node, e))?;
                let msg = match waiting.iter().find(|w| w.id == *id) {
                    Some(w) => queue.read_waiting(w).map_err(|e| err(OP, &node, e))?,
                    None => None,
                };
                Box::new(SnapshotHandle::new(
                    msg.ok_or_else(|| err(OP, &node, FsErrorKind::NotFound))?
                        .body_text()
                        .into_bytes(),
                ))
            }
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap().insert(
            fh,
            Arc::new(Mutex::new(OpenFile {
                path,
                handle: Some(handle),
            })),
        );
        Ok(fh)
    }

    /// Claims a message for an open of next, wait or claim.
    fn deliver(&self, node: &Node, kind: FileKind, pid: u32) -> Result<(Arc<Queue>, Delivery)> {
        const OP: &str = "open";
        let queue = self.queue(OP, node)?;
        let delivery: Option<Delivery> = if kind == FileKind::Wait {
            let give_up = || self.shutting_down.load(Ordering::Relaxed) || (self.interrupted)(pid);
            let got = queue
                .consume_wait(self.opts.wait_limit, self.opts.wait_poll, &give_up)
                .map_err(|e| err(OP, node, e))?;
            if (self.interrupted)(pid) {
                // The reader is dying: it must not take the message with it.
                if let Some(d) = &got {
                    queue
                        .give_back(&d.work_name)
                        .map_err(|e| err(OP, node, e))?;
                }
                return Err(err(OP, node, FsErrorKind::Interrupted));
            }
            got
        } else {
            queue.consume_one().map_err(|e| err(OP, node, e))?
        };
        let d = delivery.ok_or_else(|| err(OP, node, FsErrorKind::Empty))?;
        Ok((queue, d))
    }

    /// Runs `f` on the open file `fh`, with the context its handle acts in.
    fn with_handle<T>(
        &self,
        op: &'static str,
        fh: u64,
        f: impl FnOnce(&mut dyn OpenHandle, &Ctx) -> Result<T>,
    ) -> Result<T> {
        let file = self.file_by_handle(op, fh)?;
        let mut file = file.lock().unwrap();
        let OpenFile { path, handle } = &mut *file;
        match handle {
            Some(h) => f(h.as_mut(), &self.ctx(path)),
            None => Err(FsError::new(op, path.clone(), FsErrorKind::BadHandle)),
        }
    }

    pub(super) fn ctx<'a>(&'a self, path: &'a str) -> Ctx<'a> {
        Ctx {
            broker: &self.broker,
            path,
            killed: &*self.killed,
        }
    }

    /// READ at `offset` (offsets are honoured: under direct I/O a reader stops at an empty read).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.with_handle("read", fh, |h, ctx| h.read(ctx, offset, size))
    }

    /// WRITE at `offset`; returns the bytes taken.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.with_handle("write", fh, |h, ctx| h.write(ctx, offset, data))
    }

    /// Whether closes of this handle matter: writers report errors at close, and readers of
    /// next/wait/claim are watched for being killed. Others (status, peeks) can skip FLUSH.
    pub fn needs_flush(&self, fh: u64) -> bool {
        match self.files.lock().unwrap().get(&fh) {
            Some(file) => file
                .lock()
                .unwrap()
                .handle
                .as_ref()
                .is_none_or(|h| h.needs_flush()),
            None => true,
        }
    }

    /// FLUSH: a close of the file by the process `pid`; the only request that reports an error
    /// to `close()`. A writer or reader killed by a signal is noticed here (see [`caller`]).
    pub fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        self.with_handle("flush", fh, |h, ctx| h.flush(ctx, pid))
    }

    /// RELEASE (the last close of the open file).
    pub fn release(&self, fh: u64) -> Result<()> {
        let file = self.files.lock().unwrap().remove(&fh);
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
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        let OpenFile { path, handle } = &mut *file;
        match handle.take() {
            Some(h) => h.release(&self.ctx(path), shutting_down),
            None => Ok(()),
        }
    }
}
