//! The mounted tree's semantics, without FUSE: what each lookup, open, read, write and close
//! of the synthetic tree means for the queues of a ddmq root.
//!
//! ```text
//! MNT/<queue>/            one directory per queue; mkdir creates a queue, rmdir deletes an empty one
//! MNT/<queue>/in          write-only: each open, write..., close publishes one message (the bytes
//!                         written); see "Closing is committing" below
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
//! Closing is committing: publishes, acks and settings are done at FLUSH, so that close()
//! returns their outcome; who publishes and acks when an open file is shared by several
//! processes is the rule in [`handles`]. While `next`, `wait`, `claim` or a `work/<id>` is
//! open its message's lease is renewed, and a close after the lease was lost fails ([`lease`]).
//!
//! Who may do what is decided here, for each request against its own caller ([`access`]),
//! from the owners and modes of what each node stands for in ROOT. Entries of `messages/` and
//! `work/` have their body's length as size ([`entries`]).
//!
//! The queues' state is the engine's: every change goes through it, so other clients of the
//! same root (the CLI, the Python original, other mounts) are seen as they act, and entries
//! that vanish behind our back answer ENOENT. What is kept here, and for how long:
//! - the kernel's state: the inodes it holds ([`inodes`]), its open files ([`files`] opens
//!   them; each is a handle of [`handles`], with the message a reader claimed or the bytes a
//!   writer sent) and open directories (the listing made at OPENDIR, paged by READDIR);
//! - a stat cache of ROOT's directories for owners and modes, trusted for a second ([`access`]);
//! - an id index of `messages/` and `work/` from their latest listing, each name checked on disk
//!   before it is used ([`entries`]);
//! - each queue's last write or close failure, shown by its `status` (`last_error:`), and who
//!   removed which `in` lately ([`files`]).
//!
//! The engine's queue handles add their own sorted listing and settings cached for a second.

mod access;
mod body;
mod caller;
mod entries;
mod error;
mod files;
mod handles;
mod inodes;
mod lease;
#[cfg(test)]
mod tests;

pub use access::Intent;
pub use caller::{Caller, KillCheck, SignalState, is_interrupted, is_killed, supplementary_groups};
pub use error::{FsError, FsErrorKind};
pub use files::{OpenInfo, OpenMode};
pub use inodes::{DirKind, FileKind, InodeTable, Node, ROOT_INO};

use crate::engine::{self, AckOutcome, Broker, Queue, names::is_valid_id};
use crate::locking::LockRecovering;
use handles::OpenHandle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long the kernel may cache the fixed part of the tree (queues and their files), and how
/// long a look at a queue stands for the lookups of its files.
pub const STABLE_FOR: Duration = Duration::from_secs(1);

pub type Result<T> = std::result::Result<T, FsError>;

/// How the tree presents itself and how long `wait` waits.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Refuse everything that changes a queue (EROFS), consuming included.
    pub read_only: bool,
    /// Owner of every file and directory, instead of the owner of what it stands for in ROOT.
    pub uid: Option<u32>,
    /// Group of every file and directory, instead of the group of what it stands for in ROOT.
    pub gid: Option<u32>,
    /// Fixed modes (directories 777, in/ack/nack 222, ddmq.yaml and work/<id> 666, others 444)
    /// less these bits, instead of modes derived from ROOT (see [`access`]).
    pub umask: Option<u32>,
    /// How long an open of `wait` waits for a message before it fails with ENODATA.
    pub wait_limit: Duration,
    /// How often a waiting open looks at the queue directory and at its caller.
    pub wait_poll: Duration,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            read_only: false,
            uid: None,
            gid: None,
            umask: None,
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

/// Attributes of a node. The entries of `messages/` and `work/` have their body's length (copy
/// tools and archivers read as many bytes as the size says); other files have size 0, their
/// content is made when they are opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub is_dir: bool,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub time: SystemTime,
    /// The entry may vanish at any moment (a message): the kernel may cache it only briefly.
    pub volatile: bool,
    /// Each caller gets an inode of its own (`in`, see [`inodes`]): the kernel must not cache
    /// it at all, so that every path lookup brings each caller to its own.
    pub per_caller: bool,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub is_dir: bool,
    pub name: String,
}

