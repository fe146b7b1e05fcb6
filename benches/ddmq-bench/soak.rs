//! The "soak" part: the mount daemon's memory with a deep queue (measured by the depth part)
//! and over many messages passed through it.

use crate::contenders::{self, Contender, Place};
use crate::report::Target;
use crate::{Bench, progress, thousands};
use std::io;
use std::time::Instant;

impl Bench {
    /// The mount daemon's memory with a deep queue, and over many messages passed through.
    pub(crate) fn mount_memory_soak(&mut self) -> io::Result<()> {
        let what_depth =
            "mount daemon resident memory ≤ 64 MiB with 100k messages waiting".to_string();
        let what_soak = format!(
            "mount daemon memory not growing over {} messages passed through",
            thousands(self.plan.soak)
        );
        let Some(m) = self.mounts.get("tmpfs") else {
            let why = format!("not run: {}", self.mount_error.clone().unwrap_or_default());
            self.targets.push(Target {
                what: what_depth,
                measured: why.clone(),
                pass: None,
            });
            self.targets.push(Target {
                what: what_soak,
                measured: why,
                pass: None,
            });
            return Ok(());
        };
        let deepest = self.plan.depths.iter().max().copied().unwrap_or(0);
        self.targets.push(Target {
            what: what_depth,
            measured: match self.depth_memory {
                Some(kib) => format!(
                    "{:.1} MiB VmRSS after consuming from a queue of {} waiting",
                    kib as f64 / 1024.0,
                    thousands(deepest)
                ),
                None => "—".into(),
            },
            pass: if deepest >= 100_000 {
                self.depth_memory.map(|kib| kib <= 64 * 1024)
            } else {
                None
            },
        });
        let place = Place {
            root: m.root.clone(),
            queue: "soak".into(),
            mnt: Some(m.mnt.clone()),
            durable: false,
        };
        contenders::prepare(Contender::Mount, &place)?;
        let total = self.plan.soak;
        let step = (total / 10).max(1);
        let mut samples = Vec::new();
        let started = Instant::now();
        let mut passed = 0;
        progress(&format!(
            "soak: {} messages through the mount",
            thousands(total)
        ));
        while passed < total {
            let batch = step.min(total - passed);
            let inner = 1000.min(batch);
            let mut done = 0;
            while done < batch {
                let k = inner.min(batch - done);
                contenders::publish(Contender::Mount, &place, &self.tools, k, 100, &[])?;
                let (_, got) = contenders::mount_consume(&place, k)?;
                if got != k {
                    return Err(io::Error::other(format!(
                        "soak: took {got} of {k} messages back through the mount"
                    )));
                }
                done += k;
            }
            passed += batch;
            if let Some((rss, _)) = m.memory_kib() {
                samples.push((passed, rss));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let first = samples.first().map(|s| s.1).unwrap_or(0);
        let last = samples.last().map(|s| s.1).unwrap_or(0);
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let growth = last as i64 - first as i64;
        self.targets.push(Target {
            what: what_soak,
            measured: format!(
                "VmRSS {:.1} MiB after the first {}, {:.1} MiB at the end, peak {:.1} MiB ({:.0} msgs/s round trip)",
                first as f64 / 1024.0,
                thousands(step),
                last as f64 / 1024.0,
                peak as f64 / 1024.0,
                total as f64 / secs
            ),
            // Allocator noise is a few MiB at most; a leak per message would show over the run.
            pass: if samples.len() >= 2 { Some(growth <= 4 * 1024 || (growth as f64) <= first as f64 * 0.1) } else { None },
        });
        Ok(())
    }
}
