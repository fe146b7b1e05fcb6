//! Who is calling: noticing that a process blocked in a request is being killed.
//!
//! fuser 0.18 does not deliver FUSE_INTERRUPT, and the kernel keeps a process whose request
//! reached the daemon in uninterruptible sleep until it is answered, even after SIGKILL. So a
//! long wait asks /proc whether its caller has a signal pending that it neither blocks nor
//! ignores (the signals that would have interrupted an ordinary blocking call), and gives up.

use std::path::PathBuf;

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
            let Some((key, value)) = line.split_once(':') else { continue };
            let Ok(mask) = u64::from_str_radix(value.trim(), 16) else { continue };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_kill_term_and_int_interrupt_blocked_ones_do_not() {
        let status = "Name:\tcat\nSigQ:\t1/31\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0\n";
        assert!(SignalState::parse(status).interrupts(), "SIGKILL is bit 8");
        let term = "SigPnd:\t0000000000004000\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\n";
        assert!(SignalState::parse(term).interrupts());
        let int_blocked = "SigPnd:\t0\nShdPnd:\t0000000000000002\nSigBlk:\t0000000000000002\nSigIgn:\t0\n";
        assert!(!SignalState::parse(int_blocked).interrupts());
        let nothing = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\tfffffffe7ffbfeff\nSigIgn:\t0\n";
        assert!(!SignalState::parse(nothing).interrupts());
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
