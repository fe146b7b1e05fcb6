//! The "depth" part: consume+ack while a queue holds 1k to 100k messages waiting (topped up
//! between rounds, untimed, so the depth stays what it says), and how the rate holds up at
//! depth against a shallow queue.

use crate::contenders::{self, Contender, Place};
use crate::report::Target;
use crate::{Bench, Fs, progress, thousands};
use std::collections::BTreeMap;
use std::io;

impl Bench {
    pub(crate) fn depth_sections(&mut self) -> io::Result<()> {
        let contenders = [
            Contender::Floor,
            Contender::Engine,
            Contender::CliBulk,
            Contender::Mount,
            Contender::OrigDefaults,
        ];
        let fss: Vec<Fs> = if self.plan.depth_on_disk {
            vec![Fs::Tmpfs, Fs::Disk]
        } else {
            vec![Fs::Tmpfs]
        };
        let mut places: BTreeMap<(usize, usize, Contender), Place> = BTreeMap::new();
        let depths = self.plan.depths.clone();
        for (fi, fs_kind) in fss.iter().enumerate() {
            for &d in &depths {
                for c in contenders {
                    if self.unavailable(c).is_some() {
                        continue;
                    }
                    progress(&format!(
                        "filling {} with {d} messages for {}",
                        fs_kind.name(),
                        c.label()
                    ));
                    let place =
                        self.place(c, *fs_kind, &format!("depth-{}-{d}-{c:?}", fs_kind.name()));
                    // The original reads our layout: fill it with the engine, as for the others.
                    contenders::prepare(
                        if c == Contender::Floor {
                            c
                        } else {
                            Contender::Engine
                        },
                        &place,
                    )?;
                    if c == Contender::Floor {
                        contenders::fill_floor(&place, d, &self.floor_bytes[&100])?;
                    } else {
                        contenders::fill(&place, d, 100)?;
                    }
                    places.insert((fi, d, c), place);
                }
            }
        }
        for round in 0..self.plan.rounds {
            for (fi, fs_kind) in fss.iter().enumerate() {
                for &d in &depths {
                    let title = format!(
                        "{}, 100 B bodies, consume+ack with {} waiting",
                        fs_kind.name(),
                        thousands(d)
                    );
                    progress(&format!(
                        "round {}/{}: {title}",
                        round + 1,
                        self.plan.rounds
                    ));
                    let sec = self.rates.section(title);
                    for i in 0..contenders.len() {
                        let c = contenders[(i + round) % contenders.len()];
                        if let Some(why) = self.unavailable(c) {
                            self.rates.failures.insert((sec, c), why);
                            continue;
                        }
                        let batch = if c == Contender::OrigDefaults {
                            self.plan.depth_batch_orig
                        } else {
                            self.plan.depth_batch
                        };
                        let batch = batch.min(d).max(1);
                        let place = &places[&(fi, d, c)];
                        match contenders::consume(c, place, &self.tools, batch) {
                            Ok((t, got)) if got == batch => {
                                self.rates.record(
                                    sec,
                                    c,
                                    "consume+ack",
                                    round,
                                    batch as f64 / t.as_secs_f64(),
                                );
                                self.rates.counts.insert((sec, c), batch);
                            }
                            Ok((_, got)) => {
                                self.rates
                                    .failures
                                    .insert((sec, c), format!("consumed {got} of {batch}"));
                            }
                            Err(e) => {
                                self.rates.failures.insert((sec, c), e.to_string());
                            }
                        }
                        // Top the queue up again (untimed) so the depth stays what it says.
                        if c == Contender::Floor {
                            contenders::fill_floor(place, batch, &self.floor_bytes[&100])?;
                        } else {
                            contenders::fill(place, batch, 100)?;
                        }
                    }
                }
            }
            if round == 0
                && let Some(m) = self.mounts.get("tmpfs")
                && let Some((rss, hwm)) = m.memory_kib()
            {
                let deepest = depths.iter().max().copied().unwrap_or(0);
                self.notes.push(format!(
                            "mount daemon memory after the first depth round (queues of {} waiting, listed): VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                            thousands(deepest),
                            rss as f64 / 1024.0,
                            hwm as f64 / 1024.0
                        ));
                self.depth_memory = Some(rss);
            }
        }
        // Depth targets: the rate at 100k over the rate at 2k, per round.
        for c in [
            Contender::CliBulk,
            Contender::Mount,
            Contender::Engine,
            Contender::Floor,
        ] {
            let (Some(&lo), Some(&hi)) =
                (depths.iter().find(|d| **d == 2_000), depths.iter().max())
            else {
                continue;
            };
            let sec_lo = self.rates.section(format!(
                "tmpfs, 100 B bodies, consume+ack with {} waiting",
                thousands(lo)
            ));
            let sec_hi = self.rates.section(format!(
                "tmpfs, 100 B bodies, consume+ack with {} waiting",
                thousands(hi)
            ));
            let what = format!(
                "{}: consume rate at {} waiting ≥ 0.7× the rate at {}",
                c.label(),
                thousands(hi),
                thousands(lo)
            );
            let ratio = self.round_ratio(sec_hi, c, sec_lo, c, "consume+ack");
            self.targets.push(Target {
                what,
                measured: ratio
                    .map(|r| format!("{r:.2}×"))
                    .unwrap_or_else(|| "—".into()),
                // The engine contender opens a fresh queue each round, and the floor lists once
                // per batch: both are shown for what the listing costs, not judged.
                pass: if matches!(c, Contender::CliBulk | Contender::Mount) {
                    ratio.map(|r| r >= 0.7)
                } else {
                    None
                },
            });
        }
        Ok(())
    }
}
