//! The runner's signals, turned into something its poll loop can wait on (the self-pipe
//! pattern, by signal-hook): SIGTERM and SIGINT ask it to stop, SIGUSR1 to drain (take nothing
//! more, let the running tasks finish), SIGCHLD says a command ended. The handlers only set a
//! flag and write a byte; everything else happens in the loop.

use nix::sys::signal::Signal;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook::{SigId, flag, low_level};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The signals that stop the runner.
pub const STOP_SIGNALS: [i32; 2] = [SIGTERM, SIGINT];
/// The signal that drains it. In a Slurm job the commands start with it ignored: Slurm's
/// `--signal` and `scancel --signal` may send it to every process of a step, and its default
/// action would kill the very tasks a drain lets finish.
pub const DRAIN_SIGNAL: Signal = Signal::SIGUSR1;

/// Installed handlers; removed again when dropped.
pub struct Signals {
    wake: UnixStream,
    /// The last stop signal received and not yet taken (0: none).
    stop: Arc<AtomicUsize>,
    drain: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

/// What arrived since the last look.
#[derive(Default)]
pub struct Received {
    pub stop: Option<i32>,
    pub drain: bool,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let (wake, write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let stop = Arc::new(AtomicUsize::new(0));
        let drain = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        // The flags are set before the byte is written (registration order), so a wake-up
        // always finds the flag it is about.
        for sig in STOP_SIGNALS {
            ids.push(flag::register_usize(sig, stop.clone(), sig as usize)?);
        }
        ids.push(flag::register(DRAIN_SIGNAL as i32, drain.clone())?);
        for sig in [SIGTERM, SIGINT, DRAIN_SIGNAL as i32, SIGCHLD] {
            ids.push(low_level::pipe::register(sig, write.try_clone()?)?);
        }
        Ok(Signals {
            wake,
            stop,
            drain,
            ids,
        })
    }

    /// What the poll loop waits on: readable after any of the signals.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Empties the wake-up pipe (first, so a signal arriving meanwhile wakes us again), then
    /// returns the stop and drain signals received since the last call.
    pub fn take(&mut self) -> Received {
        let mut buf = [0u8; 64];
        while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
        Received {
            stop: match self.stop.swap(0, Ordering::SeqCst) {
                0 => None,
                sig => Some(sig as i32),
            },
            drain: self.drain.swap(false, Ordering::SeqCst),
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            low_level::unregister(id);
        }
    }
}
