//! The thin FUSE adapter: a `fuser::Filesystem` that forwards each request to [`crate::fs`],
//! turns its answers into replies, and maps its errors to errno in one place ([`fail`]), where
//! each failed request is logged once with its operation and errno.
//!
//! Every request that names a node is first checked against its caller ([`QueueFs::permit`]:
//! the mount has no `default_permissions`, the daemon decides), then carried out as that caller
//! when the daemon runs as root. Requests that come without a caller (RELEASE) and the
//! renewals of leases are carried out as whoever opened the file.
//!
//! Opens that may take long run on a thread of their own and reply from there, so the session
//! keeps serving everybody else meanwhile: `wait` (as long as the wait limit) and `status` (a
//! count of the queue's directories); see [`QueueFs::open_may_block`].

use crate::fs::{
    Attr, Caller, FsError, Intent, OpenInfo, OpenMode, QueueFs, SetAttr, supplementary_groups,
};
use crate::locking::LockRecovering;
use crate::sys::{ActingAs, Identity};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long the kernel may cache the fixed part of the tree (queues and their files).
const STABLE_TTL: Duration = crate::fs::STABLE_FOR;

/// How long the supplementary groups read for a caller are reused (a /proc read per request
/// would cost a publish several system calls more).
const GROUPS_TTL: Duration = Duration::from_secs(1);

/// A caller as a request names it: pid, uid, gid.
type CallerKey = (u32, u32, u32);

/// The adapter.
pub struct DdmqFuse {
    fs: Arc<QueueFs>,
    /// Carry out each request as its caller (a daemon run by root), or as the daemon itself.
    act_as_callers: bool,
    /// Who opened each open file: RELEASE comes without a caller, and is carried out as them.
    openers: Arc<Mutex<HashMap<u64, Identity>>>,
    /// Recently read supplementary groups, by (pid, uid, gid) of the caller.
    groups: Mutex<HashMap<CallerKey, (Vec<u32>, Instant)>>,
    /// Every request comes with the same uid and gid (see [`DdmqFuse::new`]).
    one_identity: bool,
}

impl DdmqFuse {
    /// `act_as_callers`: carry out each request with the filesystem identity of the process
    /// that made it (needs root; see [`ActingAs`]). `one_identity`: the mount admits its
    /// owner only (neither allow_other nor allow_root), so the kernel lets through only tasks
    /// whose uids and gids are all the owner's: every caller would get the same `in`, and
    /// its entry can be cached, which saves a LOOKUP per publish. (Two such tasks may differ
    /// in supplementary groups, so the write bit an `in` shows may be another's for a second;
    /// what a caller may do is still decided for each request against the caller itself.)
    pub fn new(fs: Arc<QueueFs>, act_as_callers: bool, one_identity: bool) -> DdmqFuse {
        DdmqFuse {
            fs,
            act_as_callers,
            openers: Arc::new(Mutex::new(HashMap::new())),
            groups: Mutex::new(HashMap::new()),
            one_identity,
        }
    }

    fn ttl(&self, attr: &Attr) -> Duration {
        ttl(attr, self.one_identity)
    }

    /// The caller of `req`: its ids and supplementary groups (root's are not needed: it
    /// passes every check and is served as the daemon).
    fn caller(&self, req: &Request) -> Caller {
        let (pid, uid, gid) = (req.pid(), req.uid(), req.gid());
        if uid == 0 {
            return Caller::root();
        }
        let now = Instant::now();
        let mut cache = self.groups.lock_recovering();
        let groups = match cache.get(&(pid, uid, gid)) {
            Some((groups, read)) if now.duration_since(*read) < GROUPS_TTL => groups.clone(),
            _ => {
                // A caller gone before we asked keeps only its own group.
                let groups = supplementary_groups(pid).unwrap_or_default();
                if cache.len() >= 4096 {
                    cache.retain(|_, (_, read)| now.duration_since(*read) < GROUPS_TTL);
                }
                cache.insert((pid, uid, gid), (groups.clone(), now));
                groups
            }
        };
        Caller { uid, gid, groups }
    }

