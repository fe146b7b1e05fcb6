//! The mounted tree's semantics, without FUSE: what each lookup, open, read, write and close
//! of the synthetic tree means for the queues of a ddmq root.
//!
//! ```text
//! MNT/<queue>/            one directory per queue; mkdir creates a queue, rmdir deletes an empty one
//! MNT/<queue>/in          write-only: each open, write..., close publishes one message (the bytes written)
//! MNT/<queue>/next        read-only: open claims the next message, reading gives its body; a close
//!                         after the whole body was read acks it, an earlier close gives it back,
//!                         and so does the close of a reader killed by a signal (see [`caller`])
//! MNT/<queue>/wait        like next, but an open on an empty queue waits for a message
//! MNT/<queue>/claim       open claims the next message; reading gives its record as JSON; it stays
//!                         in flight until acked (ack, rm work/<id>) or its timeout expires
//! MNT/<queue>/ack, nack   write-only: message ids, one a line
//! MNT/<queue>/status      waiting, in flight, age of the oldest waiting message
//! MNT/<queue>/ddmq.yaml   the queue's settings; a write that fails validation changes nothing
//! MNT/<queue>/work/<id>   in-flight messages: cat shows the body, rm acks, touch extends the lease
//! MNT/<queue>/messages/<id>  waiting messages in delivery order: cat shows the body, takes nothing
//! ```
//!
//! Nothing about the queues is cached here: every call goes through the engine, so other
//! clients of the same root (the CLI, the Python original, other mounts) are seen as they act,
//! and entries that vanish behind our back answer ENOENT. The only state is the kernel's: the
//! inodes it holds ([`inodes`]) and its open files (one handle each, with the message a reader
//! claimed or the bytes a writer sent).

mod caller;
mod error;
mod inodes;
#[cfg(test)]
mod tests;

pub use caller::{SignalState, is_interrupted, is_killed};
pub use error::{FsError, FsErrorKind};
pub use inodes::{DirKind, FileKind, InodeTable, Node, ROOT_INO};

use crate::engine::{
    self, AckOutcome, Broker, Delivery, PublishOptions, Queue, RequeueOutcome, WorkName,
    names::is_valid_id,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub type Result<T> = std::result::Result<T, FsError>;

/// Largest `ddmq.yaml` accepted through the mount.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// How the tree presents itself and how long `wait` waits.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Refuse everything that changes a queue (EROFS), consuming included.
    pub read_only: bool,
    /// Owner and group of every file and directory.
    pub uid: u32,
    pub gid: u32,
    /// Permission bits removed from every mode.
    pub umask: u32,
    /// How long an open of `wait` waits for a message before it fails with ENODATA.
    pub wait_limit: Duration,
    /// How often a waiting open looks at the queue directory and at its caller.
    pub wait_poll: Duration,
}

impl Default for FsOptions {
    fn default() -> Self {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        FsOptions {
            read_only: false,
            uid,
            gid,
            umask: 0o022,
            wait_limit: Duration::from_secs(30),
            wait_poll: Duration::from_millis(100),
        }
    }
}

/// The access mode of an open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    /// From open(2) flags.
    pub fn from_flags(flags: i32) -> Access {
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => Access::Write,
            libc::O_RDWR => Access::ReadWrite,
            _ => Access::Read,
        }
    }

    fn writes(self) -> bool {
        self != Access::Read
    }
}

/// Attributes of a node. Files always have size 0: their content is made when they are opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub is_dir: bool,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub time: SystemTime,
    /// The entry may vanish at any moment (a message): the kernel should not cache it.
    pub volatile: bool,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub is_dir: bool,
    pub name: String,
}

/// The changes a SETATTR asks for.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    /// atime or mtime set (touch).
    pub times: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Why a writer's body will not be published.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    TooLarge(u64),
    NotUtf8,
    /// The writer was killed by a signal before it closed: what it wrote may be cut short.
    WriterKilled,
}

/// An open `in`: the bytes written so far.
struct Publishing {
    queue: String,
    body: Vec<u8>,
    limit: u64,
    wrote: bool,
    /// The prefix of `body` known to be valid UTF-8.
    checked: usize,
    refused: Option<Refusal>,
}

