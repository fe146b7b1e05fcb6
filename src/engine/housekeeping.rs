//! Housekeeping of a queue: requeue or drop expired messages, recover claims of clients that
//! died, remove stale temporary files, and set unreadable files aside (quarantine).

use super::config;
use super::error::{Error, Result, io_err};
use super::files::is_not_found;
use super::names::{
    CLAIM_PREFIX, QUARANTINE_DIR, ReservedName, TakeKind, TakeName, WorkName, claim_name,
};
use super::queue::{Queue, RequeueOutcome, SETTINGS_TTL};
use crate::locking::LockRecovering;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Minimum seconds between two housekeeping runs of one queue (as the original).
const CLEAN_INTERVAL_SECS: u64 = 60;
/// A claim file older than this belongs to a client that died mid-requeue.
const STALE_CLAIM_SECS: u64 = 300;
/// A `.take-` taken longer ago than this (by the time in its name) belongs to a consumer that
/// died between its two renames (normally microseconds apart): it is given back at its place,
/// uncounted. Should the consumer be alive after all, its second rename fails and it takes
/// another. (A `.held-` one carries its lease's end instead, and is requeued once past it.)
pub(super) const STALE_TAKE_SECS: u64 = 60;
/// A temporary file older than this belongs to a writer that died.
const STALE_TEMP_SECS: u64 = 600;

/// What a housekeeping run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub requeued: usize,
    pub dropped: usize,
    pub dead_lettered: usize,
    pub quarantined: usize,
    pub recovered_claims: usize,
    /// Messages taken by consumers that died before moving them to their `work/` name.
    pub returned_takes: usize,
    pub removed_temp_files: usize,
}

/// When this process last considered housekeeping of a queue, and when it last ran it.
#[derive(Debug, Default)]
pub(super) struct CleanTimes {
    pub(super) considered_at: Option<Instant>,
    pub(super) ran_at: Option<Instant>,
}

impl Queue {
    // ---------------------------------------------------------------- housekeeping

    /// Housekeeping before a publish or consume: its failure (a full disk cannot take the new
    /// `cleaned` stamp) must not stop the publish or consume itself.
    pub(super) fn clean_best_effort(&self) {
        if let Err(e) = self.maybe_clean() {
            log::warn!("housekeeping of queue {} failed: {e}", self.name);
        }
    }

    /// Runs housekeeping if a minute passed since the last run, by `cleaned` in the queue's
    /// settings (read fresh) and by this process's own last run.
    pub fn maybe_clean(&self) -> Result<Option<CleanReport>> {
        {
            let mut times = self.clean_times.lock_recovering();
            if times
                .considered_at
                .map(|t| t.elapsed() < SETTINGS_TTL)
                .unwrap_or(false)
            {
                return Ok(None);
            }
            if times
                .ran_at
                .map(|t| t.elapsed() < Duration::from_secs(CLEAN_INTERVAL_SECS))
                .unwrap_or(false)
            {
                return Ok(None);
            }
            times.considered_at = Some(Instant::now());
        }
        let settings = self.settings()?;
        if settings.cleaned.saturating_add(CLEAN_INTERVAL_SECS) > self.fs_now_secs() {
            return Ok(None);
        }
        self.clean().map(Some)
    }

    /// Housekeeping now: requeue or drop expired messages, recover stale claims, remove stale
    /// temporary files, then record `cleaned`. Safe with any number of concurrent cleaners.
    pub fn clean(&self) -> Result<CleanReport> {
        // Expiries, claims and temporary files are judged by the filesystem's clock.
        if let Err(e) = self.refresh_clock() {
            log::warn!("{e}; judging expiry by this host's clock");
        }
        self.clean_as_of(self.fs_now_secs())
    }

