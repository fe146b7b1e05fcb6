//! The FUSE floors the mount is measured against, each a fuser filesystem mounted with the
//! options of `ddmq mount` (nodev, nosuid, no default_permissions: as root, mount(2) with
//! nothing else) and served by one thread, as the mount is:
//!
//! - the **file queue** (`ddmq-bench fuse-queue DIR MNT`): the least a FUSE file queue backed
//!   by a real directory can do per message. `MNT/q/in`: the bytes written are kept, and the
//!   close (FLUSH) creates a temporary file with O_EXCL, writes it, closes it and renames it
//!   into `DIR/q`. `MNT/q/next`: the open takes the first name of an in-memory sorted list of
//!   waiting files (no listing per message), renames it into `DIR/q/work`, reads it and
//!   closes it; the close after it was read whole unlinks it (an earlier last close renames
//!   it back). Nothing else: no JSON, no settings, no permission checks, no kill checks, TTL
//!   1 s for every entry and attribute. What the mount costs over this is ddmq's own work;
//!   this is what a FUSE file queue costs.
//! - the **do-nothing floor** (`ddmq-bench fuse-floor MNT`): answers the same requests without
//!   touching any file (every read of `next` gives 100 bytes): what FUSE itself costs.
//!
//! Each serves until unmounted, in a process of its own (as the daemon is).

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyOpen, ReplyWrite, ReplyXattr, Request,
};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const ROOT: u64 = 1;
const QUEUE: u64 = 2;
const IN: u64 = 3;
const NEXT: u64 = 4;
/// The body every read of the do-nothing floor's `next` gives (100 bytes, as the benchmark's messages).
const BODY: [u8; 100] = [b'x'; 100];
const TTL: Duration = Duration::from_secs(1);
/// The queue's name in both floors' trees.
pub const QUEUE_NAME: &str = "q";

