//! The "fuse-floor" and "versus" parts: the Python client on the mount (write `in`, read
//! `next`) against the same client on a do-nothing FUSE filesystem (what FUSE itself costs), and
//! against the original module with its defaults.

use crate::contenders::{Contender, Place};
use crate::report::{Target, median};
use crate::{Bench, Fs, progress, system};
use std::collections::BTreeMap;
use std::io;

impl Bench {
    /// The Python client on the mount against the same client on the FUSE floor (a do-nothing
    /// fuser filesystem with the same options, in a process of its own), same work.
    pub(crate) fn versus_fuse_floor(&mut self) -> io::Result<()> {
        let n = self.plan.versus_n;
        let sec = self.rates.section(format!(
            "tmpfs, 100 B bodies, {n} messages: Python on the mount against the FUSE floor"
        ));
        let what = format!(
            "Python client on the mount (write `in`, read `next`, {n} messages) ≥ 0.7× the FUSE floor's rate"
        );
        if let Some(why) = self.unavailable(Contender::MountPy) {
            self.targets.push(Target {
                what,
                measured: why,
                pass: None,
            });
            return Ok(());
        }
        let floor_mnt = self.base(Fs::Tmpfs).join("fuse-floor-mnt");
        let floor = match system::FloorDaemon::start(&floor_mnt) {
            Ok(f) => f,
            Err(e) => {
                self.targets.push(Target {
                    what,
                    measured: format!("the FUSE floor would not mount: {e}"),
                    pass: None,
                });
                return Ok(());
            }
        };
        let mut totals: BTreeMap<(Contender, usize), f64> = BTreeMap::new();
        for round in 0..self.plan.versus_rounds {
            for c in [Contender::FuseFloorPy, Contender::MountPy] {
                progress(&format!(
                    "round {}/{}: {} with {n} messages",
                    round + 1,
                    self.plan.versus_rounds,
                    c.label()
                ));
                let place = if c == Contender::FuseFloorPy {
                    Place {
                        root: floor_mnt.clone(),
                        queue: "q".into(),
                        mnt: Some(floor_mnt.clone()),
                        durable: false,
                    }
                } else {
                    self.place(c, Fs::Tmpfs, &format!("fuse-floor-r{round}"))
                };
                if let Some((p, q)) = self.measure_pair(sec, round, c, &place, n, 100) {
                    totals.insert((c, round), n as f64 / p + n as f64 / q);
                }
            }
        }
        drop(floor);
        let (r, secs) = time_ratio(
            &totals,
            self.plan.versus_rounds,
            Contender::FuseFloorPy,
            Contender::MountPy,
        );
        self.targets.push(Target {
            what,
            measured: format!(
                "{} (mount {} s, floor {} s)",
                r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into()),
                secs(Contender::MountPy)
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_default(),
                secs(Contender::FuseFloorPy)
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_default()
            ),
            pass: r.map(|r| r >= 0.7),
        });
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
