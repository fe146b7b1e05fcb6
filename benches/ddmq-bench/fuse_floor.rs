//! The FUSE floor: a fuser filesystem that does nothing but answer the requests a client of the
//! mount makes (`q/in`: open, write, flush, release; `q/next`: open, read, read, flush, release),
//! mounted with the same options as `ddmq mount` and served by one thread as it is. What the
//! mount costs over this is the daemon's own work; this is what any FUSE filesystem costs.
//!
//! Run as `ddmq-bench fuse-floor MNT` (a process of its own, as the daemon is); it serves until
//! unmounted.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyOpen, ReplyWrite, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

const ROOT: u64 = 1;
const QUEUE: u64 = 2;
const IN: u64 = 3;
const NEXT: u64 = 4;
/// The body every read of `next` gives (100 bytes, as the benchmark's messages).
const BODY: [u8; 100] = [b'x'; 100];
const TTL: Duration = Duration::from_secs(1);

struct FuseFloor {
    started: SystemTime,
}

impl FuseFloor {
    fn attr(&self, ino: u64) -> FileAttr {
        let dir = ino == ROOT || ino == QUEUE;
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
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
}

impl Filesystem for FuseFloor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // As the mount: O_TRUNC comes with OPEN.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (parent.0, name.to_str()) {
            (ROOT, Some("q")) => QUEUE,
            (QUEUE, Some("in")) => IN,
            (QUEUE, Some("next")) => NEXT,
            _ => return reply.error(Errno::ENOENT),
        };
        reply.entry(&TTL, &self.attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(
            FileHandle(ino.0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE,
        );
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
        let start = (offset as usize).min(BODY.len());
        let end = (start + size as usize).min(BODY.len());
        reply.data(&BODY[start..end]);
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

/// Mounts the floor at `mnt` (the options of `ddmq mount`) and serves until unmounted.
pub fn serve(mnt: &Path) -> io::Result<()> {
    let mut config = fuser::Config::default();
    config.n_threads = Some(1);
    config.mount_options = vec![
        fuser::MountOption::FSName("ddmq-bench-floor".into()),
        fuser::MountOption::Subtype("ddmq-floor".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    let floor = FuseFloor {
        started: SystemTime::now(),
    };
    fuser::Session::new(floor, mnt, &config)?.run()
}
