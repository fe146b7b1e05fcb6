//! Looking at a queue without taking anything (listings, reads, status) and deleting from it
//! (one message, every message, the queue itself).

use super::error::{Error, Result, io_err};
use super::files::{for_each_entry, is_not_found, list_names, read_message_file};
use super::listing::{DirSignature, Listing, SIGNATURE_SETTLE};
use super::message::Message;
use super::names::{
    ReservedName, WaitingName, WorkName, in_flight_waiting_bytes, original_sees_as_message,
    temp_name,
};
use super::queue::Queue;
use super::survey::LongestWaiting;
use crate::locking::LockRecovering;
use std::path::Path;
use std::time::{Instant, SystemTime};

/// Counts for `view` and the mount's status file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStatus {
    pub waiting: usize,
    pub in_flight: usize,
    /// Seconds since the oldest waiting message was published (by its file's mtime).
    pub oldest_waiting_age: Option<u64>,
}

/// The counts of a status and the signatures of the queue's two directories taken before they
/// were counted. While neither directory has changed since, a status is answered from them with
/// two `stat`s instead of two listings (a status of 100,000 waiting took 60 ms of listing, and
/// more while `ls -l` of the same queue ran on the mount). Reused only when they were counted
/// at least [`SIGNATURE_SETTLE`] after this process first saw those signatures, by its own
/// monotonic clock: a change after that moves the signature even where mtimes are kept to the
/// second, and no two hosts' clocks are compared. What stays hidden is what the client's
/// attribute cache hides from `stat` itself (GlusterFS md-cache: 1 s; NFS: `actimeo`).
pub(super) struct StatusCounts {
    signatures: (DirSignature, DirSignature),
    /// When this process first saw `signatures`, and when it counted under them.
    signatures_since: Instant,
    counted_at: Instant,
    waiting: usize,
    in_flight: usize,
    longest: LongestWaiting,
}

impl Queue {
    // ---------------------------------------------------------------- inspection

    /// Waiting messages in delivery order (a fresh listing).
    pub fn waiting(&self) -> Result<Vec<WaitingName>> {
        let mut names = list_names(&self.dir, WaitingName::parse_bytes)
            .map_err(|e| self.missing_queue_or("list", &self.dir, e))?;
        names.sort();
        Ok(names)
    }

    /// In-flight messages, soonest expiry first.
    pub fn in_flight(&self) -> Result<Vec<WorkName>> {
        let mut names = list_names(&self.work, WorkName::parse_bytes)
            .map_err(|e| self.missing_queue_or("list", &self.work, e))?;
        names.sort_by(|a, b| (a.expiry, &a.waiting).cmp(&(b.expiry, &b.waiting)));
        Ok(names)
    }

    /// Reads a waiting message without taking it.
    pub fn read_waiting(&self, name: &WaitingName) -> Result<Option<Message>> {
        self.read_record(&self.dir.join(name.to_string()))
    }

    /// Reads an in-flight message without changing it.
    pub fn read_in_flight(&self, name: &WorkName) -> Result<Option<Message>> {
        self.read_record(&self.work.join(name.to_string()))
    }

    fn read_record(&self, path: &Path) -> Result<Option<Message>> {
        match read_message_file(path) {
            Ok(read) => Message::from_json(&read.bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io_err("read", path, e)),
        }
    }

