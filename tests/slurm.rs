//! `ddmq work` under a real Slurm (22.05, one node, started by scripts/slurm-cluster with
//! KillWait=5 and proctrack/linuxproc, which signals every process of a job): real `sbatch` job
//! arrays against a queue. Every task runs once and a failing task fails its array task;
//! `scancel` mid-run gives every message back at once and uncounted, round after round (the
//! scheduler's SIGTERM reaches the commands and the runner at the same moment: a race), the
//! summaries reaching the output (the runner as the batch shell, or under srun with `%t` in its
//! `--output`); a time limit with `--signal=TERM@N` (srun) and `--signal=B:TERM@N` (the runner as
//! the batch shell) does the same; SIGUSR1 drains (both ways of sending it), and so does
//! `--drain-before`; a `--grace` longer than KillWait is fitted below it, said, and so still
//! gives everything back.
//!
//! `DDMQ_SLURM_PROCTRACK=pgid` or `=cgroup` runs the same tests under another proctrack plugin
//! (scripts/slurm-cluster reads it); they pass under all three here.
//!
//! The cluster is started once for this test binary and stopped when it exits. The tests need
//! root (SlurmUser=root): without it they say so and pass; as root (CI) a cluster that cannot
//! start fails them.

mod farm;

use farm::{lines, text, wait_until_within};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const DDMQ: &str = env!("CARGO_BIN_EXE_ddmq");

/// The private cluster of this test binary.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
/// A test failed: the cluster's directory (its logs) is kept for a look.
static FAILED: AtomicBool = AtomicBool::new(false);

fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-cluster")
}

/// The cluster, started on first use; None (the test returns) when not root.
fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("slurm tests skipped: they need root (SlurmUser=root)");
                return None;
            }
            let dir = tempfile::Builder::new()
                .prefix("ddmq-slurm-")
                .tempdir()
                .expect("cluster dir")
                .keep();
            let out = Command::new(cluster_script())
                .arg("start")
                .arg(&dir)
                .stdin(Stdio::null())
                .output()
                .expect("run scripts/slurm-cluster");
            // Registered even when the start failed: it stops what did start.
            let stop: extern "C" fn() = stop_cluster;
            // SAFETY: registers a plain function with no state of its own to run at exit.
            assert_eq!(unsafe { libc::atexit(stop) }, 0, "atexit");
            let cluster = Cluster {
                conf: dir.join("slurm.conf"),
                dir,
            };
            assert!(
                out.status.success(),
                "the Slurm cluster did not start: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            Some(cluster)
        })
        .as_ref()
}

extern "C" fn stop_cluster() {
    let Some(Some(c)) = CLUSTER.get() else { return };
    let _ = Command::new(cluster_script())
        .arg("stop")
        .arg(&c.dir)
        .stdin(Stdio::null())
        .status();
    if FAILED.load(Ordering::SeqCst) {
        eprintln!(
            "slurm tests: the cluster's logs are kept in {}",
            c.dir.display()
        );
    } else {
        let _ = fs::remove_dir_all(&c.dir);
    }
}

/// A Slurm client command against the test cluster.
fn slurm(cluster: &Cluster, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("SLURM_CONF", &cluster.conf).stdin(Stdio::null());
    c
}

/// A farm (tests/farm) whose jobs run on the cluster, with their scripts and output in its
/// directory.
struct Farm {
    cluster: &'static Cluster,
    queue: farm::Farm,
}

impl std::ops::Deref for Farm {
    type Target = farm::Farm;
    fn deref(&self) -> &farm::Farm {
        &self.queue
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            FAILED.store(true, Ordering::SeqCst);
            // What the jobs said, for the failure's reader.
            for entry in fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "out") {
                    eprintln!(
                        "--- {}\n{}",
                        path.display(),
                        fs::read_to_string(&path).unwrap_or_default()
                    );
                }
            }
        }
    }
}

impl Farm {
    fn new(cluster: &'static Cluster, settings: &str) -> Farm {
        Farm {
            cluster,
            queue: farm::Farm::new(settings),
        }
    }

    /// `name` in the farm's directory, as the job scripts name it.
    fn path(&self, name: &str) -> String {
        self.file(name).to_string_lossy().into_owned()
    }

