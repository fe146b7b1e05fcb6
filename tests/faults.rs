//! Injected I/O errors, with libfiu (Debian `fiu-utils`): `fiu-run -x` preloads its POSIX
//! wrappers into the real `ddmq` binary, which then fails a chosen share of its calls with the
//! chosen errno (EIO, or ESTALE as a network filesystem answers for a name another host
//! replaced).
//!
//! Covered: `open`/`open64` (`posix/io/oc/open`), `read` (`posix/io/rw/read`), `write`
//! (`posix/io/rw/write`: message files, `ddmq.yaml`, and stdout and stderr), `rename`
//! (`posix/io/dir/rename`: every claim, give back, renewal and publish), `unlink`
//! (`posix/io/dir/unlink`: acks) and `close` (`posix/io/oc/close`: the checked close before a
//! publish is renamed into place). Not covered, because libfiu does not wrap them: `openat`,
//! `unlinkat`, `stat` and its kin, and directory listings (ddmq reads them with `getdents64`,
//! a raw system call, and libfiu wraps only `readdir`).
//!
//! The promises:
//! - `ddmq work` under 1% of failing calls runs every message, tries again after each error
//!   with a growing pause, gives back at once a message it took but could not read, and exits 0
//!   with nothing left in the queue or in `work/` (the lease is 600 s, and a runner stops as soon
//!   as the queue is empty: a message held in `work/` would still be there at the end);
//! - errors that persist stop it: it says how many in a row, exits 1, and what it did not run is
//!   still waiting in the queue;
//! - a short CLI command under faults exits 0 or 1, as doc/CLI.md lists, never panics, and no
//!   message is lost or torn;
//! - a consume whose output cannot be written, even after a whole message reached the reader,
//!   gives its messages back and exits 1 (at least once).

mod rel_support;

use rel_support::{check_body, ddmq_bin, make_body, names_in, wait_or_kill};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const EIO: i32 = libc::EIO;
const ESTALE: i32 = libc::ESTALE;

/// The failure points of the calls ddmq's file operations go through (see the module doc).
const FILE_CALLS: [&str; 6] = [
    "posix/io/oc/open",
    "posix/io/rw/read",
    "posix/io/rw/write",
    "posix/io/dir/rename",
    "posix/io/dir/unlink",
    "posix/io/oc/close",
];

/// The preload library `fiu-run -x` uses.
const FIU_POSIX_PRELOAD: &str = "/usr/lib/fiu/fiu_posix_preload.so";

/// `fiu-run`, installed (Debian's fiu-utils, through scripts/install-packages, which says so on
/// stderr) when missing: these tests are never skipped.
fn fiu_run() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let present = || {
            Command::new("fiu-run")
                .arg("true")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && Path::new(FIU_POSIX_PRELOAD).exists()
        };
        if !present() {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-packages");
            let status = Command::new(&script)
                .args(["fiu-utils"])
                .status()
                .expect("scripts/install-packages");
            assert!(status.success(), "installing fiu-utils failed: {status}");
        }
        assert!(
            present(),
            "fiu-run or {FIU_POSIX_PRELOAD} missing after installing fiu-utils"
        );
    });
    "fiu-run"
}

/// One failure point: the share of calls that fail (1.0: every call) and the errno they set.
#[derive(Clone, Copy)]
struct Fault {
    point: &'static str,
    probability: f64,
    errno: i32,
}

impl Fault {
    fn control_command(&self) -> String {
        if self.probability >= 1.0 {
            format!("enable name={},failinfo={}", self.point, self.errno)
        } else {
            format!(
                "enable_random name={},probability={},failinfo={}",
                self.point, self.probability, self.errno
            )
        }
    }
}

/// Every file call of [`FILE_CALLS`] failing with `errno` at `probability`.
fn on_file_calls(probability: f64, errno: i32) -> Vec<Fault> {
    FILE_CALLS
        .iter()
        .map(|&point| Fault {
            point,
            probability,
            errno,
        })
        .collect()
}

