//! What the runner tells afterwards: the tally of its tasks (the one-line summary on stderr,
//! the live status line) and `--joblog`, one line per task in GNU parallel's joblog format so
//! the tools that read those read ours.

use super::{Error, Result};
use crate::human::format_duration;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What happened to the tasks of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Succeeded and acked.
    pub done: u64,
    /// Failed (non-zero exit, death by a signal, or could not start) and nacked.
    pub failed: u64,
    /// Of the failed: requeued, moved to `dead/`, dropped.
    pub requeued: u64,
    pub dead: u64,
    pub dropped: u64,
    /// Unfinished when the runner was stopped: back in the queue at their place, uncounted.
    pub given_back: u64,
    /// Tasks whose lease was lost while they ran (another client requeued the message).
    pub lost_leases: u64,
}

impl Tally {
    /// Tasks finished either way.
    pub fn finished(&self) -> u64 {
        self.done + self.failed
    }

    /// The one-line summary.
    pub fn summary(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.finished() as f64 / secs
        } else {
            0.0
        };
        let mut text = format!(
            "{} done, {} failed ({} requeued, {} dead, {} dropped), {} given back",
            self.done, self.failed, self.requeued, self.dead, self.dropped, self.given_back
        );
        if self.lost_leases > 0 {
            text.push_str(&format!(", {} lost leases", self.lost_leases));
        }
        text.push_str(&format!(", {secs:.2} s, {rate:.1} tasks/s"));
        text
    }

    /// The live status line: done, running, waiting in the queue, rate, ETA.
    pub fn status(&self, running: usize, waiting: Option<usize>, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.finished() as f64 / secs
        } else {
            0.0
        };
        let waiting_text = waiting.map_or("?".to_string(), |w| w.to_string());
        let eta = match waiting {
            Some(w) if rate > 0.0 => format_duration((w + running) as f64 / rate),
            _ => "?".to_string(),
        };
        format!(
            "ddmq work: {} done, {} failed, {running} running, {waiting_text} waiting, {rate:.1}/s, ETA {eta}",
            self.done, self.failed
        )
    }
}

/// One finished task, as the joblog records it.
pub struct JobRecord<'a> {
    pub seq: u64,
    pub started: SystemTime,
    pub runtime: Duration,
    pub exit_code: i32,
    pub signal: i32,
    pub command: &'a str,
}

/// `--joblog FILE`: appended to (several runs, or runners, can share one), with the header
/// line when the file is new or empty. Each record is one write to an append-mode file.
pub struct JobLog {
    file: File,
    path: PathBuf,
}

impl JobLog {
    pub fn open(path: &Path) -> Result<JobLog> {
        let io = |op, e| Error::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        };
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io("open joblog", e))?;
        let empty = file.metadata().map_err(|e| io("stat joblog", e))?.len() == 0;
        if empty {
            file.write_all(
                b"Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n",
            )
            .map_err(|e| io("write joblog", e))?;
        }
        Ok(JobLog {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn record(&mut self, job: &JobRecord) -> Result<()> {
        let start = job
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        // As GNU parallel: runtime truncated to milliseconds, width 10; host ":" is this host;
        // newlines in the command become NULs so a record stays one line.
        let runtime = (job.runtime.as_secs_f64() * 1000.0).floor() / 1000.0;
        let line = format!(
            "{}\t:\t{start:.3}\t{runtime:10.3}\t0\t0\t{}\t{}\t{}\n",
            job.seq,
            job.exit_code,
            job.signal,
            job.command.replace('\n', "\0")
        );
        self.file.write_all(line.as_bytes()).map_err(|e| Error::Io {
            op: "write joblog",
            path: self.path.clone(),
            source: e,
        })
    }
}

/// A command line as a shell would read it back (for the joblog's Command column).
pub fn shell_words(words: &[String]) -> String {
    let quote = |w: &String| {
        let plain = !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
        if plain {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_a_shell_would_split() {
        let words = ["echo", "a b", "it's", ""].map(String::from);
        assert_eq!(shell_words(&words), r"echo 'a b' 'it'\''s' ''");
    }
}
