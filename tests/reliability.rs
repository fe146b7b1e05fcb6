//! Reliability: what a queue must never do, provoked on purpose.
//!
//! - chaos: publishers and consumers SIGKILLed at random (DDMQ_CHAOS_KILLS, default 100), short
//!   timeouts and requeue on; afterwards every message whose publish returned was delivered,
//!   nothing is left behind, duplicates <= kills, no torn message file was ever visible.
//! - disk full on a 1 MiB tmpfs; hostile names and paths; corrupt, empty, truncated, huge and
//!   special files at the head of a queue; planted symlinks; YAML bombs and huge values;
//!   group-shared queues (umask 002, setgid root).
//! - two hosts over a real network filesystem: two sshfs mounts of one directory over loopback.
//! - through the CLI and the mount (when those are built): the same, plus the daemon killed.
//!
//! Workers are this test binary started again with DDMQ_REL_ROLE set (see `worker`), so a kill
//! hits a real process in the middle of real filesystem calls. Each random test prints its seed;
//! DDMQ_REL_SEED replays it.

mod rel_support;

use ddmq::engine::{
    AckOutcome, Broker, ConsumeOptions, Error, PublishOptions, Requeue, RequeueOutcome,
};
use rel_support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CHAOS_TIMEOUT_SECS: u64 = 3;

// ------------------------------------------------------------------ worker processes

/// Entry point of worker processes; does nothing unless started by `spawn_worker`.
#[test]
#[ignore = "worker process entry: started by the chaos and sshfs tests with DDMQ_REL_ROLE set"]
fn worker() {
    let Ok(role) = std::env::var("DDMQ_REL_ROLE") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("worker needs {k}"));
    match role.as_str() {
        "publish" => publish_worker(
            Path::new(&var("ROOT")),
            &var("QUEUE"),
            &var("WID"),
            Path::new(&var("LOG_DIR")),
        ),
        "consume" => consume_worker(
            Path::new(&var("ROOT")),
            &var("QUEUE"),
            &var("WID"),
            Path::new(&var("LOG_DIR")),
        ),
        "group" => group_worker(Path::new(&var("ROOT"))),
        "mount-write" => mount_write_worker(
            Path::new(&var("MNT")),
            &var("QUEUE"),
            &var("WID"),
            Path::new(&var("LOG_DIR")),
        ),
        "mount-read" => mount_read_worker(
            Path::new(&var("MNT")),
            &var("QUEUE"),
            &var("WID"),
            Path::new(&var("LOG_DIR")),
        ),
        other => panic!("unknown worker role {other}"),
    }
}

