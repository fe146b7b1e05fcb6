//! The "fuse-floor" and "versus" parts: the Python client on the mount (write `in`, read
//! `next`) against the same client on the minimal FUSE file queue (what a FUSE file queue
//! costs) and on a do-nothing FUSE filesystem (what FUSE itself costs), and against the
//! original module with its defaults.

use crate::contenders::{Contender, Place};
use crate::report::{Target, median};
use crate::{Bench, Fs, fuse_floor, progress, system};
use std::collections::BTreeMap;
use std::io;

impl Bench {
    /// The Python client on the mount against the same client on the two FUSE floors (the
    /// minimal file queue and the do-nothing filesystem, see fuse_floor.rs), same work, in
    /// interleaved rounds; each round runs all three unpinned, then all three with the daemons
    /// and the client pinned to one CPU (a quiet VM's cross-CPU wake-ups swing unpinned times
    /// several-fold, so the pinned rounds measure the work).
    pub(crate) fn versus_fuse_floor(&mut self) -> io::Result<()> {
        let n = self.plan.versus_n;
        let rounds = self.plan.floor_rounds;
        let all_cpus = system::own_cpus();
        let one_cpu = vec![all_cpus[0]];
        let what = |pinned: bool, base: Contender| {
            format!(
                "Python client on the mount (write `in`, read `next`, {n} messages), {}, against the {}",
                if pinned {
                    format!("pinned to CPU {}", one_cpu[0])
                } else {
                    "unpinned".to_string()
                },
                match (base, pinned) {
                    (Contender::FuseQueuePy, true) => "minimal FUSE file queue: ≥ 0.9×",
                    (Contender::FuseQueuePy, false) => "minimal FUSE file queue",
                    _ => "do-nothing FUSE floor",
                }
            )
        };
        let not_run = |this: &mut Bench, why: String| {
            for pinned in [false, true] {
                for base in [Contender::FuseQueuePy, Contender::FuseFloorPy] {
                    this.targets.push(Target {
                        what: what(pinned, base),
                        measured: format!("not run: {why}"),
                        pass: None,
                    });
                }
            }
        };
        if let Some(why) = self.unavailable(Contender::MountPy) {
            not_run(self, why);
            return Ok(());
        }
        let base = self.base(Fs::Tmpfs).to_path_buf();
        let started = system::FloorDaemon::start(
            "fuse-queue",
            Some(&base.join("fuse-queue-dir")),
            &base.join("fuse-queue-mnt"),
        )
        .and_then(|q| {
            Ok((
                q,
                system::FloorDaemon::start("fuse-floor", None, &base.join("fuse-floor-mnt"))?,
            ))
        });
        let (queue, floor) = match started {
            Ok(both) => both,
            Err(e) => {
                not_run(self, format!("a FUSE floor would not mount: {e}"));
                return Ok(());
            }
        };
        let mount_pid = self.mounts[Fs::Tmpfs.name()].pid();
        let daemons = [mount_pid, queue.pid(), floor.pid()];
        let sections = [false, true].map(|pinned| {
            self.rates.section(format!(
                "tmpfs, 100 B bodies, {n} messages: Python on the mount against the FUSE floors, {}",
                if pinned {
                    format!("daemons and client pinned to CPU {}", one_cpu[0])
                } else {
                    "unpinned".into()
                }
            ))
        });
        let order = [
            Contender::FuseQueuePy,
            Contender::MountPy,
            Contender::FuseFloorPy,
        ];
        // (pinned, contender, round) -> seconds for n publishes plus n consumes.
        let mut totals: BTreeMap<(bool, Contender, usize), f64> = BTreeMap::new();
        let mut pin_error = None;
        for round in 0..rounds {
            for pinned in [false, true] {
                let cpus = if pinned { &one_cpu } else { &all_cpus };
                for pid in daemons {
                    if let Err(e) = system::pin_process(pid, cpus) {
                        pin_error.get_or_insert(format!("pinning pid {pid}: {e}"));
                    }
                }
                self.tools.cpus = pinned.then(|| one_cpu.clone());
                // Each round starts with another contender, so none is always first.
                let mut this_round = order;
                this_round.rotate_left(round % order.len());
                for c in this_round {
                    progress(&format!(
                        "round {}/{rounds} ({}): {} with {n} messages",
                        round + 1,
                        if pinned { "pinned" } else { "unpinned" },
                        c.label()
                    ));
                    let place = match c {
                        Contender::MountPy => {
                            self.place(c, Fs::Tmpfs, &format!("fuse-floor-r{round}-{pinned}"))
                        }
                        Contender::FuseQueuePy => Place {
                            root: base.join("fuse-queue-dir"),
                            queue: fuse_floor::QUEUE_NAME.into(),
                            mnt: Some(queue.mnt().to_path_buf()),
                            durable: false,
                        },
                        _ => Place {
                            root: floor.mnt().to_path_buf(),
                            queue: fuse_floor::QUEUE_NAME.into(),
                            mnt: Some(floor.mnt().to_path_buf()),
                            durable: false,
                        },
                    };
                    let sec = sections[pinned as usize];
                    if let Some((p, q)) = self.measure_pair(sec, round, c, &place, n, 100) {
                        totals.insert((pinned, c, round), n as f64 / p + n as f64 / q);
                    }
                }
            }
        }
        self.tools.cpus = None;
        // The mount serves the other parts as it did before.
        if let Err(e) = system::pin_process(mount_pid, &all_cpus) {
            progress(&format!("could not unpin the mount daemon: {e}"));
        }
        drop(queue);
        drop(floor);
        if let Some(e) = pin_error {
            self.notes.push(format!("fuse-floor part: {e}"));
        }
        for pinned in [false, true] {
            let secs = |c: Contender| {
                median(
                    &(0..rounds)
                        .filter_map(|r| totals.get(&(pinned, c, r)).copied())
                        .collect::<Vec<_>>(),
                )
            };
            for base in [Contender::FuseQueuePy, Contender::FuseFloorPy] {
                let ratios: Vec<f64> = (0..rounds)
                    .filter_map(|r| {
                        Some(
                            totals.get(&(pinned, base, r))?
                                / totals.get(&(pinned, Contender::MountPy, r))?,
                        )
                    })
                    .collect();
                let r = median(&ratios);
                let range = if ratios.is_empty() {
                    String::new()
                } else {
                    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = ratios.iter().copied().fold(0.0, f64::max);
                    format!(", range {lo:.2}×–{hi:.2}× over {} rounds", ratios.len())
                };
                let fmt =
                    |s: Option<f64>| s.map(|s| format!("{s:.3}")).unwrap_or_else(|| "—".into());
                self.targets.push(Target {
                    what: what(pinned, base),
                    measured: format!(
                        "{}{range} (mount {} s, {} {} s)",
                        r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into()),
                        fmt(secs(Contender::MountPy)),
                        if base == Contender::FuseQueuePy {
                            "file queue"
                        } else {
                            "do-nothing"
                        },
                        fmt(secs(base)),
                    ),
                    // The target is the pinned ratio to the file queue; the others are
                    // shown for reference.
                    pass: (pinned && base == Contender::FuseQueuePy)
                        .then_some(())
                        .and(r.map(|r| r >= 0.9)),
                });
            }
        }
        Ok(())
    }

    /// The Python client on the mount against the original module with its defaults, same work.
    pub(crate) fn versus_original(&mut self) -> io::Result<()> {
        let n = self.plan.versus_n;
        let title = format!(
            "tmpfs, 100 B bodies, {n} messages: Python on the mount against the original module"
        );
        let sec = self.rates.section(title);
        let mut totals: BTreeMap<(Contender, usize), f64> = BTreeMap::new();
        for round in 0..self.plan.versus_rounds {
            for c in [Contender::MountPy, Contender::OrigDefaults] {
                progress(&format!(
                    "round {}/{}: {} with {n} messages",
                    round + 1,
                    self.plan.versus_rounds,
                    c.label()
                ));
                if let Some(why) = self.unavailable(c) {
                    self.rates.failures.insert((sec, c), why);
                    continue;
                }
                let place = self.place(c, Fs::Tmpfs, &format!("versus-r{round}-{c:?}"));
                if let Some((p, q)) = self.measure_pair(sec, round, c, &place, n, 100) {
                    totals.insert((c, round), n as f64 / p + n as f64 / q);
                }
            }
        }
        let (r, secs) = time_ratio(
            &totals,
            self.plan.versus_rounds,
            Contender::OrigDefaults,
            Contender::MountPy,
        );
        self.targets.push(Target {
            what: format!("Python client on the mount (write `in`, read `next`, {n} messages) ≥ 20× faster than the original module with its defaults"),
            measured: format!(
                "{} (mount {} s, original {} s)",
                r.map(|r| format!("{r:.0}×")).unwrap_or_else(|| "—".into()),
                secs(Contender::MountPy).map(|s| format!("{s:.2}")).unwrap_or_default(),
                secs(Contender::OrigDefaults).map(|s| format!("{s:.1}")).unwrap_or_default()
            ),
            pass: r.map(|r| r >= 20.0),
        });
        Ok(())
    }
}

/// Compares the seconds per round of `ours` with `base`'s in a map of (contender, round) ->
/// seconds: the median of the per-round ratios base/ours (above 1: ours is faster), and a
/// function giving a contender's median seconds.
fn time_ratio(
    totals: &BTreeMap<(Contender, usize), f64>,
    rounds: usize,
    base: Contender,
    ours: Contender,
) -> (Option<f64>, impl Fn(Contender) -> Option<f64> + '_) {
    let ratios: Vec<f64> = (0..rounds)
        .filter_map(|r| Some(totals.get(&(base, r))? / totals.get(&(ours, r))?))
        .collect();
    let secs = move |c| {
        median(
            &totals
                .iter()
                .filter(|((cc, _), _)| *cc == c)
                .map(|(_, v)| *v)
                .collect::<Vec<_>>(),
        )
    };
    (median(&ratios), secs)
}
