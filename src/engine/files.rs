//! Raw file operations of the protocol: the atomic write, directory fsync, reading a message file
//! safely, and listing a directory without an allocation per entry.

use super::error::{Result, io_err};
use super::names::temp_name;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Message files larger than this are not read into memory; they are quarantined.
const MAX_FILE_BYTES: u64 = 1 << 30;

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// ESTALE: on a network filesystem, a name that this client cached refers to a file another host
/// replaced or moved. A fresh lookup finds what the name is now.
pub(crate) fn is_stale_handle(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ESTALE)
}

/// How long a call that keeps answering ESTALE is tried again. GlusterFS answers ESTALE for
/// about a second on a host that cached a name another host replaced.
const STALE_RETRY_LIMIT: Duration = Duration::from_secs(4);

/// Runs `op` again while it answers ESTALE (each new call looks the name up afresh), with a
/// growing pause, for at most [`STALE_RETRY_LIMIT`]; then its error stands.
pub(crate) fn retry_stale<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match op() {
            Err(e) if is_stale_handle(&e) && started.elapsed() < STALE_RETRY_LIMIT => {
                log::debug!("{e}; looking the name up again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

/// How long a directory must keep answering "not found" before it counts as gone. A GlusterFS
/// client can answer ENOENT for a name that is there, for up to its entry timeout (1 s), when
/// another host's change left its cached entry stale (it turns a failed resolve of the cached
/// file id into ENOENT, not ESTALE).
const GONE_CONFIRM_LIMIT: Duration = Duration::from_millis(1500);

/// Whether directory `dir` is gone: nothing by its name, on every look for
/// [`GONE_CONFIRM_LIMIT`] (one look on a local filesystem). Any other error says nothing about
/// it being gone: false, so that the caller reports its own I/O error rather than a missing
/// queue. Only asked after an operation in `dir` failed with "not found", so the wait is on the
/// error path only.
pub(crate) fn dir_is_gone(dir: &Path) -> bool {
    // A local filesystem's answer is the truth: one look.
    let confirm = if is_network_fs(dir) {
        GONE_CONFIRM_LIMIT
    } else {
        Duration::ZERO
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match retry_stale(|| std::fs::symlink_metadata(dir)) {
            Ok(_) => return false,
            Err(e) if is_not_found(&e) => {}
            Err(_) => return false,
        }
        if started.elapsed() >= confirm {
            return true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// How long an operation in a directory that is there is tried again while it answers "not
/// found" (see [`GONE_CONFIRM_LIMIT`]).
const MISSING_RETRY_LIMIT: Duration = Duration::from_secs(2);

/// Runs `op`, an operation on a name in directory `dir` that must exist (such as creating a file
/// in it), again while it answers "not found" but `dir` is not gone, with a growing pause, for
/// at most [`MISSING_RETRY_LIMIT`]. ESTALE is looked up again too ([`retry_stale`]).
pub(crate) fn retry_missing_in<T>(
    dir: &Path,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match retry_stale(&mut op) {
            Err(e)
                if is_not_found(&e)
                    && started.elapsed() < MISSING_RETRY_LIMIT
                    && !dir_is_gone(dir) =>
            {
                log::debug!("{e} in {}, which is there; looking again", dir.display());
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

/// Errors that a second try may not meet: EIO (a network filesystem's server or link
/// hiccupping), EAGAIN, EINTR, ETIMEDOUT, EBUSY.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT | libc::EBUSY)
    )
}

/// Pauses between the tries of [`retry_transient`]: four tries within 0.2 s.
const TRANSIENT_PAUSES: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(40),
    Duration::from_millis(150),
];

/// [`retry_stale`], and `op` tried again after a transient error ([`is_transient`]), a few times
/// within a fifth of a second. For the steps that settle a message a client holds (an ack, a
/// give back): one that fails leaves the message in `work/` until its lease runs out, or under
/// a take name until housekeeping gives it back.
pub(crate) fn retry_transient<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut pauses = TRANSIENT_PAUSES.iter();
    loop {
        match retry_stale(&mut op) {
            Err(e) if is_transient(&e) => match pauses.next() {
                Some(pause) => {
                    log::debug!("{e}; trying again in {} ms", pause.as_millis());
                    std::thread::sleep(*pause);
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Whether `path` is on a filesystem whose clients cache what other hosts change: FUSE (GlusterFS,
/// MooseFS, sshfs...), NFS, SMB/CIFS, Lustre, GPFS, Ceph, 9p; asked of `path` or, where that is
/// not found, of its nearest ancestor that is.
fn is_network_fs(path: &Path) -> bool {
    const NETWORK_MAGICS: [i64; 9] = [
        0x6573_5546, // FUSE
        0x6969,      // NFS
        0x517b,      // SMB
        0xff53_4d42, // CIFS
        0xfe53_4d42, // SMB2
        0x0bd0_0bd0, // Lustre
        0x4750_4653, // GPFS
        0x00c3_6400, // Ceph
        0x0102_1997, // 9p
    ];
    // f_type is i64 here and another integer type on other targets.
    #[allow(clippy::unnecessary_cast)]
    path.ancestors()
        .find_map(|p| nix::sys::statfs::statfs(p).ok())
        .is_none_or(|fs| NETWORK_MAGICS.contains(&(fs.filesystem_type().0 as i64)))
}

/// Writes `bytes` to `path` atomically: a unique temporary file in the same directory, then
/// rename (and, if `durable`, fsync of the file before and of the directory after).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    fill_atomically(path, durable, |f| f.write_all(bytes))
}

/// [`write_atomically`] for a file replaced in place (a settings file): the new file takes the
/// old one's mode, group and, where the writer may give it away, owner, so that a file shared
/// with a group stays shared whoever rewrites it (through a mount, or by housekeeping).
pub(crate) fn replace_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let old = std::fs::metadata(path).ok();
    fill_atomically(path, false, |f| {
        if let Some(old) = &old {
            keep_ownership(f, old);
        }
        f.write_all(bytes)
    })
}

/// Gives `f` the owner (or at least the group) and mode of `old`, as far as permitted: a
/// writer who may not give the file to its old owner still keeps it readable and writable for
/// the same people.
fn keep_ownership(f: &File, old: &std::fs::Metadata) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, fchown};
    // Owner and group first: changing them may clear set-id bits that the mode then restores.
    if fchown(f, Some(old.uid()), Some(old.gid())).is_err() {
        let _ = fchown(f, None, Some(old.gid()));
    }
    let _ = f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777));
}

/// [`write_atomically`] with the bytes of `from`, read from its start.
pub(crate) fn copy_atomically(path: &Path, from: &mut &File, durable: bool) -> Result<()> {
    fill_atomically(path, durable, |f| {
        from.seek(io::SeekFrom::Start(0))?;
        io::copy(from, f).map(drop)
    })
}

fn fill_atomically(
    path: &Path,
    durable: bool,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = temp_name("w");
    let mut tmp = PathBuf::with_capacity(dir.as_os_str().len() + 1 + name.len());
    tmp.push(dir);
    tmp.push(name);
    let result = (|| {
        let mut f = retry_missing_in(dir, || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
        })
        .map_err(|e| io_err("create", &tmp, e))?;
        fill(&mut f).map_err(|e| io_err("write", &tmp, e))?;
        if durable {
            f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
        }
        close_checked(f).map_err(|e| io_err("close", &tmp, e))?;
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

/// Closes `f` and returns what close said. A network filesystem may take every write and report
/// ENOSPC, EDQUOT or EIO only at close (GlusterFS's write-behind, NFS): a file whose close failed
/// is not known whole and must not be renamed into place.
pub(crate) fn close_checked(f: File) -> io::Result<()> {
    nix::unistd::close(f).map_err(io::Error::from)
}

/// What [`close_checked`] learns, for a file that stays open: closing a duplicate descriptor
/// makes the filesystem flush what was written (NFS and FUSE flush at every close).
pub(crate) fn flush_checked(f: &File) -> io::Result<()> {
    close_checked(f.try_clone()?)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync", dir, e))
}

/// Errors of reading an entry that will never read as a message: a link (we open with
/// O_NOFOLLOW), a directory, a special or oversized file.
pub(crate) fn is_unreadable_entry(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EISDIR))
        || e.kind() == io::ErrorKind::InvalidData
}

/// A message file read whole, still open. Its times cost a request to the file server on a
/// network filesystem (the rename that took it made the client's cached attributes stale), so
/// they are asked for only where a judgment needs them: [`MessageFile::metadata`].
pub(crate) struct MessageFile {
    pub(crate) bytes: Vec<u8>,
    file: File,
}

impl MessageFile {
    /// The file's metadata as the filesystem has it now (its times are the filesystem's clock).
    pub(crate) fn metadata(&self) -> io::Result<std::fs::Metadata> {
        retry_stale(|| self.file.metadata())
    }
}

/// Reads a message file without following symlinks (a planted link never leads out of ROOT).
/// ESTALE is looked up again (see [`retry_stale`]).
pub(crate) fn read_message_file(path: &Path) -> io::Result<MessageFile> {
    retry_stale(|| read_message_file_once(path))
}

fn read_message_file_once(path: &Path) -> io::Result<MessageFile> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    // Type and size as the client cached them (no request to the server): the type never
    // changes, and the size only sizes the buffer; the read below is bounded on its own.
    use rustix::fs::{AtFlags, FileType, StatxFlags, statx};
    let cached = statx(
        &f,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::TYPE | StatxFlags::SIZE,
    )?;
    if FileType::from_raw_mode(cached.stx_mode.into()) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if cached.stx_size > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes is too large for a message file", cached.stx_size),
        ));
    }
    let mut bytes = Vec::with_capacity(cached.stx_size as usize + 1);
    // Through `take`: File's own read_to_end asks for the size and position again (two more
    // system calls per consume) to size a buffer that is already sized.
    (&mut f).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file grew too large for a message file while it was read",
        ));
    }
    Ok(MessageFile { bytes, file: f })
}

/// The entries of `dir` that `parse` accepts, parsed.
pub(crate) fn list_names<T>(dir: &Path, parse: fn(&[u8]) -> Option<T>) -> io::Result<Vec<T>> {
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
pub(crate) fn for_each_entry(dir: &Path, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let fd = retry_stale(|| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
    })?;
    // getdents64 into one buffer; the descriptor closes with the File (errors ignored).
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 * 1024];
    let mut entries = rustix::fs::RawDir::new(&fd, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            f(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ddmq.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        replace_atomically(&path, b"a: 2\n").unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a: 2\n");
        assert_eq!(
            after.mode() & 0o7777,
            0o640,
            "not what the umask gives a new file"
        );
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_ne!(
            after.ino(),
            before.ino(),
            "replaced, not rewritten in place"
        );
    }
}
