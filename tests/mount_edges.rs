//! `ddmq mount` at its edges: a mountpoint that is already mounted, names the tree cannot hold,
//! who may do what through a mount served by root, and listings of deep queues.

use ddmq::engine::Broker;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DDMQ: &str = env!("CARGO_BIN_EXE_ddmq");

/// How many mounts /proc/self/mountinfo lists at `mnt` (paths here hold no escaped characters).
fn mounts_at(mnt: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mnt.to_str().unwrap();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(mnt))
        .count()
}

/// A foreground daemon serving `root` at `mnt`, killed and unmounted when dropped.
struct Daemon {
    mnt: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(root: &Path, mnt: &Path, options: &str) -> Daemon {
        let mut cmd = Command::new(DDMQ);
        cmd.arg("mount").arg("-f").arg(root).arg(mnt);
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while mounts_at(mnt) == 0 {
            assert!(started.elapsed() < Duration::from_secs(15), "no mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            mnt: mnt.to_path_buf(),
            child,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new(DDMQ)
            .args(["umount", "-l"])
            .arg(&self.mnt)
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ddmq(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(DDMQ).args(args).output().unwrap()
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

/// A fresh root with queue `q` and an empty mountpoint beside it.
fn root_and_mountpoint() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    Broker::open_or_init(&root)
        .unwrap()
        .create_queue("q")
        .unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    (dir, root, mnt)
}

#[test]
fn mounting_onto_a_live_mount_is_refused_and_one_umount_clears_it() {
    let (_dir, root, mnt) = root_and_mountpoint();
    let daemon = Daemon::start(&root, &mnt, "");
    for foreground in [false, true] {
        let mut args = vec![std::ffi::OsStr::new("mount")];
        if foreground {
            args.push("-f".as_ref());
        }
        args.extend([root.as_os_str(), mnt.as_os_str()]);
        let out = ddmq(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("already a mount"), "{stderr}");
        assert!(stderr.contains("fuse.ddmq"), "{stderr}");
    }
    assert_eq!(mounts_at(&mnt), 1, "nothing stacked");
    std::fs::write(mnt.join("q/in"), "still served").unwrap();
    let out = ddmq(&["umount".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mounts_at(&mnt), 0, "one umount clears it");
    drop(daemon);
}

#[test]
fn names_that_are_not_utf8_are_absent_and_cannot_be_made() {
    let (_dir, root, mnt) = root_and_mountpoint();
    let _daemon = Daemon::start(&root, &mnt, "");
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
    assert_eq!(errno(std::fs::metadata(mnt.join(bad))), libc::ENOENT);
    assert_eq!(
        errno(std::fs::metadata(mnt.join("q").join(bad))),
        libc::ENOENT
    );
    assert_eq!(errno(std::fs::create_dir(mnt.join(bad))), libc::EINVAL);
    assert_eq!(errno(std::fs::create_dir(mnt.join("café"))), libc::EINVAL);
}
