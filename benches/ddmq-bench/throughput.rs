//! The "main" part: messages per second, publish and consume+ack, of every contender (the
//! syscall floor, the engine, the CLI one call per message and in bulk, the mount from the
//! shell and from Python, the original 0.9.10 module and python-dirq), on tmpfs and on the
//! disk, with 100 B and 64 KiB bodies, and durable (fsync) publishes.

use crate::contenders::Contender;
use crate::report::Target;
use crate::{Bench, Fs, Section, progress};
use std::fs;
use std::io;

impl Bench {
    pub(crate) fn main_sections(&mut self) -> io::Result<()> {
        let p = &self.plan;
        let all = |n: usize| {
            vec![
                (Contender::Floor, n),
                (Contender::Engine, n),
                (Contender::CliSingle, p.n_single.min(n)),
                (Contender::CliBulk, n),
                (Contender::Mount, n),
                (Contender::MountPy, n),
                (Contender::OrigDefaults, p.n_orig.min(n)),
                (Contender::OrigNoClean, p.n_orig.min(n)),
                (Contender::Dirq, n),
                (Contender::DirqSimple, n),
            ]
        };
        let big = |n: usize| {
            vec![
                (Contender::Floor, n),
                (Contender::Engine, n),
                (Contender::CliBulk, n),
                (Contender::Mount, n),
                (Contender::OrigDefaults, p.n_orig.min(n)),
                (Contender::DirqSimple, n),
            ]
        };
        let durable = |n: usize| {
            vec![
                (Contender::Floor, n),
                (Contender::Engine, n),
                (Contender::CliBulk, n),
                (Contender::Mount, n),
            ]
        };
        let mut sections = Vec::new();
        for fs_kind in [Fs::Tmpfs, Fs::Disk] {
            let f = fs_kind.name();
            sections.push(Section {
                title: format!("{f}, 100 B bodies"),
                fs: fs_kind,
                size: 100,
                durable: false,
                contenders: all(p.n),
            });
            if fs_kind == Fs::Tmpfs || p.big_on_disk {
                let n = (p.n / 2).max(1);
                sections.push(Section {
                    title: format!("{f}, 64 KiB bodies"),
                    fs: fs_kind,
                    size: 65_536,
                    durable: false,
                    contenders: big(n),
                });
            }
            let n = if fs_kind == Fs::Disk {
                p.n_durable_disk
            } else {
                p.n
            };
            sections.push(Section {
                title: format!("{f}, 100 B bodies, durable (fsync)"),
                fs: fs_kind,
                size: 100,
                durable: true,
                contenders: durable(n),
            });
        }
        for round in 0..self.plan.rounds {
            for (si, s) in sections.iter().enumerate() {
                progress(&format!(
                    "round {}/{}: {}",
                    round + 1,
                    self.plan.rounds,
                    s.title
                ));
                let sec = self.rates.section(s.title.clone());
                let k = s.contenders.len();
                for i in 0..k {
                    // Rotate the order each round so no contender always runs first or last.
                    let (c, n) = s.contenders[(i + round) % k];
                    if let Some(why) = self.unavailable(c) {
                        self.rates.failures.insert((sec, c), why);
                        continue;
                    }
                    let key = format!("r{round}-s{si}-{c:?}");
                    let mut place = self.place(c, s.fs, &key);
                    place.durable = s.durable;
                    self.measure_pair(sec, round, c, &place, n, s.size);
                    if !c.needs_mount() {
                        let _ = fs::remove_dir_all(&place.root);
                    }
                }
            }
        }
        self.engine_targets();
        Ok(())
    }

    pub(crate) fn engine_targets(&mut self) {
        let sec = self.rates.section("tmpfs, 100 B bodies".into());
        for op in ["publish", "consume+ack"] {
            let r = self
                .rates
                .ratio(sec, Contender::Engine, Contender::Floor, op);
            self.targets.push(Target {
                what: format!("engine {op} ≥ 0.5× the floor (tmpfs, one process, 100 B)"),
                measured: r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into()),
                pass: r.map(|r| r >= 0.5),
            });
        }
    }
}
