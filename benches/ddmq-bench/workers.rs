//! The "workers" part: 1, 2 and 4 consumer processes sharing one queue, and what a fourth
//! process adds over one.

use crate::contenders::{self, Contender};
use crate::report::Target;
use crate::{Bench, Fs, progress, thousands};
use std::fs;
use std::io;

impl Bench {
    /// k consumer processes sharing one queue.
    pub(crate) fn worker_sections(&mut self) -> io::Result<()> {
        let kinds = [
            (Contender::Floor, "floor"),
            (Contender::Engine, "engine"),
            (Contender::Mount, "mount"),
        ];
        let n = self.plan.workers_n;
        for round in 0..self.plan.rounds {
            for k in [1usize, 2, 4] {
                let title = format!(
                    "tmpfs, 100 B bodies, {k} consumer process{} on one queue of {}",
                    if k == 1 { "" } else { "es" },
                    thousands(n)
                );
                progress(&format!(
                    "round {}/{}: {title}",
                    round + 1,
                    self.plan.rounds
                ));
                let sec = self.rates.section(title);
                for i in 0..kinds.len() {
                    let (c, kind) = kinds[(i + round + k) % kinds.len()];
                    if let Some(why) = self.unavailable(c) {
                        self.rates.failures.insert((sec, c), why);
                        continue;
                    }
                    let place = self.place(c, Fs::Tmpfs, &format!("workers-r{round}-k{k}-{kind}"));
                    let outcome = (|| {
                        if c == Contender::Floor {
                            contenders::prepare(c, &place)?;
                            contenders::fill_floor(&place, n, &self.floor_bytes[&100])?;
                        } else {
                            contenders::prepare(Contender::Engine, &place)?;
                            contenders::fill(&place, n, 100)?;
                        }
                        contenders::consume_with_workers(&self.self_exe, kind, &place, k)
                    })();
                    match outcome {
                        Ok((t, got)) if got == n => {
                            self.rates.record(
                                sec,
                                c,
                                "consume+ack",
                                round,
                                n as f64 / t.as_secs_f64(),
                            );
                            self.rates.counts.insert((sec, c), n);
                        }
                        Ok((_, got)) => {
                            self.rates
                                .failures
                                .insert((sec, c), format!("{k} workers consumed {got} of {n}"));
                        }
                        Err(e) => {
                            self.rates.failures.insert((sec, c), e.to_string());
                        }
                    }
                    if !c.needs_mount() {
                        let _ = fs::remove_dir_all(&place.root);
                    }
                }
            }
        }
        let one = self.rates.section(format!(
            "tmpfs, 100 B bodies, 1 consumer process on one queue of {}",
            thousands(n)
        ));
        let four = self.rates.section(format!(
            "tmpfs, 100 B bodies, 4 consumer processes on one queue of {}",
            thousands(n)
        ));
        for (c, _) in kinds {
            let r = self.round_ratio(four, c, one, c, "consume+ack");
            self.targets.push(Target {
                what: format!("{}: 4 consumer processes ≥ 1.5× one", c.label()),
                measured: r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into()),
                pass: if c == Contender::Floor {
                    None
                } else {
                    r.map(|r| r >= 1.5)
                },
            });
        }
        Ok(())
    }
}
