//! The machine around the benchmark: a `ddmq mount` daemon we start and stop, its memory,
//! and the description of the machine and filesystems for the table's header.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `ddmq mount -f ROOT MNT` daemon started by us (foreground, so its pid is the daemon's).
pub struct MountDaemon {
    pub root: PathBuf,
    pub mnt: PathBuf,
    child: Child,
    ddmq: PathBuf,
}

fn is_mounted(mnt: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = mnt.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(&wanted))
}

impl MountDaemon {
    pub fn start(ddmq: &Path, root: &Path, mnt: &Path, log: &Path) -> io::Result<MountDaemon> {
        fs::create_dir_all(mnt)?;
        let mnt = fs::canonicalize(mnt)?;
        let log_file = fs::File::create(log)?;
        let child = Command::new(ddmq)
            .args(["mount", "-f"])
            .arg(root)
            .arg(&mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let mut daemon = MountDaemon {
            root: root.to_path_buf(),
            mnt,
            child,
            ddmq: ddmq.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&daemon.mnt) {
            if let Some(status) = daemon.child.try_wait()? {
                let err = fs::read_to_string(log).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "ddmq mount exited ({status}): {}",
                    err.trim()
                )));
            }
            if Instant::now() > deadline {
                daemon.stop();
                return Err(io::Error::other("ddmq mount did not mount within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident and peak resident memory of the daemon, in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    pub fn stop(&mut self) {
        let _ = Command::new(&self.ddmq)
            .arg("umount")
            .arg(&self.mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    // Ours to end: it did not leave after the unmount.
                    let _ = Command::new("fusermount3")
                        .arg("-u")
                        .arg(&self.mnt)
                        .status();
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for MountDaemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// The filesystem type of the filesystem holding `path`, from /proc/self/mounts (longest prefix).
pub fn fs_type(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(text) = fs::read_to_string("/proc/self/mounts") else {
        return "?".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 3 {
            continue;
        }
        let mp = Path::new(f[1]);
        if path.starts_with(mp) && best.as_ref().map(|(l, _)| f[1].len() > *l).unwrap_or(true) {
            best = Some((f[1].len(), format!("{} ({})", f[2], f[0])));
        }
    }
    best.map(|(_, t)| t).unwrap_or_else(|| "?".into())
}

/// One line: cores, memory, kernel, CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| kib as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!(
        "{cores} cores ({cpu}), {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// Today's date (UTC), without a date crate.
pub fn today() -> String {
    let days = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        / 86400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

/// A FUSE floor (`ddmq-bench fuse-floor MNT` or `ddmq-bench fuse-queue DIR MNT`, this
/// benchmark re-run as a process of its own), unmounted and stopped when dropped.
pub struct FloorDaemon {
    mnt: PathBuf,
    child: Child,
}

impl FloorDaemon {
    /// Starts `ddmq-bench KIND [DIR] MNT` and waits until MNT is mounted.
    pub fn start(kind: &str, dir: Option<&Path>, mnt: &Path) -> io::Result<FloorDaemon> {
        fs::create_dir_all(mnt)?;
        let mnt = fs::canonicalize(mnt)?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(kind);
        if let Some(dir) = dir {
            cmd.arg(dir);
        }
        let child = cmd
            .arg(&mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let mut floor = FloorDaemon { mnt, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&floor.mnt) {
            if let Some(status) = floor.child.try_wait()? {
                return Err(io::Error::other(format!("{kind} exited ({status})")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{kind} did not mount within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(floor)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn mnt(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for FloorDaemon {
    fn drop(&mut self) {
        for tool in ["fusermount3", "fusermount", "umount"] {
            let unmounted = Command::new(tool)
                .args(if tool == "umount" {
                    vec!["-l"]
                } else {
                    vec!["-u"]
                })
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if unmounted {
                break;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ CPU affinity

/// The CPUs this process may run on (its affinity mask, as `taskset` or a cpuset left it).
pub fn own_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if got != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

pub fn cpu_mask(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// sched_setaffinity of one task (0: the calling one).
pub fn set_affinity_of(tid: libc::pid_t, mask: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: the mask is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(mask), mask) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the affinity of every thread of process `pid` (as `taskset -a -p`); threads it starts
/// later inherit it from theirs.
pub fn pin_process(pid: u32, cpus: &[usize]) -> io::Result<()> {
    let mask = cpu_mask(cpus);
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: libc::pid_t = match task?.file_name().to_string_lossy().parse() {
            Ok(t) => t,
            Err(_) => continue,
        };
        match set_affinity_of(tid, &mask) {
            // A thread that ended meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}