/// An open directory: what it is, its parent, and its entries as listed at OPENDIR ("." and
/// ".." first). READDIR and READDIRPLUS page through this snapshot.
struct OpenDir {
    node: Node,
    parent: Node,
    entries: Vec<DirEntry>,
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

/// An open file: its path in the tree (for errors) and its handle; `None` once released.
struct OpenFile {
    path: String,
    handle: Option<Box<dyn OpenHandle>>,
}

/// The filesystem over one ddmq root.
pub struct QueueFs {
    broker: Broker,
    opts: FsOptions,
    inodes: Mutex<InodeTable>,
    files: Mutex<HashMap<u64, Arc<Mutex<OpenFile>>>>,
    /// The last failure of a write or close on a file of each queue, shown by its `status`.
    last_errors: Mutex<HashMap<String, String>>,
    /// Who removed which `in` lately (see [`files`]).
    removed_in: Mutex<Vec<files::RemovedIn>>,
    /// When each queue was last found to exist (see [`QueueFs::exists`]).
    queues_seen: Mutex<HashMap<String, Instant>>,
    /// Open directories by handle; shared so that a page is handed out without holding the map.
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    next_handle: AtomicU64,
    shutting_down: AtomicBool,
    started: SystemTime,
    /// Owners and modes of ROOT's directories, read lately (see [`access`]).
    stats: access::StatCache,
    /// Where each message under messages/ and work/ is, by id (see [`entries`]).
    entries: entries::EntryIndex,
    /// The leases open files keep on their messages (see [`lease`]).
    leases: lease::Leases,
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

impl QueueFs {
    pub fn new(broker: Broker, opts: FsOptions) -> QueueFs {
        QueueFs {
            broker,
            opts,
            inodes: Mutex::new(InodeTable::new()),
            files: Mutex::new(HashMap::new()),
            removed_in: Mutex::new(Vec::new()),
            last_errors: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            queues_seen: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            started: SystemTime::now(),
            stats: access::StatCache::default(),
            entries: entries::EntryIndex::default(),
            leases: lease::Leases::default(),
            interrupted: Box::new(is_interrupted),
            killed: {
                let check = KillCheck::default();
                Box::new(move |pid| check.is_killed(pid))
            },
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
        self.inodes.lock_recovering().len()
    }

    /// Number of open files.
    pub fn open_file_count(&self) -> usize {
        self.files.lock_recovering().len()
    }

    // ------------------------------------------------------------------ nodes

    fn node(&self, op: &'static str, ino: u64) -> Result<Node> {
        self.inodes
            .lock_recovering()
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
            Node::Root => engine::is_valid_queue_name(name).then(|| Node::Queue(name.into())),
            Node::Queue(q) => FileKind::from_name(name)
                .map(|k| Node::File(q.clone(), k))
                .or_else(|| DirKind::from_name(name).map(|d| Node::Dir(q.clone(), d))),
            Node::Dir(q, d) => is_valid_id(name).then(|| Node::Entry(q.clone(), *d, name.into())),
            Node::File(..) | Node::Entry(..) => None,
        }
    }

    /// Whether `node` exists now, asking the engine. A queue is looked at anew for its own
    /// entry; for the files and directories in it (a publish looks `in` up every time, see
    /// [`Attr::per_caller`]), a look at the queue within [`STABLE_FOR`] stands: the kernel
    /// trusts the queue's entry, and its other files', that long without asking.
    fn exists(&self, op: &'static str, node: &Node) -> Result<bool> {
        let q = match node {
            // Found by its own file: a queue gone takes its messages with it.
            Node::Entry(_, DirKind::Work, id) => {
                return Ok(self.find_in_flight(op, node, id)?.is_some());
            }
            Node::Entry(_, DirKind::Messages, id) => {
                return Ok(self.find_waiting(op, node, id)?.is_some());
            }
            _ => match node.queue() {
                None => return Ok(true),
                Some(q) => q,
            },
        };
        let in_queue = matches!(node, Node::File(..) | Node::Dir(..));
        if in_queue
            && let Some(seen) = self.queues_seen.lock_recovering().get(q)
            && seen.elapsed() < STABLE_FOR
        {
            return Ok(true);
        }
        if !self.broker.queue_exists(q).map_err(|e| err(op, node, e))? {
            self.broker.forget_queue(q);
            self.queues_seen.lock_recovering().remove(q);
            return Ok(false);
        }
        self.queues_seen
            .lock_recovering()
            .insert(q.to_string(), Instant::now());
        Ok(true)
    }

