//! One queue directory: publish, consume, ack, nack, requeue, clean. See the module above for
//! the protocol; each state change below is the single atomic call documented there.

use super::config::{self, Settings};
use super::message::{Message, Requeue};
use super::names::{MessageId, WaitingName, WorkName, is_valid_id};
use super::{Error, Result, io_err, next_queue_number, now_secs, sync_dir, temp_name};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long settings read from disk are trusted before they are read again.
const SETTINGS_TTL: Duration = Duration::from_secs(1);
/// How many more times a failed settings read is tried before the failure counts.
const SETTINGS_RETRIES: u32 = 10;
/// Pause between those reads: long enough for another host's rename to become visible.
const SETTINGS_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long the last good settings stand in for a file that keeps reading broken.
pub const LAST_GOOD_GRACE: Duration = Duration::from_secs(60);
/// A listing that still holds candidates is not refreshed more often than this (nor more often
/// than four times what it costs): the bound on how late a long-lived consumer sees a more
/// urgent message published by another client. Concurrent consumers change the directory all
/// the time; re-listing on every change would spend their time listing.
const MIN_RELIST_INTERVAL: Duration = Duration::from_millis(50);
/// Minimum seconds between two housekeeping runs of one queue (as the original).
const CLEAN_INTERVAL_SECS: u64 = 60;
/// A claim file older than this belongs to a client that died mid-requeue.
const STALE_CLAIM_SECS: u64 = 300;
/// A temporary file older than this belongs to a writer that died.
const STALE_TEMP_SECS: u64 = 600;
/// An unreadable message file younger than this may still be being written by the original
/// (which writes in place): it is given back rather than quarantined.
const YOUNG_FILE: Duration = Duration::from_secs(2);
/// Message files larger than this are not read into memory; they are quarantined.
const MAX_FILE_BYTES: u64 = 1 << 30;

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

/// What a housekeeping run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub requeued: usize,
    pub dropped: usize,
    pub dead_lettered: usize,
    pub quarantined: usize,
    pub recovered_claims: usize,
    pub removed_temp_files: usize,
}

/// Counts for `view` and the mount's status file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStatus {
    pub waiting: usize,
    pub in_flight: usize,
    /// Seconds since the oldest waiting message was published (by its file's mtime).
    pub oldest_waiting_age: Option<u64>,
}

/// What identifies a directory's content cheaply: it changes when entries are added or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirSignature {
    mtime_ns: i128,
    ctime_ns: i128,
    size: u64,
    ino: u64,
}

impl DirSignature {
    fn of(dir: &Path) -> io::Result<DirSignature> {
        let m = std::fs::metadata(dir)?;
        Ok(DirSignature {
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            size: m.size(),
            ino: m.ino(),
        })
    }
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
}

