//! `ddmq work` and `ddmq top` as real processes on temporary roots: every task exactly once
//! with four slots and whole output lines, the body on stdin or in place of `{}`, failures
//! requeued up to their limit then dead-lettered, a task longer than its lease run once while
//! a cleaner and a second runner look on, stop signals giving unfinished messages back (also
//! when a command died of the stop signal before the runner got its own), SIGUSR1 draining,
//! runners SIGKILLed at random losing nothing, and `top --once --format json` against the
//! queue's real counts.

mod farm;

use farm::{Farm, lines, text, wait_output, wait_until};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_task_runs_exactly_once_with_four_slots_and_lines_never_mix() {
    let farm = Farm::new("");
    let bodies: Vec<String> = (1..=40).map(|i| format!("t{i}")).collect();
    farm.publish_lines(&bodies);
    let runs = farm.file("runs");
    let running = farm.file("running");
    fs::create_dir(&running).unwrap();
    let most = farm.file("most");
    // Each task marks itself running, notes how many run, and writes its line in two halves
    // with a pause between: lines mix unless the runner passes whole lines.
    let script = r#"touch "$2/$1"; ls "$2" | wc -l >> "$3"; printf 'begin-%s-' "$1"; sleep 0.02; printf 'end\n'; echo "$1" >> "$4"; rm "$2/$1""#;
    let out = farm
        .work(
            &["-j", "4", "--tag"],
            &[
                "sh",
                "-c",
                script,
                "sh",
                "{}",
                running.to_str().unwrap(),
                most.to_str().unwrap(),
                runs.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ran = lines(&runs);
    ran.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(ran, want, "every task exactly once");
    let stdout = text(&out.stdout);
    let shown: BTreeSet<String> = stdout
        .lines()
        .map(|line| {
            let (id, rest) = line.split_once('\t').expect("a tagged line");
            assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{line:?}"
            );
            let body = rest
                .strip_prefix("begin-")
                .and_then(|r| r.strip_suffix("-end"))
                .unwrap_or_else(|| panic!("a mixed line: {line:?}"));
            body.to_string()
        })
        .collect();
    assert_eq!(shown.len(), 40, "{stdout}");
    let counts: Vec<usize> = lines(&most)
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let max = counts.iter().copied().max().unwrap();
    assert!(max <= 4, "at most 4 at once, saw {max}");
    assert!(max >= 2, "several at once, saw {max}");
    assert!(farm.waiting().is_empty() && farm.in_work().is_empty());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("40 done, 0 failed"), "{stderr}");
}

#[test]
fn default_slots_are_the_cpus_of_the_affinity_mask() {
    let farm = Farm::new("");
    farm.publish_lines(&(1..=6).map(|i| format!("a{i}")).collect::<Vec<_>>());
    let running = farm.file("running");
    fs::create_dir(&running).unwrap();
    let most = farm.file("most");
    let script = r#"touch "$2/$1"; ls "$2" | wc -l >> "$3"; sleep 0.05; rm "$2/$1""#;
    // Pinned to one CPU (as Slurm or taskset would), the runner runs one task at a time.
    let mut c = Command::new("taskset");
    c.args(["-c", "0"])
        .arg(env!("CARGO_BIN_EXE_ddmq"))
        .args([
            "work",
            &farm.root(),
            "q",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            "{}",
        ])
        .arg(&running)
        .arg(&most)
        .stdin(Stdio::null());
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let counts: Vec<String> = lines(&most).iter().map(|l| l.trim().to_string()).collect();
    assert_eq!(counts, vec!["1"; 6]);
}

