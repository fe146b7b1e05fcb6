//! Who may do what through the mount: each node's owner, group and mode, derived from what it
//! stands for in ROOT, and the check of each request against them ([`QueueFs::permit`]), so
//! that the mount grants exactly what the same user could do with the CLI on ROOT.
//!
//! The daemon checks, not the kernel (the mount has no `default_permissions`): the kernel
//! decides from the attributes it cached, shared by every user, and refuses a chmod or utimes
//! of anybody but the owner before the daemon hears of it, so copy tools run by a group member
//! would publish and then fail. Here every request is checked against its own caller: search
//! on every directory above the node (the path walk the kernel no longer does), then what the
//! request needs on the node itself, by the caller's class (owner, group with the caller's
//! supplementary groups, others), as the kernel's own check would; root passes.
//!
//! | node                    | stands for                                 | bits granted to a class  |
//! |-------------------------|--------------------------------------------|--------------------------|
//! | MNT, MNT/q, MNT/q/work  | ROOT, ROOT/q, ROOT/q/work                  | the directory's own      |
//! | MNT/q/messages          | listing ROOT/q                             | its r and x              |
//! | in                      | creating a file in ROOT/q                  | w if w and x on ROOT/q   |
//! | next, wait, claim       | renaming out of ROOT/q into ROOT/q/work    | r if r, w, x on both     |
//! | ack, nack               | removing from ROOT/q/work (nack: to ROOT/q) | w if w and x on both     |
//! | status, messages/<id>   | reading ROOT/q                             | r if r and x on ROOT/q   |
//! | work/<id>               | ROOT/q/work (rm acks, touch extends)       | r, w if those and x there|
//! | ddmq.yaml               | ROOT/q/ddmq.yaml, replaced in ROOT/q       | its r; w if also w, x q  |
//!
//! Owner and group are those of the directory (or file) the node stands for. A class's bits on
//! two directories combine only where both have the same owner and group (the usual case: the
//! engine makes work/ with its queue); otherwise the queue directory's own bits decide, and the
//! backing filesystem's check (the daemon acts as its caller, see the daemon's docs) has the last
//! word. The `uid=`, `gid=` and `umask=` mount options override what is derived here.

use crate::locking::LockRecovering;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::caller::Caller;
use super::files::OpenMode;
use super::inodes::{DirKind, FileKind, Node};
use super::{Access, FsErrorKind, QueueFs, Result, SetAttr, err};

/// How long a directory's or file's owner and mode are reused (a chmod of ROOT shows within this).
const STAT_TTL: Duration = Duration::from_secs(1);

/// What of ROOT an owner and mode are read from: the root itself, or a queue's directory, its
/// `work/` or its settings file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backing {
    Root,
    QueueDir,
    WorkDir,
    Config,
}

impl Backing {
    /// Where a queue's reads of this are kept (the root's are kept apart).
    fn slot(self) -> usize {
        match self {
            Backing::Root | Backing::QueueDir => 0,
            Backing::WorkDir => 1,
            Backing::Config => 2,
        }
    }
}

/// The owner, group and mode bits of a file or directory of ROOT, as read.
#[derive(Clone, Copy, Debug)]
struct Stat {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// A read of one backing file, and when it was made.
type Read = Option<(Stat, Instant)>;

/// Owners and modes read lately: `ls -l` of a deep queue asks for the same queue directory once
/// per entry, and every LOOKUP, GETATTR and permission check of a queue's files needs its
/// directory's. Kept by queue name (no path is made or hashed unless a read is due). Only
/// successful reads are kept (a caller refused a stat must not make the node look closed to
/// the next caller).
#[derive(Default)]
pub struct StatCache(Mutex<StatReads>);

#[derive(Default)]
struct StatReads {
    root: Read,
    /// A queue's directory, its work/ and its settings file, by queue name.
    queues: HashMap<String, [Read; 3]>,
}

impl StatCache {
    /// The owner and mode of `what` (of queue `queue`, unless it is the root), read within
    /// [`STAT_TTL`] of `now` or read now.
    fn stat(&self, root: &Path, queue: &str, what: Backing, now: Instant) -> Option<Stat> {
        let fresh = |read: &Read| read.filter(|(_, at)| now.duration_since(*at) < STAT_TTL);
        {
            let reads = self.0.lock_recovering();
            let read = match what {
                Backing::Root => fresh(&reads.root),
                part => reads.queues.get(queue).and_then(|q| fresh(&q[part.slot()])),
            };
            if let Some((stat, _)) = read {
                return Some(stat);
            }
        }
        let path = match what {
            Backing::Root => root.to_path_buf(),
            Backing::QueueDir => root.join(queue),
            Backing::WorkDir => root.join(queue).join("work"),
            Backing::Config => root.join(queue).join(crate::engine::config::CONFIG_FILE),
        };
        let meta = std::fs::metadata(path).ok()?;
        let stat = Stat {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        };
        let mut reads = self.0.lock_recovering();
        if what == Backing::Root {
            reads.root = Some((stat, now));
            return Some(stat);
        }
        if reads.queues.len() >= 4096 {
            reads
                .queues
                .retain(|_, q| q.iter().any(|read| fresh(read).is_some()));
        }
        match reads.queues.get_mut(queue) {
            Some(q) => q[what.slot()] = Some((stat, now)),
            None => {
                let mut q = [None; 3];
                q[what.slot()] = Some((stat, now));
                reads.queues.insert(queue.to_string(), q);
            }
        }
        Some(stat)
    }
}

/// Owner, group and permission bits of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub perm: u32,
}

