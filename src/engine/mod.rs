//! The queue protocol on disk: no FUSE, no CLI. This doc is the protocol's specification.
//!
//! # Layout (interchangeable with ddmq 0.9.10 in both directions)
//!
//! ```text
//! ROOT/ddmq.yaml                      root settings (may be empty)
//! ROOT/<queue>/ddmq.yaml              queue settings; a new queue gets only `cleaned: 0`, so root
//!                                     settings are not shadowed (B15)
//! ROOT/<queue>/<P>.<N>.ddmq<ID>       a waiting message: priority P, queue number N, id ID
//! ROOT/<queue>/work/<E>.<P>.<N>.ddmq<ID>  the same message in flight, expiring at epoch second E
//! ROOT/<queue>/dead/<P>.<N>.ddmq<ID>  additions, invisible to the original, which only lists
//! ROOT/<queue>/quarantine/<name>      `*.ddmq*` entries of the queue and work directories
//! ```
//!
//! A queue is a directory (not a symlink) holding `ddmq.yaml` and a `work/` directory, named
//! `^[A-Za-z0-9_-]+$`. Message content is one JSON object (see [`message`]). Delivery order is
//! P ascending, then N ascending, compared as numbers (B3); 0 is the most urgent priority (B4).
//! N is the publish time in microseconds, made strictly increasing within a process, so it is
//! FIFO for one publisher and time-ordered across publishers and hosts (as 0.9.14 moved to).
//!
//! Temporary names never contain `.ddmq`, so the original never takes them for messages:
//! `.tmp-*` (a message or settings file being written) and `work/.claim-<epoch>-*` (a message
//! being requeued or dropped by exactly one client).
//!
//! # State changes, each one atomic filesystem call
//!
//! | change | the call | who loses a race sees |
//! |---|---|---|
//! | publish | `rename(.tmp-X, P.N.ddmqID)` after the full write (and fsync if `durable`) | — (names are unique) |
//! | consume (claim) | `rename(P.N.ddmqID, work/E.P.N.ddmqID)` | ENOENT: take the next one |
//! | ack | `unlink(work/E.…)` | ENOENT: already acked or expired |
//! | give back (reader left early) | `rename(work/E.P.N.ddmqID, P.N.ddmqID)`: keeps its place | ENOENT |
//! | extend lease (touch) | `rename(work/E.…, work/E2.…)` | ENOENT |
//! | nack / expiry | `rename(work/E.…, work/.claim-T-R)`; then the claimer alone publishes the requeued copy (or deletes it, or moves it to `dead/`) and unlinks the claim | ENOENT: someone else handles it |
//! | quarantine | `rename(<file>, quarantine/<name>)` | ENOENT |
//!
//! A claim file left by a client that died mid-requeue is re-claimed (renamed again) by a cleaner
//! after five minutes, so nothing is lost; at worst one duplicate per crash.
//!
//! # Housekeeping
//!
//! `clean` requeues or drops expired messages (`E < now`), recovers stale claims and removes stale
//! temporary files. Callers run it at most once a minute per queue, judged by `cleaned` in the
//! queue's `ddmq.yaml`, read fresh (B7) and rewritten atomically under a unique temporary name
//! (R4). Expiry uses the cleaner's clock against the consumer's; see doc/RELIABILITY.md on clock skew.
//!
//! # Cost
//!
//! Publish writes one file: no listing. Consume works from a sorted in-memory listing of the queue
//! directory, refreshed when it runs out, or when the directory changed behind our back and the
//! last listing is older than 50 ms and four times what a listing costs. So each message costs
//! O(log n) whatever the depth, a long-lived caller sees a more urgent message from another client
//! within that bound (at once when its listing runs out), and an empty answer is only given by a
//! listing made during that call. Consumers that lose claims to each other draw candidates at
//! random from the head of the listing, so they stop colliding on the same message.

pub mod config;
mod lease;
pub mod message;
pub mod names;
mod queue;
mod survey;

