//! `ddmq top`'s numbers and how they are shown: rates and ETA from two looks with known flows
//! between them, `-` (table) and `null` (JSON) on a first look, and the table as printed.

use ddmq::engine::{Broker, ConsumeOptions, PublishOptions};
use ddmq::top::{Dashboard, QueueRow, render_json, render_table};
use serde_json::Value;
use std::process::Command;

fn publish(b: &Broker, n: usize) {
    let q = b.queue("q").unwrap();
    for i in 0..n {
        q.publish(Value::String(format!("m{i}")), &PublishOptions::default())
            .unwrap();
    }
}

/// The table's row for queue `name`, split into its columns.
fn table_row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn rates_and_eta_count_what_moved_between_two_looks() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open_or_init(dir.path()).unwrap();
    b.create_queue("q").unwrap();
    b.create_queue("quiet").unwrap();
    publish(&b, 6);
    // Each queue's rates are over the time between its own two looks; the report's interval is
    // the last queue's: with one queue shown, exactly the one its rates are over.
    let mut dash = Dashboard::new(Broker::open(dir.path()).unwrap(), vec!["q".into()]);
    let mut quiet_dash = Dashboard::new(Broker::open(dir.path()).unwrap(), vec!["quiet".into()]);
    quiet_dash.refresh().unwrap();

    // First look: counts, but no rates, and no ETA for a queue that holds messages.
    let first = dash.refresh().unwrap();
    assert_eq!(first.interval, None);
    let row = |r: &ddmq::top::Report, name: &str| -> QueueRow {
        r.rows.iter().find(|x| x.queue == name).unwrap().clone()
    };
    let q = row(&first, "q");
    assert_eq!((q.waiting, q.in_flight, q.dead), (6, 0, 0));
    assert_eq!(
        (q.published_per_s, q.consumed_per_s, q.eta),
        (None, None, None)
    );
    assert!(q.oldest_waiting_age.is_some());
    let table = render_table(&first, dir.path(), 2.0);
    let header = table.lines().nth(1).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "QUEUE", "WAITING", "IN", "FLIGHT", "DEAD", "PUB/S", "CONS/S", "OLDEST", "ETA"
        ]
    );
    let cols = table_row(&table, "q");
    assert_eq!(&cols[1..4], ["6", "0", "0"]);
    assert_eq!(
        (&cols[4][..], &cols[5][..], &cols[7][..]),
        ("-", "-", "-"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&render_json(&first)).unwrap();
    assert_eq!(json["interval"], Value::Null);
    let jq = &json["queues"].as_array().unwrap()[0];
    assert_eq!(jq["queue"], "q");
    assert_eq!(
        (&jq["published_per_s"], &jq["consumed_per_s"], &jq["eta"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );

    // Between the looks: 4 published, 3 consumed (1 of them acked).
    publish(&b, 4);
    let q = b.queue("q").unwrap();
    let got = q.consume(3, &ConsumeOptions { clean: false }).unwrap();
    q.ack(&got[0].work_name.to_string()).unwrap();

    let second = dash.refresh().unwrap();
    let secs = second.interval.expect("an interval on the second look");
    let r = row(&second, "q");
    assert_eq!((r.waiting, r.in_flight), (7, 2));
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.max(1.0));
    assert!(close(r.published_per_s, 4.0 / secs), "{r:?}");
    assert!(close(r.consumed_per_s, 3.0 / secs), "{r:?}");
    // ETA: what is left (waiting and in flight) at the consume rate.
    assert!(close(r.eta, 9.0 / (3.0 / secs)), "{r:?}");
    let quiet = row(&quiet_dash.refresh().unwrap(), "quiet");
    assert_eq!(
        (quiet.published_per_s, quiet.consumed_per_s, quiet.eta),
        (Some(0.0), Some(0.0), Some(0.0))
    );
    let table = render_table(&second, dir.path(), 2.0);
    let cols = table_row(&table, "q");
    assert_eq!(cols[4], format!("{:.1}", 4.0 / secs), "{table}");
    assert_eq!(cols[5], format!("{:.1}", 3.0 / secs), "{table}");
    assert_eq!(cols[7], ddmq::human::format_duration(3.0 * secs), "{table}");
    let json: Value = serde_json::from_str(&render_json(&second)).unwrap();
    let jq = &json["queues"].as_array().unwrap()[0];
    let rounded = |x: f64| (x * 1000.0).round() / 1000.0;
    assert_eq!(jq["published_per_s"], rounded(4.0 / secs));
    assert_eq!(jq["eta"], rounded(3.0 * secs));
}

#[test]
fn top_once_prints_the_table_when_stdout_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open_or_init(dir.path()).unwrap();
    b.create_queue("q").unwrap();
    publish(&b, 2);
    let out = Command::new(env!("CARGO_BIN_EXE_ddmq"))
        .args(["top", "--once", "--interval", "0.05"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\x1b'),
        "no terminal control codes: {text:?}"
    );
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("ddmq top {}", dir.path().display()))
    );
    assert!(lines.next().unwrap().starts_with("QUEUE"));
    let cols = table_row(&text, "q");
    assert_eq!(&cols[1..6], ["2", "0", "0", "0.0", "0.0"], "{text}");
    assert_eq!(
        cols[7], "-",
        "two waiting and none consumed: no ETA\n{text}"
    );
}
