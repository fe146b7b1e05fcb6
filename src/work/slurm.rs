//! What the runner learns from Slurm when it runs inside a job (`SLURM_JOB_ID` is set): the
//! cluster's `KillWait`, the time between the SIGTERM of a cancel or time limit and the SIGKILL
//! of every process of the job (`scontrol show config`), and the time the job has left
//! (`squeue -h -j ID -o %L`: Slurm 22.05 puts no end time in the environment). Both are asked
//! of the tools users have, with a deadline, so a controller that does not answer delays the
//! runner by a few seconds at most.

use super::{Error, Result};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a Slurm tool may take to answer.
const TOOL_DEADLINE: Duration = Duration::from_secs(10);

/// The job this runner is part of.
pub struct SlurmJob {
    /// The id that names this job alone: in an array, `$SLURM_JOB_ID` of the task whose id is
    /// the array's own names the whole array, so `ARRAYID_TASKID` is used there.
    pub id: String,
}

impl SlurmJob {
    /// The job of this process's environment, if it runs inside one.
    pub fn from_env() -> Option<SlurmJob> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let job = var("SLURM_JOB_ID")?;
        let id = match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
            (Some(array), Some(task)) => format!("{array}_{task}"),
            _ => job,
        };
        Some(SlurmJob { id })
    }

    /// The cluster's KillWait. `Ok(None)`: scontrol is not installed here.
    pub fn kill_wait(&self) -> Result<Option<Duration>> {
        let Some(text) = run_tool("scontrol", &["show", "config"])? else {
            return Ok(None);
        };
        parse_kill_wait(&text)
            .map(Some)
            .ok_or_else(|| Error::Slurm {
                op: "scontrol show config",
                message: "no KillWait in its output".to_string(),
            })
    }

    /// The time the job has left before its time limit; `Ok(None)` when it has no limit (or
    /// squeue is not installed here).
    pub fn time_left(&self) -> Result<Option<Duration>> {
        let op = "squeue -o %L";
        let Some(text) = run_tool("squeue", &["-h", "-j", &self.id, "-o", "%L"])? else {
            return Ok(None);
        };
        parse_time_left(text.trim()).map_err(|message| Error::Slurm { op, message })
    }
}

/// The grace period that ends before Slurm's SIGKILL: `grace` if it does, else KillWait less a
/// margin (the runner's SIGKILL must land, the commands die and their messages be given back
/// before Slurm kills the runner too).
pub fn fit_grace(grace: Duration, kill_wait: Duration) -> Option<Duration> {
    let margin = (kill_wait / 2).min(Duration::from_secs(2));
    let fitted = kill_wait.saturating_sub(margin);
    (grace > fitted).then_some(fitted)
}

/// `KillWait                = 30 sec` in `scontrol show config`.
fn parse_kill_wait(text: &str) -> Option<Duration> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "KillWait" {
            return None;
        }
        let secs = value.split_whitespace().next()?.parse::<u64>().ok()?;
        Some(Duration::from_secs(secs))
    })
}

/// squeue's `%L`: `[days-][hours:]minutes:seconds`, or `UNLIMITED`/`NOT_SET` for no limit.
fn parse_time_left(text: &str) -> std::result::Result<Option<Duration>, String> {
    let bad = || format!("unexpected time left {text:?}");
    if text.is_empty() {
        return Err("the job is not known to squeue".to_string());
    }
    if text.eq_ignore_ascii_case("UNLIMITED") || text.eq_ignore_ascii_case("NOT_SET") {
        return Ok(None);
    }
    if text.lines().count() != 1 {
        return Err(bad());
    }
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().map_err(|_| bad())?, rest),
        None => (0, text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<std::result::Result<_, _>>()?;
    let secs = match parts[..] {
        [m, s] => m * 60 + s,
        [h, m, s] => h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    Ok(Some(Duration::from_secs(days * 86400 + secs)))
}

/// Runs a Slurm tool, its output as text. `Ok(None)`: the tool is not installed.
fn run_tool(program: &'static str, args: &[&str]) -> Result<Option<String>> {
    let op = program;
    let err = |message: String| Error::Slurm { op, message };
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    // Read on threads, so a long output cannot fill a pipe and stall the tool.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + TOOL_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!(
                    "no answer within {} s",
                    TOOL_DEADLINE.as_secs()
                )));
            }
            Err(e) => return Err(err(e.to_string())),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let errors = stderr.join().unwrap_or_default();
    if !status.success() {
        // Its last line says why (`scontrol: fatal: …`), the ones before how it got there.
        let said = errors.lines().rev().map(str::trim).find(|l| !l.is_empty());
        let said = said.map(|l| {
            l.strip_prefix(program)
                .and_then(|r| r.strip_prefix(": "))
                .unwrap_or(l)
        });
        return Err(err(said.map_or_else(|| format!("{status}"), str::to_string)));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_wait_is_read_from_scontrol_show_config() {
        let text = "Configuration data as of 2026-01-01T00:00:00\nJobRequeue              = 1\nKillOnBadExit           = 0\nKillWait                = 30 sec\nLaunchParameters        = (null)\n";
        assert_eq!(parse_kill_wait(text), Some(Duration::from_secs(30)));
        assert_eq!(parse_kill_wait("KillOnBadExit = 0\n"), None);
    }

    #[test]
    fn time_left_reads_every_squeue_form() {
        let s = |secs| Ok(Some(Duration::from_secs(secs)));
        assert_eq!(parse_time_left("0:59"), s(59));
        assert_eq!(parse_time_left("59:01"), s(59 * 60 + 1));
        assert_eq!(parse_time_left("3:59:01"), s(3 * 3600 + 59 * 60 + 1));
        assert_eq!(parse_time_left("2-00:00:10"), s(2 * 86400 + 10));
        assert_eq!(parse_time_left("UNLIMITED"), Ok(None));
        assert_eq!(parse_time_left("NOT_SET"), Ok(None));
        assert!(parse_time_left("").is_err());
        assert!(parse_time_left("INVALID").is_err());
        assert!(parse_time_left("1:00\n2:00").is_err());
    }

    #[test]
    fn grace_is_fitted_below_kill_wait_only_when_it_is_too_long() {
        let s = Duration::from_secs;
        assert_eq!(fit_grace(s(10), s(30)), None);
        assert_eq!(fit_grace(s(30), s(30)), Some(s(28)));
        assert_eq!(fit_grace(s(10), s(5)), Some(s(3)));
        assert_eq!(fit_grace(s(2), s(5)), None);
        assert_eq!(fit_grace(s(10), s(1)), Some(Duration::from_millis(500)));
        assert_eq!(fit_grace(s(10), s(0)), Some(s(0)));
    }
}