    /// What a job wrote to `name` in the farm's directory.
    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Submits a batch script: `body` with `@DDMQ@`, `@ROOT@` and `@DIR@` replaced by the
    /// binary, the root and the farm's directory. Its output goes to `@DIR@/NAME-%A_%a.out`
    /// (`%A_%a`: the job id, and the array task).
    fn submit(&self, name: &str, sbatch_options: &[&str], body: &str) -> Job {
        let script = format!(
            "#!/bin/bash\n{}\n",
            body.replace("@DDMQ@", DDMQ)
                .replace("@ROOT@", &self.root())
                .replace("@DIR@", &self.path(""))
        );
        let script_path = self.dir.path().join(format!("{name}.sh"));
        fs::write(&script_path, script).unwrap();
        let out = slurm(self.cluster, "sbatch")
            .arg("--parsable")
            .arg(format!("--output={}/{name}-%A_%a.out", self.path("")))
            .args(sbatch_options)
            .arg(&script_path)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "sbatch: {}", text(&out.stderr));
        let id = text(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "job id {id:?}");
        Job {
            cluster: self.cluster,
            id,
        }
    }
}

/// A submitted job (an array or not); cancelled when dropped, should a test fail before its end.
struct Job {
    cluster: &'static Cluster,
    id: String,
}

/// One record of `scontrol show job`: a job, or one task of an array.
#[derive(Debug)]
struct JobRecord {
    array_task: Option<String>,
    state: String,
    exit_code: String,
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = slurm(self.cluster, "scancel").arg(&self.id).status();
    }
}

impl Job {
    /// `scancel` with `args`, for this job or one of its array tasks (`task`).
    fn scancel(&self, task: Option<u32>, args: &[&str]) {
        let id = match task {
            Some(t) => format!("{}_{t}", self.id),
            None => self.id.clone(),
        };
        let out = slurm(self.cluster, "scancel")
            .args(args)
            .arg(&id)
            .output()
            .unwrap();
        assert!(out.status.success(), "scancel {id}: {}", text(&out.stderr));
    }

    /// Waits until every part of the job is in a final state (not pending, running, signaling,
    /// completing…): its processes are gone (a runner ended by Slurm has exited, or been killed).
    fn wait_until_ended(&self, bound: Duration) {
        const FINAL: [&str; 11] = [
            "BOOT_FAIL",
            "CANCELLED",
            "COMPLETED",
            "DEADLINE",
            "FAILED",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "PREEMPTED",
            "REVOKED",
            "SPECIAL_EXIT",
            "TIMEOUT",
        ];
        wait_until_within(&format!("job {} ended", self.id), bound, || {
            let out = slurm(self.cluster, "squeue")
                .args(["-h", "-j", &self.id, "-t", "all", "-o", "%T"])
                .output()
                .unwrap();
            let states = text(&out.stdout);
            out.status.success()
                && !states.trim().is_empty()
                && states.lines().all(|s| FINAL.contains(&s.trim()))
        });
    }

    /// The job's records, by array task ("" for a job that is not an array).
    fn records(&self) -> BTreeMap<String, JobRecord> {
        let out = slurm(self.cluster, "scontrol")
            .args(["-o", "show", "job", &self.id])
            .output()
            .unwrap();
        assert!(out.status.success(), "scontrol: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|line| {
                let fields: BTreeMap<&str, &str> = line
                    .split_whitespace()
                    .filter_map(|f| f.split_once('='))
                    .collect();
                let record = JobRecord {
                    array_task: fields.get("ArrayTaskId").map(|s| s.to_string()),
                    state: fields.get("JobState").unwrap_or(&"?").to_string(),
                    exit_code: fields.get("ExitCode").unwrap_or(&"?").to_string(),
                };
                (record.array_task.clone().unwrap_or_default(), record)
            })
            .collect()
    }
}

/// Waits until `file` has `n` lines (tasks write one as they start).
fn wait_for_lines(file: &str, n: usize) {
    wait_until_within(
        &format!("{n} lines in {file}"),
        Duration::from_secs(120),
        || lines(Path::new(file)).len() >= n,
    );
}

const LONG: Duration = Duration::from_secs(150);

