//! `ddmq mount` and `ddmq umount`: mount options, and the daemon's life cycle.
//!
//! `ddmq mount ROOT MNT` checks the root and the mountpoint (unmounting a stale mount left by a
//! daemon that died), then by default forks: the parent returns once the child's mount answers,
//! or prints why it failed. The daemon serves [`crate::fs::QueueFs`] through
//! [`crate::fuse::DdmqFuse`] (requests in order, blocking opens of `wait` on threads of their
//! own), runs each queue's housekeeping every ten seconds, and on SIGINT, SIGTERM or SIGHUP
//! unmounts and gives back the messages its readers had claimed but not read whole. It takes
//! the arguments mount(8) gives a helper, so a two-line `mount.fuse.ddmq` script makes
//! `mount -t fuse.ddmq` and fstab work (see doc/MOUNT.md).
//!
//! As root the filesystem is mounted with mount(2) as type `fuse.ddmq`; other users go through
//! `fusermount3`, which gives it the same type.

use crate::engine::{self, Broker};
use crate::fs::{FsOptions, QueueFs};
use crate::fuse::DdmqFuse;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The filesystem type in /proc/mounts (what PRUNEFS and fstab name).
pub const FS_TYPE: &str = "fuse.ddmq";
/// How often the daemon runs housekeeping (the engine still runs it at most once a minute per queue).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);
/// After a stop signal, how long open files may keep a lazily unmounted filesystem alive.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Options of `ddmq mount`.
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The ddmq root directory to serve.
    pub root: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated: allow_other, allow_root, ro, rw, uid=N, gid=N, umask=OOO,
    /// wait_limit=SECONDS, create, fsname=NAME, threads=N; options for mount(8) and systemd
    /// (_netdev, nofail, noauto, auto, user, users, defaults, x-systemd.*) are ignored.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Stay in the foreground (log to stderr) instead of daemonising once the mount is up.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Where a background daemon appends its log (default: discarded; use -f to see it).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Log each request (debug level), unless RUST_LOG says otherwise.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Accepted for mount(8) helpers (no mtab): ignored.
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,
    /// Accepted for mount(8) helpers (sloppy options): ignored.
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,
    /// Accepted for mount(8) helpers (the filesystem type): ignored.
    #[arg(short = 't', hide = true)]
    pub fs_type: Option<String>,
}

/// Options of `ddmq umount`.
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// The mountpoint to unmount.
    pub mountpoint: PathBuf,
    /// Detach now even if files are open (they keep working until closed).
    #[arg(short = 'l', long)]
    pub lazy: bool,
}

/// The daemon's error: what it was doing, and on what.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("invalid mount option {option:?}: {reason}")]
    Option { option: String, reason: String },
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Daemon(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MountError + use<> {
    let path = path.to_path_buf();
    move |source| MountError::Io { op, path, source }
}

/// Parsed `-o` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    pub read_only: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub umask: Option<u32>,
    pub wait_limit: Duration,
    /// Threads serving requests. One (the default) serves them in the order they came, so a
    /// message written to `in` is in its queue for any request made after the writer's close
    /// (the kernel sends RELEASE without waiting for it); `wait` opens run on threads of their own.
    pub threads: usize,
    /// Initialise the root if needed (as the CLI's -f).
    pub create: bool,
    pub fsname: Option<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            allow_root: false,
            read_only: false,
            uid: None,
            gid: None,
            umask: None,
            wait_limit: Duration::from_secs(30),
            threads: 1,
            create: false,
            fsname: None,
        }
    }
}

