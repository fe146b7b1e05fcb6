//! The bytes of a message being written to `in`, kept where they cost the daemon no memory, so
//! its size does not depend on what writers send or hold open, and a full disk shows at write
//! time:
//!
//! - a small body stays in memory until close (the common small message costs no file calls
//!   before its publish), within one budget shared by every body being written, so that
//!   many writers holding small bodies open cannot grow the daemon either: past the budget, a
//!   small body goes to its file as a large one does;
//! - a larger body written in order (each write at the end, or past it over a hole of zeros)
//!   is escaped on the way into its message file ([`PreparedMessage`]), which the close
//!   completes and renames into place: written once, never read back;
//! - a larger body written out of order (a write before its end, a truncation) is kept raw in a
//!   temporary file that is removed from the directory as soon as it is made (only the open
//!   descriptor keeps it: a daemon that dies leaves nothing of it), and escaped into its
//!   message file at close, a chunk at a time. A body already being escaped that goes out of
//!   order is decoded into such a file first.

use crate::engine::{self, PreparedMessage, PublishOptions, Queue, io_err};
use serde_json::Value;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bodies up to this size stay in memory.
const IN_MEMORY_LIMIT: u64 = 16 << 10;
/// What all bodies in memory may hold together (256 bodies at the limit).
const IN_MEMORY_BUDGET: u64 = 4 << 20;

/// Bytes of memory held by the bodies being written, against a limit.
pub(super) struct MemoryBudget {
    held: AtomicU64,
    limit: u64,
}

impl MemoryBudget {
    pub const fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            held: AtomicU64::new(0),
            limit,
        }
    }

    /// Takes `more` bytes if they fit.
    fn take(&self, more: u64) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + more <= self.limit).then_some(held + more)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

/// The daemon's budget for bodies in memory.
static IN_MEMORY: MemoryBudget = MemoryBudget::new(IN_MEMORY_BUDGET);
/// What a raw body is read back in, at close.
const CHUNK: usize = 64 << 10;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A body being written, positioned writes and truncation included.
pub(super) struct Body {
    stage: Stage,
    /// Where the memory of the in-memory stage is counted, and how much of it this body holds.
    budget: &'static MemoryBudget,
    held: u64,
    /// Some write landed before the end, or a truncation cut the body: UTF-8 is checked at close
    /// only, and a large body is kept raw.
    out_of_order: bool,
    /// In memory and in order: how many bytes at the end start a character the next write
    /// completes.
    cut_char: usize,
}

enum Stage {
    Memory(Vec<u8>),
    Escaped(PreparedMessage),
    /// A file with no name, and the body's length.
    Raw(File, u64),
}