#[test]
fn an_array_runs_every_task_once_and_a_failing_task_fails_its_array_task() {
    let Some(cluster) = cluster() else { return };
    let farm = Farm::new(cluster, "");
    let mut bodies: Vec<String> = (1..=30).map(|i| format!("t{i}")).collect();
    farm.publish_lines(&bodies);
    // Dropped on its first failure, so it fails one array task, whichever runs it.
    farm.ok(&["publish", "-s", "--no-requeue", &farm.root(), "q", "bad"]);
    bodies.push("bad".to_string());
    let job = farm.submit(
        "array",
        &["--array=1-2", "--cpus-per-task=1"],
        r#"exec @DDMQ@ work -j 2 --joblog "@DIR@/joblog-$SLURM_ARRAY_TASK_ID" @ROOT@ q -- sh -c 'echo "$1" >> @DIR@/runs; test "$1" != bad' sh {}"#,
    );
    job.wait_until_ended(LONG);
    let mut runs = lines(Path::new(&farm.path("runs")));
    runs.sort();
    bodies.sort();
    assert_eq!(runs, bodies, "every task exactly once");
    assert!(farm.waiting().is_empty() && farm.in_work().is_empty());
    // The joblogs of both array tasks: one row per task run, under a header each.
    let rows: usize = (1..=2)
        .map(|t| lines(Path::new(&farm.path(&format!("joblog-{t}")))).len())
        .sum();
    assert_eq!(rows, 31 + 2);
    // The array task that ran "bad" failed (its runner exits 1); the other completed.
    let records = job.records();
    let states: Vec<(&str, &str)> = records
        .values()
        .map(|r| (r.state.as_str(), r.exit_code.as_str()))
        .collect();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [("COMPLETED", "0:0"), ("FAILED", "1:0")],
        "{records:?}"
    );
    // Each runner's summary reached its output; together they count every task.
    let mut done = 0;
    let mut failed = 0;
    for t in 1..=2 {
        let out = farm.read(&format!("array-{}_{t}.out", job.id));
        let summary = out
            .lines()
            .find(|l| l.contains(" done, "))
            .unwrap_or_else(|| panic!("no summary: {out}"));
        let words: Vec<&str> = summary.split_whitespace().collect();
        done += words[2].parse::<u64>().unwrap();
        failed += words[4].parse::<u64>().unwrap();
    }
    assert_eq!((done, failed), (30, 1));
}

#[test]
fn scancel_mid_run_gives_every_message_back_at_once_and_uncounted_round_after_round() {
    let Some(cluster) = cluster() else { return };
    // Slurm's SIGTERM reaches each command and the runner at the same moment: whichever the
    // runner sees first, nothing may count as failed or start anew. Several rounds, several
    // commands each: it is a race.
    for round in 1..=5 {
        let farm = Farm::new(cluster, "");
        farm.publish_lines(
            &(1..=12)
                .map(|i| format!("r{round}-{i}"))
                .collect::<Vec<_>>(),
        );
        let before = farm.waiting();
        // Array task 1 runs the runner as the batch shell; task 2 under srun, its output
        // written by slurmstepd itself (`%t` in --output), as doc/WORK.md says.
        let job = farm.submit(
            "cancel",
            &["--array=1-2", "--cpus-per-task=1"],
            r#"command=(@DDMQ@ work -j 3 @ROOT@ q -- sh -c 'echo "$DDMQ_ID" >> @DIR@/started; sleep 60')
if [ "$SLURM_ARRAY_TASK_ID" = 1 ]; then
    exec "${command[@]}"
else
    srun --output="@DIR@/cancel-step-%A_%a.%t.out" "${command[@]}"
fi"#,
        );
        wait_for_lines(&farm.path("started"), 6);
        job.scancel(None, &[]);
        job.wait_until_ended(LONG);
        let outputs = format!(
            "{}{}",
            farm.read(&format!("cancel-{}_1.out", job.id)),
            farm.read(&format!("cancel-step-{}_2.0.out", job.id))
        );
        assert_eq!(
            farm.waiting(),
            before,
            "round {round}: every message back at its place: {outputs}"
        );
        assert!(farm.in_work().is_empty(), "round {round}: {outputs}");
        assert!(
            farm.requeue_counters().iter().all(|&c| c == 0),
            "round {round}: no requeue counted: {outputs}"
        );
        assert_eq!(
            lines(Path::new(&farm.path("started"))).len(),
            6,
            "round {round}: no task started after the cancel: {outputs}"
        );
        let want =
            "stopped by SIGTERM: 0 done, 0 failed (0 requeued, 0 dead, 0 dropped), 3 given back";
        assert_eq!(
            outputs.matches(want).count(),
            2,
            "round {round}: both summaries: {outputs}"
        );
        assert!(
            !outputs.contains("ddmq work: message "),
            "round {round}: no message failed: {outputs}"
        );
    }
}

