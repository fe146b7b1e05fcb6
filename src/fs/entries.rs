//! Where each message shown under `messages/` and `work/` is, by id, so that a LOOKUP, GETATTR,
//! open, `rm` or `touch` of one entry costs a hash lookup and one stat, not a listing of the
//! queue (`ls -l` of a deep queue looks up every entry it lists: with a listing each, it was
//! quadratic).
//!
//! The index of a directory is the id → file name map of its latest listing (made when the
//! directory is opened for reading, or when an id is missing from it). A name found here is
//! checked on disk before it is used: a message consumed since answers ENOENT, a message whose
//! in-flight name changed (its lease was extended by another client) is looked for in a fresh
//! listing, at most once per [`RELIST_AFTER`].
//!
//! It also keeps the length of each listed message's body once read (an entry's size: bodies
//! never change), carried from one listing to the next for the ids still listed, so that only
//! the first `ls -l` of a deep queue reads every message file.

use super::{QueueFs, Result, err, inodes::DirKind, inodes::Node};
use crate::engine::names::MessageId;
use crate::engine::{WaitingName, WorkName};
use crate::locking::LockRecovering;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A listing younger than this is not made again for an id it lacks.
const RELIST_AFTER: Duration = Duration::from_millis(50);

/// One directory's latest listing, by id, and the body lengths known of what it lists.
struct Listed<T> {
    by_id: HashMap<MessageId, T>,
    made: Instant,
    sizes: HashMap<MessageId, u64>,
}

impl<T> Listed<T> {
    /// A listing of `names`, keeping the sizes `before` knew of the ids still listed.
    fn new(names: Vec<T>, id: impl Fn(&T) -> &MessageId, before: Option<Listed<T>>) -> Listed<T> {
        let by_id: HashMap<MessageId, T> = names.into_iter().map(|n| (id(&n).clone(), n)).collect();
        let sizes = before
            .map(|b| b.sizes)
            .unwrap_or_default()
            .into_iter()
            .filter(|(id, _)| by_id.contains_key(id))
            .collect();
        Listed {
            by_id,
            made: Instant::now(),
            sizes,
        }
    }
}

/// The latest listings of every queue's `messages/` and `work/`.
#[derive(Default)]
pub struct EntryIndex {
    waiting: Mutex<HashMap<String, Listed<WaitingName>>>,
    in_flight: Mutex<HashMap<String, Listed<WorkName>>>,
    /// Listings of a queue made for `messages/` or `work/` (tests count them).
    listings: AtomicU64,
}

impl EntryIndex {
    /// Keeps a fresh listing of `queue`'s waiting messages.
    pub fn record_waiting(&self, queue: &str, names: &[WaitingName]) {
        self.listings.fetch_add(1, Ordering::Relaxed);
        let mut lists = self.waiting.lock_recovering();
        let before = lists.remove(queue);
        let listed = Listed::new(names.to_vec(), |w: &WaitingName| &w.id, before);
        lists.insert(queue.to_string(), listed);
    }

    /// Keeps a fresh listing of `queue`'s in-flight messages.
    pub fn record_in_flight(&self, queue: &str, names: &[WorkName]) {
        self.listings.fetch_add(1, Ordering::Relaxed);
        let mut lists = self.in_flight.lock_recovering();
        let before = lists.remove(queue);
        let listed = Listed::new(names.to_vec(), |w: &WorkName| &w.waiting.id, before);
        lists.insert(queue.to_string(), listed);
    }

    /// The body length known for the listed entry `id` of `dir` in `queue`.
    fn size(&self, dir: DirKind, queue: &str, id: &MessageId) -> Option<u64> {
        match dir {
            DirKind::Messages => self
                .waiting
                .lock_recovering()
                .get(queue)?
                .sizes
                .get(id)
                .copied(),
            DirKind::Work => self
                .in_flight
                .lock_recovering()
                .get(queue)?
                .sizes
                .get(id)
                .copied(),
        }
    }

    /// Keeps the body length of a listed entry (one not listed is not kept).
    fn record_size(&self, dir: DirKind, queue: &str, id: &MessageId, size: u64) {
        fn keep<T>(lists: &mut HashMap<String, Listed<T>>, queue: &str, id: &MessageId, size: u64) {
            if let Some(l) = lists.get_mut(queue)
                && l.by_id.contains_key(id)
            {
                l.sizes.insert(id.clone(), size);
            }
        }
        match dir {
            DirKind::Messages => keep(&mut self.waiting.lock_recovering(), queue, id, size),
            DirKind::Work => keep(&mut self.in_flight.lock_recovering(), queue, id, size),
        }
    }

