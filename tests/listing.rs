//! What a long-lived consumer (the mount, `ddmq work`, a Python worker) sees of the changes that
//! other clients make to its queue: priority, then FIFO, within the bound the engine's doc gives,
//! whatever others do. Two brokers on one root play two clients; each keeps its own listing.

use ddmq::engine::{Broker, ConsumeOptions, PublishOptions, Queue};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn two_clients() -> (tempfile::TempDir, Arc<Queue>, Arc<Queue>) {
    let dir = tempfile::tempdir().unwrap();
    let a = Broker::open_or_init(dir.path()).unwrap();
    a.create_queue("q").unwrap();
    let b = Broker::open(dir.path()).unwrap();
    (dir, a.queue("q").unwrap(), b.queue("q").unwrap())
}

fn publish(q: &Queue, body: &str, priority: u64) {
    q.publish(
        Value::from(body),
        &PublishOptions {
            priority: Some(priority),
            ..Default::default()
        },
    )
    .unwrap();
}

fn take(q: &Queue) -> Option<String> {
    let d = q.consume_one().unwrap()?;
    q.ack(&d.message.filename).unwrap();
    Some(d.message.body_text())
}

/// After another client took a message that our listing still holds, our own next publishes come
/// out in the order we published them (a single lost claim used to start random draws: `o6 o7
/// o1 o2 …` in 17 of 20 trials).
#[test]
fn own_publishes_stay_fifo_after_another_client_took_one() {
    for trial in 0..20 {
        let (_dir, a, b) = two_clients();
        publish(&a, "x1", 5);
        publish(&a, "x2", 5);
        assert_eq!(take(&a).as_deref(), Some("x1")); // a's listing now holds x2
        assert_eq!(take(&b).as_deref(), Some("x2")); // taken behind a's back
        let own: Vec<String> = (1..=8).map(|i| format!("o{i}")).collect();
        for o in &own {
            publish(&a, o, 5);
        }
        let got: Vec<String> = (0..8).filter_map(|_| take(&a)).collect();
        assert_eq!(got, own, "trial {trial}");
    }
}

/// A message another client published is delivered to a consumer that keeps publishing and
/// consuming on its own (its own changes used to make it record the directory as known, so the
/// other client's message was never listed: starved for good).
#[test]
fn another_clients_message_is_not_starved_by_own_traffic() {
    let (_dir, a, b) = two_clients();
    assert_eq!(take(&a), None); // a has listed the empty queue
    publish(&b, "theirs", 5);
    let mut round = 0;
    let delivered_at = loop {
        assert!(
            round < 2000,
            "the other client's message was never delivered"
        );
        publish(&a, &format!("own{round}a"), 5);
        publish(&a, &format!("own{round}b"), 5);
        if take(&a).as_deref() == Some("theirs") {
            break round;
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(2));
    };
    eprintln!("delivered after {delivered_at} rounds");
}

/// A consumer that loses claims to another one may move on to another message of the same
/// priority, never past a more urgent one (it used to draw from up to 128 head entries,
/// whatever their priority).
#[test]
fn lost_claims_never_pass_a_more_urgent_message() {
    for trial in 0..10 {
        let (_dir, a, b) = two_clients();
        for i in 0..10 {
            publish(&a, &format!("urgent{i}"), 1);
        }
        for i in 0..100 {
            publish(&a, &format!("later{i}"), 9);
        }
        assert_eq!(take(&a).as_deref(), Some("urgent0")); // a's listing: 9 urgent, 100 later
        // b takes six urgent ones behind a's back: a loses claims one after another.
        let by_b = b.consume(6, &ConsumeOptions { clean: false }).unwrap();
        assert_eq!(by_b.len(), 6);
        let next: Vec<String> = (0..3).filter_map(|_| take(&a)).collect();
        assert!(
            next.iter().all(|m| m.starts_with("urgent")),
            "trial {trial}: {next:?} passed a more urgent message"
        );
        assert_eq!(take(&a).as_deref().map(|m| &m[..5]), Some("later"));
    }
}
