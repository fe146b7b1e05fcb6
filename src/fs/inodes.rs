//! The inode table: which node of the synthetic tree each inode number the kernel holds names.
//!
//! Numbers are derived from the node (a hash of its path), so a listing can report the same
//! number a later lookup hands out without adding anything to the table.
//!
//! `in` has one inode per user who looked it up, each showing that user as its owner: the
//! kernel lets only a file's owner set its ACL, which `install` and `cp -p` do after writing,
//! and it checks the owner of the inode a descriptor holds, shared by everyone who opened it. Entries carry the
//! kernel's lookup count (LOOKUP, MKDIR and every entry READDIRPLUS hands out) and are dropped
//! when FORGET brings it to zero, so the table holds only what the kernel still references
//! however many messages pass through.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A queue name or message id in a node: shared, so that handing a node around (several times
/// per request) copies no string. Hashes as the `str` it holds.
pub type Name = Arc<str>;

/// The root directory's inode number (fixed by FUSE).
pub const ROOT_INO: u64 = 1;

/// A node of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    /// `<queue>/`
    Queue(Name),
    /// One of the fixed files of a queue.
    File(Name, FileKind),
    /// `<queue>/work/` or `<queue>/messages/`
    Dir(Name, DirKind),
    /// `<queue>/work/<id>` or `<queue>/messages/<id>`
    Entry(Name, DirKind, Name),
}

/// The fixed files of a queue directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    In,
    Next,
    Wait,
    Claim,
    Ack,
    Nack,
    Status,
    Config,
}

impl FileKind {
    pub const ALL: [FileKind; 8] = [
        FileKind::In,
        FileKind::Next,
        FileKind::Wait,
        FileKind::Claim,
        FileKind::Ack,
        FileKind::Nack,
        FileKind::Status,
        FileKind::Config,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileKind::In => "in",
            FileKind::Next => "next",
            FileKind::Wait => "wait",
            FileKind::Claim => "claim",
            FileKind::Ack => "ack",
            FileKind::Nack => "nack",
            FileKind::Status => "status",
            FileKind::Config => "ddmq.yaml",
        }
    }

    pub fn from_name(name: &str) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The directories inside a queue directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirKind {
    /// In-flight messages.
    Work,
    /// Waiting messages, in delivery order.
    Messages,
}

impl DirKind {
    pub const ALL: [DirKind; 2] = [DirKind::Work, DirKind::Messages];

