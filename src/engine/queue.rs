//! One queue directory: publish, consume, ack, nack, touch, requeue, and the settings that steer
//! them. See the protocol spec (the engine's module doc); each state change below is the single
//! atomic call documented there. Housekeeping and inspection of a queue live in `housekeeping`
//! and `inspect`.

use super::clock::FsClock;
use super::config::{self, Settings};
use super::error::{Error, Result, io_err};
use super::files::{
    dir_is_gone, is_not_found, is_stale_handle, is_unreadable_entry, read_message_file,
    retry_stale, retry_transient, write_atomically,
};
use super::housekeeping::CleanTimes;
use super::inspect::StatusCounts;
use super::listing::Listing;
use super::message::{Message, Requeue};
use super::names::{
    DEAD_DIR, MessageId, TakeKind, TakeName, WORK_DIR, WaitingName, WorkName, claim_name,
    is_valid_id, next_queue_number,
};
use super::watch::DirWatch;
use crate::locking::LockRecovering;
use serde_json::Value;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use super::housekeeping::CleanReport;
pub use super::inspect::QueueStatus;

/// How long settings read from disk are trusted before they are read again.
pub(super) const SETTINGS_TTL: Duration = Duration::from_secs(1);
/// How long a failed settings read is tried again before the failure counts (GlusterFS can
/// answer ENOENT or ESTALE for a `ddmq.yaml` another host is replacing for most of a second).
const SETTINGS_RETRY_LIMIT: Duration = Duration::from_secs(2);
/// Pause between those reads: long enough for another host's rename to become visible.
const SETTINGS_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long the last good settings stand in for a file that keeps reading broken.
const LAST_GOOD_GRACE: Duration = Duration::from_secs(60);
/// An unreadable message file younger than this may still be being written by the original
/// (which writes in place): it is given back rather than quarantined.
const YOUNG_FILE: Duration = Duration::from_secs(2);
/// How often a consumer learns the filesystem's clock again from a file it took (one request
/// to the file server each time).
const CLOCK_FROM_TAKES_EVERY: Duration = Duration::from_secs(10);

/// Options of a publish; `None` takes the queue's setting.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    pub priority: Option<u64>,
    /// Seconds in flight before expiry (0 or None: the queue's `message_timeout`).
    pub timeout: Option<u64>,
    pub requeue: Option<Requeue>,
    pub requeue_limit: Option<u64>,
    /// Run housekeeping first (throttled to once a minute).
    pub clean: bool,
}

/// Options of a consume.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// Run housekeeping first (throttled to once a minute).
    pub clean: bool,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions { clean: true }
    }
}

/// A claimed message: its record, with `filename` set to the `work/` name (as the original returns it).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub message: Message,
    pub work_name: WorkName,
}

/// A message claimed for a consumer that stays alive while it uses it (`ddmq work`): held under
/// its `.held-` take name, a lease of the queue's `message_timeout`, until [`Queue::renew`]
/// gives it its `work/` name (a task that ends first is acked without that rename); or leased
/// at once when the message's own timeout is shorter than the queue's.
#[derive(Clone, Debug)]
pub struct HeldDelivery {
    /// Its record, `filename` set to its name in `work/`.
    pub message: Message,
    pub in_flight: InFlight,
    /// The lease each renewal gives it: the message's own timeout, or the queue's.
    pub timeout: u64,
}

/// How long a consumer keeps a [`HeldDelivery`] under its `.held-` name before its first
/// renewal gives it its `work/` name (sooner when a quarter of the held name's lease is
/// shorter): most `ddmq work` tasks and mount readers are done first, and are acked without
/// that rename (a network filesystem's server counts a LOOKUP and a RENAME less per message).
pub const HOLD_FOR: Duration = Duration::from_secs(1);

/// Where a message one consumer has in flight is now: under its take name (held) or its
/// `work/` name (leased). What a long-running consumer settles or renews.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InFlight {
    Held(TakeName),
    Leased(WorkName),
}

impl InFlight {
    pub fn waiting(&self) -> &WaitingName {
        match self {
            InFlight::Held(t) => &t.waiting,
            InFlight::Leased(w) => &w.waiting,
        }
    }

    /// When its lease ends, in epoch seconds of the filesystem's clock: both names carry it.
    pub fn expiry(&self) -> u64 {
        match self {
            InFlight::Held(t) => t.time,
            InFlight::Leased(w) => w.expiry,
        }
    }