#[test]
fn a_time_limit_signal_stops_the_runner_as_srun_step_and_as_batch_shell() {
    let Some(cluster) = cluster() else { return };
    let farm = Farm::new(cluster, "");
    farm.publish_lines(&(1..=8).map(|i| format!("l{i}")).collect::<Vec<_>>());
    let before = farm.waiting();
    let command =
        r#"@DDMQ@ work -j 2 @ROOT@ q -- sh -c 'echo "$DDMQ_ID" >> @DIR@/started; sleep 300'"#;
    // A one-minute limit, the signal 50 s before it (Slurm sends it at its next check of the
    // limits, up to 30 s later; at least 10 s in, the tasks have started): TERM@N reaches the
    // steps, B:TERM@N the batch shell alone.
    let step = farm.submit(
        "limit-srun",
        &["--time=1", "--signal=TERM@50"],
        &format!(r#"srun --output="@DIR@/limit-srun-step-%j.%t.out" {command}"#),
    );
    let batch = farm.submit(
        "limit-batch",
        &["--time=1", "--signal=B:TERM@50"],
        &format!("exec {command}"),
    );
    wait_for_lines(&farm.path("started"), 4);
    step.wait_until_ended(LONG);
    batch.wait_until_ended(LONG);
    let outputs = format!(
        "{}{}",
        farm.read(&format!("limit-srun-step-{}.0.out", step.id)),
        farm.read(&format!("limit-batch-{}_4294967294.out", batch.id))
    );
    assert_eq!(farm.waiting(), before, "{outputs}");
    assert!(farm.in_work().is_empty(), "{outputs}");
    assert!(farm.requeue_counters().iter().all(|&c| c == 0));
    let want = "stopped by SIGTERM: 0 done, 0 failed (0 requeued, 0 dead, 0 dropped), 2 given back";
    assert_eq!(outputs.matches(want).count(), 2, "{outputs}");
    // Stopped by the signal, before the limit: the runners' 143, not a timeout.
    for job in [&step, &batch] {
        let records = job.records();
        let record = records.values().next().unwrap();
        assert_eq!(
            (record.state.as_str(), record.exit_code.as_str()),
            ("FAILED", "143:0"),
            "{records:?}"
        );
    }
}

#[test]
fn sigusr1_drains_the_runner_as_batch_shell_and_as_srun_step() {
    let Some(cluster) = cluster() else { return };
    let farm = Farm::new(cluster, "");
    farm.publish_lines(&(1..=10).map(|i| format!("d{i}")).collect::<Vec<_>>());
    let job = farm.submit(
        "drain",
        &["--array=1-2", "--cpus-per-task=1"],
        r#"command=(@DDMQ@ work -j 2 @ROOT@ q -- sh -c 'echo "$1" >> @DIR@/started; while [ ! -e @DIR@/go ]; do sleep 0.1; done; echo "$1" >> @DIR@/finished' sh {})
if [ "$SLURM_ARRAY_TASK_ID" = 1 ]; then
    exec "${command[@]}"
else
    srun --output="@DIR@/drain-step-%A_%a.%t.out" "${command[@]}"
fi"#,
    );
    wait_for_lines(&farm.path("started"), 4);
    // To the batch shell (the runner) of task 1; to every process of task 2's step (its
    // commands too, which ignore it), as `--signal=USR1@N` would.
    job.scancel(Some(1), &["--batch", "--signal=USR1"]);
    job.scancel(Some(2), &["--signal=USR1"]);
    let output_of = |t: u32| {
        let name = if t == 1 {
            format!("drain-{}_1.out", job.id)
        } else {
            format!("drain-step-{}_2.0.out", job.id)
        };
        farm.read(&name)
    };
    for t in 1..=2 {
        wait_until_within("the runner says it drains", LONG, || {
            output_of(t)
                .contains("SIGUSR1: draining: taking no more tasks, letting 2 running finish")
        });
    }
    fs::write(farm.path("go"), "").unwrap();
    job.wait_until_ended(LONG);
    let outputs = format!("{}{}", output_of(1), output_of(2));
    let mut started = lines(Path::new(&farm.path("started")));
    let mut finished = lines(Path::new(&farm.path("finished")));
    started.sort();
    finished.sort();
    assert_eq!(started.len(), 4, "nothing taken after the drain: {outputs}");
    assert_eq!(finished, started, "the running tasks finished: {outputs}");
    assert_eq!(farm.waiting().len(), 6, "{outputs}");
    assert!(farm.in_work().is_empty());
    assert!(farm.requeue_counters().iter().all(|&c| c == 0));
    let want = "drained on SIGUSR1: 2 done, 0 failed (0 requeued, 0 dead, 0 dropped), 0 given back";
    assert_eq!(outputs.matches(want).count(), 2, "{outputs}");
    let records = job.records();
    for r in records.values() {
        assert_eq!(
            (r.state.as_str(), r.exit_code.as_str()),
            ("COMPLETED", "0:0"),
            "{records:?}"
        );
    }
}

#[test]
fn drain_before_stops_taking_tasks_that_long_before_the_time_limit() {
    let Some(cluster) = cluster() else { return };
    let farm = Farm::new(cluster, "");
    // A minute of tasks, more than the 10 s the runner may take them for.
    farm.publish_lines(&(1..=200).map(|i| format!("b{i}")).collect::<Vec<_>>());
    let job = farm.submit(
        "before",
        &["--time=1"],
        r#"exec @DDMQ@ work -j 1 --drain-before 50 @ROOT@ q -- sh -c 'sleep 0.3; echo "$1" >> @DIR@/finished' sh {}"#,
    );
    job.wait_until_ended(LONG);
    let out = farm.read(&format!("before-{}_4294967294.out", job.id));
    let finished = lines(Path::new(&farm.path("finished"))).len();
    assert!(finished >= 1, "it took tasks before the drain: {out}");
    assert_eq!(farm.waiting().len(), 200 - finished, "{out}");
    assert!(farm.in_work().is_empty(), "{out}");
    assert!(
        out.contains("(--drain-before 50): draining: taking no more tasks, letting "),
        "{out}"
    );
    let want = format!(
        "drained before the time limit: {finished} done, 0 failed (0 requeued, 0 dead, 0 dropped), 0 given back"
    );
    assert!(out.contains(&want), "{out}");
    let records = job.records();
    let record = records.values().next().unwrap();
    assert_eq!(
        (record.state.as_str(), record.exit_code.as_str()),
        ("COMPLETED", "0:0"),
        "{records:?}"
    );
}

#[test]
fn a_grace_longer_than_kill_wait_is_fitted_below_it_so_everything_still_comes_back() {
    let Some(cluster) = cluster() else { return };
    let farm = Farm::new(cluster, "");
    farm.publish_lines(&(1..=4).map(|i| format!("g{i}")).collect::<Vec<_>>());
    let before = farm.waiting();
    // Commands that ignore SIGTERM (sleep inherits the ignoring): only a SIGKILL ends them.
    // Past KillWait (5 s) Slurm would SIGKILL the runner too, leaving its messages in work/
    // for their whole lease; the runner fits its 30 s grace below KillWait instead.
    let job = farm.submit(
        "grace",
        &[],
        r#"exec @DDMQ@ work -j 2 --grace 30 @ROOT@ q -- sh -c 'trap "" TERM; echo "$DDMQ_ID" >> @DIR@/started; sleep 60'"#,
    );
    wait_for_lines(&farm.path("started"), 2);
    job.scancel(None, &[]);
    job.wait_until_ended(LONG);
    let out = farm.read(&format!("grace-{}_4294967294.out", job.id));
    assert!(
        farm.in_work().is_empty(),
        "given back, not left to their leases: {out}"
    );
    assert_eq!(farm.waiting(), before, "{out}");
    assert!(farm.requeue_counters().iter().all(|&c| c == 0));
    assert!(
        out.contains("--grace 30.0 s is not below Slurm's KillWait (5 s), after which Slurm SIGKILLs the runner and its commands: using a grace of 3.0 s"),
        "{out}"
    );
    assert!(out.contains("SIGKILL in 3.0 s"), "{out}");
    assert!(
        out.contains(
            "stopped by SIGTERM: 0 done, 0 failed (0 requeued, 0 dead, 0 dropped), 2 given back"
        ),
        "{out}"
    );
}
