//! Who may do what through the mount: each node's owner, group and mode, derived from what it
//! stands for in ROOT, so that the kernel's `default_permissions` check grants exactly what the
//! same user could do with the CLI on ROOT.
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
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::inodes::{DirKind, FileKind, Node};

/// How long a directory's or file's owner and mode are reused (a chmod of ROOT shows within this).
const STAT_TTL: Duration = Duration::from_secs(1);

/// Owners and modes read lately, by path: `ls -l` of a deep queue asks for the same queue
/// directory once per entry. Only successful reads are kept (a caller refused a stat must not
/// make the node look closed to the next caller).
#[derive(Default)]
pub struct StatCache(Mutex<HashMap<PathBuf, (std::fs::Metadata, Instant)>>);

impl StatCache {
    fn stat(&self, path: &Path) -> Option<std::fs::Metadata> {
        let now = Instant::now();
        if let Some((meta, read)) = self.0.lock_recovering().get(path)
            && now.duration_since(*read) < STAT_TTL
        {
            return Some(meta.clone());
        }
        let meta = std::fs::metadata(path).ok()?;
        let mut cache = self.0.lock_recovering();
        if cache.len() >= 4096 {
            cache.retain(|_, (_, read)| now.duration_since(*read) < STAT_TTL);
        }
        cache.insert(path.to_path_buf(), (meta.clone(), now));
        Some(meta)
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
    fn of(meta: &std::fs::Metadata, mask: u32) -> Ownership {
        Ownership {
            uid: meta.uid(),
            gid: meta.gid(),
            perm: meta.mode() & mask,
        }
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
const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

/// The ownership `node` takes from ROOT (at `root`), or None when what it stands for is gone.
pub fn derive(cache: &StatCache, root: &Path, node: &Node) -> Option<Ownership> {
    let stat = |p: &Path| cache.stat(p);
    let dir = |p: &Path| stat(p).map(|m| Ownership::of(&m, DIR_BITS));
    let queue_dir = |q: &str| dir(&root.join(q));
    let work_dir = |q: &str| dir(&root.join(q).join("work"));
    Some(match node {
        Node::Root => dir(root)?,
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
                FileKind::Config => {
                    match stat(&root.join(q).join(crate::engine::config::CONFIG_FILE)) {
                        Some(file) => {
                            let file = Ownership::of(&file, 0o666);
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
                    }
                }
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