#[test]
fn body_is_stdin_without_placeholder_never_a_shell_and_env_names_the_message() {
    let farm = Farm::new("");
    let body = "two words; $(touch pwned) 'quoted' \"dq\" \\ end";
    farm.publish(body, &[]);
    let got = farm.file("stdin");
    let env = farm.file("env");
    let script = r#"cat > "$1"; env | grep '^DDMQ_' | sort > "$2""#;
    let out = farm
        .work(
            &["-j", "1"],
            &[
                "sh",
                "-c",
                script,
                "sh",
                got.to_str().unwrap(),
                env.to_str().unwrap(),
            ],
        )
        .current_dir(farm.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read_to_string(&got).unwrap(), body);
    let env = fs::read_to_string(&env).unwrap();
    let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("DDMQ_ROOT"), Some(&farm.root().as_str()), "{env}");
    assert_eq!(vars.get("DDMQ_QUEUE"), Some(&"q"));
    assert_eq!(vars.get("DDMQ_REQUEUE_COUNTER"), Some(&"0"));
    assert_eq!(vars.get("DDMQ_ID").map(|id| id.len()), Some(32), "{env}");

    // With `{}`, the body is one argument as it is, and stdin is empty.
    farm.publish(body, &[]);
    let out = farm
        .work(
            &[],
            &["sh", "-c", r#"printf '%s|' "$1"; cat; echo"#, "sh", "{}"],
        )
        .current_dir(farm.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{body}|\n"));
    assert!(
        !farm.dir.path().join("pwned").exists(),
        "a body was run by a shell"
    );
}

#[test]
fn failing_tasks_are_requeued_up_to_their_limit_then_dead_lettered_and_the_exit_says_so() {
    let farm = Farm::new("dead_letter: true\n");
    farm.publish("bad", &["-l", "2"]);
    farm.publish("good", &[]);
    let log = farm.file("log");
    let joblog = farm.file("joblog");
    let script = r#"echo "$1 $DDMQ_REQUEUE_COUNTER" >> "$2"; test "$1" = good"#;
    let out = farm
        .work(
            &["-j", "2", "--joblog", joblog.to_str().unwrap()],
            &["sh", "-c", script, "sh", "{}", log.to_str().unwrap()],
        )
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let mut runs = lines(&log);
    runs.sort();
    assert_eq!(runs, ["bad 0", "bad 1", "bad 2", "good 0"]);
    assert!(
        stderr.contains("1 done, 3 failed (2 requeued, 1 dead, 0 dropped)"),
        "{stderr}"
    );
    assert!(farm.waiting().is_empty() && farm.in_work().is_empty());
    assert_eq!(farm.dead().len(), 1);
    let dead: Value =
        serde_json::from_slice(&fs::read(farm.q().join("dead").join(&farm.dead()[0])).unwrap())
            .unwrap();
    assert_eq!(dead["message"], "bad");
    assert_eq!(dead["requeue_counter"], 2);

    // The joblog, as GNU parallel writes it: a header, then one row per task.
    let rows = lines(&joblog);
    assert_eq!(
        rows[0],
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    );
    assert_eq!(rows.len(), 5, "{rows:?}");
    let exits: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split('\t').nth(6).unwrap())
        .collect();
    assert_eq!(exits.iter().filter(|e| **e == "1").count(), 3, "{rows:?}");
    assert_eq!(exits.iter().filter(|e| **e == "0").count(), 1, "{rows:?}");
}

