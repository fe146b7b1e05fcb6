//! The thin FUSE adapter: a `fuser::Filesystem` that forwards each request to [`crate::fs`],
//! turns its answers into replies, and maps its errors to errno in one place ([`fail`]), where
//! each failed request is logged once with its operation and errno.
//!
//! Opens of `wait` can block for as long as the wait limit: they run on a thread of their own
//! and reply from there, so the session keeps serving everybody else meanwhile.

use crate::fs::{Access, Attr, FsError, QueueFs, SetAttr};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use std::borrow::Cow;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the kernel may cache the fixed part of the tree (queues and their files).
const STABLE_TTL: Duration = Duration::from_secs(1);

/// The adapter; cheap to clone into threads.
pub struct DdmqFuse {
    fs: Arc<QueueFs>,
}

impl DdmqFuse {
    pub fn new(fs: Arc<QueueFs>) -> DdmqFuse {
        DdmqFuse { fs }
    }
}

/// Logs a failed request once and answers it with the error's errno.
fn fail(e: &FsError) -> Errno {
    let errno = e.errno();
    if e.is_routine() {
        log::debug!("{e} (errno {errno})");
    } else {
        log::warn!("{e} (errno {errno})");
    }
    Errno::from_i32(errno)
}

fn ttl(attr: &Attr) -> Duration {
    if attr.volatile {
        Duration::ZERO
    } else {
        STABLE_TTL
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: 0,
        blocks: 0,
        atime: a.time,
        mtime: a.time,
        ctime: a.time,
        crtime: a.time,
        kind: if a.is_dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: a.perm,
        nlink: if a.is_dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// A name as the fs layer takes it. Every name in the tree is ASCII, so a name that is not
/// UTF-8 goes on with its bad bytes replaced (never a valid name): the fs layer then answers it
/// as any other name it does not hold, ENOENT where it is looked for, EINVAL where it would be
/// made, in one place for all names.
fn name_of(name: &OsStr) -> Cow<'_, str> {
    name.to_string_lossy()
}

/// Synthetic files: no page cache (content is made at open) and no seeking.
const FILE_OPEN_FLAGS: FopenFlags =
    FopenFlags::FOPEN_DIRECT_IO.union(FopenFlags::FOPEN_NONSEEKABLE);

/// Open flags for a handle: a handle whose closes do not matter (a snapshot: status, a peek)
/// tells the kernel to skip FLUSH, one round trip less.
fn open_flags(needs_flush: bool) -> FopenFlags {
    if needs_flush {
        FILE_OPEN_FLAGS
    } else {
        FILE_OPEN_FLAGS.union(FopenFlags::FOPEN_NOFLUSH)
    }
}

impl Filesystem for DdmqFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with OPEN instead of as a separate SETATTR: one request less per publish.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            log::debug!("kernel lacks {missing:?}: truncation comes as SETATTR");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.fs.shutdown();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, &name_of(name)) {
            Ok(a) => reply.entry(&ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The kernel sends the file type bits with a mode change; only permission bits matter.
        let change = SetAttr {
            size,
            times: atime.is_some() || mtime.is_some(),
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
        };
        match self.fs.setattr(ino.0, fh.map(|f| f.0), &change) {
            Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.fs.mkdir(parent.0, &name_of(name)) {
            Ok(a) => reply.entry(&ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, &name_of(name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(parent.0, &name_of(name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(fail(&self.fs.refuse("mknod", parent.0, &name_of(name))));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(fail(&self.fs.refuse("create", parent.0, &name_of(name))));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(fail(&self.fs.refuse(
            "symlink",
            parent.0,
            &name_of(link_name),
        )));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(fail(&self.fs.refuse(
            "link",
            newparent.0,
            &name_of(newname),
        )));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(fail(&self.fs.refuse("rename", parent.0, &name_of(name))));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let access = Access::from_flags(flags.0);
        let pid = req.pid();
        if self.fs.open_may_block(ino.0) {
            let fs = self.fs.clone();
            let spawned = std::thread::Builder::new()
                .name("ddmq-wait".into())
                .spawn(move || match fs.open(ino.0, access, pid) {
                    Ok(fh) => reply.opened(FileHandle(fh), open_flags(fs.needs_flush(fh))),
                    Err(e) => reply.error(fail(&e)),
                });
            if let Err(e) = spawned {
                // The reply moved into the closure is dropped with it: fuser answers EIO then.
                log::warn!("open of inode {ino}: cannot start a thread to wait on: {e}");
            }
            return;
        }
        match self.fs.open(ino.0, access, pid) {
            Ok(fh) => reply.opened(FileHandle(fh), open_flags(self.fs.needs_flush(fh))),
            Err(e) => reply.error(fail(&e)),
        }
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
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(fail(&e)),
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
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.fs.flush(fh.0, req.pid()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(&e)),
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
        // close() never sees this error; the log is the only place it shows.
        match self.fs.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered that fsync could push: a body is published whole on close.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0, offset) {
            Ok(entries) => {
                for (next, e) in entries {
                    let kind = if e.is_dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    if reply.add(INodeNo(e.ino), next, kind, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    // The tree has no extended attributes. ENOSYS (not ENODATA) makes the kernel stop asking:
    // otherwise every write asks for security.capability first, a round trip per publish.
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

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    /// No file here is a terminal or a device: what `isatty` (Python's open) asks gets ENOTTY.
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

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions) from the modes we report.
        reply.ok();
    }
}