    pub fn name(self) -> &'static str {
        match self {
            DirKind::Work => "work",
            DirKind::Messages => "messages",
        }
    }

    pub fn from_name(name: &str) -> Option<DirKind> {
        DirKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Node {
    /// The node's path in the mounted tree, for messages.
    pub fn path(&self) -> String {
        match self {
            Node::Root => "/".to_string(),
            Node::Queue(q) => q.to_string(),
            Node::File(q, k) => format!("{q}/{}", k.name()),
            Node::Dir(q, d) => format!("{q}/{}", d.name()),
            Node::Entry(q, d, id) => format!("{q}/{}/{id}", d.name()),
        }
    }

    /// The directory holding this node (the root holds itself, as its ".." says).
    pub fn parent(&self) -> Node {
        match self {
            Node::Root | Node::Queue(_) => Node::Root,
            Node::File(q, _) | Node::Dir(q, _) => Node::Queue(q.clone()),
            Node::Entry(q, d, _) => Node::Dir(q.clone(), *d),
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Root | Node::Queue(_) | Node::Dir(..))
    }

    /// The queue the node belongs to, if any.
    pub fn queue(&self) -> Option<&str> {
        match self {
            Node::Root => None,
            Node::Queue(q) | Node::File(q, _) | Node::Dir(q, _) | Node::Entry(q, _, _) => Some(q),
        }
    }

    /// The number this node (shown as owned by `owner`) gets unless another node holds it.
    fn preferred_ino(&self, owner: Option<u32>) -> u64 {
        if *self == Node::Root {
            return ROOT_INO;
        }
        // DefaultHasher::new() uses fixed keys: stable for the life of the process.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        owner.hash(&mut h);
        // Below 2^63 (some tools treat inode numbers as signed) and never 0 or 1.
        (h.finish() >> 1).max(2)
    }
}

/// A node as an inode shows it: with the owner it shows instead of its own (`in`), if any.
type Shown = (Node, Option<u32>);

#[derive(Default)]
pub struct InodeTable {
    by_ino: HashMap<u64, (Shown, u64)>,
    by_node: HashMap<Shown, u64>,
}

impl InodeTable {
    pub fn new() -> InodeTable {
        let mut t = InodeTable::default();
        t.by_ino.insert(ROOT_INO, ((Node::Root, None), 1));
        t.by_node.insert((Node::Root, None), ROOT_INO);
        t
    }

    /// The node an inode number names, if the kernel still holds it.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.by_ino.get(&ino).map(|((n, _), _)| n.clone())
    }

    /// The owner the inode `ino` shows instead of its node's own, if any.
    pub fn shown_owner(&self, ino: u64) -> Option<u32> {
        self.by_ino.get(&ino).and_then(|((_, owner), _)| *owner)
    }

    /// The number for `node` without taking a reference (for directory listings).
    pub fn peek(&self, node: &Node) -> u64 {
        self.peek_as(node, None)
    }

    fn peek_as(&self, node: &Node, owner: Option<u32>) -> u64 {
        let shown = (node.clone(), owner);
        if let Some(ino) = self.by_node.get(&shown) {
            return *ino;
        }
        let mut ino = node.preferred_ino(owner);
        while self.by_ino.contains_key(&ino) || ino == ROOT_INO {
            ino = ino.wrapping_add(1).max(2) & (u64::MAX >> 1);
        }
        ino
    }

    /// Hands `node` to the kernel once more (a successful LOOKUP or MKDIR, or an entry of a
    /// READDIRPLUS reply other than "." and ".."): returns its number.
    pub fn remember(&mut self, node: Node) -> u64 {
        self.remember_as(node, None)
    }

    /// [`InodeTable::remember`] of an inode of `node` showing `owner` as its owner.
    pub fn remember_as(&mut self, node: Node, owner: Option<u32>) -> u64 {
        let ino = self.peek_as(&node, owner);
        let shown = (node, owner);
        let entry = self.by_ino.entry(ino).or_insert_with(|| (shown.clone(), 0));
        entry.1 += 1;
        self.by_node.insert(shown, ino);
        ino
    }

    /// The kernel dropped `n` references (FORGET). The root is never forgotten.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(entry) = self.by_ino.get_mut(&ino) {
            entry.1 = entry.1.saturating_sub(n);
            if entry.1 == 0 {
                let (shown, _) = self.by_ino.remove(&ino).expect("present");
                self.by_node.remove(&shown);
            }
        }
    }

    /// Number of inodes held (the root included).
    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ino.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_count_and_forget_drops() {
        let mut t = InodeTable::new();
        let node = Node::Entry("q".into(), DirKind::Work, "abc".into());
        let listed = t.peek(&node);
        let a = t.remember(node.clone());
        let b = t.remember(node.clone());
        assert_eq!((a, b), (listed, listed));
        assert_eq!(t.len(), 2);
        t.forget(a, 1);
        assert_eq!(t.node(a), Some(node.clone()));
        t.forget(a, 1);
        assert_eq!(t.node(a), None);
        assert_eq!(t.len(), 1);
        t.forget(ROOT_INO, 10);
        assert_eq!(t.node(ROOT_INO), Some(Node::Root));
    }

    #[test]
    fn in_has_an_inode_per_owner_shown() {
        let mut t = InodeTable::new();
        let node = Node::File("q".into(), FileKind::In);
        let a = t.remember_as(node.clone(), Some(1000));
        let b = t.remember_as(node.clone(), Some(1001));
        let plain = t.remember(node.clone());
        assert!(a != b && a != plain && b != plain);
        assert_eq!(t.remember_as(node.clone(), Some(1000)), a);
        assert_eq!(
            (t.shown_owner(a), t.shown_owner(b)),
            (Some(1000), Some(1001))
        );
        assert_eq!(t.node(a), Some(node.clone()));
        t.forget(a, 2);
        assert_eq!(t.node(a), None);
        assert_eq!(t.node(b), Some(node));
    }

    #[test]
    fn names_round_trip() {
        for k in FileKind::ALL {
            assert_eq!(FileKind::from_name(k.name()), Some(k));
        }
        assert_eq!(DirKind::from_name("work"), Some(DirKind::Work));
        assert_eq!(
            Node::Entry("q".into(), DirKind::Messages, "x".into()).path(),
            "q/messages/x"
        );
    }
}
