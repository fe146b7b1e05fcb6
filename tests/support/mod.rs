//! Shared helpers of the engine, interop and concurrency tests: temporary roots, settings
//! edits, expiring in-flight messages by hand, and running the original ddmq 0.9.10 (Python).
#![allow(dead_code)] // each test binary uses its own subset

use ddmq::engine::{Broker, Queue, WorkName};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A fresh, initialised root with one queue `q`.
pub fn root_with_queue() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::open_or_init(dir.path()).expect("init root");
    assert!(broker.create_queue("q").expect("create queue q"));
    (dir, broker)
}

/// Replaces a queue's settings through the engine (which also drops its cached settings).
pub fn set_queue_settings(q: &Queue, yaml: &str) {
    q.write_config_text(yaml.as_bytes())
        .expect("write queue settings");
}

/// Moves every in-flight message of `q` to an expiry long past, as if its consumer had died.
/// Returns how many were moved.
pub fn expire_in_flight(q: &Queue) -> usize {
    let work = q.dir().join("work");
    let mut n = 0;
    for w in q.in_flight().expect("list work/") {
        let past = WorkName {
            expiry: 1_000_000_000,
            waiting: w.waiting.clone(),
        };
        std::fs::rename(work.join(w.to_string()), work.join(past.to_string())).expect("backdate");
        n += 1;
    }
    n
}

/// Names of the entries of a directory, sorted (for assertions on what is on disk).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Entries that the original 0.9.10 would take for messages (`*.ddmq*`).
pub fn message_files(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| n.contains(".ddmq"))
        .collect()
}

/// Sets a file's modification time to `secs_ago` seconds in the past.
pub fn age_file(path: &Path, secs_ago: u64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open to age");
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .expect("set mtime");
}

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter that has ddmq 0.9.10 and PyYAML 5.3.1: `$DDMQ_PYTHON`, set by
/// scripts/test, or else the venv that scripts/python-env makes (under target/, with a lock,
/// so test binaries running at once build it once). Never skips: no Python is a failure.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(p) = std::env::var_os("DDMQ_PYTHON").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let out = Command::new(repo_dir().join("scripts/python-env"))
            .output()
            .unwrap_or_else(|e| panic!("DDMQ_PYTHON is unset and scripts/python-env could not run: {e}"));
        assert!(
            out.status.success(),
            "DDMQ_PYTHON is unset and scripts/python-env failed to make the ddmq 0.9.10 venv \
             (run scripts/test, or set DDMQ_PYTHON to a python with ddmq==0.9.10 and PyYAML==5.3.1):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A Command running the original's Python with warnings silenced (PyYAML 5 warns on every load).
pub fn python_command() -> Command {
    let mut c = Command::new(python());
    c.env("PYTHONWARNINGS", "ignore")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

/// Runs a Python snippet with `sys.argv[1:] = args`; `ddmq`, `json`, `os` and `sys` are
/// imported, `broker` is `ddmq.broker.broker`. Returns its stdout; panics with stderr on failure.
pub fn py(code: &str, args: &[&str]) -> String {
    let prelude = "import sys, os, json, ddmq\nfrom ddmq.broker import broker\n";
    let out = python_command()
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python snippet failed ({}):\n{code}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python prints UTF-8")
}

/// Like [`py`], parsing the last line of stdout as JSON.
pub fn py_json(code: &str, args: &[&str]) -> serde_json::Value {
    let out = py(code, args);
    let last = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("python printed nothing for:\n{code}"));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("python printed non-JSON ({e}): {out}"))
}

/// Runs the original's CLI through scripts/ddmq-py3; returns (exit status, stdout, stderr).
pub fn original_cli(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = python_command()
        .arg(repo_dir().join("scripts/ddmq-py3"))
        .args(args)
        .output()
        .expect("run ddmq-py3");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