fn attr(ino: u64, started: SystemTime) -> FileAttr {
    let dir = ino == ROOT || ino == QUEUE;
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: started,
        mtime: started,
        ctime: started,
        crtime: started,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: match ino {
            IN => 0o222,
            NEXT => 0o444,
            _ => 0o755,
        },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn lookup_ino(parent: u64, name: &OsStr) -> Option<u64> {
    match (parent, name.to_str()?) {
        (ROOT, QUEUE_NAME) => Some(QUEUE),
        (QUEUE, "in") => Some(IN),
        (QUEUE, "next") => Some(NEXT),
        _ => None,
    }
}

/// The flags `ddmq mount` opens `in` (seekable) and `next` (a stream) with.
fn open_flags(ino: u64) -> FopenFlags {
    if ino == IN {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE
    }
}

fn slice_at(bytes: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = (offset as usize).min(bytes.len());
    let end = start.saturating_add(size as usize).min(bytes.len());
    &bytes[start..end]
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The capabilities `ddmq mount` asks for (atomic O_TRUNC saves a SETATTR per publish).
fn init_as_the_mount(config: &mut KernelConfig) {
    let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
    let _ =
        config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
}

// ------------------------------------------------------------------ the file queue

/// An open file of the file queue.
enum QueueHandle {
    /// `in`: the bytes written so far.
    Writer(Vec<u8>),
    /// `next`: the claimed file's name (in work/), its bytes, and whether it was read whole.
    Reader {
        name: String,
        bytes: Vec<u8>,
        read_whole: bool,
        acked: bool,
    },
}

struct QueueState {
    handles: HashMap<u64, QueueHandle>,
    next_fh: u64,
    /// Waiting files in delivery order (names are a zero-padded sequence number).
    waiting: BTreeSet<String>,
    next_seq: u64,
}

struct FileQueue {
    started: SystemTime,
    dir: PathBuf,
    work: PathBuf,
    state: Mutex<QueueState>,
}

impl FileQueue {
    /// Per publish: open O_EXCL a temporary file, write, close, rename into the queue.
    fn publish(&self, state: &mut QueueState, body: &[u8]) -> io::Result<()> {
        let seq = state.next_seq;
        state.next_seq += 1;
        let tmp = self.dir.join(format!(".tmp-{seq}"));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(body)?;
        drop(f);
        let name = format!("{seq:016}.ddmq");
        fs::rename(&tmp, self.dir.join(&name))?;
        state.waiting.insert(name);
        Ok(())
    }

    /// Per consume: take the first waiting name, rename it into work/, read it.
    fn claim(&self, state: &mut QueueState) -> io::Result<Option<(String, Vec<u8>)>> {
        while let Some(name) = state.waiting.pop_first() {
            match fs::rename(self.dir.join(&name), self.work.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            // read(2) until it gives 0 (read_to_end would add an fstat and an lseek).
            let mut f = File::open(self.work.join(&name))?;
            let mut bytes = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match f.read(&mut buf)? {
                    0 => break,
                    n => bytes.extend_from_slice(&buf[..n]),
                }
            }
            return Ok(Some((name, bytes)));
        }
        Ok(None)
    }
}

impl Filesystem for FileQueue {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        init_as_the_mount(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match lookup_ino(parent.0, name) {
            Some(ino) => reply.entry(&TTL, &attr(ino, self.started), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &attr(ino.0, self.started));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let handle = match ino.0 {
            IN => QueueHandle::Writer(Vec::new()),
            NEXT => match self.claim(&mut state) {
                Ok(Some((name, bytes))) => QueueHandle::Reader {
                    name,
                    bytes,
                    read_whole: false,
                    acked: false,
                },
                Ok(None) => return reply.error(Errno::ENODATA),
                Err(e) => return reply.error(errno(&e)),
            },
            _ => return reply.error(Errno::EISDIR),
        };
        let fh = state.next_fh;
        state.next_fh += 1;
        state.handles.insert(fh, handle);
        reply.opened(FileHandle(fh), open_flags(ino.0));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.handles.get_mut(&fh.0) {
            Some(QueueHandle::Reader {
                bytes, read_whole, ..
            }) => {
                let data = slice_at(bytes, offset, size);
                if offset as usize + data.len() >= bytes.len() {
                    *read_whole = true;
                }
                reply.data(data);
            }
            _ => reply.error(Errno::EBADF),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.handles.get_mut(&fh.0) {
            Some(QueueHandle::Writer(body)) => {
                let end = offset as usize + data.len();
                if body.len() < end {
                    body.resize(end, 0);
                }
                body[offset as usize..end].copy_from_slice(data);
                reply.written(data.len() as u32);
            }
            _ => reply.error(Errno::EBADF),
        }
    }

    /// Closing is committing, as on the mount: a writer's close publishes, a reader's close
    /// after it read everything unlinks the claimed file.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let result = match state.handles.get_mut(&fh.0) {
            Some(QueueHandle::Writer(body)) if !body.is_empty() => {
                let body = std::mem::take(body);
                self.publish(&mut state, &body)
            }
            Some(QueueHandle::Reader {
                name,
                read_whole: true,
                acked,
                ..
            }) if !*acked => {
                *acked = true;
                fs::remove_file(self.work.join(name.as_str()))
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A reader that did not read it whole gives the message back.
        if let Some(QueueHandle::Reader {
            name, acked: false, ..
        }) = state.handles.remove(&fh.0)
            && fs::rename(self.work.join(&name), self.dir.join(&name)).is_ok()
        {
            state.waiting.insert(name);
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}

// ------------------------------------------------------------------ the do-nothing floor

struct FuseFloor {
    started: SystemTime,
}

impl Filesystem for FuseFloor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        init_as_the_mount(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match lookup_ino(parent.0, name) {
            Some(ino) => reply.entry(&TTL, &attr(ino, self.started), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &attr(ino.0, self.started));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(ino.0), open_flags(ino.0));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.data(slice_at(&BODY, offset, size));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}

// ------------------------------------------------------------------ mounting

/// The options of `ddmq mount` (src/mount: FSName, Subtype, nodev, nosuid; no
/// default_permissions, the daemon decides), one thread.
fn config(fsname: &str) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.n_threads = Some(1);
    config.mount_options = vec![
        fuser::MountOption::FSName(fsname.into()),
        fuser::MountOption::Subtype("ddmq-floor".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    config
}

/// Mounts the do-nothing floor at `mnt` and serves until unmounted.
pub fn serve_floor(mnt: &Path) -> io::Result<()> {
    let floor = FuseFloor {
        started: SystemTime::now(),
    };
    fuser::Session::new(floor, mnt, &config("ddmq-bench-floor"))?.run()
}

/// Mounts the file queue over `dir` (its queue is `dir/q`, made empty) at `mnt` and serves
/// until unmounted.
pub fn serve_queue(dir: &Path, mnt: &Path) -> io::Result<()> {
    let qdir = dir.join(QUEUE_NAME);
    let work = qdir.join("work");
    let _ = fs::remove_dir_all(&qdir);
    fs::create_dir_all(&work)?;
    let queue = FileQueue {
        started: SystemTime::now(),
        dir: qdir,
        work,
        state: Mutex::new(QueueState {
            handles: HashMap::new(),
            next_fh: 1,
            waiting: BTreeSet::new(),
            next_seq: 0,
        }),
    };
    fuser::Session::new(queue, mnt, &config("ddmq-bench-queue"))?.run()
}
