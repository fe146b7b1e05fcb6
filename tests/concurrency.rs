//! Many processes on one queue: publishers and consumers are this test binary re-executed as
//! workers (see `worker_entry`), plus the Python original publishing at the same time. Checks
//! that every message is acknowledged exactly once, unmangled, with no error surfaced to any worker.

mod support;

use ddmq::engine::message::to_python_json;
use ddmq::engine::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::*;

/// Gives up a worker that has not finished by then (a hang is reported, not waited out).
const WORKER_DEADLINE: Duration = Duration::from_secs(300);

/// One run: a root with queue `q`, and a directory for start/done markers and worker reports.
struct Run {
    _dir: tempfile::TempDir,
    root: PathBuf,
    coord: PathBuf,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let coord = dir.path().join("coord");
        std::fs::create_dir(&coord).unwrap();
        let b = Broker::open_or_init(&root).unwrap();
        b.create_queue("q").unwrap();
        Run {
            _dir: dir,
            root,
            coord,
        }
    }

    /// Starts this test binary as a worker with `role` ("publish" or "consume") and parameters.
    fn spawn(&self, id: &str, role: &str, params: &[(&str, String)]) -> Child {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "worker_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("DDMQ_TEST_WORKER", role)
        .env("DDMQ_TEST_ID", id)
        .env("DDMQ_TEST_ROOT", &self.root)
        .env("DDMQ_TEST_COORD", &self.coord)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        for (k, v) in params {
            c.env(k, v);
        }
        c.spawn().expect("spawn worker")
    }

    fn go(&self) {
        std::fs::write(self.coord.join("go"), "").unwrap();
    }

    /// Every report line of every worker: (kind, body).
    fn reports(&self) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for name in entries(&self.coord) {
            let Some(id) = name.strip_prefix("report-") else {
                continue;
            };
            for line in std::fs::read_to_string(self.coord.join(&name))
                .unwrap()
                .lines()
            {
                let (kind, rest) = line.split_once(' ').unwrap_or((line, "null"));
                out.push((
                    id.to_string(),
                    kind.to_string(),
                    serde_json::from_str(rest).unwrap_or(Value::String(rest.to_string())),
                ));
            }
        }
        out
    }
}

fn wait_all(children: Vec<(String, Child)>) {
    for (id, c) in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker {id} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ------------------------------------------------------------------ the worker side

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("worker needs {name}"))
}

struct Report(std::fs::File);

impl Report {
    fn line(&mut self, kind: &str, v: &Value) {
        writeln!(self.0, "{kind} {}", to_python_json(v)).unwrap();
    }
}