    /// [`Queue::clean`] as if the time were `now` (epoch seconds).
    pub(super) fn clean_as_of(&self, now: u64) -> Result<CleanReport> {
        let mut report = CleanReport::default();
        let entries = std::fs::read_dir(&self.work)
            .map_err(|e| self.missing_queue_or("list", &self.work, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &self.work, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let outcome = if let Some(w) = WorkName::parse(&name) {
                if w.expiry >= now {
                    continue;
                }
                self.requeue_in_flight(&w, false)?
            } else if let Some(ReservedName::Take(_)) = ReservedName::parse(&name) {
                // The time in the name is the taker's estimate of the filesystem's clock.
                match TakeName::parse(&name) {
                    Some(t) if t.kind == TakeKind::Take => {
                        if t.time.saturating_add(STALE_TAKE_SECS) < now && self.give_back_taken(&t)
                        {
                            report.returned_takes += 1;
                        }
                        continue;
                    }
                    Some(t) if t.time >= now => continue,
                    // A held lease that ran out: it may have been used, so it counts as an
                    // expired lease does.
                    Some(t) => self.requeue_taken(&t, false)?,
                    // Not a name we make: set it aside like any unreadable entry.
                    None => {
                        self.quarantine(&entry.path(), "not a take name ddmq makes");
                        RequeueOutcome::Quarantined
                    }
                }
            } else if let Some(ReservedName::Claim { claimed_at }) = ReservedName::parse(&name) {
                // The time in the name is the claimer's estimate of the filesystem's clock.
                if claimed_at.saturating_add(STALE_CLAIM_SECS) >= now {
                    continue;
                }
                // Re-claim atomically, so one cleaner alone recovers it.
                let fresh = self.work.join(claim_name(now));
                if std::fs::rename(entry.path(), &fresh).is_err() {
                    continue;
                }
                report.recovered_claims += 1;
                self.finish_claim(
                    &fresh,
                    false,
                    &format!("recovered-{}", &name[CLAIM_PREFIX.len()..]),
                )?
            } else {
                if is_leftover(&name)
                    && modified_before(&entry.path(), STALE_TEMP_SECS, now)
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    report.removed_temp_files += 1;
                }
                continue;
            };
            match outcome {
                RequeueOutcome::Requeued(_) => report.requeued += 1,
                RequeueOutcome::Dropped => report.dropped += 1,
                RequeueOutcome::LimitReached {
                    dead_lettered: true,
                } => report.dead_lettered += 1,
                RequeueOutcome::LimitReached {
                    dead_lettered: false,
                } => report.dropped += 1,
                RequeueOutcome::Quarantined => report.quarantined += 1,
                RequeueOutcome::NotFound => {}
            }
        }
        // Temporary files of writers that died: a publish that never returned, so nothing acknowledged is lost.
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| self.missing_queue_or("list", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().map(is_leftover).unwrap_or(false)
                && modified_before(&entry.path(), STALE_TEMP_SECS, now)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                report.removed_temp_files += 1;
            }
        }
        // The stamp only throttles housekeeping: a file that another host keeps rewriting
        // (it reads torn) is left to that host rather than failing the clean.
        match config::set_key(&self.config_path(), "cleaned", now.into()) {
            Err(e @ Error::Config { .. }) => {
                log::warn!("{e}; not stamping the clean time this round")
            }
            other => other?,
        }
        self.forget_settings();
        self.clean_times.lock_recovering().ran_at = Some(Instant::now());
        if report != CleanReport::default() {
            log::info!("cleaned queue {}: {report:?}", self.name);
        }
        Ok(report)
    }

    pub(super) fn quarantine(&self, path: &Path, reason: &str) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("unnamed")
            .to_string();
        self.quarantine_as(path, &name, reason)
    }

    /// Moves an unreadable file aside so the queue keeps flowing.
    pub(super) fn quarantine_as(&self, path: &Path, name: &str, reason: &str) {
        let dir = match self.own_subdir(QUARANTINE_DIR) {
            Ok(dir) => dir,
            Err(e) => {
                log::warn!(
                    "could not quarantine unreadable message file {}: {e}",
                    path.display()
                );
                return;
            }
        };
        let target = dir.join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        match std::fs::rename(path, &target) {
            Ok(()) => log::warn!(
                "quarantined unreadable message file {} as {}: {reason}",
                path.display(),
                target.display()
            ),
            Err(e) => log::warn!(
                "could not quarantine unreadable message file {}: {e}",
                path.display()
            ),
        }
    }

    /// `dead/` or `quarantine/`, created if missing. Something planted under that name that is
    /// not a real directory (a symlink out of ROOT) is removed first: we never move messages
    /// through a link.
    pub(super) fn own_subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => return Ok(dir),
            Ok(_) => {
                log::warn!(
                    "{} is not a directory (a planted link?): removing it",
                    dir.display()
                );
                std::fs::remove_file(&dir)
                    .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
                    .map_err(|e| io_err("remove", &dir, e))?;
            }
            Err(_) => {}
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &dir, e)),
        }
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => Ok(dir),
            _ => Err(io_err(
                "create",
                &dir,
                io::Error::new(io::ErrorKind::InvalidData, "not a directory"),
            )),
        }
    }
}

