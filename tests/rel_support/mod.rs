//! Helpers of the reliability tests: self-checking message bodies, worker processes (this test
//! binary re-run in a worker role, so a SIGKILL hits a real process), logs, and small fs tools.

#![allow(dead_code)]

pub mod cluster;
pub mod mount;
pub mod sshfs;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// FNV-1a, enough to tell a torn or mixed-up body from a whole one.
pub fn checksum(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A body that proves itself whole: `<key>|<padding>|<checksum of key and padding>`.
/// The padding makes bodies span more than one write of the writer.
pub fn make_body(key: &str, pad: usize) -> String {
    let padding: String = std::iter::repeat_n('x', pad).collect();
    let head = format!("{key}|{padding}");
    format!("{head}|{:016x}", checksum(&head))
}

/// The key of a whole body, or None for a torn, truncated or foreign one.
pub fn check_body(body: &str) -> Option<&str> {
    let (head, sum) = body.rsplit_once('|')?;
    if sum.len() != 16 || u64::from_str_radix(sum, 16).ok()? != checksum(head) {
        return None;
    }
    head.split_once('|').map(|(k, _)| k)
}

/// Appends one line with one write(2) on an O_APPEND file, so lines of concurrent or killed
/// writers never interleave.
pub fn append_line(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Lines of every file in `dir` whose name starts with `prefix`.
pub fn read_all_lines(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            out.extend(read_lines(&e.path()));
        }
    }
    out
}

/// Starts this test binary again as a worker: the test `worker` (ignored in normal runs) reads
/// its role from the environment.
pub fn spawn_worker(role: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "worker",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env("DDMQ_REL_ROLE", role)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // Its own process group, so a kill of the worker never reaches the test.
    cmd.process_group(0);
    cmd.spawn().unwrap()
}

pub fn sigkill(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Waits for a child up to `limit`; kills it if it is still running then.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            sigkill(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic random source (xorshift), seeded from the clock and printed, so a failing
/// run can be replayed with DDMQ_REL_SEED.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(name: &str) -> Rng {
        let seed = std::env::var("DDMQ_REL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{name}: DDMQ_REL_SEED={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Names in `dir` (not recursive), sorted; empty if it does not exist.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Sets a file's mtime `secs` into the past (what time passing does to a file left behind).
pub fn age_file(path: &Path, secs: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = libc::timespec {
        tv_sec: (now - secs) as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// Renames `work/.claim-<epoch>-<r>` and `work/.take-<epoch>-…` files so they look `secs` older
/// (their age is in their names); returns how many claims there were.
pub fn age_claims(work: &Path, secs: u64) -> usize {
    let mut n = 0;
    for name in names_in(work) {
        // Takes left by consumers killed between their two renames are stamped the same way.
        let (prefix, is_claim) = if name.starts_with(".claim-") {
            (".claim-", true)
        } else if name.starts_with(".take-") {
            (".take-", false)
        } else {
            continue;
        };
        let rest = &name[prefix.len()..];
        let (t, r) = rest.split_once('-').unwrap();
        let t: u64 = t.parse().unwrap();
        std::fs::rename(
            work.join(&name),
            work.join(format!("{prefix}{}-{r}", t.saturating_sub(secs))),
        )
        .unwrap();
        n += is_claim as usize;
    }
    n
}

/// The ddmq binary built by cargo for these tests.
pub fn ddmq_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ddmq"))
}

/// Runs `ddmq` with `args` and optional stdin; returns (status code, stdout, stderr).
pub fn ddmq(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut cmd = Command::new(ddmq_bin());
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let _ = w.write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A process's resident memory in KiB and its open descriptors, from /proc.
pub fn proc_usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}