pub use config::Settings;
pub use message::{Message, Requeue};
pub use names::{WaitingName, WorkName, is_valid_queue_name};
pub use queue::{
    AckOutcome, CleanReport, ConsumeOptions, Delivery, PublishOptions, Queue, QueueStatus,
    RequeueOutcome,
};
pub use survey::Survey;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The engine's error: every variant names the path or name it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("root folder missing: {0} (use -f to create it)")]
    RootMissing(PathBuf),
    #[error("root folder uninitiated: {0} has no ddmq.yaml (use -f to initiate it)")]
    RootUninitiated(PathBuf),
    #[error("invalid queue name {0:?}: use letters, digits, '_' and '-' only (at most 255)")]
    InvalidQueueName(String),
    #[error("queue does not exist: {0}")]
    NoSuchQueue(PathBuf),
    #[error("{0} exists but is not a ddmq queue (no ddmq.yaml or no work/ directory)")]
    NotAQueue(PathBuf),
    #[error("queue {0} still holds messages")]
    QueueNotEmpty(PathBuf),
    #[error("{path} holds files that ddmq did not create ({names}); not deleting anything")]
    ForeignFiles { path: PathBuf, names: String },
    #[error("invalid message file name or id {0:?}")]
    InvalidMessageName(String),
    #[error("message not found: {0}")]
    MessageNotFound(String),
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("message of {size} bytes is larger than max_message_bytes ({limit}) of queue {queue}")]
    TooLarge {
        queue: String,
        size: u64,
        limit: u64,
    },
    #[error("{path}: corrupt message file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Error {
    /// The OS error behind this one, if any (for errno mapping in the layers above).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Seconds since the epoch on this host's clock.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new queue number: the time in microseconds, strictly increasing within this process.
pub fn next_queue_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// A temporary name in `dir` that the original never mistakes for a message.
pub(crate) fn temp_name(kind: &str) -> String {
    format!(
        ".tmp-{kind}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes `bytes` to `path` atomically: a unique temporary file in the same directory, then rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(temp_name("w"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err("write", &tmp, e))?;
        if durable {
            f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
        }
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io_err("rename", path, e))?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync", dir, e))
}