fn wait_for_go(coord: &Path) {
    let start = Instant::now();
    while !coord.join("go").exists() {
        assert!(start.elapsed() < WORKER_DEADLINE, "never started");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn publishers_done(coord: &Path, publishers: usize) -> bool {
    entries(coord)
        .iter()
        .filter(|n| n.starts_with("done-"))
        .count()
        >= publishers
}

fn publisher(root: &Path, coord: &Path, id: &str, report: &mut Report) {
    let count: usize = env("DDMQ_TEST_COUNT").parse().unwrap();
    let b = Broker::open(root).unwrap();
    let q = b.queue("q").unwrap();
    wait_for_go(coord);
    for i in 0..count {
        let body = json!(format!("{id}-{i}"));
        let opts = PublishOptions {
            priority: Some([999, 5, 999, 0][i % 4]),
            clean: i % 50 == 0,
            ..Default::default()
        };
        match q.publish(body.clone(), &opts) {
            Ok(_) => report.line("published", &body),
            Err(e) => report.line("error", &json!(format!("publish: {e}"))),
        }
    }
    std::fs::write(coord.join(format!("done-{id}")), "").unwrap();
}

fn consumer(root: &Path, coord: &Path, report: &mut Report) {
    let batch: usize = env("DDMQ_TEST_BATCH").parse().unwrap();
    let publishers: usize = env("DDMQ_TEST_PUBLISHERS").parse().unwrap();
    let b = Broker::open(root).unwrap();
    let q = b.queue("q").unwrap();
    wait_for_go(coord);
    let start = Instant::now();
    loop {
        if start.elapsed() > WORKER_DEADLINE {
            report.line(
                "error",
                &json!("deadline passed with the queue not drained"),
            );
            return;
        }
        // Read before consuming: if they were done then, an empty result means drained.
        let done = publishers_done(coord, publishers);
        let got = match q.consume(batch, &ConsumeOptions { clean: true }) {
            Ok(got) => got,
            Err(e) => {
                report.line("error", &json!(format!("consume: {e}")));
                continue;
            }
        };
        if got.is_empty() {
            if done && q.waiting().map(|w| w.is_empty()).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for d in got {
            let body = d.message.message.clone();
            // Now and then a message is handed back for someone else to do (nack, requeued).
            let unlucky = d.message.requeue.is_requeue()
                && d.message.requeue_counter == 0
                && d.message.id.as_bytes()[31] % 16 == 0;
            if unlucky {
                match q.nack(&d.work_name.to_string(), false) {
                    Ok(RequeueOutcome::Requeued(_)) => report.line("nacked", &body),
                    Ok(other) => report.line("error", &json!(format!("nack of {body}: {other:?}"))),
                    Err(e) => report.line("error", &json!(format!("nack of {body}: {e}"))),
                }
                continue;
            }
            match q.ack(&d.work_name.to_string()) {
                // "acked_early": while some publisher was still at work (shows the run really overlapped).
                Ok(AckOutcome::Acked(_)) => {
                    report.line(if done { "acked" } else { "acked_early" }, &body)
                }
                Ok(AckOutcome::NotFound) => {
                    report.line("error", &json!(format!("ack of {body}: not found")))
                }
                Err(e) => report.line("error", &json!(format!("ack of {body}: {e}"))),
            }
        }
    }
}

/// Entry point of the worker processes; does nothing unless started by `spawn`.
#[test]
#[ignore = "worker process entry: started by the tests above with DDMQ_TEST_WORKER set"]
fn worker_entry() {
    let Ok(role) = std::env::var("DDMQ_TEST_WORKER") else {
        return;
    };
    let (root, coord, id) = (
        PathBuf::from(env("DDMQ_TEST_ROOT")),
        PathBuf::from(env("DDMQ_TEST_COORD")),
        env("DDMQ_TEST_ID"),
    );
    let mut report = Report(std::fs::File::create(coord.join(format!("report-{id}"))).unwrap());
    match role.as_str() {
        "publish" => publisher(&root, &coord, &id, &mut report),
        "consume" => consumer(&root, &coord, &mut report),
        other => panic!("unknown worker role {other}"),
    }
}

// ------------------------------------------------------------------ the runs

/// Checks the reports: each expected body acked exactly once, nothing else acked, no errors,
/// and nothing left in the queue.
fn check_exactly_once(run: &Run, expected: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let mut acked: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut nacked = 0;
    let mut early = 0;
    for (id, kind, v) in run.reports() {
        match kind.as_str() {
            "acked" | "acked_early" => {
                if kind == "acked_early" {
                    early += 1;
                }
                *acked.entry(v.as_str().unwrap().to_string()).or_default() += 1;
                *per_worker.entry(id).or_default() += 1;
            }
            "nacked" => nacked += 1,
            "published" => {}
            _ => errors.push(format!("{id}: {kind} {v}")),
        }
    }
    assert!(errors.is_empty(), "errors surfaced to workers: {errors:#?}");
    let dups: Vec<_> = acked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "acked more than once: {dups:?}");
    let acked_set: BTreeSet<String> = acked.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&acked_set).take(10).collect();
    let unexpected: Vec<_> = acked_set.difference(expected).take(10).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing {missing:?}, unexpected (mangled?) {unexpected:?}"
    );
    assert!(nacked > 0, "the run exercised requeues");
    eprintln!(
        "{} acked, {early} of them while publishers were still running, {nacked} nacked and redelivered",
        acked.len()
    );
    let q = Broker::open(&run.root).unwrap().queue("q").unwrap();
    assert_eq!(q.status(false).unwrap(), QueueStatus::default());
    assert!(message_files(&q.dir().join("work")).is_empty());
    assert!(
        entries(&q.dir().join("work")).is_empty(),
        "no claim or temporary files left: {:?}",
        entries(&q.dir().join("work"))
    );
    assert!(
        !q.dir().join("quarantine").exists(),
        "nothing was quarantined"
    );
    per_worker
}