/// Publishes self-checking bodies until LOG_DIR/stop exists; logs each key after publish returned.
fn publish_worker(root: &Path, queue: &str, wid: &str, log_dir: &Path) {
    let broker = Broker::open(root).unwrap();
    let q = broker.queue(queue).unwrap();
    let log = log_dir.join(format!("published-{wid}"));
    let opts = PublishOptions {
        timeout: Some(env_usize("MSG_TIMEOUT", CHAOS_TIMEOUT_SECS as usize) as u64),
        requeue: Some(Requeue::QueuePriority),
        ..Default::default()
    };
    let limit = env_usize("PUBLISH_LIMIT", usize::MAX);
    for seq in 0..limit {
        if log_dir.join("stop").exists() {
            return;
        }
        let key = format!("{wid}-{seq}");
        let body = make_body(&key, (seq * 97) % 3000);
        q.publish(Value::String(body), &opts).unwrap();
        append_line(&log, &key);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Consumes in random batches, checks each body, logs its key, acks; cleans when idle; leaves
/// when LOG_DIR/stop exists and nothing is waiting or in flight.
fn consume_worker(root: &Path, queue: &str, wid: &str, log_dir: &Path) {
    let broker = Broker::open(root).unwrap();
    let q = broker.queue(queue).unwrap();
    let delivered = log_dir.join(format!("delivered-{wid}"));
    let problems = log_dir.join(format!("problems-{wid}"));
    let mut rng = Rng(std::process::id() as u64 * 7919 + 1);
    loop {
        let batch = 1 + rng.below(4) as usize;
        let got = match q.consume(batch, &ConsumeOptions { clean: false }) {
            Ok(got) => got,
            Err(e) => {
                append_line(&problems, &format!("consume error: {e}"));
                Vec::new()
            }
        };
        for d in &got {
            let body = d.message.body_text();
            match check_body(&body) {
                Some(key) => append_line(&delivered, key),
                None => append_line(
                    &problems,
                    &format!(
                        "torn body in {}: {:?}",
                        d.message.filename,
                        &body[..body.len().min(80)]
                    ),
                ),
            }
            match q.ack(&d.message.filename) {
                Ok(AckOutcome::Acked(_)) => {}
                Ok(AckOutcome::NotFound) => {
                    append_line(&log_dir.join(format!("late-{wid}")), &d.message.filename)
                }
                Err(e) => append_line(&problems, &format!("ack error: {e}")),
            }
        }
        if got.is_empty() {
            if let Err(e) = q.clean() {
                append_line(&problems, &format!("clean error: {e}"));
            }
            if log_dir.join("stop").exists() {
                match q.status(false) {
                    Ok(st) if st.waiting == 0 && st.in_flight == 0 => return,
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ------------------------------------------------------------------ chaos

struct Fleet {
    root: PathBuf,
    queue: String,
    log_dir: PathBuf,
    publishers: Vec<Child>,
    consumers: Vec<Child>,
    spawned: usize,
    extra_env: Vec<(String, String)>,
}

impl Fleet {
    fn spawn(&mut self, role: &str) -> Child {
        self.spawned += 1;
        let mut envs = vec![
            ("ROOT", self.root.display().to_string()),
            ("QUEUE", self.queue.clone()),
            ("WID", format!("w{}", self.spawned)),
            ("LOG_DIR", self.log_dir.display().to_string()),
        ];
        for (k, v) in &self.extra_env {
            envs.push((k.as_str(), v.clone()));
        }
        spawn_worker(role, &envs)
    }
}

/// Checks the logs and the queue after a run: returns (published, delivered, duplicates).
fn verify_delivery(log_dir: &Path, allowed_duplicates: usize) -> (usize, usize, usize) {
    let problems = read_all_lines(log_dir, "problems-");
    assert!(
        problems.is_empty(),
        "workers reported problems: {problems:#?}"
    );
    let published = read_all_lines(log_dir, "published-");
    let delivered = read_all_lines(log_dir, "delivered-");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in &delivered {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = published
        .iter()
        .filter(|k| !counts.contains_key(k.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} published messages never delivered, e.g. {:?}",
        lost.len(),
        published.len(),
        &lost[..lost.len().min(5)]
    );
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    assert!(
        duplicates <= allowed_duplicates,
        "{duplicates} duplicate deliveries, more than the {allowed_duplicates} allowed"
    );
    (published.len(), delivered.len(), duplicates)
}

/// Asserts a queue directory holds nothing but its settings and an empty work/.
/// On sshfs, libfuse hides a file renamed over while open through the same mount as
/// `.fuse_hidden*` and may leave it: that happens to `ddmq.yaml` when one process rewrites it
/// (`cleaned`) while another reads it. Removes such copies after checking they hold settings,
/// not messages; returns how many there were.
fn remove_fuse_hidden_settings(qdir: &Path) -> usize {
    let mut n = 0;
    for name in names_in(qdir)
        .into_iter()
        .filter(|n| n.starts_with(".fuse_hidden"))
    {
        let text = std::fs::read_to_string(qdir.join(&name)).unwrap_or_default();
        assert!(
            text.starts_with("cleaned:") && !text.contains("queue_number"),
            "{name} holds {text:?}"
        );
        std::fs::remove_file(qdir.join(&name)).unwrap();
        n += 1;
    }
    n
}

/// What sshfs leaves besides the queue: `.fuse_hidden` copies of `ddmq.yaml` (checked to hold
/// settings, then removed) and of acked messages in work/ (unlinked while their release was still
/// on the way), which housekeeping removes once stale. Returns how many of each there were.
fn clear_sshfs_leftovers(q: &ddmq::engine::Queue) -> (usize, usize) {
    let settings_copies = remove_fuse_hidden_settings(q.dir());
    let work = q.dir().join("work");
    let hidden_in_work = names_in(&work)
        .into_iter()
        .filter(|n| n.starts_with(".fuse_hidden"))
        .inspect(|n| age_file(&work.join(n), 700))
        .count();
    let report = q.clean().unwrap();
    assert_eq!(report.removed_temp_files, hidden_in_work);
    (settings_copies, hidden_in_work)
}

fn assert_nothing_left(qdir: &Path) {
    let top: Vec<String> = names_in(qdir)
        .into_iter()
        .filter(|n| n != "ddmq.yaml" && n != "work")
        .collect();
    let peek = |n: &String| {
        format!(
            "{n}: {:?}",
            std::fs::read(qdir.join(n))
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned())
        )
    };
    assert!(
        top.is_empty(),
        "left in {}: {:?}",
        qdir.display(),
        top.iter().map(peek).collect::<Vec<_>>()
    );
    let work = names_in(&qdir.join("work"));
    assert!(work.is_empty(), "left in work/: {work:?}");
}

/// What killed workers leave behind is only picked up after minutes (claims 5, temporary files
/// 10): make it look that old, then one clean must recover or remove all of it.
fn recover_leftovers(q: &ddmq::engine::Queue) -> (usize, usize) {
    let aged_claims = age_claims(&q.dir().join("work"), 400);
    for dir in [q.dir().to_path_buf(), q.dir().join("work")] {
        for n in names_in(&dir) {
            if n.starts_with(".tmp-") {
                age_file(&dir.join(n), 700);
            }
        }
    }
    let report = q.clean().unwrap();
    assert_eq!(report.recovered_claims, aged_claims);
    (report.recovered_claims, report.removed_temp_files)
}

/// Reads every message file it can see, in the queue and in work/, as an outside reader would
/// (the original, or a `cat`): any file it manages to open must be a whole message.
fn spawn_peeker(
    qdir: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut read = 0;
        let mut torn = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for dir in [qdir.clone(), qdir.join("work")] {
                for name in names_in(&dir) {
                    if !name.contains(".ddmq") {
                        continue;
                    }
                    let Ok(bytes) = std::fs::read(dir.join(&name)) else {
                        continue;
                    };
                    read += 1;
                    let whole = ddmq::engine::Message::from_json(&bytes)
                        .ok()
                        .map(|m| check_body(&m.body_text()).is_some())
                        .unwrap_or(false);
                    if !whole {
                        torn.push(format!(
                            "{name}: {:?}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
                        ));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (read, torn)
    })
}

/// A fresh root `<tmp>/<root_name>` with one queue (its ddmq.yaml replaced by `settings`, if
/// given) and an empty `<tmp>/logs` for workers' logs.
fn queue_with_logs(
    root_name: &str,
    queue: &str,
    settings: Option<&str>,
) -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    Arc<ddmq::engine::Queue>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(root_name);
    let log_dir = tmp.path().join("logs");
    std::fs::create_dir(&log_dir).unwrap();
    let broker = Broker::open_or_init(&root).unwrap();
    broker.create_queue(queue).unwrap();
    let q = broker.queue(queue).unwrap();
    if let Some(settings) = settings {
        q.write_config_text(settings.as_bytes()).unwrap();
    }
    (tmp, root, log_dir, q)
}

/// The chaos runs' queue: short timeouts, requeue on.
fn chaos_queue() -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    Arc<ddmq::engine::Queue>,
) {
    queue_with_logs(
        "root",
        "chaos",
        Some(&format!(
            "cleaned: 0\nmessage_timeout: {CHAOS_TIMEOUT_SECS}\nrequeue: true\n"
        )),
    )
}

#[test]
fn chaos_sigkill_publishers_and_consumers() {
    let kills_wanted = env_usize("DDMQ_CHAOS_KILLS", 100);
    let mut rng = Rng::new("chaos");
    let (_tmp, root, log_dir, q) = chaos_queue();

    let stop_peek = Arc::new(AtomicBool::new(false));
    let peeker = spawn_peeker(q.dir().to_path_buf(), stop_peek.clone());
    let mut fleet = Fleet {
        root: root.clone(),
        queue: "chaos".into(),
        log_dir: log_dir.clone(),
        publishers: vec![],
        consumers: vec![],
        spawned: 0,
        extra_env: vec![],
    };
    for _ in 0..2 {
        let c = fleet.spawn("publish");
        fleet.publishers.push(c);
    }
    for _ in 0..3 {
        let c = fleet.spawn("consume");
        fleet.consumers.push(c);
    }
    let mut kills = 0;
    let mut consumer_kills = 0;
    while kills < kills_wanted {
        std::thread::sleep(Duration::from_millis(15 + rng.below(60)));
        let victim_is_consumer = rng.below(2) == 0;
        let (role, pool) = if victim_is_consumer {
            ("consume", &mut fleet.consumers)
        } else {
            ("publish", &mut fleet.publishers)
        };
        let i = rng.below(pool.len() as u64) as usize;
        let mut victim = pool.swap_remove(i);
        sigkill(&mut victim);
        kills += 1;
        consumer_kills += victim_is_consumer as usize;
        let c = fleet.spawn(role);
        if victim_is_consumer {
            fleet.consumers.push(c)
        } else {
            fleet.publishers.push(c)
        }
    }
    std::fs::write(log_dir.join("stop"), "").unwrap();
    for p in &mut fleet.publishers {
        assert!(wait_or_kill(p, Duration::from_secs(30)).unwrap().success());
    }
    // Consumers drain, waiting out the leases of the killed ones, then leave.
    for c in &mut fleet.consumers {
        let st = wait_or_kill(c, Duration::from_secs(120));
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "a consumer did not drain the queue in time: {:?}",
            q.status(false)
        );
    }
    let (claims, temps) = recover_leftovers(&q);
    // Messages recovered from claims are waiting again: deliver them the same way.
    for d in q
        .consume(usize::MAX, &ConsumeOptions { clean: false })
        .unwrap()
    {
        append_line(
            &log_dir.join("delivered-final"),
            check_body(&d.message.body_text()).expect("whole body"),
        );
        q.ack(&d.message.filename).unwrap();
    }
    stop_peek.store(true, Ordering::Relaxed);
    let (peeked, torn) = peeker.join().unwrap();
    assert!(
        torn.is_empty(),
        "a reader saw torn message files: {torn:#?}"
    );
    let late = read_all_lines(&log_dir, "late-").len();
    let (published, delivered, duplicates) = verify_delivery(&log_dir, kills + late);
    assert_nothing_left(q.dir());
    eprintln!(
        "chaos: {kills} kills ({consumer_kills} consumers), {published} published, {delivered} delivered, {duplicates} duplicates, \
         {late} acks after lease expiry, {claims} claims and {temps} temporary files of killed workers recovered, \
         {peeked} message files read by an outside reader, 0 torn, 0 lost"
    );
}

// ------------------------------------------------------------------ disk full

/// A size-limited tmpfs, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs needs root");
        SmallFs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn is_enospc(e: &Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

#[test]
fn disk_full_publish_fails_cleanly_and_consume_ack_keep_working() {
    let fs = SmallFs::new("1m");
    let root = fs.path().join("root");
    let broker = Broker::open_or_init(&root).unwrap();
    broker.create_queue("q").unwrap();
    let q = broker.queue("q").unwrap();
    let mut published = Vec::new();
    let mut first_error = None;
    // Fill to the last byte: big bodies, then smaller ones.
    for size in [8192usize, 1024, 64, 1] {
        loop {
            match q.publish(
                Value::String(make_body(&format!("k{}", published.len()), size)),
                &PublishOptions::default(),
            ) {
                Ok(m) => published.push(m),
                Err(e) => {
                    assert!(is_enospc(&e), "publish on a full disk: {e}");
                    first_error.get_or_insert(e.to_string());
                    break;
                }
            }
        }
    }
    let msg = first_error.unwrap();
    assert!(
        msg.contains("No space left on device") && msg.contains(&root.display().to_string()),
        "unclear error: {msg}"
    );
    // Nothing partial: no temporary file, and every message file is whole.
    let names = names_in(q.dir());
    assert!(
        !names.iter().any(|n| n.starts_with(".tmp-")),
        "temporary files left: {names:?}"
    );
    let waiting = q.waiting().unwrap();
    assert_eq!(waiting.len(), published.len());
    for w in &waiting {
        let m = q.read_waiting(w).unwrap().unwrap();
        assert!(check_body(&m.body_text()).is_some());
    }
    // Consume (with its housekeeping due) and ack keep working on the full disk.
    let got = q.consume(5, &ConsumeOptions { clean: true }).unwrap();
    assert_eq!(got.len(), 5);
    assert!(matches!(
        q.ack(&got[0].message.filename).unwrap(),
        AckOutcome::Acked(_)
    ));
    // Fill the space that ack freed again, so the nack below cannot write its requeued copy.
    let mut refilled = 0;
    for size in [1024usize, 64, 1] {
        while q
            .publish(
                Value::String(make_body(&format!("r{refilled}"), size)),
                &PublishOptions::default(),
            )
            .is_ok()
        {
            refilled += 1;
        }
    }
    // A nack that cannot write its requeued copy fails clearly and loses nothing: the message
    // stays in its claim in work/, which a cleaner recovers (below).
    let nacked = &got[1].message;
    match q.nack(&nacked.filename, true) {
        Err(e) => assert!(
            is_enospc(&e) && e.to_string().contains(&root.display().to_string()),
            "nack on a full disk: unclear error: {e}"
        ),
        Ok(outcome) => panic!("nack on a full disk succeeded: {outcome:?}"),
    }
    let claims: Vec<String> = names_in(&q.dir().join("work"))
        .into_iter()
        .filter(|n| n.starts_with(".claim-"))
        .collect();
    assert_eq!(claims.len(), 1, "the nacked message is kept in one claim");
    let kept = std::fs::read_to_string(q.dir().join("work").join(&claims[0])).unwrap();
    assert!(
        kept.contains(&nacked.id),
        "the claim holds the nacked message"
    );
    assert!(
        !names_in(q.dir()).iter().any(|n| n.starts_with(".tmp-")),
        "the failed requeue left a temporary file"
    );
    // Free space by acking, then publishing resumes.
    for d in &got[2..] {
        q.ack(&d.message.filename).unwrap();
    }
    for d in q.consume(20, &ConsumeOptions { clean: false }).unwrap() {
        q.ack(&d.message.filename).unwrap();
    }
    q.publish(
        Value::String(make_body("after", 100)),
        &PublishOptions::default(),
    )
    .expect("publish after space was freed");
    // Everything not acked is still there: waiting, in flight, or in a claim a cleaner recovers.
    let (recovered, _) = recover_leftovers(&q);
    assert_eq!(recovered, 1, "the nacked message's claim is recovered");
    let st = q.status(false).unwrap();
    eprintln!(
        "disk full: {} messages filled 1 MiB, {refilled} refilled it; error: {msg}; {} waiting after freeing space",
        published.len(),
        st.waiting
    );
    assert!(refilled > 0, "the refill published nothing");
    assert_eq!(
        st.waiting,
        published.len() + refilled - 5 - 20 + 1 + 1,
        "a message was lost around the full disk"
    );
}

// ------------------------------------------------------------------ hostile and broken input

fn fresh_root() -> (tempfile::TempDir, PathBuf, Broker) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let broker = Broker::open_or_init(&root).unwrap();
    broker.create_queue("q").unwrap();
    (tmp, root, broker)
}

#[test]
fn hostile_queue_names_are_refused() {
    let (tmp, root, broker) = fresh_root();
    let long = "a".repeat(300);
    for bad in [
        "a/b",
        "..",
        ".",
        "../escape",
        "/etc",
        "a\0b",
        "",
        long.as_str(),
        "q/../../x",
        "work",
        "ddmq.yaml",
    ] {
        let created = broker.create_queue(bad);
        let opened = broker.queue(bad);
        if bad == "work" || bad == "ddmq.yaml" {
            // Valid names: "ddmq.yaml" is refused (the dot); "work" is a queue like any other.
            continue;
        }
        assert!(
            matches!(created, Err(Error::InvalidQueueName(_))),
            "create {bad:?}: {created:?}"
        );
        assert!(
            matches!(opened, Err(Error::InvalidQueueName(_))),
            "queue {bad:?}"
        );
        assert!(
            created
                .unwrap_err()
                .to_string()
                .contains("invalid queue name")
        );
    }
    assert!(broker.create_queue("ddmq.yaml").is_err());
    // Nothing was created outside the root or in it.
    assert_eq!(names_in(tmp.path()), ["root"]);
    let mut top = names_in(&root);
    top.retain(|n| n != "work");
    assert_eq!(top, ["ddmq.yaml", "ddmq.yaml.example", "q"]);
}

#[test]
fn ack_nack_delete_touch_never_reach_outside_the_queue() {
    let (tmp, root, broker) = fresh_root();
    let q = broker.queue("q").unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let inside = root.join("q").join("1.1.ddmqabc");
    q.publish(Value::String("keep".into()), &PublishOptions::default())
        .unwrap();
    let d = q.consume_one().unwrap().unwrap();
    let victim_abs = victim.display().to_string();
    let hostile = [
        victim_abs.as_str(),
        "../../victim",
        "../victim",
        "work/../../../victim",
        "1.1.1.ddmqab/../../../../victim",
        "1.1.ddmqab/../../../victim",
        "1.1.1.ddmq..",
        "1.1.1.ddmqab\0x",
        "ddmq.yaml",
        "work",
        ".",
        "",
        "/",
        "1.1.ddmqabc/..",
    ];
    std::fs::write(&inside, "{}").unwrap();
    for bad in hostile {
        for (op, r) in [
            ("ack", q.ack(bad).map(|o| format!("{o:?}"))),
            ("nack", q.nack(bad, true).map(|o| format!("{o:?}"))),
            ("touch", q.touch(bad).map(|o| format!("{o:?}"))),
            ("del_msg", q.delete_message(bad).map(|o| format!("{o:?}"))),
        ] {
            match r {
                Err(Error::InvalidMessageName(_)) => {}
                Ok(o) if o == "NotFound" || o == "None" || o == "false" => {}
                other => panic!("{op} {bad:?}: {other:?}"),
            }
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(root.join("q/ddmq.yaml").is_file() && root.join("q/work").is_dir() && inside.exists());
    // The real message is untouched by all that.
    assert!(matches!(
        q.ack(&d.message.filename).unwrap(),
        AckOutcome::Acked(_)
    ));
}

/// Writes `bytes` as a waiting message file named for priority 0, with an mtime 30 s ago.
fn plant_old(qdir: &Path, n: u64, bytes: &[u8]) -> String {
    let name = format!("0.{n}.ddmq{:032x}", n);
    std::fs::write(qdir.join(&name), bytes).unwrap();
    age_file(&qdir.join(&name), 30);
    name
}

#[test]
fn corrupt_empty_truncated_huge_and_special_files_at_the_head_do_not_stop_the_queue() {
    let (_tmp, root, broker) = fresh_root();
    let q = broker.queue("q").unwrap();
    let qdir = root.join("q");
    let good = q
        .publish(Value::String("whole".into()), &PublishOptions::default())
        .unwrap();
    let whole = std::fs::read(qdir.join(&good.filename)).unwrap();
    let mut bad = vec![
        plant_old(&qdir, 1, b""),
        plant_old(&qdir, 2, &whole[..whole.len() / 2]),
        plant_old(&qdir, 3, b"\xff\xfe\x00garbage"),
        plant_old(&qdir, 4, b"[1, 2, 3]"),
        plant_old(&qdir, 5, b"{\"priority\": -5}"),
        plant_old(
            &qdir,
            6,
            b"{\"requeue\": {\"$eval\": \"__import__('os').system('touch /tmp/pwned')\"}}",
        ),
    ];
    // Larger than any message file we read into memory (sparse: costs no space).
    let huge = format!("0.7.ddmq{:032x}", 7);
    std::fs::File::create(qdir.join(&huge))
        .unwrap()
        .set_len((1 << 30) + 1)
        .unwrap();
    bad.push(huge);
    // A directory and a FIFO named like messages.
    let dir_name = format!("0.8.ddmq{:032x}", 8);
    std::fs::create_dir(qdir.join(&dir_name)).unwrap();
    bad.push(dir_name);
    let fifo = format!("0.9.ddmq{:032x}", 9);
    let c = std::ffi::CString::new(qdir.join(&fifo).as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    bad.push(fifo);
    // A file being written right now (young): given back and retried later, never delivered torn.
    let young = format!("0.10.ddmq{:032x}", 10);
    std::fs::write(qdir.join(&young), &whole[..10]).unwrap();
    for i in 0..3 {
        q.publish(
            Value::String(format!("after{i}")),
            &PublishOptions::default(),
        )
        .unwrap();
    }
    let got: Vec<String> = q
        .consume(10, &ConsumeOptions { clean: false })
        .unwrap()
        .iter()
        .map(|d| d.message.body_text())
        .collect();
    assert_eq!(got, ["whole", "after0", "after1", "after2"]);
    let quarantined = names_in(&qdir.join("quarantine"));
    assert_eq!(
        quarantined.len(),
        bad.len(),
        "quarantine holds {quarantined:?}"
    );
    for b in &bad {
        assert!(
            quarantined.iter().any(|n| n.contains(b.as_str())),
            "{b} not quarantined"
        );
    }
    assert!(
        qdir.join(&young).exists(),
        "the young file was not given back"
    );
    assert!(!Path::new("/tmp/pwned").exists());
}

#[test]
fn huge_message_is_refused_with_a_clear_error() {
    let (_tmp, _root, broker) = fresh_root();
    let q = broker.queue("q").unwrap();
    let big = "x".repeat((16 << 20) + 1);
    let e = q
        .publish(Value::String(big), &PublishOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(
        e.to_string().contains("larger than max_message_bytes"),
        "{e}"
    );
    assert!(q.waiting().unwrap().is_empty());
    assert!(names_in(q.dir()).iter().all(|n| !n.starts_with(".tmp-")));
    // Up to the limit it goes through, whole.
    q.write_config_text(b"max_message_bytes: 4194304\n")
        .unwrap();
    let body = make_body("big", 4 << 20)
        .chars()
        .take(4 << 20)
        .collect::<String>();
    let e = q
        .publish(
            Value::String(body.clone() + "y"),
            &PublishOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }));
    q.publish(Value::String(body.clone()), &PublishOptions::default())
        .unwrap();
    assert_eq!(q.consume_one().unwrap().unwrap().message.body_text(), body);
}

#[test]
fn planted_symlinks_are_never_followed_out_of_root() {
    let (tmp, root, broker) = fresh_root();
    let q = broker.queue("q").unwrap();
    let qdir = root.join("q");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret.json");
    let forged = r#"{"message": "from outside", "id": "abc", "priority": 0}"#;
    std::fs::write(&secret, forged).unwrap();
    // A message name that is a link to a file outside ROOT, and one to a directory.
    std::os::unix::fs::symlink(&secret, qdir.join("0.1.ddmqaaaa")).unwrap();
    std::os::unix::fs::symlink(&outside, qdir.join("0.2.ddmqbbbb")).unwrap();
    // An expired in-flight name that is a link.
    std::os::unix::fs::symlink(&secret, qdir.join("work/1000000000.0.3.ddmqcccc")).unwrap();
    // Our own subdirectories replaced by links to the outside.
    std::os::unix::fs::symlink(&outside, qdir.join("quarantine")).unwrap();
    std::os::unix::fs::symlink(&outside, qdir.join("dead")).unwrap();
    q.write_config_text(b"dead_letter: true\nrequeue: true\n")
        .unwrap();
    q.publish(
        Value::String("real".into()),
        &PublishOptions {
            requeue_limit: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let d = q.consume_one().unwrap().unwrap();
    assert_eq!(d.message.body_text(), "real", "a linked file was delivered");
    q.clean().expect("clean with a planted link in work/");
    assert!(matches!(
        q.nack(&d.message.filename, false).unwrap(),
        RequeueOutcome::Requeued(_)
    ));
    // Over its requeue limit: to dead/, which must not be the planted link.
    let d = q.consume_one().unwrap().unwrap();
    assert_eq!(d.message.body_text(), "real");
    assert_eq!(
        q.nack(&d.message.filename, false).unwrap(),
        RequeueOutcome::LimitReached {
            dead_lettered: true
        }
    );
    assert!(q.consume_one().unwrap().is_none());
    assert_eq!(
        names_in(&outside),
        ["secret.json"],
        "something was moved out of ROOT"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), forged);
    // A queue directory or work/ that is a link is not a queue.
    std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
    assert!(broker.queue("linked").is_err());
    assert!(
        !broker
            .list_queues()
            .unwrap()
            .contains(&"linked".to_string())
    );
}

#[test]
fn yaml_bombs_and_huge_values_are_refused_clearly() {
    let (_tmp, root, broker) = fresh_root();
    let laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let big = format!("message_timeout: 5\npad: \"{}\"\n", "x".repeat(2 << 20));
    let qconf = root.join("q/ddmq.yaml");
    let q = broker.queue("q").unwrap();
    for (what, text) in [
        ("billion laughs", laughs.to_string()),
        ("deep nesting", deep),
        ("2 MiB file", big),
        ("not a mapping", "- 1\n- 2\n".into()),
        ("1e400", "message_timeout: 1e400\n".into()),
        (
            "too big",
            "message_timeout: 99999999999999999999999\n".into(),
        ),
        ("negative", "priority: -1\n".into()),
        ("string", "requeue: sometimes\n".into()),
    ] {
        assert!(
            q.write_config_text(text.as_bytes()).is_err(),
            "{what} accepted by write_config_text"
        );
        std::fs::write(&qconf, &text).unwrap();
        broker.forget_queue("q"); // a fresh handle: settings are cached for a second
        let e = broker
            .queue("q")
            .unwrap()
            .consume_one()
            .expect_err(what)
            .to_string();
        assert!(e.contains("ddmq.yaml"), "{what}: {e}");
        std::fs::write(root.join("ddmq.yaml"), &text).unwrap();
        let e = Broker::open(&root).err().expect(what).to_string();
        assert!(e.contains("ddmq.yaml"), "{what}: {e}");
        std::fs::write(root.join("ddmq.yaml"), "").unwrap();
    }
    // Values at the edge of u64 are accepted and must not overflow anything.
    std::fs::write(
        &qconf,
        "cleaned: 18446744073709551615\nmessage_timeout: 18446744073709551615\n",
    )
    .unwrap();
    let q = {
        broker.forget_queue("q");
        broker.queue("q").unwrap()
    };
    q.publish(
        Value::String("edge".into()),
        &PublishOptions {
            clean: true,
            ..Default::default()
        },
    )
    .unwrap();
    let d = q
        .consume(1, &ConsumeOptions { clean: true })
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        d.work_name.expiry > ddmq::engine::now_secs(),
        "expiry wrapped around: {}",
        d.work_name
    );
    assert!(q.touch(&d.message.filename).unwrap().unwrap().expiry > ddmq::engine::now_secs());
    assert_eq!(q.clean().unwrap().requeued, 0);
    // A message file carrying a huge timeout of its own.
    std::fs::write(&qconf, "message_timeout: 60\n").unwrap();
    let q = {
        broker.forget_queue("q");
        broker.queue("q").unwrap()
    };
    q.publish(
        Value::String("own".into()),
        &PublishOptions {
            timeout: Some(u64::MAX),
            ..Default::default()
        },
    )
    .unwrap();
    let d = q.consume_one().unwrap().unwrap();
    assert!(
        d.work_name.expiry > ddmq::engine::now_secs(),
        "expiry wrapped around: {}",
        d.work_name
    );
}

#[test]
fn group_shared_queue_files_are_group_writable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // The setgid root of a shared group (gid 100, "users" on Debian; any gid works for root).
    std::os::unix::fs::chown(&root, None, Some(100)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let mut w = spawn_worker("group", &[("ROOT", root.display().to_string())]);
    assert!(
        wait_or_kill(&mut w, Duration::from_secs(60))
            .unwrap()
            .success()
    );
    let mut checked = 0;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            assert_eq!(
                m.gid(),
                100,
                "{} not in the queue's group",
                e.path().display()
            );
            let group_rw = if m.is_dir() { 0o070 } else { 0o060 };
            assert_eq!(
                m.mode() & group_rw,
                group_rw,
                "{} has mode {:o}",
                e.path().display(),
                m.mode()
            );
            if m.is_dir() {
                assert_ne!(
                    m.mode() & 0o2000,
                    0,
                    "{} lost the setgid bit",
                    e.path().display()
                );
                stack.push(e.path());
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} entries created");
}

/// Under umask 002: creates, publishes, consumes, nacks to dead/, quarantines, cleans.
fn group_worker(root: &Path) {
    unsafe { libc::umask(0o002) };
    let broker = Broker::open_or_init(root).unwrap();
    broker.create_queue("shared").unwrap();
    let q = broker.queue("shared").unwrap();
    q.write_config_text(b"dead_letter: true\n").unwrap();
    q.publish(
        Value::String("a".into()),
        &PublishOptions {
            requeue_limit: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    q.publish(Value::String("b".into()), &PublishOptions::default())
        .unwrap();
    let d = q.consume_one().unwrap().unwrap();
    q.nack(&d.message.filename, false).unwrap();
    let d = q.consume_one().unwrap().unwrap();
    q.nack(&d.message.filename, false).unwrap();
    std::fs::write(q.dir().join("0.1.ddmqbad"), "{").unwrap();
    age_file(&q.dir().join("0.1.ddmqbad"), 30);
    let _ = q.consume_one().unwrap();
    q.clean().unwrap();
}

// ------------------------------------------------------------------ two hosts over sshfs

/// Two sshfs mounts of one directory over loopback play two hosts; each runs a publisher and two
/// consumers. Every message is claimed exactly once and none is lost.
#[test]
fn two_hosts_over_sshfs_claim_every_message_exactly_once() {
    let per_publisher = env_usize("DDMQ_SSHFS_MESSAGES", 1000);
    let (tmp, shared, log_dir, q) =
        queue_with_logs("shared", "net", Some("cleaned: 0\nmessage_timeout: 600\n"));
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let mut sshd = rel_support::sshfs::Sshd::start(&keys);
    let hosts = [tmp.path().join("hostA"), tmp.path().join("hostB")];
    for h in &hosts {
        sshd.mount(&shared, h);
    }
    let mut children = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut fleet = Fleet {
            root: h.clone(),
            queue: "net".into(),
            log_dir: log_dir.clone(),
            publishers: vec![],
            consumers: vec![],
            spawned: i * 100,
            extra_env: vec![
                ("PUBLISH_LIMIT".into(), per_publisher.to_string()),
                ("MSG_TIMEOUT".into(), "600".into()),
            ],
        };
        children.push(("publish", fleet.spawn("publish")));
        for _ in 0..2 {
            children.push(("consume", fleet.spawn("consume")));
        }
    }
    for (role, c) in children.iter_mut().filter(|(r, _)| *r == "publish") {
        assert!(
            wait_or_kill(c, Duration::from_secs(180)).unwrap().success(),
            "{role}"
        );
    }
    std::fs::write(log_dir.join("stop"), "").unwrap();
    for (_, c) in children.iter_mut() {
        assert!(
            wait_or_kill(c, Duration::from_secs(180))
                .map(|s| s.success())
                .unwrap_or(false),
            "a consumer did not finish: {:?}",
            q.status(false)
        );
    }
    assert!(read_all_lines(&log_dir, "late-").is_empty());
    let (published, delivered, duplicates) = verify_delivery(&log_dir, 0);
    assert_eq!(published, 2 * per_publisher);
    assert_eq!(delivered, published);
    let by_host: Vec<usize> = (0..2)
        .map(|i| {
            (0..3)
                .map(|w| read_lines(&log_dir.join(format!("delivered-w{}", i * 100 + w + 1))).len())
                .sum()
        })
        .collect();
    let (hidden, hidden_in_work) = clear_sshfs_leftovers(&q);
    assert_nothing_left(q.dir());
    eprintln!(
        "sshfs: {published} messages published from two hosts, {delivered} delivered (host A {}, host B {}), {duplicates} duplicates, 0 lost; {hidden} .fuse_hidden copies of ddmq.yaml and {hidden_in_work} in work/ left by sshfs",
        by_host[0], by_host[1]
    );
}

// ------------------------------------------------------------------ through the mount and the CLI

/// Publishes through MNT/<q>/in: open, write in small pieces (so a kill lands mid-body), close.
/// Logs a key only after close() returned 0.
fn mount_write_worker(mnt: &Path, queue: &str, wid: &str, log_dir: &Path) {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    // DDMQ_REL_WRITE_PAUSE_MS: a pause between the pieces of a body, so that a kill often lands
    // with the body half written. (The daemon's kill check used to give up on /proc after a
    // wait, and under load a killed writer's half body was then published; it now reads /proc
    // on the FUSE thread without a time limit.)
    let pause = Duration::from_millis(env_usize("DDMQ_REL_WRITE_PAUSE_MS", 1) as u64);
    // PUBLISH_LOG=sent: traffic whose close() is not counted as a promise to deliver.
    let log_name = std::env::var("PUBLISH_LOG").unwrap_or_else(|_| "published".into());
    let log = log_dir.join(format!("{log_name}-{wid}"));
    let problems = log_dir.join(format!("problems-{wid}"));
    let limit = env_usize("PUBLISH_LIMIT", usize::MAX);
    for seq in 0..limit {
        if log_dir.join("stop").exists() {
            return;
        }
        let key = format!("{wid}-{seq}");
        let body = make_body(&key, (seq * 131) % 3000);
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join(queue).join("in"))
        {
            Ok(f) => f,
            Err(e) => {
                append_line(&problems, &format!("open in: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Between this line and the key's line in `log`, a kill lands mid-publish.
        append_line(&log_dir.join(format!("started-{wid}")), &key);
        let mut ok = true;
        for (i, chunk) in body.as_bytes().chunks(700).enumerate() {
            if i > 0 && pause > Duration::ZERO {
                std::thread::sleep(pause);
            }
            if let Err(e) = f.write_all(chunk) {
                append_line(&problems, &format!("write in: {e}"));
                ok = false;
                break;
            }
        }
        let rc = unsafe { libc::close(f.into_raw_fd()) };
        if ok && rc == 0 {
            append_line(&log, &key);
        } else if rc != 0 {
            append_line(
                &problems,
                &format!("close in: {}", std::io::Error::last_os_error()),
            );
        }
    }
}

/// Takes messages through MNT/<q>/next: reads until the body proves itself whole, logs it, then
/// reads to EOF and closes (which acks). Leaves when the queue is empty and LOG_DIR/stop exists.
fn mount_read_worker(mnt: &Path, queue: &str, wid: &str, log_dir: &Path) {
    use std::io::Read;
    let delivered = log_dir.join(format!("delivered-{wid}"));
    let problems = log_dir.join(format!("problems-{wid}"));
    let late = log_dir.join(format!("late-{wid}"));
    loop {
        let opened = Instant::now();
        let mut f = match std::fs::File::open(mnt.join(queue).join("next")) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {
                if log_dir.join("stop").exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                append_line(&problems, &format!("open next: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // The mount acks once the whole body was handed over, even to a reader killed before it
        // used it. So take the key from the first bytes (small reads never hand over a whole
        // body) and log it before the rest: a kill before the end gives the message back (a
        // duplicate), a kill after it finds it logged (not lost).
        let mut body = Vec::new();
        let mut logged = false;
        // A read that failed (the daemon died) is reported as that; a body that ended early
        // without an error is a torn body.
        let mut read_failed = false;
        let mut small = [0u8; 8];
        while !body.contains(&b'|') {
            match f.read(&mut small) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&small[..n]),
                Err(e) => {
                    append_line(&problems, &format!("read next: {e}"));
                    read_failed = true;
                    break;
                }
            }
        }
        if let Some(bar) = body.iter().position(|b| *b == b'|') {
            append_line(&delivered, &String::from_utf8_lossy(&body[..bar]));
        }
        let mut buf = [0u8; 512];
        while !read_failed {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) => {
                    append_line(&problems, &format!("read next: {e}"));
                    read_failed = true;
                }
            }
        }
        if std::str::from_utf8(&body)
            .ok()
            .and_then(check_body)
            .is_some()
        {
            logged = true;
        }
        if !logged && !read_failed {
            append_line(
                &problems,
                &format!(
                    "torn body through next: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(80)])
                ),
            );
            let _ = &delivered;
        }
        drop(f);
        // The daemon acks before this close returns. The tests' 3 s leases (whole seconds)
        // run out no sooner than 3 s after the claim; a message held over a second leaves less
        // than 2 s for the ack, so it counts as perhaps acked late, which finds it requeued: a
        // duplicate that no kill caused.
        if logged && opened.elapsed() >= Duration::from_secs(1) {
            append_line(&late, &String::from_utf8_lossy(&body[..body.len().min(40)]));
        }
    }
}

/// Live children that the killer may SIGKILL. A child is reaped only under this lock, so a pid
/// in here is never one the system has recycled.
#[derive(Default)]
struct Killable {
    pids: std::sync::Mutex<Vec<u32>>,
    sigkilled: AtomicUsize,
}

impl Killable {
    /// Runs `cmd` to its end, killable meanwhile; returns (exit status, stdout). A command that
    /// fails on its own (not SIGKILLed by [`Killable::kill_one`]) is a problem logged in
    /// `problems`, with its stderr: under kills, a failure is only ever the kill's.
    fn run(
        &self,
        cmd: &mut std::process::Command,
        problems: &Path,
    ) -> (std::process::ExitStatus, Vec<u8>) {
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.pids.lock().unwrap().push(pid);
        let mut out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let mut err = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        let status = loop {
            {
                let mut pids = self.pids.lock().unwrap();
                if let Some(st) = child.try_wait().unwrap() {
                    pids.retain(|p| *p != pid);
                    break st;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if status.signal() == Some(libc::SIGKILL) {
            self.sigkilled.fetch_add(1, Ordering::Relaxed);
        }
        let stderr = err_reader.join().unwrap();
        assert!(
            !String::from_utf8_lossy(&stderr).contains("panicked"),
            "ddmq panicked: {}",
            String::from_utf8_lossy(&stderr)
        );
        if !status.success() && status.signal() != Some(libc::SIGKILL) {
            append_line(
                problems,
                &format!(
                    "{cmd:?} failed ({status}): {}",
                    String::from_utf8_lossy(&stderr).trim()
                ),
            );
        }
        (status, reader.join().unwrap())
    }

    /// SIGKILLs one random live child, if any.
    fn kill_one(&self, rng: &mut Rng) -> bool {
        let pids = self.pids.lock().unwrap();
        if pids.is_empty() {
            return false;
        }
        let pid = pids[rng.below(pids.len() as u64) as usize];
        unsafe { libc::kill(pid as i32, libc::SIGKILL) == 0 }
    }
}

/// Parses `ddmq consume --format json` output: (key, in-flight filename) of each whole line.
fn parse_consumed(stdout: &[u8]) -> Vec<(Option<String>, String)> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let body = v.get("message")?.as_str()?.to_string();
            let file = v.get("filename")?.as_str()?.to_string();
            Some((check_body(&body).map(str::to_string), file))
        })
        .collect()
}

/// Consumes whatever is left with the engine once leases ran out, logging it as delivered.
fn drain_with_engine(q: &ddmq::engine::Queue, log_dir: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        q.clean().unwrap();
        for d in q
            .consume(usize::MAX, &ConsumeOptions { clean: false })
            .unwrap()
        {
            append_line(
                &log_dir.join("delivered-drain"),
                check_body(&d.message.body_text()).unwrap_or("TORN"),
            );
            q.ack(&d.message.filename).unwrap();
        }
        let st = q.status(false).unwrap();
        if st.waiting == 0 && st.in_flight == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "queue not drained: {st:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn chaos_sigkill_cli_processes_and_mount_readers() {
    let kills_wanted = env_usize("DDMQ_CHAOS_KILLS", 100);
    let mut rng = Rng::new("chaos-cli-mount");
    let (tmp, root, log_dir, q) = chaos_queue();
    let mnt = tmp.path().join("mnt");
    let _mount = rel_support::mount::Mount::start(&root, &mnt);
    let stop = Arc::new(AtomicBool::new(false));
    let killable = Arc::new(Killable::default());
    let mut threads = Vec::new();
    for t in 0..2 {
        let (stop, killable, root, log_dir) = (
            stop.clone(),
            killable.clone(),
            root.clone(),
            log_dir.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("cli{t}-{seq}");
                seq += 1;
                let body = make_body(&key, (seq * 53) % 2000);
                let (st, _) = killable.run(
                    std::process::Command::new(ddmq_bin())
                        .args(["publish", "-s", "-t", &CHAOS_TIMEOUT_SECS.to_string(), "-r"])
                        .arg(&root)
                        .arg("chaos")
                        .arg(&body),
                    &log_dir.join(format!("problems-cli-publish{t}")),
                );
                if st.success() {
                    append_line(&log_dir.join(format!("published-cli{t}")), &key);
                }
            }
        }));
    }
    for t in 0..2 {
        let (stop, killable, root, log_dir) = (
            stop.clone(),
            killable.clone(),
            root.clone(),
            log_dir.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (st, out) = killable.run(
                    std::process::Command::new(ddmq_bin())
                        .args(["consume", "--format", "json", "-n", "3"])
                        .arg(&root)
                        .arg("chaos"),
                    &log_dir.join(format!("problems-cli{t}")),
                );
                let got = parse_consumed(&out);
                if got.is_empty() && st.success() {
                    std::thread::sleep(Duration::from_millis(30));
                }
                let mut files = Vec::new();
                for (key, file) in got {
                    match key {
                        Some(k) => append_line(&log_dir.join(format!("delivered-cli{t}")), &k),
                        None => append_line(
                            &log_dir.join(format!("problems-cli{t}")),
                            &format!("torn body in {file}"),
                        ),
                    }
                    files.push(file);
                }
                if !files.is_empty() {
                    let (_, out) = killable.run(
                        std::process::Command::new(ddmq_bin())
                            .args(["ack"])
                            .arg(&root)
                            .arg("chaos")
                            .arg(files.join(",")),
                        &log_dir.join(format!("problems-cli{t}")),
                    );
                    // An ack after the lease ran out finds the message requeued (a duplicate
                    // that no kill caused): the CLI says "failed ack <path>" for each.
                    for line in String::from_utf8_lossy(&out).lines() {
                        if line.starts_with("failed ack ") {
                            append_line(&log_dir.join(format!("late-cli{t}")), line);
                        }
                    }
                }
            }
        }));
    }
    let spawn_mount_worker = |role: &str, n: usize| {
        spawn_worker(
            role,
            &[
                ("MNT", mnt.display().to_string()),
                ("QUEUE", "chaos".into()),
                ("WID", format!("m{n}")),
                ("LOG_DIR", log_dir.display().to_string()),
            ],
        )
    };
    let mut spawned = 0;
    let mut workers: Vec<(&str, Child)> = Vec::new();
    for role in ["mount-write", "mount-read", "mount-read"] {
        spawned += 1;
        workers.push((role, spawn_mount_worker(role, spawned)));
    }
    let mut worker_kills = 0;
    while killable.sigkilled.load(Ordering::Relaxed) + worker_kills < kills_wanted {
        std::thread::sleep(Duration::from_millis(10 + rng.below(50)));
        if rng.below(3) == 0 {
            // Mount readers and writers: a killed reader gives back what it had not read whole,
            // a killed writer publishes nothing (its partial body would show as TORN below).
            let i = rng.below(workers.len() as u64) as usize;
            let (role, mut victim) = workers.swap_remove(i);
            sigkill(&mut victim);
            worker_kills += 1;
            spawned += 1;
            workers.push((role, spawn_mount_worker(role, spawned)));
        } else {
            killable.kill_one(&mut rng);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    std::fs::write(log_dir.join("stop"), "").unwrap();
    for (role, w) in &mut workers {
        assert!(
            wait_or_kill(w, Duration::from_secs(120))
                .map(|s| s.success())
                .unwrap_or(false),
            "{role} worker did not finish"
        );
    }
    drain_with_engine(&q, &log_dir, Duration::from_secs(60));
    let (claims, temps) = recover_leftovers(&q);
    drain_with_engine(&q, &log_dir, Duration::from_secs(10));
    let kills = killable.sigkilled.load(Ordering::Relaxed) + worker_kills;
    // As in the engine's chaos test: each kill and each ack after its lease ran out may
    // deliver a message twice.
    let late = read_all_lines(&log_dir, "late-").len();
    let (published, delivered, duplicates) = verify_delivery(&log_dir, kills + late);
    assert!(
        !read_all_lines(&log_dir, "delivered-")
            .iter()
            .any(|k| k == "TORN"),
        "a torn message was published"
    );
    // Every kind of client did its part: a run where every publish (or every consume) failed
    // would otherwise prove nothing.
    for (log, what) in [
        ("published-cli", "ddmq publish"),
        ("published-m", "writers through the mount"),
        ("delivered-cli", "ddmq consume"),
        ("delivered-m", "readers through the mount"),
    ] {
        assert!(
            !read_all_lines(&log_dir, log).is_empty(),
            "{what} moved no message"
        );
    }
    assert_nothing_left(q.dir());
    eprintln!(
        "chaos (CLI and mount): {kills} kills ({worker_kills} mount readers and writers), {published} published, {delivered} delivered, {duplicates} duplicates, {late} acks perhaps after lease expiry, {claims} claims and {temps} temporary files recovered, 0 torn, 0 lost"
    );
}

#[test]
fn daemon_sigkilled_under_traffic_then_remounted_loses_nothing() {
    daemon_killed_under_traffic("publish");
}

/// The daemon SIGKILLed while `writer` workers publish and a mount reader consumes; remounted,
/// everything published is delivered.
fn daemon_killed_under_traffic(writer: &str) {
    use std::io::Read;
    let (tmp, root, log_dir, q) = queue_with_logs(
        "root",
        "dk",
        Some("cleaned: 0\nmessage_timeout: 3\nrequeue: true\n"),
    );
    let mnt = tmp.path().join("mnt");
    for i in 0..200 {
        let key = format!("pre-{i}");
        q.publish(
            Value::String(make_body(&key, 100)),
            &PublishOptions::default(),
        )
        .unwrap();
        append_line(&log_dir.join("published-pre"), &key);
    }
    let mut mount = rel_support::mount::Mount::start(&root, &mnt);
    // In flight through the mount: claimed, never acked.
    let mut claimed = Vec::new();
    for _ in 0..10 {
        let mut text = String::new();
        std::fs::File::open(mnt.join("dk/claim"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let m = ddmq::engine::Message::from_json(text.trim().as_bytes()).unwrap();
        claimed.push(check_body(&m.body_text()).unwrap().to_string());
    }
    let envs = |wid: &str| {
        vec![
            ("MNT", mnt.display().to_string()),
            ("ROOT", root.display().to_string()),
            ("QUEUE", "dk".to_string()),
            ("WID", wid.to_string()),
            ("LOG_DIR", log_dir.display().to_string()),
            ("MSG_TIMEOUT", "3".to_string()),
        ]
    };
    // The writers whose published messages are counted: engine processes, or mount writers
    // (a close() of MNT/<q>/in that returned 0 is a promise that survives the daemon's death);
    // with engine writers, mount writers run too, as traffic through the daemon whose messages
    // must arrive whole or not at all.
    let mut workers = vec![
        spawn_worker(writer, &envs("mw1")),
        spawn_worker(writer, &envs("mw2")),
    ];
    let readers = ["mr1a", "mr1b", "mr1c"];
    for wid in readers {
        workers.push(spawn_worker("mount-read", &envs(wid)));
    }
    if writer != "mount-write" {
        for wid in ["sw1", "sw2"] {
            let mut e = envs(wid);
            e.push(("PUBLISH_LOG", "sent".to_string()));
            workers.push(spawn_worker("mount-write", &e));
        }
    }
    // Kill the daemon only once traffic flows through it both ways.
    let written_log = if writer == "mount-write" {
        "published-mw"
    } else {
        "sent-"
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_all_lines(&log_dir, "delivered-mr1").len() < 20
        || read_all_lines(&log_dir, written_log).len() < 20
    {
        assert!(Instant::now() < deadline, "no traffic through the daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = q.status(false).unwrap();
    let through_daemon = (
        read_all_lines(&log_dir, "delivered-mr1").len(),
        read_all_lines(&log_dir, written_log).len(),
    );
    mount.kill();
    for w in &mut workers {
        sigkill(w);
    }
    // The workers saw the daemon die (ENOTCONN, or ECONNABORTED for a request in progress), or,
    // once the dead mount was detached, an empty mountpoint (ENOENT opening a file): expected,
    // not a problem of the queue. Every other report, a torn body above all, stays.
    let errno_text = |n| std::io::Error::from_raw_os_error(n).to_string();
    for e in std::fs::read_dir(&log_dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("problems-") {
            let kept: Vec<String> = read_lines(&e.path())
                .into_iter()
                .filter(|l| {
                    let daemon_gone = l.contains(&errno_text(libc::ENOTCONN))
                        || l.contains(&errno_text(libc::ECONNABORTED))
                        || (l.starts_with("open ") && l.contains(&errno_text(libc::ENOENT)));
                    !daemon_gone
                })
                .collect();
            std::fs::remove_file(e.path()).unwrap();
            for l in kept {
                append_line(&e.path(), &l);
            }
        }
    }
    let mut mount = rel_support::mount::Mount::start(&root, &mnt);
    std::thread::sleep(Duration::from_secs(4)); // the claimed messages' timeout
    // A daemon killed between a take's two renames leaves the message under its `.take-` name,
    // given back by housekeeping once a minute old: aged here, as that minute would.
    age_claims(&q.dir().join("work"), 400);
    q.clean().unwrap();
    // Drain through the new mount.
    let mut reader = spawn_worker("mount-read", &envs("mr2"));
    std::fs::write(log_dir.join("stop"), "").unwrap();
    assert!(
        wait_or_kill(&mut reader, Duration::from_secs(120))
            .unwrap()
            .success()
    );
    drain_with_engine(&q, &log_dir, Duration::from_secs(30));
    mount.stop();
    let delivered = read_all_lines(&log_dir, "delivered-mr2");
    for k in &claimed {
        assert!(
            delivered.contains(k),
            "in-flight message {k} did not come back after its timeout"
        );
    }
    // Each mount reader logs a key before it has read the whole body, so each one the kill
    // interrupted may see its message again, as may one acked late; 10 is the original margin.
    let late = read_all_lines(&log_dir, "late-").len();
    let (published, delivered, duplicates) = verify_delivery(&log_dir, 10 + readers.len() + late);
    let all_delivered = read_all_lines(&log_dir, "delivered-");
    assert!(
        !all_delivered.iter().any(|k| k == "TORN"),
        "a torn body was published"
    );
    let sent = read_all_lines(&log_dir, "sent-");
    let sent_delivered = sent.iter().filter(|k| all_delivered.contains(k)).count();
    // A publish the kill cut short leaves its temporary file: housekeeping removes it once stale.
    recover_leftovers(&q);
    assert_nothing_left(q.dir());
    eprintln!(
        "daemon kill: killed with {} waiting and {} in flight, after {} messages read and {} written through the daemon; {published} published, {delivered} delivered, {duplicates} duplicates, 10 claimed messages came back after their timeout, 0 lost; of {} messages written through the mount, {sent_delivered} delivered",
        before.waiting,
        before.in_flight,
        through_daemon.0,
        through_daemon.1,
        sent.len()
    );
}

#[test]
fn soak_mount_and_cli_memory_fds_flat_nothing_lost() {
    let total = env_usize("DDMQ_SOAK_MESSAGES", 20_000);
    let (tmp, root, log_dir, q) = queue_with_logs("root", "soak", None);
    let mnt = tmp.path().join("mnt");
    let mount = rel_support::mount::Mount::start(&root, &mnt);
    // Half through the mount (2 writers), half through `ddmq publish --lines` in batches.
    let mount_share = total / 2 / 2;
    let envs = |wid: &str| {
        vec![
            ("MNT", mnt.display().to_string()),
            ("QUEUE", "soak".to_string()),
            ("WID", wid.to_string()),
            ("LOG_DIR", log_dir.display().to_string()),
            ("PUBLISH_LIMIT", mount_share.to_string()),
        ]
    };
    let mut writers = vec![
        spawn_worker("mount-write", &envs("mw1")),
        spawn_worker("mount-write", &envs("mw2")),
    ];
    let mut readers = vec![
        spawn_worker("mount-read", &envs("mr1")),
        spawn_worker("mount-read", &envs("mr2")),
    ];
    let cli_total = total - 2 * mount_share;
    let cli = {
        let (root, log_dir) = (root.clone(), log_dir.clone());
        std::thread::spawn(move || {
            let mut sent = 0;
            while sent < cli_total {
                let n = (cli_total - sent).min(1000);
                let keys: Vec<String> = (sent..sent + n).map(|i| format!("cli-{i}")).collect();
                let input: String = keys.iter().map(|k| make_body(k, 50) + "\n").collect();
                let (code, _, err) = ddmq(
                    &[
                        "publish",
                        "-s",
                        "--lines",
                        &root.display().to_string(),
                        "soak",
                        "-",
                    ],
                    Some(input.as_bytes()),
                );
                assert_eq!(code, 0, "publish --lines: {err}");
                for k in &keys {
                    append_line(&log_dir.join("published-cli"), k);
                }
                sent += n;
                // A CLI consumer too, acking as it goes.
                let (code, out, err) = ddmq(
                    &[
                        "consume",
                        "--ack",
                        "--format",
                        "json",
                        "-n",
                        "500",
                        &root.display().to_string(),
                        "soak",
                    ],
                    None,
                );
                assert_eq!(code, 0, "consume --ack: {err}");
                for (key, file) in parse_consumed(out.as_bytes()) {
                    append_line(
                        &log_dir.join("delivered-cli"),
                        key.as_deref().unwrap_or_else(|| panic!("torn {file}")),
                    );
                }
            }
        })
    };
    let pid = mount.pid();
    let mut samples = Vec::new();
    let started = Instant::now();
    while !cli.is_finished() || writers.iter_mut().any(|w| w.try_wait().unwrap().is_none()) {
        std::thread::sleep(Duration::from_secs(1));
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "2"); // the kernel forgets inodes: FORGETs reach the daemon
        samples.push(proc_usage(pid));
    }
    cli.join().unwrap();
    for w in &mut writers {
        assert!(w.wait().unwrap().success());
    }
    std::fs::write(log_dir.join("stop"), "").unwrap();
    for r in &mut readers {
        assert!(wait_or_kill(r, Duration::from_secs(300)).unwrap().success());
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
    std::thread::sleep(Duration::from_millis(500));
    let end = proc_usage(pid);
    let (published, delivered, duplicates) = verify_delivery(&log_dir, 0);
    assert_eq!(published, total);
    assert_nothing_left(q.dir());
    let warm = samples.get(samples.len() / 10).copied().unwrap_or(end);
    let peak = samples.iter().map(|s| s.0).max().unwrap_or(end.0);
    eprintln!(
        "soak: {published} messages through one mount and the CLI in {:?}, {delivered} delivered, {duplicates} duplicates; daemon RSS {} KiB after warm-up, {} KiB peak, {} KiB at the end; fds {} -> {}",
        started.elapsed(),
        warm.0,
        peak,
        end.0,
        warm.1,
        end.1
    );
    assert!(
        end.1 <= warm.1 + 2,
        "daemon descriptors grew from {} to {}",
        warm.1,
        end.1
    );
    assert!(
        end.0 <= warm.0 * 2 + 16 * 1024,
        "daemon memory grew from {} KiB to {} KiB",
        warm.0,
        end.0
    );
}

/// Asserts a failed CLI call: non-zero exit, a one-line clear error on stderr, no panic.
fn assert_cli_refuses(args: &[&str], stdin: Option<&[u8]>, wanted: &str) {
    let (code, _out, err) = ddmq(args, stdin);
    assert!(
        code != 0 && code != 101,
        "ddmq {args:?} exited {code}: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "ddmq {args:?} panicked: {err}"
    );
    assert!(
        err.to_lowercase().contains(&wanted.to_lowercase()),
        "ddmq {args:?}: expected {wanted:?} in {err:?}"
    );
}

#[test]
fn cli_refuses_hostile_input_clearly() {
    let (tmp, root, broker) = fresh_root();
    let r = root.display().to_string();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let long = "q".repeat(300);
    for bad in ["a/b", "..", "../escape", long.as_str(), "a.b"] {
        assert_cli_refuses(&["publish", &r, bad, "x"], None, "invalid queue name");
        // create keeps the original's soft failure: a "Skipping" line, exit 0, nothing created.
        let (code, out, err) = ddmq(&["create", &r, bad], None);
        assert_eq!(
            (code, out.as_str()),
            (0, format!("Skipping {bad}, invalid name\n").as_str()),
            "create {bad:?}: {err}"
        );
    }
    // Names given to ack, nack and del_msg are never joined into a path: a path to the victim,
    // or back to a real message of the queue, is refused (exit 1) and touches nothing.
    let q = broker.queue("q").unwrap();
    q.publish(Value::String("waiting".into()), &PublishOptions::default())
        .unwrap();
    q.publish(
        Value::String("in flight".into()),
        &PublishOptions::default(),
    )
    .unwrap();
    let taken = q.consume_one().unwrap().unwrap().work_name;
    let waiting = q.waiting().unwrap()[0].to_string();
    let v = victim.display().to_string();
    for bad in [
        v.clone(),
        "../../victim".into(),
        "work/../../../victim".into(),
        "1.1.1.ddmqab/../../../../victim".into(),
        format!("work/{taken}"),
        format!("../q/work/{taken}"),
        format!("{r}/q/work/{taken}"),
        format!("../q/{waiting}"),
        format!("./{waiting}"),
    ] {
        for cmd in ["ack", "nack", "del_msg"] {
            let (code, _, err) = ddmq(&[cmd, &r, "q", &bad], None);
            assert_eq!(code, 1, "{cmd} {bad}: {err}");
            assert!(
                err.starts_with(&format!("Error: invalid message file name or id {bad:?}")),
                "{cmd} {bad}: {err}"
            );
            assert_eq!(
                (q.waiting().unwrap().len(), q.in_flight().unwrap().len()),
                (1, 1),
                "{cmd} {bad} reached a message"
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    q.purge().unwrap();
    let mut top = names_in(&root);
    top.retain(|n| n != "work");
    assert_eq!(
        top,
        ["ddmq.yaml", "ddmq.yaml.example", "q"],
        "a hostile name created something"
    );
    assert_eq!(names_in(tmp.path()), ["root", "victim"]);
    // The json command never evaluates anything.
    let pwned = tmp.path().join("pwned");
    for payload in [
        format!(
            r#"{{"command": "__import__('os').system('touch {}')", "root": "{r}"}}"#,
            pwned.display()
        ),
        format!(
            r#"{{"command": "view; touch {}", "root": "{r}"}}"#,
            pwned.display()
        ),
        format!(
            r#"{{"command": "$(touch {})", "root": "{r}"}}"#,
            pwned.display()
        ),
        format!(
            r#"{{"command": "view", "root": "`touch {}`"}}"#,
            pwned.display()
        ),
        r#"{"command": {"nested": 1}}"#.to_string(),
        "[]".to_string(),
        "not json".to_string(),
    ] {
        let (code, _, err) = ddmq(&["json", &payload], None);
        assert!(
            code != 0 && !err.contains("panicked"),
            "json {payload}: exit {code}: {err}"
        );
    }
    assert!(!pwned.exists(), "the json command ran code");
    let (code, out, _) = ddmq(
        &[
            "json",
            &format!(r#"{{"command": "view", "root": "{r}", "format": "json"}}"#),
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(out.contains("\"q\""), "{out}");
    // A YAML bomb as settings: a clear error naming the file.
    std::fs::write(root.join("q/ddmq.yaml"), "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n").unwrap();
    assert_cli_refuses(&["publish", &r, "q", "x"], None, "ddmq.yaml");
    std::fs::write(root.join("q/ddmq.yaml"), "cleaned: 0\n").unwrap();
    // A huge message: refused whole, nothing written.
    let big = vec![b'x'; (16 << 20) + 1];
    assert_cli_refuses(&["publish", &r, "q", "-"], Some(&big), "larger than");
    assert!(broker.queue("q").unwrap().waiting().unwrap().is_empty());
}

#[test]
fn cli_disk_full_clear_error_then_resumes() {
    let fs = SmallFs::new("1m");
    let root = fs.path().join("root");
    let r = root.display().to_string();
    let broker = Broker::open_or_init(&root).unwrap();
    broker.create_queue("q").unwrap();
    let body = "y".repeat(8000);
    let mut ok = 0;
    let err = loop {
        let (code, _, err) = ddmq(&["publish", "-s", &r, "q", &body], None);
        if code != 0 {
            break err;
        }
        ok += 1;
        assert!(ok < 1000, "a 1 MiB filesystem never filled");
    };
    assert!(
        err.contains("No space left on device") && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        names_in(&root.join("q"))
            .iter()
            .all(|n| !n.starts_with(".tmp-"))
    );
    let (code, out, err) = ddmq(
        &["consume", "--ack", "--format", "json", "-n", "3", &r, "q"],
        None,
    );
    assert_eq!(code, 0, "consume --ack on a full disk: {err}");
    assert_eq!(parse_consumed(out.as_bytes()).len(), 3);
    let (code, _, err) = ddmq(&["publish", "-s", &r, "q", "small"], None);
    assert_eq!(code, 0, "publish after space was freed: {err}");
    assert_eq!(
        broker.queue("q").unwrap().status(false).unwrap().waiting,
        ok - 3 + 1
    );
}

/// `consume --wait` on a full disk: the housekeeping due first cannot stamp `cleaned`, and
/// that must not stop the consume (housekeeping is best effort on every path).
#[test]
fn cli_consume_wait_delivers_when_housekeeping_cannot_write() {
    let fs = SmallFs::new("256k");
    let root = fs.path().join("root");
    let r = root.display().to_string();
    let broker = Broker::open_or_init(&root).unwrap();
    broker.create_queue("q").unwrap();
    let q = broker.queue("q").unwrap();
    let mut published = 0;
    for size in [4096usize, 64, 1] {
        while q
            .publish(
                Value::String(make_body(&format!("k{published}"), size)),
                &PublishOptions::default(),
            )
            .is_ok()
        {
            published += 1;
        }
    }
    // The premise: housekeeping is due (never ran) and fails for want of space.
    match q.clean() {
        Err(e) => assert!(is_enospc(&e), "housekeeping failed otherwise: {e}"),
        Ok(report) => panic!("housekeeping wrote its stamp on a full disk: {report:?}"),
    }
    let (code, out, err) = ddmq(
        &[
            "consume", "--wait", "5", "-n", "2", "--format", "json", &r, "q",
        ],
        None,
    );
    assert_eq!(code, 0, "consume --wait on a full disk: {err}");
    let got = parse_consumed(out.as_bytes());
    assert_eq!(got.len(), 2, "{out}");
    assert!(got.iter().all(|(key, _)| key.is_some()), "{out}");
    assert!(
        err.contains("housekeeping of queue q failed") && err.contains("No space left"),
        "the failed housekeeping is not reported: {err}"
    );
    assert_eq!(q.status(false).unwrap().in_flight, 2);
}

/// Closes `f` and returns what close() said (dropping a File ignores it).
fn close_file(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    // SAFETY: the descriptor comes from `into_raw_fd`, so nothing else owns or closes it.
    match unsafe { libc::close(f.into_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Writes `data` to a mount file and closes it: Ok only if both the writes and close() were.
fn write_and_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let written = f.write_all(data);
    let closed = close_file(f);
    written.and(closed)
}

/// Publishes `marker` through MNT/q/in and waits until it is waiting: the daemon serves requests
/// in order (one thread), so whatever an earlier close sent it has been handled by then.
fn barrier_through_in(mnt: &Path, q: &ddmq::engine::Queue, marker: &str) {
    write_and_close(&mnt.join("q/in"), marker.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !q.waiting().unwrap().iter().any(|w| {
        q.read_waiting(w)
            .unwrap()
            .is_some_and(|m| m.body_text() == marker)
    }) {
        assert!(Instant::now() < deadline, "{marker} never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every name and id that reaches the daemon is checked before it becomes a path, and nothing
/// outside the queue (or inside it but not named by a valid id) is touched. The kernel resolves
/// `.`, `..` and `/` itself, so what reaches the daemon as text is: single path components (any
/// bytes but `/` and NUL, UTF-8 or not), and the lines written to ack and nack.
#[test]
fn mount_refuses_paths_out_of_the_queue() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (tmp, root, broker) = fresh_root();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let q = broker.queue("q").unwrap();
    q.publish(
        Value::String("in flight".into()),
        &PublishOptions::default(),
    )
    .unwrap();
    let taken = q.consume_one().unwrap().unwrap();
    let work_name = taken.work_name.to_string();
    let in_flight = || q.in_flight().unwrap().len();
    // Not-UTF-8 names planted on disk, where a lossy conversion would find something.
    let planted = root.join("q/work").join(OsStr::from_bytes(b"\xff.planted"));
    std::fs::write(&planted, "not ours").unwrap();
    let mnt = tmp.path().join("mnt");
    let _m = rel_support::mount::Mount::start(&root, &mnt);

    // Lines of ack and nack name messages by id or work/ name; paths, to the victim or back to
    // the in-flight message itself, and not-UTF-8 lines are refused and settle nothing.
    let victim_path = victim.display().to_string();
    let through_root = format!("../../{}", root.file_name().unwrap().to_str().unwrap());
    let hostile = [
        victim_path.as_bytes().to_vec(),
        b"../../victim".to_vec(),
        format!("{through_root}/q/work/{work_name}").into_bytes(),
        format!("work/{work_name}").into_bytes(),
        format!("../q/work/{work_name}").into_bytes(),
        format!("{}/q/work/{work_name}", root.display()).into_bytes(),
        [taken.message.id.as_bytes(), b"\xff"].concat(),
        [work_name.as_bytes(), b"\xc3"].concat(),
    ];
    for file in ["ack", "nack"] {
        for line in &hostile {
            let shown = String::from_utf8_lossy(line);
            let result = write_and_close(&mnt.join("q").join(file), &[&line[..], b"\n"].concat());
            assert!(result.is_err(), "{file} accepted {shown:?}");
            assert_eq!(in_flight(), 1, "{file} of {shown:?} settled the message");
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

    // Names in directories: only ids exist in work/; nothing else is found or removed.
    let names: [&[u8]; 5] = [
        b"\xff.planted",
        b"ddmq.yaml",
        work_name.as_bytes(),
        b"..x",
        b"\xff",
    ];
    for name in names {
        let p = mnt.join("q/work").join(OsStr::from_bytes(name));
        assert!(std::fs::remove_file(&p).is_err(), "unlink {p:?} accepted");
        assert!(std::fs::symlink_metadata(&p).is_err(), "{p:?} found");
    }
    assert!(planted.exists() && root.join("q/ddmq.yaml").exists());
    assert_eq!(in_flight(), 1);
    let mkdir_names: [&[u8]; 5] = [b"a.b", b"..x", &[b'q'; 300], b"q2\xff", b"\xc3"];
    for name in mkdir_names {
        let p = mnt.join(OsStr::from_bytes(name));
        assert!(std::fs::create_dir(&p).is_err(), "mkdir {p:?} accepted");
    }
    assert_eq!(broker.list_queues().unwrap(), ["q"], "a queue was made");

    // A message written through `in` that is not UTF-8, or too big, is refused and not published.
    let refused = write_and_close(&mnt.join("q/in"), b"caf\xc3\x28 and more");
    assert!(refused.is_err(), "a body that is not UTF-8 was accepted");
    barrier_through_in(&mnt, &q, "marker 1");
    assert_eq!(q.waiting().unwrap().len(), 1, "the bad body was published");
    q.write_config_text(b"max_message_bytes: 1000\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // the daemon reads settings once a second
    let refused = write_and_close(&mnt.join("q/in"), &[b'x'; 2000]);
    assert!(
        refused.is_err(),
        "a body over max_message_bytes was accepted"
    );
    barrier_through_in(&mnt, &q, "marker 2");
    assert_eq!(q.waiting().unwrap().len(), 2, "the big body was published");
}

#[test]
fn two_hosts_over_sshfs_with_a_mount_on_each() {
    let per_writer = env_usize("DDMQ_SSHFS_MESSAGES", 300) / 2;
    let (tmp, shared, log_dir, q) = queue_with_logs("shared", "net", None);
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let mut sshd = rel_support::sshfs::Sshd::start(&keys);
    let mut mounts = Vec::new();
    let mut workers = Vec::new();
    for h in ["A", "B"] {
        let host_root = tmp.path().join(format!("host{h}"));
        sshd.mount(&shared, &host_root);
        let mnt = tmp.path().join(format!("mnt{h}"));
        mounts.push(rel_support::mount::Mount::start(&host_root, &mnt));
        let envs = |role: &str| {
            vec![
                ("MNT", mnt.display().to_string()),
                ("ROOT", host_root.display().to_string()),
                ("QUEUE", "net".to_string()),
                ("WID", format!("{role}{h}")),
                ("LOG_DIR", log_dir.display().to_string()),
                ("PUBLISH_LIMIT", per_writer.to_string()),
                ("MSG_TIMEOUT", "600".to_string()),
            ]
        };
        workers.push(("w", spawn_worker("mount-write", &envs("mw"))));
        workers.push(("w", spawn_worker("publish", &envs("pub"))));
        workers.push(("r", spawn_worker("mount-read", &envs("mr"))));
        workers.push(("r", spawn_worker("consume", &envs("con"))));
    }
    for (_, w) in workers.iter_mut().filter(|(k, _)| *k == "w") {
        assert!(wait_or_kill(w, Duration::from_secs(240)).unwrap().success());
    }
    std::fs::write(log_dir.join("stop"), "").unwrap();
    for (_, w) in workers.iter_mut().filter(|(k, _)| *k == "r") {
        assert!(
            wait_or_kill(w, Duration::from_secs(240))
                .map(|s| s.success())
                .unwrap_or(false)
        );
    }
    drain_with_engine(&q, &log_dir, Duration::from_secs(30));
    let (published, delivered, duplicates) = verify_delivery(&log_dir, 0);
    assert_eq!(published, 4 * per_writer);
    clear_sshfs_leftovers(&q);
    assert_nothing_left(q.dir());
    eprintln!(
        "sshfs with mounts: {published} published through two hosts' mounts and engines, {delivered} delivered, {duplicates} duplicates, 0 lost"
    );
}

/// The daemon SIGKILLed right after a writer's close() of MNT/<q>/in returned 0: the message
/// is stored (close is the commit point, not the RELEASE the kernel sends afterwards). Then
/// the daemon-kill test with writers publishing through the mount.
#[test]
fn daemon_killed_after_a_successful_close_of_in_loses_nothing() {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let (tmp, root, _log_dir, q) = queue_with_logs("root", "ck", None);
    let mnt = tmp.path().join("mnt-close");
    for round in 0..10 {
        let mut mount = rel_support::mount::Mount::start(&root, &mnt);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("ck/in"))
            .unwrap();
        f.write_all(format!("round {round}").as_bytes()).unwrap();
        // SAFETY: the descriptor was just taken out of `f`, which no longer owns it.
        let rc = unsafe { libc::close(f.into_raw_fd()) };
        assert_eq!(rc, 0, "close of in");
        mount.kill();
        assert_eq!(
            q.status(false).unwrap().waiting,
            round + 1,
            "round {round}: a message whose close returned 0 is stored"
        );
    }
    daemon_killed_under_traffic("mount-write");
}

/// Writers through MNT/<q>/in killed mid-body: nothing truncated may be published.
#[test]
fn killed_mount_writer_never_publishes_a_torn_body() {
    let mut rng = Rng::new("mount-writer-kill");
    let (tmp, root, log_dir, q) = queue_with_logs("root", "mw", None);
    let mnt = tmp.path().join("mnt");
    let _mount = rel_support::mount::Mount::start(&root, &mnt);
    let envs = |wid: String| {
        vec![
            ("MNT", mnt.display().to_string()),
            ("QUEUE", "mw".to_string()),
            ("WID", wid),
            ("LOG_DIR", log_dir.display().to_string()),
            // Bodies written in pieces with pauses between, so that kills land mid-body.
            ("DDMQ_REL_WRITE_PAUSE_MS", "3".to_string()),
        ]
    };
    let mut killed_mid_body = 0;
    for i in 0..30 {
        let wid = format!("w{i}");
        let mut w = spawn_worker("mount-write", &envs(wid.clone()));
        std::thread::sleep(Duration::from_millis(20 + rng.below(80)));
        sigkill(&mut w);
        let started = read_lines(&log_dir.join(format!("started-{wid}")));
        let published = read_lines(&log_dir.join(format!("published-{wid}")));
        // The last body started and not published (close() did not return 0) was cut by the kill.
        killed_mid_body += (started.len() > published.len()) as usize;
    }
    let problems = read_all_lines(&log_dir, "problems-");
    assert!(
        problems.is_empty(),
        "writers failed on their own: {problems:#?}"
    );
    let published = read_all_lines(&log_dir, "published-");
    assert!(!published.is_empty(), "30 writers published nothing");
    assert!(killed_mid_body > 0, "no kill landed mid-body");
    let mut torn = 0;
    let mut delivered = std::collections::HashSet::new();
    for d in q
        .consume(usize::MAX, &ConsumeOptions { clean: false })
        .unwrap()
    {
        match check_body(&d.message.body_text()) {
            Some(key) => {
                delivered.insert(key.to_string());
            }
            None => torn += 1,
        }
    }
    assert_eq!(
        torn, 0,
        "{torn} truncated bodies published by 30 killed writers"
    );
    let lost: Vec<_> = published
        .iter()
        .filter(|k| !delivered.contains(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "closed with 0 and not in the queue: {lost:?}"
    );
    eprintln!(
        "killed mount writers: {} published, {killed_mid_body} of 30 kills mid-body, 0 torn",
        published.len()
    );
}
