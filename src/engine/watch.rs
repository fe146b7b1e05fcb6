//! Watching a queue for new messages without listing it: what a waiting consumer (`consume
//! --wait`, the mount's `wait`, an idle `ddmq work`) does between looks. One `stat` of the queue
//! directory per poll; a look (a listing) only when its signature changed, or once more when the
//! signature has stood for [`SIGNATURE_SETTLE`] (a change in the same second as the last look can
//! leave it as it was); and the polls slow down to [`IDLE_POLL`] once nothing has changed for
//! [`IDLE_AFTER`], so that idle consumers cost the file server little. Change events do not
//! cross hosts, so this is polling by design.

use super::listing::{DirSignature, SIGNATURE_SETTLE};
use super::queue::Queue;
use crate::locking::LockRecovering;
use std::time::{Duration, Instant};

/// A waiting consumer whose queue has not changed for this long polls at [`IDLE_POLL`] at most.
pub const IDLE_AFTER: Duration = Duration::from_secs(10);
/// The slowest poll of an idle waiting consumer: another host's message is still seen within
/// this plus the client's attribute cache time.
pub const IDLE_POLL: Duration = Duration::from_millis(500);

/// What a waiting consumer remembers of the queue directory between looks.
#[derive(Debug)]
pub struct DirWatch {
    /// The signature the last look listed under, and when it was first seen.
    seen: Option<DirSignature>,
    seen_since: Instant,
    /// Whether a look was made after `seen` had stood for the settling time.
    settled_look: bool,
}

impl Default for DirWatch {
    fn default() -> Self {
        DirWatch {
            seen: None,
            seen_since: Instant::now(),
            settled_look: false,
        }
    }
}

impl DirWatch {
    /// Records a look that found nothing: the signature its listing was made under.
    pub fn looked(&mut self, queue: &Queue) {
        let listed = queue.listing.lock_recovering().listed_signature();
        let now = Instant::now();
        if listed != self.seen || listed.is_none() {
            self.seen = listed;
            self.seen_since = now;
            self.settled_look = false;
        } else if now.duration_since(self.seen_since) >= SIGNATURE_SETTLE {
            self.settled_look = true;
        }
    }

    /// Whether the queue may hold something the last look did not see (one `stat`). An error
    /// of the stat counts as a reason to look: the look reports it.
    pub fn worth_a_look(&self, queue: &Queue) -> bool {
        let Some(seen) = self.seen else {
            return true;
        };
        match DirSignature::of(queue.dir()) {
            Ok(now) if now == seen => {
                !self.settled_look && self.seen_since.elapsed() >= SIGNATURE_SETTLE
            }
            _ => true,
        }
    }

    /// How long to wait before asking [`DirWatch::worth_a_look`] again, given the caller's poll.
    pub fn pause(&self, poll: Duration) -> Duration {
        if self.idle_for() >= IDLE_AFTER {
            poll.max(IDLE_POLL)
        } else {
            poll
        }
    }

    /// How long the queue directory has kept the signature of the last look.
    pub fn idle_for(&self) -> Duration {
        self.seen_since.elapsed()
    }
}