/// `ddmq` under `fiu-run -x` with `faults` on from its start; `control` names the FIFOs through
/// which `fiu-ctrl` can change them later (None: no remote control).
fn faulty(faults: &[Fault], control: Option<&Path>) -> Command {
    let mut c = Command::new(fiu_run());
    c.arg("-x").arg("-f");
    match control {
        Some(prefix) => c.arg(prefix),
        None => c.arg(""),
    };
    for f in faults {
        c.arg("-c").arg(f.control_command());
    }
    c.arg(ddmq_bin())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn plain() -> Command {
    let mut c = Command::new(ddmq_bin());
    c.env_remove("RUST_LOG").stdin(Stdio::null());
    c
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Neither a panic's exit status (101) nor its message, nor death by a signal.
fn assert_no_panic(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some() && out.status.code() != Some(101),
        "{what}: {} {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

struct Farm {
    dir: tempfile::TempDir,
    root: String,
}

impl Farm {
    /// A queue `q` with a 600 s lease, holding `bodies` (published without faults).
    fn new(bodies: &[String]) -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root").display().to_string();
        ok(
            "create",
            &plain().args(["create", "-f", &root, "q"]).output().unwrap(),
        );
        std::fs::write(
            Path::new(&root).join("q/ddmq.yaml"),
            "cleaned: 0\nmessage_timeout: 600\nrequeue: true\n",
        )
        .unwrap();
        let farm = Farm { dir, root };
        if !bodies.is_empty() {
            let mut lines = bodies.join("\n");
            lines.push('\n');
            let mut child = plain()
                .args(["publish", "-s", "--lines", &farm.root, "q", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(lines.as_bytes())
                .unwrap();
            ok("publish", &child.wait_with_output().unwrap());
        }
        farm
    }

    fn q(&self) -> PathBuf {
        Path::new(&self.root).join("q")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The message files waiting in the queue directory.
    fn waiting_names(&self) -> Vec<String> {
        names_in(&self.q())
            .into_iter()
            .filter(|n| n.contains(".ddmq"))
            .collect()
    }

    /// Every entry of `work/`: leases, takes, claims, anything.
    fn work_entries(&self) -> Vec<String> {
        names_in(&self.q().join("work"))
    }

    /// The bodies of the message files in `dir` (read directly, no ddmq), by file name: waiting
    /// and leased names, and in `work/` takes and claims too.
    fn bodies_in(&self, dir: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for name in names_in(dir) {
            let held = name.starts_with(".take-") || name.starts_with(".claim-");
            if !name.contains(".ddmq") && !held {
                continue;
            }
            let text = std::fs::read(dir.join(&name)).unwrap();
            let msg: Value = serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{name} is not a whole message: {e}"));
            out.insert(name, msg["message"].as_str().unwrap().to_string());
        }
        out
    }

    /// A command for `ddmq work` that appends the message body to `ran.log`, outside the faults
    /// (they are ddmq's, not the task's: the preload is not passed on).
    fn recording_command(&self, extra: &str) -> Vec<String> {
        let log = self.path("ran.log").display().to_string();
        vec![
            "env".into(),
            "-u".into(),
            "LD_PRELOAD".into(),
            "sh".into(),
            "-c".into(),
            format!("echo \"$1\" >> \"$2\"{extra}"),
            "sh".into(),
            "{}".into(),
            log,
        ]
    }

    fn ran(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("ran.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn bodies(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

/// `taking a task failed (N in a row), trying again in …` lines: the retries the runner said it
/// made (a few of them may be lost: stderr's writes fail too).
fn retries(stderr: &str) -> usize {
    stderr.matches("taking a task failed (").count()
}

/// The text of `errno` as ddmq's messages give it.
fn errno_text(errno: i32) -> &'static str {
    match errno {
        EIO => "Input/output error",
        ESTALE => "Stale file handle",
        _ => unreachable!(),
    }
}

/// 300 messages, `ddmq work -j 2`, 1% of every covered call failing with `errno`. With `-d`,
/// the engine's own tries again are logged too (an ESTALE is looked up again there, and a claim
/// that meets one counts as lost: the runner never sees most of them).
fn work_runs_everything_under(errno: i32) {
    let all = bodies(300);
    let farm = Farm::new(&all);
    let out = faulty(&on_file_calls(0.01, errno), None)
        .args(["work", "-d", "-j", "2", &farm.root, "q", "--"])
        .args(farm.recording_command(""))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_panic("ddmq work", &out);
    let ran = farm.ran();
    let distinct: BTreeSet<&String> = ran.iter().collect();
    let errors_seen = stderr.matches(errno_text(errno)).count();
    eprintln!(
        "errno {errno}: {} runs of 300 messages, {errors_seen} errors told, {} retries by the runner, {} given back after a failed start, exit {}",
        ran.len(),
        retries(&stderr),
        stderr.matches("its command could not be started").count(),
        out.status
    );
    assert!(
        errors_seen > 0,
        "no error was injected: is libfiu's preload working? {stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let missing: Vec<&String> = all.iter().filter(|b| !distinct.contains(b)).collect();
    assert!(
        missing.is_empty(),
        "{} messages never ran: {missing:?}\n{stderr}",
        missing.len()
    );
    // The lease is 600 s and the runner stops once the queue is empty: a message left in work/
    // (not given back after its read failed, or not acked) would still be there.
    assert_eq!(farm.waiting_names(), Vec::<String>::new(), "{stderr}");
    assert_eq!(farm.work_entries(), Vec::<String>::new(), "{stderr}");
    assert!(!farm.q().join("quarantine").exists(), "{stderr}");
}

#[test]
fn work_under_eio_runs_every_message_and_leaves_nothing_in_work() {
    work_runs_everything_under(EIO);
}

#[test]
fn work_under_estale_runs_every_message_and_leaves_nothing_in_work() {
    work_runs_everything_under(ESTALE);
}

/// 1000 short CLI commands (publish, consume --ack, view) from two threads, one under EIO and
/// one under ESTALE on 1% of the covered calls: each exits 0 or 1, none panics; at the end,
/// without faults, every message whose publish exited 0 was consumed or is still there, and
/// every body read is whole.
#[test]
fn short_commands_under_faults_never_panic_nor_lose_a_message() {
    const RUNS_PER_THREAD: usize = 500;
    let farm = Farm::new(&[]);
    let run_thread = |t: usize, errno: i32| {
        let faults = on_file_calls(0.01, errno);
        let (mut published_ok, mut published_maybe, mut seen) = (vec![], vec![], vec![]);
        let mut exits = BTreeMap::<i32, usize>::new();
        for i in 0..RUNS_PER_THREAD {
            let mut cmd = faulty(&faults, None);
            let what = match i % 3 {
                0 => {
                    let body = make_body(&format!("t{t}-{i}"), 200);
                    cmd.args(["publish", &farm.root, "q", &body]);
                    Some(body)
                }
                1 => {
                    cmd.args(["consume", "--ack", "--format", "json", "-n", "2"])
                        .args([&farm.root, "q"]);
                    None
                }
                _ => {
                    cmd.args(["view", &farm.root, "q"]);
                    None
                }
            };
            let out = cmd.output().unwrap();
            let code = out.status.code().unwrap_or(-1);
            assert_no_panic(&format!("{cmd:?}"), &out);
            assert!(
                code == 0 || code == 1,
                "{cmd:?}: exit {code}, not one doc/CLI.md lists for it: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            *exits.entry(code).or_default() += 1;
            match what {
                Some(body) if code == 0 => published_ok.push(body),
                // Perhaps stored (its output may have failed after the rename).
                Some(body) => published_maybe.push(body),
                None if i % 3 == 1 => {
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        if line.starts_with('{') {
                            let msg: Value = serde_json::from_str(line)
                                .unwrap_or_else(|e| panic!("torn output line {line:?}: {e}"));
                            seen.push(msg["message"].as_str().unwrap().to_string());
                        }
                    }
                }
                None => {}
            }
        }
        (published_ok, published_maybe, seen, exits)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run_thread(0, EIO));
        let b = s.spawn(|| run_thread(1, ESTALE));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut published_ok: Vec<String> = a.0.into_iter().chain(b.0).collect();
    let published_maybe: BTreeSet<String> = a.1.into_iter().chain(b.1).collect();
    let mut seen: Vec<String> = a.2.into_iter().chain(b.2).collect();
    // What is left, without faults: waiting, and in work/ (an ack or give back that failed; its
    // lease brings it back later), both read directly.
    let waiting = farm.bodies_in(&farm.q());
    let in_work = farm.bodies_in(&farm.q().join("work"));
    let left: Vec<String> = waiting.values().chain(in_work.values()).cloned().collect();
    let takes = farm
        .work_entries()
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .count();
    eprintln!(
        "exits under EIO {:?}, under ESTALE {:?}; {} published (exit 0), {} perhaps, {} consumed, {} waiting, {} in work/, {} takes or claims",
        a.3,
        b.3,
        published_ok.len(),
        published_maybe.len(),
        seen.len(),
        waiting.len(),
        in_work.len(),
        takes
    );
    for body in seen.iter().chain(&left) {
        assert!(check_body(body).is_some(), "torn body {body:?}");
        assert!(
            published_ok.contains(body) || published_maybe.contains(body),
            "a body nobody published: {body:?}"
        );
    }
    seen.extend(left);
    let seen: BTreeSet<String> = seen.into_iter().collect();
    published_ok.retain(|b| !seen.contains(b));
    assert!(
        published_ok.is_empty(),
        "{} messages published (exit 0) and lost: {:?}",
        published_ok.len(),
        &published_ok[..published_ok.len().min(5)]
    );
    assert_eq!(takes, 0, "messages left under take or claim names");
    assert!(!farm.q().join("quarantine").exists());
    assert!(
        a.3.contains_key(&1) && b.3.contains_key(&1),
        "no command failed: were the faults on?"
    );
}

/// Errors that persist (every read, or every rename, failing from some point on) stop the
/// runner: it says after how many errors in a row, exits 1, and every message it did not run is
/// waiting in the queue, none held in `work/`. The same with every rename failing from the
/// start and stderr on /dev/full, where every line the runner writes fails too: exit 1, not a
/// panic's 101. (In parallel: each waits out the growing pauses, 16 s.)
#[test]
fn persistent_errors_stop_the_runner_and_keep_the_messages() {
    std::thread::scope(|s| {
        let read = s.spawn(|| runner_stops_when_every_call_fails("posix/io/rw/read"));
        let rename = s.spawn(|| runner_stops_when_every_call_fails("posix/io/dir/rename"));
        let mute = s.spawn(runner_with_a_failing_stderr_stops_without_a_panic);
        read.join().unwrap();
        rename.join().unwrap();
        mute.join().unwrap();
    });
}

fn runner_with_a_failing_stderr_stops_without_a_panic() {
    let all = bodies(10);
    let farm = Farm::new(&all);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let rename = Fault {
        point: "posix/io/dir/rename",
        probability: 1.0,
        errno: EIO,
    };
    let out = faulty(&[rename], None)
        .args(["work", "-j", "2", &farm.root, "q", "--"])
        .args(farm.recording_command(""))
        .stderr(full)
        .output()
        .unwrap();
    assert_no_panic("ddmq work, stderr on /dev/full", &out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(farm.ran(), Vec::<String>::new());
    let waiting: BTreeSet<String> = farm.bodies_in(&farm.q()).into_values().collect();
    assert_eq!(waiting, all.into_iter().collect());
    assert_eq!(farm.work_entries(), Vec::<String>::new());
}

fn runner_stops_when_every_call_fails(point: &'static str) {
    const N: usize = 40;
    let all = bodies(N);
    let farm = Farm::new(&all);
    let control = farm.path("fiu-ctrl");
    // The first two tasks wait for the gate, which opens once the faults are on.
    let gate = farm.path("gate").display().to_string();
    let wait_for_gate = format!("; while [ ! -e '{gate}' ]; do sleep 0.02; done");
    let mut runner = faulty(&[], Some(&control))
        .args(["work", "-j", "2", &farm.root, "q", "--"])
        .args(farm.recording_command(&wait_for_gate))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while farm.ran().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tasks never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let fault = Fault {
        point,
        probability: 1.0,
        errno: EIO,
    };
    let ctl = Command::new("fiu-ctrl")
        .arg("-f")
        .arg(&control)
        .arg("-c")
        .arg(fault.control_command())
        .arg(runner.id().to_string())
        .output()
        .expect("fiu-ctrl (fiu-utils)");
    ok("fiu-ctrl", &ctl);
    std::fs::write(&gate, "").unwrap();
    let status = wait_or_kill(&mut runner, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{point}: the runner did not stop"));
    let mut stderr = String::new();
    use std::io::Read;
    runner
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let ran = farm.ran();
    let waiting: BTreeSet<String> = farm.bodies_in(&farm.q()).into_values().collect();
    eprintln!(
        "{point} failing: {} ran, {} waiting, {} retries said, exit {status}",
        ran.len(),
        waiting.len(),
        retries(&stderr)
    );
    assert_eq!(status.code(), Some(1), "{point}: {stderr}");
    assert!(!stderr.contains("panicked"), "{point}: {stderr}");
    assert!(
        stderr.contains("taking no more tasks after 10 errors in a row, the last: ")
            && stderr.contains("Input/output error"),
        "{point}: {stderr}"
    );
    assert_eq!(retries(&stderr), 9, "{point}: {stderr}");
    assert!(
        stderr.contains(&format!("ddmq work: {} done, 0 failed", ran.len())),
        "{point}: {stderr}"
    );
    assert_eq!(
        farm.work_entries(),
        Vec::<String>::new(),
        "{point}: {stderr}"
    );
    let ran: BTreeSet<String> = ran.into_iter().collect();
    assert!(ran.is_disjoint(&waiting), "{point}: ran and still waiting");
    let accounted: BTreeSet<String> = ran.union(&waiting).cloned().collect();
    assert_eq!(accounted, all.into_iter().collect(), "{point}: {stderr}");
    assert!(waiting.len() >= N - 4, "{point}: the faults came too late");
}

/// Messages of 100 KiB, so that the output of three is more than a pipe holds.
fn large_farm() -> (Farm, Vec<String>) {
    let all: Vec<String> = (0..3)
        .map(|i| make_body(&format!("big{i}"), 100 << 10))
        .collect();
    (Farm::new(&all), all)
}

/// After a consume whose output failed: exit 1, and every message back in the queue under the
/// name it had, uncounted, none left in `work/`.
fn assert_given_back(what: &str, farm: &Farm, before: &BTreeMap<String, String>, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_panic(what, out);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(&farm.bodies_in(&farm.q()), before, "{what}: {stderr}");
    assert_eq!(farm.work_entries(), Vec::<String>::new(), "{what}");
    for name in before.keys() {
        let msg: Value =
            serde_json::from_slice(&std::fs::read(farm.q().join(name)).unwrap()).unwrap();
        assert_eq!(msg["requeue_counter"], 0, "{what}: counted as a requeue");
    }
}

/// A consume whose stdout fails gives its messages back and exits 1, as doc/CLI.md decides:
/// on a full device, on an injected EIO, and when a reader took one whole message and then
/// closed the pipe (that message may come again: at least once).
#[test]
fn a_consume_whose_output_fails_gives_its_messages_back() {
    let (farm, _) = large_farm();
    let before = farm.bodies_in(&farm.q());

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = plain()
        .args(["consume", "--ack", "-n", "3", &farm.root, "q"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_given_back("stdout on /dev/full", &farm, &before, &out);

    // Every write failing (-C: no housekeeping, whose writes would fail first).
    let out = faulty(
        &[Fault {
            point: "posix/io/rw/write",
            probability: 1.0,
            errno: EIO,
        }],
        None,
    )
    .args(["consume", "-C", "--ack", "-n", "3", &farm.root, "q"])
    .output()
    .unwrap();
    assert_given_back("every write failing", &farm, &before, &out);

    let mut child = plain()
        .args([
            "consume", "--ack", "-n", "3", "--format", "json", &farm.root, "q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        reader.read_line(&mut first).unwrap();
    } // the reader closes the pipe after one message
    let msg: Value = serde_json::from_str(&first).expect("one whole message was read");
    let body = msg["message"].as_str().unwrap();
    assert!(before.values().any(|b| b == body));
    let out = child.wait_with_output().unwrap();
    assert_given_back("a reader that left after one message", &farm, &before, &out);
}