impl MountOptions {
    /// Parses `-o` arguments (each a comma-separated list; later options win).
    pub fn parse(args: &[String]) -> Result<MountOptions, MountError> {
        let mut o = MountOptions::default();
        for item in args
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            let bad = |reason: &str| MountError::Option {
                option: item.to_string(),
                reason: reason.to_string(),
            };
            let number = |radix: u32| -> Result<u64, MountError> {
                let v = value.ok_or_else(|| bad("needs a value"))?;
                u64::from_str_radix(v, radix).map_err(|_| {
                    bad(if radix == 8 {
                        "expected an octal number"
                    } else {
                        "expected a number"
                    })
                })
            };
            match key {
                "allow_other" => o.allow_other = true,
                "allow_root" => o.allow_root = true,
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "uid" => o.uid = Some(u32::try_from(number(10)?).map_err(|_| bad("out of range"))?),
                "gid" => o.gid = Some(u32::try_from(number(10)?).map_err(|_| bad("out of range"))?),
                "umask" => {
                    let m = number(8)?;
                    if m > 0o777 {
                        return Err(bad("at most 777"));
                    }
                    o.umask = Some(m as u32);
                }
                "wait_limit" => {
                    let v = value.ok_or_else(|| bad("needs a value"))?;
                    let secs: f64 = v.parse().map_err(|_| bad("expected seconds"))?;
                    if !(0.0..=86400.0).contains(&secs) {
                        return Err(bad("between 0 and 86400 seconds"));
                    }
                    o.wait_limit = Duration::from_secs_f64(secs);
                }
                "threads" => {
                    let n = number(10)?;
                    if !(1..=64).contains(&n) {
                        return Err(bad("between 1 and 64"));
                    }
                    o.threads = n as usize;
                }
                "create" => o.create = true,
                "fsname" => o.fsname = Some(value.ok_or_else(|| bad("needs a value"))?.to_string()),
                // Always on: the kernel checks the modes that uid, gid and umask set.
                "default_permissions" => {}
                // For mount(8), systemd and fstab, not for the filesystem.
                "_netdev" | "nofail" | "noauto" | "auto" | "user" | "users" | "nouser"
                | "defaults" | "nodev" | "nosuid" | "noexec" | "exec" | "dev" | "suid"
                | "atime" | "noatime" | "relatime" | "async" | "subtype" => {}
                k if k.starts_with("x-") || k.starts_with("comment=") => {}
                _ => return Err(bad("unknown option")),
            }
        }
        Ok(o)
    }

    fn fs_options(&self) -> FsOptions {
        let defaults = FsOptions::default();
        FsOptions {
            read_only: self.read_only,
            uid: self.uid.unwrap_or(defaults.uid),
            gid: self.gid.unwrap_or(defaults.gid),
            umask: self.umask.unwrap_or(defaults.umask),
            wait_limit: self.wait_limit,
            ..defaults
        }
    }

    fn acl(&self) -> fuser::SessionACL {
        if self.allow_other {
            fuser::SessionACL::All
        } else if self.allow_root {
            fuser::SessionACL::RootAndOwner
        } else {
            fuser::SessionACL::Owner
        }
    }
}

