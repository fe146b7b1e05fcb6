//! `ddmq work`: the task runner. It takes messages from one queue and runs a command once for
//! each, N at a time, in one thread around one `poll(2)`: the signal self-pipe (stop signals and
//! SIGCHLD), the commands' output pipes and, while a long body is being written, their stdin.
//! Between polls it renews the lease of every running message well before it runs out, and
//! takes new messages when slots are free.
//!
//! A message is acked when its command exits 0 and nacked otherwise (the CLI's nack: requeued
//! as the message and `requeue_limit` say, into `dead/` with `dead_letter`, dropped otherwise).
//! On SIGTERM or SIGINT the runner takes nothing more, passes the signal on, waits the grace
//! period, then SIGKILLs; what did not finish goes back to the queue at its place, uncounted.
//! A runner killed outright loses nothing either: its leases run out and the messages are
//! requeued by the next cleaner (every runner is one before it decides the queue is empty).

mod output;
mod report;
mod signals;
mod task;

pub use report::Tally;

use crate::engine::{self, AckOutcome, ConsumeOptions, Delivery, Queue, RequeueOutcome};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use output::{Output, Stream};
use report::{JobLog, JobRecord};
use signals::Signals;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use task::{CommandTemplate, Task};

/// How often the number of waiting messages is counted for the status line (it lists the queue).
const STATUS_COUNT_EVERY: Duration = Duration::from_secs(1);
/// How often the status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_millis(250);
/// How often an idle runner looks for expired leases in `work/` (a listing, no writes).
const EXPIRED_LOOK_EVERY: Duration = Duration::from_secs(1);

/// The runner's error: the engine's, or a system call of its own, naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Engine(#[from] engine::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{op}: {source}")]
    Os { op: &'static str, source: io::Error },
    #[error("command not found (or not executable): {0}")]
    CommandNotFound(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What `ddmq work` was asked to do.
pub struct Options {
    /// Tasks run at once (at least 1).
    pub jobs: usize,
    /// How long to wait for more messages once the queue is empty and nothing runs; None stops
    /// at once, `Duration::MAX` never.
    pub wait: Option<Duration>,
    /// Between the stop signal passed on and SIGKILL.
    pub grace: Duration,
    /// Prefix output lines with the message id and a tab.
    pub tag: bool,
    pub joblog: Option<PathBuf>,
    /// COMMAND and its ARGs; `{}` in any of them is replaced by the body.
    pub command: Vec<String>,
    /// How often an empty queue is looked at again.
    pub poll: Duration,
    /// Draw the live status line (stderr is a terminal).
    pub status_line: bool,
}

/// How a run ended (errors aside).
pub struct Outcome {
    pub tally: Tally,
    /// The stop signal that ended it, if one did.
    pub stopped_by: Option<i32>,
}

/// The number of CPUs this process may run on: its affinity mask (what Slurm, cgroups' cpusets
/// and taskset set), not the machine's total.
pub fn default_jobs() -> usize {
    use nix::sched::{CpuSet, sched_getaffinity};
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .count()
            .max(1),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Runs the command for each message of `queue` until the queue is empty (or `--wait` ends,
/// or a stop signal). The one-line summary goes to stderr in every case.
pub fn run(queue: Arc<Queue>, root: &Path, opts: &Options) -> Result<Outcome> {
    check_command(&opts.command)?;
    let signals = Signals::install().map_err(|source| Error::Os {
        op: "installing signal handlers",
        source,
    })?;
    let joblog = opts.joblog.as_deref().map(JobLog::open).transpose()?;
    let now = Instant::now();
    let mut runner = Runner {
        template: CommandTemplate::new(
            opts.command.clone(),
            root.to_string_lossy().into_owned(),
            queue.name().to_string(),
        ),
        queue,
        opts,
        signals,
        joblog,
        output: Output::new(opts.tag, opts.status_line),
        tasks: Vec::new(),
        tally: Tally::default(),
        seq: 0,
        started: now,
        stop: None,
        error: None,
        queue_dry: false,
        next_look: now,
        idle_since: None,
        last_expired_look: None,
        next_status: now,
        waiting_count: None,
        next_count: now,
    };
    let result = runner.run_loop();
    runner.output.clear_status();
    let summary = runner.tally.summary(runner.started.elapsed());
    runner.output.notice(&summary);
    result?;
    if let Some(e) = runner.error.take() {
        return Err(e);
    }
    Ok(Outcome {
        tally: runner.tally,
        stopped_by: runner.stop.map(|s| s.signal),
    })
}

/// A missing command would fail every message until each reached its requeue limit: refuse
/// before taking any.
fn check_command(words: &[String]) -> Result<()> {
    use nix::unistd::{AccessFlags, access};
    let Some(command) = words.first() else {
        return Err(Error::CommandNotFound(String::new()));
    };
    if command.contains(task::PLACEHOLDER) {
        return Ok(()); // only known per message
    }
    let executable = |p: &Path| p.is_file() && access(p, AccessFlags::X_OK).is_ok();
    let found = if command.contains('/') {
        executable(Path::new(command))
    } else {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| executable(&dir.join(command)))
        })
    };
    if found {
        Ok(())
    } else {
        Err(Error::CommandNotFound(command.clone()))
    }
}

/// A stop signal received: what to send, and when patience ends.
struct Stop {
    signal: i32,
    kill_at: Instant,
    killed: bool,
}

struct Runner<'a> {
    queue: Arc<Queue>,
    opts: &'a Options,
    template: CommandTemplate,
    signals: Signals,
    joblog: Option<JobLog>,
    output: Output,
    tasks: Vec<Task>,
    tally: Tally,
    seq: u64,
    started: Instant,
    stop: Option<Stop>,
    /// An engine error that stopped the taking of messages (returned once the tasks ended).
    error: Option<Error>,
    /// The last look found nothing to take; `next_look` is when to look again.
    queue_dry: bool,
    next_look: Instant,
    /// Since when nothing runs and nothing is to be taken.
    idle_since: Option<Instant>,
    last_expired_look: Option<Instant>,
    next_status: Instant,
    waiting_count: Option<usize>,
    next_count: Instant,
}

