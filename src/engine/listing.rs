//! The sorted in-memory listing of a queue's waiting messages that consume works from, and when
//! to list the directory again (see "Cost" in the protocol spec).

use super::error::{Error, Result};
use super::files::{for_each_entry, retry_stale};
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

/// How long a directory must keep one signature before a listing made under it is trusted to
/// hold every entry until the signature changes. Two things can hide a change from the
/// signature: mtimes kept to the second (MooseFS: a change in the same second as the listing
/// leaves it as it was) and a client that caches directory attributes (GlusterFS md-cache, 1 s).
/// Until then a consumer lists again (at the pace above) even when the signature looks the same.
pub(super) const SIGNATURE_SETTLE: Duration = Duration::from_secs(2);

/// Claims won in a row after which contention eases by one.
const WINS_TO_EASE: u32 = 16;

/// The lane of a name: a mix of its queue number (consecutive publishes get unrelated lanes).
fn lane_of(name: &WaitingName) -> u64 {
    let mut z = name.queue_number.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What identifies a directory's content cheaply: it changes when entries are added or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DirSignature {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    ino: u64,
}

impl DirSignature {
    pub(super) fn of(dir: &Path) -> io::Result<DirSignature> {
        let m = retry_stale(|| std::fs::metadata(dir))?;
        Ok(DirSignature {
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            size: m.size(),
            ino: m.ino(),
        })
    }
}

/// The sorted listing of waiting messages that consume works from.
///
/// It never records a signature it did not list under: after our own publish or claim the
/// directory's signature no longer matches, and the next candidate past [`MIN_RELIST_INTERVAL`]
/// lists again, so what other clients changed in between is seen too.
#[derive(Default)]
pub(super) struct Listing {
    pending: BTreeSet<WaitingName>,
    listed_at: Option<Instant>,
    cost: Duration,
    /// The directory's signature taken just before the last listing.
    known: Option<DirSignature>,
    /// When `known` was first seen, by this or an earlier listing.
    known_since: Option<Instant>,
    /// Claims lost since the last listing: a listing that other clients took from is refreshed.
    lost_since_listing: u32,
    /// Unreadable young files, not to be retried before the instant.
    deferred: HashMap<String, Instant>,
    /// Recent claims lost to other consumers (eases after a run of wins). From two on, this
    /// consumer takes from a lane of its own (see [`Listing::next_candidate`]) within a window
    /// of the head's run of one priority, so that consumers working from the same listing stop
    /// colliding on every message; never past a more urgent message.
    contention: u32,
    /// Claims won in a row since the last one lost.
    wins_in_row: u32,
    /// This consumer's lane, drawn again after a claim lost in it (another consumer shares it).
    lane: u32,
    /// Whether the last candidate was drawn from this consumer's lane.
    picked_in_lane: bool,
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

    /// This process put `name` into the directory (published, requeued, gave back). The
    /// signature is left as listed: the directory now differs from it, so the next refresh due
    /// also sees what others did meanwhile.
    pub(super) fn add_own(&mut self, name: &WaitingName) {
        if self.listed_at.is_some() {
            self.pending.insert(name.clone());
        }
    }

    /// Whether the last listing can stand for the directory as it is now without listing again.
    fn still_current(&self, dir: &Path) -> bool {
        let (Some(known), Some(since), Some(at)) = (self.known, self.known_since, self.listed_at)
        else {
            return false;
        };
        // Listed under a signature that had not settled yet: a change may hide behind it.
        if at.saturating_duration_since(since) < SIGNATURE_SETTLE {
            return false;
        }
        self.lost_since_listing == 0 && DirSignature::of(dir).ok() == Some(known)
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
        if self.known != Some(signature) || self.known_since.is_none() {
            self.known_since = Some(started);
        }
        self.known = Some(signature);
        self.listed_at = Some(started);
        self.lost_since_listing = 0;
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
                        && !self.still_current(dir))
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
        let Some(head) = self.pending.first() else {
            return Ok(None);
        };
        if self.contention < 2 || self.pending.len() < 2 {
            return Ok(self.pending.pop_first());
        }
        // Lanes: each name belongs to one of `lanes` by a hash of its queue number, and each
        // contended consumer keeps to its own lane, drawing another when it loses a claim there.
        // Consumers on several hosts so spread over the head instead of all trying its first
        // names (each lost claim costs the file server lookups). Within the window the names of
        // other lanes are skipped: most of them were taken by their lane's consumers already.
        let priority = head.priority;
        if self.lane == 0 {
            self.lane = (self.next_random() >> 32) as u32 | 1;
        }
        let lanes = 2u64 << ((self.contention - 2) / 2).min(3);
        // About `4 << n` names of this lane: the other lanes' names before them are mostly
        // taken already, but this listing still holds them.
        let window = (4usize << (self.contention - 2).min(5)) * lanes as usize;
        let mine = u64::from(self.lane) % lanes;
        let mut run = 0;
        let mut in_lane = None;
        for (i, w) in self
            .pending
            .iter()
            .take(window)
            .take_while(|w| w.priority == priority)
            .enumerate()
        {
            run = i + 1;
            if in_lane.is_none() && lane_of(w) % lanes == mine {
                in_lane = Some(i);
            }
        }
        self.picked_in_lane = in_lane.is_some();
        let pick = in_lane.unwrap_or_else(|| (self.next_random() % run as u64) as usize);
        let chosen = self.pending.iter().nth(pick).cloned();
        if let Some(c) = &chosen {
            self.pending.remove(c);
        }
        Ok(chosen)
    }

    /// The directory's signature taken before the last listing.
    pub(super) fn listed_signature(&self) -> Option<DirSignature> {
        self.known
    }

    /// Whether claims were lost to other consumers lately.
    pub(super) fn is_contended(&self) -> bool {
        self.contention > 0
    }

    /// This process claimed `_name`. Contention eases by one after [`WINS_TO_EASE`] in a row,
    /// so that lanes that work are kept.
    pub(super) fn claim_won(&mut self, _name: &WaitingName) {
        self.wins_in_row += 1;
        if self.wins_in_row >= WINS_TO_EASE {
            self.contention = self.contention.saturating_sub(1);
            self.wins_in_row = 0;
        }
    }

    /// Another consumer claimed `_name` first.
    pub(super) fn claim_lost(&mut self, _name: &WaitingName) {
        self.contention = (self.contention + 1).min(8);
        self.wins_in_row = 0;
        if self.picked_in_lane {
            // Someone else takes from this lane: try another.
            self.lane = (self.next_random() >> 32) as u32 | 1;
        }
        self.lost_since_listing = self.lost_since_listing.saturating_add(1);
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
