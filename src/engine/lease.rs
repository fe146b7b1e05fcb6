//! Leases as a long-running consumer (the `ddmq work` runner) handles them: requeueing what
//! expired without waiting for the once-a-minute housekeeping (a lease is renewed with
//! [`Queue::touch`]). Built from the calls of [`Queue`] only, so every state change is still one of
//! the protocol's atomic calls.

use super::Result;
use super::files::for_each_entry;
use super::names::{TakeKind, TakeName, WorkName};
use super::queue::{CleanReport, Queue};

impl Queue {
    /// True when some in-flight message's lease has run out (a cheap listing of `work/`, no
    /// writes): what a waiting consumer looks at before it calls [`Queue::requeue_expired`].
    pub fn has_expired_leases(&self) -> Result<bool> {
        self.refresh_clock()?;
        let now = self.fs_now_secs();
        let mut expired = false;
        // Leases under `work/` names, and held ones (`.held-` names carry their end too).
        for_each_entry(&self.work, |name| {
            expired |= match WorkName::parse_bytes(name) {
                Some(w) => w.expiry < now,
                None => std::str::from_utf8(name)
                    .ok()
                    .and_then(TakeName::parse)
                    .is_some_and(|t| t.kind == TakeKind::Held && t.time < now),
            };
        })
        .map_err(|e| self.missing_queue_or("list", &self.work, e))?;
        Ok(expired)
    }

    /// Requeues (or drops, or dead-letters) every in-flight message whose lease ran out, now,
    /// whatever the once-a-minute throttle says: a consumer about to decide the queue is empty
    /// first takes back what dead consumers held. Only runs housekeeping when something expired,
    /// so idle consumers do not rewrite the queue's settings file on every look.
    pub fn requeue_expired(&self) -> Result<CleanReport> {
        if self.has_expired_leases()? {
            self.clean()
        } else {
            Ok(CleanReport::default())
        }
    }
}

impl Queue {
    /// Seconds left on the lease of the in-flight message `w`, by the filesystem's clock (which
    /// its expiry is written in): what a runner schedules its renewals by.
    pub fn lease_left_secs(&self, w: &super::WorkName) -> u64 {
        w.expiry.saturating_sub(self.fs_now_secs())
    }

    /// [`Queue::lease_left_secs`] of a message in flight, held (its name carries the lease's
    /// end too) or leased.
    pub fn in_flight_left_secs(&self, m: &super::InFlight) -> u64 {
        m.expiry().saturating_sub(self.fs_now_secs())
    }
}
