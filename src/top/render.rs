//! How a refresh of `ddmq top` is shown: a table for people, one JSON object for scripts.

use super::{QueueRow, Report};
use crate::human::format_duration;
use serde_json::{Value, json};
use std::fmt::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// The table: a heading line, then one row per queue.
pub fn render_table(report: &Report, root: &Path, every: f64) -> String {
    let epoch = report
        .time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (h, m, s) = (epoch / 3600 % 24, epoch / 60 % 60, epoch % 60);
    let mut text = format!(
        "ddmq top {}  {h:02}:{m:02}:{s:02} UTC  every {every} s  (refresh {:.0} ms)\n",
        root.display(),
        report.refresh_time.as_secs_f64() * 1e3
    );
    let width = report
        .rows
        .iter()
        .map(|r| r.queue.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = writeln!(
        text,
        "{:<width$}  {:>9}  {:>9}  {:>7}  {:>8}  {:>8}  {:>8}  {:>8}",
        "QUEUE", "WAITING", "IN FLIGHT", "DEAD", "PUB/S", "CONS/S", "OLDEST", "ETA"
    );
    for r in &report.rows {
        let rate = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        let secs = |x: Option<f64>| x.map_or("-".to_string(), format_duration);
        let _ = writeln!(
            text,
            "{:<width$}  {:>9}  {:>9}  {:>7}  {:>8}  {:>8}  {:>8}  {:>8}",
            r.queue,
            r.waiting,
            r.in_flight,
            r.dead,
            rate(r.published_per_s),
            rate(r.consumed_per_s),
            secs(r.oldest_waiting_age),
            secs(r.eta)
        );
    }
    if report.rows.is_empty() {
        text.push_str("(no queues)\n");
    }
    text
}

/// One JSON object on one line: `time` (epoch seconds), `interval` (seconds the rates were
/// measured over, null on a first look) and `queues`, one object per queue.
pub fn render_json(report: &Report) -> String {
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let opt = |x: Option<f64>| x.map_or(Value::Null, |v| json!(round(v)));
    let queues: Vec<Value> = report
        .rows
        .iter()
        .map(|r: &QueueRow| {
            json!({
                "queue": r.queue,
                "waiting": r.waiting,
                "in_flight": r.in_flight,
                "dead": r.dead,
                "published_per_s": opt(r.published_per_s),
                "consumed_per_s": opt(r.consumed_per_s),
                "oldest_waiting_age": opt(r.oldest_waiting_age),
                "eta": opt(r.eta),
            })
        })
        .collect();
    let time = report
        .time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let value = json!({
        "time": round(time),
        "interval": opt(report.interval),
        "refresh_ms": round(report.refresh_time.as_secs_f64() * 1e3),
        "queues": queues,
    });
    format!("{value}\n")
}