#[test]
fn a_missing_command_is_a_usage_error_and_takes_nothing() {
    let farm = Farm::new("");
    farm.publish("x", &[]);
    let out = farm
        .work(&[], &["no-such-command-ddmq-test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(farm.waiting().len(), 1);
    assert!(farm.in_work().is_empty());
}

#[test]
fn a_task_longer_than_its_lease_runs_once_while_a_cleaner_runs_and_a_second_runner_waits() {
    let farm = Farm::new("message_timeout: 3\n");
    farm.publish("long", &[]);
    let log = farm.file("log");
    let script = r#"echo "$1" >> "$2"; sleep 7"#;
    let command = ["sh", "-c", script, "sh", "{}", log.to_str().unwrap()];
    let first = farm
        .work(&["-j", "1"], &command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the task started", || lines(&log).len() == 1);
    let second = farm
        .work(&["-j", "1", "--wait", "9"], &command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A cleaner that requeues whatever expired, as often as it can, while the task runs.
    let root = farm.root();
    let mut first = Some(first);
    let mut first_out = None;
    while first_out.is_none() {
        farm.ok(&["clean", "-s", &root, "q"]);
        let child = first.as_mut().unwrap();
        if child.try_wait().unwrap().is_some() {
            first_out = Some(wait_output(first.take().unwrap()));
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let first_out = first_out.unwrap();
    assert!(first_out.status.success(), "{}", text(&first_out.stderr));
    let second_out = wait_output(second);
    assert!(second_out.status.success(), "{}", text(&second_out.stderr));
    assert_eq!(lines(&log), ["long"], "the task ran once");
    assert!(
        !text(&first_out.stderr).contains("lease was lost"),
        "{}",
        text(&first_out.stderr)
    );
    assert!(farm.waiting().is_empty() && farm.in_work().is_empty());
}

/// Starts a runner on 6 messages with 3 slots, waits until 3 tasks run, sends SIGTERM; returns
/// the runner's output and the names waiting before it started.
fn stop_a_runner(farm: &Farm, script: &str, grace: &str) -> (Output, Vec<String>) {
    for i in 1..=6 {
        farm.publish(&format!("m{i}"), &[]);
    }
    let before = farm.waiting();
    let log = farm.file("log");
    let _ = fs::remove_file(&log);
    let runner = farm
        .work(
            &["-j", "3", "--grace", grace],
            &["sh", "-c", script, "sh", log.to_str().unwrap()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("three tasks run", || {
        lines(&log).iter().filter(|l| *l == "started").count() == 3
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    (wait_output(runner), before)
}

#[test]
fn sigterm_passes_the_signal_on_and_gives_every_unfinished_message_back_at_its_place() {
    let farm = Farm::new("");
    // Tasks that end on SIGTERM, saying so.
    let script =
        r#"trap 'echo got-TERM >> "$1"; exit 3' TERM; echo started >> "$1"; sleep 60 & wait"#;
    let (out, before) = stop_a_runner(&farm, script, "30");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 15), "{stderr}");
    // Right after the runner exits: every message waiting again under its old name (its
    // place in the queue), nothing in flight, no requeue counted.
    assert_eq!(farm.waiting(), before, "{stderr}");
    assert!(farm.in_work().is_empty());
    for name in &before {
        let m: Value = serde_json::from_slice(&fs::read(farm.q().join(name)).unwrap()).unwrap();
        assert_eq!(m["requeue_counter"], 0);
    }
    let log = lines(&farm.file("log"));
    assert_eq!(
        log.iter().filter(|l| *l == "got-TERM").count(),
        3,
        "{log:?}"
    );
    assert!(
        stderr.contains("0 done, 0 failed (0 requeued, 0 dead, 0 dropped), 3 given back"),
        "{stderr}"
    );

    // Tasks that ignore SIGTERM are SIGKILLed after the grace period: given back all the same.
    let farm = Farm::new("");
    let script = r#"trap '' TERM; echo started >> "$1"; sleep 60"#;
    let (out, before) = stop_a_runner(&farm, script, "0.3");
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
    assert_eq!(farm.waiting(), before);
    assert!(farm.in_work().is_empty());
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

#[test]
fn a_command_killed_by_the_stop_signal_before_the_runner_gets_its_own_is_given_back_uncounted() {
    // What a scheduler does: SIGTERM to every process, one of the commands first. The runner
    // must not count that death as a failure, nor start a new task in the freed slot.
    let farm = Farm::new("");
    for i in 1..=6 {
        farm.publish(&format!("m{i}"), &[]);
    }
    let before = farm.waiting();
    let log = farm.file("log");
    let runner = farm
        .work(
            &["-j", "3"],
            &[
                "sh",
                "-c",
                r#"echo "$$" >> "$1"; sleep 60"#,
                "sh",
                log.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("three tasks run", || lines(&log).len() == 3);
    // Each command leads its own process group: the whole task dies, as under a scheduler.
    let first: i32 = lines(&log)[0].parse().unwrap();
    signal(-first, nix::sys::signal::Signal::SIGTERM);
    // Well within the runner's wait for a stop signal (1 s), well beyond a reap of the task.
    std::thread::sleep(Duration::from_millis(200));
    signal(runner.id() as i32, nix::sys::signal::Signal::SIGTERM);
    let out = wait_output(runner);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 15), "{stderr}");
    assert_eq!(farm.waiting(), before, "{stderr}");
    assert!(farm.in_work().is_empty());
    for name in &before {
        let m: Value = serde_json::from_slice(&fs::read(farm.q().join(name)).unwrap()).unwrap();
        assert_eq!(m["requeue_counter"], 0, "{stderr}");
    }
    assert_eq!(
        lines(&log).len(),
        3,
        "no task started after the death: {stderr}"
    );
    assert!(
        stderr.contains(
            "stopped by SIGTERM: 0 done, 0 failed (0 requeued, 0 dead, 0 dropped), 3 given back"
        ),
        "{stderr}"
    );
}

#[test]
fn a_command_killed_by_a_signal_with_no_stop_after_it_fails() {
    let farm = Farm::new("");
    farm.publish("crash", &["--no-requeue"]);
    let out = farm
        .work(&[], &["sh", "-c", "kill -KILL $$"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed (killed by SIGKILL): dropped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ddmq work: 0 done, 1 failed (0 requeued, 0 dead, 1 dropped)"),
        "{stderr}"
    );
    assert!(farm.waiting().is_empty() && farm.in_work().is_empty());
}

#[test]
fn sigusr1_drains_takes_nothing_more_lets_the_running_finish_and_exits_0() {
    let farm = Farm::new("");
    for i in 1..=5 {
        farm.publish(&format!("d{i}"), &[]);
    }
    let started = farm.file("started");
    let go = farm.file("go");
    let stderr_file = farm.file("stderr");
    let script = r#"echo "$1" >> "$2"; while [ ! -e "$3" ]; do sleep 0.02; done"#;
    let runner = farm
        .work(
            &["-j", "2"],
            &[
                "sh",
                "-c",
                script,
                "sh",
                "{}",
                started.to_str().unwrap(),
                go.to_str().unwrap(),
            ],
        )
        .stderr(fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    wait_until("two tasks run", || lines(&started).len() == 2);
    signal(runner.id() as i32, nix::sys::signal::Signal::SIGUSR1);
    wait_until("the runner drains", || {
        fs::read_to_string(&stderr_file)
            .unwrap_or_default()
            .contains("SIGUSR1: draining: taking no more tasks, letting 2 running finish")
    });
    fs::write(&go, "").unwrap();
    let out = wait_output(runner);
    let stderr = fs::read_to_string(&stderr_file).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(lines(&started).len(), 2, "nothing taken after the drain");
    assert_eq!(farm.waiting().len(), 3);
    assert!(farm.in_work().is_empty());
    assert!(
        stderr.contains(
            "drained on SIGUSR1: 2 done, 0 failed (0 requeued, 0 dead, 0 dropped), 0 given back"
        ),
        "{stderr}"
    );
}

#[test]
fn drain_before_outside_a_slurm_job_is_a_usage_error_and_takes_nothing() {
    let farm = Farm::new("");
    farm.publish("x", &[]);
    let out = farm
        .work(&["--drain-before", "60"], &["true"])
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--drain-before needs a Slurm job"),
        "{stderr}"
    );
    assert_eq!(farm.waiting().len(), 1);
    assert!(farm.in_work().is_empty());
}

#[test]
fn runners_sigkilled_at_random_lose_no_task() {
    let farm = Farm::new("message_timeout: 1\n");
    let bodies: Vec<String> = (1..=30).map(|i| format!("k{i}")).collect();
    farm.publish_lines(&bodies);
    let done = farm.file("done");
    let script = r#"sleep 0.05; echo "$1" >> "$2""#;
    let command = ["sh", "-c", script, "sh", "{}", done.to_str().unwrap()];
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    for _ in 0..4 {
        let mut runner = farm
            .work(&["-j", "3"], &command)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 150));
        runner.kill().unwrap(); // SIGKILL: no chance to give anything back
        runner.wait().unwrap();
    }
    // A last runner finishes the queue: it waits long enough for the killed runners' leases to
    // run out (1 s, counted in whole seconds) and requeues them itself.
    let out = farm
        .work(&["-j", "3", "--wait", "4"], &command)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ran: BTreeSet<String> = lines(&done).into_iter().collect();
    let want: BTreeSet<String> = bodies.into_iter().collect();
    assert_eq!(ran, want, "every task ran at least once");
    assert_eq!(
        (farm.waiting(), farm.in_work()),
        (vec![], vec![]),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn top_once_json_agrees_with_the_queues_real_counts() {
    let farm = Farm::new("dead_letter: true\n");
    let root = farm.root();
    farm.ok(&["create", &root, "other"]);
    // One dead letter: a message allowed one requeue, nacked twice.
    farm.publish("doomed", &["-l", "1"]);
    for _ in 0..2 {
        let got: Value = serde_json::from_str(farm.ok(&["consume", &root, "q"]).trim()).unwrap();
        let name = got["filename"].as_str().unwrap().to_string();
        farm.ok(&["nack", &root, "q", &name]);
    }
    for i in 0..5 {
        farm.publish(&format!("w{i}"), &[]);
    }
    farm.ok(&["consume", "-n", "2", &root, "q"]);
    let out = farm.ok(&[
        "top",
        "--once",
        "--interval",
        "0.05",
        "--format",
        "json",
        &root,
    ]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let queues = report["queues"].as_array().unwrap();
    let row = |name: &str| {
        queues
            .iter()
            .find(|q| q["queue"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
    };
    let q = row("q");
    assert_eq!(q["waiting"], farm.waiting().len());
    assert_eq!(q["in_flight"], farm.in_work().len());
    assert_eq!(q["dead"], farm.dead().len());
    assert_eq!(
        (
            q["waiting"].as_u64(),
            q["in_flight"].as_u64(),
            q["dead"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    // Nothing moved between the two looks.
    assert_eq!(q["published_per_s"], 0.0);
    assert_eq!(q["consumed_per_s"], 0.0);
    assert!(q["oldest_waiting_age"].as_f64().unwrap() >= 0.0, "{out}");
    let other = row("other");
    assert_eq!(
        (
            other["waiting"].as_u64(),
            other["in_flight"].as_u64(),
            other["dead"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(report["interval"].as_f64().unwrap() > 0.0);

    // Only the queues asked for.
    let out = farm.ok(&[
        "top",
        "--once",
        "--interval",
        "0.05",
        "--format",
        "json",
        &root,
        "other",
    ]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["queues"].as_array().unwrap().len(), 1);
}

// ------------------------------------------------------------------ promises of doc/WORK.md

/// Whether process `pid` is gone (or a zombie, which runs nothing).
fn is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Sends `sig` to `pid`, if it is still there.
fn signal_if_alive(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// A runner whose stderr goes to a file the test reads as it goes. If the test ends first
/// (a failure), the runner and the process group of each of its tasks are SIGKILLed, so that
/// nothing it started outlives the test.
struct Runner {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Runner {
    fn spawn(farm: &Farm, opts: &[&str], command: &[&str]) -> Runner {
        let stderr = farm.file("runner-stderr");
        let child = farm
            .work(opts, command)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Runner {
            child: Some(child),
            stderr,
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        signal_if_alive(self.child.as_ref().unwrap().id(), sig);
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn has_ended(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_some()
    }

    /// Waits for the runner to end; its exit code (None: killed by a signal).
    fn exit_code(mut self) -> Option<i32> {
        self.child.take().unwrap().wait().unwrap().code()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        for task in children.unwrap_or_default().split_whitespace() {
            // Each task leads its own process group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(task.parse().unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn a_stop_signal_reaches_every_process_of_each_command_group() {
    let farm = Farm::new("");
    for i in 1..=2 {
        farm.publish(&format!("m{i}"), &[]);
    }
    let pids = farm.file("pids");
    // sh itself dies of the TERM; only a signal to the whole group reaches the sleep it
    // started in the background (a signal to sh alone leaves the sleep running).
    let script = r#"sleep 1000 & echo $! >> "$1"; wait"#;
    let runner = Runner::spawn(
        &farm,
        &["-j", "2", "--grace", "30"],
        &["sh", "-c", script, "sh", pids.to_str().unwrap()],
    );
    wait_until("both tasks started their sleep", || lines(&pids).len() == 2);
    runner.signal(nix::sys::signal::Signal::SIGTERM);
    let stderr = runner.stderr.clone();
    let code = runner.exit_code();
    let grandchildren: Vec<i32> = lines(&pids).iter().map(|l| l.parse().unwrap()).collect();
    let gone = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all_gone = grandchildren.iter().all(|&p| is_gone(p));
            if all_gone || Instant::now() > deadline {
                break all_gone;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for &p in &grandchildren {
        signal_if_alive(p as u32, nix::sys::signal::Signal::SIGKILL);
    }
    assert!(
        gone,
        "a command's background process outlived the stop signal"
    );
    assert_eq!(
        code,
        Some(128 + 15),
        "{}",
        fs::read_to_string(stderr).unwrap()
    );
    assert_eq!(farm.waiting().len(), 2, "both given back");
}

#[test]
fn a_second_stop_signal_skips_the_rest_of_the_grace_period() {
    let farm = Farm::new("");
    farm.publish("stubborn", &[]);
    let log = farm.file("log");
    let script = r#"trap '' TERM; echo started >> "$1"; while :; do sleep 1; done"#;
    let mut runner = Runner::spawn(
        &farm,
        &["--grace", "3600"],
        &["sh", "-c", script, "sh", log.to_str().unwrap()],
    );
    wait_until("the task started", || lines(&log).len() == 1);
    runner.signal(nix::sys::signal::Signal::SIGTERM);
    // The second signal must come after the runner took the first (two at once are one).
    wait_until("the runner took the first signal", || {
        runner.stderr().contains("taking no more tasks")
    });
    runner.signal(nix::sys::signal::Signal::SIGTERM);
    // An hour of grace: only the second signal can end the runner within the minute.
    wait_until("the runner ended after the second signal", || {
        runner.has_ended()
    });
    assert_eq!(runner.exit_code(), Some(128 + 15));
    assert_eq!(farm.waiting().len(), 1, "given back");
    assert!(farm.in_work().is_empty());
}

#[test]
fn sigint_stops_the_runner_with_exit_status_130_and_gives_the_messages_back() {
    let farm = Farm::new("");
    farm.publish("m1", &[]);
    let before = farm.waiting();
    let log = farm.file("log");
    let runner = Runner::spawn(
        &farm,
        &["--grace", "30"],
        &[
            "sh",
            "-c",
            r#"echo started >> "$1"; exec sleep 1000"#,
            "sh",
            log.to_str().unwrap(),
        ],
    );
    wait_until("the task started", || lines(&log).len() == 1);
    runner.signal(nix::sys::signal::Signal::SIGINT);
    let stderr = runner.stderr.clone();
    let code = runner.exit_code();
    let stderr = fs::read_to_string(stderr).unwrap();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("SIGINT: taking no more tasks"), "{stderr}");
    assert_eq!(farm.waiting(), before, "given back at its place");
}

#[test]
fn wait_inf_serves_messages_published_later_until_stopped() {
    let farm = Farm::new("");
    let done = farm.file("done");
    let mut runner = Runner::spawn(
        &farm,
        &["--wait", "inf", "--poll-ms", "10"],
        &[
            "sh",
            "-c",
            r#"echo "$1" >> "$2""#,
            "sh",
            "{}",
            done.to_str().unwrap(),
        ],
    );
    for (i, body) in ["later", "much later"].iter().enumerate() {
        farm.publish(body, &[]);
        wait_until("the task ran", || lines(&done).len() == i + 1);
        assert!(
            !runner.has_ended(),
            "the runner stopped with an empty queue: {}",
            runner.stderr()
        );
    }
    runner.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(runner.exit_code(), Some(128 + 15));
    assert_eq!(lines(&done), ["later", "much later"]);
}

#[test]
fn each_failure_is_one_line_saying_what_became_of_the_message() {
    let farm = Farm::new("dead_letter: true\n");
    farm.publish("fails", &["-l", "1"]);
    farm.publish("killed", &["--no-requeue"]);
    let script = r#"if [ "$1" = killed ]; then kill -9 $$; fi; exit 3"#;
    let out = farm
        .work(&["-j", "1"], &["sh", "-c", script, "sh", "{}"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let failures: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ddmq work: message "))
        .map(|l| {
            // The id is 32 hex digits; the rest is what the doc shows.
            let (id, rest) = l.split_once(' ').unwrap();
            assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{l}"
            );
            rest.to_string()
        })
        .collect();
    let mut want = vec![
        "failed (exit status 3): requeued".to_string(),
        "failed (exit status 3): requeue limit reached: moved to dead/".to_string(),
        "failed (killed by SIGKILL): dropped (published without requeue)".to_string(),
    ];
    let mut got = failures.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{stderr}");
    assert_eq!(farm.dead().len(), 1);
}

#[test]
fn a_lease_lost_while_the_runner_was_stopped_is_reported() {
    let farm = Farm::new("message_timeout: 1\n");
    farm.publish("slow", &[]);
    let go = farm.file("go");
    let log = farm.file("log");
    let script = r#"echo started >> "$2"; while [ ! -e "$1" ]; do sleep 0.05; done"#;
    let mut runner = Runner::spawn(
        &farm,
        &["-j", "1"],
        &[
            "sh",
            "-c",
            script,
            "sh",
            go.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
    );
    wait_until("the task started", || lines(&log).len() == 1);
    // Stopped (as a suspended job or a frozen VM), the runner cannot renew the lease.
    runner.signal(nix::sys::signal::Signal::SIGSTOP);
    let root = farm.root();
    wait_until("another client requeued the expired message", || {
        farm.ok(&["clean", "-s", &root, "q"]);
        farm.waiting().len() == 1
    });
    runner.signal(nix::sys::signal::Signal::SIGCONT);
    wait_until("the runner noticed", || {
        runner.stderr().contains("its lease was lost")
    });
    fs::write(&go, "").unwrap();
    wait_until("the runner ended", || runner.has_ended());
    let stderr = runner.stderr();
    assert_eq!(runner.exit_code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("it may run again") && stderr.contains("1 lost leases"),
        "{stderr}"
    );
    // The requeued copy ran too (at least once), and nothing is left.
    assert!(lines(&log).len() >= 2);
    assert!(farm.waiting().is_empty() && farm.in_work().is_empty());
}

#[test]
fn the_joblog_header_is_written_only_to_a_new_or_empty_file() {
    let farm = Farm::new("");
    let joblog = farm.file("joblog");
    let empty = farm.file("empty-joblog");
    fs::write(&empty, "").unwrap();
    for path in [&joblog, &joblog, &empty] {
        farm.publish("x", &[]);
        let out = farm
            .work(&["--joblog", path.to_str().unwrap()], &["true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let is_header = |l: &String| l.starts_with("Seq\tHost\t");
    let rows = lines(&joblog);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        is_header(&rows[0]) && !rows[1..].iter().any(is_header),
        "{rows:?}"
    );
    let rows = lines(&empty);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(is_header(&rows[0]), "{rows:?}");
}

/// A task's message stays under its `.held-` take name for its first second (a short task is
/// acked without the rename to a `work/` name); a task still running after it gets its
/// `work/` name and lease, which a cleaner respects.
#[test]
fn a_task_is_held_under_its_take_name_then_leased_once_it_outlives_a_second() {
    let farm = Farm::new("message_timeout: 30\n");
    farm.publish("short", &[]);
    farm.publish("long", &[]);
    let log = farm.file("log");
    // Each task notes the names in work/ as it starts; the long one again after 2.5 s.
    let script = r#"ls -A "$DDMQ_ROOT/$DDMQ_QUEUE/work" | sed "s/^/$1 start /" >> "$2"
        if [ "$1" = long ]; then sleep 2.5; ls -A "$DDMQ_ROOT/$DDMQ_QUEUE/work" | sed "s/^/$1 later /" >> "$2"; fi"#;
    let out = farm
        .work(
            &["-j", "1"],
            &["sh", "-c", script, "sh", "{}", log.to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = lines(&log);
    let names = |what: &str| -> Vec<String> {
        seen.iter()
            .filter_map(|l| l.strip_prefix(&format!("{what} ")))
            .map(str::to_string)
            .collect()
    };
    for task in ["short start", "long start"] {
        let at_start = names(task);
        assert!(
            at_start.len() == 1 && at_start[0].starts_with(".held-"),
            "{task}: {at_start:?}"
        );
    }
    let later = names("long later");
    assert_eq!(later.len(), 1, "{later:?}");
    let leased = ddmq::engine::WorkName::parse(&later[0]).expect("a work/ name");
    let expiry_left = leased.expiry.saturating_sub(ddmq::engine::now_secs());
    assert!((20..=31).contains(&expiry_left), "a 30 s lease: {later:?}");
    assert!(farm.waiting().is_empty() && farm.in_work().is_empty());
    assert!(
        text(&out.stderr).contains("2 done, 0 failed"),
        "{}",
        text(&out.stderr)
    );
}
