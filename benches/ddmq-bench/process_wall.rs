//! The "process" part: `ddmq publish` as a new process, wall time, against starting `true`
//! (the floor of any new process) and the original module's publish as a new Python process.

use crate::contenders::{self, Contender};
use crate::report::{Target, median};
use crate::{Bench, Fs, progress};
use std::io;
use std::process::Command;
use std::time::Instant;

impl Bench {
    /// `ddmq publish` as a new process, against the original module's publish as a new process
    /// (its own CLI cannot start on Python 3: see the behaviour notes).
    pub(crate) fn process_wall(&mut self) -> io::Result<()> {
        if let Some(why) = self.cli_error.clone() {
            self.targets.push(Target {
                what: "`ddmq publish` as a new process ≤ 5 ms wall".into(),
                measured: format!("not run: {why}"),
                pass: None,
            });
            return Ok(());
        }
        let place = self.place(Contender::CliSingle, Fs::Tmpfs, "process-wall");
        contenders::prepare(Contender::CliSingle, &place)?;
        let orig = self.place(Contender::OrigDefaults, Fs::Tmpfs, "process-wall-orig");
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut spawn_only = Vec::new();
        for round in 0..self.plan.rounds {
            progress(&format!(
                "round {}/{}: publish as a new process",
                round + 1,
                self.plan.rounds
            ));
            for _ in 0..self.plan.process_calls {
                ours.push(
                    contenders::cli_publish_one(&self.tools, &place, &contenders::body_text(100))?
                        .as_secs_f64()
                        * 1e3,
                );
                // What starting any process costs here right now: the floor of this target.
                let started = Instant::now();
                contenders::run_quiet(&mut Command::new("true"))?;
                spawn_only.push(started.elapsed().as_secs_f64() * 1e3);
            }
            for _ in 0..(self.plan.process_calls / 5).max(2) {
                let started = Instant::now();
                contenders::run_quiet(
                    Command::new(&self.tools.python)
                        .arg(&self.tools.peers)
                        .args(["orig-publish"])
                        .arg(&orig.root)
                        .args(["q", "1", "100", "defaults"])
                        .env("PYTHONWARNINGS", "ignore"),
                )?;
                theirs.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let m = median(&ours);
        let o = median(&theirs);
        self.targets.push(Target {
            what: "`ddmq publish` as a new process ≤ 5 ms wall".into(),
            measured: format!(
                "{} ms over {} calls (starting `true`: {} ms; the original module's publish as a new Python process: {} ms)",
                m.map(|x| format!("{x:.2}")).unwrap_or_default(),
                ours.len(),
                median(&spawn_only).map(|x| format!("{x:.2}")).unwrap_or_default(),
                o.map(|x| format!("{x:.0}")).unwrap_or_default()
            ),
            pass: m.map(|x| x <= 5.0),
        });
        Ok(())
    }
}
