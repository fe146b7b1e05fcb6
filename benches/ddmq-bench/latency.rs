//! The "latency" part: from a publish by another client to a consumer already waiting, for
//! `ddmq consume --wait` and for a blocking read of the mount's `wait`.

use crate::contenders::{self, Contender, Place, Tools};
use crate::report::{Target, median};
use crate::{Bench, Fs, progress};
use std::fs;
use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Bench {
    /// From a publish (through the engine, i.e. another client) to a consumer already waiting.
    pub(crate) fn wake_up_latency(&mut self) -> io::Result<()> {
        let mut cli = Vec::new();
        let mut mount = Vec::new();
        let mut cli_error = self.cli_error.clone();
        let mut mount_error = self.mount_error.clone();
        let cli_place = self.place(Contender::CliSingle, Fs::Tmpfs, "latency-cli");
        contenders::prepare(Contender::Engine, &cli_place)?;
        let mount_place = if mount_error.is_none() {
            let p = self.place(Contender::Mount, Fs::Tmpfs, "latency-mount");
            contenders::prepare(Contender::Engine, &p)?;
            Some(p)
        } else {
            None
        };
        for round in 0..self.plan.rounds {
            progress(&format!(
                "round {}/{}: wake-up latency",
                round + 1,
                self.plan.rounds
            ));
            for _ in 0..self.plan.latency_samples {
                if cli_error.is_none() {
                    match cli_wake_up(&self.tools, &cli_place) {
                        Ok(d) => cli.push(d.as_secs_f64() * 1e3),
                        Err(e) => cli_error = Some(e.to_string()),
                    }
                }
                if let (None, Some(p)) = (&mount_error, &mount_place) {
                    match mount_wake_up(p) {
                        Ok(d) => mount.push(d.as_secs_f64() * 1e3),
                        Err(e) => mount_error = Some(e.to_string()),
                    }
                }
            }
        }
        for (what, samples, err) in [
            ("CLI `consume --wait`", &cli, &cli_error),
            ("mount: blocking read of `wait`", &mount, &mount_error),
        ] {
            let m = median(samples);
            let max = samples.iter().copied().fold(f64::NAN, f64::max);
            self.targets.push(Target {
                what: format!("wake-up latency, {what}, tmpfs: median ≤ 50 ms"),
                measured: match (err, m) {
                    (Some(e), _) => format!("not run: {e}"),
                    (None, Some(m)) => {
                        format!("{m:.1} ms (max {max:.1} ms, {} samples)", samples.len())
                    }
                    (None, None) => "—".into(),
                },
                pass: if err.is_some() {
                    None
                } else {
                    m.map(|m| m <= 50.0)
                },
            });
        }
        Ok(())
    }
}

/// Starts `ddmq consume --ack --wait`, lets it settle into waiting, publishes, times its exit.
fn cli_wake_up(tools: &Tools, place: &Place) -> io::Result<Duration> {
    let mut child = Command::new(&tools.ddmq)
        .args(["consume", "--ack", "--wait", "10"])
        .arg(&place.root)
        .arg(&place.queue)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = child.try_wait()? {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        return Err(io::Error::other(format!(
            "`ddmq consume --wait` ended before a message was published ({status}): {}",
            err.trim()
        )));
    }
    let started = Instant::now();
    contenders::fill(place, 1, 100)?;
    let out = child.wait_with_output()?;
    let elapsed = started.elapsed();
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains('{') {
        return Err(io::Error::other(format!(
            "`ddmq consume --wait` did not deliver the message ({})",
            out.status
        )));
    }
    Ok(elapsed)
}

/// A reader blocked on `MNT/q/wait`; returns the time from the publish to its read.
fn mount_wake_up(place: &Place) -> io::Result<Duration> {
    let path = place
        .mnt
        .as_ref()
        .ok_or_else(|| io::Error::other("no mount"))?
        .join(&place.queue)
        .join("wait");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let result = fs::File::open(&path).and_then(|mut f| {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map(|_| buf.len())
        });
        let _ = tx.send((Instant::now(), result));
    });
    std::thread::sleep(Duration::from_millis(300));
    if let Ok((_, r)) = rx.try_recv() {
        let _ = reader.join();
        return Err(io::Error::other(format!(
            "the read of `wait` returned before any publish: {r:?}"
        )));
    }
    let started = Instant::now();
    contenders::fill(place, 1, 100)?;
    let (at, result) = rx
        .recv_timeout(Duration::from_secs(15))
        .map_err(|_| io::Error::other("no wake-up within 15 s"))?;
    let _ = reader.join();
    let len = result?;
    if len == 0 {
        return Err(io::Error::other("the read of `wait` returned no body"));
    }
    Ok(at.saturating_duration_since(started))
}