#[test]
fn processes_publish_and_consume_every_message_exactly_once() {
    const PUBLISHERS: usize = 3;
    const PER_PUBLISHER: usize = 700;
    let run = Run::new();
    let mut children = Vec::new();
    for p in 0..PUBLISHERS {
        let id = format!("pub{p}");
        children.push((
            id.clone(),
            run.spawn(
                &id,
                "publish",
                &[("DDMQ_TEST_COUNT", PER_PUBLISHER.to_string())],
            ),
        ));
    }
    for (c, batch) in [1, 10, 1, 10].into_iter().enumerate() {
        let id = format!("con{c}");
        children.push((
            id.clone(),
            run.spawn(
                &id,
                "consume",
                &[
                    ("DDMQ_TEST_BATCH", batch.to_string()),
                    ("DDMQ_TEST_PUBLISHERS", PUBLISHERS.to_string()),
                ],
            ),
        ));
    }
    run.go();
    wait_all(children);
    let expected: BTreeSet<String> = (0..PUBLISHERS)
        .flat_map(|p| (0..PER_PUBLISHER).map(move |i| format!("pub{p}-{i}")))
        .collect();
    let published: BTreeSet<String> = run
        .reports()
        .into_iter()
        .filter(|r| r.1 == "published")
        .map(|r| r.2.as_str().unwrap().to_string())
        .collect();
    assert_eq!(published, expected);
    let per_worker = check_exactly_once(&run, &expected);
    eprintln!("acks per consumer: {per_worker:?}");
}

/// The body the Python publisher gives its i-th message (non-ASCII on purpose).
fn python_body(i: usize) -> String {
    format!("py-{i}-{}{}", "é".repeat(i % 7), "😀".repeat(i % 3))
}

#[test]
fn python_original_publishing_alongside_loses_or_mangles_nothing() {
    const PY_COUNT: usize = 400;
    const RS_COUNT: usize = 300;
    let run = Run::new();
    // The original writes each file in place (create, then write: R3), cleaning on every publish (its settings
    // cache is never refreshed, so its clean throttle never holds: B7).
    let py_code = "import time\n\
                   root, coord, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
                   b = broker(root)\n\
                   while not os.path.exists(os.path.join(coord, 'go')): time.sleep(0.002)\n\
                   for i in range(n):\n    b.publish('q', 'py-%d-' % i + '\\u00e9' * (i % 7) + '\\U0001F600' * (i % 3))\n\
                   open(os.path.join(coord, 'done-python'), 'w').close()\n";
    let python = python_command()
        .arg("-c")
        .arg(format!(
            "import sys, os\nfrom ddmq.broker import broker\n{py_code}"
        ))
        .args([
            run.root.to_str().unwrap(),
            run.coord.to_str().unwrap(),
            &PY_COUNT.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the Python publisher");
    let mut children = vec![(
        "rspub".to_string(),
        run.spawn(
            "rspub",
            "publish",
            &[("DDMQ_TEST_COUNT", RS_COUNT.to_string())],
        ),
    )];
    for (c, batch) in [1, 10, 3].into_iter().enumerate() {
        let id = format!("con{c}");
        children.push((
            id.clone(),
            run.spawn(
                &id,
                "consume",
                &[
                    ("DDMQ_TEST_BATCH", batch.to_string()),
                    ("DDMQ_TEST_PUBLISHERS", "2".to_string()),
                ],
            ),
        ));
    }
    run.go();
    let py_out = python.wait_with_output().unwrap();
    assert!(
        py_out.status.success(),
        "the Python publisher failed: {}",
        String::from_utf8_lossy(&py_out.stderr)
    );
    wait_all(children);
    let expected: BTreeSet<String> = (0..PY_COUNT)
        .map(python_body)
        .chain((0..RS_COUNT).map(|i| format!("rspub-{i}")))
        .collect();
    check_exactly_once(&run, &expected);
}