/// The daemon's log: `[2026-11-29T01:45:48Z INFO  ddmq::fs] message`, env_logger's own layout.
/// The timestamp is written here (UTC, from libc's gmtime_r): env_logger's would pull in a date
/// library that doubles what the build compiles for logging.
fn init_logging(verbose: bool) {
    let default = if verbose { "info,ddmq=debug" } else { "info" };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format(|buf, record| {
            writeln!(
                buf,
                "[{} {:<5} {}] {}",
                utc_now(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .try_init();
}

/// The current time as RFC 3339 UTC to the second: `2026-11-29T01:45:48Z`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: gmtime_r writes only the tm it is given; an all-zero tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::gmtime_r(&secs, &mut tm) }.is_null() {
        return secs.to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// An absolute path, symlinks resolved when the path can be read (a stale mountpoint cannot).
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

fn is_root_user() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn c_path(p: &Path) -> Result<CString, MountError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| MountError::Daemon(format!("{} contains a NUL byte", p.display())))
}

/// Unmounts `mountpoint`: umount2 as root, fusermount3 otherwise. `lazy` detaches even if busy.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), MountError> {
    if is_root_user() {
        let path = c_path(mountpoint)?;
        // SAFETY: a valid NUL-terminated path; umount2 touches nothing else.
        let rc = unsafe { libc::umount2(path.as_ptr(), if lazy { libc::MNT_DETACH } else { 0 }) };
        if rc != 0 {
            return Err(io_err("unmount", mountpoint)(io::Error::last_os_error()));
        }
        return Ok(());
    }
    let flag = if lazy { "-uz" } else { "-u" };
    let mut last = None;
    for tool in ["fusermount3", "fusermount"] {
        match std::process::Command::new(tool)
            .arg(flag)
            .arg("--")
            .arg(mountpoint)
            .status()
        {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => {
                return Err(MountError::Daemon(format!(
                    "{tool} {flag} {} failed ({s})",
                    mountpoint.display()
                )));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(io_err("run fusermount3 for", mountpoint)(
        last.unwrap_or_else(|| io::Error::other("not found")),
    ))
}

/// A mountpoint whose daemon died answers ENOTCONN: detach it so it can be mounted again.
fn recover_stale_mount(mountpoint: &Path) -> Result<(), MountError> {
    // statfs always reaches a FUSE daemon, where stat may be answered from the kernel's cache.
    let path = c_path(mountpoint)?;
    // SAFETY: a valid path and a statfs buffer of the right type.
    let statfs_result = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        if libc::statfs(path.as_ptr(), &mut buf) == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    match statfs_result.and_then(|()| std::fs::metadata(mountpoint)) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
            ) =>
        {
            log::warn!(
                "{} is a stale mount (its daemon is gone): unmounting it first",
                mountpoint.display()
            );
            unmount(mountpoint, true)
        }
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(MountError::Daemon(format!(
            "mountpoint {} is not a directory",
            mountpoint.display()
        ))),
        Err(e) => Err(io_err("mountpoint", mountpoint)(e)),
    }
}

/// The write end of the pipe a background daemon reports readiness (or failure) on.
struct Readiness(Option<std::fs::File>);

impl Readiness {
    fn report(&mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}

enum Forked {
    /// In the parent: the daemon's report.
    Parent(Result<(), MountError>),
    Daemon(Readiness),
}

/// Forks the daemon. Must run before any thread is started (only the calling thread survives a fork).
fn fork_daemon() -> Result<Forked, MountError> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(MountError::Daemon(format!(
            "pipe: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the descriptors were just created and are owned here alone.
    let (read_end, write_end) = unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(fds[0])),
            std::fs::File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    };
    // SAFETY: the process is single-threaded here, so the child is a complete copy.
    match unsafe { libc::fork() } {
        -1 => Err(MountError::Daemon(format!(
            "fork: {}",
            io::Error::last_os_error()
        ))),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory effects; it detaches from the terminal's session.
            unsafe { libc::setsid() };
            Ok(Forked::Daemon(Readiness(Some(write_end))))
        }
        _child => {
            drop(write_end);
            let mut report = String::new();
            let mut read_end = read_end;
            let _ = read_end.read_to_string(&mut report);
            Ok(Forked::Parent(match report.as_str() {
                "ok" => Ok(()),
                "" => Err(MountError::Daemon(
                    "the mount daemon exited before the mount was ready".into(),
                )),
                msg => Err(MountError::Daemon(msg.to_string())),
            }))
        }
    }
}

/// Points stdin and stdout at /dev/null and stderr at the log file (or /dev/null).
fn detach_stdio(log_file: Option<&Path>) -> Result<(), MountError> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("open", Path::new("/dev/null")))?;
    let log = match log_file {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(io_err("open log file", p))?,
        None => null
            .try_clone()
            .map_err(io_err("open", Path::new("/dev/null")))?,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto the standard descriptors of valid open files.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        libc::chdir(c"/".as_ptr());
    }
    Ok(())
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Mounts with mount(2) as type fuse.ddmq (root), or through fusermount3, and does the FUSE handshake.
fn mount_session(
    fuse: DdmqFuse,
    source: &str,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<fuser::Session<DdmqFuse>, MountError> {
    let mut config = fuser::Config::default();
    config.acl = opts.acl();
    config.n_threads = Some(opts.threads);
    if !is_root_user() {
        config.mount_options = vec![
            fuser::MountOption::FSName(source.to_string()),
            fuser::MountOption::Subtype("ddmq".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        if opts.read_only {
            config.mount_options.push(fuser::MountOption::RO);
        }
        return fuser::Session::new(fuse, mountpoint, &config).map_err(io_err("mount", mountpoint));
    }
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(io_err("open", Path::new("/dev/fuse")))?;
    use std::os::fd::AsRawFd;
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid},default_permissions",
        dev.as_raw_fd(),
        libc::S_IFDIR
    );
    if opts.allow_other || opts.allow_root {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if opts.read_only {
        flags |= libc::MS_RDONLY;
    }
    let c_source = CString::new(source)
        .map_err(|_| MountError::Daemon("the root path contains a NUL byte".into()))?;
    let c_target = c_path(mountpoint)?;
    let c_type = CString::new(FS_TYPE).expect("no NUL");
    let c_data = CString::new(data).expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            flags,
            c_data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io_err("mount", mountpoint)(io::Error::last_os_error()));
    }
    fuser::Session::from_fd(fuse, OwnedFd::from(dev), config.acl, config).map_err(|e| {
        let _ = unmount(mountpoint, true);
        io_err("start FUSE session on", mountpoint)(e)
    })
}

pub fn run_mount(args: MountArgs) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(args.verbose);
    let opts = MountOptions::parse(&args.options)?;
    let root = absolute(&args.root);
    let mountpoint = absolute(&args.mountpoint);
    let broker = if opts.create {
        Broker::open_or_init(&root)?
    } else {
        Broker::open(&root)?
    };
    recover_stale_mount(&mountpoint)?;
    let log_file = args.log_file.as_deref().map(absolute);
    let mut readiness = if args.foreground {
        Readiness(None)
    } else {
        match fork_daemon()? {
            Forked::Parent(report) => return Ok(report?),
            Forked::Daemon(r) => r,
        }
    };
    let result = serve(
        broker,
        &root,
        &mountpoint,
        &opts,
        &mut readiness,
        if args.foreground {
            None
        } else {
            Some(log_file.as_deref())
        },
    );
    if let Err(e) = &result {
        readiness.report(&e.to_string());
    }
    Ok(result?)
}

