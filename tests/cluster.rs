//! Exactly once across hosts, on real distributed filesystems: GlusterFS and MooseFS, each
//! mounted two and three times on this machine. Each client mount has its own caches (entries,
//! attributes, pages), as a host of a cluster does; that is what the sshfs tests could not show
//! (a host still caching a name that another host just renamed).
//!
//! Every scenario publishes self-naming bodies from every host and checks that each one was
//! delivered exactly once, that nothing is left in the queue, and that no process failed:
//! - CLI loops: `ddmq publish --lines` and `ddmq consume --ack -n 20` on every host;
//! - `ddmq work -j 2` on every host;
//! - `ddmq mount` on every host, bash writing `in` and `cat next` readers, a CLI publisher beside;
//! - a farm whose tasks outlive their lease, renewed by the runner, while a cleaner and a second
//!   runner work on another host: each task runs once.
//!
//! DDMQ_CLUSTER_MESSAGES sets the messages per scenario (default 600; the runs used 2000).

mod rel_support;

use rel_support::cluster::{Cluster, Kind};
use rel_support::{ddmq_bin, env_usize, names_in, wait_or_kill};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn ddmq() -> Command {
    let mut c = Command::new(ddmq_bin());
    c.stdin(Stdio::null());
    c
}

/// Every process of a scenario that failed, with its stderr: the scenario fails if any did.
#[derive(Default, Clone)]
struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    fn check(&self, what: &str, out: &Output) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("Error") || stderr.contains("panicked") {
            self.0
                .lock()
                .unwrap()
                .push(format!("{what}: {} {}", out.status, stderr.trim_end()));
        }
    }

    fn assert_none(&self, scenario: &str) {
        let f = self.0.lock().unwrap();
        assert!(f.is_empty(), "{scenario}: processes failed: {:#?}", &f[..]);
    }
}

/// Writes `lines` to the child's stdin, one a line, and closes it.
fn feed_lines(child: &mut Child, lines: &[String]) {
    let mut input = lines.join("\n");
    input.push('\n');
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
}

/// Publishes `bodies` to queue `q` of `root` with `ddmq publish --lines`, 50 a process.
fn spawn_cli_publisher_of(
    root: PathBuf,
    bodies: Vec<String>,
    failures: Failures,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for chunk in bodies.chunks(50) {
            let mut child = ddmq()
                .args(["publish", "-s", "--lines"])
                .arg(&root)
                .args(["q", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            feed_lines(&mut child, chunk);
            failures.check("ddmq publish", &child.wait_with_output().unwrap());
        }
    })
}

/// A queue on the shared volume, seen from each host's mount.
struct Scenario {
    name: String,
    hosts: Vec<PathBuf>,
    queue: String,
    failures: Failures,
    delivered: Arc<Mutex<Vec<String>>>,
}

