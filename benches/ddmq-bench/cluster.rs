//! The cluster part: what ddmq costs a cluster filesystem's server, counted at a GlusterFS brick
//! (`gluster volume profile`, through `scripts/cluster-fs profile`) on a volume mounted twice
//! (two client mounts: two hosts, each with its own caches). Counts, not times, so they do not
//! depend on the machine's load:
//! - an idle `ddmq work --wait inf` on an empty queue, after 10 s of nothing: operations a
//!   second (target: at most 5), and how soon a message published on the other host starts
//!   (target: within 2 s);
//! - a busy farm, `ddmq work -j 8` on each of the two hosts (16 slots) over trivial tasks:
//!   operations per message (target: at most 10), and the publish that fed it, per message.
//!
//! Needs root (the script starts glusterd and mounts); without it the part says so and skips.

use crate::contenders::Tools;
use crate::farm::publish_lines;
use crate::progress;
use crate::report::{Target, median};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ClusterReport {
    pub markdown: String,
    pub targets: Vec<Target>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster-fs")
}

/// A GlusterFS volume mounted twice, stopped when dropped.
struct Gluster {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Gluster {
    fn start(dir: &Path) -> io::Result<Gluster> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        let out = Command::new(script())
            .args(["up", "gluster"])
            .arg(dir)
            .arg("2")
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other("scripts/cluster-fs up gluster failed"));
        }
        let mounts = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect::<Vec<_>>();
        if mounts.len() < 2 {
            return Err(io::Error::other(
                "scripts/cluster-fs gave fewer than 2 mounts",
            ));
        }
        Ok(Gluster {
            dir: dir.to_path_buf(),
            mounts,
        })
    }

    fn profile(&self, what: &str) -> io::Result<String> {
        let out = Command::new(script())
            .arg("profile")
            .arg(&self.dir)
            .arg(what)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "scripts/cluster-fs profile {what} failed"
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Brick operations by name between `profile start` and the call `op` makes.
    fn count(&self, op: impl FnOnce() -> io::Result<()>) -> io::Result<BTreeMap<String, u64>> {
        self.profile("start")?;
        op()?;
        Ok(parse_profile(&self.profile("info")?))
    }
}

impl Drop for Gluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

/// The "No. of calls" column of `gluster volume profile ... info incremental`, by operation
/// (every interval and brick summed).
fn parse_profile(text: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "%-latency avg unit min unit max unit calls FOP"
        if fields.len() == 9
            && fields[0].parse::<f64>().is_ok()
            && let Ok(n) = fields[7].parse::<u64>()
        {
            *calls.entry(fields[8].to_string()).or_default() += n;
        }
    }
    calls
}

fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

/// "LOOKUP 4.3, RENAME 2.0, ..." per `per`, largest first.
fn breakdown(calls: &BTreeMap<String, u64>, per: f64) -> String {
    let mut v: Vec<(&String, &u64)> = calls.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .filter(|(_, n)| **n as f64 / per >= 0.05)
        .map(|(op, n)| format!("{op} {:.2}", **n as f64 / per))
        .collect::<Vec<_>>()
        .join(", ")
}