    /// Owner, group and mode of `node`: derived from ROOT, or as the mount options say.
    fn ownership(&self, node: &Node) -> access::Ownership {
        self.present_ownership(node)
            .unwrap_or_else(|| self.with_overrides(node, None))
    }

    /// [`QueueFs::ownership`], or None when what `node` stands for is gone (or cannot be
    /// seen) and no option fixes its mode.
    fn present_ownership(&self, node: &Node) -> Option<access::Ownership> {
        let derived = access::derive(&self.stats, self.broker.root(), node);
        if derived.is_none() && self.opts.umask.is_none() {
            return None;
        }
        Some(self.with_overrides(node, derived))
    }

    fn with_overrides(&self, node: &Node, derived: Option<access::Ownership>) -> access::Ownership {
        let derived = derived.unwrap_or(access::Ownership {
            uid: self.opts.uid.unwrap_or(0),
            gid: self.opts.gid.unwrap_or(0),
            perm: 0,
        });
        let mut perm = match self.opts.umask {
            Some(umask) => Self::fixed_perm(node) & !umask,
            None => derived.perm,
        };
        if self.opts.read_only {
            perm &= !0o222;
        }
        access::Ownership {
            uid: self.opts.uid.unwrap_or(derived.uid),
            gid: self.opts.gid.unwrap_or(derived.gid),
            perm,
        }
    }

    /// The modes of a mount with `umask=` (whoever may use the mount may do everything).
    fn fixed_perm(node: &Node) -> u32 {
        match node {
            Node::Root | Node::Queue(_) | Node::Dir(..) => 0o777,
            Node::File(_, FileKind::In | FileKind::Ack | FileKind::Nack) => 0o222,
            Node::File(_, FileKind::Config) => 0o666,
            Node::File(..) => 0o444,
            Node::Entry(_, DirKind::Work, _) => 0o666, // touch needs write permission
            Node::Entry(_, DirKind::Messages, _) => 0o444,
        }
    }

    /// The owner an inode of `node` shows to `who`: `in` shows each caller as its owner (see
    /// [`inodes`]), so that the kernel lets copy tools set its ACL; root sees it as it is.
    fn shown_owner(node: &Node, who: Option<&Caller>) -> Option<u32> {
        match (node, who) {
            (Node::File(_, FileKind::In), Some(w)) if !w.is_root() => Some(w.uid),
            _ => None,
        }
    }

    /// Takes one kernel reference on the inode of `node` that `who` gets.
    fn remember_for(&self, node: Node, who: Option<&Caller>) -> u64 {
        let owner = Self::shown_owner(&node, who);
        self.inodes.lock_recovering().remember_as(node, owner)
    }

    fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        self.attr_for(ino, node, None)
    }

