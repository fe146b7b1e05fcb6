//! One task: a message taken from the queue and the command running for it. Starting it (the
//! body in place of `{}`, or on stdin), its pipes as the poll loop sees them, and the lease it
//! holds on the message while it runs.

use super::output::{LineBuffer, Output, Stream};
use super::signals::DRAIN_SIGNAL;
use crate::engine::{HOLD_FOR, HeldDelivery, InFlight, WorkName};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The placeholder replaced by the message body.
pub const PLACEHOLDER: &str = "{}";

/// How a command is run: fixed for the whole run.
pub struct CommandTemplate {
    pub words: Vec<String>,
    /// Some word holds `{}`: the body goes there, and stdin is /dev/null.
    pub substitutes: bool,
    /// DDMQ_ROOT and DDMQ_QUEUE.
    pub root: String,
    pub queue: String,
    /// Start the commands with the drain signal ignored (in a Slurm job, whose `--signal` and
    /// `scancel --signal` may reach every process of a step).
    pub ignore_drain_signal: bool,
}

impl CommandTemplate {
    pub fn new(
        words: Vec<String>,
        root: String,
        queue: String,
        ignore_drain_signal: bool,
    ) -> CommandTemplate {
        let substitutes = words.iter().any(|w| w.contains(PLACEHOLDER));
        CommandTemplate {
            words,
            substitutes,
            root,
            queue,
            ignore_drain_signal,
        }
    }

    /// The words to run for `body`.
    pub fn words_for(&self, body: &str) -> Vec<String> {
        if self.substitutes {
            self.words
                .iter()
                .map(|w| w.replace(PLACEHOLDER, body))
                .collect()
        } else {
            self.words.clone()
        }
    }
}

/// A command's output stream, read as the poll loop finds it readable.
pub struct OutputPipe<R> {
    pub pipe: R,
    lines: LineBuffer,
}

/// The lease on the message: written at [`HOLD_FOR`], then renewed well before it runs out.
pub struct Lease {
    pub in_flight: InFlight,
    /// The lease each renewal writes, in seconds.
    timeout: u64,
    period: Duration,
    pub next_renewal: Instant,
    /// Another client took the message back (it expired and was requeued): said once.
    pub lost: bool,
}

impl Lease {
    /// Renewed four times per lease (every `timeout / 4`), so a renewal may come late by most of
    /// the lease before the message expires; at least every 60 s. The expiry is written by the
    /// filesystem's clock (never this host's: a runner whose clock is behind would renew too
    /// late), so a period is what is left of a lease on that clock.
    /// `lease_secs`: what is left now of the lease the message was taken with.
    fn new(held: HeldDelivery, lease_secs: u64) -> Lease {
        let period = Self::period(lease_secs);
        let first = match held.in_flight {
            InFlight::Held(_) => period.min(HOLD_FOR),
            InFlight::Leased(_) => period,
        };
        Lease {
            in_flight: held.in_flight,
            timeout: held.timeout,
            period,
            next_renewal: Instant::now() + first,
            lost: false,
        }
    }

    fn period(lease_secs: u64) -> Duration {
        Duration::from_secs_f64(lease_secs.max(1) as f64 / 4.0)
            .clamp(Duration::from_millis(200), Duration::from_secs(60))
    }

    /// The seconds each renewal leases the message for.
    pub fn timeout(&self) -> u64 {
        self.timeout
    }

    /// Renewed as `name`, whose lease has `lease_secs` left on the filesystem's clock.
    pub fn renewed(&mut self, name: WorkName, lease_secs: u64) {
        self.in_flight = InFlight::Leased(name);
        self.period = Self::period(lease_secs);
        self.next_renewal = Instant::now() + self.period;
    }

    /// After a failed renewal (an I/O error): try again soon.
    pub fn retry_soon(&mut self) {
        self.next_renewal = Instant::now() + self.period / 4;
    }
}

/// A running (or just ended) task.
pub struct Task {
    pub seq: u64,
    pub id: String,
    pub lease: Lease,
    pub child: Child,
    pub stdout: Option<OutputPipe<ChildStdout>>,
    pub stderr: Option<OutputPipe<ChildStderr>>,
    /// The part of the body not yet written to the command's stdin.
    stdin: Option<(ChildStdin, Vec<u8>, usize)>,
    pub started: Instant,
    pub started_wall: SystemTime,
    /// The command line, for the joblog.
    pub command: Vec<String>,
    pub status: Option<ExitStatus>,
    /// We sent it the stop signal: a failure now is an interruption, not the task's fault.
    pub interrupted: bool,
}

