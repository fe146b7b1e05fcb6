//! Every `unsafe` system call ddmq makes, each wrapped in a function that says what it does:
//! the mount daemon's (mount, fork, signals, heap) and the FUSE adapter's (acting as the caller).
//! This module is meant to be read alone: the crate root denies `unsafe` everywhere else, so the
//! compiler keeps it the only place. It depends on nothing else in the crate, so the mount and
//! the adapter both use it without depending on each other.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path as a C string; a path with a NUL byte cannot name a file.
pub fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", p.display()),
        )
    })
}

fn c_string(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when the process runs with effective uid 0.
pub fn is_root_user() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The real uid and gid of the process.
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// umount2(2): `lazy` detaches even if files are open (MNT_DETACH).
pub fn umount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let path = c_path(mountpoint)?;
    // SAFETY: a valid NUL-terminated path; umount2 touches nothing else.
    check(unsafe { libc::umount2(path.as_ptr(), if lazy { libc::MNT_DETACH } else { 0 }) })
}

/// statfs(2) of `path`, for its answer only (a FUSE mount always asks its daemon, where stat may
/// be answered from the kernel's cache). Returns the filesystem's magic number.
pub fn statfs_type(path: &Path) -> io::Result<i64> {
    let path = c_path(path)?;
    // SAFETY: a valid path and a zeroed statfs buffer of the right type for the kernel to fill.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        check(libc::statfs(path.as_ptr(), &mut buf))?;
        #[allow(clippy::unnecessary_cast)] // f_type's type differs between targets
        Ok(buf.f_type as i64)
    }
}

/// mount(2) with a data string (as root).
pub fn mount(
    source: &str,
    target: &Path,
    fs_type: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (source, target) = (c_string(source)?, c_path(target)?);
    let (fs_type, data) = (c_string(fs_type)?, c_string(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
}

/// Which side of a fork this is.
pub enum ForkSide {
    /// The original process.
    Parent,
    /// The new process, in a session of its own (detached from the terminal).
    Child,
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: the descriptors were just created and are owned here alone.
    Ok(unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    })
}

/// fork(2), and setsid(2) in the child.
///
/// # Safety
///
/// The process must be single-threaded when this is called. Only the calling thread survives
/// in the child: a lock another thread held (the allocator's, a logger's, a `Mutex`) would stay
/// locked forever there, and whatever that thread was changing would stay half-changed.
unsafe fn fork_detached() -> io::Result<ForkSide> {
    // SAFETY: the caller guarantees a single-threaded process, so the child is a complete copy.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: setsid has no memory effects; it leaves the terminal's session.
            unsafe { libc::setsid() };
            Ok(ForkSide::Child)
        }
        _ => Ok(ForkSide::Parent),
    }
}

/// [`fork_detached`] once the process is seen to have one thread, which is what makes the fork
/// safe; an error, and no fork, otherwise. The count cannot go stale: only the one thread
/// could start another.
pub fn fork_detached_checked() -> io::Result<ForkSide> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork a process of {threads} threads (only the calling one would survive)"
        )));
    }
    // SAFETY: the process has one thread, checked just now.
    unsafe { fork_detached() }
}

/// Points stdin and stdout at `null`, stderr at `log`, and changes directory to `/`.
pub fn redirect_stdio(null: &File, log: &File) {
    // SAFETY: dup2 onto the standard descriptors of open files that outlive the call.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        libc::chdir(c"/".as_ptr());
    }
}

/// The signals that stop the daemon: SIGINT, SIGTERM, SIGHUP.
#[derive(Clone, Copy)]
pub struct StopSignals(libc::sigset_t);

impl StopSignals {
    /// Blocks the stop signals in the calling thread; threads started afterwards inherit the
    /// mask, so only [`StopSignals::wait`] receives them.
    pub fn block() -> StopSignals {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the old mask
        // is not asked for.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            StopSignals(set)
        }
    }

    /// Waits for one of the stop signals and returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: a valid signal set and an int to write the signal number to.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

/// Hands memory that glibc keeps after frees back to the system.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The filesystem identity a request is carried out as: uid, gid and supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The daemon's own supplementary groups, read once (what [`ActingAs`] restores).
fn own_groups() -> &'static [libc::gid_t] {
    static GROUPS: std::sync::OnceLock<Vec<libc::gid_t>> = std::sync::OnceLock::new();
    GROUPS.get_or_init(|| {
        // SAFETY: a zero-length query returns the count and writes nothing.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut groups = vec![0; n.max(0) as usize];
        // SAFETY: `groups` has room for the `n` entries getgroups writes.
        let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        groups.truncate(got.max(0) as usize);
        groups
    })
}

/// Sets the calling thread's supplementary groups. The raw system call, not glibc's
/// setgroups(3), which changes the groups of every thread of the process.
fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice of gid_t.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// While alive, the calling thread accesses files as another identity: its filesystem uid and
/// gid (setfsuid/setfsgid, per thread by nature) and supplementary groups (per thread through
/// the raw system call). Dropping it gives the thread back the daemon's own identity. Needs
/// root (CAP_SETUID, CAP_SETGID); a thread with a filesystem uid other than 0 loses the
/// capabilities that bypass file permissions, so the backing filesystem checks the caller.
pub struct ActingAs {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl ActingAs {
    /// Takes on `who`'s identity in the calling thread.
    pub fn new(who: &Identity) -> io::Result<ActingAs> {
        own_groups(); // read before the first change, so it holds the daemon's own groups
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let me = unsafe {
            ActingAs {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        };
        set_thread_groups(&who.groups)?;
        // SAFETY: setfsgid and setfsuid only change the calling thread's credentials.
        unsafe {
            libc::setfsgid(who.gid);
            libc::setfsuid(who.uid);
            // Both return the previous id; asking with an invalid id (-1) returns the current
            // one, which tells whether the change took.
            if libc::setfsuid(u32::MAX) as u32 != who.uid
                || libc::setfsgid(u32::MAX) as u32 != who.gid
            {
                libc::setfsuid(me.uid);
                libc::setfsgid(me.gid);
                let _ = set_thread_groups(own_groups());
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        Ok(me)
    }
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        // SAFETY: as in `new`, per-thread credential changes only.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
        if let Err(e) = set_thread_groups(own_groups()) {
            // A thread left with a caller's groups would serve the next caller with them.
            log::error!("cannot restore the daemon's groups: {e}; exiting");
            std::process::abort();
        }
    }
}

/// The current time in UTC: (year, month, day, hour, minute, second), from gmtime_r.
pub fn utc_now() -> (i32, i32, i32, i32, i32, i32) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: gmtime_r writes only the tm it is given; an all-zero tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::gmtime_r(&secs, &mut tm) }.is_null() {
        return (1970, 1, 1, 0, 0, 0);
    }
    (
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
    )
}

/// Makes the command start with `sig` ignored (an ignored signal stays ignored across exec; a
/// handler the command installs overrides it). A closure before exec makes std fork instead of
/// posix_spawn.
pub fn ignore_signal_across_exec(cmd: &mut std::process::Command, sig: nix::sys::signal::Signal) {
    use nix::sys::signal::{SigHandler, signal};
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls may be made; sigaction is
    // one, and the closure touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            signal(sig, SigHandler::SigIgn)
                .map(drop)
                .map_err(io::Error::from)
        });
    }
}