fn make_queue(tools: &Tools, root: &Path, other_host_root: &Path) -> io::Result<()> {
    let ok = Command::new(&tools.ddmq)
        .args(["create", "-f"])
        .arg(root)
        .arg("q")
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        return Err(io::Error::other("ddmq create failed"));
    }
    fs::write(
        root.join("q/ddmq.yaml"),
        "cleaned: 0\nmessage_timeout: 600\n",
    )?;
    // The other host sees the queue before anything is counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !other_host_root.join("q/work").is_dir() {
        if Instant::now() > deadline {
            return Err(io::Error::other("the other mount never saw the queue"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn runner(tools: &Tools, root: &Path, slots: usize, task: &[&str]) -> io::Result<Child> {
    Command::new(&tools.ddmq)
        .args(["work", "-j", &slots.to_string(), "--wait", "inf"])
        .arg(root)
        .args(["q", "--"])
        .args(task)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// SIGUSR1: take nothing more, finish what runs, exit.
fn drain(mut child: Child) -> io::Result<()> {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    );
    child.wait().map(|_| ())
}

/// Whether the queue `q` under `root` (a brick's directory) holds no message, waiting or taken.
fn queue_is_empty(root: &Path) -> bool {
    let count = |d: &Path| fs::read_dir(d).map(|r| r.count()).unwrap_or(usize::MAX);
    // ddmq.yaml and work/ stay.
    count(&root.join("q")) <= 2 && count(&root.join("q/work")) == 0
}

pub fn run(tools: &Tools, scratch: &Path, farm_messages: usize) -> io::Result<ClusterReport> {
    let mut targets = Vec::new();
    let mut md = String::from(
        "\n### Cost to a cluster filesystem's server (GlusterFS brick, two client mounts)\n\n",
    );
    if !nix::unistd::Uid::effective().is_root() {
        md.push_str("Not run: the cluster part needs root (it starts glusterd and mounts).\n");
        for what in [
            "cluster: idle runner, brick operations a second after 10 s idle <= 5",
            "cluster: farm of 16 slots on two hosts, brick operations a message <= 10",
        ] {
            targets.push(Target {
                what: what.into(),
                measured: "not run (needs root)".into(),
                pass: None,
            });
        }
        return Ok(ClusterReport {
            markdown: md,
            targets,
        });
    }
    progress("cluster: starting GlusterFS (scripts/cluster-fs up gluster)");
    let gluster = Gluster::start(&scratch.join("gluster"))?;
    let (host_a, host_b) = (
        gluster.mounts[0].join("idle"),
        gluster.mounts[1].join("idle"),
    );
    make_queue(tools, &host_a, &host_b)?;

    // Idle: a runner on host A, nothing to do for 12 s, then 10 s counted.
    progress("cluster: idle runner (22 s)");
    let marker_dir = scratch.join("started");
    fs::create_dir_all(&marker_dir)?;
    let marker = marker_dir.join("task");
    let _ = fs::remove_file(&marker);
    let task_line = format!("date +%s.%N > {}", marker.display());
    let idle = runner(tools, &host_a, 1, &["sh", "-c", &task_line])?;
    std::thread::sleep(Duration::from_secs(12));
    let counted = Duration::from_secs(10);
    let idle_calls = gluster.count(|| {
        std::thread::sleep(counted);
        Ok(())
    })?;
    let idle_rate = total(&idle_calls) as f64 / counted.as_secs_f64();
    // Wake-up: a message published on host B, three times, each after 12 s of nothing.
    let mut wakes = Vec::new();
    for i in 0..3 {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(12));
        }
        let _ = fs::remove_file(&marker);
        let published = Instant::now();
        publish_lines(tools, &host_b, "wake\n")?;
        let deadline = published + Duration::from_secs(30);
        while !marker.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        wakes.push(if marker.exists() {
            published.elapsed().as_secs_f64()
        } else {
            f64::INFINITY
        });
    }
    drain(idle)?;
    // A wake that never came is infinite, and then the median of what came would hide it.
    let wake = if wakes.iter().all(|w| w.is_finite()) {
        median(&wakes).unwrap_or(f64::INFINITY)
    } else {
        f64::INFINITY
    };
    let _ = writeln!(
        md,
        "- **Idle runner** (`ddmq work --wait inf`, empty queue, counted from 12 s to 22 s idle): \
         {idle_rate:.1} brick operations a second ({}). A message published on the other host \
         started after {} s (median of 3; each after 12 s idle).",
        breakdown(&idle_calls, counted.as_secs_f64()),
        wakes
            .iter()
            .map(|w| format!("{w:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    targets.push(Target {
        what: "cluster: idle runner, brick operations a second after 10 s idle <= 5".into(),
        measured: format!("{idle_rate:.1}/s"),
        pass: Some(idle_rate <= 5.0),
    });
    targets.push(Target {
        what: "cluster: idle runner starts another host's message within 2 s".into(),
        measured: format!("{wake:.2} s"),
        pass: Some(wake <= 2.0),
    });

    // Busy: publish on host A, then 2 hosts x 8 slots of `true` until the queue is empty.
    let (host_a, host_b) = (
        gluster.mounts[0].join("farm"),
        gluster.mounts[1].join("farm"),
    );
    make_queue(tools, &host_a, &host_b)?;
    progress(&format!(
        "cluster: farm of 2 x 8 slots over {farm_messages} tasks"
    ));
    let lines: String = (0..farm_messages).map(|i| format!("{i}\n")).collect();
    let publish_calls = gluster.count(|| publish_lines(tools, &host_a, &lines))?;
    let mut took = Duration::ZERO;
    // Watched on the brick's own directory: a listing through a client mount every 100 ms
    // would be counted with the farm's calls.
    let brick_root = gluster.dir.join("brick/farm");
    let farm_calls = gluster.count(|| {
        let started = Instant::now();
        let runners = [
            runner(tools, &host_a, 8, &["true"])?,
            runner(tools, &host_b, 8, &["true"])?,
        ];
        let deadline = started + Duration::from_secs(600);
        while !queue_is_empty(&brick_root) {
            if Instant::now() > deadline {
                return Err(io::Error::other("the farm never emptied the queue"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        took = started.elapsed();
        for r in runners {
            drain(r)?;
        }
        Ok(())
    })?;
    let n = farm_messages as f64;
    let per_message = total(&farm_calls) as f64 / n;
    let _ = writeln!(
        md,
        "- **Busy farm** (`ddmq work -j 8 -- true` on each of two hosts, {farm_messages} tasks, \
         {:.1} s): {per_message:.1} brick operations a message ({}). The publish that fed it \
         (`ddmq publish --lines` on one host): {:.1} a message ({}).",
        took.as_secs_f64(),
        breakdown(&farm_calls, n),
        total(&publish_calls) as f64 / n,
        breakdown(&publish_calls, n),
    );
    targets.push(Target {
        what: "cluster: farm of 16 slots on two hosts, brick operations a message <= 10".into(),
        measured: format!("{per_message:.1}"),
        pass: Some(per_message <= 10.0),
    });
    drop(gluster);
    Ok(ClusterReport {
        markdown: md,
        targets,
    })
}