    /// The attributes of inode `ino` of `node`, as `who` sees them: an `in` shown as its own
    /// has the caller's own right to publish as the owner's bits (other classes as derived).
    fn attr_for(&self, ino: u64, node: &Node, who: Option<&Caller>) -> Attr {
        let mut owner = self.ownership(node);
        if let Some(uid) = self.inodes.lock_recovering().shown_owner(ino) {
            let may = who.is_some_and(|w| w.uid == uid && owner.permits(w, access::W));
            owner.perm = (owner.perm & 0o077) | if may { 0o200 } else { 0 };
            owner.uid = uid;
        }
        Attr {
            ino,
            is_dir: node.is_dir(),
            size: self.body_size(node),
            perm: owner.perm as u16,
            uid: owner.uid,
            gid: owner.gid,
            // A message in flight shows when its lease ends (touch extends it).
            time: match node {
                Node::Entry(q, DirKind::Work, id) => self.entries.expiry(q, id),
                _ => None,
            }
            .unwrap_or(self.started),
            volatile: matches!(node, Node::Entry(..)),
            per_caller: matches!(node, Node::File(_, FileKind::In)),
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
        self.lookup_by(parent, name, 0, None)
    }

    /// LOOKUP by the task `pid` of `who` (an `in` it just removed is missing for it, see
    /// [`files`]; an `in` is shown as its own, see [`inodes`]).
    pub fn lookup_by(
        &self,
        parent: u64,
        name: &str,
        pid: u32,
        who: Option<&Caller>,
    ) -> Result<Attr> {
        let parent = self.node("lookup", parent)?;
        let missing = || FsError::new("lookup", child_path(&parent, name), FsErrorKind::NotFound);
        if !parent.is_dir() {
            return Err(err("lookup", &parent, FsErrorKind::NotDir));
        }
        let node = Self::child(&parent, name).ok_or_else(missing)?;
        if self.removed_in_by(&node, pid) || !self.exists("lookup", &node)? {
            return Err(missing());
        }
        let ino = self.remember_for(node.clone(), who);
        Ok(self.attr_for(ino, &node, who))
    }

    /// FORGET: the kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.lock_recovering().forget(ino, n);
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        self.getattr_for(ino, None)
    }

    /// GETATTR as `who` sees the node.
    pub fn getattr_for(&self, ino: u64, who: Option<&Caller>) -> Result<Attr> {
        let node = self.node("getattr", ino)?;
        Ok(self.attr_for(ino, &node, who))
    }

    /// SETATTR: truncation of a writable file (`>` truncates to 0; an open `in` takes any size,
    /// as a file would), and touch of `work/<id>` (extends its lease). Owners and modes come from
    /// the mount options and cannot change; on `in` such a change succeeds without effect.
    pub fn setattr(&self, ino: u64, fh: Option<u64>, change: &SetAttr) -> Result<Attr> {
        self.setattr_by(ino, fh, change, None)
    }

    /// SETATTR by `who` (its answer shows the node as `who` sees it).
    pub fn setattr_by(
        &self,
        ino: u64,
        fh: Option<u64>,
        change: &SetAttr,
        who: Option<&Caller>,
    ) -> Result<Attr> {
        const OP: &str = "setattr";
        let node = self.node(OP, ino)?;
        // Copy tools (shutil.copy, cp -p, install) set the mode, owner and times of what they
        // just wrote: on `in` that succeeds and changes nothing, so they report the publish as
        // done instead of failing after it (and being retried into a second message).
        let on_in = matches!(node, Node::File(_, FileKind::In));
        if !on_in && (change.mode.is_some() || change.uid.is_some() || change.gid.is_some()) {
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
            match fh {
                // ftruncate: the open file decides (`in` takes any size, as a file would).
                Some(fh) => self.with_handle(OP, fh, |h, ctx| h.truncate(ctx, size))?,
                None if size != 0 => {
                    return Err(err(
                        OP,
                        &node,
                        FsErrorKind::Invalid("only truncation to size 0 is supported".into()),
                    ));
                }
                None => {}
            }
        }
        if change.times
            && let Node::Entry(_, DirKind::Work, id) = &node
        {
            self.writable(OP, &node)?;
            let queue = self.queue(OP, &node)?;
            let name = self
                .find_in_flight(OP, &node, id)?
                .ok_or_else(|| err(OP, &node, FsErrorKind::NotFound))?;
            match queue
                .touch(&name.to_string())
                .map_err(|e| err(OP, &node, e))?
            {
                Some(renewed) => {
                    let q = node.queue().unwrap_or_default();
                    self.leases.renamed(q, &renewed);
                    self.entries.renamed_in_flight(q, renewed);
                }
                None => return Err(err(OP, &node, FsErrorKind::NotFound)),
            }
        }
        Ok(self.attr_for(ino, &node, who))
    }

