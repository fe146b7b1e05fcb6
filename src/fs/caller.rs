//! Who is calling: noticing that a process blocked in a request is being killed.
//!
//! fuser 0.18 does not deliver FUSE_INTERRUPT, and the kernel keeps a process whose request
//! reached the daemon in uninterruptible sleep until it is answered, even after SIGKILL. So a
//! long wait asks /proc whether its caller has a signal pending that it neither blocks nor
//! ignores (the signals that would have interrupted an ordinary blocking call), and gives up.
//!
//! The kernel also closes the files of a process killed by a signal, exactly as if it had
//! closed them itself: the FLUSH of that close is the last word the daemon hears from it. What
//! /proc/<pid>/stat says then (exiting, with a signal as its exit status) tells a writer killed
//! mid-message from one that finished, and a reader killed before it used its message from one
//! that did.
//!
//! That question is asked at every close, so its cost is the mount's: a process that still has
//! its memory (`/proc/<pid>/statm` not all zeros) is not exiting, and that answer takes one small
//! read on the FUSE thread. Only a closer whose memory is gone (the kernel frees it before it
//! closes an exiting task's files) has its stat line read, and such a task cannot be in execve,
//! the one place where reading it would block. The statm files of the latest closers are kept
//! open ([`KillCheck`]), so a process that closes many files pays one `pread` per close.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Who made a request, for permission checks: the ids the kernel names it by and the
/// supplementary groups of its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Caller {
    /// Root: every permission check passes, as the kernel's capabilities would let it.
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// The signal masks of a task, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalState {
    pub pending: u64,
    pub blocked: u64,
    pub ignored: u64,
}

impl SignalState {
    /// Parses the SigPnd, ShdPnd, SigBlk and SigIgn lines of a status file.
    pub fn parse(status: &str) -> SignalState {
        let mut s = SignalState::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(mask) = u64::from_str_radix(value.trim(), 16) else {
                continue;
            };
            match key {
                "SigPnd" | "ShdPnd" => s.pending |= mask,
                "SigBlk" => s.blocked |= mask,
                "SigIgn" => s.ignored |= mask,
                _ => {}
            }
        }
        s
    }

    /// True when a signal is pending that would interrupt the task (SIGKILL always does).
    pub fn interrupts(&self) -> bool {
        let sigkill = 1u64 << (libc::SIGKILL - 1);
        self.pending & sigkill != 0 || self.pending & !self.blocked & !self.ignored != 0
    }
}

/// The supplementary groups of the task `pid`, from the Groups line of `/proc/<pid>/status`
/// (None when the task is gone or the line unreadable).
pub fn supplementary_groups(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_groups(&status)
}

/// The Groups line of a status file: decimal ids separated by spaces.
pub fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

/// True if the task `pid` (as the request names it) is gone or has an interrupting signal pending.
pub fn is_interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false; // requests the kernel makes on its own behalf
    }
    match std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))) {
        Ok(text) => SignalState::parse(&text).interrupts(),
        Err(_) => true, // the task no longer exists
    }
}

/// `PF_EXITING` in a task's flags: it is in `do_exit`, closing its files.
const PF_EXITING: u64 = 0x4;

/// True if the stat line shows a task exiting because of a signal (not by `exit`).
pub fn stat_shows_killed(stat: &str) -> bool {
    // Fields after the command name (which may hold spaces and parentheses): state is field 3,
    // flags field 9, exit_code field 52 (waitpid form: the low 7 bits are the signal).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    match (field(9), field(52)) {
        (Some(flags), Some(exit_code)) => flags & PF_EXITING != 0 && exit_code & 0x7f != 0,
        _ => false,
    }
}