    /// Counts of waiting and in-flight messages, and the oldest waiting message's age.
    pub fn status(&self, with_age: bool) -> Result<QueueStatus> {
        let signatures = (
            DirSignature::of(&self.dir).map_err(|e| self.missing_queue_or("stat", &self.dir, e))?,
            DirSignature::of(&self.work)
                .map_err(|e| self.missing_queue_or("stat", &self.work, e))?,
        );
        let cached = self.counted.lock_recovering().take();
        let counts = match cached {
            Some(counts)
                if counts.signatures == signatures
                    && counts.counted_at.duration_since(counts.signatures_since)
                        >= SIGNATURE_SETTLE =>
            {
                counts
            }
            Some(counts) if counts.signatures == signatures => {
                self.count(signatures, counts.signatures_since)?
            }
            _ => self.count(signatures, Instant::now())?,
        };
        let oldest_waiting_age = if with_age {
            self.written_at(&counts.longest).map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            })
        } else {
            None
        };
        let status = QueueStatus {
            waiting: counts.waiting,
            in_flight: counts.in_flight,
            oldest_waiting_age,
        };
        *self.counted.lock_recovering() = Some(counts);
        Ok(status)
    }

    /// Counts both directories in one pass each: no list of names, no sort.
    fn count(
        &self,
        signatures: (DirSignature, DirSignature),
        signatures_since: Instant,
    ) -> Result<StatusCounts> {
        let mut counts = StatusCounts {
            signatures,
            signatures_since,
            counted_at: Instant::now(),
            waiting: 0,
            in_flight: 0,
            longest: LongestWaiting::default(),
        };
        for_each_entry(&self.dir, |name| {
            if let Some(w) = WaitingName::parse_bytes(name) {
                counts.waiting += 1;
                counts.longest.offer(&w);
            }
        })
        .map_err(|e| self.missing_queue_or("list", &self.dir, e))?;
        for_each_entry(&self.work, |name| {
            counts.in_flight += in_flight_waiting_bytes(name).is_some() as usize;
        })
        .map_err(|e| self.missing_queue_or("list", &self.work, e))?;
        Ok(counts)
    }

    /// Deletes one message, waiting or in flight, by its file name (del_msg).
    pub fn delete_message(&self, file_name: &str) -> Result<bool> {
        let path = if WorkName::parse(file_name).is_some() {
            self.work.join(file_name)
        } else if WaitingName::parse(file_name).is_some() {
            self.dir.join(file_name)
        } else {
            return Err(Error::InvalidMessageName(file_name.to_string()));
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(io_err("delete", &path, e)),
        }
    }

    /// Deletes every message, waiting and in flight. Returns (waiting, in flight) removed.
    pub fn purge(&self) -> Result<(usize, usize)> {
        let remove_all = |dir: &Path| -> Result<usize> {
            let mut n = 0;
            let entries =
                std::fs::read_dir(dir).map_err(|e| self.missing_queue_or("list", dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if original_sees_as_message(name)
                    && entry.file_type().map(|t| !t.is_dir()).unwrap_or(false)
                {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => n += 1,
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(io_err("delete", &entry.path(), e)),
                    }
                }
            }
            Ok(n)
        };
        let waiting = remove_all(&self.dir)?;
        let work = remove_all(&self.work)?;
        let mut listing = self.listing.lock_recovering();
        *listing = Listing::default();
        Ok((waiting, work))
    }

    /// Deletes the queue directory. Anything ddmq did not create makes it refuse first (0.9.10 found
    /// them only after deleting half the queue, B16).
    pub(crate) fn delete(&self, only_if_empty: bool) -> Result<()> {
        let ours = |name: &str, in_work: bool| {
            original_sees_as_message(name)
                || match ReservedName::parse(name) {
                    Some(ReservedName::Temp) => true,
                    Some(ReservedName::Claim { .. } | ReservedName::Take(_)) => in_work,
                    Some(_) => !in_work,
                    None => false,
                }
        };
        let mut foreign = Vec::new();
        let mut messages = 0usize;
        for (dir, in_work) in [(&self.dir, false), (&self.work, true)] {
            let entries =
                std::fs::read_dir(dir).map_err(|e| self.missing_queue_or("list", dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !ours(&name, in_work) {
                    foreign.push(name);
                } else if original_sees_as_message(&name)
                    || matches!(
                        ReservedName::parse(&name),
                        Some(ReservedName::Claim { .. } | ReservedName::Take(_))
                    )
                {
                    messages += 1;
                }
            }
        }
        if !foreign.is_empty() {
            foreign.sort();
            return Err(Error::ForeignFiles {
                path: self.dir.clone(),
                names: foreign.join(", "),
            });
        }
        if only_if_empty && messages > 0 {
            return Err(Error::QueueNotEmpty(self.dir.clone()));
        }
        // Rename away first so no client sees a half-deleted queue, then remove at leisure.
        let doomed = self.root.join(temp_name("deleted"));
        std::fs::rename(&self.dir, &doomed)
            .map_err(|e| self.missing_queue_or("delete", &self.dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| io_err("delete", &doomed, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Broker;

    /// Counts are reused only once they were counted a settling time after their signatures were
    /// first seen; any change of a signature makes the next status count again.
    #[test]
    fn counts_are_reused_only_under_a_settled_signature() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path()).unwrap();
        broker.create_queue("q").unwrap();
        let q = broker.queue("q").unwrap();
        q.publish(serde_json::Value::from("m"), &Default::default())
            .unwrap();
        assert_eq!(q.status(false).unwrap().waiting, 1);
        // Mark the kept counts: a status that reuses them answers the mark.
        let mark = |n| q.counted.lock_recovering().as_mut().expect("kept").waiting = n;
        mark(7);
        assert_eq!(
            q.status(false).unwrap().waiting,
            1,
            "seen just now: counted"
        );
        // Seen long enough ago: the count made now stands until a signature changes.
        q.counted
            .lock_recovering()
            .as_mut()
            .unwrap()
            .signatures_since -= SIGNATURE_SETTLE;
        assert_eq!(q.status(false).unwrap().waiting, 1);
        mark(7);
        assert_eq!(q.status(false).unwrap().waiting, 7, "reused, not counted");
        q.publish(serde_json::Value::from("m2"), &Default::default())
            .unwrap();
        assert_eq!(q.status(false).unwrap().waiting, 2, "changed: counted");
    }
}