impl Ownership {
    fn of(stat: Stat, mask: u32) -> Ownership {
        Ownership {
            uid: stat.uid,
            gid: stat.gid,
            perm: stat.mode & mask,
        }
    }

    /// Whether `who` has every right of `mask` (some of r=4, w=2, x=1) by the class it falls
    /// in: owner, else group (its own or a supplementary one), else others; root has them all.
    pub fn permits(&self, who: &Caller, mask: u32) -> bool {
        if who.is_root() {
            return true;
        }
        let shift = if who.uid == self.uid {
            6
        } else if who.in_group(self.gid) {
            3
        } else {
            0
        };
        (self.perm >> shift) & mask == mask
    }

    /// The same owner and group, with `bits` (some of r=4, w=2, x=1) given to each class that
    /// has all of `needs` here (and in `also`, when it has the same owner and group).
    fn grant(self, needs: u32, also: Option<Ownership>, bits: u32) -> Ownership {
        let also = also.filter(|a| a.uid == self.uid && a.gid == self.gid);
        let mut perm = 0;
        for shift in [6, 3, 0] {
            let has = |o: Ownership| (o.perm >> shift) & needs == needs;
            if has(self) && also.is_none_or(has) {
                perm |= bits << shift;
            }
        }
        Ownership { perm, ..self }
    }
}

const DIR_BITS: u32 = 0o1777;
pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// What a request is about to do, for [`QueueFs::permit`].
#[derive(Clone, Copy, Debug)]
pub enum Intent<'a> {
    /// LOOKUP of a name in this directory: search.
    Lookup,
    /// GETATTR: only the directories above are searched.
    Stat,
    /// OPEN: read, write or both, as the mode says (O_TRUNC needs write too).
    Open(OpenMode),
    /// OPENDIR: read.
    List,
    /// CREATE, MKDIR, UNLINK or RMDIR of a name in this directory: write and search.
    ChangeEntries,
    /// ACCESS (access(2), chdir) with these bits; F_OK is 0.
    Access(u32),
    /// SETATTR; `open` when it comes on an open file (ftruncate), which needs no more rights.
    SetAttr { change: &'a SetAttr, open: bool },
}

impl QueueFs {
    /// Checks that `who` may do `intent` on the node `ino` (see the module docs): EACCES when a
    /// right is missing, EPERM for a change only the owner may make. A node whose directory is
    /// gone passes, so that the request itself answers ENOENT.
    pub fn permit(&self, op: &'static str, ino: u64, who: &Caller, intent: Intent) -> Result<()> {
        let node = self.node(op, ino)?;
        if let Intent::Access(mask) = intent
            && mask & X != 0
            && !node.is_dir()
        {
            return Err(err(op, &node, FsErrorKind::Denied)); // nothing here is executable
        }
        if who.is_root() {
            return Ok(());
        }
        let denied = || err(op, &node, FsErrorKind::Denied);
        let mut above = node.clone();
        while above != Node::Root {
            above = above.parent();
            if !self.grants(&above, who, X) {
                return Err(denied());
            }
        }
        let needs = match intent {
            Intent::Stat => 0,
            Intent::Lookup => X,
            Intent::List => R,
            Intent::ChangeEntries => W | X,
            Intent::Access(mask) => mask & (R | W | X),
            Intent::Open(mode) => {
                let mut needs = match mode.access {
                    Access::Read => R,
                    Access::Write => W,
                    Access::ReadWrite => R | W,
                };
                if mode.truncate {
                    needs |= W;
                }
                needs
            }
            Intent::SetAttr { change, open } => {
                return self.permit_setattr(&node, who, change, open);
            }
        };
        if needs != 0 && !self.grants(&node, who, needs) {
            return Err(denied());
        }
        Ok(())
    }