/// Files that housekeeping removes once stale: our temporary files, and the `.fuse_hidden*`
/// copies that libfuse filesystems such as sshfs leave of files unlinked while still open
/// through the same mount (an acked message, a replaced ddmq.yaml). NFS's `.nfs*` files are
/// left alone: removing one breaks the client that holds it.
fn is_leftover(name: &str) -> bool {
    ReservedName::parse(name) == Some(ReservedName::Temp) || name.starts_with(".fuse_hidden")
}

/// Whether the file at `path` was last written more than `secs` before `now`.
fn modified_before(path: &Path, secs: u64, now: u64) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| (m.mtime().max(0) as u64).saturating_add(secs) < now)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::super::names::{TakeKind, TakeName};
    use crate::engine::Broker;

    /// A consumer that died between its two renames leaves a `.take-` file: once it is old,
    /// housekeeping gives the message back at its place, uncounted, and it is delivered again.
    #[test]
    fn a_take_left_by_a_consumer_that_died_is_given_back_at_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path()).unwrap();
        broker.create_queue("q").unwrap();
        let q = broker.queue("q").unwrap();
        let first = q.publish("first".into(), &Default::default()).unwrap();
        q.publish("second".into(), &Default::default()).unwrap();
        // What a consumer that died after its first rename leaves behind.
        let waiting = super::super::names::WaitingName::parse(&first.filename).unwrap();
        let now = super::super::names::now_secs();
        let take = TakeName::new(TakeKind::Take, &waiting, now);
        let taken = q.work.join(take.to_string());
        std::fs::rename(q.dir().join(&first.filename), &taken).unwrap();
        assert_eq!(q.status(false).unwrap().waiting, 1);

        assert_eq!(q.clean_as_of(now).unwrap().returned_takes, 0, "young: kept");
        assert!(taken.exists());
        let report = q.clean_as_of(now + super::STALE_TAKE_SECS + 2).unwrap();
        assert_eq!(report.returned_takes, 1);
        assert!(q.dir().join(&first.filename).exists(), "back at its place");
        let d = q.consume_one().unwrap().unwrap();
        assert_eq!(d.message.body_text(), "first");
        assert_eq!(d.message.requeue_counter, 0, "uncounted");
    }

    /// A message held under its `.held-` take name was delivered: one left behind (its
    /// consumer died in the task's first second) is requeued counted, not given back, once old;
    /// while young nobody touches it. It counts as in flight meanwhile.
    #[test]
    fn a_held_message_left_by_a_consumer_that_died_is_requeued_counted() {
        use crate::engine::{InFlight, now_secs};
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path()).unwrap();
        broker.create_queue("q").unwrap();
        let q = broker.queue("q").unwrap();
        q.publish("task".into(), &Default::default()).unwrap();
        let held = q.consume_held(&Default::default()).unwrap().unwrap();
        assert_eq!(held.message.body_text(), "task");
        let status = q.status(false).unwrap();
        assert_eq!((status.waiting, status.in_flight), (0, 1));
        assert_eq!(
            q.survey().unwrap().in_flight,
            vec![held.in_flight.waiting().clone()]
        );

        let InFlight::Held(name) = &held.in_flight else {
            panic!("leased at once: {:?}", held.in_flight)
        };
        let ends = name.time;
        assert!(
            ends >= now_secs() + 299,
            "the default message_timeout, 300 s: {name}"
        );
        assert_eq!(
            q.clean_as_of(ends).unwrap(),
            Default::default(),
            "unexpired: kept"
        );
        let report = q.clean_as_of(ends + 1).unwrap();
        assert_eq!((report.requeued, report.returned_takes), (1, 0));
        let again = q.consume_one().unwrap().unwrap();
        assert_eq!(again.message.requeue_counter, 1, "counted: it may have run");
    }

    /// Each settlement of a held message is one call on its take name, and a renewal gives it
    /// its `work/` name; a message housekeeping took back is reported gone, never settled twice.
    #[test]
    fn a_held_message_is_acked_nacked_given_back_or_leased() {
        use crate::engine::{AckOutcome, InFlight, RequeueOutcome};
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path()).unwrap();
        broker.create_queue("q").unwrap();
        let q = broker.queue("q").unwrap();
        for body in ["a", "b", "c", "d"] {
            q.publish(body.into(), &Default::default()).unwrap();
        }
        let mut seen = Vec::new();
        let mut take = || {
            let d = q.consume_held(&Default::default()).unwrap().unwrap();
            seen.push((d.message.body_text(), d.message.requeue_counter));
            assert!(
                matches!(d.in_flight, InFlight::Held(_)),
                "{:?}",
                d.in_flight
            );
            d.in_flight
        };
        let a = take();
        assert!(matches!(q.ack_in_flight(&a).unwrap(), AckOutcome::Acked(_)));
        assert_eq!(q.ack_in_flight(&a).unwrap(), AckOutcome::NotFound);
        let b = take();
        assert!(matches!(
            q.nack_in_flight(&b, false).unwrap(),
            RequeueOutcome::Requeued(_)
        ));
        let b_again = take();
        assert!(q.give_back_in_flight(&b_again).unwrap());
        let d = take();
        let leased = q.renew(&d, 30).unwrap().expect("still ours");
        assert!(q.lease_left_secs(&leased) >= 29);
        assert_eq!(q.in_flight().unwrap(), vec![leased.clone()]);
        assert_eq!(q.renew(&d, 30).unwrap(), None, "the take name is gone");
        let renewed = q.renew(&InFlight::Leased(leased), 30).unwrap().unwrap();
        assert!(matches!(
            q.ack_in_flight(&InFlight::Leased(renewed)).unwrap(),
            AckOutcome::Acked(_)
        ));
        // b requeued counted (at requeue_prio 0: next), that copy given back uncounted, taken
        // again, leased and acked; c and d still waiting.
        seen.extend(
            q.consume(10, &Default::default())
                .unwrap()
                .iter()
                .map(|d| (d.message.body_text(), d.message.requeue_counter)),
        );
        let want = [("a", 0), ("b", 0), ("b", 1), ("b", 1), ("c", 0), ("d", 0)];
        assert_eq!(seen, want.map(|(b, n)| (b.to_string(), n)));
    }

    /// A message whose own timeout is shorter than the queue's is leased at once by a held
    /// consume: never held longer than its own lease says.
    #[test]
    fn a_message_with_a_shorter_timeout_than_the_queues_is_leased_at_once() {
        use crate::engine::{InFlight, PublishOptions};
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path()).unwrap();
        broker.create_queue("q").unwrap();
        let q = broker.queue("q").unwrap();
        let short = PublishOptions {
            timeout: Some(5),
            ..Default::default()
        };
        q.publish("short".into(), &short).unwrap();
        let d = q.consume_held(&Default::default()).unwrap().unwrap();
        let InFlight::Leased(w) = &d.in_flight else {
            panic!("held: {:?}", d.in_flight)
        };
        assert!(q.lease_left_secs(w) <= 5, "{w}");
        assert_eq!((d.timeout, d.message.filename.clone()), (5, w.to_string()));
    }
}
