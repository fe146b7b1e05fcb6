//! A ddmq root directory: opening or initialising it, and creating, listing, opening and deleting
//! its queues.

use super::config::{self, Settings};
use super::error::{Error, Result, io_err};
use super::files::{dir_is_gone, retry_stale};
use super::names::{WORK_DIR, is_valid_queue_name, temp_name};
use super::queue::Queue;
use crate::locking::LockRecovering;
use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
                    let _ = std::fs::write(&example, Settings::example_yaml());
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

    /// The keys written in the settings file of queue `queue` (the root's with None), as they
    /// are, as JSON (see [`config::read_file_as_json`]).
    pub fn settings_file(&self, queue: Option<&str>) -> Result<serde_json::Map<String, Value>> {
        match queue {
            None => config::read_file_as_json(&self.root.join(config::CONFIG_FILE)),
            Some(name) => config::read_file_as_json(&self.queue(name)?.config_path()),
        }
    }

    /// Sets keys of the settings file of queue `queue` (the root's with None): the file as it is
    /// with `changes` over it, checked as a whole, replaced atomically; a refused change writes
    /// nothing. Settings this process cached and the change affects (the queue's; with the
    /// root's, every queue's) are read again on their next use.
    pub fn update_settings(
        &self,
        queue: Option<&str>,
        changes: serde_json::Map<String, Value>,
    ) -> Result<()> {
        match queue {
            None => {
                config::update_file(&self.root.join(config::CONFIG_FILE), changes)?;
                let queues = self.queues.lock_recovering();
                for q in queues.values() {
                    q.forget_settings();
                }
            }
            Some(name) => {
                let q = self.queue(name)?;
                config::update_file(&q.config_path(), changes)
                    .map_err(|e| q.no_such_queue_or(e))?;
                q.forget_settings();
            }
        }
        Ok(())
    }

    /// Checks settings text meant for queue `name`'s `ddmq.yaml` (syntax and types), as
    /// [`Queue::write_config_text`] would, without writing anything; errors name that file.
    /// Returns the keys in it that ddmq does not know (kept, but ignored, by the engine).
    pub fn validate_queue_settings(&self, name: &str, text: &[u8]) -> Result<Vec<String>> {
        let path = self.queue_dir(name)?.join(config::CONFIG_FILE);
        config::validate(&path, text).map(|map| config::unknown_keys(&map))
    }

    fn is_queue_dir(dir: &Path) -> bool {
        // ESTALE: a name another host changed; look it up again.
        let kind = |p: &Path| retry_stale(|| p.symlink_metadata()).map(|m| m.file_type());
        kind(dir).is_ok_and(|t| t.is_dir())
            && kind(&dir.join(WORK_DIR)).is_ok_and(|t| t.is_dir())
            && kind(&dir.join(config::CONFIG_FILE)).is_ok_and(|t| t.is_file())
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
            std::fs::create_dir(tmp.join(WORK_DIR))
                .map_err(|e| io_err("create", &tmp.join(WORK_DIR), e))?;
            let conf = tmp.join(config::CONFIG_FILE);
            // Only `cleaned`, so the root settings are not shadowed (0.9.10 copied every default into a
            // new queue's file, so later root changes never reached it: B15).
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
        let mut queues = self.queues.lock_recovering();
        // A handle is kept only under a valid name: found, it needs no check and no path.
        if let Some(q) = queues.get(name) {
            return Ok(q.clone());
        }
        let dir = self.queue_dir(name)?;
        if !Self::is_queue_dir(&dir) {
            // A network filesystem can answer "not found" for a moment for what is there: only
            // a directory that stays gone is no queue; one that is there is looked at again.
            if dir_is_gone(&dir) {
                return Err(Error::NoSuchQueue(dir));
            }
            if !Self::is_queue_dir(&dir) {
                return Err(Error::NotAQueue(dir));
            }
        }
        let q = Arc::new(Queue::new(self.root.clone(), name.to_string(), dir));
        queues.insert(name.to_string(), q.clone());
        Ok(q)
    }

    /// Runs `op` on queue `name`. A queue found gone (deleted behind our back, or replaced by
    /// something that is not a queue) has its cached handle forgotten, so that the next call
    /// looks again rather than keep a handle on a directory that is no longer the queue.
    pub fn with_queue<T>(&self, name: &str, op: impl FnOnce(&Queue) -> Result<T>) -> Result<T> {
        let result = self.queue(name).and_then(|q| op(&q));
        if matches!(
            result,
            Err(Error::NoSuchQueue(_)) | Err(Error::NotAQueue(_))
        ) {
            self.forget_queue(name);
        }
        result
    }

    /// Forgets a cached handle (after the queue was deleted, by us or behind our back).
    pub fn forget_queue(&self, name: &str) {
        self.queues.lock_recovering().remove(name);
    }

    /// Deletes a queue. With `only_if_empty`, refuses while it holds messages. Files ddmq did not
    /// create make it refuse before anything is deleted (0.9.10 found them only after deleting
    /// half the queue, B16).
    pub fn delete_queue(&self, name: &str, only_if_empty: bool) -> Result<()> {
        let q = self.queue(name)?;
        self.forget_queue(name);
        q.delete(only_if_empty)
    }
}