    /// SETATTR: a truncation by name needs write; owners and modes only the owner may change,
    /// or, on `in`, whoever may publish (copy tools set them after writing: that succeeds
    /// without effect); times (touch, which extends the lease of `work/<id>`) need ownership or
    /// write.
    fn permit_setattr(
        &self,
        node: &Node,
        who: &Caller,
        change: &SetAttr,
        open: bool,
    ) -> Result<()> {
        const OP: &str = "setattr";
        let Some(owner) = self.present_ownership(node) else {
            return Ok(());
        };
        let writes = owner.permits(who, W);
        let owns = who.uid == owner.uid;
        if change.size.is_some() && !open && !writes {
            return Err(err(OP, node, FsErrorKind::Denied));
        }
        let ownership_change =
            change.mode.is_some() || change.uid.is_some() || change.gid.is_some();
        let on_in = matches!(node, Node::File(_, FileKind::In));
        if ownership_change && !owns && !(on_in && writes) {
            return Err(err(
                OP,
                node,
                FsErrorKind::NotPermitted("only the owner may change its mode or owner"),
            ));
        }
        if change.times && !owns && !writes {
            return Err(err(OP, node, FsErrorKind::Denied));
        }
        Ok(())
    }

    /// Whether `node` grants `who` every right of `mask` (a node whose directory is gone does).
    fn grants(&self, node: &Node, who: &Caller, mask: u32) -> bool {
        self.present_ownership(node)
            .is_none_or(|o| o.permits(who, mask))
    }
}

/// The ownership `node` takes from ROOT (at `root`), or None when what it stands for is gone.
pub fn derive(cache: &StatCache, root: &Path, node: &Node) -> Option<Ownership> {
    // One clock read for every stat a node needs.
    let now = Instant::now();
    let stat = |q: &str, what: Backing| cache.stat(root, q, what, now);
    let queue_dir = |q: &str| stat(q, Backing::QueueDir).map(|s| Ownership::of(s, DIR_BITS));
    let work_dir = |q: &str| stat(q, Backing::WorkDir).map(|s| Ownership::of(s, DIR_BITS));
    Some(match node {
        Node::Root => Ownership::of(stat("", Backing::Root)?, DIR_BITS),
        Node::Queue(q) => queue_dir(q)?,
        Node::Dir(q, DirKind::Work) => work_dir(q).or_else(|| queue_dir(q))?,
        Node::Dir(q, DirKind::Messages) => {
            let d = queue_dir(q)?;
            Ownership {
                perm: d.perm & 0o555,
                ..d
            }
        }
        Node::File(q, kind) => {
            let d = queue_dir(q)?;
            match kind {
                FileKind::In => d.grant(W | X, None, W),
                FileKind::Next | FileKind::Wait | FileKind::Claim => {
                    d.grant(R | W | X, work_dir(q), R)
                }
                FileKind::Ack | FileKind::Nack => d.grant(W | X, work_dir(q), W),
                FileKind::Status => d.grant(R | X, None, R),
                FileKind::Config => match stat(q, Backing::Config) {
                    Some(file) => {
                        let file = Ownership::of(file, 0o666);
                        let writers = d.grant(W | X, None, W);
                        let writable = if (file.uid, file.gid) == (d.uid, d.gid) {
                            writers.perm
                        } else {
                            0o222
                        };
                        Ownership {
                            perm: file.perm & (0o444 | writable),
                            ..file
                        }
                    }
                    None => {
                        let readers = d.grant(R | X, None, R);
                        let writers = d.grant(W | X, None, W);
                        Ownership {
                            perm: readers.perm | writers.perm,
                            ..d
                        }
                    }
                },
            }
        }
        Node::Entry(q, DirKind::Messages, _) => queue_dir(q)?.grant(R | X, None, R),
        Node::Entry(q, DirKind::Work, _) => {
            let w = work_dir(q)?;
            let readers = w.grant(R | X, None, R);
            let writers = w.grant(W | X, None, W);
            Ownership {
                perm: readers.perm | writers.perm,
                ..w
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_gets_a_right_only_with_everything_it_needs() {
        let q = Ownership {
            uid: 1,
            gid: 2,
            perm: 0o730,
        };
        // Owner rwx, group -wx, others nothing.
        assert_eq!(q.grant(W | X, None, W).perm, 0o220);
        assert_eq!(q.grant(R | W | X, None, R).perm, 0o400);
        let work_same = Ownership { perm: 0o700, ..q };
        assert_eq!(q.grant(W | X, Some(work_same), W).perm, 0o200);
        let work_other = Ownership {
            uid: 9,
            ..work_same
        };
        assert_eq!(q.grant(W | X, Some(work_other), W).perm, 0o220);
    }
}
