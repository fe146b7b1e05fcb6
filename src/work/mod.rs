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
//! A stop signal wins over the deaths it causes: a scheduler signals every process of a job,
//! so a command may die of it before the runner has handled its own; a command that died of a
//! signal is therefore settled only after [`STOP_RACE_WINDOW`], taking nothing new meanwhile,
//! and given back uncounted if a stop signal came in that time. On SIGUSR1 (or, in a Slurm job
//! with `--drain-before`, that long before its time limit) the runner drains: it takes nothing
//! more and lets the running tasks finish. Under Slurm the grace period is fitted below the
//! cluster's KillWait ([`slurm`]). A runner killed outright loses nothing either: its leases run
//! out and the messages are requeued by the next cleaner (every runner is one before it decides
//! the queue is empty).

mod output;
mod report;
mod signals;
mod slurm;
mod task;

pub use report::Tally;

use crate::engine::{
    self, AckOutcome, ConsumeOptions, DirWatch, HeldDelivery, IDLE_AFTER, InFlight, Queue,
    RequeueOutcome,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use output::{Output, Stream};
use report::{JobLog, JobRecord};
use signals::{DRAIN_SIGNAL, Signals};
use slurm::SlurmJob;
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
/// Errors in a row taking a task after which the runner stops taking any (then exits 1 once the
/// running ones end), and the first pause between tries (doubled each time, up to 64x).
const MAX_ERRORS_IN_A_ROW: u32 = 10;
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// The same once the queue has been idle for [`IDLE_AFTER`].
const EXPIRED_LOOK_IDLE: Duration = Duration::from_secs(5);
/// How long a command that died of a signal waits for the runner's own stop signal before it
/// counts as failed. A scheduler signals all the processes of a job within milliseconds of each
/// other; this is the most a crashed task's slot stays unused.
const STOP_RACE_WINDOW: Duration = Duration::from_secs(1);
/// After the job's time left could not be learned, when to ask again.
const TIME_LEFT_RETRY: Duration = Duration::from_secs(60);

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
    #[error("{op}: {message}")]
    Slurm { op: &'static str, message: String },
    #[error("--drain-before needs a Slurm job, and SLURM_JOB_ID is not set")]
    NotInSlurmJob,
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
    /// In a Slurm job: drain this long before the job's time limit.
    pub drain_before: Option<Duration>,
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
    let slurm = SlurmJob::from_env();
    if opts.drain_before.is_some() && slurm.is_none() {
        return Err(Error::NotInSlurmJob);
    }
    let signals = Signals::install().map_err(|source| Error::Os {
        op: "installing signal handlers",
        source,
    })?;
    let joblog = opts.joblog.as_deref().map(JobLog::open).transpose()?;
    let mut output = Output::new(opts.tag, opts.status_line);
    let grace = match &slurm {
        Some(job) => grace_within_kill_wait(opts.grace, job, &mut output),
        None => opts.grace,
    };
    let now = Instant::now();
    let mut runner = Runner {
        template: CommandTemplate::new(
            opts.command.clone(),
            root.to_string_lossy().into_owned(),
            queue.name().to_string(),
            slurm.is_some(),
        ),
        queue,
        opts,
        signals,
        joblog,
        output,
        grace,
        slurm,
        tasks: Vec::new(),
        held: Vec::new(),
        tally: Tally::default(),
        seq: 0,
        started: now,
        stop: None,
        drain: None,
        drain_plan: None,
        error: None,
        queue_dry: false,
        watch: DirWatch::default(),
        errors_in_a_row: 0,
        retry_at: None,
        next_look: now,
        idle_since: None,
        last_expired_look: None,
        next_status: now,
        waiting_count: None,
        next_count: now,
    };
    runner.plan_drain();
    let result = runner.run_loop();
    runner.output.clear_status();
    let mut summary = runner.tally.summary(runner.started.elapsed());
    if let Some(stop) = &runner.stop {
        summary = format!("stopped by {}: {summary}", signal_name(stop.signal));
    } else if let Some(drain) = &runner.drain {
        summary = format!("drained {}: {summary}", drain.label);
    }
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

/// The grace period, fitted below Slurm's KillWait when it is not (saying so): past KillWait,
/// Slurm SIGKILLs the runner with its commands, and their messages wait out their leases.
fn grace_within_kill_wait(grace: Duration, job: &SlurmJob, output: &mut Output) -> Duration {
    match job.kill_wait() {
        Ok(Some(kill_wait)) => match slurm::fit_grace(grace, kill_wait) {
            Some(fitted) => {
                output.notice(&format!(
                    "--grace {:.1} s is not below Slurm's KillWait ({} s), after which Slurm SIGKILLs the runner and its commands: using a grace of {:.1} s",
                    grace.as_secs_f64(),
                    kill_wait.as_secs(),
                    fitted.as_secs_f64()
                ));
                fitted
            }
            None => grace,
        },
        Ok(None) => {
            log::debug!(
                "in Slurm job {} but no scontrol here: KillWait unknown",
                job.id
            );
            grace
        }
        Err(e) => {
            output.notice(&format!(
                "could not learn Slurm's KillWait ({e}): keep --grace ({:.1} s) below it",
                grace.as_secs_f64()
            ));
            grace
        }
    }
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

/// Draining: nothing more is taken, the running tasks finish.
struct Drain {
    /// What started it, for the summary: `on SIGUSR1`, `before the time limit`.
    label: &'static str,
}

/// When to look at the job's time left again (`--drain-before`).
struct DrainPlan {
    at: Instant,
    /// The last answer put the drain at `at` (false: asking again after a failed look).
    due: bool,
}

/// A task whose command died of a signal, waiting to see whether a stop signal follows.
struct Held {
    task: Task,
    until: Instant,
}

struct Runner<'a> {
    queue: Arc<Queue>,
    opts: &'a Options,
    template: CommandTemplate,
    signals: Signals,
    joblog: Option<JobLog>,
    output: Output,
    /// `--grace`, fitted below Slurm's KillWait.
    grace: Duration,
    slurm: Option<SlurmJob>,
    tasks: Vec<Task>,
    /// Ended tasks not settled yet ([`STOP_RACE_WINDOW`]); nothing is taken while there are any.
    held: Vec<Held>,
    tally: Tally,
    seq: u64,
    started: Instant,
    stop: Option<Stop>,
    drain: Option<Drain>,
    drain_plan: Option<DrainPlan>,
    /// An engine error that stopped the taking of messages (returned once the tasks ended).
    error: Option<Error>,
    /// The last look found nothing to take; `next_look` is when to look again.
    queue_dry: bool,
    /// The queue directory as the last empty look saw it.
    watch: DirWatch,
    /// Consecutive errors taking or starting a task (see [`MAX_ERRORS_IN_A_ROW`]).
    errors_in_a_row: u32,
    /// After such an error: when to try again. Not a dry queue: the runner does not end for it.
    retry_at: Option<Instant>,
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
            self.settle_held();
            if self.takes_tasks() {
                self.fill_slots();
            }
            let idle = self.tasks.is_empty() && self.held.is_empty();
            if idle && (self.stop.is_some() || self.error.is_some() || self.drain.is_some()) {
                return Ok(());
            }
            if idle && self.queue_dry && !self.keeps_waiting() {
                return Ok(());
            }
            let timeout = self.next_timeout();
            self.wait_for_events(timeout)?;
            self.renew_leases();
            self.kill_when_grace_ends();
            if self
                .drain_plan
                .as_ref()
                .is_some_and(|p| Instant::now() >= p.at)
            {
                self.plan_drain();
            }
            self.draw_status();
        }
    }

    /// New tasks are taken unless stopping, draining, after an error, or while a task that died
    /// of a signal waits for the stop signal that may have caused it.
    fn takes_tasks(&self) -> bool {
        self.stop.is_none() && self.drain.is_none() && self.error.is_none() && self.held.is_empty()
    }

    /// Settles the held tasks whose wait is over, or that a stop signal interrupted.
    fn settle_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let now = Instant::now();
        let (due, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.task.interrupted || h.until <= now);
        self.held = kept;
        for h in due {
            self.finish(h.task);
        }
    }

    /// `--drain-before`: asks Slurm for the job's time left, and drains now or plans when.
    fn plan_drain(&mut self) {
        let (Some(before), Some(job)) = (self.opts.drain_before, &self.slurm) else {
            return;
        };
        if self.drain.is_some() || self.stop.is_some() {
            self.drain_plan = None;
            return;
        }
        let now = Instant::now();
        let was_due = self.drain_plan.as_ref().is_some_and(|p| p.due);
        match job.time_left() {
            // Squeue counts whole seconds: within one of the mark is at the mark.
            Ok(Some(left)) if left > before + Duration::from_secs(1) => {
                log::info!(
                    "job {}: {} s left, draining in {} s",
                    job.id,
                    left.as_secs(),
                    (left - before).as_secs()
                );
                self.drain_plan = Some(DrainPlan {
                    at: now + (left - before),
                    due: true,
                });
            }
            Ok(Some(left)) => {
                self.drain_plan = None;
                let reason = format!(
                    "the job's time limit is {} s away (--drain-before {})",
                    left.as_secs(),
                    before.as_secs_f64()
                );
                self.start_drain(&reason, "before the time limit");
            }
            Ok(None) => {
                self.drain_plan = None;
                self.output.notice(&format!(
                    "job {} has no time limit: --drain-before does nothing",
                    job.id
                ));
            }
            Err(e) if was_due => {
                self.drain_plan = None;
                let reason = format!(
                    "--drain-before {}: the time left could not be checked again ({e})",
                    before.as_secs_f64()
                );
                self.start_drain(&reason, "before the time limit");
            }
            Err(e) => {
                self.output.notice(&format!(
                    "could not learn the time left of job {} ({e}): asking again in {} s",
                    job.id,
                    TIME_LEFT_RETRY.as_secs()
                ));
                self.drain_plan = Some(DrainPlan {
                    at: now + TIME_LEFT_RETRY,
                    due: false,
                });
            }
        }
    }

    /// Takes nothing more; the running tasks finish, then the runner ends.
    fn start_drain(&mut self, reason: &str, label: &'static str) {
        if self.drain.is_some() || self.stop.is_some() {
            return;
        }
        let running = self.tasks.len() + self.held.len();
        self.output.notice(&format!(
            "{reason}: draining: taking no more tasks, letting {running} running finish"
        ));
        self.drain = Some(Drain { label });
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
        if let Some(at) = self.retry_at {
            if now < at {
                return;
            }
            self.retry_at = None;
        }
        if self.queue_dry {
            if now < self.next_look {
                return;
            }
            // One stat instead of a listing while the queue directory keeps its signature;
            // expired leases are still looked for while nothing runs.
            let expired_due = self.tasks.is_empty() && self.expired_look_due(now);
            if !self.watch.worth_a_look(&self.queue) && !expired_due {
                self.next_look = now + self.watch.pause(self.opts.poll);
                return;
            }
        }
        while self.tasks.len() < self.opts.jobs {
            match self.queue.consume_held(&ConsumeOptions { clean: true }) {
                Ok(Some(got)) => {
                    self.idle_since = None;
                    if self.start(got) {
                        self.errors_in_a_row = 0;
                    } else {
                        return;
                    }
                }
                Ok(None) => {
                    self.errors_in_a_row = 0;
                    self.watch.looked(&self.queue);
                    if self.tasks.is_empty() && self.requeued_expired(now) {
                        continue;
                    }
                    self.queue_dry = true;
                    self.next_look = now + self.watch.pause(self.opts.poll);
                    if self.tasks.is_empty() && self.idle_since.is_none() {
                        self.idle_since = Some(now);
                    }
                    return;
                }
                // A network filesystem's errors are often transient (EIO, ESTALE): try again
                // with a growing pause; stop taking tasks only once they persist.
                Err(e) => {
                    self.note_error("taking a task failed", e.into());
                    return;
                }
            }
        }
        self.queue_dry = false;
    }

    /// One more error in a row taking or starting a task: try again after a pause that doubles
    /// each time (0.1 s to 3.2 s), or, at [`MAX_ERRORS_IN_A_ROW`], take no more tasks.
    fn note_error(&mut self, what: &str, e: Error) {
        self.errors_in_a_row += 1;
        if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
            self.output.notice(&format!(
                "taking no more tasks after {} errors in a row, the last: {e}",
                self.errors_in_a_row
            ));
            self.error = Some(e);
            return;
        }
        let pause = ERROR_PAUSE * (1 << self.errors_in_a_row.min(6));
        self.output.notice(&format!(
            "{what} ({} in a row), trying again in {:.1} s: {e}",
            self.errors_in_a_row,
            pause.as_secs_f64()
        ));
        self.retry_at = Some(Instant::now() + pause);
    }

    /// Whether it is time to look for expired leases: every [`EXPIRED_LOOK_EVERY`], or every
    /// [`EXPIRED_LOOK_IDLE`] once the queue has been idle for a while (a listing of `work/`
    /// each time).
    fn expired_look_due(&self, now: Instant) -> bool {
        let every = if self.watch.idle_for() >= IDLE_AFTER {
            EXPIRED_LOOK_IDLE
        } else {
            EXPIRED_LOOK_EVERY
        };
        self.last_expired_look
            .is_none_or(|t| now.duration_since(t) >= every)
    }

    /// Requeues expired leases, when [`Runner::expired_look_due`]; true if any was.
    fn requeued_expired(&mut self, now: Instant) -> bool {
        if !self.expired_look_due(now) {
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

    /// Starts the command for a message taken; false if it could not be started. A command
    /// that cannot be executed (not found, not executable) fails its message like an exit
    /// status would; any other error (EIO opening /dev/null, EAGAIN from fork) is the system's,
    /// not the message's: it is given back uncounted, as an error in a row.
    fn start(&mut self, delivery: HeldDelivery) -> bool {
        self.seq += 1;
        let in_flight = delivery.in_flight.clone();
        let id = delivery.message.id.clone();
        let lease_secs = self.queue.in_flight_left_secs(&in_flight);
        let e = match Task::start(self.seq, &self.template, delivery, lease_secs) {
            Ok(task) => {
                self.tasks.push(task);
                return true;
            }
            Err(e) => e,
        };
        let words = self.template.words.join(" ");
        if !task::is_exec_failure(&e) {
            let fate = match self.queue.give_back_in_flight(&in_flight) {
                Ok(true) => {
                    self.tally.given_back += 1;
                    "given back".to_string()
                }
                Ok(false) => "its lease was lost".to_string(),
                Err(back) => format!("giving it back failed: {back}"),
            };
            let op = "starting the command";
            let e = Error::Os { op, source: e };
            self.note_error(
                &format!("message {id}: {fate}, its command could not be started"),
                e,
            );
            return false;
        }
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
        self.settle_failure(&id, &in_flight, "could not start");
        true
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
            None if self.takes_tasks() && self.tasks.len() < self.opts.jobs => {
                if let Some(retry) = self.retry_at {
                    at(retry);
                } else if self.queue_dry {
                    at(self.next_look);
                }
            }
            None => {}
        }
        for h in &self.held {
            at(h.until);
        }
        if let Some(plan) = &self.drain_plan {
            at(plan.at);
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
            let received = self.signals.take();
            if let Some(sig) = received.stop {
                self.on_stop_signal(sig);
            }
            if received.drain {
                let name = DRAIN_SIGNAL.as_str();
                self.start_drain(name, "on SIGUSR1");
            }
            self.reap();
        }
        Ok(())
    }

    /// Finishes the tasks whose command ended; holds those that died of a signal a stop signal
    /// may be about to explain.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.tasks.len() {
            match self.tasks[i].child.try_wait() {
                Ok(Some(status)) => {
                    let mut task = self.tasks.swap_remove(i);
                    task.status = Some(status);
                    task.read_output(Stream::Stdout, &mut self.output, true);
                    task.read_output(Stream::Stderr, &mut self.output, true);
                    if self.stop.is_none() && !task.interrupted && died_of_a_signal(status) {
                        self.held.push(Held {
                            task,
                            until: Instant::now() + STOP_RACE_WINDOW,
                        });
                    } else {
                        self.finish(task);
                    }
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
        let in_flight = &task.lease.in_flight;
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
            match self.queue.ack_in_flight(in_flight) {
                Ok(AckOutcome::Acked(_)) => {}
                Ok(AckOutcome::NotFound) => self.lease_lost(&task.id),
                Err(e) => self
                    .output
                    .notice(&format!("message {}: ack failed: {e}", task.id)),
            }
        } else if task.interrupted {
            match self.queue.give_back_in_flight(in_flight) {
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
            self.settle_failure(&task.id, in_flight, &how);
        }
    }

    /// Nacks a failed task's message and says what became of it.
    fn settle_failure(&mut self, id: &str, in_flight: &InFlight, how: &str) {
        self.tally.failed += 1;
        let fate = match self.queue.nack_in_flight(in_flight, false) {
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
        note_lease_lost(&mut self.tally, &mut self.output, id);
    }

    /// Renews the leases that are due (the held tasks' too: they are not settled yet).
    fn renew_leases(&mut self) {
        let now = Instant::now();
        let Runner {
            tasks,
            held,
            queue,
            tally,
            output,
            ..
        } = self;
        for t in tasks.iter_mut().chain(held.iter_mut().map(|h| &mut h.task)) {
            if t.lease.lost || now < t.lease.next_renewal {
                continue;
            }
            match queue.renew(&t.lease.in_flight, t.lease.timeout()) {
                Ok(Some(name)) => {
                    let left = queue.lease_left_secs(&name);
                    t.lease.renewed(name, left);
                }
                Ok(None) => {
                    t.lease.lost = true;
                    note_lease_lost(tally, output, &t.id);
                }
                Err(e) => {
                    t.lease.retry_soon();
                    let text = format!("message {}: renewing its lease failed: {e}", t.id);
                    output.notice(&text);
                }
            }
        }
    }

    /// First stop signal: take nothing more and pass it on; the held tasks (their commands
    /// died of a signal moments ago, most likely this stop's) go back uncounted. A second:
    /// SIGKILL now.
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
                self.grace.as_secs_f64()
            ));
        }
        let signal = Signal::try_from(sig).unwrap_or(Signal::SIGTERM);
        for t in &mut self.tasks {
            t.interrupted = true;
            let _ = killpg(Pid::from_raw(t.pid()), signal);
        }
        for h in &mut self.held {
            h.task.interrupted = true;
        }
        self.drain_plan = None;
        self.stop = Some(Stop {
            signal: sig,
            kill_at: now + self.grace,
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

/// The runner's own line about a task whose lease was lost.
fn note_lease_lost(tally: &mut Tally, output: &mut Output, id: &str) {
    tally.lost_leases += 1;
    output.notice(&format!(
        "message {id}: its lease was lost while its command ran (it expired and another client requeued it): it may run again"
    ));
}

/// Death by a signal, as the kernel or a shell reports it (a shell whose command was killed
/// exits 128+N): what a scheduler's signal to every process of a job does to a command.
fn died_of_a_signal(status: std::process::ExitStatus) -> bool {
    status.signal().is_some() || status.code().is_some_and(|c| (129..=128 + 64).contains(&c))
}

/// `SIGTERM`, or the number.
fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}