impl Task {
    /// Starts the command for `delivery`. On error the message is still in flight: the caller
    /// decides what becomes of it.
    pub fn start(
        seq: u64,
        template: &CommandTemplate,
        delivery: HeldDelivery,
        lease_secs: u64,
    ) -> io::Result<Task> {
        let message = delivery.message.clone();
        let body = message.body_text();
        let words = template.words_for(&body);
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..])
            .env("DDMQ_ROOT", &template.root)
            .env("DDMQ_QUEUE", &template.queue)
            .env("DDMQ_ID", &message.id)
            .env("DDMQ_REQUEUE_COUNTER", message.requeue_counter.to_string())
            .stdin(if template.substitutes {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's ^C reaches the runner alone, and the runner's
            // stop signal reaches the whole task (`sh -c` and what it started).
            .process_group(0);
        if template.ignore_drain_signal {
            // The drain signal ignored (an ignored signal stays so across exec; a handler the
            // command installs overrides it): a drain Slurm sends to the whole step must not
            // kill the tasks it lets finish. Only then: a closure before exec makes std fork
            // instead of posix_spawn, which costs a third of the rate of tiny tasks here.
            crate::sys::ignore_signal_across_exec(&mut cmd, DRAIN_SIGNAL);
        }
        let mut child = cmd.spawn()?;
        let started = Instant::now();
        let stdout = child.stdout.take().map(|pipe| OutputPipe {
            pipe,
            lines: LineBuffer::default(),
        });
        let stderr = child.stderr.take().map(|pipe| OutputPipe {
            pipe,
            lines: LineBuffer::default(),
        });
        for fd in [
            stdout.as_ref().map(|p| p.pipe.as_fd()),
            stderr.as_ref().map(|p| p.pipe.as_fd()),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd)?;
        }
        let mut task = Task {
            seq,
            id: message.id,
            lease: Lease::new(delivery, lease_secs),
            child,
            stdout,
            stderr,
            stdin: None,
            started,
            started_wall: SystemTime::now(),
            command: words,
            status: None,
            interrupted: false,
        };
        if let Some(stdin) = task.child.stdin.take() {
            set_nonblocking(stdin.as_fd())?;
            task.stdin = Some((stdin, body.into_bytes(), 0));
            task.write_stdin();
        }
        Ok(task)
    }

    /// The pipe to the command's stdin while some of the body is still to be written.
    pub fn stdin_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stdin.as_ref().map(|(pipe, _, _)| pipe.as_fd())
    }

    /// Writes as much of the body as the pipe takes; closes it when all is written, or when
    /// the command closed its end (it need not read its stdin).
    pub fn write_stdin(&mut self) {
        let Some((pipe, body, written)) = self.stdin.as_mut() else {
            return;
        };
        while *written < body.len() {
            match pipe.write(&body[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break, // EPIPE: the command does not want the rest
            }
        }
        self.stdin = None;
    }

    /// Reads what is available on the command's `stream` and passes its whole lines on. At the
    /// end of the stream (or when `draining` after the command ended) the pipe is closed.
    pub fn read_output(&mut self, stream: Stream, out: &mut Output, draining: bool) {
        let id = &self.id;
        match stream {
            Stream::Stdout => pump(&mut self.stdout, stream, id, out, draining),
            Stream::Stderr => pump(&mut self.stderr, stream, id, out, draining),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// One read from `pipe` (until it would block, when `draining`); closes it at its end.
fn pump<R: Read>(
    pipe: &mut Option<OutputPipe<R>>,
    stream: Stream,
    id: &str,
    out: &mut Output,
    draining: bool,
) {
    let Some(p) = pipe.as_mut() else { return };
    let mut buf = [0u8; 65536];
    let ended = loop {
        match p.pipe.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                let lines = p.lines.push(&buf[..n]);
                out.lines(stream, id, &lines);
                if !draining {
                    break false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break draining,
            Err(_) => break true,
        }
    };
    if ended {
        let last = p.lines.finish();
        out.lines(stream, id, &last);
        *pipe = None;
    }
}

fn set_nonblocking(fd: BorrowedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

/// Whether a failed start is the command's own: it cannot be executed (not found, not
/// executable, not a program, its arguments too long). Other errors (EIO or EMFILE opening
/// /dev/null, EAGAIN or ENOMEM from the spawn) are the system's, and may pass.
pub fn is_exec_failure(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::EACCES
                | libc::EPERM
                | libc::ENOEXEC
                | libc::ENOTDIR
                | libc::EISDIR
                | libc::ELOOP
                | libc::ENAMETOOLONG
                | libc::E2BIG
        )
    )
}
