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

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

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

/// Reads whether `pid` is being torn down by a signal. Can block: see [`is_killed`].
fn read_killed(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| stat_shows_killed(&s))
        .unwrap_or(false)
}

/// How long a FLUSH waits for /proc to answer before taking the closer for alive. The answer
/// normally comes in microseconds; the wait runs out only for a closer in execve (see
/// [`ask_proc`]), where any wait is lost time. It is long enough that a loaded machine, where
/// the asking thread may wait tens of milliseconds for a core, still gets the answer: a killed
/// writer taken for alive would publish the part of its body it had written.
const PROC_PATIENCE: Duration = Duration::from_millis(250);

type ProcQuestion = Box<dyn FnOnce() + Send>;

/// Asks /proc on a thread of its own and waits at most [`PROC_PATIENCE`] for the answer;
/// `None` when there is no answer in time.
///
/// Reading /proc/<pid>/stat blocks while that task is in execve: the kernel holds the task's exec
/// lock while it closes the files marked close-on-exec, and such a close may be the very FLUSH
/// waiting for this answer. So the read happens on a thread of its own (started on first use, so
/// after the daemon forked), and the question is given up after a short wait; the thread then
/// finishes its read once the exec goes on.
fn ask_proc<T: Send + 'static>(question: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static ASKER: OnceLock<Option<Mutex<mpsc::Sender<ProcQuestion>>>> = OnceLock::new();
    let asker = ASKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<ProcQuestion>();
        let started = std::thread::Builder::new()
            .name("ddmq-proc".into())
            .spawn(move || {
                for question in rx {
                    question();
                }
            });
        started.ok().map(|_| Mutex::new(tx))
    });
    let asker = asker.as_ref()?;
    let (answer_tx, answer_rx) = mpsc::channel();
    let job: ProcQuestion = Box::new(move || {
        let _ = answer_tx.send(question());
    });
    asker.lock().unwrap().send(job).ok()?;
    answer_rx.recv_timeout(PROC_PATIENCE).ok()
}

/// True if the task `pid` is being torn down by a signal (SIGKILL, SIGTERM, …) as it closes a
/// file. Unknown (no such task, /proc not readable for it, or no answer in time) counts as not
/// killed.
pub fn is_killed(pid: u32) -> bool {
    if pid == 0 {
        return false; // requests the kernel makes on its own behalf
    }
    ask_proc(move || read_killed(pid)).unwrap_or(false)
}

/// The thread group (process) id of the task `pid`, from /proc/<pid>/status.
fn read_tgid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// True if the tasks `a` and `b` are threads of one process. Unknown (either task gone, or no
/// answer in time) counts as different.
pub fn same_process(a: u32, b: u32) -> bool {
    if a == b {
        return true;
    }
    if a == 0 || b == 0 {
        return false;
    }
    ask_proc(move || match (read_tgid(a), read_tgid(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    })
    .unwrap_or(false)
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
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
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
