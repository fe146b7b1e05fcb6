//! The sorted in-memory listing of a queue's waiting messages that consume works from, and when
//! to list the directory again (see "Cost" in the protocol spec).

use super::error::{Error, Result};
use super::files::for_each_entry;
use super::names::WaitingName;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A listing that still holds candidates is not refreshed more often than this (nor more often
/// than four times what it costs): the bound on how late a long-lived consumer sees a more
/// urgent message published by another client. Concurrent consumers change the directory all
/// the time; re-listing on every change would spend their time listing.
const MIN_RELIST_INTERVAL: Duration = Duration::from_millis(50);

/// What identifies a directory's content cheaply: it changes when entries are added or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DirSignature {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    ino: u64,
}

impl DirSignature {
    /// True when the directory's entries last changed (its mtime) more than a few seconds before
    /// `now`: any later change then gives it a later mtime, even on a filesystem that keeps
    /// mtimes to the second.
    pub(super) fn settled(&self, now: SystemTime) -> bool {
        const SETTLE_NS: i128 = 3_000_000_000;
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        now_ns - self.mtime_ns > SETTLE_NS
    }

    pub(super) fn of(dir: &Path) -> io::Result<DirSignature> {
        let m = std::fs::metadata(dir)?;
        Ok(DirSignature {
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            size: m.size(),
            ino: m.ino(),
        })
    }
}

/// The sorted listing of waiting messages that consume works from.
#[derive(Default)]
pub(super) struct Listing {
    pending: BTreeSet<WaitingName>,
    listed_at: Option<Instant>,
    cost: Duration,
    /// The directory's signature when we last knew its whole content.
    known: Option<DirSignature>,
    /// Unreadable young files, not to be retried before the instant.
    deferred: HashMap<String, Instant>,
    /// Recent claims lost to other consumers (decays on success). While it is above zero,
    /// candidates are drawn at random from the head of the listing instead of taking the head
    /// itself, so consumers working from the same listing stop colliding on every message.
    contention: u32,
    /// State of a small xorshift generator for that draw.
    rng: u64,
}

impl Listing {
    fn next_random(&mut self) -> u64 {
        if self.rng == 0 {
            self.rng = (std::process::id() as u64) << 32
                | SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() as u64)
                    .unwrap_or(1)
                | 1;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// After this process changed `dir` itself: only when we knew the whole content before our
    /// change do we know it after.
    pub(super) fn note_own_change(&mut self, dir: &Path) {
        if self.known.is_some() {
            self.known = DirSignature::of(dir).ok();
        }
    }

    /// This process put `name` into `dir` (published, requeued, gave back).
    pub(super) fn add_own(&mut self, name: &WaitingName, dir: &Path) {
        if self.listed_at.is_some() {
            self.pending.insert(name.clone());
            self.note_own_change(dir);
        }
    }

    /// Lists `dir` again. `fail` words an error of the operation it names ("stat", "list").
    fn refresh(
        &mut self,
        dir: &Path,
        fail: &dyn Fn(&'static str, io::Error) -> Error,
    ) -> Result<()> {
        let started = Instant::now();
        let signature = DirSignature::of(dir).map_err(|e| fail("stat", e))?;
        let now = Instant::now();
        self.deferred.retain(|_, until| *until > now);
        let mut names = Vec::new();
        for_each_entry(dir, |name| {
            if let Some(w) = WaitingName::parse_bytes(name) {
                names.push(w);
            }
        })
        .map_err(|e| fail("list", e))?;
        if !self.deferred.is_empty() {
            names.retain(|w| !self.deferred.contains_key(&w.to_string()));
        }
        names.sort_unstable();
        // From sorted input the set is built in bulk, not entry by entry.
        self.pending = names.into_iter().collect();
        self.known = Some(signature);
        self.listed_at = Some(started);
        self.cost = started.elapsed();
        Ok(())
    }

    /// The next candidate in delivery order, listing `dir` again when needed. `fresh_listing`
    /// says whether this call listed already: then an exhausted listing means empty.
    pub(super) fn next_candidate(
        &mut self,
        dir: &Path,
        fresh_listing: &mut bool,
        fail: &dyn Fn(&'static str, io::Error) -> Error,
    ) -> Result<Option<WaitingName>> {
        let stale = match self.listed_at {
            None => true,
            Some(at) => {
                self.pending.is_empty()
                    || (at.elapsed() >= (self.cost * 4).max(MIN_RELIST_INTERVAL)
                        && self.known != DirSignature::of(dir).ok())
            }
        };
        if stale {
            if self.pending.is_empty() && *fresh_listing {
                // We listed during this call already and took or lost everything: empty.
                return Ok(None);
            }
            self.refresh(dir, fail)?;
            *fresh_listing = true;
        }
        if self.contention == 0 || self.pending.len() < 2 {
            return Ok(self.pending.pop_first());
        }
        let window = self.pending.len().min(4usize << self.contention.min(5));
        let pick = (self.next_random() % window as u64) as usize;
        let chosen = self.pending.iter().nth(pick).cloned();
        if let Some(c) = &chosen {
            self.pending.remove(c);
        }
        Ok(chosen)
    }

    /// Whether claims were lost to other consumers lately.
    pub(super) fn is_contended(&self) -> bool {
        self.contention > 0
    }

    /// This process claimed a candidate from `dir`.
    pub(super) fn claim_won(&mut self, dir: &Path) {
        self.contention /= 2;
        self.note_own_change(dir);
    }

    /// Another consumer claimed the candidate first.
    pub(super) fn claim_lost(&mut self) {
        self.contention = (self.contention + 1).min(8);
    }

    /// A young unreadable file (perhaps still being written in place) is not retried until `until`.
    pub(super) fn defer(&mut self, name: &WaitingName, until: Instant) {
        self.deferred.insert(name.to_string(), until);
    }

    /// Whether some deferred file may be retried now.
    pub(super) fn deferral_ended(&self) -> bool {
        let now = Instant::now();
        self.deferred.values().any(|until| *until <= now)
    }
}
