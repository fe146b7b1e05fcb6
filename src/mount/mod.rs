//! `ddmq mount` and `ddmq umount`: the daemon's life cycle.
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
//!
//! Parts: [`options`] (the `-o` options); its system calls are in [`crate::sys`].

mod options;

pub use options::MountOptions;

use crate::cli::args::{MountArgs, UmountArgs};
use crate::engine::{self, Broker};
use crate::fs::QueueFs;
use crate::fuse::DdmqFuse;
use crate::sys;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
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
/// How often the leases of open files are looked at (each is renewed a quarter of its lease
/// before it ends, at most every 200 ms: see the fs layer's lease module).
const LEASE_TICK: Duration = Duration::from_millis(100);
/// What admits other users to a mount by an ordinary user (fusermount3 reads it).
const FUSE_CONF: &str = "/etc/fuse.conf";

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
    #[error(
        "{mountpoint} is already a mount ({fs_type} of {device}): unmount it first \
         (ddmq umount {mountpoint})"
    )]
    AlreadyMounted {
        mountpoint: String,
        fs_type: String,
        device: String,
    },
    #[error("{} is not a mount point: nothing to unmount", .0.display())]
    NotMounted(PathBuf),
    #[error(
        "{mountpoint} is a {fs_type} mount of {device}, not a ddmq mount: unmount it with umount(8)"
    )]
    NotDdmq {
        mountpoint: String,
        fs_type: String,
        device: String,
    },
    #[error(
        "-o {option}: a mount by a user other than root admits other users (root included) only \
         if {FUSE_CONF} has the line user_allow_other (an administrator adds it), or if the \
         daemon runs as root"
    )]
    OthersNotAllowed { option: &'static str },
    #[error("{0}")]
    Daemon(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MountError + use<> {
    let path = path.to_path_buf();
    move |source| MountError::Io { op, path, source }
}

/// Where the daemon's standard streams go once the mount is up.
#[derive(Clone, Copy, Debug)]
enum Stdio<'a> {
    /// Foreground (`-f`): keep the terminal; the log goes to stderr.
    Keep,
    /// Background: stdin and stdout to /dev/null, the log appended to this file (or discarded).
    Detach { log_file: Option<&'a Path> },
}

/// The daemon's log: `[2026-11-29T01:45:48Z INFO  ddmq::fs] message`, env_logger's own layout.
/// The timestamp is written here: env_logger's would pull in a date library that doubled what
/// the build compiled for logging.
fn init_logging(verbose: bool) {
    let default = if verbose { "info,ddmq=debug" } else { "info" };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format(|buf, record| {
            let (year, month, day, hour, minute, second) = sys::utc_now();
            writeln!(
                buf,
                "[{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z {:<5} {}] {}",
                record.level(),
                record.target(),
                record.args()
            )
        })
        .try_init();
}

/// An absolute path, symlinks resolved when the path can be read (a stale mountpoint cannot).
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// Unmounts `mountpoint`: umount2 as root, fusermount3 otherwise. `lazy` detaches even if busy.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), MountError> {
    if sys::is_root_user() {
        return sys::umount(mountpoint, lazy).map_err(io_err("unmount", mountpoint));
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

/// What /proc/self/mountinfo says is mounted at `mountpoint`: (type, source) of the top mount.
fn mounted_at(mountpoint: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    // Later lines are mounted on top of earlier ones: the last match is what a path reaches.
    info.lines().rev().find_map(|line| {
        // id parent major:minor root MOUNTPOINT options [optional...] - TYPE SOURCE super-options
        let (fields, rest) = line.split_once(" - ")?;
        let at = fields.split(' ').nth(4)?;
        let mut rest = rest.split(' ');
        let (fs_type, source) = (rest.next()?, rest.next()?);
        (unescape_mountinfo(at) == wanted).then(|| {
            (
                fs_type.to_string(),
                String::from_utf8_lossy(&unescape_mountinfo(source)).into_owned(),
            )
        })
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` (octal).
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Checks the mountpoint: a live mount there is refused (mounting on top would stack a second
/// daemon, and take two umounts to clear); a mountpoint whose daemon died answers ENOTCONN and
/// is detached so it can be mounted again.
fn check_mountpoint(mountpoint: &Path) -> Result<(), MountError> {
    // statfs always reaches a FUSE daemon, where stat may be answered from the kernel's cache.
    match sys::statfs_type(mountpoint).and_then(|_| std::fs::metadata(mountpoint)) {
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
        Ok(m) if m.is_dir() => match mounted_at(mountpoint) {
            Some((fs_type, device)) => Err(MountError::AlreadyMounted {
                mountpoint: mountpoint.display().to_string(),
                fs_type,
                device,
            }),
            None => Ok(()),
        },
        Ok(_) => Err(MountError::Daemon(format!(
            "mountpoint {} is not a directory",
            mountpoint.display()
        ))),
        Err(e) => Err(io_err("mountpoint", mountpoint)(e)),
    }
}

/// The write end of the pipe a background daemon reports readiness (or failure) on.
struct Readiness(Option<File>);

impl Readiness {
    /// Tells the waiting parent; false when there is none (a foreground daemon) or it is gone.
    fn report(&mut self, message: &str) -> bool {
        match self.0.take() {
            Some(mut pipe) => pipe.write_all(message.as_bytes()).is_ok(),
            None => false,
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
    let daemon_err = |what: &str, e: io::Error| MountError::Daemon(format!("{what}: {e}"));
    let (mut read_end, write_end) = sys::pipe().map_err(|e| daemon_err("pipe", e))?;
    match sys::fork_detached_checked().map_err(|e| daemon_err("fork", e))? {
        sys::ForkSide::Child => {
            drop(read_end);
            Ok(Forked::Daemon(Readiness(Some(write_end))))
        }
        sys::ForkSide::Parent => {
            drop(write_end);
            let mut report = String::new();
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
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("open", Path::new("/dev/null")))?;
    let log = match log_file {
        Some(p) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(io_err("open log file", p))?,
        None => null
            .try_clone()
            .map_err(io_err("open", Path::new("/dev/null")))?,
    };
    sys::redirect_stdio(&null, &log);
    Ok(())
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
    // No default_permissions: the daemon checks every request against its caller (the
    // kernel's check, from attributes shared by all users, refuses a group member's chmod of
    // `in` before the daemon hears of it).
    if !sys::is_root_user() {
        if let Some(option) = opts.admits_others()
            && !fuse_conf_allows_others(Path::new(FUSE_CONF))
        {
            return Err(MountError::OthersNotAllowed { option });
        }
        config.mount_options = vec![
            fuser::MountOption::FSName(source.to_string()),
            fuser::MountOption::Subtype("ddmq".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        if opts.read_only {
            config.mount_options.push(fuser::MountOption::RO);
        }
        // fuser opens /dev/fuse itself before it turns to fusermount3: where the device is
        // root's alone (as in many containers) nobody else can mount, fusermount3 included.
        if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
            return Err(MountError::Daemon(format!(
                "cannot open /dev/fuse ({e}): on this system only root can make FUSE mounts; \
                 run the daemon as root (see doc/MOUNT.md, fstab and systemd)"
            )));
        }
        return fuser::Session::new(fuse, mountpoint, &config).map_err(io_err("mount", mountpoint));
    }
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(io_err("open", Path::new("/dev/fuse")))?;
    let (uid, gid) = sys::real_ids();
    let mut data = format!(
        "fd={},rootmode={:o},user_id={uid},group_id={gid}",
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
    sys::mount(source, mountpoint, FS_TYPE, flags, &data).map_err(io_err("mount", mountpoint))?;
    fuser::Session::from_fd(fuse, OwnedFd::from(dev), config.acl, config).map_err(|e| {
        let _ = unmount(mountpoint, true);
        io_err("start FUSE session on", mountpoint)(e)
    })
}

/// `ddmq mount`: checks, forks unless `-f`, and serves until unmounted.
pub fn run_mount(args: MountArgs) -> Result<(), MountError> {
    init_logging(args.verbose);
    let opts = MountOptions::parse(&args.options)?;
    let root = absolute(&args.root);
    let mountpoint = absolute(&args.mountpoint);
    let broker = if opts.create {
        Broker::open_or_init(&root)?
    } else {
        Broker::open(&root)?
    };
    check_mountpoint(&mountpoint)?;
    let log_file = args.log_file.as_deref().map(absolute);
    let (mut readiness, stdio) = if args.foreground {
        (Readiness(None), Stdio::Keep)
    } else {
        match fork_daemon()? {
            Forked::Parent(report) => return report,
            Forked::Daemon(r) => (
                r,
                Stdio::Detach {
                    log_file: log_file.as_deref(),
                },
            ),
        }
    };
    let result = serve(broker, &root, &mountpoint, &opts, &mut readiness, stdio);
    if let Err(e) = &result
        && readiness.report(&e.to_string())
    {
        // The parent prints it: a background daemon says nothing more (it used to print it
        // too, so every failure showed twice).
        std::process::exit(1);
    }
    result
}

/// Whether `conf` (fuse.conf) lets ordinary users admit others; an unreadable file leaves
/// the question to fusermount3.
fn fuse_conf_allows_others(conf: &Path) -> bool {
    match std::fs::read_to_string(conf) {
        Ok(text) => text.lines().any(|l| l.trim() == "user_allow_other"),
        Err(_) => true,
    }
}

/// Mounts and serves until unmounted or stopped by a signal.
fn serve(
    broker: Broker,
    root: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    readiness: &mut Readiness,
    stdio: Stdio,
) -> Result<(), MountError> {
    // Blocked here, before any thread starts, so every thread inherits the mask and only the
    // signal thread receives them.
    let signals = sys::StopSignals::block();
    let fs = Arc::new(QueueFs::new(broker, opts.fs_options()));
    let source = opts
        .fsname
        .clone()
        .unwrap_or_else(|| root.to_string_lossy().replace(',', "_"));
    let fuse = DdmqFuse::new(
        fs.clone(),
        sys::is_root_user(),
        opts.admits_others().is_none(),
    );
    let leases = fuse.lease_keeper();
    let session = mount_session(fuse, &source, mountpoint, opts)?;
    let background = session
        .spawn()
        .map_err(io_err("start serving", mountpoint))?;
    if let Stdio::Detach { log_file } = stdio {
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

    spawn_named("ddmq-housekeeping", {
        let fs = fs.clone();
        move || housekeeping_loop(&fs)
    })?;
    spawn_named("ddmq-leases", move || {
        loop {
            std::thread::sleep(LEASE_TICK);
            leases.renew_due();
        }
    })?;
    spawn_named("ddmq-signals", {
        let fs = fs.clone();
        let mountpoint = mountpoint.to_path_buf();
        move || stop_on_signal(signals, &fs, &mountpoint)
    })?;

    let ended = background.join();
    fs.shutdown();
    log::info!("{} unmounted", mountpoint.display());
    ended.map_err(io_err("serve", mountpoint))
}

fn spawn_named(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), MountError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|e| MountError::Daemon(format!("cannot start thread {name}: {e}")))
}

/// Every [`HOUSEKEEPING_EVERY`]: each queue's housekeeping, then memory handed back.
fn housekeeping_loop(fs: &QueueFs) {
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
        sys::trim_heap();
    }
}

/// On a stop signal: unmount, give open files a grace period, give back claimed messages, exit.
fn stop_on_signal(signals: sys::StopSignals, fs: &QueueFs, mountpoint: &Path) {
    let sig = signals.wait();
    log::info!("signal {sig}: unmounting {}", mountpoint.display());
    fs.begin_shutdown();
    if let Err(e) = unmount(mountpoint, false).or_else(|_| unmount(mountpoint, true)) {
        log::warn!("{e}");
    }
    // Files still open keep a lazily detached mount alive: end it after a grace period.
    std::thread::sleep(STOP_GRACE);
    log::info!("files still open after {STOP_GRACE:?}: giving back their messages and exiting");
    fs.shutdown();
    std::process::exit(0);
}

/// `ddmq umount`: only a ddmq mount (a plain directory, or another filesystem, is named as
/// what it is instead of the system's bare EINVAL).
pub fn run_umount(args: UmountArgs) -> Result<(), MountError> {
    let mountpoint = absolute(&args.mountpoint);
    match mounted_at(&mountpoint) {
        None => Err(MountError::NotMounted(mountpoint)),
        Some((fs_type, device)) if fs_type != FS_TYPE => Err(MountError::NotDdmq {
            mountpoint: mountpoint.display().to_string(),
            fs_type,
            device,
        }),
        Some(_) => unmount(&mountpoint, args.lazy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_conf_must_say_user_allow_other() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("fuse.conf");
        std::fs::write(&conf, "# user_allow_other\nmount_max = 1000\n").unwrap();
        assert!(!fuse_conf_allows_others(&conf), "a comment does not count");
        std::fs::write(&conf, "mount_max = 1000\n  user_allow_other \n").unwrap();
        assert!(fuse_conf_allows_others(&conf));
        assert!(fuse_conf_allows_others(&dir.path().join("missing")));
    }

    #[test]
    fn mountinfo_paths_are_unescaped_and_mounts_found() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape_mountinfo(r"/x\4"), b"/x\\4");
        assert_eq!(
            mounted_at(Path::new("/proc")).map(|m| m.0),
            Some("proc".into())
        );
        assert_eq!(mounted_at(Path::new("/proc/self")), None);
    }
}
