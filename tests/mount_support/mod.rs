//! Shared helpers of the mount tests that need root: a foreground daemon unmounted when
//! dropped, and a group with users made for one test run, whose commands run with setpriv.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DDMQ: &str = env!("CARGO_BIN_EXE_ddmq");

/// The system's programs (not root's own, which other users may not run).
pub const SYSTEM_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin";

/// How many mounts /proc/self/mountinfo lists at `mnt` (paths here hold no escaped characters).
pub fn mounts_at(mnt: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mnt.to_str().unwrap();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(mnt))
        .count()
}

/// A foreground daemon serving `root` at `mnt`, killed and unmounted when dropped.
pub struct Daemon {
    pub mnt: PathBuf,
    pub child: Child,
}

impl Daemon {
    pub fn start(root: &Path, mnt: &Path, options: &str) -> Daemon {
        Daemon::start_logging(root, mnt, options, None, "")
    }

    /// Like [`Daemon::start`], with every request the daemon serves logged to `log` (fuser's
    /// own debug log of the requests it dispatches: one line each, naming the operation).
    pub fn start_with_request_log(root: &Path, mnt: &Path, log: &Path) -> Daemon {
        Daemon::start_logging(root, mnt, "", Some(log), "info,fuser::request=debug")
    }

    /// Like [`Daemon::start`], the daemon's log (at `RUST_LOG=filter`) going to `log`.
    pub fn start_logging(
        root: &Path,
        mnt: &Path,
        options: &str,
        log: Option<&Path>,
        filter: &str,
    ) -> Daemon {
        let mut cmd = Command::new(DDMQ);
        cmd.arg("mount").arg("-f").arg(root).arg(mnt);
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        match log {
            Some(log) => {
                cmd.env("RUST_LOG", filter)
                    .stderr(std::fs::File::create(log).unwrap());
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGCONT); // in case a test stopped it
        let _ = Command::new(DDMQ)
            .args(["umount", "-l"])
            .arg(&self.mnt)
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid as i32, sig) };
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out
}

/// `id -u NAME`, `id -g NAME`.
pub fn id_of(what: &str, name: &str) -> u32 {
    let out = Command::new("id").arg(what).arg(name).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The number of group `name`.
pub fn gid_of(name: &str) -> u32 {
    let out = run_ok(Command::new("getent").args(["group", name]));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).unwrap().parse().unwrap()
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A group and users made for one test run (unique names), deleted when dropped: `member`
/// and `member2` belong to the group, `outsider` does not.
pub struct Accounts {
    pub group: String,
    pub member: String,
    pub member2: String,
    pub outsider: String,
}

impl Accounts {
    pub fn new() -> Accounts {
        assert!(
            is_root(),
            "this test needs root: it makes users and a group, and a daemon that acts as them"
        );
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tag = format!(
            "{:x}{}{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                % 1000
        );
        let a = Accounts {
            group: format!("ddmqg{tag}"),
            member: format!("ddmqm{tag}"),
            member2: format!("ddmqn{tag}"),
            outsider: format!("ddmqo{tag}"),
        };
        run_ok(Command::new("groupadd").arg(&a.group));
        for member in [&a.member, &a.member2] {
            run_ok(Command::new("useradd").args(["-M", "-N", "-G", &a.group, member]));
        }
        run_ok(Command::new("useradd").args(["-M", "-N", &a.outsider]));
        a
    }

    pub fn gid(&self) -> u32 {
        gid_of(&self.group)
    }

    /// `program args...` as `user` (real and effective ids, and their groups).
    pub fn as_user(&self, user: &str, program: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", id_of("-u", user)))
            .arg(format!("--regid={}", id_of("-g", user)))
            .arg("--init-groups")
            .env("PATH", SYSTEM_PATH)
            .env("HOME", "/")
            .env_remove("PYTHONPATH")
            .arg(program);
        cmd
    }

    /// Runs a shell script as `user`, with $MNT set.
    pub fn sh(&self, user: &str, script: &str, mnt: &Path) -> Output {
        self.as_user(user, "sh")
            .args(["-c", script])
            .env("MNT", mnt)
            .output()
            .unwrap()
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for user in [&self.member, &self.member2, &self.outsider] {
            let _ = Command::new("userdel").arg(user).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}