    // ------------------------------------------------------------------ directories

    fn list(&self, node: &Node) -> Result<Vec<(Node, String)>> {
        const OP: &str = "readdir";
        let ids = |names: Vec<String>, d: DirKind, q: &inodes::Name| {
            names
                .into_iter()
                .map(|id| (Node::Entry(q.clone(), d, id.as_str().into()), id))
                .collect()
        };
        match node {
            Node::Root => {
                let queues = self.broker.list_queues().map_err(|e| err(OP, node, e))?;
                Ok(queues
                    .into_iter()
                    .map(|q| (Node::Queue(q.as_str().into()), q))
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
                self.entries.record_in_flight(q, &names);
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
                self.entries.record_waiting(q, &names);
                Ok(ids(
                    names.into_iter().map(|w| w.id.to_string()).collect(),
                    DirKind::Messages,
                    q,
                ))
            }
            Node::File(..) | Node::Entry(..) => Err(err(OP, node, FsErrorKind::NotDir)),
        }
    }

    /// OPENDIR: lists the directory now; READDIR and READDIRPLUS page through this snapshot.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.node("opendir", ino)?;
        let children = self.list(&node)?;
        let parent = node.parent();
        let entries = {
            let inodes = self.inodes.lock_recovering();
            let dots = [
                DirEntry {
                    ino,
                    is_dir: true,
                    name: ".".into(),
                },
                DirEntry {
                    ino: inodes.peek(&parent),
                    is_dir: true,
                    name: "..".into(),
                },
            ];
            dots.into_iter()
                .chain(children.into_iter().map(|(child, name)| DirEntry {
                    ino: inodes.peek(&child),
                    is_dir: child.is_dir(),
                    name,
                }))
                .collect()
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let dir = OpenDir {
            node,
            parent,
            entries,
        };
        self.dirs.lock_recovering().insert(fh, Arc::new(dir));
        Ok(fh)
    }

    /// The one paging loop of READDIR and READDIRPLUS: hands `add` the entries of the open
    /// directory `fh` from `offset` on, each with the offset of the one after it, and stops at
    /// the first one `add` refuses (returns true: the reply is full). Nothing is copied, so a
    /// page costs what fits in it however long the directory is (the kernel asks with about
    /// 4 KiB at a time: copying the rest on every call was quadratic in a deep queue).
    fn page(
        &self,
        op: &'static str,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&OpenDir, u64, &DirEntry) -> bool,
    ) -> Result<()> {
        let dir = self
            .dirs
            .lock_recovering()
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::new(op, format!("handle {fh}"), FsErrorKind::BadHandle))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let rest = dir.entries.get(start..).unwrap_or_default();
        for (i, entry) in rest.iter().enumerate() {
            if add(&dir, offset + i as u64 + 1, entry) {
                break;
            }
        }
        Ok(())
    }

    /// READDIR: hands `add` the entries from `offset` on, each with the offset of the one after
    /// it, until `add` returns true (the reply is full; that entry was not taken).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> Result<()> {
        self.page("readdir", fh, offset, |_, next, entry| add(next, entry))
    }

