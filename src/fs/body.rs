//! The bytes of a message being written to `in`, kept where they cost the daemon no memory, so
//! its size does not depend on what writers send or hold open, and a full disk shows at write
//! time:
//!
//! - a small body stays in memory until close (the common small message costs no file calls
//!   before its publish);
//! - a larger body written in order (each write at the end, or past it over a hole of zeros)
//!   is escaped on the way into its message file ([`PreparedMessage`]), which the close
//!   completes and renames into place: written once, never read back;
//! - a larger body written out of order (a write before its end, a truncation) is kept raw in a
//!   temporary file that is removed from the directory as soon as it is made (only the open
//!   descriptor keeps it: a daemon that dies leaves nothing of it), and escaped into its
//!   message file at close, a chunk at a time. A body already being escaped that goes out of
//!   order is decoded into such a file first.

use crate::engine::{self, PreparedMessage, PublishOptions, Queue};
use serde_json::Value;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bodies up to this size stay in memory.
const IN_MEMORY_LIMIT: u64 = 16 << 10;
/// What a raw body is read back in, at close.
const CHUNK: usize = 64 << 10;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A body being written, positioned writes and truncation included.
#[derive(Default)]
pub(super) struct Body {
    stage: Stage,
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

fn io_err(op: &'static str, dir: &Path, source: io::Error) -> engine::Error {
    engine::Error::Io {
        op,
        path: dir.to_path_buf(),
        source,
    }
}

impl Body {
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
        match &self.stage {
            Stage::Memory(bytes) if end > IN_MEMORY_LIMIT && !self.out_of_order => {
                let mut message = queue.begin_publish()?;
                message.write(bytes)?;
                self.stage = Stage::Escaped(message);
            }
            Stage::Memory(bytes) if end > IN_MEMORY_LIMIT => {
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
        Ok(())
    }

    /// Publishes the body as one message.
    pub fn publish(self, queue: &Arc<Queue>, opts: &PublishOptions) -> engine::Result<()> {
        match self.stage {
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
