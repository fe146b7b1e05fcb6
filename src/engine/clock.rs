//! The filesystem's clock. A lease is written by one host and judged by others, and the hosts of a
//! cluster disagree by seconds, sometimes minutes; the one clock they share is the one that stamps
//! the files (the file server's, or the client's kernel's). So every time ddmq writes into a name
//! or compares with a file's times is on that clock: each queue handle learns the offset between
//! this host's clock and the filesystem's from a file it has just renamed or created (its ctime
//! is the filesystem's "now"), and adds it to its own clock.

use super::error::{Result, io_err};
use super::names::temp_name;
use super::queue::Queue;
use crate::locking::LockRecovering;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An offset older than this is learned again before a judgment that depends on it (housekeeping).
const OFFSET_TTL: Duration = Duration::from_secs(60);

/// What one queue handle knows of the filesystem's clock.
#[derive(Debug, Default)]
pub(super) struct FsClock {
    /// Seconds to add to this host's clock, and when they were learned.
    offset: Option<(f64, Instant)>,
}

fn local_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Queue {
    /// Now, in epoch seconds of the filesystem's clock (this host's clock until an offset is known).
    pub fn fs_now_secs(&self) -> u64 {
        let offset = self
            .clock
            .lock_recovering()
            .offset
            .map(|(o, _)| o)
            .unwrap_or(0.0);
        (local_now() + offset).max(0.0) as u64
    }

    /// Whether the offset is unknown or was learned longer than `age` ago.
    pub(super) fn clock_is_older_than(&self, age: Duration) -> bool {
        self.clock
            .lock_recovering()
            .offset
            .is_none_or(|(_, at)| at.elapsed() >= age)
    }

    /// Learns the offset from a file this handle has just renamed or created: its ctime is now.
    pub(super) fn learn_clock(&self, meta: &Metadata) {
        let stamped = meta.ctime() as f64 + meta.ctime_nsec() as f64 / 1e9;
        // Under a second is no skew: file times come from a coarse clock (a few ms behind) or
        // in whole seconds (MooseFS); clocks that agree that well are taken as equal.
        let offset = match stamped - local_now() {
            o if o.abs() < 1.0 => 0.0,
            o => o,
        };
        let mut clock = self.clock.lock_recovering();
        if clock
            .offset
            .is_none_or(|(old, _)| (old - offset).abs() >= 2.0)
            && offset.abs() >= 2.0
        {
            log::info!(
                "queue {}: this host's clock is {:+.0} s from the filesystem's",
                self.name,
                -offset
            );
        }
        clock.offset = Some((offset, Instant::now()));
    }

    /// Makes sure the offset was learned in the last minute, creating a small file in `work/` to
    /// learn it if not (three calls, at most once a minute: before housekeeping judges leases).
    pub(super) fn refresh_clock(&self) -> Result<()> {
        if self
            .clock
            .lock_recovering()
            .offset
            .is_some_and(|(_, at)| at.elapsed() < OFFSET_TTL)
        {
            return Ok(());
        }
        let probe = self.work.join(temp_name("clock"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| self.missing_queue_or("create", &probe, e))?;
        let meta = file.metadata();
        drop(file);
        let _ = std::fs::remove_file(&probe);
        self.learn_clock(&meta.map_err(|e| io_err("stat", &probe, e))?);
        Ok(())
    }
}
