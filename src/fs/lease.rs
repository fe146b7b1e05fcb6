//! The leases that open files hold: an open `next`, `wait` or `claim`, or an open `work/<id>`,
//! keeps its message in flight for as long as it is open. The daemon knows the reader is
//! alive, so it renews the lease as `ddmq work` renews its tasks' (a quarter of the lease
//! before each renewal, so that one may come late by most of the lease), and a reader slower
//! than `message_timeout` (a long pipeline, a stopped job) is not redelivered behind its back.
//!
//! A lease can still be lost: the daemon stopped or starved past the lease, and another client
//! requeued the message; or another client settled it. The close of the file then fails (EIO,
//! [`super::FsErrorKind::LeaseLost`]), and `status` says so: never a silent success. What this
//! mount itself settles (an ack or nack written to `ack`/`nack`, an `rm work/<id>`) is marked
//! settled first, so that it is not taken for a loss.
//!
//! `next` and `wait` take their message with one rename ([`Queue::consume_held`]): it stays
//! under its `.held-` name, not in `work/`, until the first renewal gives it its `work/` name
//! after [`HOLD_FOR`] (as `ddmq work` does), so a reader done within a second costs one rename
//! and the unlink of its ack.

use crate::engine::names::MessageId;
use crate::engine::{self, HOLD_FOR, HeldDelivery, InFlight, Queue, WorkName, now_secs};
use crate::locking::LockRecovering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shortest and longest pause between two renewals of one lease.
const MIN_PERIOD: Duration = Duration::from_millis(200);
const MAX_PERIOD: Duration = Duration::from_secs(60);

/// The lease of one open file on its message.
pub(super) struct Lease {
    /// The open file's path in the tree, for messages.
    pub path: String,
    pub queue: String,
    id: MessageId,
    state: Mutex<LeaseState>,
}

struct LeaseState {
    /// Where the message is now: under its held name, or its name in `work/` (each renewal
    /// renames it).
    in_flight: InFlight,
    /// The lease the first renewal of a held message writes (its [`HeldDelivery::timeout`]);
    /// a leased message's renewals read its own timeout.
    held_timeout: u64,
    next_renewal: Instant,
    /// Settled through this mount (acked, nacked, removed): nothing to renew or report.
    settled: bool,
    /// Found gone from `work/` through no request of this mount.
    lost: bool,
}

/// When to renew a lease that ends at `expiry` (epoch seconds): after a quarter of what is left.
fn renewal_after(expiry: u64) -> Instant {
    let left = Duration::from_secs(expiry.saturating_sub(now_secs()));
    Instant::now() + (left / 4).clamp(MIN_PERIOD, MAX_PERIOD)
}

/// When to renew `m` first: a held message after [`HOLD_FOR`] at most.
fn first_renewal(m: &InFlight) -> Instant {
    let due = renewal_after(m.expiry());
    match m {
        InFlight::Held(_) => due.min(Instant::now() + HOLD_FOR),
        InFlight::Leased(_) => due,
    }
}

/// What a renewal found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Renewal {
    /// Renewed: the message's new name in `work/`.
    Renewed(WorkName),
    /// The message is no longer in flight under this lease: lost, reported once.
    Lost,
    /// Nothing to do (settled, lost before, or not due).
    Idle,
}

impl Lease {
    /// The lease on a message leased under its `work/` name.
    pub fn new(path: &str, queue: &str, work: WorkName) -> Arc<Lease> {
        Self::in_flight(path, queue, InFlight::Leased(work), 0)
    }

    /// The lease on a message taken by [`Queue::consume_held`].
    pub fn held(path: &str, queue: &str, held: HeldDelivery) -> Arc<Lease> {
        Self::in_flight(path, queue, held.in_flight, held.timeout)
    }

    fn in_flight(path: &str, queue: &str, in_flight: InFlight, held_timeout: u64) -> Arc<Lease> {
        Arc::new(Lease {
            path: path.to_string(),
            queue: queue.to_string(),
            id: in_flight.waiting().id.clone(),
            state: Mutex::new(LeaseState {
                next_renewal: first_renewal(&in_flight),
                in_flight,
                held_timeout,
                settled: false,
                lost: false,
            }),
        })
    }

    pub fn is_lost(&self) -> bool {
        self.state.lock_recovering().lost
    }

    fn is_due(&self, now: Instant) -> bool {
        let s = self.state.lock_recovering();
        !s.settled && !s.lost && now >= s.next_renewal
    }

