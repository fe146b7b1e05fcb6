//! The task farm's part of the benchmark: `ddmq work` against `xargs -P 2 -n 1` (the fork+exec
//! floor) and GNU parallel on the same trivial tasks, interleaved round by round, and how long
//! `ddmq top` takes to refresh a queue with 100k messages waiting (against a bare listing of
//! the same directory, the floor of any refresh that looks at the queue).

use crate::contenders::{Tools, run_capture, run_quiet};
use crate::progress;
use crate::report::{Target, median};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What the farm part measured: a markdown section and its targets.
pub struct FarmReport {
    pub markdown: String,
    pub targets: Vec<Target>,
}

/// Is `program` on the PATH?
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// `ddmq publish -f -s --lines ROOT q -` of `lines` (the queue created if need be).
pub fn publish_lines(tools: &Tools, root: &Path, lines: &str) -> io::Result<()> {
    let mut child = Command::new(&tools.ddmq)
        .args(["publish", "-f", "-s", "--lines"])
        .arg(root)
        .args(["q", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(lines.as_bytes())?;
    if !child.wait()?.success() {
        return Err(io::Error::other("ddmq publish --lines failed"));
    }
    Ok(())
}

/// Seconds `cmd` takes, its stdin from `input` if given.
fn timed(cmd: &mut Command, input: Option<&Path>) -> io::Result<f64> {
    if let Some(path) = input {
        cmd.stdin(fs::File::open(path)?);
    } else {
        cmd.stdin(Stdio::null());
    }
    let started = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(secs)
}

/// `tasks` trivial tasks (`true`) with 2 slots: ddmq work, xargs and GNU parallel, `rounds`
/// times, in `base` (a tmpfs); then top's refresh at `depth` waiting.
pub fn run(
    tools: &Tools,
    base: &Path,
    tasks: usize,
    rounds: usize,
    depth: usize,
) -> io::Result<FarmReport> {
    fs::create_dir_all(base)?;
    let lines = lines_of(tasks);
    let input = base.join("input");
    fs::write(&input, &lines)?;
    let parallel = on_path("parallel");
    let (mut ours, mut xargs, mut gnu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut vs_xargs, mut vs_parallel) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        progress(&format!(
            "round {}/{rounds}: {tasks} tasks with 2 slots: ddmq work, xargs{}",
            round + 1,
            if parallel { ", GNU parallel" } else { "" }
        ));
        let root = base.join(format!("work-{round}"));
        publish_lines(tools, &root, &lines)?;
        let t_ours = timed(
            Command::new(&tools.ddmq)
                .args(["work", "-j", "2"])
                .arg(&root)
                .args(["q", "--", "true", "{}"]),
            None,
        )?;
        let t_xargs = timed(
            Command::new("xargs").args(["-P", "2", "-n", "1", "true"]),
            Some(&input),
        )?;
        ours.push(tasks as f64 / t_ours);
        xargs.push(tasks as f64 / t_xargs);
        vs_xargs.push(t_xargs / t_ours);
        if parallel {
            let t_gnu = timed(
                Command::new("parallel").args(["--will-cite", "-j", "2", "true"]),
                Some(&input),
            )?;
            gnu.push(tasks as f64 / t_gnu);
            vs_parallel.push(t_gnu / t_ours);
        }
        fs::remove_dir_all(&root)?;
    }
    let fmt = |v: &[f64]| median(v).map_or("-".to_string(), |x| format!("{x:.0}"));
    let ratio = |v: &[f64]| median(v).map_or("-".to_string(), |x| format!("{x:.2}"));
    let mut markdown = format!(
        "\n### Task farm: {tasks} trivial tasks (`true ARG`), 2 slots, tmpfs\n\n\
         Tasks per second (median over {rounds} rounds; × is the median of the per-round ratios). \
         `ddmq work` takes each task from the queue, runs it, acks it; xargs and GNU parallel read \
         the same numbers from a file.\n\n\
         | runner | tasks/s | ddmq work × |\n|---|---|---|\n\
         | `ddmq work -j 2 ROOT q -- true {{}}` | {} | 1.00 |\n\
         | `xargs -P 2 -n 1 true` | {} | {} |\n",
        fmt(&ours),
        fmt(&xargs),
        ratio(&vs_xargs),
    );
    if parallel {
        markdown.push_str(&format!(
            "| `parallel -j 2 true` | {} | {} |\n",
            fmt(&gnu),
            ratio(&vs_parallel)
        ));
    } else {
        markdown.push_str("| `parallel` | not installed | |\n");
    }
    let mut targets = vec![Target {
        what: "`ddmq work` ≥ 0.8× the rate of `xargs -P 2 -n 1` (2000 × `true`, 2 slots)".into(),
        measured: format!(
            "{}× ({} against {} tasks/s)",
            ratio(&vs_xargs),
            fmt(&ours),
            fmt(&xargs)
        ),
        pass: median(&vs_xargs).map(|r| r >= 0.8),
    }];
    targets.push(Target {
        what: "`ddmq work` faster than GNU parallel (same tasks)".into(),
        measured: if parallel {
            format!(
                "{}× ({} against {} tasks/s)",
                ratio(&vs_parallel),
                fmt(&ours),
                fmt(&gnu)
            )
        } else {
            "GNU parallel is not installed".into()
        },
        pass: median(&vs_parallel).map(|r| r > 1.0),
    });

    progress(&format!("ddmq top at {depth} waiting"));
    let root = base.join("top");
    publish_lines(tools, &root, &lines_of(depth))?;
    let (mut refresh, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let out = run_capture(
            Command::new(&tools.ddmq)
                .args(["top", "--once", "--interval", "0.01", "--format", "json"])
                .arg(&root)
                .arg("q"),
        )?;
        let report: serde_json::Value =
            serde_json::from_str(out.trim()).map_err(io::Error::other)?;
        if let Some(ms) = report["refresh_ms"].as_f64() {
            refresh.push(ms);
        }
        let started = Instant::now();
        let n = fs::read_dir(root.join("q"))?.count();
        floor.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(n >= depth);
    }
    run_quiet(Command::new("rm").arg("-rf").arg(&root))?;
    let ms = |v: &[f64]| median(v).map_or("-".to_string(), |x| format!("{x:.0}"));
    markdown.push_str(&format!(
        "\n`ddmq top` refreshes a queue with {depth} waiting in {} ms (median of 7; a bare \
         listing of the same directory: {} ms).\n",
        ms(&refresh),
        ms(&floor)
    ));
    targets.push(Target {
        what: format!("`ddmq top` refresh at {depth} waiting < 100 ms"),
        measured: format!("{} ms (bare listing: {} ms)", ms(&refresh), ms(&floor)),
        pass: median(&refresh).map(|x| x < 100.0),
    });
    Ok(FarmReport { markdown, targets })
}

fn lines_of(n: usize) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}