/// Which pipe of which task a poll slot watches.
#[derive(Clone, Copy)]
enum Watched {
    Output(usize, Stream),
    Input(usize),
}

impl Runner<'_> {
    fn run_loop(&mut self) -> Result<()> {
        loop {
            if self.stop.is_none() && self.error.is_none() {
                self.fill_slots();
            }
            if self.tasks.is_empty() && (self.stop.is_some() || self.error.is_some()) {
                return Ok(());
            }
            if self.tasks.is_empty() && self.queue_dry && !self.keeps_waiting() {
                return Ok(());
            }
            let timeout = self.next_timeout();
            self.wait_for_events(timeout)?;
            self.renew_leases();
            self.kill_when_grace_ends();
            self.draw_status();
        }
    }

    fn keeps_waiting(&self) -> bool {
        match (self.opts.wait, self.idle_since) {
            (Some(wait), Some(since)) => since.elapsed() < wait,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Takes messages while slots are free. When there is none, and nothing runs, the leases
    /// that ran out in `work/` are requeued first (no once-a-minute throttle), so a rerun after a
    /// crash finds what the dead runner held.
    fn fill_slots(&mut self) {
        let now = Instant::now();
        if self.queue_dry && now < self.next_look {
            return;
        }
        while self.tasks.len() < self.opts.jobs {
            match self.queue.consume(1, &ConsumeOptions { clean: true }) {
                Ok(mut got) if !got.is_empty() => {
                    self.idle_since = None;
                    self.start(got.swap_remove(0));
                }
                Ok(_) => {
                    if self.tasks.is_empty() && self.requeued_expired(now) {
                        continue;
                    }
                    self.queue_dry = true;
                    self.next_look = now + self.opts.poll;
                    if self.tasks.is_empty() && self.idle_since.is_none() {
                        self.idle_since = Some(now);
                    }
                    return;
                }
                Err(e) => {
                    self.output
                        .notice(&format!("taking no more tasks after an error: {e}"));
                    self.error = Some(e.into());
                    return;
                }
            }
        }
        self.queue_dry = false;
    }

    /// Requeues expired leases, at most once every [`EXPIRED_LOOK_EVERY`]; true if any was.
    fn requeued_expired(&mut self, now: Instant) -> bool {
        if self
            .last_expired_look
            .is_some_and(|t| now.duration_since(t) < EXPIRED_LOOK_EVERY)
        {
            return false;
        }
        self.last_expired_look = Some(now);
        match self.queue.requeue_expired() {
            Ok(report) => report.requeued > 0,
            Err(e) => {
                self.output
                    .notice(&format!("requeueing expired messages failed: {e}"));
                false
            }
        }
    }

    fn start(&mut self, delivery: Delivery) {
        self.seq += 1;
        let work_name = delivery.work_name.clone();
        let id = delivery.message.id.clone();
        match Task::start(self.seq, &self.template, delivery) {
            Ok(task) => self.tasks.push(task),
            Err(e) => {
                let words = self.template.words.join(" ");
                self.output
                    .notice(&format!("message {id}: could not start {words}: {e}"));
                if let Some(log) = &mut self.joblog {
                    let record = JobRecord {
                        seq: self.seq,
                        started: std::time::SystemTime::now(),
                        runtime: Duration::ZERO,
                        exit_code: 127,
                        signal: 0,
                        command: &words,
                    };
                    if let Err(e) = log.record(&record) {
                        self.output.notice(&e.to_string());
                    }
                }
                self.settle_failure(&id, &work_name, "could not start");
            }
        }
    }

    /// The poll timeout: until the next thing the loop must do by itself.
    fn next_timeout(&self) -> Option<Duration> {
        let mut until: Option<Instant> = None;
        let mut at = |t: Instant| until = Some(until.map_or(t, |u| u.min(t)));
        for t in &self.tasks {
            if !t.lease.lost {
                at(t.lease.next_renewal);
            }
        }
        match &self.stop {
            Some(stop) if !stop.killed => at(stop.kill_at),
            Some(_) => {}
            None if self.error.is_none() && self.queue_dry && self.tasks.len() < self.opts.jobs => {
                at(self.next_look)
            }
            None => {}
        }
        if self.opts.status_line {
            at(self.next_status);
        }
        if let (true, Some(wait), Some(since)) =
            (self.tasks.is_empty(), self.opts.wait, self.idle_since)
            && let Some(end) = since.checked_add(wait)
        {
            at(end);
        }
        until.map(|u| u.saturating_duration_since(Instant::now()))
    }

    /// One poll: passes on output, writes pending bodies, handles signals and ended commands.
    fn wait_for_events(&mut self, timeout: Option<Duration>) -> Result<()> {
        let ready: Vec<Watched>;
        let signalled;
        {
            let mut fds = Vec::with_capacity(1 + 3 * self.tasks.len());
            let mut watched = Vec::with_capacity(3 * self.tasks.len());
            fds.push(PollFd::new(self.signals.fd(), PollFlags::POLLIN));
            for (i, t) in self.tasks.iter().enumerate() {
                if let Some(p) = &t.stdout {
                    fds.push(PollFd::new(p.pipe.as_fd(), PollFlags::POLLIN));
                    watched.push(Watched::Output(i, Stream::Stdout));
                }
                if let Some(p) = &t.stderr {
                    fds.push(PollFd::new(p.pipe.as_fd(), PollFlags::POLLIN));
                    watched.push(Watched::Output(i, Stream::Stderr));
                }
                if let Some(fd) = t.stdin_fd() {
                    fds.push(PollFd::new(fd, PollFlags::POLLOUT));
                    watched.push(Watched::Input(i));
                }
            }
            let timeout = match timeout {
                None => PollTimeout::NONE,
                // Rounded up: a timeout rounded down to 0 would spin until the deadline.
                Some(d) => {
                    PollTimeout::try_from(d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::Os {
                        op: "poll",
                        source: e.into(),
                    });
                }
            }
            signalled = fds[0].any().unwrap_or(false);
            ready = watched
                .iter()
                .zip(&fds[1..])
                .filter(|(_, fd)| fd.any().unwrap_or(false))
                .map(|(w, _)| *w)
                .collect();
        }
        for w in ready {
            match w {
                Watched::Output(i, stream) => {
                    self.tasks[i].read_output(stream, &mut self.output, false)
                }
                Watched::Input(i) => self.tasks[i].write_stdin(),
            }
        }
        if signalled {
            if let Some(sig) = self.signals.take() {
                self.on_stop_signal(sig);
            }
            self.reap();
        }
        Ok(())
    }

    /// Finishes the tasks whose command ended.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.tasks.len() {
            match self.tasks[i].child.try_wait() {
                Ok(Some(status)) => {
                    let mut task = self.tasks.swap_remove(i);
                    task.status = Some(status);
                    task.read_output(Stream::Stdout, &mut self.output, true);
                    task.read_output(Stream::Stderr, &mut self.output, true);
                    self.finish(task);
                }
                Ok(None) => i += 1,
                Err(e) => {
                    self.output
                        .notice(&format!("waiting for task {}: {e}", self.tasks[i].id));
                    i += 1;
                }
            }
        }
    }

    fn finish(&mut self, task: Task) {
        let status = task.status.expect("finish is called on ended tasks");
        // A slot is free, and a nack may have requeued: the next look must not wait for the
        // poll interval, and "empty" must be decided by a look made after this.
        self.queue_dry = false;
        if let Some(log) = &mut self.joblog {
            let command = report::shell_words(&task.command);
            let record = JobRecord {
                seq: task.seq,
                started: task.started_wall,
                runtime: task.started.elapsed(),
                exit_code: status.code().unwrap_or(0),
                signal: status.signal().unwrap_or(0),
                command: &command,
            };
            if let Err(e) = log.record(&record) {
                self.output.notice(&e.to_string());
            }
        }
        let work_name = &task.lease.work_name;
        if task.lease.lost {
            // The message is someone else's now: its fate is theirs.
            if status.success() {
                self.tally.done += 1;
            } else if !task.interrupted {
                self.tally.failed += 1;
            }
            return;
        }
        if status.success() {
            self.tally.done += 1;
            match self.queue.ack(&work_name.to_string()) {
                Ok(AckOutcome::Acked(_)) => {}
                Ok(AckOutcome::NotFound) => self.lease_lost(&task.id),
                Err(e) => self
                    .output
                    .notice(&format!("message {}: ack failed: {e}", task.id)),
            }
        } else if task.interrupted {
            match self.queue.give_back(work_name) {
                Ok(true) => self.tally.given_back += 1,
                Ok(false) => self.lease_lost(&task.id),
                Err(e) => self
                    .output
                    .notice(&format!("message {}: giving it back failed: {e}", task.id)),
            }
        } else {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by {}", signal_name(sig)),
                (None, None) => format!("{status}"),
            };
            self.settle_failure(&task.id, work_name, &how);
        }
    }

    /// Nacks a failed task's message and says what became of it.
    fn settle_failure(&mut self, id: &str, work_name: &engine::WorkName, how: &str) {
        self.tally.failed += 1;
        let fate = match self.queue.nack(&work_name.to_string(), false) {
            Ok(RequeueOutcome::Requeued(_)) => {
                self.tally.requeued += 1;
                "requeued".to_string()
            }
            Ok(RequeueOutcome::LimitReached {
                dead_lettered: true,
            }) => {
                self.tally.dead += 1;
                "requeue limit reached: moved to dead/".to_string()
            }
            Ok(RequeueOutcome::LimitReached {
                dead_lettered: false,
            }) => {
                self.tally.dropped += 1;
                "requeue limit reached: dropped".to_string()
            }
            Ok(RequeueOutcome::Dropped) => {
                self.tally.dropped += 1;
                "dropped (published without requeue)".to_string()
            }
            Ok(RequeueOutcome::Quarantined) => "unreadable: moved to quarantine/".to_string(),
            Ok(RequeueOutcome::NotFound) => {
                self.tally.lost_leases += 1;
                "its lease was lost (another client requeued it)".to_string()
            }
            Err(e) => format!("nack failed: {e}"),
        };
        self.output
            .notice(&format!("message {id} failed ({how}): {fate}"));
    }

    fn lease_lost(&mut self, id: &str) {
        self.tally.lost_leases += 1;
        self.output.notice(&format!(
            "message {id}: its lease was lost while its command ran (it expired and another client requeued it): it may run again"
        ));
    }

    /// Renews the leases that are due.
    fn renew_leases(&mut self) {
        let now = Instant::now();
        for i in 0..self.tasks.len() {
            let t = &mut self.tasks[i];
            if t.lease.lost || now < t.lease.next_renewal {
                continue;
            }
            match self.queue.touch(&t.lease.work_name.to_string()) {
                Ok(Some(name)) => t.lease.renewed(name),
                Ok(None) => {
                    t.lease.lost = true;
                    let id = t.id.clone();
                    self.lease_lost(&id);
                }
                Err(e) => {
                    t.lease.retry_soon();
                    let text = format!("message {}: renewing its lease failed: {e}", t.id);
                    self.output.notice(&text);
                }
            }
        }
    }

    /// First stop signal: take nothing more and pass it on. A second: SIGKILL now.
    fn on_stop_signal(&mut self, sig: i32) {
        let now = Instant::now();
        if let Some(stop) = &mut self.stop {
            stop.kill_at = now;
            return;
        }
        let name = signal_name(sig);
        if !self.tasks.is_empty() {
            self.output.notice(&format!(
                "{name}: taking no more tasks; passing it on to {} running, SIGKILL in {:.1} s",
                self.tasks.len(),
                self.opts.grace.as_secs_f64()
            ));
        }
        let signal = Signal::try_from(sig).unwrap_or(Signal::SIGTERM);
        for t in &mut self.tasks {
            t.interrupted = true;
            let _ = killpg(Pid::from_raw(t.pid()), signal);
        }
        self.stop = Some(Stop {
            signal: sig,
            kill_at: now + self.opts.grace,
            killed: false,
        });
    }

    fn kill_when_grace_ends(&mut self) {
        let Some(stop) = &mut self.stop else { return };
        if stop.killed || Instant::now() < stop.kill_at {
            return;
        }
        stop.killed = true;
        for t in &self.tasks {
            let _ = killpg(Pid::from_raw(t.pid()), Signal::SIGKILL);
        }
    }

    fn draw_status(&mut self) {
        let now = Instant::now();
        if !self.opts.status_line || now < self.next_status {
            return;
        }
        self.next_status = now + STATUS_EVERY;
        if now >= self.next_count {
            self.next_count = now + STATUS_COUNT_EVERY;
            self.waiting_count = self.queue.status(false).ok().map(|s| s.waiting);
        }
        let text = self
            .tally
            .status(self.tasks.len(), self.waiting_count, self.started.elapsed());
        self.output.status(&text);
    }
}

/// `SIGTERM`, or the number.
fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}
