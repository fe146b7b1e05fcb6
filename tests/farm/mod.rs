//! What the task-farm tests share (tests/work.rs, tests/slurm.rs): a root `R` with queue `q` in a
//! temporary directory, driven by the `ddmq` binary, and what is on disk there.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn ddmq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddmq"));
    c.env_remove("RUST_LOG");
    c
}

/// A root `R` with queue `q` (and the settings given) in a temporary directory.
pub struct Farm {
    pub dir: tempfile::TempDir,
}

impl Farm {
    pub fn new(settings: &str) -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let farm = Farm { dir };
        farm.ok(&["create", "-f", &farm.root(), "q"]);
        if !settings.is_empty() {
            fs::write(
                farm.q().join("ddmq.yaml"),
                format!("cleaned: 0\n{settings}"),
            )
            .unwrap();
        }
        farm
    }

    pub fn root(&self) -> String {
        self.dir.path().join("R").to_string_lossy().into_owned()
    }

    pub fn q(&self) -> PathBuf {
        self.dir.path().join("R/q")
    }

    /// A file for the tasks to write to.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        ddmq().args(args).stdin(Stdio::null()).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "ddmq {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    pub fn publish(&self, body: &str, extra: &[&str]) {
        let root = self.root();
        let mut args = vec!["publish", "-s"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&root, "q", body]);
        self.ok(&args);
    }

    pub fn publish_lines(&self, bodies: &[String]) {
        let mut child = ddmq()
            .args(["publish", "--lines", "-s", &self.root(), "q", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(bodies.join("\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    /// `ddmq work ROOT q` with `opts` before ROOT and `command` after `--`.
    pub fn work(&self, opts: &[&str], command: &[&str]) -> Command {
        let mut c = ddmq();
        c.arg("work")
            .args(opts)
            .arg(self.root())
            .arg("q")
            .arg("--")
            .args(command)
            .stdin(Stdio::null());
        c
    }

    pub fn waiting(&self) -> Vec<String> {
        message_names(&self.q())
    }

    /// Everything in `work/`: leased messages, and messages under a take name (`.held-`,
    /// `.take-`) or a claim name, which 0.9.10's pattern does not show.
    pub fn in_work(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.q().join("work")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub fn dead(&self) -> Vec<String> {
        message_names(&self.q().join("dead"))
    }

    /// The requeue counters of the waiting messages.
    pub fn requeue_counters(&self) -> Vec<u64> {
        self.waiting()
            .iter()
            .map(|name| {
                let m: serde_json::Value =
                    serde_json::from_slice(&fs::read(self.q().join(name)).unwrap()).unwrap();
                m["requeue_counter"].as_u64().unwrap()
            })
            .collect()
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn message_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ddmq"))
        .collect();
    names.sort();
    names
}

pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (up to a minute: a generous bound, not a timing assertion) until `cond` holds.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(what, Duration::from_secs(60), cond);
}

/// Waits until `cond` holds, failing past `bound` (generous: not a timing assertion).
pub fn wait_until_within(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_output(child: Child) -> Output {
    child.wait_with_output().unwrap()
}