/// An open `next`, `wait` or `claim`: the claimed message and how much of it the reader got.
struct Delivering {
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

impl Delivering {
    fn handed_over(&self) -> bool {
        self.read_any && self.handed >= self.bytes.len() && !self.reader_killed
    }
}

enum Handle {
    Publishing(Publishing),
    Delivering(Delivering),
    /// Content fixed at open: status, a message body, ddmq.yaml opened for reading.
    Snapshot(Vec<u8>),
    /// ddmq.yaml opened for writing: the new text, applied on flush or close.
    Config {
        queue: String,
        snapshot: Vec<u8>,
        text: Vec<u8>,
        dirty: bool,
        refused: bool,
    },
    /// ack or nack: ids, one a line; an incomplete last line waits here.
    Ids {
        queue: String,
        nack: bool,
        partial: Vec<u8>,
    },
}

struct OpenFile {
    path: String,
    handle: Handle,
}

/// The filesystem over one ddmq root.
pub struct QueueFs {
    broker: Broker,
    opts: FsOptions,
    inodes: Mutex<InodeTable>,
    files: Mutex<HashMap<u64, Arc<Mutex<OpenFile>>>>,
    dirs: Mutex<HashMap<u64, Vec<DirEntry>>>,
    next_handle: AtomicU64,
    shutting_down: AtomicBool,
    started: SystemTime,
    /// Whether the task with this pid is being interrupted (see [`caller`]); replaceable in tests.
    interrupted: Box<dyn Fn(u32) -> bool + Send + Sync>,
    /// Whether the task with this pid is being killed as it closes a file; replaceable in tests.
    killed: Box<dyn Fn(u32) -> bool + Send + Sync>,
}

fn err(op: &'static str, node: &Node, kind: impl Into<FsErrorKind>) -> FsError {
    FsError::new(op, node.path(), kind)
}

/// The path of `name` inside `parent`, for messages about names that do not exist.
fn child_path(parent: &Node, name: &str) -> String {
    match parent {
        Node::Root => name.to_string(),
        other => format!("{}/{name}", other.path()),
    }
}

/// The next complete line of `buf`, removed from it.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=end).collect();
    line.pop();
    Some(line)
}

/// Writes `data` at `offset` of `buf`, growing it as needed.
fn place(buf: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[offset..end].copy_from_slice(data);
}

fn slice_at(bytes: &[u8], offset: u64, size: u32) -> Vec<u8> {
    let start = (offset.min(bytes.len() as u64)) as usize;
    let end = start.saturating_add(size as usize).min(bytes.len());
    bytes[start..end].to_vec()
}

impl QueueFs {
    pub fn new(broker: Broker, opts: FsOptions) -> QueueFs {
        QueueFs {
            broker,
            opts,
            inodes: Mutex::new(InodeTable::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            started: SystemTime::now(),
            interrupted: Box::new(is_interrupted),
            killed: Box::new(is_killed),
        }
    }

    /// Replaces the check for a caller killed as it closes (tests simulate killed writers with it).
    pub fn with_killed_check(
        mut self,
        check: impl Fn(u32) -> bool + Send + Sync + 'static,
    ) -> QueueFs {
        self.killed = Box::new(check);
        self
    }

    /// Replaces the check for an interrupted caller (tests simulate dying readers with it).
    pub fn with_interrupt_check(
        mut self,
        check: impl Fn(u32) -> bool + Send + Sync + 'static,
    ) -> QueueFs {
        self.interrupted = Box::new(check);
        self
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// Number of inodes the kernel holds (the root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.lock().unwrap().len()
    }

    /// Number of open files.
    pub fn open_file_count(&self) -> usize {
        self.files.lock().unwrap().len()
    }

    // ------------------------------------------------------------------ nodes

    fn node(&self, op: &'static str, ino: u64) -> Result<Node> {
        self.inodes
            .lock()
            .unwrap()
            .node(ino)
            .ok_or_else(|| FsError::new(op, format!("inode {ino}"), FsErrorKind::NotFound))
    }

    fn queue(&self, op: &'static str, node: &Node) -> Result<Arc<Queue>> {
        let q = node
            .queue()
            .ok_or_else(|| err(op, node, FsErrorKind::NotFound))?;
        self.broker.queue(q).map_err(|e| err(op, node, e))
    }

    /// The child `name` of `parent`, by the tree's shape alone (whether it exists is asked later).
    fn child(parent: &Node, name: &str) -> Option<Node> {
        match parent {
            Node::Root => engine::is_valid_queue_name(name).then(|| Node::Queue(name.to_string())),
            Node::Queue(q) => FileKind::from_name(name)
                .map(|k| Node::File(q.clone(), k))
                .or_else(|| DirKind::from_name(name).map(|d| Node::Dir(q.clone(), d))),
            Node::Dir(q, d) => {
                is_valid_id(name).then(|| Node::Entry(q.clone(), *d, name.to_string()))
            }
            Node::File(..) | Node::Entry(..) => None,
        }
    }

    /// Whether `node` exists now, asking the engine.
    fn exists(&self, op: &'static str, node: &Node) -> Result<bool> {
        let q = match node.queue() {
            None => return Ok(true),
            Some(q) => q,
        };
        if !self.broker.queue_exists(q).map_err(|e| err(op, node, e))? {
            self.broker.forget_queue(q);
            return Ok(false);
        }
        match node {
            Node::Entry(_, DirKind::Work, id) => Ok(self
                .queue(op, node)?
                .resolve_in_flight(id)
                .map_err(|e| err(op, node, e))?
                .is_some()),
            Node::Entry(_, DirKind::Messages, id) => {
                let waiting = self
                    .queue(op, node)?
                    .waiting()
                    .map_err(|e| err(op, node, e))?;
                Ok(waiting.iter().any(|w| w.id == *id))
            }
            _ => Ok(true),
        }
    }

    fn perm(&self, node: &Node) -> u16 {
        let base: u32 = match node {
            Node::Root | Node::Queue(_) | Node::Dir(..) => 0o777,
            Node::File(_, FileKind::In | FileKind::Ack | FileKind::Nack) => 0o222,
            Node::File(_, FileKind::Config) => 0o666,
            Node::File(..) => 0o444,
            Node::Entry(_, DirKind::Work, _) => 0o666, // touch needs write permission
            Node::Entry(_, DirKind::Messages, _) => 0o444,
        };
        let mut mode = base & !self.opts.umask;
        if self.opts.read_only {
            mode &= !0o222;
        }
        mode as u16
    }

    fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        Attr {
            ino,
            is_dir: node.is_dir(),
            perm: self.perm(node),
            uid: self.opts.uid,
            gid: self.opts.gid,
            time: self.started,
            volatile: matches!(node, Node::Entry(..)),
        }
    }

