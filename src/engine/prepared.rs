//! A text message published as its body arrives: each piece is checked as UTF-8 and escaped
//! straight into the message file, and the other fields are appended when the body is complete,
//! so a body of any size costs no memory and is written once.
//!
//! This works because the body is the first field of the record: the file is
//! [`MESSAGE_HEAD`], the escaped body, then the rest of what [`Message::to_json`] writes, fields
//! assigned at [`PreparedMessage::finish`] (queue number, id, name) included. Byte for byte it is
//! the file a one-shot publish of the same message writes.
//!
//! The file has a temporary name (`.tmp-in-…`) in the queue directory until `finish` renames it
//! into place: the publish is still that one rename. Dropped unfinished, it is removed; left by a
//! process that died, it is an old temporary file, which housekeeping removes. Housekeeping can
//! also remove it under a writer that stayed idle for longer than that (it goes by the file's
//! modification time): `finish` then writes the record again from the open file and publishes
//! that copy, so nothing is lost.

use super::error::{Error, Result, io_err};
use super::files::{copy_atomically, dir_is_gone, flush_checked, is_not_found, sync_dir};
use super::message::{MESSAGE_HEAD, escape_str_into, unescape_into};
use super::names::{WaitingName, temp_name};
use super::queue::{PublishOptions, Queue};
use crate::locking::LockRecovering;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};
use serde_json::Value;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Input escaped per step: at most six output bytes per input byte, so the output buffer stays
/// near [`FLUSH_AT`] whatever the text.
const STEP: usize = 16 << 10;
/// Escaped bytes gathered before a write to the file.
const FLUSH_AT: usize = 64 << 10;

/// A message file being written. Dropping it unfinished removes the file.
pub struct PreparedMessage {
    queue: Arc<Queue>,
    /// The queue directory, open, so the file is removed even from a queue renamed meanwhile.
    dir: OwnedFd,
    /// The file's temporary name in `dir`.
    temp: String,
    file: File,
    /// Body bytes accepted, `carry` included.
    len: u64,
    /// The queue's `max_message_bytes` when the publish began.
    limit: u64,
    /// The first bytes of a character cut by the end of the last write, waiting for the rest.
    carry: Vec<u8>,
    /// A write failed part-way: the file no longer ends where `len` says.
    broken: bool,
    published: bool,
}

impl Queue {
    /// Starts publishing a text message whose body comes in pieces: creates its file (see
    /// [`PreparedMessage`]).
    pub fn begin_publish(self: &Arc<Self>) -> Result<PreparedMessage> {
        let limit = self.settings()?.max_message_bytes;
        let dir = open(
            &self.dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.missing_queue_or("open", &self.dir, e.into()))?;
        let temp = temp_name("in");
        let fd = openat(
            &dir,
            temp.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o666),
        )
        .map_err(|e| self.missing_queue_or("create", &self.dir.join(&temp), e.into()))?;
        let mut prepared = PreparedMessage {
            queue: self.clone(),
            dir,
            temp,
            file: File::from(fd),
            len: 0,
            limit,
            carry: Vec::new(),
            broken: false,
            published: false,
        };
        prepared
            .file
            .write_all(MESSAGE_HEAD.as_bytes())
            .map_err(|e| io_err("write", &prepared.path(), e))?;
        Ok(prepared)
    }
}

impl PreparedMessage {
    fn path(&self) -> PathBuf {
        self.queue.dir.join(&self.temp)
    }