impl Scenario {
    fn new(cluster: &Cluster, name: &str, hosts: usize, settings: &str) -> Scenario {
        let root = format!("root-{name}");
        let hosts: Vec<PathBuf> = cluster.mounts[..hosts]
            .iter()
            .map(|m| m.join(&root))
            .collect();
        let out = ddmq()
            .args(["create", "-f"])
            .arg(&hosts[0])
            .arg("q")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // Replaced as ddmq replaces it (a rename), then seen by every host before anything runs:
        // a queue another host created a moment ago is not what these scenarios test.
        let tmp = hosts[0].join("q/.tmp-settings");
        std::fs::write(&tmp, settings).unwrap();
        std::fs::rename(&tmp, hosts[0].join("q/ddmq.yaml")).unwrap();
        for h in &hosts {
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::fs::read_to_string(h.join("q/ddmq.yaml"))
                .ok()
                .as_deref()
                != Some(settings)
                || !h.join("q/work").is_dir()
            {
                assert!(
                    Instant::now() < deadline,
                    "{} never saw the queue",
                    h.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Scenario {
            name: format!("{:?} {name}", cluster.kind),
            hosts,
            queue: "q".into(),
            failures: Failures::default(),
            delivered: Arc::default(),
        }
    }

    /// The bodies host `h` publishes: `h<h>-<i>`.
    fn bodies(&self, h: usize, per_host: usize) -> Vec<String> {
        (0..per_host).map(|i| format!("h{h}-{i}")).collect()
    }

    /// Publishes host `h`'s bodies with `ddmq publish --lines`, 50 a process.
    fn spawn_cli_publisher(&self, h: usize, per_host: usize) -> std::thread::JoinHandle<()> {
        spawn_cli_publisher_of(
            self.hosts[h].clone(),
            self.bodies(h, per_host),
            self.failures.clone(),
        )
    }

    /// `ddmq consume --ack -n 20 --format json` in a loop until `done` is set and a consume
    /// finds nothing.
    fn spawn_cli_consumer(&self, h: usize, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let root = self.hosts[h].clone();
        let queue = self.queue.clone();
        let failures = self.failures.clone();
        let delivered = self.delivered.clone();
        std::thread::spawn(move || {
            loop {
                let finished = done.load(Ordering::SeqCst);
                let out = ddmq()
                    .args(["consume", "--ack", "-n", "20", "--format", "json"])
                    .arg(&root)
                    .arg(&queue)
                    .output()
                    .unwrap();
                failures.check("ddmq consume --ack", &out);
                let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with('{'))
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["message"].as_str().unwrap().to_string()
                    })
                    .collect();
                let empty = got.is_empty();
                delivered.lock().unwrap().extend(got);
                if empty {
                    if finished {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    }

    /// Each published body delivered exactly once, nothing left in the queue, no failure.
    fn verify(&self, published: &[String], started: Instant) {
        self.failures.assert_none(&self.name);
        let delivered = self.delivered.lock().unwrap();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for d in delivered.iter() {
            *counts.entry(d.as_str()).or_default() += 1;
        }
        let duplicates: Vec<(&&str, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
        let lost: Vec<&String> = published
            .iter()
            .filter(|p| !counts.contains_key(p.as_str()))
            .collect();
        let foreign: Vec<&&str> = counts
            .keys()
            .filter(|k| !published.iter().any(|p| p == **k))
            .collect();
        assert!(
            duplicates.is_empty() && lost.is_empty() && foreign.is_empty(),
            "{}: {} published, {} deliveries: {} delivered more than once (e.g. {:?}), {} never (e.g. {:?}), {} not published (e.g. {:?})",
            self.name,
            published.len(),
            delivered.len(),
            duplicates.len(),
            &duplicates[..duplicates.len().min(5)],
            lost.len(),
            &lost[..lost.len().min(5)],
            foreign.len(),
            &foreign[..foreign.len().min(5)]
        );
        let qdir = self.hosts[0].join(&self.queue);
        let left: Vec<String> = names_in(&qdir)
            .into_iter()
            .filter(|n| n != "ddmq.yaml" && n != "work")
            .chain(names_in(&qdir.join("work")))
            .collect();
        assert!(
            left.is_empty(),
            "{}: left in the queue: {left:?}",
            self.name
        );
        eprintln!(
            "{}: {} messages from {} hosts, each delivered once, nothing left, no process failed ({:.1} s)",
            self.name,
            published.len(),
            self.hosts.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// One publisher and two `ddmq consume --ack -n 20` loops on every host.
fn cli_loops(cluster: &Cluster, hosts: usize, messages: usize) {
    let s = Scenario::new(
        cluster,
        &format!("cli-{hosts}"),
        hosts,
        "cleaned: 0\nmessage_timeout: 600\n",
    );
    let started = Instant::now();
    let per_host = messages / hosts;
    let done = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..hosts)
        .map(|h| s.spawn_cli_publisher(h, per_host))
        .collect();
    let consumers: Vec<_> = (0..hosts)
        .flat_map(|h| [h, h])
        .map(|h| s.spawn_cli_consumer(h, done.clone()))
        .collect();
    publishers.into_iter().for_each(|p| p.join().unwrap());
    done.store(true, Ordering::SeqCst);
    consumers.into_iter().for_each(|c| c.join().unwrap());
    let published: Vec<String> = (0..hosts).flat_map(|h| s.bodies(h, per_host)).collect();
    s.verify(&published, started);
}

/// `ddmq work -j 2` on every host (each task prints its body), while every host publishes.
fn work_farms(cluster: &Cluster, hosts: usize, messages: usize) {
    let s = Scenario::new(
        cluster,
        &format!("work-{hosts}"),
        hosts,
        "cleaned: 0\nmessage_timeout: 600\n",
    );
    let started = Instant::now();
    let per_host = messages / hosts;
    let publishers: Vec<_> = (0..hosts)
        .map(|h| s.spawn_cli_publisher(h, per_host))
        .collect();
    // Serving until drained: a runner that waited a fixed time could end while a slow publisher
    // still had messages to come.
    let runners: Vec<Child> = (0..hosts)
        .map(|h| {
            ddmq()
                .args(["work", "-j", "2", "--wait", "inf"])
                .arg(&s.hosts[h])
                .args(["q", "--", "printf", "%s\\n", "{}"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    publishers.into_iter().for_each(|p| p.join().unwrap());
    let q = ddmq::engine::Broker::open(&s.hosts[0]).unwrap();
    let q = q.queue("q").unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while q
        .status(false)
        .map(|st| st.waiting + st.in_flight > 0)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "{}: the farms never emptied the queue",
            s.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for r in runners {
        // SIGUSR1: take nothing more, finish what runs, exit 0.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(r.id() as i32),
            nix::sys::signal::Signal::SIGUSR1,
        );
        let out = r.wait_with_output().unwrap();
        s.failures.check("ddmq work", &out);
        s.delivered.lock().unwrap().extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    let published: Vec<String> = (0..hosts).flat_map(|h| s.bodies(h, per_host)).collect();
    s.verify(&published, started);
}

/// A `ddmq mount` daemon of one host, unmounted when dropped.
struct HostMount {
    mnt: PathBuf,
    child: Child,
}

impl HostMount {
    fn start(root: &Path, mnt: &Path) -> HostMount {
        std::fs::create_dir_all(mnt).unwrap();
        let child = ddmq()
            .args(["mount", "-f"])
            .arg(root)
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rel_support::mount::is_mounted(mnt) {
            assert!(Instant::now() < deadline, "ddmq mount did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        HostMount {
            mnt: mnt.to_path_buf(),
            child,
        }
    }

    /// Unmounts (messages held are given back) and returns the daemon's output.
    fn stop(mut self) -> Output {
        let umount = ddmq().arg("umount").arg(&self.mnt).output().unwrap();
        assert!(umount.status.success(), "ddmq umount: {umount:?}");
        let _ = wait_or_kill(&mut self.child, Duration::from_secs(30));
        let mut stderr = Vec::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_end(&mut stderr);
        }
        Output {
            status: self.child.wait().unwrap(),
            stdout: Vec::new(),
            stderr,
        }
    }
}

/// A bash loop on `mnt`: one `echo body > in` per body.
fn spawn_bash_writer(mnt: &Path, bodies: &[String]) -> Child {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg("set -e; while IFS= read -r b; do echo \"$b\" > \"$1/q/in\"; done")
        .arg("bash")
        .arg(mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    feed_lines(&mut child, bodies);
    child
}

/// A bash loop of `cat next` until the file `stop` exists and the queue answers empty; prints
/// each body on a line of its own (a body written with `echo` ends in a newline, a CLI one not).
fn spawn_cat_reader(mnt: &Path, stop: &Path) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(
            "while :; do if b=$(cat \"$1/q/next\" 2>/dev/null); then printf '%s\\n' \"$b\"; \
             elif [ -e \"$2\" ]; then exit 0; else sleep 0.02; fi; done",
        )
        .arg("bash")
        .arg(mnt)
        .arg(stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `ddmq mount` on every host: a bash writer and two `cat next` readers on each mount, and a
/// CLI publisher on each host beside the mount.
fn mounts_everywhere(cluster: &Cluster, hosts: usize, messages: usize) {
    let s = Scenario::new(cluster, &format!("mount-{hosts}"), hosts, "cleaned: 0\n");
    let started = Instant::now();
    let per_host = messages / hosts;
    let state = tempfile::tempdir().unwrap();
    let stop = state.path().join("stop");
    let mounts: Vec<HostMount> = (0..hosts)
        .map(|h| HostMount::start(&s.hosts[h], &state.path().join(format!("mnt{h}"))))
        .collect();
    // Half of each host's bodies through its mount, half through the CLI.
    let mut writers = Vec::new();
    let mut cli = Vec::new();
    let mut published = Vec::new();
    for (h, m) in mounts.iter().enumerate() {
        let bodies = s.bodies(h, per_host);
        let (through_mount, _) = bodies.split_at(per_host / 2);
        writers.push(spawn_bash_writer(&m.mnt, through_mount));
        published.extend(bodies.iter().cloned());
    }
    for h in 0..hosts {
        let through_cli = s.bodies(h, per_host)[per_host / 2..].to_vec();
        cli.push(spawn_cli_publisher_of(
            s.hosts[h].clone(),
            through_cli,
            s.failures.clone(),
        ));
    }
    let readers: Vec<Child> = mounts
        .iter()
        .flat_map(|m| {
            [
                spawn_cat_reader(&m.mnt, &stop),
                spawn_cat_reader(&m.mnt, &stop),
            ]
        })
        .collect();
    for w in writers {
        s.failures
            .check("bash writing in", &w.wait_with_output().unwrap());
    }
    cli.into_iter().for_each(|c| c.join().unwrap());
    std::fs::write(&stop, "").unwrap();
    for r in readers {
        let out = r.wait_with_output().unwrap();
        s.failures.check("cat next", &out);
        s.delivered.lock().unwrap().extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    for m in mounts {
        let out = m.stop();
        s.failures.check("ddmq mount", &out);
    }
    s.verify(&published, started);
}

/// Tasks that outlive their lease (4 s against a 3 s timeout) run by `ddmq work` on host 0,
/// which renews the leases, while host 1 runs `ddmq clean` in a loop and a second runner: each
/// task runs exactly once.
fn leases_renewed_across_hosts(cluster: &Cluster, tasks: usize) {
    let s = Scenario::new(
        cluster,
        "leases",
        2,
        "cleaned: 0\nmessage_timeout: 3\nrequeue: true\n",
    );
    let started = Instant::now();
    let published = s.bodies(0, tasks);
    s.spawn_cli_publisher(0, tasks).join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let cleaner = {
        let root = s.hosts[1].clone();
        let stop = stop.clone();
        let failures = s.failures.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = ddmq().arg("clean").arg(&root).arg("q").output().unwrap();
                failures.check("ddmq clean", &out);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let run = |h: usize, jobs: &str| {
        ddmq()
            .args(["work", "-j", jobs, "--wait", "2"])
            .arg(&s.hosts[h])
            .args([
                "q",
                "--",
                "sh",
                "-c",
                "sleep 4 && printf '%s\\n' \"$1\"",
                "sh",
                "{}",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = run(0, &tasks.to_string());
    std::thread::sleep(Duration::from_millis(1500));
    let second = run(1, "2");
    for r in [first, second] {
        let out = r.wait_with_output().unwrap();
        s.failures.check("ddmq work", &out);
        s.delivered.lock().unwrap().extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    stop.store(true, Ordering::SeqCst);
    cleaner.join().unwrap();
    s.verify(&published, started);
}

/// Runs `script` in bash with the mountpoint as $1; returns its stdout.
fn bash_on(mnt: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .arg(mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Priority, then FIFO, while another host changes the queue: for a long-lived engine client
/// (a change in the same second as its listing, which MooseFS's one-second mtimes hide from the
/// directory's signature), and through a mount driven by bash (the other host takes a message
/// the mount's listing holds; the other host publishes while the mount keeps publishing and
/// consuming).
fn order_while_another_host_changes_the_queue(cluster: &Cluster) {
    let s = Scenario::new(cluster, "order", 2, "cleaned: 0\n");
    let a = ddmq::engine::Broker::open(&s.hosts[0]).unwrap();
    let a = a.queue("q").unwrap();
    let b = ddmq::engine::Broker::open(&s.hosts[1]).unwrap();
    let b = b.queue("q").unwrap();
    let publish = |q: &ddmq::engine::Queue, body: &str, priority: u64| {
        q.publish(
            body.into(),
            &ddmq::engine::PublishOptions {
                priority: Some(priority),
                ..Default::default()
            },
        )
        .unwrap();
    };
    let take = |q: &ddmq::engine::Queue| {
        q.consume_one().unwrap().map(|d| {
            q.ack(&d.message.filename).unwrap();
            d.message.body_text()
        })
    };
    for i in 0..200 {
        publish(&b, &format!("later{i}"), 5);
    }
    assert_eq!(take(&a).as_deref(), Some("later0")); // a's listing: 199 waiting
    publish(&b, "urgent", 0); // most likely in the same second as a's listing
    let position = (1..200)
        .position(|_| {
            std::thread::sleep(Duration::from_millis(30));
            take(&a).as_deref() == Some("urgent")
        })
        .expect("the urgent message was never delivered");
    assert!(
        position < 150,
        "the urgent message came only after {position} others: its listing was never refreshed"
    );
    while take(&a).is_some() {}

    let state = tempfile::tempdir().unwrap();
    let mount = HostMount::start(&s.hosts[0], &state.path().join("mnt"));
    publish(&b, "x1", 5);
    publish(&b, "x2", 5);
    assert_eq!(bash_on(&mount.mnt, "cat \"$1/q/next\""), "x1");
    assert_eq!(take(&b).as_deref(), Some("x2")); // behind the mount's back
    let own = bash_on(
        &mount.mnt,
        "for i in 1 2 3 4 5 6 7 8; do echo o$i > \"$1/q/in\"; done; \
         for i in 1 2 3 4 5 6 7 8; do cat \"$1/q/next\"; done",
    );
    assert_eq!(own, "o1\no2\no3\no4\no5\no6\no7\no8\n");

    publish(&b, "theirs", 5);
    let rounds = bash_on(
        &mount.mnt,
        "for r in $(seq 1 300); do echo a$r > \"$1/q/in\"; echo b$r > \"$1/q/in\"; \
         [ \"$(cat \"$1/q/next\")\" = theirs ] && { echo $r; exit 0; }; sleep 0.01; done; echo never",
    );
    assert_ne!(
        rounds.trim(),
        "never",
        "the other host's message was starved"
    );
    let out = mount.stop();
    s.failures.check("ddmq mount", &out);
    while take(&a).is_some() {}
    s.failures.assert_none(&s.name);
    eprintln!(
        "{}: the urgent message came after {position} others, the other host's message through the mount after {} rounds",
        s.name,
        rounds.trim()
    );
}

/// The counts a status keeps while a queue looks settled show another host's change within the
/// bound doc/RELIABILITY.md gives: the client's attribute cache time (GlusterFS md-cache: 1 s),
/// plus the poll here.
fn status_sees_another_hosts_change(cluster: &Cluster) {
    let s = Scenario::new(cluster, "status", 2, "cleaned: 0\n");
    let a = ddmq::engine::Broker::open(&s.hosts[0]).unwrap();
    let a = a.queue("q").unwrap();
    let b = ddmq::engine::Broker::open(&s.hosts[1]).unwrap();
    let b = b.queue("q").unwrap();
    b.publish("one".into(), &Default::default()).unwrap();
    // Seen for longer than the settling time: from now on a's counts are kept and reused.
    assert_eq!(a.status(false).unwrap().waiting, 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(a.status(false).unwrap().waiting, 1);
    assert_eq!(a.status(false).unwrap().waiting, 1);
    b.publish("two".into(), &Default::default()).unwrap();
    let published = Instant::now();
    while a.status(false).unwrap().waiting != 2 {
        assert!(
            published.elapsed() < Duration::from_secs(10),
            "{}: another host's publish never showed in status",
            s.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "{}: another host's publish showed in status after {} ms",
        s.name,
        published.elapsed().as_millis()
    );
    while a
        .consume_one()
        .unwrap()
        .is_some_and(|d| a.ack(&d.message.filename).is_ok())
    {}
}

fn all_scenarios(kind: Kind) {
    let messages = env_usize("DDMQ_CLUSTER_MESSAGES", 600);
    let cluster = Cluster::start(kind, 3, None);
    for hosts in [2, 3] {
        cli_loops(&cluster, hosts, messages);
        work_farms(&cluster, hosts, messages);
        mounts_everywhere(&cluster, hosts, messages);
    }
    leases_renewed_across_hosts(&cluster, 4);
    order_while_another_host_changes_the_queue(&cluster);
    status_sees_another_hosts_change(&cluster);
}

#[test]
fn glusterfs_two_and_three_hosts_take_every_message_exactly_once() {
    all_scenarios(Kind::Gluster);
}

#[test]
fn moosefs_two_and_three_hosts_take_every_message_exactly_once() {
    all_scenarios(Kind::MooseFs);
}

/// Whether a message file holds a whole 50 KB body (the ones the full-volume test publishes).
fn whole_50k(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| ddmq::engine::Message::from_json(&b).ok())
        .is_some_and(|m| m.body_text() == "x".repeat(50_000))
}

fn message_files(dir: &Path) -> Vec<PathBuf> {
    names_in(dir)
        .into_iter()
        .filter(|n| n.contains(".ddmq") || n.starts_with(".claim-"))
        .map(|n| dir.join(n))
        .collect()
}

/// A full GlusterFS volume (a 2 MB brick) reports ENOSPC only at close(), after every write
/// succeeded. A publish whose data did not reach the volume fails with a clear error and
/// publishes nothing; a requeue that cannot be written keeps the message where it was; nothing
/// is ever torn or lost (before: 51 of 90 publishes exited 0 leaving empty or cut files, and a
/// clean deleted the only whole copy of a message it requeued torn).
#[test]
fn glusterfs_full_volume_tears_nothing_and_loses_nothing() {
    let cluster = Cluster::start(Kind::Gluster, 1, Some("2m"));
    let root = cluster.mounts[0].join("root");
    let q = root.join("q");
    let body = "x".repeat(50_000);
    let publish = || {
        let mut child = ddmq()
            .args(["publish", "-f", "-s"])
            .arg(&root)
            .args(["q", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let (mut published, mut refused) = (0, 0);
    for _ in 0..90 {
        let out = publish();
        if out.status.success() {
            published += 1;
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.starts_with("Error: ") && stderr.contains("No space left on device"),
                "{stderr}"
            );
            refused += 1;
        }
    }
    let files = message_files(&q);
    let torn: Vec<&PathBuf> = files.iter().filter(|f| !whole_50k(f)).collect();
    assert!(torn.is_empty(), "torn message files: {torn:?}");
    assert_eq!(files.len(), published, "a publish that exited 0 is there");
    assert!(
        published > 0 && refused > 0,
        "{published} published, {refused} refused"
    );

    // Room for a few (ten acked), then ten messages expire in work/ while the volume is full to
    // the last byte: their requeued copies cannot be written.
    let out = ddmq()
        .args(["consume", "--ack", "-C", "-n", "10"])
        .arg(&root)
        .arg("q")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stored = published;
    let published = published - 10;
    std::fs::write(
        q.join("ddmq.yaml"),
        "cleaned: 0\nmessage_timeout: 1\nrequeue: true\n",
    )
    .unwrap();
    let out = ddmq()
        .args(["consume", "-C", "-n", "10"])
        .arg(&root)
        .arg("q")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let filler = cluster.mounts[0].join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() && f.sync_data().is_ok() {}
    drop(f);
    std::thread::sleep(Duration::from_millis(2100));
    let clean = ddmq().arg("clean").arg(&root).arg("q").output().unwrap();
    let in_work = message_files(&q.join("work"));
    let waiting = message_files(&q);
    for f in in_work.iter().chain(&waiting) {
        assert!(whole_50k(f), "{} is torn after the clean", f.display());
    }
    assert_eq!(
        in_work.len() + waiting.len(),
        published,
        "a clean on a full volume lost messages ({})",
        String::from_utf8_lossy(&clean.stderr)
    );

    // Space again: everything is delivered, once, whole.
    std::fs::remove_file(&filler).unwrap();
    rel_support::age_claims(&q.join("work"), 400);
    std::thread::sleep(Duration::from_millis(1100));
    let out = ddmq().arg("clean").arg(&root).arg("q").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = ddmq()
        .args(["consume", "--ack", "-C", "-n", "1000", "--format", "json"])
        .arg(&root)
        .arg("q")
        .output()
        .unwrap();
    let delivered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect();
    assert_eq!(delivered.len(), published);
    assert!(delivered.iter().all(|l| l.contains(&body)));
    eprintln!(
        "full GlusterFS volume: {stored} of 90 publishes stored whole, {refused} refused at close with ENOSPC, none torn; 10 expired on the full volume, none lost"
    );
}
