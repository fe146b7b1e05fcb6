//! A queue as a dashboard (`ddmq top`) sees it: the names of its waiting, in-flight and dead
//! messages, from directory listings only (what `view` reads; no message file is opened), plus
//! one `stat` for the age of the longest-waiting message.

use super::Result;
use super::error::io_err;
use super::files::list_names;
use super::names::{WaitingName, in_flight_waiting_bytes};
use super::queue::Queue;
use std::path::Path;
use std::time::SystemTime;

/// One look at a queue.
#[derive(Clone, Debug, Default)]
pub struct Survey {
    /// Waiting messages, in delivery order.
    pub waiting: Vec<WaitingName>,
    /// In-flight messages by their waiting names (without the expiry), sorted the same way.
    pub in_flight: Vec<WaitingName>,
    /// Messages in `dead/`.
    pub dead: usize,
    /// When the waiting message with the lowest queue number (the longest waiting: queue
    /// numbers grow with time) was written, by its file's mtime.
    pub oldest_waiting_since: Option<SystemTime>,
}

impl Queue {
    /// Lists the queue's waiting, in-flight and dead messages.
    pub fn survey(&self) -> Result<Survey> {
        let waiting = self.waiting()?;
        // Held takes too: a task shorter than a second never has a lease name.
        let mut in_flight = list_names(&self.work, in_flight_waiting_bytes)
            .map_err(|e| self.missing_queue_or("list", &self.work, e))?;
        in_flight.sort();
        let dead = self.dead_letters()?.len();
        let mut longest = LongestWaiting::default();
        waiting.iter().for_each(|w| longest.offer(w));
        let oldest_waiting_since = self.written_at(&longest);
        Ok(Survey {
            waiting,
            in_flight,
            dead,
            oldest_waiting_since,
        })
    }

    /// When the longest-waiting message was written: the mtime of the one with the lowest queue
    /// number (queue numbers grow with publish time), so one `stat`, not one per message (a
    /// status of 100,000 waiting took 0.75 s with a stat each). A message consumed since the
    /// listing is passed over for the next lowest, a few times at most.
    pub(crate) fn written_at(&self, longest: &LongestWaiting) -> Option<SystemTime> {
        longest.names.iter().find_map(|w| {
            std::fs::symlink_metadata(self.dir().join(w.to_string()))
                .ok()?
                .modified()
                .ok()
        })
    }

    /// The messages in `dead/` (those that reached their requeue limit in a `dead_letter`
    /// queue), in delivery order. Empty when there is no `dead/`.
    pub fn dead_letters(&self) -> Result<Vec<WaitingName>> {
        let dir = self.dir().join("dead");
        let mut names = list_waiting_names(&dir)?;
        names.sort();
        Ok(names)
    }
}

/// The few waiting messages with the lowest queue numbers seen (the longest waiting), lowest
/// first: what [`Queue::written_at`] stats, in order, until one is still there.
#[derive(Default)]
pub(crate) struct LongestWaiting {
    names: Vec<WaitingName>,
}

impl LongestWaiting {
    /// How many are kept: enough that a few consumed since the listing do not leave it empty.
    const KEPT: usize = 8;

    pub fn offer(&mut self, w: &WaitingName) {
        // Almost every name of a deep listing is newer than all kept: one comparison for those.
        if self.names.len() == Self::KEPT
            && self
                .names
                .last()
                .is_some_and(|l| w.queue_number >= l.queue_number)
        {
            return;
        }
        let at = self
            .names
            .partition_point(|kept| kept.queue_number <= w.queue_number);
        if at < Self::KEPT {
            self.names.insert(at, w.clone());
            self.names.truncate(Self::KEPT);
        }
    }
}

/// The waiting-message names in `dir`; nothing if it does not exist.
fn list_waiting_names(dir: &Path) -> Result<Vec<WaitingName>> {
    match list_names(dir, WaitingName::parse_bytes) {
        Ok(names) => Ok(names),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("list", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::names::MessageId;

    #[test]
    fn the_longest_waiting_are_the_lowest_queue_numbers_lowest_first() {
        let mut longest = LongestWaiting::default();
        // Queue numbers 0..40 in a scrambled order, whatever their priorities.
        for i in 0..40u64 {
            let queue_number = (i * 17) % 40;
            longest.offer(&WaitingName {
                priority: 40 - i,
                queue_number,
                id: MessageId::new_random(),
            });
        }
        let kept: Vec<u64> = longest.names.iter().map(|w| w.queue_number).collect();
        assert_eq!(kept, (0..LongestWaiting::KEPT as u64).collect::<Vec<_>>());
    }
}
