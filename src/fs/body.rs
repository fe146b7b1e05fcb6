//! The bytes of a message being written to `in`, kept where they cost the daemon no memory:
//! small bodies in memory, anything larger in a temporary file in the queue's directory, so the
//! daemon's size does not depend on what writers send or hold open, and a full disk shows at
//! write time.
//!
//! The temporary file is removed from the directory as soon as it is made (only the open
//! descriptor keeps it): it never looks like a message to any client, and a daemon that dies
//! leaves nothing behind to clean.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bodies up to this size stay in memory (the common small message costs no file calls).
const IN_MEMORY_LIMIT: usize = 64 << 10;

/// A body being written, positioned writes and truncation included.
pub(super) enum Body {
    Memory(Vec<u8>),
    /// An unlinked file in the queue directory, and the body's length.
    File(File, u64),
}

impl Default for Body {
    fn default() -> Body {
        Body::Memory(Vec::new())
    }
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(b) => b.len() as u64,
            Body::File(_, len) => *len,
        }
    }

    /// Moves the body to a file in `dir` once it would outgrow memory.
    fn make_room(&mut self, dir: &Path, end: u64) -> io::Result<()> {
        if let Body::Memory(bytes) = self
            && end > IN_MEMORY_LIMIT as u64
        {
            let path = dir.join(crate::engine::names::temp_name("body"));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let _ = std::fs::remove_file(&path);
            file.write_all_at(bytes, 0)?;
            *self = Body::File(file, bytes.len() as u64);
        }
        Ok(())
    }

    /// Writes `data` at `at`, zero-filling any gap (a hole, as in a file).
    pub fn write_at(&mut self, dir: &Path, at: u64, data: &[u8]) -> io::Result<()> {
        let end = at + data.len() as u64;
        self.make_room(dir, end)?;
        match self {
            Body::Memory(buf) => {
                let (at, end) = (at as usize, end as usize);
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[at..end].copy_from_slice(data);
            }
            Body::File(file, len) => {
                file.write_all_at(data, at)?;
                *len = (*len).max(end);
            }
        }
        Ok(())
    }

    /// Sets the length, cutting or zero-filling.
    pub fn set_len(&mut self, dir: &Path, new_len: u64) -> io::Result<()> {
        self.make_room(dir, new_len)?;
        match self {
            Body::Memory(buf) => buf.resize(new_len as usize, 0),
            Body::File(file, len) => {
                file.set_len(new_len)?;
                *len = new_len;
            }
        }
        Ok(())
    }

    /// The whole body, for publishing.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            Body::Memory(buf) => Ok(buf),
            Body::File(mut file, len) => {
                let mut buf = Vec::with_capacity(len as usize);
                file.seek(SeekFrom::Start(0))?;
                file.take(len).read_to_end(&mut buf)?;
                Ok(buf)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_body_moves_to_an_unlinked_file_and_keeps_holes_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = Body::default();
        body.write_at(dir.path(), 0, b"head").unwrap();
        assert!(matches!(body, Body::Memory(_)));
        body.write_at(dir.path(), 100_000, b"tail").unwrap();
        assert!(matches!(body, Body::File(..)), "over the memory limit");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the file has no name in the directory"
        );
        body.set_len(dir.path(), 100_002).unwrap();
        let bytes = body.into_bytes().unwrap();
        assert_eq!(bytes.len(), 100_002);
        assert_eq!(&bytes[..4], b"head");
        assert!(bytes[4..100_000].iter().all(|b| *b == 0));
        assert_eq!(&bytes[100_000..], b"ta");
    }
}