    fn writable(&self, op: &'static str, node: &Node) -> Result<()> {
        if self.opts.read_only {
            Err(err(op, node, FsErrorKind::ReadOnly))
        } else {
            Ok(())
        }
    }

    // ------------------------------------------------------------------ lookup and attributes

    /// LOOKUP: finds `name` in `parent` and takes one kernel reference on it.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        let parent = self.node("lookup", parent)?;
        let missing = || FsError::new("lookup", child_path(&parent, name), FsErrorKind::NotFound);
        if !parent.is_dir() {
            return Err(err("lookup", &parent, FsErrorKind::NotDir));
        }
        let node = Self::child(&parent, name).ok_or_else(missing)?;
        if !self.exists("lookup", &node)? {
            return Err(missing());
        }
        let ino = self.inodes.lock().unwrap().remember(node.clone());
        Ok(self.attr_of(ino, &node))
    }

    /// FORGET: the kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.lock().unwrap().forget(ino, n);
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node("getattr", ino)?;
        Ok(self.attr_of(ino, &node))
    }

    /// SETATTR: truncation to 0 of a writable file (what `>` does), and touch of `work/<id>`
    /// (extends its lease). Owners and modes come from the mount options and cannot change.
    pub fn setattr(&self, ino: u64, fh: Option<u64>, change: &SetAttr) -> Result<Attr> {
        const OP: &str = "setattr";
        let node = self.node(OP, ino)?;
        if change.mode.is_some() || change.uid.is_some() || change.gid.is_some() {
            return Err(err(
                OP,
                &node,
                FsErrorKind::NotSupported("owners and modes are set by mount options"),
            ));
        }
        if let Some(size) = change.size {
            match &node {
                Node::File(_, FileKind::In | FileKind::Ack | FileKind::Nack | FileKind::Config) => {
                }
                _ => {
                    return Err(err(
                        OP,
                        &node,
                        FsErrorKind::Access("this file is not writable"),
                    ));
                }
            }
            self.writable(OP, &node)?;
            if size != 0 {
                return Err(err(
                    OP,
                    &node,
                    FsErrorKind::Invalid("only truncation to size 0 is supported".into()),
                ));
            }
            if let Some(fh) = fh {
                let file = self.file(OP, &node, fh)?;
                let mut file = file.lock().unwrap();
                match &mut file.handle {
                    Handle::Publishing(p) => {
                        p.body.clear();
                        p.checked = 0;
                        p.refused = None;
                    }
                    Handle::Config { text, refused, .. } => {
                        text.clear();
                        *refused = false;
                    }
                    Handle::Ids { partial, .. } => partial.clear(),
                    _ => {}
                }
            }
        }
        if change.times
            && let Node::Entry(_, DirKind::Work, id) = &node
        {
            self.writable(OP, &node)?;
            let queue = self.queue(OP, &node)?;
            if queue.touch(id).map_err(|e| err(OP, &node, e))?.is_none() {
                return Err(err(OP, &node, FsErrorKind::NotFound));
            }
        }
        Ok(self.attr_of(ino, &node))
    }

    // ------------------------------------------------------------------ directories

    fn list(&self, node: &Node) -> Result<Vec<(Node, String)>> {
        const OP: &str = "readdir";
        let ids = |names: Vec<String>, d: DirKind, q: &str| {
            names
                .into_iter()
                .map(|id| (Node::Entry(q.to_string(), d, id.clone()), id))
                .collect()
        };
        match node {
            Node::Root => {
                let queues = self.broker.list_queues().map_err(|e| err(OP, node, e))?;
                Ok(queues
                    .into_iter()
                    .map(|q| (Node::Queue(q.clone()), q))
                    .collect())
            }
            Node::Queue(q) => {
                if !self.exists(OP, node)? {
                    return Err(err(OP, node, FsErrorKind::NotFound));
                }
                let files = FileKind::ALL
                    .into_iter()
                    .map(|k| (Node::File(q.clone(), k), k.name().to_string()));
                let dirs = DirKind::ALL
                    .into_iter()
                    .map(|d| (Node::Dir(q.clone(), d), d.name().to_string()));
                Ok(files.chain(dirs).collect())
            }
            Node::Dir(q, DirKind::Work) => {
                let queue = self.queue(OP, node)?;
                let names = queue.in_flight().map_err(|e| err(OP, node, e))?;
                Ok(ids(
                    names
                        .into_iter()
                        .map(|w| w.waiting.id.to_string())
                        .collect(),
                    DirKind::Work,
                    q,
                ))
            }
            Node::Dir(q, DirKind::Messages) => {
                let queue = self.queue(OP, node)?;
                let names = queue.waiting().map_err(|e| err(OP, node, e))?;
                Ok(ids(
                    names.into_iter().map(|w| w.id.to_string()).collect(),
                    DirKind::Messages,
                    q,
                ))
            }
            Node::File(..) | Node::Entry(..) => Err(err(OP, node, FsErrorKind::NotDir)),
        }
    }

    /// OPENDIR: lists the directory now; READDIR pages through this snapshot.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.node("opendir", ino)?;
        let children = self.list(&node)?;
        let parent_ino = match &node {
            Node::Root | Node::Queue(_) => ROOT_INO,
            Node::Dir(q, _) => self.inodes.lock().unwrap().peek(&Node::Queue(q.clone())),
            _ => ROOT_INO,
        };
        let mut entries = vec![
            DirEntry {
                ino,
                is_dir: true,
                name: ".".into(),
            },
            DirEntry {
                ino: parent_ino,
                is_dir: true,
                name: "..".into(),
            },
        ];
        {
            let inodes = self.inodes.lock().unwrap();
            entries.extend(children.into_iter().map(|(child, name)| DirEntry {
                ino: inodes.peek(&child),
                is_dir: child.is_dir(),
                name,
            }));
        }
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().unwrap().insert(fh, entries);
        Ok(fh)
    }

    /// READDIR: entries from `offset` on, each with the offset of the one after it.
    pub fn readdir(&self, fh: u64, offset: u64) -> Result<Vec<(u64, DirEntry)>> {
        let dirs = self.dirs.lock().unwrap();
        let entries = dirs.get(&fh).ok_or_else(|| {
            FsError::new("readdir", format!("handle {fh}"), FsErrorKind::BadHandle)
        })?;
        Ok(entries
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect())
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// MKDIR in the root creates a queue.
    pub fn mkdir(&self, parent: u64, name: &str) -> Result<Attr> {
        const OP: &str = "mkdir";
        let parent = self.node(OP, parent)?;
        let node = Node::Queue(name.to_string());
        if parent != Node::Root {
            return Err(FsError::new(
                OP,
                child_path(&parent, name),
                FsErrorKind::NotSupported("queues are made in the root only"),
            ));
        }
        self.writable(OP, &node)?;
        if !self
            .broker
            .create_queue(name)
            .map_err(|e| err(OP, &node, e))?
        {
            return Err(err(OP, &node, FsErrorKind::Exists));
        }
        let ino = self.inodes.lock().unwrap().remember(node.clone());
        Ok(self.attr_of(ino, &node))
    }

    /// RMDIR in the root deletes a queue that holds no messages.
    pub fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        const OP: &str = "rmdir";
        let parent = self.node(OP, parent)?;
        let node = Self::child(&parent, name)
            .ok_or_else(|| FsError::new(OP, child_path(&parent, name), FsErrorKind::NotFound))?;
        match &node {
            Node::Queue(q) => {
                self.writable(OP, &node)?;
                if !self.exists(OP, &node)? {
                    return Err(err(OP, &node, FsErrorKind::NotFound));
                }
                self.broker
                    .delete_queue(q, true)
                    .map_err(|e| err(OP, &node, e))
            }
            Node::Dir(..) => Err(err(
                OP,
                &node,
                FsErrorKind::NotSupported("part of every queue"),
            )),
            _ => Err(err(OP, &node, FsErrorKind::NotDir)),
        }
    }

    /// UNLINK of `work/<id>` acks the message.
    pub fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        const OP: &str = "unlink";
        let parent = self.node(OP, parent)?;
        let node = Self::child(&parent, name)
            .ok_or_else(|| FsError::new(OP, child_path(&parent, name), FsErrorKind::NotFound))?;
        match &node {
            Node::Entry(_, DirKind::Work, id) => {
                self.writable(OP, &node)?;
                match self
                    .queue(OP, &node)?
                    .ack(id)
                    .map_err(|e| err(OP, &node, e))?
                {
                    AckOutcome::Acked(_) => Ok(()),
                    AckOutcome::NotFound => Err(err(OP, &node, FsErrorKind::NotFound)),
                }
            }
            Node::Queue(_) | Node::Dir(..) => Err(err(OP, &node, FsErrorKind::IsDir)),
            _ => Err(err(
                OP,
                &node,
                FsErrorKind::NotSupported("only work/<id> can be removed (it acks)"),
            )),
        }
    }

    /// For operations the tree does not have (create, rename, link, symlink, mknod).
    pub fn refuse(&self, op: &'static str, parent: u64, name: &str) -> FsError {
        let path = match self.node(op, parent) {
            Ok(p) => child_path(&p, name),
            Err(_) => name.to_string(),
        };
        FsError::new(
            op,
            path,
            FsErrorKind::NotSupported("the tree has a fixed shape"),
        )
    }

    // ------------------------------------------------------------------ files

    /// True if opening `ino` may block for long (`wait`): the adapter runs it on its own thread.
    pub fn open_may_block(&self, ino: u64) -> bool {
        matches!(
            self.inodes.lock().unwrap().node(ino),
            Some(Node::File(_, FileKind::Wait))
        )
    }

    fn file(&self, op: &'static str, node: &Node, fh: u64) -> Result<Arc<Mutex<OpenFile>>> {
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
        let handle = match &node {
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
                let queue = self.queue(OP, &node)?;
                if *kind == FileKind::In {
                    let limit = queue
                        .settings()
                        .map_err(|e| err(OP, &node, e))?
                        .max_message_bytes;
                    Handle::Publishing(Publishing {
                        queue: q.clone(),
                        body: Vec::new(),
                        limit,
                        wrote: false,
                        checked: 0,
                        refused: None,
                    })
                } else {
                    Handle::Ids {
                        queue: q.clone(),
                        nack: *kind == FileKind::Nack,
                        partial: Vec::new(),
                    }
                }
            }
            Node::File(_, kind @ (FileKind::Next | FileKind::Wait | FileKind::Claim)) => {
                read_only_file("read-only: opening it takes a message")?;
                self.writable(OP, &node)?;
                Handle::Delivering(self.deliver(&node, *kind, pid)?)
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
                Handle::Snapshot(text.into_bytes())
            }
            Node::File(q, FileKind::Config) => {
                let text = self
                    .queue(OP, &node)?
                    .read_config_text()
                    .map_err(|e| err(OP, &node, e))?
                    .into_bytes();
                if access.writes() {
                    self.writable(OP, &node)?;
                    Handle::Config {
                        queue: q.clone(),
                        snapshot: text,
                        text: Vec::new(),
                        dirty: false,
                        refused: false,
                    }
                } else {
                    Handle::Snapshot(text)
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
                Handle::Snapshot(
                    msg.ok_or_else(|| err(OP, &node, FsErrorKind::NotFound))?
                        .body_text()
                        .into_bytes(),
                )
            }
            Node::Entry(_, DirKind::Messages, id) => {
                read_only_file("read-only: reading it takes nothing")?;
                let queue = self.queue(OP, &node)?;
                let waiting = queue.waiting().map_err(|e| err(OP, &node, e))?;
                let msg = match waiting.iter().find(|w| w.id == *id) {
                    Some(w) => queue.read_waiting(w).map_err(|e| err(OP, &node, e))?,
                    None => None,
                };
                Handle::Snapshot(
                    msg.ok_or_else(|| err(OP, &node, FsErrorKind::NotFound))?
                        .body_text()
                        .into_bytes(),
                )
            }
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap().insert(
            fh,
            Arc::new(Mutex::new(OpenFile {
                path: node.path(),
                handle,
            })),
        );
        Ok(fh)
    }

    /// Claims a message for an open of next, wait or claim.
    fn deliver(&self, node: &Node, kind: FileKind, pid: u32) -> Result<Delivering> {
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
        let bytes = if kind == FileKind::Claim {
            format!("{}\n", d.message.to_json()).into_bytes()
        } else {
            d.message.body_text().into_bytes()
        };
        Ok(Delivering {
            queue: queue.name().to_string(),
            work: d.work_name,
            bytes,
            handed: 0,
            read_any: false,
            ack_when_done: kind != FileKind::Claim,
            reader_killed: false,
        })
    }

    /// READ at `offset` (offsets are honoured: under direct I/O a reader stops at an empty read).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let file = self.file_by_handle("read", fh)?;
        let mut file = file.lock().unwrap();
        let path = file.path.clone();
        match &mut file.handle {
            Handle::Delivering(d) => {
                let data = slice_at(&d.bytes, offset, size);
                d.read_any = true;
                d.handed = d.handed.max(offset as usize + data.len());
                Ok(data)
            }
            Handle::Snapshot(bytes)
            | Handle::Config {
                snapshot: bytes, ..
            } => Ok(slice_at(bytes, offset, size)),
            Handle::Publishing(_) | Handle::Ids { .. } => Err(FsError::new(
                "read",
                path,
                FsErrorKind::Access("write-only"),
            )),
        }
    }

    /// WRITE at `offset`; returns the bytes taken.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        const OP: &str = "write";
        let file = self.file_by_handle(OP, fh)?;
        let mut file = file.lock().unwrap();
        let path = file.path.clone();
        let fail = |kind: FsErrorKind| FsError::new(OP, path.clone(), kind);
        let offset = offset as usize;
        match &mut file.handle {
            Handle::Publishing(p) => {
                if let Some(r) = p.refused {
                    return Err(fail(refusal_kind(r)));
                }
                if (offset + data.len()) as u64 > p.limit {
                    p.refused = Some(Refusal::TooLarge(p.limit));
                    return Err(fail(FsErrorKind::TooLarge { limit: p.limit }));
                }
                if offset < p.checked {
                    p.checked = 0; // rewriting what was checked: check it all again
                }
                place(&mut p.body, offset, data);
                p.wrote = true;
                // Check UTF-8 as it arrives; a character cut by a chunk boundary is completed later.
                match std::str::from_utf8(&p.body[p.checked..]) {
                    Ok(_) => p.checked = p.body.len(),
                    Err(e) if e.error_len().is_none() => p.checked += e.valid_up_to(),
                    Err(_) => {
                        p.refused = Some(Refusal::NotUtf8);
                        return Err(fail(FsErrorKind::NotUtf8));
                    }
                }
                Ok(data.len() as u32)
            }
            Handle::Config {
                queue,
                text,
                dirty,
                refused,
                ..
            } => {
                if *refused {
                    return Err(fail(FsErrorKind::Invalid(
                        "the settings written are refused".into(),
                    )));
                }
                if offset + data.len() > MAX_CONFIG_BYTES {
                    *refused = true;
                    return Err(fail(FsErrorKind::TooLarge {
                        limit: MAX_CONFIG_BYTES as u64,
                    }));
                }
                place(text, offset, data);
                *dirty = true;
                // Shells ignore errors from close(): refuse bad settings here, where `echo` sees
                // it. Text is judged at line ends only, where a prefix of good YAML is good YAML.
                if text.ends_with(b"\n")
                    && let Err(e) = self.broker.validate_queue_settings(queue, text)
                {
                    *refused = true;
                    return Err(fail(e.into()));
                }
                Ok(data.len() as u32)
            }
            Handle::Ids {
                queue,
                nack,
                partial,
            } => {
                partial.extend_from_slice(data);
                let (queue, nack) = (queue.clone(), *nack);
                let mut first_error = None;
                while let Some(line) = take_line(partial) {
                    if let Err(e) = self.settle(&queue, nack, &line, &path) {
                        first_error.get_or_insert(e);
                    }
                }
                match first_error {
                    Some(e) => Err(e),
                    None => Ok(data.len() as u32),
                }
            }
            Handle::Delivering(_) | Handle::Snapshot(_) => {
                Err(fail(FsErrorKind::Access("read-only")))
            }
        }
    }

    /// Acks or nacks the message one line of `ack` or `nack` names.
    fn settle(&self, queue: &str, nack: bool, line: &[u8], path: &str) -> Result<()> {
        let op = if nack { "nack" } else { "ack" };
        let fail = |kind: FsErrorKind| FsError::new(op, path.to_string(), kind);
        let id = std::str::from_utf8(line)
            .map_err(|_| fail(FsErrorKind::Invalid("a message id is ASCII".into())))?
            .trim();
        if id.is_empty() {
            return Ok(());
        }
        let q = self.broker.queue(queue).map_err(|e| fail(e.into()))?;
        let found = if nack {
            q.nack(id, false).map_err(|e| fail(e.into()))? != RequeueOutcome::NotFound
        } else {
            q.ack(id).map_err(|e| fail(e.into()))? != AckOutcome::NotFound
        };
        if found {
            Ok(())
        } else {
            Err(fail(FsErrorKind::NotFound))
        }
    }

    /// FLUSH (each close of a descriptor; its error is what close() returns). Applies a new
    /// ddmq.yaml and the last line written to ack or nack; checks that a body is complete UTF-8.
    /// Publishing waits for RELEASE: a shell sends a FLUSH before it writes anything.
    /// Whether closes of this handle matter: writers report errors at close, and readers of
    /// next/wait/claim are watched for being killed. Others (status, peeks) can skip FLUSH.
    pub fn needs_flush(&self, fh: u64) -> bool {
        match self.files.lock().unwrap().get(&fh) {
            Some(file) => !matches!(file.lock().unwrap().handle, Handle::Snapshot(_)),
            None => true,
        }
    }

    /// FLUSH: a close of the file by the process `pid`; the only request that reports an error
    /// to `close()`. A writer or reader killed by a signal is noticed here (see [`caller`]): its
    /// message is not published, or goes back to the queue.
    pub fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        const OP: &str = "flush";
        let file = self.file_by_handle(OP, fh)?;
        let mut file = file.lock().unwrap();
        let path = file.path.clone();
        if matches!(file.handle, Handle::Publishing(_) | Handle::Delivering(_))
            && (self.killed)(pid)
        {
            match &mut file.handle {
                Handle::Publishing(p) if p.wrote => {
                    log::warn!(
                        "{path}: the writer (pid {pid}) was killed before it closed: nothing is published"
                    );
                    p.refused = Some(Refusal::WriterKilled);
                }
                Handle::Delivering(d) => {
                    log::info!(
                        "{path}: the reader (pid {pid}) was killed: the message goes back to the queue"
                    );
                    d.reader_killed = true;
                }
                _ => {}
            }
            return Ok(());
        }
        match &mut file.handle {
            Handle::Publishing(p) => {
                if let Some(r) = p.refused {
                    return Err(FsError::new(OP, path, refusal_kind(r)));
                }
                if p.wrote && std::str::from_utf8(&p.body[p.checked..]).is_err() {
                    p.refused = Some(Refusal::NotUtf8);
                    return Err(FsError::new(OP, path, FsErrorKind::NotUtf8));
                }
                Ok(())
            }
            Handle::Config {
                queue,
                text,
                dirty,
                refused,
                ..
            } => {
                if *refused {
                    return Err(FsError::new(
                        OP,
                        path,
                        FsErrorKind::Invalid("the settings written were refused".into()),
                    ));
                }
                if !*dirty {
                    return Ok(());
                }
                *dirty = false;
                let q = self
                    .broker
                    .queue(queue)
                    .map_err(|e| FsError::new(OP, path.clone(), e))?;
                q.write_config_text(text)
                    .map_err(|e| FsError::new(OP, path, e))
            }
            Handle::Ids {
                queue,
                nack,
                partial,
            } => {
                let line = std::mem::take(partial);
                let (queue, nack) = (queue.clone(), *nack);
                self.settle(&queue, nack, &line, &path)
            }
            Handle::Delivering(_) | Handle::Snapshot(_) => Ok(()),
        }
    }

    /// RELEASE (the last close): publishes what was written to `in`; acks a message whose
    /// body was handed over whole, gives back one that was not.
    pub fn release(&self, fh: u64) -> Result<()> {
        let file = self.files.lock().unwrap().remove(&fh);
        let Some(file) = file else {
            return Err(FsError::new(
                "release",
                format!("handle {fh}"),
                FsErrorKind::BadHandle,
            ));
        };
        let file = take_open_file(file);
        self.finish(file, false)
    }

    fn finish(&self, file: OpenFile, shutting_down: bool) -> Result<()> {
        const OP: &str = "release";
        let path = file.path;
        let fail = |e: engine::Error| FsError::new(OP, path.clone(), e);
        match file.handle {
            Handle::Publishing(p) => {
                if !p.wrote || p.refused.is_some() || shutting_down {
                    return Ok(());
                }
                let body = String::from_utf8(p.body)
                    .map_err(|_| FsError::new(OP, path.clone(), FsErrorKind::NotUtf8))?;
                let q = self.broker.queue(&p.queue).map_err(fail)?;
                q.publish(serde_json::Value::String(body), &PublishOptions::default())
                    .map_err(fail)?;
                Ok(())
            }
            Handle::Delivering(d) => {
                let q = self.broker.queue(&d.queue).map_err(fail)?;
                let done = d.handed_over();
                if done && d.ack_when_done {
                    q.ack(&d.work.to_string()).map_err(fail)?;
                } else if !done {
                    // The lease may have been extended meanwhile: find its current name.
                    if let Some(w) = q.resolve_in_flight(&d.work.to_string()).map_err(fail)? {
                        q.give_back(&w).map_err(fail)?;
                    }
                }
                Ok(())
            }
            Handle::Config {
                queue,
                text,
                dirty,
                refused,
                ..
            } => {
                if dirty && !refused && !shutting_down {
                    let q = self.broker.queue(&queue).map_err(fail)?;
                    q.write_config_text(&text).map_err(fail)?;
                }
                Ok(())
            }
            Handle::Ids {
                queue,
                nack,
                partial,
            } => {
                if shutting_down {
                    Ok(())
                } else {
                    self.settle(&queue, nack, &partial, &path)
                }
            }
            Handle::Snapshot(_) => Ok(()),
        }
    }

    // ------------------------------------------------------------------ life cycle

    /// Makes waiting opens give up (ENODATA) and refuses nothing else; call before unmounting.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Closes every open file as the daemon stops: claimed messages not yet handed over go
    /// back to their queue at once; half-written bodies are not published.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        let files: Vec<_> = self.files.lock().unwrap().drain().collect();
        for (_, file) in files {
            let open = take_open_file(file);
            let path = open.path.clone();
            if let Err(e) = self.finish(open, true) {
                log::warn!("closing {path} at shutdown: {e}");
            }
        }
    }

    /// Housekeeping for every queue (requeues expired messages), at most once a minute per queue
    /// as the engine throttles it. Returns how many queues were cleaned.
    pub fn housekeeping(&self) -> usize {
        let queues = match self.broker.list_queues() {
            Ok(q) => q,
            Err(e) => {
                log::warn!("housekeeping: {e}");
                return 0;
            }
        };
        let mut cleaned = 0;
        for name in queues {
            match self.broker.queue(&name).and_then(|q| q.maybe_clean()) {
                Ok(Some(_)) => cleaned += 1,
                Ok(None) => {}
                Err(e) => log::warn!("housekeeping of queue {name}: {e}"),
            }
        }
        cleaned
    }
}

/// Takes an open file out of its shared cell, after any READ or WRITE still running on it.
fn take_open_file(file: Arc<Mutex<OpenFile>>) -> OpenFile {
    let mut guard = file.lock().unwrap_or_else(|p| p.into_inner());
    let handle = std::mem::replace(&mut guard.handle, Handle::Snapshot(Vec::new()));
    OpenFile {
        path: guard.path.clone(),
        handle,
    }
}

fn refusal_kind(r: Refusal) -> FsErrorKind {
    match r {
        Refusal::TooLarge(limit) => FsErrorKind::TooLarge { limit },
        Refusal::NotUtf8 => FsErrorKind::NotUtf8,
        Refusal::WriterKilled => FsErrorKind::Interrupted,
    }
}