    /// How many listings were made for `messages/` and `work/` so far.
    pub fn listings(&self) -> u64 {
        self.listings.load(Ordering::Relaxed)
    }

    fn waiting(&self, queue: &str, id: &MessageId) -> (Option<WaitingName>, bool) {
        let lists = self.waiting.lock_recovering();
        match lists.get(queue) {
            Some(l) => (l.by_id.get(id).cloned(), l.made.elapsed() < RELIST_AFTER),
            None => (None, false),
        }
    }

    fn in_flight(&self, queue: &str, id: &MessageId) -> (Option<WorkName>, bool) {
        let lists = self.in_flight.lock_recovering();
        match lists.get(queue) {
            Some(l) => (l.by_id.get(id).cloned(), l.made.elapsed() < RELIST_AFTER),
            None => (None, false),
        }
    }

    /// Notes the new name of an in-flight message (after its lease was extended).
    pub fn renamed_in_flight(&self, queue: &str, name: WorkName) {
        if let Some(l) = self.in_flight.lock_recovering().get_mut(queue) {
            l.by_id.insert(name.waiting.id.clone(), name);
        }
    }

    /// When the in-flight message `id` of `queue` expires, as far as the latest listing knows.
    pub fn expiry(&self, queue: &str, id: &str) -> Option<SystemTime> {
        let id = MessageId::parse(id)?;
        let (name, _) = self.in_flight(queue, &id);
        name.map(|w| UNIX_EPOCH + Duration::from_secs(w.expiry))
    }
}

impl QueueFs {
    /// The file name of the waiting message `id` of `node`'s queue, if it is waiting now.
    pub(super) fn find_waiting(
        &self,
        op: &'static str,
        node: &Node,
        id: &str,
    ) -> Result<Option<WaitingName>> {
        let Some(id) = MessageId::parse(id) else {
            return Ok(None);
        };
        let q = node.queue().unwrap_or_default();
        let queue = self.queue(op, node)?;
        let (found, fresh) = self.entries.waiting(q, &id);
        if let Some(name) = found {
            let on_disk = queue.dir().join(name.to_string()).symlink_metadata();
            // Consumed since: its waiting name does not change, so no listing would find it.
            return Ok(on_disk.is_ok().then_some(name));
        }
        if fresh {
            return Ok(None);
        }
        let names = queue.waiting().map_err(|e| err(op, node, e))?;
        self.entries.record_waiting(q, &names);
        Ok(self.entries.waiting(q, &id).0)
    }

    /// The file name of the in-flight message `id` of `node`'s queue, if it is in flight now.
    pub(super) fn find_in_flight(
        &self,
        op: &'static str,
        node: &Node,
        id: &str,
    ) -> Result<Option<WorkName>> {
        let Some(id) = MessageId::parse(id) else {
            return Ok(None);
        };
        let q = node.queue().unwrap_or_default();
        let queue = self.queue(op, node)?;
        let (found, fresh) = self.entries.in_flight(q, &id);
        if let Some(name) = &found {
            let path = queue.dir().join("work").join(name.to_string());
            if path.symlink_metadata().is_ok() {
                return Ok(found);
            }
        }
        if fresh {
            return Ok(None);
        }
        // Not listed, or renamed since (a lease extended elsewhere): list again.
        let names = queue.in_flight().map_err(|e| err(op, node, e))?;
        self.entries.record_in_flight(q, &names);
        Ok(self.entries.in_flight(q, &id).0)
    }

