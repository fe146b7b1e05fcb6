//! `ddmq work` and `ddmq top`: the command line of the task runner ([`crate::work`]) and of the
//! dashboard ([`crate::top`]).

use super::args::{TopArgs, TopFormat, WorkArgs};
use super::commands::{IfMissing, open_broker, queue_for};
use super::error::{CliError, CliResult};
use crate::top::{Dashboard, render_json, render_table};
use crate::work;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

pub fn work(a: &WorkArgs) -> CliResult {
    let broker = open_broker(&a.root.root, IfMissing::Fail)?;
    let queue = queue_for(&broker, &a.queue, IfMissing::Fail, None)?;
    let opts = work::Options {
        jobs: a.jobs.map_or_else(work::default_jobs, |j| j as usize),
        wait: a.wait.map(|s| {
            if s.is_finite() {
                Duration::from_secs_f64(s)
            } else {
                Duration::MAX
            }
        }),
        grace: Duration::from_secs_f64(a.grace),
        tag: a.tag,
        joblog: a.joblog.clone(),
        command: a.command.clone(),
        poll: Duration::from_millis(a.poll_ms),
        status_line: io::stderr().is_terminal(),
        drain_before: a.drain_before.map(Duration::from_secs_f64),
    };
    let outcome = work::run(queue, &a.root.root, &opts).map_err(CliError::Work)?;
    if let Some(signal) = outcome.stopped_by {
        return Err(CliError::Stopped(signal));
    }
    if outcome.tally.failed > 0 {
        return Err(CliError::TasksFailed(outcome.tally.failed));
    }
    Ok(())
}

pub fn top(a: &TopArgs, out: &mut dyn Write) -> CliResult {
    let broker = open_broker(&a.root.root, IfMissing::Fail)?;
    for name in &a.queues {
        // An invalid name is the engine's InvalidQueueName.
        if !broker.queue_exists(name)? {
            warn_line!("Warning: requested queue does not exist ({name})");
        }
    }
    let mut dashboard = Dashboard::new(broker, a.queues.clone());
    let interval = Duration::from_secs_f64(a.interval);
    let in_place = !a.once && a.format == TopFormat::Table && io::stdout().is_terminal();
    if a.once {
        dashboard.refresh()?;
        std::thread::sleep(interval);
    }
    loop {
        let report = dashboard.refresh()?;
        let text = match a.format {
            TopFormat::Json => render_json(&report),
            TopFormat::Table if in_place => {
                // Home, the table, then wipe what an older, longer table left below it.
                format!(
                    "\x1b[H{}\x1b[J",
                    render_table(&report, &a.root.root, a.interval).replace('\n', "\x1b[K\n")
                )
            }
            TopFormat::Table if a.once => render_table(&report, &a.root.root, a.interval),
            TopFormat::Table => format!("{}\n", render_table(&report, &a.root.root, a.interval)),
        };
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(CliError::stdout)?;
        if a.once {
            return Ok(());
        }
        std::thread::sleep(interval.saturating_sub(report.refresh_time));
    }
}