    /// READDIRPLUS: as READDIR, each entry with the attributes LOOKUP gives it. To the kernel
    /// every entry it takes, "." and ".." aside, is a LOOKUP of that inode (it will FORGET it
    /// later), so each is remembered once per time `add` takes it, and not when `add` refuses
    /// it. Entries come from the snapshot of OPENDIR, as READDIR's do: a message consumed since
    /// is still shown, and answers ENOENT once opened or looked up again.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        who: Option<&Caller>,
        mut add: impl FnMut(u64, &DirEntry, &Attr) -> bool,
    ) -> Result<()> {
        self.page("readdirplus", fh, offset, |dir, next, entry| {
            // The kernel takes no reference on these two.
            match entry.name.as_str() {
                "." => return add(next, entry, &self.attr_of(entry.ino, &dir.node)),
                ".." => return add(next, entry, &self.attr_of(entry.ino, &dir.parent)),
                _ => {}
            }
            // Every listed name is a child by the tree's shape; one that is not is left out.
            let Some(node) = Self::child(&dir.node, &entry.name) else {
                return false;
            };
            let ino = self.remember_for(node.clone(), who);
            let full = add(next, entry, &self.attr_for(ino, &node, who));
            if full {
                self.inodes.lock_recovering().forget(ino, 1);
            }
            full
        })
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock_recovering().remove(&fh);
    }

    /// MKDIR in the root creates a queue.
    pub fn mkdir(&self, parent: u64, name: &str) -> Result<Attr> {
        const OP: &str = "mkdir";
        let parent = self.node(OP, parent)?;
        let node = Node::Queue(name.into());
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
        let ino = self.inodes.lock_recovering().remember(node.clone());
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
                self.queues_seen.lock_recovering().remove(&**q);
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
        self.unlink_by(parent, name, 0)
    }

    /// UNLINK by the task `pid`.
    pub fn unlink_by(&self, parent: u64, name: &str, pid: u32) -> Result<()> {
        const OP: &str = "unlink";
        let parent = self.node(OP, parent)?;
        let node = Self::child(&parent, name)
            .ok_or_else(|| FsError::new(OP, child_path(&parent, name), FsErrorKind::NotFound))?;
        match &node {
            Node::Entry(_, DirKind::Work, id) => {
                self.writable(OP, &node)?;
                // Acked by its current name: one unlink, no search of work/.
                let name = self
                    .find_in_flight(OP, &node, id)?
                    .map_or_else(|| id.to_string(), |w| w.to_string());
                let queue = self.queue(OP, &node)?;
                // Files of this mount holding it must not take this for a lost lease.
                let settling = self.leases.settling(node.queue().unwrap_or_default(), id);
                match queue.ack(&name) {
                    Ok(AckOutcome::Acked(_)) => Ok(()),
                    Ok(AckOutcome::NotFound) => {
                        settling.failed();
                        Err(err(OP, &node, FsErrorKind::NotFound))
                    }
                    Err(e) => {
                        settling.failed();
                        Err(err(OP, &node, e))
                    }
                }
            }
            Node::Queue(_) | Node::Dir(..) => Err(err(OP, &node, FsErrorKind::IsDir)),
            // `install` removes its destination before creating it anew: `in` stays.
            Node::File(_, FileKind::In) => {
                self.remember_removed_in(&node, pid);
                Ok(())
            }
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

    // ------------------------------------------------------------------ life cycle

    /// Makes waiting opens give up (ENODATA) and refuses nothing else; call before unmounting.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Closes every open file as the daemon stops: claimed messages not yet handed over go
    /// back to their queue at once; half-written bodies are not published.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        let files: Vec<_> = self.files.lock_recovering().drain().collect();
        for (fh, file) in files {
            self.leases.release(fh);
            if let Err(e) = self.finish(&file, true) {
                log::warn!("closing at shutdown: {e}");
            }
        }
    }

    /// The open files whose lease is due for renewal (see [`lease`]).
    pub fn leases_due(&self) -> Vec<u64> {
        self.leases.due()
    }

    /// Renews the lease of the open file `fh` if it is due (the adapter calls this as the
    /// file's opener). A lease found lost is logged and shown in `status` now; the file's
    /// close will fail.
    pub fn renew_lease(&self, fh: u64) -> Result<()> {
        let Some(lease) = self.leases.get(fh) else {
            return Ok(());
        };
        const OP: &str = "renew lease";
        let renewal = self
            .broker
            .queue(&lease.queue)
            .and_then(|q| lease.renew(&q))
            .map_err(|e| FsError::new(OP, lease.path.clone(), e))?;
        match renewal {
            lease::Renewal::Renewed(name) => self.entries.renamed_in_flight(&lease.queue, name),
            lease::Renewal::Lost => {
                let e = FsError::new(OP, lease.path.clone(), FsErrorKind::LeaseLost);
                self.note_error(&lease.path, &e);
                return Err(e);
            }
            lease::Renewal::Idle => {}
        }
        Ok(())
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
