//! Hosts whose clocks disagree, played with libfaketime (Debian `faketime`): it shifts a
//! process's clock, not the times the kernel stamps on files, as a skewed host's would be against
//! its file server. ddmq judges every time on disk by the filesystem's clock, so:
//! - a task whose runner is alive and renewing is never requeued, whatever the skew between the
//!   runner and a cleaner (+/-30 s and +/-5 min against a 5 s lease), and runs once;
//! - a message that ddmq 0.9.10 is still writing in place is given back, not quarantined, by a
//!   consumer whose clock is ahead.

mod rel_support;

use rel_support::ddmq_bin;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// libfaketime, as Debian's `faketime` package installs it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `ddmq` with its clock shifted by `shift` (libfaketime preloaded, as `faketime -f SHIFT` does;
/// directly, so that a signal reaches ddmq itself: the `faketime` wrapper does not pass it on).
fn skewed(shift: &str) -> Command {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} missing: scripts/test installs the Debian package faketime"
    );
    let mut c = Command::new(ddmq_bin());
    c.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", shift)
        .env("DONT_FAKE_MONOTONIC", "1")
        .stdin(Stdio::null());
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

fn queue(settings: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root").display().to_string();
    let out = Command::new(ddmq_bin())
        .args(["create", "-f", &root, "q"])
        .output()
        .unwrap();
    ok("create", &out);
    std::fs::write(Path::new(&root).join("q/ddmq.yaml"), settings).unwrap();
    (dir, root)
}

/// Three tasks of 7 s under a 5 s lease, run by a runner with one clock while a cleaner with
/// another cleans every 300 ms: each runs once, none is requeued.
fn leases_hold(runner_shift: &str, cleaner_shift: &str) {
    let (_dir, root) = queue("cleaned: 0\nmessage_timeout: 5\nrequeue: true\n");
    for i in 0..3 {
        let out = Command::new(ddmq_bin())
            .args(["publish", "-s", &root, "q", &format!("t{i}")])
            .output()
            .unwrap();
        ok("publish", &out);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cleaner = {
        let (root, stop, shift) = (root.clone(), stop.clone(), cleaner_shift.to_string());
        std::thread::spawn(move || {
            let mut cleans = 0;
            while !stop.load(Ordering::SeqCst) {
                ok(
                    "clean",
                    &skewed(&shift).args(["clean", &root, "q"]).output().unwrap(),
                );
                cleans += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            cleans
        })
    };
    let mut runner = skewed(runner_shift)
        .args(["work", "-j", "3", &root, "q", "--"])
        .args(["sh", "-c", "sleep 7 && echo \"ran $1\"", "sh", "{}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Requeued tasks would run again and again: the runner would never find the queue empty.
    let ended = rel_support::wait_or_kill(&mut runner, Duration::from_secs(60));
    let out = runner.wait_with_output().unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(
        ended.is_some(),
        "runner at {runner_shift}, cleaner at {cleaner_shift}: still rerunning tasks after 60 s: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let cleans = cleaner.join().unwrap();
    let stdout = ok("work", &out);
    let mut ran: Vec<&str> = stdout.lines().collect();
    ran.sort();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        ran,
        ["ran t0", "ran t1", "ran t2"],
        "runner at {runner_shift}, cleaner at {cleaner_shift} ({cleans} cleans): {stderr}"
    );
    assert!(
        stderr.contains("3 done, 0 failed (0 requeued"),
        "runner at {runner_shift}, cleaner at {cleaner_shift}: {stderr}"
    );
    let left = std::fs::read_dir(Path::new(&root).join("q"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".ddmq")
        })
        .count();
    assert_eq!(left, 0, "a requeued copy was left");
    eprintln!(
        "runner at {runner_shift}, cleaner at {cleaner_shift}: 3 tasks once, {cleans} cleans"
    );
}

#[test]
fn a_renewing_runner_keeps_its_tasks_whatever_the_skew_of_30_s() {
    leases_hold("-30s", "+30s");
    leases_hold("+30s", "-30s");
}

#[test]
fn a_renewing_runner_keeps_its_tasks_whatever_the_skew_of_5_min() {
    leases_hold("-5m", "+5m");
    leases_hold("+5m", "-5m");
}

/// The original writes a message in place: a consumer 5 s (or 5 min) ahead sees a half-written
/// file, and must give it back (young by the filesystem's own times), not quarantine it; once
/// the write is complete it is delivered.
#[test]
fn a_message_still_being_written_in_place_is_not_quarantined_by_a_consumer_ahead() {
    for shift in ["+5s", "+5m"] {
        let (_dir, root) = queue("cleaned: 0\n");
        let name = format!("999.{}.ddmq0123456789abcdef0123456789abcdef", 1_000_000u64);
        let path = Path::new(&root).join("q").join(&name);
        let whole = format!(
            "{{\"message\": \"in place\", \"queue\": \"q\", \"timeout\": null, \"id\": \"0123456789abcdef0123456789abcdef\", \"priority\": 999, \"queue_number\": 1000000, \"filename\": \"{name}\", \"requeue\": false, \"requeue_counter\": 0, \"requeue_limit\": null}}"
        );
        std::fs::write(&path, &whole.as_bytes()[..30]).unwrap();
        let out = skewed(shift)
            .args(["consume", "-C", &root, "q"])
            .output()
            .unwrap();
        let first = ok("consume", &out);
        assert!(first.contains("No more messages"), "{shift}: {first}");
        assert!(
            !Path::new(&root).join("q/quarantine").exists()
                || std::fs::read_dir(Path::new(&root).join("q/quarantine"))
                    .unwrap()
                    .next()
                    .is_none(),
            "{shift}: quarantined while still being written"
        );
        std::fs::write(&path, whole.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        let out = skewed(shift)
            .args(["consume", "-C", "--format", "json", &root, "q"])
            .output()
            .unwrap();
        assert!(ok("consume", &out).contains("\"in place\""), "{shift}");
    }
}