    /// The identity to carry out a request of `who` as: None for the daemon's own (not acting
    /// as callers, or a caller that is root, for whom nothing would change).
    fn identity(&self, who: &Caller) -> Option<Identity> {
        (self.act_as_callers && !who.is_root()).then(|| Identity {
            uid: who.uid,
            gid: who.gid,
            groups: who.groups.clone(),
        })
    }

    /// What renews the leases of open files, as their openers (see [`LeaseKeeper`]).
    pub fn lease_keeper(&self) -> LeaseKeeper {
        LeaseKeeper {
            fs: self.fs.clone(),
            openers: self.openers.clone(),
        }
    }

    /// Takes on `who`'s identity for this thread until the guard is dropped.
    fn act_as(who: Option<&Identity>) -> Result<Option<ActingAs>, Errno> {
        match who {
            None => Ok(None),
            Some(who) => ActingAs::new(who).map(Some).map_err(|e| {
                log::warn!("cannot act as uid {} gid {}: {e}", who.uid, who.gid);
                Errno::EPERM
            }),
        }
    }
}

/// Renews the leases that open files keep on their messages (see `crate::fs`'s lease module),
/// each as the process that opened the file, so that a renewal is something that process
/// could do itself.
pub struct LeaseKeeper {
    fs: Arc<QueueFs>,
    openers: Arc<Mutex<HashMap<u64, Identity>>>,
}

impl LeaseKeeper {
    /// Renews every lease that is due.
    pub fn renew_due(&self) {
        for fh in self.fs.leases_due() {
            let opener = self.openers.lock_recovering().get(&fh).cloned();
            let Ok(_opener) = DdmqFuse::act_as(opener.as_ref()) else {
                continue;
            };
            if let Err(e) = self.fs.renew_lease(fh) {
                log::warn!("{e}");
            }
        }
    }
}

/// Takes on the identity of the caller `$who` for the rest of the handler, or answers the error.
macro_rules! acting_as {
    ($self:ident, $who:expr, $reply:ident) => {
        match DdmqFuse::act_as($self.identity(&$who).as_ref()) {
            Ok(guard) => guard,
            Err(e) => return $reply.error(e),
        }
    };
}