    /// Its file name in `work/`.
    pub fn file_name(&self) -> String {
        match self {
            InFlight::Held(t) => t.to_string(),
            InFlight::Leased(w) => w.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    Acked(String),
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequeueOutcome {
    /// Published again under this waiting name.
    Requeued(WaitingName),
    /// Deleted: its `requeue` says so.
    Dropped,
    /// At its requeue limit: deleted, or moved to `dead/` with `dead_letter`.
    LimitReached { dead_lettered: bool },
    /// Unreadable: moved to `quarantine/`.
    Quarantined,
    /// Gone already: acked, expired or taken by another client.
    NotFound,
}

/// The settings last read from disk, and when.
struct CachedSettings {
    /// When the files were last looked at (successfully or not); `None` after this process
    /// changed them, so that the next call reads them again.
    read_at: Option<Instant>,
    /// When they last read and parsed cleanly.
    good_at: Instant,
    settings: Settings,
}

/// A handle on one queue directory, shared by the threads of a long-lived caller.
pub struct Queue {
    pub(super) root: PathBuf,
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) work: PathBuf,
    pub(super) listing: Mutex<Listing>,
    settings: Mutex<Option<CachedSettings>>,
    pub(super) clean_times: Mutex<CleanTimes>,
    /// The last status's counts, reused while the directories are unchanged.
    pub(super) counted: Mutex<Option<StatusCounts>>,
    /// The offset to the filesystem's clock (see `clock`).
    pub(super) clock: Mutex<FsClock>,
}

impl Queue {
    pub(crate) fn new(root: PathBuf, name: String, dir: PathBuf) -> Queue {
        let work = dir.join(WORK_DIR);
        Queue {
            root,
            name,
            dir,
            work,
            listing: Mutex::new(Listing::default()),
            settings: Mutex::new(None),
            clean_times: Mutex::new(CleanTimes::default()),
            counted: Mutex::new(None),
            clock: Mutex::new(FsClock::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(config::CONFIG_FILE)
    }

    /// An I/O error, or NoSuchQueue when the queue directory itself is gone (looked at again
    /// for a moment on a network filesystem, see [`dir_is_gone`]).
    pub(super) fn missing_queue_or(&self, op: &'static str, path: &Path, e: io::Error) -> Error {
        if is_not_found(&e) && dir_is_gone(&self.dir) {
            Error::NoSuchQueue(self.dir.clone())
        } else {
            io_err(op, path, e)
        }
    }

    // ---------------------------------------------------------------- settings

    /// Effective settings, read again from disk when older than a second (0.9.10 read them once
    /// per process, B7).
    ///
    /// Over a network filesystem another host replacing a `ddmq.yaml` can make it read torn,
    /// empty or missing for a moment. A read that fails where an earlier one succeeded is tried
    /// again a few times; if it still fails, the last good settings are kept, with a warning, for
    /// up to [`LAST_GOOD_GRACE`] after they were last read. A file broken from the start, or for
    /// longer, is an error naming it.
    pub fn settings(&self) -> Result<Settings> {
        let mut cached = self.settings.lock_recovering();
        if let Some(c) = cached.as_ref()
            && c.read_at.is_some_and(|t| t.elapsed() < SETTINGS_TTL)
        {
            return Ok(c.settings.clone());
        }
        let started = Instant::now();
        let mut pause = SETTINGS_RETRY_PAUSE;
        let failure = loop {
            match self.read_settings() {
                Ok(s) => {
                    let now = Instant::now();
                    *cached = Some(CachedSettings {
                        read_at: Some(now),
                        good_at: now,
                        settings: s.clone(),
                    });
                    return Ok(s);
                }
                Err(e)
                    if self.may_be_mid_replace(&e) && started.elapsed() < SETTINGS_RETRY_LIMIT =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => break e,
            }
        };
        match cached.as_mut() {
            Some(c)
                if self.may_be_mid_replace(&failure) && c.good_at.elapsed() < LAST_GOOD_GRACE =>
            {
                log::warn!(
                    "{failure}; keeping the settings of queue {} read {:.1} s ago (another client may be replacing the file)",
                    self.name,
                    c.good_at.elapsed().as_secs_f64()
                );
                c.read_at = Some(Instant::now());
                Ok(c.settings.clone())
            }
            _ => Err(failure),
        }
    }

    /// Makes the next [`Queue::settings`] read the files again, keeping what it read last as the
    /// last good settings.
    pub(super) fn forget_settings(&self) {
        if let Some(c) = self.settings.lock_recovering().as_mut() {
            c.read_at = None;
        }
    }

    /// Whether a failed settings read may be another client replacing a file: a file that does
    /// not parse, or a queue `ddmq.yaml` missing from a queue directory that is there.
    fn may_be_mid_replace(&self, e: &Error) -> bool {
        match e {
            Error::Config { .. } => true,
            Error::Io { source, .. } => is_not_found(source),
            _ => false,
        }
    }

    fn read_settings(&self) -> Result<Settings> {
        let root_path = self.root.join(config::CONFIG_FILE);
        let queue_path = self.config_path();
        let root = config::read_mapping(&root_path)?.unwrap_or_default();
        let queue = config::read_mapping(&queue_path)?.ok_or_else(|| {
            self.missing_queue_or(
                "read settings",
                &queue_path,
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        Settings::resolve(&[(&root_path, &root), (&queue_path, &queue)])
    }

    /// The queue's own `ddmq.yaml` text.
    pub fn read_config_text(&self) -> Result<String> {
        let p = self.config_path();
        std::fs::read_to_string(&p).map_err(|e| self.missing_queue_or("read", &p, e))
    }

    /// Replaces the queue's `ddmq.yaml` after checking it; a refused text changes nothing.
    pub fn write_config_text(&self, text: &[u8]) -> Result<()> {
        let p = self.config_path();
        let map = config::validate(&p, text)?;
        config::write_mapping(&p, &map)?;
        self.forget_settings();
        Ok(())
    }

    // ---------------------------------------------------------------- publish

    /// Publishes one message. O(1): one new file, no listing.
    pub fn publish(&self, body: Value, opts: &PublishOptions) -> Result<Message> {
        self.publish_counted(body, opts, 0)
    }

    /// Publishes one message that has been requeued `requeue_counter` times already (the
    /// Python API lets a caller carry the count over, as 0.9.10's `publish` did).
    pub fn publish_counted(
        &self,
        body: Value,
        opts: &PublishOptions,
        requeue_counter: u64,
    ) -> Result<Message> {
        let settings = self.settings()?;
        if opts.clean {
            self.clean_best_effort();
        }
        let size = match &body {
            Value::String(s) => s.len() as u64,
            other => other.to_string().len() as u64,
        };
        if size > settings.max_message_bytes {
            return Err(Error::TooLarge {
                queue: self.name.clone(),
                size,
                limit: settings.max_message_bytes,
            });
        }
        let (name, msg) = self.new_record(body, opts, requeue_counter, &settings);
        self.store_waiting(&name, &msg, settings.durable)?;
        Ok(msg)
    }

    /// The record of a new message and its waiting name: a fresh queue number and id, the
    /// options over the queue's settings.
    pub(super) fn new_record(
        &self,
        body: Value,
        opts: &PublishOptions,
        requeue_counter: u64,
        settings: &Settings,
    ) -> (WaitingName, Message) {
        let priority = opts.priority.unwrap_or(settings.priority);
        let requeue = opts.requeue.unwrap_or(if settings.requeue {
            Requeue::QueuePriority
        } else {
            Requeue::Drop
        });
        let name = WaitingName {
            priority,
            queue_number: next_queue_number(),
            id: MessageId::new_random(),
        };
        let msg = Message {
            message: body,
            queue: self.name.clone(),
            timeout: opts.timeout.filter(|t| *t > 0),
            id: name.id.to_string(),
            priority,
            queue_number: name.queue_number,
            filename: name.to_string(),
            requeue,
            requeue_counter,
            requeue_limit: opts.requeue_limit.filter(|l| *l > 0),
            extra: Default::default(),
        };
        (name, msg)
    }

    /// Writes a waiting message under a temporary name, then renames it into place.
    fn store_waiting(&self, name: &WaitingName, msg: &Message, durable: bool) -> Result<()> {
        let target = self.dir.join(name.to_string());
        write_atomically(&target, msg.to_json().as_bytes(), durable)
            .map_err(|e| self.no_such_queue_or(e))?;
        self.listing.lock_recovering().add_own(name);
        Ok(())
    }

    /// NoSuchQueue for a file not found because the queue directory itself is gone.
    pub(super) fn no_such_queue_or(&self, e: Error) -> Error {
        match e {
            Error::Io { source, .. } if is_not_found(&source) && dir_is_gone(&self.dir) => {
                Error::NoSuchQueue(self.dir.clone())
            }
            e => e,
        }
    }

    // ---------------------------------------------------------------- consume

    /// The next candidate in delivery order, listing the directory again when needed.
    fn next_candidate(&self, fresh_listing: &mut bool) -> Result<Option<WaitingName>> {
        let fail = |op, e| self.missing_queue_or(op, &self.dir, e);
        self.listing
            .lock_recovering()
            .next_candidate(&self.dir, fresh_listing, &fail)
    }

    /// Claims up to `n` messages in delivery order. Lost races are skipped silently; an empty
    /// result means the queue held nothing unclaimed when we looked. What was claimed is always
    /// returned, even when a later claim fails (0.9.10 left such claims orphaned in `work/`, R2).
    pub fn consume(&self, n: usize, opts: &ConsumeOptions) -> Result<Vec<Delivery>> {
        if opts.clean {
            self.clean_best_effort();
        }
        let mut out = Vec::with_capacity(n.min(1024));
        while out.len() < n {
            match self.consume_one() {
                Ok(Some(d)) => out.push(d),
                Ok(None) => break,
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => {
                    log::warn!(
                        "consume of {} stopped after {} messages: {e}",
                        self.name,
                        out.len()
                    );
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Claims the next message, if any. No housekeeping.
    ///
    /// Two renames: the waiting file to a name private to this call ([`TakeName`]), which
    /// exactly one consumer on any host can win, then, once read, to its `work/` name with the
    /// message's own timeout. A consumer that dies between the two leaves a `.take-` file that
    /// housekeeping gives back.
    pub fn consume_one(&self) -> Result<Option<Delivery>> {
        let settings = self.settings()?;
        loop {
            let Some((mut message, taken)) = self.take_next(TakeKind::Take, 0)? else {
                return Ok(None);
            };
            let timeout = message.timeout_or(settings.message_timeout);
            match self.lease_taken(&taken, timeout) {
                Ok(Some(work_name)) => {
                    message.filename = work_name.to_string();
                    return Ok(Some(Delivery { message, work_name }));
                }
                // Housekeeping judged our take abandoned and gave it back: someone else's now.
                Ok(None) => continue,
                Err(e) => {
                    self.give_back_taken(&taken);
                    return Err(e);
                }
            }
        }
    }

    /// Claims the next message, if any, with one rename: see [`HeldDelivery`]. Its consumer
    /// renews it as it would a lease.
    pub fn consume_held(&self, opts: &ConsumeOptions) -> Result<Option<HeldDelivery>> {
        if opts.clean {
            self.clean_best_effort();
        }
        let settings = self.settings()?;
        // Other hosts' cleaners judge a held message by the time in its name: it must be on
        // the filesystem's clock from the first take on (a `.take-` lives for microseconds).
        if let Err(e) = self.refresh_clock() {
            log::warn!("{e}; naming held messages by this host's clock");
        }
        loop {
            let held_for = settings.message_timeout;
            let Some((mut message, held)) = self.take_next(TakeKind::Held, held_for)? else {
                return Ok(None);
            };
            let timeout = message.timeout_or(settings.message_timeout);
            let in_flight = if timeout < held_for {
                // Its own lease is shorter than the one in the held name: leased now, so that
                // it is requeued as soon as its consumer is gone.
                match self.lease_taken(&held, timeout) {
                    Ok(Some(w)) => InFlight::Leased(w),
                    Ok(None) => continue,
                    Err(e) => {
                        self.give_back_taken(&held);
                        return Err(e);
                    }
                }
            } else {
                InFlight::Held(held)
            };
            message.filename = in_flight.file_name();
            return Ok(Some(HeldDelivery {
                message,
                in_flight,
                timeout,
            }));
        }
    }

    /// Takes the next candidate that this consumer wins and can read: the first rename. A held
    /// take's name carries the end of a lease of `held_for` seconds.
    fn take_next(&self, kind: TakeKind, held_for: u64) -> Result<Option<(Message, TakeName)>> {
        let mut fresh_listing = false;
        loop {
            let Some(candidate) = self.next_candidate(&mut fresh_listing)? else {
                return Ok(None);
            };
            let from = self.dir.join(candidate.to_string());
            let time = match kind {
                TakeKind::Take => self.fs_now_secs(),
                TakeKind::Held => self.fs_now_secs().saturating_add(held_for),
            };
            let taken = TakeName::new(kind, &candidate, time);
            // Under contention most candidates are gone already: a lookup is much cheaper than a
            // rename, which takes the filesystem-wide rename lock even when it fails.
            let contended = self.listing.lock_recovering().is_contended();
            let claimed = if contended
                && matches!(std::fs::symlink_metadata(&from), Err(e) if is_not_found(&e))
            {
                Err(io::Error::from(io::ErrorKind::NotFound))
            } else {
                std::fs::rename(&from, self.work.join(taken.to_string()))
            };
            match claimed {
                Ok(()) => self.listing.lock_recovering().claim_won(&candidate),
                // ESTALE: our cached entry names a file another host moved: it was taken.
                // (A queue deleted meanwhile shows in the next listing, which this makes due.)
                Err(e) if is_not_found(&e) || is_stale_handle(&e) => {
                    log::trace!("claim lost: {candidate} ({e}, contended: {contended})");
                    self.listing.lock_recovering().claim_lost(&candidate);
                    continue; // another consumer was first
                }
                Err(e) => return Err(io_err("claim", &from, e)),
            }
            if let Some(message) = self.read_taken(&taken)? {
                return Ok(Some((message, taken)));
            }
        }
    }

    /// Reads a message we just took. None if it was unreadable (given back or quarantined) or
    /// housekeeping gave it back meanwhile.
    fn read_taken(&self, taken: &TakeName) -> Result<Option<Message>> {
        let path = self.work.join(taken.to_string());
        let waiting = &taken.waiting;
        let read = match read_message_file(&path) {
            Ok(x) => x,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) if is_unreadable_entry(&e) => {
                self.quarantine_as(&path, &waiting.to_string(), &format!("{e}"));
                return Ok(None);
            }
            Err(e) => {
                self.give_back_taken(taken);
                return Err(io_err("read", &path, e));
            }
        };
        // The take just set the file's ctime: the filesystem's clock, now. Asking for it costs
        // the file server a request, so it is learned again only now and then.
        if self.clock_is_older_than(CLOCK_FROM_TAKES_EVERY)
            && let Ok(meta) = read.metadata()
        {
            self.learn_clock(&meta);
        }
        match Message::from_json(&read.bytes) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                // Both times stamped by the filesystem: no two hosts' clocks compared. A file
                // whose times cannot be read is judged young: given back, looked at again.
                let young = match read.metadata() {
                    Ok(meta) => {
                        let written = (meta.mtime() as f64) + meta.mtime_nsec() as f64 / 1e9;
                        let taken_at = (meta.ctime() as f64) + meta.ctime_nsec() as f64 / 1e9;
                        taken_at - written < YOUNG_FILE.as_secs_f64()
                    }
                    Err(_) => true,
                };
                if young {
                    // Probably the original still writing it in place: give it back, retry later.
                    if self.give_back_taken(taken) {
                        self.listing
                            .lock_recovering()
                            .defer(waiting, Instant::now() + YOUNG_FILE);
                    }
                } else {
                    self.quarantine_as(&path, &waiting.to_string(), &e.to_string());
                }
                Ok(None)
            }
        }
    }

    /// The second rename: a message we hold under its take name gets its `work/` name, its
    /// lease of `timeout` seconds from now. None if housekeeping took it back meanwhile.
    fn lease_taken(&self, taken: &TakeName, timeout: u64) -> Result<Option<WorkName>> {
        let work_name = WorkName {
            expiry: self.fs_now_secs().saturating_add(timeout),
            waiting: taken.waiting.clone(),
        };
        let from = self.work.join(taken.to_string());
        let to = self.work.join(work_name.to_string());
        // ESTALE looked up again: the take is ours unless housekeeping moved it (then ENOENT).
        match retry_stale(|| std::fs::rename(&from, &to)) {
            Ok(()) => Ok(Some(work_name)),
            Err(e) if is_not_found(&e) || is_stale_handle(&e) => Ok(None),
            Err(e) => Err(io_err("claim", &from, e)),
        }
    }

    /// Puts a message we took but cannot deliver back at its place; false if it is gone.
    pub(super) fn give_back_taken(&self, taken: &TakeName) -> bool {
        match self.try_give_back_taken(taken) {
            Ok(back) => back,
            Err(e) => {
                log::warn!("{e} (housekeeping will)");
                false
            }
        }
    }

    /// [`Queue::give_back_taken`], its error returned: false if it is gone.
    fn try_give_back_taken(&self, taken: &TakeName) -> Result<bool> {
        let from = self.work.join(taken.to_string());
        let back = self.dir.join(taken.waiting.to_string());
        match retry_transient(|| std::fs::rename(&from, &back)) {
            Ok(()) => {
                self.listing.lock_recovering().add_own(&taken.waiting);
                Ok(true)
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(io_err("give back", &from, e)),
        }
    }

    /// Requeues (counted), drops or dead-letters a message held under its take name, as
    /// [`Queue::nack`] does a leased one.
    pub(super) fn requeue_taken(
        &self,
        taken: &TakeName,
        force_requeue: bool,
    ) -> Result<RequeueOutcome> {
        self.claim_and_requeue(&taken.to_string(), &taken.waiting, force_requeue)
    }

    // ------------------------------------------------ a long-running consumer's in-flight messages

    /// Acks a message in flight, held or leased.
    pub fn ack_in_flight(&self, m: &InFlight) -> Result<AckOutcome> {
        let taken = match m {
            InFlight::Held(taken) => taken,
            InFlight::Leased(w) => return self.ack(&w.to_string()),
        };
        let path = self.work.join(taken.to_string());
        match retry_transient(|| std::fs::remove_file(&path)) {
            Ok(()) => Ok(AckOutcome::Acked(taken.to_string())),
            Err(e) if is_not_found(&e) => Ok(AckOutcome::NotFound),
            Err(e) => Err(io_err("ack", &path, e)),
        }
    }

    /// Gives a message in flight back at its place, uncounted; false if it is gone.
    pub fn give_back_in_flight(&self, m: &InFlight) -> Result<bool> {
        match m {
            InFlight::Held(taken) => self.try_give_back_taken(taken),
            InFlight::Leased(w) => self.give_back(w),
        }
    }

    /// Nacks a message in flight (see [`Queue::nack`]).
    pub fn nack_in_flight(&self, m: &InFlight, force_requeue: bool) -> Result<RequeueOutcome> {
        match m {
            InFlight::Held(taken) => self.requeue_taken(taken, force_requeue),
            InFlight::Leased(w) => self.nack(&w.to_string(), force_requeue),
        }
    }

    /// Renews the lease of a message in flight: a held one gets its `work/` name with a lease
    /// of `timeout` seconds (its [`HeldDelivery::timeout`]), a leased one is touched. None if it
    /// is no longer this consumer's.
    pub fn renew(&self, m: &InFlight, timeout: u64) -> Result<Option<WorkName>> {
        match m {
            InFlight::Held(taken) => self.lease_taken(taken, timeout),
            InFlight::Leased(w) => self.touch(&w.to_string()),
        }
    }

    /// Waits up to `limit` for a message, watching the directory between looks (see
    /// [`DirWatch`]: a `stat` every `poll`, slower once the queue has been idle a while).
    /// `give_up` is asked between polls.
    pub fn consume_wait(
        &self,
        limit: Duration,
        poll: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<Option<Delivery>> {
        self.wait_for(limit, poll, give_up, || self.consume_one())
    }

    /// [`Queue::consume_wait`] with the one-rename claim of [`Queue::consume_held`] (no
    /// housekeeping): for a consumer that renews what it holds.
    pub fn consume_wait_held(
        &self,
        limit: Duration,
        poll: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<Option<HeldDelivery>> {
        let opts = ConsumeOptions { clean: false };
        self.wait_for(limit, poll, give_up, || self.consume_held(&opts))
    }

    /// Calls `take` until it finds a message, watching the directory between looks.
    fn wait_for<T>(
        &self,
        limit: Duration,
        poll: Duration,
        give_up: &dyn Fn() -> bool,
        take: impl Fn() -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let deadline = Instant::now() + limit;
        let mut watch = DirWatch::default();
        loop {
            if let Some(d) = take()? {
                return Ok(Some(d));
            }
            watch.looked(self);
            loop {
                if Instant::now() >= deadline || give_up() {
                    return Ok(None);
                }
                let pause = watch.pause(poll);
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                // A deferred (young, unreadable) file may be complete now, with no directory change to show it.
                if watch.worth_a_look(self) || self.deferral_ended() {
                    break;
                }
            }
        }
    }

    fn deferral_ended(&self) -> bool {
        self.listing.lock_recovering().deferral_ended()
    }

    // ---------------------------------------------------------------- ack, nack, touch

    /// Resolves a `work/` file name, or a bare message id, to the in-flight entry it names now.
    /// A name whose expiry changed (the lease was extended) still finds its message.
    pub fn resolve_in_flight(&self, name_or_id: &str) -> Result<Option<WorkName>> {
        if let Some(w) = WorkName::parse(name_or_id) {
            if self.work.join(name_or_id).symlink_metadata().is_ok() {
                return Ok(Some(w));
            }
            return self.find_in_flight(|c| c.waiting == w.waiting);
        }
        if is_valid_id(name_or_id) {
            return self.find_in_flight(|c| c.waiting.id == *name_or_id);
        }
        Err(Error::InvalidMessageName(name_or_id.to_string()))
    }

    /// Where a message one consumer has in flight is now: a held one where it was (only its
    /// consumer renames it), a leased one by [`Queue::resolve_in_flight`] (another client may
    /// have extended its lease). None if it is gone.
    pub fn locate_in_flight(&self, m: &InFlight) -> Result<Option<InFlight>> {
        match m {
            InFlight::Held(taken) => {
                let path = self.work.join(taken.to_string());
                match path.symlink_metadata() {
                    Ok(_) => Ok(Some(m.clone())),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(io_err("stat", &path, e)),
                }
            }
            InFlight::Leased(w) => Ok(self
                .resolve_in_flight(&w.to_string())?
                .map(InFlight::Leased)),
        }
    }

    fn find_in_flight(&self, wanted: impl Fn(&WorkName) -> bool) -> Result<Option<WorkName>> {
        Ok(self.in_flight()?.into_iter().find(|w| wanted(w)))
    }

    /// Acknowledges: deletes the in-flight message, whatever its requeue flag (0.9.10 requeued
    /// messages flagged `requeue` instead, B1).
    pub fn ack(&self, name_or_id: &str) -> Result<AckOutcome> {
        // The common case, a current work/ name, is one unlink; only a miss searches.
        if WorkName::parse(name_or_id).is_some() {
            let path = self.work.join(name_or_id);
            match retry_transient(|| std::fs::remove_file(&path)) {
                Ok(()) => return Ok(AckOutcome::Acked(name_or_id.to_string())),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(io_err("ack", &path, e)),
            }
        }
        let Some(w) = self.resolve_in_flight(name_or_id)? else {
            return Ok(AckOutcome::NotFound);
        };
        let path = self.work.join(w.to_string());
        match retry_transient(|| std::fs::remove_file(&path)) {
            Ok(()) => Ok(AckOutcome::Acked(w.to_string())),
            Err(e) if is_not_found(&e) => Ok(AckOutcome::NotFound),
            Err(e) => Err(io_err("ack", &path, e)),
        }
    }

    /// Negative acknowledgement: requeue or delete as the message's `requeue` says (0.9.10's CLI
    /// ignored it, B6), within its `requeue_limit` (0.9.10 ignored the limit, B5);
    /// `force_requeue` requeues even a message that says drop.
    pub fn nack(&self, name_or_id: &str, force_requeue: bool) -> Result<RequeueOutcome> {
        let Some(w) = self.resolve_in_flight(name_or_id)? else {
            return Ok(RequeueOutcome::NotFound);
        };
        self.requeue_in_flight(&w, force_requeue)
    }

    /// Puts an in-flight message back at its old place, uncounted (a reader left before reading it).
    pub fn give_back(&self, w: &WorkName) -> Result<bool> {
        let from = self.work.join(w.to_string());
        let to = self.dir.join(w.waiting.to_string());
        match retry_transient(|| std::fs::rename(&from, &to)) {
            Ok(()) => {
                self.listing.lock_recovering().add_own(&w.waiting);
                Ok(true)
            }
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(io_err("give back", &from, e)),
        }
    }

    /// Extends the lease of an in-flight message by its timeout from now; returns its new name.
    pub fn touch(&self, name_or_id: &str) -> Result<Option<WorkName>> {
        let Some(w) = self.resolve_in_flight(name_or_id)? else {
            return Ok(None);
        };
        let from = self.work.join(w.to_string());
        let settings = self.settings()?;
        let timeout = match read_message_file(&from) {
            Ok(read) => Message::from_json(&read.bytes)
                .map(|m| m.timeout_or(settings.message_timeout))
                .unwrap_or(settings.message_timeout),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(io_err("read", &from, e)),
        };
        let renewed = WorkName {
            expiry: self.fs_now_secs().saturating_add(timeout),
            waiting: w.waiting.clone(),
        };
        if renewed == w {
            return Ok(Some(w));
        }
        let to = self.work.join(renewed.to_string());
        match retry_stale(|| std::fs::rename(&from, &to)) {
            Ok(()) => Ok(Some(renewed)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io_err("touch", &from, e)),
        }
    }

    /// Takes an in-flight message away from everyone else by renaming it to a private claim
    /// name, then requeues, drops or dead-letters it.
    pub(super) fn requeue_in_flight(
        &self,
        w: &WorkName,
        force_requeue: bool,
    ) -> Result<RequeueOutcome> {
        self.claim_and_requeue(&w.to_string(), &w.waiting, force_requeue)
    }

    /// The claim rename of `work/<name>`, the message `waiting`, then [`Queue::finish_claim`].
    fn claim_and_requeue(
        &self,
        name: &str,
        waiting: &WaitingName,
        force_requeue: bool,
    ) -> Result<RequeueOutcome> {
        let from = self.work.join(name);
        let claim = self.work.join(claim_name(self.fs_now_secs()));
        match retry_stale(|| std::fs::rename(&from, &claim)) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(RequeueOutcome::NotFound),
            Err(e) => return Err(io_err("claim", &from, e)),
        }
        self.finish_claim(&claim, force_requeue, &waiting.to_string())
    }

    /// Requeues, drops or dead-letters the message held under the claim name `claim`, which this
    /// client alone holds. `original_name` names it in `dead/` or `quarantine/`.
    pub(super) fn finish_claim(
        &self,
        claim: &Path,
        force_requeue: bool,
        original_name: &str,
    ) -> Result<RequeueOutcome> {
        let bytes = match read_message_file(claim) {
            Ok(read) => read.bytes,
            Err(e) if is_not_found(&e) => return Ok(RequeueOutcome::NotFound),
            // A planted link, a directory or a special file: set it aside, or it would fail every clean.
            Err(e) if is_unreadable_entry(&e) => {
                self.quarantine_as(claim, original_name, &e.to_string());
                return Ok(RequeueOutcome::Quarantined);
            }
            Err(e) => return Err(io_err("read", claim, e)),
        };
        let msg = match Message::from_json(&bytes) {
            Ok(m) => m,
            Err(e) => {
                self.quarantine_as(claim, original_name, &e.to_string());
                return Ok(RequeueOutcome::Quarantined);
            }
        };
        let settings = self.settings()?;
        let remove_claim = || {
            std::fs::remove_file(claim)
                .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
                .map_err(|e| io_err("remove", claim, e))
        };
        if !force_requeue && !msg.requeue.is_requeue() {
            remove_claim()?;
            return Ok(RequeueOutcome::Dropped);
        }
        if !msg.may_requeue_again() {
            if settings.dead_letter {
                let dead = self.own_subdir(DEAD_DIR)?;
                let target = dead.join(original_name);
                std::fs::rename(claim, &target).map_err(|e| io_err("dead-letter", &target, e))?;
                return Ok(RequeueOutcome::LimitReached {
                    dead_lettered: true,
                });
            }
            remove_claim()?;
            return Ok(RequeueOutcome::LimitReached {
                dead_lettered: false,
            });
        }
        let priority = match msg.requeue {
            Requeue::Priority(p) => p,
            _ => settings.requeue_prio,
        };
        let name = WaitingName {
            priority,
            queue_number: next_queue_number(),
            id: MessageId::parse(&msg.id).unwrap_or_else(MessageId::new_random),
        };
        let mut again = msg;
        again.queue = self.name.clone();
        again.priority = priority;
        again.queue_number = name.queue_number;
        again.id = name.id.to_string();
        again.filename = name.to_string();
        again.requeue_counter += 1;
        self.store_waiting(&name, &again, settings.durable)?;
        remove_claim()?;
        Ok(RequeueOutcome::Requeued(name))
    }
}