/// The sorted listing of waiting messages that consume works from.
#[derive(Default)]
struct Listing {
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

/// The settings last read from disk, and when.
struct CachedSettings {
    /// When the files were last looked at (successfully or not); `None` after this process
    /// changed them, so that the next call reads them again.
    read_at: Option<Instant>,
    /// When they last read and parsed cleanly.
    good_at: Instant,
    settings: Settings,
}

pub struct Queue {
    root: PathBuf,
    name: String,
    dir: PathBuf,
    work: PathBuf,
    listing: Mutex<Listing>,
    settings: Mutex<Option<CachedSettings>>,
    /// When this process last considered housekeeping, and last ran it.
    clean_state: Mutex<(Option<Instant>, Option<Instant>)>,
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl Queue {
    pub(crate) fn new(root: PathBuf, name: String, dir: PathBuf) -> Queue {
        let work = dir.join("work");
        Queue {
            root,
            name,
            dir,
            work,
            listing: Mutex::new(Listing::default()),
            settings: Mutex::new(None),
            clean_state: Mutex::new((None, None)),
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

    fn missing_queue_or(&self, op: &'static str, path: &Path, e: io::Error) -> Error {
        if is_not_found(&e) && !self.dir.is_dir() {
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
        let mut cached = self.settings.lock().unwrap();
        if let Some(c) = cached.as_ref()
            && c.read_at.is_some_and(|t| t.elapsed() < SETTINGS_TTL)
        {
            return Ok(c.settings.clone());
        }
        let mut attempt = 0;
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
                Err(e) if self.may_be_mid_replace(&e) && attempt < SETTINGS_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(SETTINGS_RETRY_PAUSE);
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
    fn forget_settings(&self) {
        if let Some(c) = self.settings.lock().unwrap().as_mut() {
            c.read_at = None;
        }
    }

    /// Whether a failed settings read may be another client replacing a file: a file that does
    /// not parse, or a queue `ddmq.yaml` missing while the queue's `work/` is still there.
    fn may_be_mid_replace(&self, e: &Error) -> bool {
        match e {
            Error::Config { .. } => true,
            Error::NoSuchQueue(_) => self.work.is_dir(),
            _ => false,
        }
    }

    fn read_settings(&self) -> Result<Settings> {
        let root_path = self.root.join(config::CONFIG_FILE);
        let queue_path = self.config_path();
        let root = config::read_mapping(&root_path)?.unwrap_or_default();
        let queue = config::read_mapping(&queue_path)?
            .ok_or_else(|| Error::NoSuchQueue(self.dir.clone()))?;
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
        self.store_waiting(&name, &msg, settings.durable)?;
        Ok(msg)
    }

    /// Writes a waiting message under a temporary name, then renames it into place.
    fn store_waiting(&self, name: &WaitingName, msg: &Message, durable: bool) -> Result<()> {
        // The message's name is unique already; the temporary one derives from it (no `.ddmq` in it).
        let tmp = self.dir.join(format!(
            ".tmp-msg-{}-{}-{}",
            std::process::id(),
            name.queue_number,
            name.id
        ));
        let target = self.dir.join(name.to_string());
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| self.missing_queue_or("create", &tmp, e))?;
            f.write_all(msg.to_json().as_bytes())
                .map_err(|e| io_err("write", &tmp, e))?;
            if durable {
                f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
            }
            drop(f);
            std::fs::rename(&tmp, &target).map_err(|e| io_err("rename", &target, e))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if durable {
            sync_dir(&self.dir)?;
        }
        let mut listing = self.listing.lock().unwrap();
        if listing.listed_at.is_some() {
            listing.pending.insert(name.clone());
            self.note_own_change(&mut listing);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- consume

    fn note_own_change(&self, listing: &mut Listing) {
        // Only when we knew the whole content before our change do we know it after.
        if listing.known.is_some() {
            listing.known = DirSignature::of(&self.dir).ok();
        }
    }

    fn refresh(&self, listing: &mut Listing) -> Result<()> {
        let started = Instant::now();
        let signature =
            DirSignature::of(&self.dir).map_err(|e| self.missing_queue_or("stat", &self.dir, e))?;
        let now = Instant::now();
        listing.deferred.retain(|_, until| *until > now);
        let mut names = Vec::new();
        for_each_entry(&self.dir, |name| {
            if let Some(w) = WaitingName::parse_bytes(name) {
                names.push(w);
            }
        })
        .map_err(|e| self.missing_queue_or("list", &self.dir, e))?;
        if !listing.deferred.is_empty() {
            names.retain(|w| !listing.deferred.contains_key(&w.to_string()));
        }
        names.sort_unstable();
        // From sorted input the set is built in bulk, not entry by entry.
        let pending: BTreeSet<WaitingName> = names.into_iter().collect();
        listing.pending = pending;
        listing.known = Some(signature);
        listing.listed_at = Some(started);
        listing.cost = started.elapsed();
        Ok(())
    }

    /// The next candidate in delivery order, listing the directory again when needed.
    fn next_candidate(&self, fresh_listing: &mut bool) -> Result<Option<WaitingName>> {
        let mut listing = self.listing.lock().unwrap();
        let stale = match listing.listed_at {
            None => true,
            Some(at) => {
                listing.pending.is_empty()
                    || (at.elapsed() >= (listing.cost * 4).max(MIN_RELIST_INTERVAL)
                        && listing.known != DirSignature::of(&self.dir).ok())
            }
        };
        if stale {
            if listing.pending.is_empty() && *fresh_listing {
                // We listed during this call already and took or lost everything: empty.
                return Ok(None);
            }
            self.refresh(&mut listing)?;
            *fresh_listing = true;
        }
        if listing.contention == 0 || listing.pending.len() < 2 {
            return Ok(listing.pending.pop_first());
        }
        let window = listing
            .pending
            .len()
            .min(4usize << listing.contention.min(5));
        let pick = (listing.next_random() % window as u64) as usize;
        let chosen = listing.pending.iter().nth(pick).cloned();
        if let Some(c) = &chosen {
            listing.pending.remove(c);
        }
        Ok(chosen)
    }

    /// Claims up to `n` messages in delivery order. Lost races are skipped silently; an empty
    /// result means the queue held nothing unclaimed when we looked. What was claimed is always
    /// returned, even when a later claim fails (R2).
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
    pub fn consume_one(&self) -> Result<Option<Delivery>> {
        let settings = self.settings()?;
        let mut fresh_listing = false;
        loop {
            let Some(candidate) = self.next_candidate(&mut fresh_listing)? else {
                return Ok(None);
            };
            let work_name = WorkName {
                expiry: now_secs().saturating_add(settings.message_timeout),
                waiting: candidate,
            };
            let from = self.dir.join(work_name.waiting.to_string());
            let to = self.work.join(work_name.to_string());
            // Under contention most candidates are gone already: a lookup is much cheaper than a
            // rename, which takes the filesystem-wide rename lock even when it fails.
            let contended = self.listing.lock().unwrap().contention > 0;
            let claimed = if contended
                && matches!(std::fs::symlink_metadata(&from), Err(e) if is_not_found(&e))
            {
                Err(io::Error::from(io::ErrorKind::NotFound))
            } else {
                std::fs::rename(&from, &to)
            };
            match claimed {
                Ok(()) => {
                    let mut listing = self.listing.lock().unwrap();
                    listing.contention /= 2;
                    self.note_own_change(&mut listing);
                }
                Err(e) if is_not_found(&e) => {
                    if !self.dir.is_dir() {
                        return Err(Error::NoSuchQueue(self.dir.clone()));
                    }
                    let mut listing = self.listing.lock().unwrap();
                    listing.contention = (listing.contention + 1).min(8);
                    continue; // another consumer was first
                }
                Err(e) => return Err(io_err("claim", &from, e)),
            }
            match self.read_claimed(&to, work_name, &settings)? {
                Some(d) => return Ok(Some(d)),
                None => continue,
            }
        }
    }

    /// Reads a message we just renamed into `work/`. None if it was unreadable (given back or quarantined).
    fn read_claimed(
        &self,
        path: &Path,
        mut work_name: WorkName,
        settings: &Settings,
    ) -> Result<Option<Delivery>> {
        let (bytes, mtime) = match read_message_file(path) {
            Ok(x) => x,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) if is_unreadable_entry(&e) => {
                self.quarantine(path, &format!("{e}"));
                return Ok(None);
            }
            Err(e) => return Err(io_err("read", path, e)),
        };
        let mut message = match Message::from_json(&bytes) {
            Ok(m) => m,
            Err(e) => {
                let young = mtime.elapsed().map(|age| age < YOUNG_FILE).unwrap_or(true);
                if young {
                    // Probably the original still writing it in place: give it back, retry later.
                    let back = self.dir.join(work_name.waiting.to_string());
                    if std::fs::rename(path, &back).is_ok() {
                        let mut listing = self.listing.lock().unwrap();
                        listing
                            .deferred
                            .insert(work_name.waiting.to_string(), Instant::now() + YOUNG_FILE);
                    }
                } else {
                    self.quarantine(path, &e.to_string());
                }
                return Ok(None);
            }
        };
        let timeout = message.timeout_or(settings.message_timeout);
        if timeout != settings.message_timeout {
            // The message has its own timeout: move it to its real expiry.
            let renamed = WorkName {
                expiry: (work_name.expiry - settings.message_timeout).saturating_add(timeout),
                waiting: work_name.waiting.clone(),
            };
            let to = self.work.join(renamed.to_string());
            match std::fs::rename(path, &to) {
                Ok(()) => work_name = renamed,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(io_err("rename", path, e)),
            }
        }
        message.filename = work_name.to_string();
        Ok(Some(Delivery { message, work_name }))
    }

    /// Waits up to `limit` for a message, watching the directory with a cheap stat every
    /// `poll` (change events do not cross NFS hosts). `give_up` is asked between polls.
    pub fn consume_wait(
        &self,
        limit: Duration,
        poll: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Result<Option<Delivery>> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = DirSignature::of(&self.dir).ok();
            if let Some(d) = self.consume_one()? {
                return Ok(Some(d));
            }
            loop {
                if Instant::now() >= deadline || give_up() {
                    return Ok(None);
                }
                std::thread::sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
                let now_sig = DirSignature::of(&self.dir)
                    .map_err(|e| self.missing_queue_or("stat", &self.dir, e))?;
                // A deferred (young, unreadable) file may be complete now, with no directory change to show it.
                if Some(now_sig) != seen || self.deferral_ended() {
                    break;
                }
            }
        }
    }

    fn deferral_ended(&self) -> bool {
        let now = Instant::now();
        self.listing
            .lock()
            .unwrap()
            .deferred
            .values()
            .any(|until| *until <= now)
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

    fn find_in_flight(&self, wanted: impl Fn(&WorkName) -> bool) -> Result<Option<WorkName>> {
        Ok(self.in_flight()?.into_iter().find(|w| wanted(w)))
    }

    /// Acknowledges: deletes the in-flight message (B1: whatever its requeue flag).
    pub fn ack(&self, name_or_id: &str) -> Result<AckOutcome> {
        // The common case, a current work/ name, is one unlink; only a miss searches.
        if WorkName::parse(name_or_id).is_some() {
            let path = self.work.join(name_or_id);
            match std::fs::remove_file(&path) {
                Ok(()) => return Ok(AckOutcome::Acked(name_or_id.to_string())),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(io_err("ack", &path, e)),
            }
        }
        let Some(w) = self.resolve_in_flight(name_or_id)? else {
            return Ok(AckOutcome::NotFound);
        };
        let path = self.work.join(w.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(AckOutcome::Acked(w.to_string())),
            Err(e) if is_not_found(&e) => Ok(AckOutcome::NotFound),
            Err(e) => Err(io_err("ack", &path, e)),
        }
    }

    /// Negative acknowledgement: requeue or delete as the message's `requeue` says (B6), within
    /// its `requeue_limit` (B5); `force_requeue` requeues even a message that says drop.
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
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                let mut listing = self.listing.lock().unwrap();
                if listing.listed_at.is_some() {
                    listing.pending.insert(w.waiting.clone());
                    self.note_own_change(&mut listing);
                }
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
            Ok((bytes, _)) => Message::from_json(&bytes)
                .map(|m| m.timeout_or(settings.message_timeout))
                .unwrap_or(settings.message_timeout),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(io_err("read", &from, e)),
        };
        let renewed = WorkName {
            expiry: now_secs().saturating_add(timeout),
            waiting: w.waiting.clone(),
        };
        if renewed == w {
            return Ok(Some(w));
        }
        match std::fs::rename(&from, self.work.join(renewed.to_string())) {
            Ok(()) => Ok(Some(renewed)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io_err("touch", &from, e)),
        }
    }

    /// Takes an in-flight message away from everyone else by renaming it to a private claim
    /// name, then requeues, drops or dead-letters it.
    fn requeue_in_flight(&self, w: &WorkName, force_requeue: bool) -> Result<RequeueOutcome> {
        let from = self.work.join(w.to_string());
        let claim = self.work.join(format!(
            ".claim-{}-{}",
            now_secs(),
            uuid::Uuid::new_v4().simple()
        ));
        match std::fs::rename(&from, &claim) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(RequeueOutcome::NotFound),
            Err(e) => return Err(io_err("claim", &from, e)),
        }
        self.finish_claim(&claim, force_requeue, &w.waiting.to_string())
    }

    fn finish_claim(
        &self,
        claim: &Path,
        force_requeue: bool,
        original_name: &str,
    ) -> Result<RequeueOutcome> {
        let bytes = match read_message_file(claim) {
            Ok((b, _)) => b,
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
                let dead = self.own_subdir("dead")?;
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

    fn quarantine(&self, path: &Path, reason: &str) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("unnamed")
            .to_string();
        self.quarantine_as(path, &name, reason)
    }

    /// Moves an unreadable file aside so the queue keeps flowing.
    fn quarantine_as(&self, path: &Path, name: &str, reason: &str) {
        let dir = match self.own_subdir("quarantine") {
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
    fn own_subdir(&self, name: &str) -> Result<PathBuf> {
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

    // ---------------------------------------------------------------- housekeeping

    /// Housekeeping before a publish or consume: its failure (a full disk cannot take the new
    /// `cleaned` stamp) must not stop the publish or consume itself.
    fn clean_best_effort(&self) {
        if let Err(e) = self.maybe_clean() {
            log::warn!("housekeeping of queue {} failed: {e}", self.name);
        }
    }

    /// Runs housekeeping if a minute passed since the last run, by `cleaned` in the queue's
    /// settings (read fresh) and by this process's own last run.
    pub fn maybe_clean(&self) -> Result<Option<CleanReport>> {
        {
            let mut state = self.clean_state.lock().unwrap();
            if state.0.map(|t| t.elapsed() < SETTINGS_TTL).unwrap_or(false) {
                return Ok(None);
            }
            if state
                .1
                .map(|t| t.elapsed() < Duration::from_secs(CLEAN_INTERVAL_SECS))
                .unwrap_or(false)
            {
                return Ok(None);
            }
            state.0 = Some(Instant::now());
        }
        let settings = self.settings()?;
        if settings.cleaned.saturating_add(CLEAN_INTERVAL_SECS) > now_secs() {
            return Ok(None);
        }
        self.clean().map(Some)
    }

    /// Housekeeping now: requeue or drop expired messages, recover stale claims, remove stale
    /// temporary files, then record `cleaned`. Safe with any number of concurrent cleaners.
    pub fn clean(&self) -> Result<CleanReport> {
        let now = now_secs();
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
            } else if let Some(rest) = name.strip_prefix(".claim-") {
                let claimed_at: u64 = rest
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if claimed_at.saturating_add(STALE_CLAIM_SECS) >= now {
                    continue;
                }
                // Re-claim atomically, so one cleaner alone recovers it.
                let fresh = self
                    .work
                    .join(format!(".claim-{now}-{}", uuid::Uuid::new_v4().simple()));
                if std::fs::rename(entry.path(), &fresh).is_err() {
                    continue;
                }
                report.recovered_claims += 1;
                self.finish_claim(&fresh, false, &format!("recovered{}", &name[6..]))?
            } else {
                if is_leftover(&name)
                    && is_stale(&entry.path(), now)
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
                && is_stale(&entry.path(), now)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                report.removed_temp_files += 1;
            }
        }
        // The stamp only throttles housekeeping: a file that another host keeps rewriting
        // (it reads torn) is left to that host rather than failing the clean.
        match config::set_key(
            &self.config_path(),
            "cleaned",
            serde_yaml::Value::Number(now.into()),
        ) {
            Err(e @ Error::Config { .. }) => {
                log::warn!("{e}; not stamping the clean time this round")
            }
            other => other?,
        }
        self.forget_settings();
        self.clean_state.lock().unwrap().1 = Some(Instant::now());
        if report != CleanReport::default() {
            log::info!("cleaned queue {}: {report:?}", self.name);
        }
        Ok(report)
    }

    // ---------------------------------------------------------------- inspection

    /// Waiting messages in delivery order (a fresh listing).
    pub fn waiting(&self) -> Result<Vec<WaitingName>> {
        let mut names = list_names(&self.dir, WaitingName::parse_bytes)
            .map_err(|e| self.missing_queue_or("list", &self.dir, e))?;
        names.sort();
        Ok(names)
    }

    /// In-flight messages, soonest expiry first.
    pub fn in_flight(&self) -> Result<Vec<WorkName>> {
        let mut names = list_names(&self.work, WorkName::parse_bytes)
            .map_err(|e| self.missing_queue_or("list", &self.work, e))?;
        names.sort_by(|a, b| (a.expiry, &a.waiting).cmp(&(b.expiry, &b.waiting)));
        Ok(names)
    }

    /// Reads a waiting message without taking it.
    pub fn read_waiting(&self, name: &WaitingName) -> Result<Option<Message>> {
        self.read_record(&self.dir.join(name.to_string()))
    }

    /// Reads an in-flight message without changing it.
    pub fn read_in_flight(&self, name: &WorkName) -> Result<Option<Message>> {
        self.read_record(&self.work.join(name.to_string()))
    }

    fn read_record(&self, path: &Path) -> Result<Option<Message>> {
        match read_message_file(path) {
            Ok((bytes, _)) => Message::from_json(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io_err("read", path, e)),
        }
    }

    /// Counts of waiting and in-flight messages, and the oldest waiting message's age.
    pub fn status(&self, with_age: bool) -> Result<QueueStatus> {
        let waiting = self.waiting()?;
        let in_flight = list_names(&self.work, WorkName::parse_bytes)
            .map_err(|e| self.missing_queue_or("list", &self.work, e))?
            .len();
        let oldest_waiting_age = if with_age {
            let now = SystemTime::now();
            waiting
                .iter()
                .filter_map(|w| {
                    std::fs::symlink_metadata(self.dir.join(w.to_string()))
                        .ok()?
                        .modified()
                        .ok()
                })
                .min()
                .map(|t| now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0))
        } else {
            None
        };
        Ok(QueueStatus {
            waiting: waiting.len(),
            in_flight,
            oldest_waiting_age,
        })
    }

    /// Deletes one message, waiting or in flight, by its file name (del_msg).
    pub fn delete_message(&self, file_name: &str) -> Result<bool> {
        let path = if WorkName::parse(file_name).is_some() {
            self.work.join(file_name)
        } else if WaitingName::parse(file_name).is_some() {
            self.dir.join(file_name)
        } else {
            return Err(Error::InvalidMessageName(file_name.to_string()));
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(io_err("delete", &path, e)),
        }
    }

    /// Deletes every message, waiting and in flight. Returns (waiting, in flight) removed.
    pub fn purge(&self) -> Result<(usize, usize)> {
        let remove_all = |dir: &Path| -> Result<usize> {
            let mut n = 0;
            let entries =
                std::fs::read_dir(dir).map_err(|e| self.missing_queue_or("list", dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if super::names::original_sees_as_message(name)
                    && entry.file_type().map(|t| !t.is_dir()).unwrap_or(false)
                {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => n += 1,
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(io_err("delete", &entry.path(), e)),
                    }
                }
            }
            Ok(n)
        };
        let waiting = remove_all(&self.dir)?;
        let work = remove_all(&self.work)?;
        let mut listing = self.listing.lock().unwrap();
        *listing = Listing::default();
        Ok((waiting, work))
    }

    /// Deletes the queue directory. Anything ddmq did not create makes it refuse first (B16).
    pub(crate) fn delete(&self, only_if_empty: bool) -> Result<()> {
        let ours = |name: &str, in_work: bool| {
            super::names::original_sees_as_message(name)
                || name.starts_with(".tmp-")
                || (in_work && name.starts_with(".claim-"))
                || (!in_work && matches!(name, "ddmq.yaml" | "work" | "dead" | "quarantine"))
        };
        let mut foreign = Vec::new();
        let mut messages = 0usize;
        for (dir, in_work) in [(&self.dir, false), (&self.work, true)] {
            let entries =
                std::fs::read_dir(dir).map_err(|e| self.missing_queue_or("list", dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !ours(&name, in_work) {
                    foreign.push(name);
                } else if super::names::original_sees_as_message(&name)
                    || name.starts_with(".claim-")
                {
                    messages += 1;
                }
            }
        }
        if !foreign.is_empty() {
            foreign.sort();
            return Err(Error::ForeignFiles {
                path: self.dir.clone(),
                names: foreign.join(", "),
            });
        }
        if only_if_empty && messages > 0 {
            return Err(Error::QueueNotEmpty(self.dir.clone()));
        }
        // Rename away first so no client sees a half-deleted queue, then remove at leisure.
        let doomed = self.root.join(temp_name("deleted"));
        std::fs::rename(&self.dir, &doomed)
            .map_err(|e| self.missing_queue_or("delete", &self.dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| io_err("delete", &doomed, e))
    }
}

/// Files that housekeeping removes once stale: our temporary files, and the `.fuse_hidden*`
/// copies that libfuse filesystems such as sshfs leave of files unlinked while still open
/// through the same mount (an acked message, a replaced ddmq.yaml). NFS's `.nfs*` files are
/// left alone: removing one breaks the client that holds it.
fn is_leftover(name: &str) -> bool {
    name.starts_with(".tmp-") || name.starts_with(".fuse_hidden")
}

fn is_stale(path: &Path, now: u64) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| (m.mtime().max(0) as u64).saturating_add(STALE_TEMP_SECS) < now)
        .unwrap_or(false)
}

/// Errors of reading an entry that will never read as a message: a link (we open with
/// O_NOFOLLOW), a directory, a special or oversized file.
fn is_unreadable_entry(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EISDIR))
        || e.kind() == io::ErrorKind::InvalidData
}

fn list_names<T>(dir: &Path, parse: fn(&[u8]) -> Option<T>) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    for_each_entry(dir, |name| {
        if let Some(parsed) = parse(name) {
            out.push(parsed);
        }
    })?;
    Ok(out)
}

/// Calls `f` with each entry name of `dir` (not `.` and `..`), borrowing it: std's ReadDir
/// allocates a name per entry, which dominates listing a deep queue.
fn for_each_entry(dir: &Path, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let mut d = nix::dir::Dir::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    for entry in d.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            f(name);
        }
    }
    Ok(())
}

/// Reads a message file without following symlinks (a planted link never leads out of ROOT).
fn read_message_file(path: &Path) -> io::Result<(Vec<u8>, SystemTime)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes is too large for a message file", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    f.read_to_end(&mut bytes)?;
    Ok((bytes, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}