/// Checks that `$who` may do `$intent` on `$ino`, or answers the refusal.
macro_rules! permit {
    ($self:ident, $reply:ident, $op:literal, $ino:expr, $who:expr, $intent:expr) => {
        if let Err(e) = $self.fs.permit($op, $ino, &$who, $intent) {
            return $reply.error(fail(&e));
        }
    };
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

/// How long the kernel may cache a message's entry (`messages/<id>`, `work/<id>`). Long enough
/// that `ls -l` needs no request for its stat of an entry: `ls` stats each page of entries as
/// soon as READDIRPLUS brought them (or right after its LOOKUP), well within this; short, as a
/// message may go at any moment: within this time a `stat` of a message just consumed may
/// still succeed, while opening or removing it asks the daemon and fails.
const MESSAGE_TTL: Duration = Duration::from_millis(250);

/// How long the kernel may cache `attr`'s entry and attributes. A per-caller node (`in`) is
/// not cached at all where callers of several identities may come, so that each path lookup
/// brings each caller to its own; where the kernel admits one identity only (see
/// [`DdmqFuse::new`]) every caller gets the same node, which is cached as any other.
fn ttl(attr: &Attr, one_identity: bool) -> Duration {
    if attr.per_caller && !one_identity {
        Duration::ZERO
    } else if attr.volatile {
        MESSAGE_TTL
    } else {
        STABLE_TTL
    }
}

fn file_type(is_dir: bool) -> FileType {
    if is_dir {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.time,
        mtime: a.time,
        ctime: a.time,
        crtime: a.time,
        kind: file_type(a.is_dir),
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

/// Open flags for a handle. Synthetic files have no page cache (content is made at open); only
/// `in` is seekable (so `cp --sparse` and truncation work as on a file). A handle whose closes
/// do not matter (a snapshot: status, a peek) tells the kernel to skip FLUSH, one round trip less.
fn open_flags(info: OpenInfo) -> FopenFlags {
    let mut flags = FopenFlags::FOPEN_DIRECT_IO;
    if !info.seekable {
        flags |= FopenFlags::FOPEN_NONSEEKABLE;
    }
    if !info.needs_flush {
        flags |= FopenFlags::FOPEN_NOFLUSH;
    }
    flags
}

impl Filesystem for DdmqFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with OPEN instead of as a separate SETATTR: one request less per publish.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            log::debug!("kernel lacks {missing:?}: truncation comes as SETATTR");
        }
        // Listings with attributes (READDIRPLUS), so `ls -l` needs no LOOKUP per entry. AUTO:
        // the kernel asks for them on a directory's first page and then only while the program
        // goes on to stat what it lists; a bare `ls` or `find` gets plain pages after the first,
        // and neither the kernel nor this daemon keeps an inode for every message it saw.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(missing) = config.add_capabilities(plus) {
            log::debug!("kernel lacks {missing:?}: listings come without attributes");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.fs.shutdown();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let who = self.caller(req);
        permit!(self, reply, "lookup", parent.0, who, Intent::Lookup);
        let _acting = acting_as!(self, who, reply);
        match self
            .fs
            .lookup_by(parent.0, &name_of(name), req.pid(), Some(&who))
        {
            Ok(a) => reply.entry(&self.ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let who = self.caller(req);
        permit!(self, reply, "getattr", ino.0, who, Intent::Stat);
        let _acting = acting_as!(self, who, reply);
        match self.fs.getattr_for(ino.0, Some(&who)) {
            Ok(a) => reply.attr(&self.ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
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
        let who = self.caller(req);
        let intent = Intent::SetAttr {
            change: &change,
            open: fh.is_some(),
        };
        permit!(self, reply, "setattr", ino.0, who, intent);
        let _acting = acting_as!(self, who, reply);
        match self
            .fs
            .setattr_by(ino.0, fh.map(|f| f.0), &change, Some(&who))
        {
            Ok(a) => reply.attr(&self.ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let who = self.caller(req);
        permit!(self, reply, "mkdir", parent.0, who, Intent::ChangeEntries);
        let _acting = acting_as!(self, who, reply);
        match self.fs.mkdir(parent.0, &name_of(name)) {
            Ok(a) => reply.entry(&self.ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let who = self.caller(req);
        permit!(self, reply, "unlink", parent.0, who, Intent::ChangeEntries);
        let _acting = acting_as!(self, who, reply);
        match self.fs.unlink_by(parent.0, &name_of(name), req.pid()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let who = self.caller(req);
        permit!(self, reply, "rmdir", parent.0, who, Intent::ChangeEntries);
        let _acting = acting_as!(self, who, reply);
        match self.fs.rmdir(parent.0, &name_of(name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        permit!(
            self,
            reply,
            "mknod",
            parent.0,
            self.caller(req),
            Intent::ChangeEntries
        );
        reply.error(fail(&self.fs.refuse("mknod", parent.0, &name_of(name))));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let who = self.caller(req);
        permit!(self, reply, "create", parent.0, who, Intent::ChangeEntries);
        let identity = self.identity(&who);
        let _acting = match DdmqFuse::act_as(identity.as_ref()) {
            Ok(guard) => guard,
            Err(e) => return reply.error(e),
        };
        let mode = OpenMode::from_flags(flags);
        match self
            .fs
            .create(parent.0, &name_of(name), mode, req.pid(), Some(&who))
        {
            Ok((a, fh)) => {
                if let Some(who) = identity {
                    self.openers.lock_recovering().insert(fh, who);
                }
                reply.created(
                    &self.ttl(&a),
                    &file_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    open_flags(self.fs.open_info(fh)),
                )
            }
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        permit!(
            self,
            reply,
            "symlink",
            parent.0,
            self.caller(req),
            Intent::ChangeEntries
        );
        reply.error(fail(&self.fs.refuse(
            "symlink",
            parent.0,
            &name_of(link_name),
        )));
    }

    fn link(
        &self,
        req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        permit!(
            self,
            reply,
            "link",
            newparent.0,
            self.caller(req),
            Intent::ChangeEntries
        );
        reply.error(fail(&self.fs.refuse(
            "link",
            newparent.0,
            &name_of(newname),
        )));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        permit!(
            self,
            reply,
            "rename",
            parent.0,
            self.caller(req),
            Intent::ChangeEntries
        );
        reply.error(fail(&self.fs.refuse("rename", parent.0, &name_of(name))));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode::from_flags(flags.0);
        let pid = req.pid();
        let who = self.caller(req);
        permit!(self, reply, "open", ino.0, who, Intent::Open(mode));
        let caller = self.identity(&who);
        let fs = self.fs.clone();
        let openers = self.openers.clone();
        let open = move || {
            let _caller = match DdmqFuse::act_as(caller.as_ref()) {
                Ok(guard) => guard,
                Err(e) => return reply.error(e),
            };
            match fs.open(ino.0, mode, pid) {
                Ok(fh) => {
                    if let Some(who) = caller.clone() {
                        openers.lock_recovering().insert(fh, who);
                    }
                    reply.opened(FileHandle(fh), open_flags(fs.open_info(fh)))
                }
                Err(e) => reply.error(fail(&e)),
            }
        };
        if !self.fs.open_may_block(ino.0) {
            return open();
        }
        let spawned = std::thread::Builder::new()
            .name("ddmq-wait".into())
            .spawn(open);
        if let Err(e) = spawned {
            // The reply moved into the closure is dropped with it: fuser answers EIO then.
            log::warn!("open of inode {ino}: cannot start a thread to wait on: {e}");
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _acting = acting_as!(self, self.caller(req), reply);
        match self.fs.read(fh.0, offset, size, req.pid()) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(fail(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _acting = acting_as!(self, self.caller(req), reply);
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
        let _acting = acting_as!(self, self.caller(req), reply);
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
        // RELEASE may come without a caller (the kernel's own, after the last close): it is
        // carried out as whoever opened the file.
        let opener = self.openers.lock_recovering().remove(&fh.0);
        let _opener = match DdmqFuse::act_as(opener.as_ref()) {
            Ok(guard) => guard,
            Err(e) => return reply.error(e),
        };
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

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let who = self.caller(req);
        permit!(self, reply, "opendir", ino.0, who, Intent::List);
        let _acting = acting_as!(self, who, reply);
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
        let paged = self.fs.readdir(fh.0, offset, |next, e| {
            reply.add(INodeNo(e.ino), next, file_type(e.is_dir), &e.name)
        });
        match paged {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(&e)),
        }
    }

    /// READDIR and LOOKUP in one: `ls -l` of a deep queue gets each entry's attributes with
    /// the listing instead of asking for them one round trip at a time.
    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // As LOOKUP: the attributes are derived as the caller.
        let who = self.caller(req);
        let _acting = acting_as!(self, who, reply);
        let paged = self.fs.readdirplus(fh.0, offset, Some(&who), |next, e, a| {
            reply.add(
                INodeNo(a.ino),
                next,
                &e.name,
                &self.ttl(a),
                &file_attr(a),
                Generation(0),
            )
        });
        match paged {
            Ok(()) => reply.ok(),
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

    /// Preallocation and hole punching (`cp --sparse` tries it): refused quietly, so the
    /// program falls back to writing or seeking.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EOPNOTSUPP);
    }

    /// access(2) and chdir: answered by the same check as every request.
    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let who = self.caller(req);
        let mask = mask.bits() as u32 & 0o7;
        permit!(self, reply, "access", ino.0, who, Intent::Access(mask));
        reply.ok();
    }
}
