//! A consume that may wait for its first message: the one loop behind `ddmq consume --wait`
//! and the Python module's `consume(wait=…)`.
//!
//! Two promises: housekeeping stays best effort here as on every other path (a full disk that
//! cannot take the new `cleaned` stamp does not stop a consume), and once a message is claimed
//! the call returns it: a failure after that is logged, never returned, since the caller would
//! otherwise drop a message that then sits in `work/` until its lease runs out.

use super::error::Result;
use super::queue::{ConsumeOptions, Delivery, Queue};
use std::time::Duration;

/// Longest wait honoured (a longer one, infinity included, is this): ten years, far enough
/// from what an `Instant` can hold.
pub const LONGEST_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How a consume waits when the queue is empty.
pub struct Wait<'a> {
    /// How long to wait for the first message (clamped to [`LONGEST_WAIT`]).
    pub limit: Duration,
    /// How often the queue directory is looked at meanwhile (one stat).
    pub poll: Duration,
    /// Asked between looks; true ends the wait with nothing claimed (Ctrl-C, shutdown).
    pub give_up: &'a dyn Fn() -> bool,
}

impl<'a> Wait<'a> {
    /// A wait of `seconds` (infinite or huge: [`LONGEST_WAIT`]; negative or NaN: none).
    pub fn new(seconds: f64, poll: Duration, give_up: &'a dyn Fn() -> bool) -> Wait<'a> {
        let limit = match Duration::try_from_secs_f64(seconds) {
            Ok(d) => d.min(LONGEST_WAIT),
            Err(_) if seconds > 0.0 => LONGEST_WAIT,
            Err(_) => Duration::ZERO,
        };
        Wait {
            limit,
            poll,
            give_up,
        }
    }

    /// A wait of `seconds` that nothing interrupts.
    pub fn uninterrupted(seconds: f64, poll: Duration) -> Wait<'static> {
        Wait::new(seconds, poll, &never)
    }
}

fn never() -> bool {
    false
}

impl Queue {
    /// Claims up to `n` messages in delivery order; with `wait`, an empty queue is watched up to
    /// its limit for the first one, and whatever else is there then is taken with it. Empty: the
    /// queue stayed empty (or the wait was given up).
    pub fn consume_waiting(
        &self,
        n: usize,
        opts: &ConsumeOptions,
        wait: Option<&Wait<'_>>,
    ) -> Result<Vec<Delivery>> {
        let got = self.consume(n, opts)?;
        let Some(wait) = wait else { return Ok(got) };
        if !got.is_empty() || n == 0 || wait.limit.is_zero() {
            return Ok(got);
        }
        let limit = wait.limit.min(LONGEST_WAIT);
        let Some(first) = self.consume_wait(limit, wait.poll, wait.give_up)? else {
            return Ok(Vec::new());
        };
        let mut all = vec![first];
        if n > 1 {
            match self.consume(n - 1, &ConsumeOptions { clean: false }) {
                Ok(more) => all.extend(more),
                Err(e) => log::warn!("consume of {} stopped after 1 message: {e}", self.name()),
            }
        }
        Ok(all)
    }
}