    /// The length of the body the message entry `node` shows: known from an earlier read, or
    /// read from its file (usually a few hundred bytes, in the page cache of whoever listed it)
    /// by the name its listing gave. 0 when it cannot be read (gone, or not readable by the
    /// caller), as opening it then fails the same way.
    pub(super) fn body_size(&self, node: &Node) -> u64 {
        const OP: &str = "getattr";
        let Node::Entry(q, dir, id) = node else {
            return 0;
        };
        let Some(mid) = MessageId::parse(id) else {
            return 0;
        };
        if let Some(size) = self.entries.size(*dir, q, &mid) {
            return size;
        }
        let Ok(queue) = self.queue(OP, node) else {
            return 0;
        };
        // By the listed name first (no stat); a name gone stale is looked for again.
        let msg = match dir {
            DirKind::Messages => {
                let listed = self.entries.waiting(q, &mid).0;
                match listed.map(|w| queue.read_waiting(&w)) {
                    Some(Ok(Some(m))) => Some(m),
                    _ => self
                        .find_waiting(OP, node, id)
                        .ok()
                        .flatten()
                        .and_then(|w| queue.read_waiting(&w).ok().flatten()),
                }
            }
            DirKind::Work => {
                let listed = self.entries.in_flight(q, &mid).0;
                match listed.map(|w| queue.read_in_flight(&w)) {
                    Some(Ok(Some(m))) => Some(m),
                    _ => self
                        .find_in_flight(OP, node, id)
                        .ok()
                        .flatten()
                        .and_then(|w| queue.read_in_flight(&w).ok().flatten()),
                }
            }
        };
        let size = match msg {
            Some(m) => match &m.message {
                serde_json::Value::String(s) => s.len() as u64,
                _ => m.body_text().len() as u64,
            },
            _ => return 0,
        };
        self.entries.record_size(*dir, q, &mid, size);
        size
    }

    /// Listings made for `messages/` and `work/` since the start (a lookup of an entry that
    /// made one each would show here).
    pub fn entry_listings(&self) -> u64 {
        self.entries.listings()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FsOptions, ROOT_INO};
    use super::*;
    use crate::engine::{Broker, PublishOptions};

    /// Looks up and stats every entry of `dir` (in queue `q`) as `ls -l` does; returns the names.
    fn ls_l(fs: &QueueFs, q: u64, dir: &str) -> Vec<String> {
        let dir = fs.lookup(q, dir).unwrap().ino;
        let fh = fs.opendir(dir).unwrap();
        let entries = super::super::tests::read_all(fs, fh, 2); // past "." and ".."
        fs.releasedir(fh);
        entries
            .into_iter()
            .map(|(_, e)| {
                let attr = fs.lookup(dir, &e.name).unwrap();
                assert_eq!(fs.getattr(attr.ino).unwrap(), attr);
                e.name
            })
            .collect()
    }

    #[test]
    fn ls_l_of_a_deep_queue_lists_it_once_not_once_per_entry() {
        const WAITING: usize = 20_000;
        const IN_FLIGHT: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path()).unwrap();
        broker.create_queue("q").unwrap();
        let queue = broker.queue("q").unwrap();
        for i in 0..WAITING + IN_FLIGHT {
            queue
                .publish(serde_json::json!(i), &PublishOptions::default())
                .unwrap();
        }
        let claimed = queue.consume(IN_FLIGHT, &Default::default()).unwrap().len();
        assert_eq!(claimed, IN_FLIGHT);

        let fs = QueueFs::new(Broker::open(dir.path()).unwrap(), FsOptions::default());
        let q = fs.lookup(ROOT_INO, "q").unwrap().ino;
        assert_eq!(ls_l(&fs, q, "messages").len(), WAITING);
        let work = ls_l(&fs, q, "work");
        assert_eq!(work.len(), IN_FLIGHT);
        // One listing per directory, not one per entry looked up.
        assert_eq!(fs.entry_listings(), 2);

        // touch work/<id> extends the lease, and the file's time shows the new expiry.
        let work_ino = fs.lookup(q, "work").unwrap().ino;
        let entry = fs.lookup(work_ino, &work[0]).unwrap();
        let before = queue.in_flight().unwrap();
        let old = before.iter().find(|w| w.waiting.id == work[0]).unwrap();
        assert_eq!(entry.time, UNIX_EPOCH + Duration::from_secs(old.expiry));
        queue
            .write_config_text(b"message_timeout: 100000\n")
            .unwrap();
        let touched = fs
            .setattr(
                entry.ino,
                None,
                &super::super::SetAttr {
                    times: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let renewed = queue.in_flight().unwrap();
        let new = renewed.iter().find(|w| w.waiting.id == work[0]).unwrap();
        assert!(new.expiry > old.expiry);
        assert_eq!(touched.time, UNIX_EPOCH + Duration::from_secs(new.expiry));
        assert_eq!(fs.getattr(entry.ino).unwrap().time, touched.time);
        // rm of an entry acks it without a search of work/.
        fs.unlink(work_ino, &work[1]).unwrap();
        assert_eq!(queue.in_flight().unwrap().len(), IN_FLIGHT - 1);
        assert_eq!(fs.entry_listings(), 2);
    }
}