    /// Extends the lease by the message's timeout from now, if it is due: a held message gets
    /// its `work/` name.
    pub fn renew(&self, queue: &Queue) -> engine::Result<Renewal> {
        let mut s = self.state.lock_recovering();
        if s.settled || s.lost || Instant::now() < s.next_renewal {
            return Ok(Renewal::Idle);
        }
        match queue.renew(&s.in_flight, s.held_timeout) {
            Ok(Some(renewed)) => {
                s.next_renewal = renewal_after(renewed.expiry);
                s.in_flight = InFlight::Leased(renewed.clone());
                Ok(Renewal::Renewed(renewed))
            }
            Ok(None) => {
                s.lost = true;
                Ok(Renewal::Lost)
            }
            Err(e) => {
                // Try again soon: an I/O error is not a loss.
                s.next_renewal = Instant::now() + MIN_PERIOD;
                Err(e)
            }
        }
    }

    /// Whether the message is still in flight under this lease (at a close that leaves it
    /// there); false marks the lease lost. A settled lease is held.
    pub fn check(&self, queue: &Queue) -> engine::Result<bool> {
        let mut s = self.state.lock_recovering();
        if s.settled {
            return Ok(true);
        }
        if s.lost {
            return Ok(false);
        }
        match queue.locate_in_flight(&s.in_flight)? {
            Some(m) => {
                s.in_flight = m;
                Ok(true)
            }
            None => {
                s.lost = true;
                Ok(false)
            }
        }
    }

    /// Settles the message by `settle` (given where it is), which returns whether it found it;
    /// not found marks the lease lost. Renewals wait meanwhile, and stop once it is settled.
    /// A message this mount settled already (through another of its files) is done: true.
    pub fn settle_with(
        &self,
        settle: impl FnOnce(&InFlight) -> engine::Result<bool>,
    ) -> engine::Result<bool> {
        let mut s = self.state.lock_recovering();
        if s.settled {
            return Ok(true);
        }
        if s.lost {
            return Ok(false);
        }
        let found = settle(&s.in_flight)?;
        if found {
            s.settled = true;
        } else {
            s.lost = true;
        }
        Ok(found)
    }

    /// Marks the lease settled; returns false if it was already settled or lost.
    fn mark_settled(&self) -> bool {
        let mut s = self.state.lock_recovering();
        let was_open = !s.settled && !s.lost;
        s.settled = true;
        was_open
    }

    fn unmark_settled(&self) {
        self.state.lock_recovering().settled = false;
    }
}

/// The leases of every open file, by file handle.
#[derive(Default)]
pub(super) struct Leases(Mutex<HashMap<u64, Arc<Lease>>>);

/// Leases marked settled ahead of a settlement through the mount, to unmark if it fails.
pub(super) struct Settling(Vec<Arc<Lease>>);

impl Settling {
    /// The settlement failed or found nothing: the leases are held again.
    pub fn failed(self) {
        for l in self.0 {
            l.unmark_settled();
        }
    }
}

impl Leases {
    pub fn hold(&self, fh: u64, lease: Arc<Lease>) {
        self.0.lock_recovering().insert(fh, lease);
    }

    pub fn release(&self, fh: u64) {
        self.0.lock_recovering().remove(&fh);
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Lease>> {
        self.0.lock_recovering().get(&fh).cloned()
    }

    /// The handles whose lease is due for renewal.
    pub fn due(&self) -> Vec<u64> {
        let now = Instant::now();
        self.0
            .lock_recovering()
            .iter()
            .filter(|(_, l)| l.is_due(now))
            .map(|(fh, _)| *fh)
            .collect()
    }

    /// Marks the leases on message `name_or_id` of `queue` (a bare id or a `work/` file name)
    /// settled, before this mount settles it.
    pub fn settling(&self, queue: &str, name_or_id: &str) -> Settling {
        let id = match WorkName::parse(name_or_id) {
            Some(w) => w.waiting.id.to_string(),
            None => name_or_id.to_string(),
        };
        let id = id.as_str();
        let marked = self
            .0
            .lock_recovering()
            .values()
            .filter(|l| l.queue == queue && l.id == *id)
            .filter(|l| l.mark_settled())
            .cloned()
            .collect();
        Settling(marked)
    }

    /// The message `name` of `queue` was renamed by a renewal through this mount (touch).
    pub fn renamed(&self, queue: &str, name: &WorkName) {
        for l in self.0.lock_recovering().values() {
            if l.queue == queue && l.id == name.waiting.id {
                let mut s = l.state.lock_recovering();
                s.in_flight = InFlight::Leased(name.clone());
                s.next_renewal = renewal_after(name.expiry);
            }
        }
    }
}
