//! `ls -l` of a deep queue (`--only deep-ls`): the mount's `messages/` against the queue
//! directory itself, interleaved round by round, and how quickly the mount answers others (a
//! read of `status`, a publish through `in`) while its listing runs.

use crate::Bench;
use crate::contenders::{self, Contender, Place, Tools};
use crate::progress;
use crate::report::{Target, median};
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the part measured: a markdown section and its targets.
pub struct DeepLsReport {
    pub markdown: String,
    pub targets: Vec<Target>,
}

/// How long to leave the mount to its listing between two probes.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// `ls -l DIR` with its output read as it comes (counted, not kept).
fn spawn_ls(dir: &Path) -> io::Result<Child> {
    Command::new("ls")
        .arg("-l")
        .arg(dir)
        // Both listings sorted the same cheap way (no locale collation).
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Waits for an `ls -l` started by [`spawn_ls`]; fails unless it listed at least `expected`
/// entries and reported no error.
fn finish_ls(mut child: Child, expected: usize) -> io::Result<()> {
    let mut lines = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut out = child.stdout.take().expect("piped");
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)?;
    let status = child.wait()?;
    // One line per entry, plus the "total" line.
    if !status.success() || !err.is_empty() || lines < expected + 1 {
        return Err(io::Error::other(format!(
            "ls -l listed {} entries ({status}): {}",
            lines.saturating_sub(1),
            err.trim()
        )));
    }
    Ok(())
}

/// Seconds an `ls -l` of `dir` takes.
fn timed_ls(dir: &Path, expected: usize) -> io::Result<f64> {
    let started = Instant::now();
    finish_ls(spawn_ls(dir)?, expected)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Milliseconds `f` takes.
fn ms(f: impl FnOnce() -> io::Result<()>) -> io::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// `depth` messages waiting in a queue of the mount at `mnt` (serving `root`, on a tmpfs);
/// `rounds` rounds of `ls -l ROOT/q` and `ls -l MNT/q/messages`, then in each round one more
/// listing of the mount with a read of `status` and a publish through `in` every
/// [`PROBE_EVERY`] while it runs (apart from the timed ones: each probe holds up the listing).
pub fn run(
    tools: &Tools,
    root: &Path,
    mnt: &Path,
    depth: usize,
    rounds: usize,
) -> io::Result<DeepLsReport> {
    let place = Place {
        root: root.to_path_buf(),
        queue: "deep_ls".into(),
        mnt: Some(mnt.to_path_buf()),
        durable: false,
    };
    progress(&format!("deep-ls: filling a queue with {depth} messages"));
    contenders::prepare(Contender::Engine, &place)?;
    contenders::fill(&place, depth, 100)?;
    let direct = place.dir();
    let queue = mnt.join(&place.queue);
    let messages = queue.join("messages");
    let (mut direct_secs, mut mount_secs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut status_ms, mut publish_ms) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        progress(&format!(
            "round {}/{rounds}: ls -l at {depth} waiting, the queue directory and the mount",
            round + 1
        ));
        // Alternate which goes first, so neither always finds the caches the other warmed.
        let (d, m) = if round % 2 == 0 {
            let d = timed_ls(&direct, depth)?;
            (d, timed_ls(&messages, depth)?)
        } else {
            let m = timed_ls(&messages, depth)?;
            (timed_ls(&direct, depth)?, m)
        };
        direct_secs.push(d);
        mount_secs.push(m);
        ratios.push(m / d);

        progress(&format!(
            "round {}/{rounds}: status and publishes while the mount's ls -l runs",
            round + 1
        ));
        let listing = spawn_ls(&messages)?;
        let mut published = 0;
        let probing = std::thread::scope(|s| {
            let lister = s.spawn(move || finish_ls(listing, depth));
            while !lister.is_finished() {
                std::thread::sleep(PROBE_EVERY);
                status_ms.push(ms(|| fs::read_to_string(queue.join("status")).map(drop))?);
                publish_ms.push(ms(|| fs::write(queue.join("in"), "probe"))?);
                published += 1;
            }
            lister.join().expect("the lister does not panic")
        });
        probing?;
        // Back to `depth` waiting (untimed).
        let (_, got) = contenders::consume(Contender::Engine, &place, tools, published)?;
        if got != published {
            return Err(io::Error::other(format!(
                "took back {got} of the {published} probes"
            )));
        }
    }

    let secs = |v: &[f64]| median(v).map_or("-".into(), |x| format!("{x:.2}"));
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let latency = |v: &[f64]| {
        format!(
            "max {:.1} ms (median {}, {} samples)",
            max(v),
            median(v).map_or("-".into(), |x| format!("{x:.1} ms")),
            v.len()
        )
    };
    let ratio = median(&ratios);
    let ratio_text = ratio.map_or("-".into(), |r| format!("{r:.2}×"));
    let markdown = format!(
        "\n### Deep queue: `ls -l` with {depth} messages waiting, tmpfs\n\n\
         Seconds (median over {rounds} rounds, the two listings interleaved; × is the median \
         of the per-round ratios).\n\n\
         | listing | seconds | × `ls -l ROOT/q` |\n|---|---|---|\n\
         | `ls -l ROOT/q` | {} | 1.00 |\n\
         | `ls -l MNT/q/messages` | {} | {ratio_text} |\n\n\
         While the mount's `ls -l` runs, every {} ms: a read of `MNT/q/status` {}; a publish \
         through `MNT/q/in` {}.\n",
        secs(&direct_secs),
        secs(&mount_secs),
        PROBE_EVERY.as_millis(),
        latency(&status_ms),
        latency(&publish_ms),
    );
    let during = format!("while `ls -l MNT/q/messages` runs ({depth} waiting)");
    let targets = vec![
        Target {
            what: format!(
                "`ls -l MNT/q/messages` within 3× `ls -l ROOT/q` ({depth} waiting, tmpfs)"
            ),
            measured: format!(
                "{ratio_text} (mount {} s, direct {} s)",
                secs(&mount_secs),
                secs(&direct_secs)
            ),
            pass: ratio.map(|r| r <= 3.0),
        },
        Target {
            what: format!("`cat MNT/q/status` {during}: each answered within 100 ms"),
            measured: latency(&status_ms),
            pass: (!status_ms.is_empty()).then(|| max(&status_ms) <= 100.0),
        },
        Target {
            what: format!("a publish through `MNT/q/in` {during}: each answered within 100 ms"),
            measured: latency(&publish_ms),
            pass: (!publish_ms.is_empty()).then(|| max(&publish_ms) <= 100.0),
        },
    ];
    Ok(DeepLsReport { markdown, targets })
}

impl Bench {
    /// `ls -l` of a deep queue through the tmpfs mount against the queue directory itself.
    pub(crate) fn deep_ls(&mut self) -> io::Result<String> {
        const DEPTH: usize = 100_000;
        let Some(m) = self.mounts.get("tmpfs") else {
            self.targets.push(Target {
                what: format!(
                    "`ls -l MNT/q/messages` within 3× `ls -l ROOT/q` ({DEPTH} waiting, tmpfs)"
                ),
                measured: format!("not run: {}", self.mount_error.clone().unwrap_or_default()),
                pass: None,
            });
            return Ok(String::new());
        };
        let report = run(&self.tools, &m.root, &m.mnt, DEPTH, self.plan.rounds)?;
        self.targets.extend(report.targets);
        Ok(report.markdown)
    }
}
