//! Every `unsafe` system call the daemon makes, each wrapped in a safe function that says what it
//! does. This module is meant to be read alone: nothing outside it calls libc through `unsafe`.

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

/// fork(2), and setsid(2) in the child. The caller must be single-threaded: only the calling
/// thread survives in the child.
pub fn fork_detached() -> io::Result<ForkSide> {
    // SAFETY: the caller promises a single-threaded process, so the child is a complete copy.
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