/// A ddmq root directory: the entry point for a one-shot call or a long-lived caller.
/// Queue handles are cached, so a daemon keeps each queue's sorted listing between calls.
pub struct Broker {
    root: PathBuf,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

impl Broker {
    /// Opens an initialised root (one holding `ddmq.yaml`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Broker> {
        let root = root.into();
        match std::fs::metadata(root.join(config::CONFIG_FILE)) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(Error::RootUninitiated(root)),
            Err(_) if root.is_dir() => return Err(Error::RootUninitiated(root)),
            Err(_) => return Err(Error::RootMissing(root)),
        }
        // Settings are checked now (syntax and types) so a broken root file is reported up front.
        let path = root.join(config::CONFIG_FILE);
        let map = config::read_mapping_settled(&path)?.unwrap_or_default();
        Settings::resolve(&[(&path, &map)])?;
        Ok(Broker {
            root,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Opens the root, creating and initialising it if needed (the CLI's `-f`).
    pub fn open_or_init(root: impl Into<PathBuf>) -> Result<Broker> {
        let root = root.into();
        let conf = root.join(config::CONFIG_FILE);
        if !conf.is_file() {
            std::fs::create_dir_all(&root).map_err(|e| io_err("create root", &root, e))?;
            if root
                .symlink_metadata()
                .map(|m| !m.is_dir() && !m.file_type().is_symlink())
                .unwrap_or(false)
            {
                return Err(Error::NotAQueue(root));
            }
            // create_new: two processes initialising at once must not truncate each other's file.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&conf)
            {
                Ok(_) => {
                    let example = root.join("ddmq.yaml.example");
                    let _ = std::fs::write(&example, Settings::original_defaults_yaml());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &conf, e)),
            }
        }
        Broker::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root's own settings mapping merged over the defaults.
    pub fn root_settings(&self) -> Result<Settings> {
        let path = self.root.join(config::CONFIG_FILE);
        let map = config::read_mapping_settled(&path)?.unwrap_or_default();
        Settings::resolve(&[(&path, &map)])
    }

    fn is_queue_dir(dir: &Path) -> bool {
        let is_real_dir = |p: &Path| p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
        is_real_dir(dir)
            && is_real_dir(&dir.join("work"))
            && dir
                .join(config::CONFIG_FILE)
                .symlink_metadata()
                .map(|m| m.is_file())
                .unwrap_or(false)
    }

    /// Names of all queues, sorted.
    pub fn list_queues(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.root).map_err(|e| io_err("list", &self.root, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &self.root, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_valid_queue_name(&name) && Self::is_queue_dir(&entry.path()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn queue_dir(&self, name: &str) -> Result<PathBuf> {
        if !is_valid_queue_name(name) {
            return Err(Error::InvalidQueueName(name.to_string()));
        }
        Ok(self.root.join(name))
    }

    /// True if `name` is an existing queue.
    pub fn queue_exists(&self, name: &str) -> Result<bool> {
        Ok(Self::is_queue_dir(&self.queue_dir(name)?))
    }

    /// Creates a queue. Ok(false) if it already exists. Built in a temporary directory and renamed
    /// into place, so concurrent creators never see a half-made queue.
    pub fn create_queue(&self, name: &str) -> Result<bool> {
        let dir = self.queue_dir(name)?;
        if Self::is_queue_dir(&dir) {
            return Ok(false);
        }
        if dir.symlink_metadata().is_ok()
            && std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            // Another creator's rename may have landed between the two looks.
            return if Self::is_queue_dir(&dir) {
                Ok(false)
            } else {
                Err(Error::NotAQueue(dir))
            };
        }
        let tmp = self.root.join(temp_name("queue"));
        let build = || -> Result<()> {
            std::fs::create_dir(&tmp).map_err(|e| io_err("create", &tmp, e))?;
            std::fs::create_dir(tmp.join("work"))
                .map_err(|e| io_err("create", &tmp.join("work"), e))?;
            let conf = tmp.join(config::CONFIG_FILE);
            std::fs::write(&conf, "cleaned: 0\n").map_err(|e| io_err("write", &conf, e))
        };
        let result = build().and_then(|_| match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(true),
            Err(e)
                if Self::is_queue_dir(&dir)
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) =>
            {
                Ok(false)
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTEMPTY) | Some(libc::EEXIST) | Some(libc::ENOTDIR)
                ) =>
            {
                Err(Error::NotAQueue(dir.clone()))
            }
            Err(e) => Err(io_err("rename", &dir, e)),
        });
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// A handle on an existing queue (cached: it keeps the queue's listing between calls).
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        let dir = self.queue_dir(name)?;
        let mut queues = self.queues.lock().unwrap();
        if let Some(q) = queues.get(name) {
            return Ok(q.clone());
        }
        if !Self::is_queue_dir(&dir) {
            return Err(if dir.exists() {
                Error::NotAQueue(dir)
            } else {
                Error::NoSuchQueue(dir)
            });
        }
        let q = Arc::new(Queue::new(self.root.clone(), name.to_string(), dir));
        queues.insert(name.to_string(), q.clone());
        Ok(q)
    }

    /// Forgets a cached handle (after the queue was deleted, by us or behind our back).
    pub fn forget_queue(&self, name: &str) {
        self.queues.lock().unwrap().remove(name);
    }

    /// Deletes a queue. With `only_if_empty`, refuses while it holds messages. Files ddmq did not
    /// create make it refuse before anything is deleted (B16).
    pub fn delete_queue(&self, name: &str, only_if_empty: bool) -> Result<()> {
        let q = self.queue(name)?;
        self.forget_queue(name);
        q.delete(only_if_empty)
    }
}