impl Default for Stage {
    fn default() -> Stage {
        Stage::Memory(Vec::new())
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::within(&IN_MEMORY)
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

impl Body {
    /// An empty body whose in-memory stage counts against `budget`.
    pub fn within(budget: &'static MemoryBudget) -> Body {
        Body {
            stage: Stage::default(),
            budget,
            held: 0,
            out_of_order: false,
            cut_char: 0,
        }
    }

    /// Whether a body reaching `end` may stay in memory: small enough, and within the budget.
    fn may_stay_in_memory(&mut self, end: u64) -> bool {
        if end > IN_MEMORY_LIMIT {
            return false;
        }
        if end <= self.held {
            return true;
        }
        let taken = self.budget.take(end - self.held);
        if taken {
            self.held = end;
        }
        taken
    }

    /// Whether the body is still in memory (for tests).
    #[cfg(test)]
    pub fn in_memory(&self) -> bool {
        matches!(self.stage, Stage::Memory(_))
    }

    pub fn len(&self) -> u64 {
        match &self.stage {
            Stage::Memory(b) => b.len() as u64,
            Stage::Escaped(m) => m.len(),
            Stage::Raw(_, len) => *len,
        }
    }

    /// Whether the body ends inside a character (zeros after it could not be UTF-8).
    fn ends_mid_char(&self) -> bool {
        match &self.stage {
            Stage::Memory(_) => self.cut_char > 0,
            Stage::Escaped(m) => m.ends_mid_char(),
            Stage::Raw(..) => false, // out of order already
        }
    }

    /// Writes `data` at `at`, zero-filling any gap (a hole, as in a file). Fails with the
    /// engine's NotUtf8 for bytes written in order that cannot be UTF-8.
    pub fn write_at(&mut self, queue: &Arc<Queue>, at: u64, data: &[u8]) -> engine::Result<()> {
        let len = self.len();
        if at < len || (at > len && self.ends_mid_char()) {
            self.out_of_order = true;
        }
        let end = at + data.len() as u64;
        self.make_room(queue, end)?;
        match &mut self.stage {
            Stage::Memory(buf) if self.out_of_order => {
                let (at, end) = (at as usize, end as usize);
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[at..end].copy_from_slice(data);
            }
            Stage::Memory(buf) => {
                let from = buf.len() - self.cut_char;
                buf.resize(at as usize, 0);
                buf.extend_from_slice(data);
                match std::str::from_utf8(&buf[from..]) {
                    Ok(_) => self.cut_char = 0,
                    Err(e) if e.error_len().is_none() => {
                        self.cut_char = buf.len() - from - e.valid_up_to()
                    }
                    Err(_) => {
                        return Err(engine::Error::NotUtf8 {
                            queue: queue.name().to_string(),
                        });
                    }
                }
            }
            Stage::Escaped(message) => {
                let mut gap = at - len;
                while gap > 0 {
                    let n = gap.min(CHUNK as u64) as usize;
                    message.write(&ZEROS[..n])?;
                    gap -= n as u64;
                }
                message.write(data)?;
            }
            Stage::Raw(file, len) => {
                file.write_all_at(data, at)
                    .map_err(|e| io_err("write", queue.dir(), e))?;
                *len = (*len).max(end);
            }
        }
        Ok(())
    }

    /// Sets the length, cutting or zero-filling.
    pub fn set_len(&mut self, queue: &Arc<Queue>, new_len: u64) -> engine::Result<()> {
        let len = self.len();
        if new_len >= len && !self.out_of_order {
            return self.write_at(queue, new_len, &[]); // zeros at the end, still in order
        }
        self.out_of_order = true;
        self.make_room(queue, new_len)?;
        match &mut self.stage {
            Stage::Memory(buf) => buf.resize(new_len as usize, 0),
            Stage::Escaped(_) => unreachable!("make_room leaves out-of-order bodies raw"),
            Stage::Raw(file, len) => {
                file.set_len(new_len)
                    .map_err(|e| io_err("truncate", queue.dir(), e))?;
                *len = new_len;
            }
        }
        Ok(())
    }

    /// Moves the body to where a body reaching `end` belongs: out of memory once larger than
    /// it, and out of the message file once out of order.
    fn make_room(&mut self, queue: &Arc<Queue>, end: u64) -> engine::Result<()> {
        let leaves_memory = matches!(self.stage, Stage::Memory(_)) && !self.may_stay_in_memory(end);
        match &self.stage {
            Stage::Memory(bytes) if leaves_memory && !self.out_of_order => {
                let mut message = queue.begin_publish()?;
                message.write(bytes)?;
                self.stage = Stage::Escaped(message);
            }
            Stage::Memory(bytes) if leaves_memory => {
                let file = raw_file(queue.dir())?;
                file.write_all_at(bytes, 0)
                    .map_err(|e| io_err("write", queue.dir(), e))?;
                let len = bytes.len() as u64;
                self.stage = Stage::Raw(file, len);
            }
            Stage::Escaped(message) if self.out_of_order => {
                let mut file = raw_file(queue.dir())?;
                message.copy_body_to(&mut file)?;
                let len = message.len();
                self.stage = Stage::Raw(file, len); // the message file is removed here
            }
            _ => {}
        }
        if leaves_memory {
            self.budget.give_back(std::mem::take(&mut self.held));
        }
        Ok(())
    }

    /// Publishes the body as one message.
    pub fn publish(mut self, queue: &Arc<Queue>, opts: &PublishOptions) -> engine::Result<()> {
        match std::mem::take(&mut self.stage) {
            Stage::Memory(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| engine::Error::NotUtf8 {
                    queue: queue.name().to_string(),
                })?;
                queue.publish(Value::String(text), opts)?;
            }
            Stage::Escaped(message) => {
                message.finish(opts)?;
            }
            Stage::Raw(file, len) => {
                let mut message = queue.begin_publish()?;
                let mut chunk = vec![0u8; CHUNK];
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(CHUNK as u64) as usize;
                    file.read_exact_at(&mut chunk[..n], at)
                        .map_err(|e| io_err("read", queue.dir(), e))?;
                    message.write(&chunk[..n])?;
                    at += n as u64;
                }
                message.finish(opts)?;
            }
        }
        Ok(())
    }
}

/// A new file in `dir` with no name.
fn raw_file(dir: &Path) -> engine::Result<File> {
    let path = dir.join(crate::engine::names::temp_name("body"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("create", dir, e))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Broker;

    /// Small bodies share one budget: past it a small body goes to its file (and publishes the
    /// same), and what a body held comes back when it leaves memory, is published or dropped.
    #[test]
    fn small_bodies_in_memory_stay_within_one_budget() {
        static BUDGET: MemoryBudget = MemoryBudget::new(20 << 10);
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open_or_init(dir.path()).unwrap();
        broker.create_queue("q").unwrap();
        let queue = broker.queue("q").unwrap();
        let text = |c: char| c.to_string().repeat(12 << 10);

        let mut first = Body::within(&BUDGET);
        first.write_at(&queue, 0, text('a').as_bytes()).unwrap();
        assert!(first.in_memory());
        assert_eq!(BUDGET.held(), 12 << 10);

        let mut second = Body::within(&BUDGET);
        second.write_at(&queue, 0, text('b').as_bytes()).unwrap();
        assert!(!second.in_memory(), "past the budget: to its file");
        assert_eq!(BUDGET.held(), 12 << 10, "the second holds no memory");
        second.publish(&queue, &PublishOptions::default()).unwrap();

        drop(first);
        assert_eq!(BUDGET.held(), 0, "a dropped body gives its memory back");
        let mut third = Body::within(&BUDGET);
        third.write_at(&queue, 0, text('c').as_bytes()).unwrap();
        assert!(third.in_memory(), "room again");
        // Growing past the per-body limit leaves memory and gives the budget back.
        third
            .write_at(&queue, 12 << 10, text('c').as_bytes())
            .unwrap();
        assert!(!third.in_memory());
        assert_eq!(BUDGET.held(), 0);
        third.publish(&queue, &PublishOptions::default()).unwrap();

        let mut fourth = Body::within(&BUDGET);
        fourth.write_at(&queue, 0, b"small").unwrap();
        fourth.publish(&queue, &PublishOptions::default()).unwrap();
        assert_eq!(BUDGET.held(), 0, "a published body gives its memory back");

        let bodies: Vec<String> = queue
            .consume(3, &Default::default())
            .unwrap()
            .iter()
            .map(|d| d.message.body_text())
            .collect();
        assert_eq!(bodies, [text('b'), text('c').repeat(2), "small".into()]);
    }
}