    /// Body bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the body so far ends inside a character.
    pub fn ends_mid_char(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Appends `bytes` to the body. Fails with [`Error::TooLarge`] past the queue's limit
    /// (writing nothing), with [`Error::NotUtf8`] for bytes that cannot be UTF-8 whatever
    /// follows (a character cut at the end waits for the next write), or with an I/O error
    /// (ENOSPC, EDQUOT, EIO). After the last two the message can only be dropped.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.check_usable()?;
        let size = self.len + bytes.len() as u64;
        if size > self.limit {
            return Err(Error::TooLarge {
                queue: self.queue.name.clone(),
                size,
                limit: self.limit,
            });
        }
        // Room for a little escaping; text that escapes more grows it, up to the bound.
        let mut out =
            Vec::with_capacity((bytes.len() + bytes.len() / 8 + 16).min(FLUSH_AT + 6 * STEP));
        let mut rest = bytes;
        // Complete the character the last write cut, from the first bytes of this one.
        if let Some(&lead) = self.carry.first() {
            let take = (utf8_width(lead) - self.carry.len()).min(rest.len());
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            match std::str::from_utf8(&self.carry) {
                Ok(c) => {
                    escape_str_into(&mut out, c);
                    self.carry.clear();
                }
                Err(e) if e.error_len().is_none() => {} // still cut: this write was that short
                Err(_) => return Err(self.not_utf8()),
            }
        }
        let mut text = match std::str::from_utf8(rest) {
            Ok(text) => text,
            Err(e) if e.error_len().is_none() => {
                let (whole, cut) = rest.split_at(e.valid_up_to());
                self.carry.extend_from_slice(cut);
                std::str::from_utf8(whole).expect("valid up to here")
            }
            Err(_) => return Err(self.not_utf8()),
        };
        while !text.is_empty() {
            let mut cut = text.len().min(STEP);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            escape_str_into(&mut out, &text[..cut]);
            text = &text[cut..];
            if out.len() >= FLUSH_AT {
                self.append(&out)?;
                out.clear();
            }
        }
        self.append(&out)?;
        self.len = size;
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::Invalid(format!(
                "{}: an earlier write to this message failed",
                self.path().display()
            )));
        }
        Ok(())
    }

    fn not_utf8(&mut self) -> Error {
        self.broken = true;
        Error::NotUtf8 {
            queue: self.queue.name.clone(),
        }
    }

    fn append(&mut self, escaped: &[u8]) -> Result<()> {
        self.file.write_all(escaped).map_err(|e| {
            self.broken = true;
            io_err("write", &self.path(), e)
        })
    }

    /// Writes the body as received so far (decoded from the file) to `out`, for a writer that
    /// goes on with random access.
    pub fn copy_body_to(&self, out: &mut impl Write) -> Result<()> {
        self.check_usable()?;
        let path = self.path();
        let end = self
            .file
            .metadata()
            .map_err(|e| io_err("stat", &path, e))?
            .len();
        let mut at = MESSAGE_HEAD.len() as u64;
        let mut chunk = vec![0u8; FLUSH_AT];
        let (mut held, mut raw) = (0, Vec::with_capacity(FLUSH_AT));
        while at < end {
            let want = (chunk.len() - held).min((end - at) as usize);
            let n = self
                .file
                .read_at(&mut chunk[held..held + want], at)
                .map_err(|e| io_err("read", &path, e))?;
            if n == 0 {
                break;
            }
            at += n as u64;
            let filled = held + n;
            raw.clear();
            let used = unescape_into(&mut raw, &chunk[..filled]).ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                reason: "not an escaped string".into(),
            })?;
            out.write_all(&raw).map_err(|e| io_err("copy", &path, e))?;
            // An escape cut by the chunk's end starts the next one.
            chunk.copy_within(used..filled, 0);
            held = filled - used;
        }
        if held > 0 {
            return Err(Error::Corrupt {
                path,
                reason: "ends inside an escape".into(),
            });
        }
        out.write_all(&self.carry)
            .map_err(|e| io_err("copy", &path, e))
    }

    /// Completes the record and publishes it: one rename into place. Fails with
    /// [`Error::NotUtf8`] if the body ends inside a character, and publishes nothing on any
    /// error (the file is removed when the message is dropped).
    pub fn finish(mut self, opts: &PublishOptions) -> Result<WaitingName> {
        self.check_usable()?;
        if !self.carry.is_empty() {
            return Err(self.not_utf8());
        }
        let queue = self.queue.clone();
        let settings = queue.settings()?;
        if self.len > settings.max_message_bytes {
            return Err(Error::TooLarge {
                queue: queue.name.clone(),
                size: self.len,
                limit: settings.max_message_bytes,
            });
        }
        if opts.clean {
            queue.clean_best_effort();
        }
        let (name, record) = queue.new_record(Value::String(String::new()), opts, 0, &settings);
        let json = record.to_json();
        debug_assert!(json.starts_with(MESSAGE_HEAD));
        let path = self.path();
        self.file
            .write_all(&json.as_bytes()[MESSAGE_HEAD.len()..])
            .map_err(|e| io_err("write", &path, e))?;
        if settings.durable {
            self.file
                .sync_all()
                .map_err(|e| io_err("fsync", &path, e))?;
        }
        // An error that the filesystem keeps for close (a full GlusterFS volume) fails the
        // publish here, before the rename, instead of publishing a torn message.
        flush_checked(&self.file).map_err(|e| io_err("close", &path, e))?;
        let target = queue.dir.join(name.to_string());
        match std::fs::rename(&path, &target) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) && dir_is_gone(&queue.dir) => {
                return Err(Error::NoSuchQueue(queue.dir.clone()));
            }
            Err(e) if is_not_found(&e) => {
                // Housekeeping took the file for a dead writer's: publish a copy of it.
                log::info!(
                    "{} was removed while its writer was idle: publishing a copy",
                    path.display()
                );
                copy_atomically(&target, &mut &self.file, settings.durable)
                    .map_err(|e| queue.no_such_queue_or(e))?;
            }
            Err(e) => return Err(io_err("rename", &target, e)),
        }
        self.published = true;
        if settings.durable {
            sync_dir(&queue.dir)?;
        }
        queue.listing.lock_recovering().add_own(&name);
        Ok(name)
    }
}