/// Mounts and serves until unmounted or stopped by a signal.
fn serve(
    broker: Broker,
    root: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    readiness: &mut Readiness,
    detach: Option<Option<&Path>>,
) -> Result<(), MountError> {
    // Blocked here, before any thread starts, so every thread inherits the mask and only the
    // signal thread's sigwait receives them.
    let signals = stop_signals();
    // SAFETY: a valid signal set; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };

    let fs = Arc::new(QueueFs::new(broker, opts.fs_options()));
    let source = opts
        .fsname
        .clone()
        .unwrap_or_else(|| root.to_string_lossy().replace(',', "_"));
    let session = mount_session(DdmqFuse::new(fs.clone()), &source, mountpoint, opts)?;
    let background = session
        .spawn()
        .map_err(io_err("start serving", mountpoint))?;
    if let Some(log_file) = detach {
        detach_stdio(log_file)?;
    }
    log::info!(
        "serving {} at {} (read-only: {}, wait limit {:?})",
        root.display(),
        mountpoint.display(),
        opts.read_only,
        opts.wait_limit
    );
    readiness.report("ok");

    {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name("ddmq-housekeeping".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(HOUSEKEEPING_EVERY);
                    fs.housekeeping();
                    log::debug!(
                        "inodes known to the kernel: {}, open files: {}",
                        fs.inode_count(),
                        fs.open_file_count()
                    );
                    // A deep queue's listing, once drained, leaves freed memory that glibc keeps:
                    // hand it back so the daemon's footprint follows the queue down.
                    // SAFETY: malloc_trim only walks the allocator's own free lists.
                    #[cfg(target_env = "gnu")]
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            })
            .map_err(|e| {
                MountError::Daemon(format!("cannot start the housekeeping thread: {e}"))
            })?;
    }
    {
        let fs = fs.clone();
        let mountpoint = mountpoint.to_path_buf();
        std::thread::Builder::new()
            .name("ddmq-signals".into())
            .spawn(move || {
                let mut sig = 0;
                // SAFETY: a valid signal set and an int to write the signal number to.
                unsafe { libc::sigwait(&signals, &mut sig) };
                log::info!("signal {sig}: unmounting {}", mountpoint.display());
                fs.begin_shutdown();
                if let Err(e) = unmount(&mountpoint, false).or_else(|_| unmount(&mountpoint, true))
                {
                    log::warn!("{e}");
                }
                // Files still open keep a lazily detached mount alive: end it after a grace period.
                std::thread::sleep(STOP_GRACE);
                log::info!(
                    "files still open after {STOP_GRACE:?}: giving back their messages and exiting"
                );
                fs.shutdown();
                std::process::exit(0);
            })
            .map_err(|e| MountError::Daemon(format!("cannot start the signal thread: {e}")))?;
    }

    let ended = background.join();
    fs.shutdown();
    log::info!("{} unmounted", mountpoint.display());
    ended.map_err(io_err("serve", mountpoint))
}

pub fn run_umount(args: UmountArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mountpoint = absolute(&args.mountpoint);
    Ok(unmount(&mountpoint, args.lazy)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountOptions, MountError> {
        MountOptions::parse(&[s.to_string()])
    }

    #[test]
    fn options_parse_as_fuse_tools_expect() {
        let o = parse("allow_other,ro,uid=1000,gid=100,umask=027,wait_limit=2.5,_netdev,x-systemd.automount,create").unwrap();
        assert!(o.allow_other && o.read_only && o.create);
        assert_eq!(
            (o.uid, o.gid, o.umask),
            (Some(1000), Some(100), Some(0o027))
        );
        assert_eq!(o.wait_limit, Duration::from_millis(2500));
        assert!(!parse("ro,rw").unwrap().read_only);
        assert_eq!(MountOptions::parse(&[]).unwrap(), MountOptions::default());
        for bad in [
            "bogus",
            "uid=x",
            "umask=999",
            "wait_limit=-1",
            "threads=0",
            "fsname",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("nosuch").unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
    }
}