/// Reads a small file of `/proc/<pid>/` with one read call (the kernel makes these files whole
/// at the first read; `read_to_string` would add a stat and a read per doubling of its buffer).
fn read_proc_file<'b>(pid: u32, name: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/{name}")).ok()?;
    let n = file.read(buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

/// True if a statm line shows a task without memory: one in `do_exit`, past freeing it.
pub fn statm_shows_no_memory(statm: &str) -> bool {
    let mut sizes = statm.split_whitespace().peekable();
    sizes.peek().is_some() && sizes.all(|n| n == "0")
}

/// Reads whether `pid` is being torn down by a signal. Blocks while that task is in execve:
/// ask it only of a task known to be exiting (see [`is_killed`]).
fn read_killed(pid: u32) -> bool {
    let mut buf = [0u8; 2048];
    read_proc_file(pid, "stat", &mut buf).is_some_and(stat_shows_killed)
}

/// True if the task `pid` is being torn down by a signal (SIGKILL, SIGTERM, …) as it closes a
/// file. Unknown (no such task, or /proc not readable for it) counts as not killed.
///
/// Both reads happen on the caller's thread: the statm read never blocks, and the stat read
/// is made only for a task that has freed its memory, which happens in `do_exit` alone (an
/// execve swaps the memory, it is never absent), so the stat read cannot meet an execve.
pub fn is_killed(pid: u32) -> bool {
    if pid == 0 {
        return false; // requests the kernel makes on its own behalf
    }
    let mut buf = [0u8; 256];
    match read_proc_file(pid, "statm", &mut buf) {
        Some(statm) if statm_shows_no_memory(statm) => read_killed(pid),
        _ => false,
    }
}

/// How many closers' statm files [`KillCheck`] keeps open.
const KEPT_STATM: usize = 16;

/// [`is_killed`], with the `/proc/<pid>/statm` files of the latest closers kept open: a writer
/// publishing message after message is asked with one `pread` per close instead of an open, a
/// read and a close.
///
/// A kept file stays bound to the task it was opened for, not to its pid: while that task
/// lives its pid names nobody else, so memory shown there is the closer's own and settles the
/// question. Anything else (the task gone: its pid may be someone else's now; or no memory)
/// is asked again through a freshly opened file, as [`is_killed`] asks.
#[derive(Default)]
pub struct KillCheck {
    /// Most recently used last.
    kept: Mutex<Vec<(u32, File)>>,
}

impl KillCheck {
    pub fn is_killed(&self, pid: u32) -> bool {
        if pid == 0 {
            return false; // requests the kernel makes on its own behalf
        }
        let mut buf = [0u8; 256];
        let mut kept = crate::locking::LockRecovering::lock_recovering(&self.kept);
        if let Some(i) = kept.iter().position(|(p, _)| *p == pid) {
            let (_, file) = kept.remove(i);
            if let Ok(n) = file.read_at(&mut buf, 0)
                && let Ok(statm) = std::str::from_utf8(&buf[..n])
                && !statm_shows_no_memory(statm)
                && !statm.is_empty()
            {
                kept.push((pid, file));
                return false;
            }
        }
        let Ok(file) = File::open(format!("/proc/{pid}/statm")) else {
            return false;
        };
        let shown = file.read_at(&mut buf, 0).ok();
        let statm = shown.and_then(|n| std::str::from_utf8(&buf[..n]).ok());
        match statm {
            Some(statm) if statm_shows_no_memory(statm) => read_killed(pid),
            Some(_) => {
                if kept.len() >= KEPT_STATM {
                    kept.remove(0);
                }
                kept.push((pid, file));
                false
            }
            None => false,
        }
    }

    /// How many statm files are kept open (for tests).
    pub fn kept(&self) -> usize {
        crate::locking::LockRecovering::lock_recovering(&self.kept).len()
    }
}

/// The thread group (process) id of the task `pid`, from /proc/<pid>/status.
fn read_tgid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// True if the tasks `a` and `b` are threads of one process. Unknown (either task gone) counts
/// as different. The status file, unlike stat, is read without waiting on a task in execve.
pub fn same_process(a: u32, b: u32) -> bool {
    if a == b {
        return true;
    }
    if a == 0 || b == 0 {
        return false;
    }
    match (read_tgid(a), read_tgid(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_kill_term_and_int_interrupt_blocked_ones_do_not() {
        let status = "Name:\tcat\nSigQ:\t1/31\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0\n";
        assert!(SignalState::parse(status).interrupts(), "SIGKILL is bit 8");
        let term = "SigPnd:\t0000000000004000\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\n";
        assert!(SignalState::parse(term).interrupts());
        let int_blocked =
            "SigPnd:\t0\nShdPnd:\t0000000000000002\nSigBlk:\t0000000000000002\nSigIgn:\t0\n";
        assert!(!SignalState::parse(int_blocked).interrupts());
        let nothing = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\tfffffffe7ffbfeff\nSigIgn:\t0\n";
        assert!(!SignalState::parse(nothing).interrupts());
    }

    #[test]
    fn killed_means_exiting_with_a_signal_status() {
        let line = |flags: u64, exit_code: u64| {
            let mut f = vec!["0"; 50];
            f[0] = "R";
            let flags = flags.to_string();
            let exit_code = exit_code.to_string();
            f[6] = &flags;
            f[49] = &exit_code;
            format!("123 (a (weird) name) {}", f.join(" "))
        };
        assert!(stat_shows_killed(&line(0x4, 9)), "SIGKILL");
        assert!(stat_shows_killed(&line(0x404044, 15)), "SIGTERM");
        assert!(!stat_shows_killed(&line(0x4, 0)), "exit(0)");
        assert!(!stat_shows_killed(&line(0x4, 1 << 8)), "exit(1)");
        assert!(!stat_shows_killed(&line(0x400000, 9)), "not exiting");
        assert!(!is_killed(std::process::id()));
    }

    #[test]
    fn only_a_task_without_memory_is_asked_whether_it_was_killed() {
        assert!(statm_shows_no_memory("0 0 0 0 0 0 0\n"));
        assert!(!statm_shows_no_memory("2460 896 768 4 0 112 0\n"));
        assert!(!statm_shows_no_memory(""), "unreadable: taken for alive");
        let mut buf = [0u8; 256];
        let mine = read_proc_file(std::process::id(), "statm", &mut buf).unwrap();
        assert!(
            !statm_shows_no_memory(mine),
            "a live process has memory: {mine}"
        );
    }

    #[test]
    fn a_kept_statm_file_answers_for_its_own_task_only() {
        let check = KillCheck::default();
        assert!(!check.is_killed(std::process::id()));
        assert!(!check.is_killed(std::process::id()));
        assert_eq!(check.kept(), 1, "one file for one closer");
        // A closer that is gone: its kept file no longer answers, and a gone task is not
        // taken for a killed one (nothing is known of it).
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!check.is_killed(pid));
        assert_eq!(check.kept(), 2);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!check.is_killed(pid));
        assert_eq!(check.kept(), 1, "the gone task's file was dropped");
        for _ in 0..KEPT_STATM + 4 {
            let mut c = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .unwrap();
            assert!(!check.is_killed(c.id()));
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert!(check.kept() <= KEPT_STATM, "bounded: {}", check.kept());
    }

    #[test]
    fn groups_come_from_the_groups_line() {
        let status = "Name:\tsh\nUid:\t1000\nGroups:\t4 27 1000 \nNSpid:\t1\n";
        assert_eq!(parse_groups(status), Some(vec![4, 27, 1000]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Uid:\t0\n"), None);
        assert!(supplementary_groups(std::process::id()).is_some());
    }

    #[test]
    fn threads_of_one_process_are_one_process() {
        let me = std::process::id();
        assert!(same_process(me, me));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let live = rx.recv().unwrap();
        assert!(same_process(live, me), "a live thread of this process");
        done_tx.send(()).unwrap();
        t.join().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!same_process(child.id(), me), "a child is another process");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_live_quiet_process_is_not_interrupted_and_a_gone_one_is() {
        assert!(!is_interrupted(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(is_interrupted(pid));
    }
}