impl Drop for PreparedMessage {
    fn drop(&mut self) {
        if !self.published {
            let _ = unlinkat(&self.dir, self.temp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// The length of the UTF-8 sequence a lead byte starts (one cut by a write's end is valid so far).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xf0.. => 4,
        0xe0.. => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Broker, Message};
    use std::time::{Duration, SystemTime};

    fn queue() -> (tempfile::TempDir, Arc<Queue>) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path().join("root")).unwrap();
        broker.create_queue("q").unwrap();
        let q = broker.queue("q").unwrap();
        (dir, q)
    }

    /// Everything in the queue directory but its settings and `work/`.
    fn entries(q: &Queue) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(q.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "ddmq.yaml" && n != "work")
            .collect();
        names.sort();
        names
    }

    /// Bodies whose escaping differs from their bytes: quotes, backslashes, every control, DEL,
    /// two- three- and four-byte characters (astral ones become surrogate pairs), U+2028.
    fn tricky_bodies() -> Vec<String> {
        let controls: String = (0u8..0x20).map(char::from).collect();
        vec![
            String::new(),
            "plain".into(),
            "\"quoted\" \\back\\slash\\ /solidus".into(),
            controls,
            "del \u{7f} end".into(),
            "é ü ß € 漢字 \u{2028}\u{2029} \u{ffff}".into(),
            "😀 astral 𝄞 and \u{10ffff}".into(),
            "\u{0}\u{7f}😀\"\\\n".repeat(5000),
            "long ascii ".repeat(20_000),
        ]
    }

    /// Writes `body` in pieces of `step` bytes (cutting characters), publishes, and returns the
    /// file's bytes with the record read back from them.
    fn publish_in_steps(q: &Arc<Queue>, body: &str, step: usize) -> (Vec<u8>, Message) {
        let mut m = q.begin_publish().unwrap();
        for piece in body.as_bytes().chunks(step) {
            m.write(piece).unwrap();
        }
        assert_eq!(m.len(), body.len() as u64);
        let name = m.finish(&PublishOptions::default()).unwrap();
        let bytes = std::fs::read(q.dir().join(name.to_string())).unwrap();
        let record = Message::from_json(&bytes).unwrap();
        (bytes, record)
    }

    #[test]
    fn the_file_is_byte_for_byte_what_to_json_writes() {
        let (_dir, q) = queue();
        for body in tricky_bodies() {
            for step in [1, 2, 3, 7, 1 << 20] {
                let (bytes, record) = publish_in_steps(&q, &body, step);
                assert_eq!(record.message, Value::String(body.clone()));
                assert_eq!(
                    String::from_utf8(bytes).unwrap(),
                    record.to_json(),
                    "body {:?}, pieces of {step}",
                    &body[..body.len().min(40)]
                );
            }
        }
        assert!(entries(&q).iter().all(|n| !n.starts_with('.')));
    }

    #[test]
    fn durable_publishes_the_same_file() {
        let (_dir, q) = queue();
        q.write_config_text(b"durable: true\n").unwrap();
        let (bytes, record) = publish_in_steps(&q, "dürable\n", 3);
        assert_eq!(String::from_utf8(bytes).unwrap(), record.to_json());
    }

    #[test]
    fn a_message_dropped_unfinished_or_refused_leaves_nothing() {
        let (_dir, q) = queue();
        let mut m = q.begin_publish().unwrap();
        m.write(b"half a message").unwrap();
        assert_eq!(entries(&q).len(), 1, "the file exists while it is written");
        drop(m);
        assert_eq!(entries(&q), Vec::<String>::new());

        let mut m = q.begin_publish().unwrap();
        m.write(b"ok \xc3").unwrap();
        assert!(matches!(m.write(b"\x28"), Err(Error::NotUtf8 { .. })));
        drop(m);
        let mut m = q.begin_publish().unwrap();
        m.write("cut at the end: é".as_bytes().split_at(17).0)
            .unwrap();
        assert!(m.ends_mid_char());
        assert!(matches!(
            m.finish(&PublishOptions::default()),
            Err(Error::NotUtf8 { .. })
        ));
        assert_eq!(entries(&q), Vec::<String>::new());
        assert!(q.waiting().unwrap().is_empty());
    }

    #[test]
    fn the_size_limit_applies_to_the_raw_body() {
        let (_dir, q) = queue();
        q.write_config_text(b"max_message_bytes: 10\n").unwrap();
        // Ten bytes that escape to sixty still fit.
        let (_, record) = publish_in_steps(&q, "\0\0\0\0\0\0\0\0\0\0", 4);
        assert_eq!(record.body_text().len(), 10);
        let mut m = q.begin_publish().unwrap();
        m.write(b"123456").unwrap();
        assert!(matches!(
            m.write(b"78901"),
            Err(Error::TooLarge {
                size: 11,
                limit: 10,
                ..
            })
        ));
        m.write(b"7890").unwrap();
        // A limit lowered while the body was written applies at finish.
        q.write_config_text(b"max_message_bytes: 5\n").unwrap();
        assert!(matches!(
            m.finish(&PublishOptions::default()),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(q.waiting().unwrap().len(), 1);
        assert_eq!(entries(&q).len(), 1, "only the first message");
    }

    #[test]
    fn the_body_so_far_decodes_back_to_its_bytes() {
        let (_dir, q) = queue();
        for body in tricky_bodies() {
            let mut m = q.begin_publish().unwrap();
            let cut = body.len().saturating_sub(1);
            m.write(&body.as_bytes()[..cut]).unwrap();
            let mut raw = Vec::new();
            m.copy_body_to(&mut raw).unwrap();
            assert!(
                raw == body.as_bytes()[..cut],
                "{:?}",
                &body[..body.len().min(40)]
            );
        }
    }

    /// A writer idle for longer than housekeeping waits loses its file to a cleaner; its
    /// message is still published whole, from the open file.
    #[test]
    fn a_file_removed_by_housekeeping_under_an_idle_writer_is_published_from_the_open_file() {
        let (_dir, q) = queue();
        let mut m = q.begin_publish().unwrap();
        m.write("idle ☕ writer".as_bytes()).unwrap();
        for name in entries(&q) {
            std::fs::remove_file(q.dir().join(name)).unwrap();
        }
        m.write(b", back").unwrap();
        let name = m.finish(&PublishOptions::default()).unwrap();
        let record = q.read_waiting(&name).unwrap().unwrap();
        assert_eq!(record.body_text(), "idle ☕ writer, back");
        assert_eq!(entries(&q), [name.to_string()]);
    }

    /// A daemon that dies mid-write leaves its file under a temporary name, which housekeeping
    /// removes once it is old (and not before).
    #[test]
    fn a_file_left_by_a_writer_that_died_is_removed_by_clean_once_old() {
        let (_dir, q) = queue();
        let mut m = q.begin_publish().unwrap();
        m.write(b"never finished").unwrap();
        let left = entries(&q);
        std::mem::forget(m); // the process "dies": no drop
        assert_eq!(left.len(), 1);
        assert!(left[0].starts_with(".tmp-in-"), "{left:?}");
        assert_eq!(q.clean().unwrap().removed_temp_files, 0, "young: kept");
        let file = std::fs::File::options()
            .write(true)
            .open(q.dir().join(&left[0]))
            .unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(11 * 60))
            .unwrap();
        assert_eq!(q.clean().unwrap().removed_temp_files, 1);
        assert_eq!(entries(&q), Vec::<String>::new());
    }
}
