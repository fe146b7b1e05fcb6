//! The "python" part: one Python script (N publishes, then consume and ack until empty) run
//! with `import ddmq` bound to the original 0.9.10 and to our package (python/), next to the
//! same loop on the engine in this process, on tmpfs. It answers what crossing into Python
//! costs (package against engine) and what switching saves (package against original).

use super::{Bench, Fs, progress};
use crate::report::{Target, median};
use ddmq::engine::{Broker, ConsumeOptions, PublishOptions};
use serde_json::Value;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Body size of the loop's messages.
const SIZE: usize = 100;

/// Rounds of the engine and package loops at least (they are short).
const MIN_ROUNDS: usize = 7;

/// Seconds of one loop: (publish, consume and ack).
type LoopTime = (f64, f64);

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// The loop on the engine: the same calls the Python script makes, without Python.
fn engine_loop(root: &Path, n: usize) -> io::Result<LoopTime> {
    let err = |e: ddmq::engine::Error| other(e.to_string());
    let broker = Broker::open_or_init(root).map_err(err)?;
    broker.create_queue("tasks").map_err(err)?;
    let q = broker.queue("tasks").map_err(err)?;
    let body = Value::String("x".repeat(SIZE));
    let opts = PublishOptions {
        clean: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    for _ in 0..n {
        q.publish(body.clone(), &opts).map_err(err)?;
    }
    let t1 = Instant::now();
    let mut count = 0;
    let consume_opts = ConsumeOptions { clean: true };
    while let Some(d) = q.consume(1, &consume_opts).map_err(err)?.pop() {
        q.ack(&d.message.filename).map_err(err)?;
        count += 1;
    }
    let t2 = Instant::now();
    if count != n {
        return Err(other(format!("engine loop consumed {count} of {n}")));
    }
    Ok(((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64()))
}

/// The Python script under `python`, whose `import ddmq` decides what is measured.
fn python_loop(python: &Path, script: &Path, root: &Path, n: usize) -> io::Result<LoopTime> {
    let out = Command::new(python)
        .arg(script)
        .arg(root)
        .arg(n.to_string())
        .arg(SIZE.to_string())
        .env("PYTHONWARNINGS", "ignore")
        .output()?;
    if !out.status.success() {
        return Err(other(format!(
            "{} {}: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| other(format!("bad output from {}: {e}", script.display())))?;
    let get = |k: &str| v[k].as_f64().ok_or_else(|| other(format!("no {k} in {v}")));
    if get("count")? as usize != n {
        return Err(other(format!(
            "{} consumed {} of {n}",
            python.display(),
            v["count"]
        )));
    }
    Ok((get("publish")?, get("consume")?))
}

impl Bench {
    /// Runs the part. `module_python` is the interpreter with our package installed.
    pub(crate) fn python_module(
        &mut self,
        module_python: Option<&PathBuf>,
        script: &Path,
    ) -> io::Result<()> {
        let n = self.plan.versus_n;
        // A loop of the engine or the package takes a fraction of a second: more rounds of
        // those two, alternating which goes first, so a noisy moment hits both alike.
        let rounds = self.plan.rounds.max(MIN_ROUNDS);
        let mut engine = Vec::new();
        let mut module = Vec::new();
        let mut original = Vec::new();
        let mut per_round_ratio = Vec::new();
        let mut failures = Vec::new();
        let base = self.base(Fs::Tmpfs).join("python");
        for round in 0..rounds {
            let place = |who: &str| base.join(format!("r{round}-{who}"));
            progress(&format!(
                "round {}/{rounds}: the Python loop ({n} messages): engine, module{}",
                round + 1,
                if round < self.plan.versus_rounds {
                    ", original"
                } else {
                    ""
                }
            ));
            let run_engine = || engine_loop(&place("engine"), n);
            let run_module = || match module_python {
                Some(py) => python_loop(py, script, &place("module"), n),
                None => Err(other("not built (pass --module-python)".into())),
            };
            let (e, m) = if round % 2 == 0 {
                let e = run_engine();
                (e, run_module())
            } else {
                let m = run_module();
                (run_engine(), m)
            };
            if let (Ok(e), Ok(m)) = (&e, &m) {
                per_round_ratio.push((e.0 + e.1) / (m.0 + m.1));
            }
            match e {
                Ok(t) => engine.push(t),
                Err(e) => failures.push(format!("engine: {e}")),
            }
            match m {
                Ok(t) => module.push(t),
                Err(e) => failures.push(format!("module: {e}")),
            }
            // The original takes some 15 s a loop: fewer rounds of it.
            if round < self.plan.versus_rounds {
                match python_loop(&self.tools.python, script, &place("original"), n) {
                    Ok(t) => original.push(t),
                    Err(e) => failures.push(format!("original: {e}")),
                }
            }
            let _ = std::fs::remove_dir_all(&base);
        }
        let total = |ts: &[LoopTime]| median(&ts.iter().map(|(p, c)| p + c).collect::<Vec<_>>());
        let rate = |s: Option<f64>| s.map(|s| n as f64 / s);
        let fmt = |ts: &[LoopTime]| match (
            median(&ts.iter().map(|t| t.0).collect::<Vec<_>>()),
            median(&ts.iter().map(|t| t.1).collect::<Vec<_>>()),
            total(ts),
        ) {
            (Some(p), Some(c), Some(t)) => format!(
                "{t:.3} s ({:.0} msg/s; publish {p:.3} s, consume+ack {c:.3} s)",
                n as f64 / t
            ),
            _ => "not run".into(),
        };
        self.notes.push(format!(
            "The Python loop (tmpfs, {n} publishes of {SIZE} B, then consume and ack until empty), median over rounds: \
             engine in Rust {}; this package (python/) {}; the original 0.9.10 module {}.",
            fmt(&engine),
            fmt(&module),
            fmt(&original)
        ));
        for f in &failures {
            self.notes.push(format!("Python loop failure: {f}"));
        }
        let (engine_s, module_s, original_s) = (total(&engine), total(&module), total(&original));
        let vs_engine = median(&per_round_ratio);
        let vs_original = original_s.zip(module_s).map(|(o, m)| o / m);
        self.targets.push(Target {
            what: format!("`import ddmq` (python/) on the Python loop ({n} messages) ≥ 0.7× the engine's rate on the same loop (median of the per-round ratios)"),
            measured: match (vs_engine, rate(module_s), rate(engine_s)) {
                (Some(r), Some(m), Some(e)) => format!("{r:.2}× ({m:.0} against {e:.0} msg/s)"),
                _ => "—".into(),
            },
            pass: vs_engine.map(|r| r >= 0.7),
        });
        self.targets.push(Target {
            what: format!("`import ddmq` (python/) on the Python loop ({n} messages) ≥ 60× the original 0.9.10 module"),
            measured: match (vs_original, module_s, original_s) {
                (Some(r), Some(m), Some(o)) => format!("{r:.0}× ({m:.2} s against {o:.1} s)"),
                _ => "—".into(),
            },
            pass: vs_original.map(|r| r >= 60.0),
        });
        Ok(())
    }
}
