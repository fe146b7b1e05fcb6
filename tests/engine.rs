//! The engine's operations one by one, each numbered bug of 0.9.10 that the engine fixes
//! (B*, R*, S* in the behaviour reference), and hostile or broken files on disk.

mod support;

use ddmq::engine::*;
use serde_json::json;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use support::*;

fn publish(q: &Queue, body: &str) -> Message {
    q.publish(json!(body), &PublishOptions::default()).unwrap()
}

fn publish_with(q: &Queue, body: &str, opts: PublishOptions) -> Message {
    q.publish(json!(body), &opts).unwrap()
}

fn no_clean() -> ConsumeOptions {
    ConsumeOptions { clean: false }
}

fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter().map(|d| d.message.body_text()).collect()
}

fn drain(q: &Queue) -> Vec<String> {
    bodies(&q.consume(usize::MAX, &no_clean()).unwrap())
}

fn waiting_count(q: &Queue) -> usize {
    q.waiting().unwrap().len()
}

// ------------------------------------------------------------------ operations

#[test]
fn publish_writes_one_python_style_file_and_returns_its_record() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let m = publish_with(
        &q,
        "hello",
        PublishOptions {
            priority: Some(7),
            timeout: Some(30),
            requeue_limit: Some(3),
            ..Default::default()
        },
    );
    assert_eq!(m.filename, format!("7.{}.ddmq{}", m.queue_number, m.id));
    assert_eq!(m.id.len(), 32);
    assert_eq!(message_files(q.dir()), vec![m.filename.clone()]);
    let text = std::fs::read_to_string(q.dir().join(&m.filename)).unwrap();
    assert!(
        text.starts_with(r#"{"message": "hello", "queue": "q", "timeout": 30, "id": ""#),
        "{text}"
    );
    assert!(!text.ends_with('\n'));
    let back = q
        .read_waiting(&WaitingName::parse(&m.filename).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(back, m);
    // Nothing but the message and the queue's own files: no temporary file left behind.
    assert_eq!(
        entries(q.dir()),
        vec![m.filename.clone(), "ddmq.yaml".into(), "work".into()]
    );
}

#[test]
fn publish_takes_any_json_body_and_refuses_oversized_ones() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let body = json!({"job": [1, 2.5, null, "x"], "nested": {"k": true}});
    q.publish(body.clone(), &PublishOptions::default()).unwrap();
    assert_eq!(q.consume_one().unwrap().unwrap().message.message, body);
    set_queue_settings(&q, "max_message_bytes: 10\n");
    let e = q
        .publish(json!("01234567890"), &PublishOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                size: 11,
                limit: 10,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(waiting_count(&q), 0);
}

#[test]
fn consume_n_claims_in_order_and_moves_to_work_with_expiry() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    for i in 0..5 {
        publish(&q, &format!("m{i}"));
    }
    let before = now_secs();
    let got = q.consume(3, &ConsumeOptions::default()).unwrap();
    let after = now_secs();
    assert_eq!(bodies(&got), ["m0", "m1", "m2"]);
    for d in &got {
        assert_eq!(
            d.message.filename,
            d.work_name.to_string(),
            "consume returns the work/ name, as the original"
        );
        assert!(d.work_name.expiry >= before + 600 && d.work_name.expiry <= after + 600);
        assert!(q.dir().join("work").join(d.work_name.to_string()).is_file());
    }
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 2,
            in_flight: 3,
            oldest_waiting_age: None
        }
    );
    assert_eq!(bodies(&q.consume(10, &no_clean()).unwrap()), ["m3", "m4"]);
    assert!(q.consume(10, &no_clean()).unwrap().is_empty());
    assert!(q.consume_one().unwrap().is_none());
}

#[test]
fn consume_sees_messages_published_by_another_handle() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish(&q, "first");
    assert_eq!(
        q.consume_one().unwrap().unwrap().message.body_text(),
        "first"
    );
    // Another process (another broker): our cached listing must notice the new file.
    let other = Broker::open(d.path()).unwrap();
    publish(&other.queue("q").unwrap(), "second");
    assert_eq!(
        q.consume_one().unwrap().unwrap().message.body_text(),
        "second"
    );
}

#[test]
fn consume_wait_returns_a_message_published_later_and_gives_up_when_asked() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let root = d.path().to_path_buf();
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let b = Broker::open(root).unwrap();
        publish(&b.queue("q").unwrap(), "late");
    });
    let got = q
        .consume_wait(Duration::from_secs(60), Duration::from_millis(20), &|| {
            false
        })
        .unwrap();
    publisher.join().unwrap();
    assert_eq!(got.unwrap().message.body_text(), "late");
    let got = q
        .consume_wait(Duration::from_secs(60), Duration::from_millis(10), &|| true)
        .unwrap();
    assert!(got.is_none());
}

#[test]
fn ack_deletes_by_work_name_or_id_once() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish(&q, "a");
    publish(&q, "b");
    let got = q.consume(2, &no_clean()).unwrap();
    assert_eq!(
        q.ack(&got[0].work_name.to_string()).unwrap(),
        AckOutcome::Acked(got[0].work_name.to_string())
    );
    assert_eq!(
        q.ack(&got[0].work_name.to_string()).unwrap(),
        AckOutcome::NotFound
    );
    assert!(matches!(
        q.ack(&got[1].message.id).unwrap(),
        AckOutcome::Acked(_)
    ));
    assert!(entries(&q.dir().join("work")).is_empty());
    assert!(matches!(
        q.ack("not a name/").unwrap_err(),
        Error::InvalidMessageName(_)
    ));
}

#[test]
fn nack_follows_the_message_and_force_requeues_a_drop_message() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "keep",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "drop",
        PublishOptions {
            requeue: Some(Requeue::Drop),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "forced",
        PublishOptions {
            requeue: Some(Requeue::Drop),
            ..Default::default()
        },
    );
    let got = q.consume(3, &no_clean()).unwrap();
    assert!(matches!(
        q.nack(&got[0].work_name.to_string(), false).unwrap(),
        RequeueOutcome::Requeued(_)
    ));
    assert_eq!(
        q.nack(&got[1].work_name.to_string(), false).unwrap(),
        RequeueOutcome::Dropped
    );
    let RequeueOutcome::Requeued(name) = q.nack(&got[2].work_name.to_string(), true).unwrap()
    else {
        panic!("force requeue")
    };
    assert_eq!(name.priority, 0, "requeue_prio defaults to 0");
    assert_eq!(
        q.nack(&got[2].work_name.to_string(), true).unwrap(),
        RequeueOutcome::NotFound
    );
    assert!(
        entries(&q.dir().join("work")).is_empty(),
        "nack leaves nothing in work/"
    );
    let mut back = drain(&q);
    back.sort();
    assert_eq!(back, ["forced", "keep"]);
}

#[test]
fn give_back_restores_the_same_waiting_name_uncounted() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish(&q, "a");
    publish(&q, "b");
    let d = q.consume_one().unwrap().unwrap();
    assert!(q.give_back(&d.work_name).unwrap());
    assert!(!q.give_back(&d.work_name).unwrap());
    let again = q.consume_one().unwrap().unwrap();
    assert_eq!(again.work_name.waiting, d.work_name.waiting);
    assert_eq!(again.message.requeue_counter, 0);
    assert_eq!(again.message.body_text(), "a");
}

#[test]
fn touch_extends_the_lease_so_clean_leaves_it_alone() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "slow job",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            ..Default::default()
        },
    );
    let d = q.consume_one().unwrap().unwrap();
    expire_in_flight(&q);
    let stale_name = q.in_flight().unwrap()[0].to_string();
    let before = now_secs();
    let renewed = q.touch(&stale_name).unwrap().expect("still in flight");
    assert!(renewed.expiry >= before + 600);
    assert_eq!(renewed.waiting, d.work_name.waiting);
    assert_eq!(q.clean().unwrap().requeued, 0);
    assert_eq!(q.status(false).unwrap().in_flight, 1);
    // The name the consumer was given still acks it after the lease moved.
    assert!(matches!(
        q.ack(&d.work_name.to_string()).unwrap(),
        AckOutcome::Acked(_)
    ));
    assert!(q.touch(&d.message.id).unwrap().is_none());
}

#[test]
fn clean_requeues_or_drops_expired_messages_only() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "again",
        PublishOptions {
            requeue: Some(Requeue::Priority(4)),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "gone",
        PublishOptions {
            requeue: Some(Requeue::Drop),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "live",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            ..Default::default()
        },
    );
    let got = q.consume(2, &no_clean()).unwrap();
    expire_in_flight(&q);
    let live = q.consume_one().unwrap().unwrap();
    let report = q.clean().unwrap();
    assert_eq!((report.requeued, report.dropped), (1, 1), "{report:?}");
    let in_flight: Vec<WorkName> = q.in_flight().unwrap();
    assert_eq!(
        in_flight,
        vec![live.work_name.clone()],
        "the unexpired one stays"
    );
    let w = q.waiting().unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].priority, 4,
        "an integer requeue is the priority to requeue at"
    );
    assert_eq!(w[0].id, got[0].message.id, "requeue keeps the id");
    let m = q.read_waiting(&w[0]).unwrap().unwrap();
    assert_eq!(
        (m.body_text().as_str(), m.requeue_counter, m.requeue),
        ("again", 1, Requeue::Priority(4))
    );
    let cleaned = ddmq::engine::config::read_mapping(&q.config_path())
        .unwrap()
        .unwrap();
    let cleaned = cleaned.get("cleaned").and_then(|v| v.as_u64()).unwrap();
    assert!(cleaned + 5 >= now_secs(), "clean records when it ran");
}

#[test]
fn clean_with_message_timeout_zero_expires_after_the_second_passes() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    set_queue_settings(&q, "message_timeout: 0\n");
    publish_with(
        &q,
        "x",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            ..Default::default()
        },
    );
    let d = q.consume_one().unwrap().unwrap();
    assert!(d.work_name.expiry <= now_secs());
    // Expired once its expiry second is over (as the original: expiry < now).
    while now_secs() <= d.work_name.expiry {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(q.clean().unwrap().requeued, 1);
    assert_eq!(waiting_count(&q), 1);
}

#[test]
fn maybe_clean_runs_at_most_once_a_minute_judged_by_the_file() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    assert!(
        q.maybe_clean().unwrap().is_some(),
        "a new queue (cleaned: 0) is due"
    );
    assert!(q.maybe_clean().unwrap().is_none(), "just cleaned");
    // Another process reads `cleaned` from the file: not due either.
    let other = Broker::open(d.path()).unwrap().queue("q").unwrap();
    assert!(other.maybe_clean().unwrap().is_none());
    // A third process after `cleaned` was set back: due again.
    std::fs::write(q.config_path(), "cleaned: 0\n").unwrap();
    let third = Broker::open(d.path()).unwrap().queue("q").unwrap();
    assert!(third.maybe_clean().unwrap().is_some());
}

#[test]
fn consume_and_publish_clean_when_due() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "x",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            ..Default::default()
        },
    );
    q.consume_one().unwrap().unwrap();
    expire_in_flight(&q);
    // cleaned is 0: the consume's housekeeping requeues the expired message, which it then gets.
    let got = q.consume(1, &ConsumeOptions { clean: true }).unwrap();
    assert_eq!(bodies(&got), ["x"]);
    assert_eq!(got[0].message.requeue_counter, 1);
    // The same for publish, through a fresh handle (this one just ran housekeeping, so it waits a
    // minute) with `cleaned` set back: the publish's housekeeping requeues the expired message.
    expire_in_flight(&q);
    set_queue_settings(&q, "cleaned: 0\n");
    let fresh = Broker::open(b.root()).unwrap();
    let q2 = fresh.queue("q").unwrap();
    publish_with(
        &q2,
        "y",
        PublishOptions {
            clean: true,
            ..Default::default()
        },
    );
    assert!(q2.in_flight().unwrap().is_empty(), "not requeued");
    let got = q2.consume(2, &no_clean()).unwrap();
    assert_eq!(bodies(&got), ["x", "y"]);
    assert_eq!(got[0].message.requeue_counter, 2);
}

#[test]
fn purge_removes_every_message_and_keeps_the_queue() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    for i in 0..5 {
        publish(&q, &format!("{i}"));
    }
    q.consume(2, &no_clean()).unwrap();
    assert_eq!(q.purge().unwrap(), (3, 2));
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 0,
            in_flight: 0,
            oldest_waiting_age: None
        }
    );
    assert!(b.queue_exists("q").unwrap());
    publish(&q, "after purge");
    assert_eq!(drain(&q), ["after purge"]);
}

#[test]
fn delete_queue_removes_it_and_only_if_empty_refuses_while_it_holds_messages() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish(&q, "x");
    let e = b.delete_queue("q", true).unwrap_err();
    assert!(matches!(e, Error::QueueNotEmpty(_)), "{e}");
    assert_eq!(waiting_count(&b.queue("q").unwrap()), 1);
    b.delete_queue("q", false).unwrap();
    assert!(!b.queue_exists("q").unwrap());
    assert_eq!(entries(d.path()), ["ddmq.yaml", "ddmq.yaml.example"]);
    assert!(matches!(
        b.delete_queue("q", false).unwrap_err(),
        Error::NoSuchQueue(_)
    ));
    b.create_queue("e").unwrap();
    b.delete_queue("e", true).unwrap();
    assert!(b.list_queues().unwrap().is_empty());
}

#[test]
fn create_queue_validates_names_and_refuses_foreign_directories() {
    let (d, b) = root_with_queue();
    for bad in ["", "../x", "a/b", "a.b", "/abs", "."] {
        assert!(
            matches!(b.create_queue(bad).unwrap_err(), Error::InvalidQueueName(_)),
            "{bad:?}"
        );
    }
    std::fs::create_dir(d.path().join("busy")).unwrap();
    std::fs::write(d.path().join("busy/data.txt"), "mine").unwrap();
    assert!(matches!(
        b.create_queue("busy").unwrap_err(),
        Error::NotAQueue(_)
    ));
    assert_eq!(entries(&d.path().join("busy")), ["data.txt"]);
    std::fs::create_dir(d.path().join("empty")).unwrap();
    assert!(
        b.create_queue("empty").unwrap(),
        "an empty directory becomes a queue"
    );
    assert_eq!(b.list_queues().unwrap(), ["empty", "q"]);
}

#[test]
fn create_queue_race_one_creator_wins_nobody_errs() {
    let dir = tempfile::tempdir().unwrap();
    Broker::open_or_init(dir.path()).unwrap();
    for round in 0..5 {
        let name = format!("race{round}");
        let barrier = Arc::new(Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (root, name, barrier) =
                    (dir.path().to_path_buf(), name.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let b = Broker::open(root).unwrap();
                    barrier.wait();
                    b.create_queue(&name)
                })
            })
            .collect();
        let results: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("no creator errs"))
            .collect();
        assert_eq!(results.iter().filter(|c| **c).count(), 1, "{results:?}");
    }
    let b = Broker::open(dir.path()).unwrap();
    assert_eq!(b.list_queues().unwrap().len(), 5);
    // No half-built queue directory left behind.
    assert!(
        entries(dir.path()).iter().all(|n| !n.starts_with(".tmp-")),
        "{:?}",
        entries(dir.path())
    );
}

#[test]
fn status_counts_and_ages_waiting_messages() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    assert_eq!(
        q.status(true).unwrap(),
        QueueStatus {
            waiting: 0,
            in_flight: 0,
            oldest_waiting_age: None
        }
    );
    let old = publish(&q, "old");
    let new = publish(&q, "new");
    age_file(&q.dir().join(&old.filename), 100);
    age_file(&q.dir().join(&new.filename), 50);
    // Ages are whole seconds since the file's mtime; the slack covers a slow run.
    let age = |s: QueueStatus| s.oldest_waiting_age.expect("an age");
    let s = q.status(true).unwrap();
    assert_eq!((s.waiting, s.in_flight), (2, 0));
    assert!((100..110).contains(&age(s)), "the oldest is 100 s old");
    q.consume(1, &no_clean()).unwrap();
    publish(&q, "newer");
    let s = q.status(true).unwrap();
    assert_eq!((s.waiting, s.in_flight), (2, 1));
    assert!(
        (50..60).contains(&age(s)),
        "the aged one was consumed: the oldest waiting is 50 s old"
    );
    assert_eq!(q.status(false).unwrap().oldest_waiting_age, None);
}

/// Sets a directory's mtime `secs_ago` into the past, as if nothing had changed in it since.
fn age_dir(dir: &std::path::Path, secs_ago: u64) {
    let t = std::time::SystemTime::now() - Duration::from_secs(secs_ago);
    std::fs::File::open(dir)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(t))
        .unwrap();
}

/// Status may reuse its counts while the queue's directories are unchanged (and changed long
/// enough ago): every change by any client shows in the next status.
#[test]
fn status_of_a_settled_queue_shows_every_change_by_another_client() {
    let (dir, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    // Another client: its own broker, as another process or host would be.
    let other = Broker::open(dir.path()).unwrap().queue("q").unwrap();
    let counts = |q: &Queue| {
        let s = q.status(true).unwrap();
        (s.waiting, s.in_flight)
    };
    for _ in 0..3 {
        publish(&other, "m");
    }
    let settle = || {
        age_dir(q.dir(), 3600);
        age_dir(&q.dir().join("work"), 3600);
    };
    settle();
    assert_eq!(counts(&q), (3, 0));
    assert_eq!(counts(&q), (3, 0), "again, unchanged");
    publish(&other, "new");
    assert_eq!(counts(&q), (4, 0), "a publish by another client shows");
    settle();
    assert_eq!(counts(&q), (4, 0));
    other.consume(1, &no_clean()).unwrap();
    assert_eq!(counts(&q), (3, 1), "a consume by another client shows");
    settle();
    assert_eq!(counts(&q), (3, 1));
    let taken = other.consume(1, &no_clean()).unwrap();
    other.ack(&taken[0].work_name.to_string()).unwrap();
    assert_eq!(counts(&q), (2, 1), "a consume and ack show");
    settle();
    assert_eq!(counts(&q), (2, 1));
    // A change that keeps the entries' count: one message consumed, one published.
    other.consume(1, &no_clean()).unwrap();
    publish(&other, "swap");
    settle();
    assert_eq!(counts(&q), (2, 2), "the work directory's change shows");
}

#[test]
fn waiting_lists_delivery_order_and_read_waiting_does_not_take() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "low",
        PublishOptions {
            priority: Some(50),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "high",
        PublishOptions {
            priority: Some(2),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "low2",
        PublishOptions {
            priority: Some(50),
            ..Default::default()
        },
    );
    let w = q.waiting().unwrap();
    let read: Vec<String> = w
        .iter()
        .map(|n| q.read_waiting(n).unwrap().unwrap().body_text())
        .collect();
    assert_eq!(read, ["high", "low", "low2"]);
    assert_eq!(waiting_count(&q), 3);
    assert_eq!(drain(&q), read);
    assert!(
        q.read_waiting(&w[0]).unwrap().is_none(),
        "consumed: gone from the waiting list"
    );
    let in_flight = q.in_flight().unwrap();
    assert_eq!(
        q.read_in_flight(&in_flight[0])
            .unwrap()
            .unwrap()
            .body_text(),
        "high"
    );
}

#[test]
fn config_validation_refuses_bad_text_and_changes_nothing() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let before = q.read_config_text().unwrap();
    for bad in [
        "message_timeout: soon\n",
        "priority: -3\n",
        "requeue: maybe\n",
        "[1, 2]\n",
        "a: [1\n",
    ] {
        let e = q.write_config_text(bad.as_bytes()).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{bad:?}: {e}");
        assert!(e.to_string().contains("ddmq.yaml"), "{e}");
    }
    assert_eq!(q.read_config_text().unwrap(), before);
    q.write_config_text(b"priority: 3\nmessage_timeout: 20\nmy_note: kept\n")
        .unwrap();
    let s = q.settings().unwrap();
    assert_eq!((s.priority, s.message_timeout), (3, 20));
    assert!(q.read_config_text().unwrap().contains("my_note: kept"));
}

#[test]
fn empty_settings_files_are_empty_mappings() {
    let (d, b) = root_with_queue();
    assert_eq!(
        std::fs::read(d.path().join("ddmq.yaml")).unwrap(),
        b"",
        "root file starts empty, as the original's"
    );
    let q = b.queue("q").unwrap();
    std::fs::write(q.config_path(), "").unwrap();
    let q = Broker::open(d.path()).unwrap().queue("q").unwrap();
    assert_eq!(q.settings().unwrap(), Settings::default());
    publish(&q, "fine");
    assert_eq!(drain(&q), ["fine"]);
}

#[test]
fn broken_settings_are_an_error_naming_the_file() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    std::fs::write(q.config_path(), "priority: [1\n").unwrap();
    let fresh = Broker::open(d.path()).unwrap().queue("q").unwrap();
    let e = fresh
        .publish(json!("x"), &PublishOptions::default())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&q.config_path().display().to_string()),
        "{e}"
    );
    std::fs::write(d.path().join("ddmq.yaml"), "message_timeout: {\n").unwrap();
    let e = Broker::open(d.path())
        .err()
        .expect("broken root settings refuse to open");
    assert!(
        e.to_string()
            .contains(&d.path().join("ddmq.yaml").display().to_string()),
        "{e}"
    );
}

#[test]
fn dead_letter_keeps_messages_past_their_requeue_limit() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    set_queue_settings(&q, "dead_letter: true\n");
    let m = publish_with(
        &q,
        "poison",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            requeue_limit: Some(1),
            ..Default::default()
        },
    );
    let d = q.consume_one().unwrap().unwrap();
    assert!(matches!(
        q.nack(&d.work_name.to_string(), false).unwrap(),
        RequeueOutcome::Requeued(_)
    ));
    q.consume_one().unwrap().unwrap();
    expire_in_flight(&q);
    let r = q.clean().unwrap();
    assert_eq!(r.dead_lettered, 1, "{r:?}");
    let dead = entries(&q.dir().join("dead"));
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains(&m.id));
    let kept: Message =
        Message::from_json(&std::fs::read(q.dir().join("dead").join(&dead[0])).unwrap()).unwrap();
    assert_eq!(
        (kept.body_text().as_str(), kept.requeue_counter),
        ("poison", 1)
    );
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 0,
            in_flight: 0,
            oldest_waiting_age: None
        }
    );
    // dead/ is ours: the queue can still be deleted.
    b.delete_queue("q", false).unwrap();
}

// ------------------------------------------------------------------ numbered bugs of 0.9.10

#[test]
fn b1_ack_deletes_a_requeue_message() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "x",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "y",
        PublishOptions {
            requeue: Some(Requeue::Priority(3)),
            ..Default::default()
        },
    );
    for d in q.consume(2, &no_clean()).unwrap() {
        assert!(matches!(
            q.ack(&d.work_name.to_string()).unwrap(),
            AckOutcome::Acked(_)
        ));
    }
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 0,
            in_flight: 0,
            oldest_waiting_age: None
        }
    );
    expire_in_flight(&q);
    assert_eq!(q.clean().unwrap(), CleanReport::default());
}

#[test]
fn b3_fifo_beyond_ten_and_numeric_priorities() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let expected: Vec<String> = (1..=25).map(|i| format!("m{i}")).collect();
    for m in &expected {
        publish(&q, m);
    }
    assert_eq!(drain(&q), expected);
    for p in [1000, 999, 10, 5] {
        publish_with(
            &q,
            &format!("p{p}"),
            PublishOptions {
                priority: Some(p),
                ..Default::default()
            },
        );
    }
    assert_eq!(drain(&q), ["p5", "p10", "p999", "p1000"]);
}

#[test]
fn b3_numeric_order_also_for_files_the_original_named() {
    // The original restarts queue numbers at 1 and never pads: 1, 2, ..., 10, 11.
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    for i in 1..=12u32 {
        let name = format!("999.{i}.ddmq{:032x}", i);
        let m = Message {
            message: json!(format!("n{i}")),
            queue: "q".into(),
            id: format!("{:032x}", i),
            priority: 999,
            queue_number: i as u64,
            filename: name.clone(),
            ..serde_json::from_str("{}").unwrap()
        };
        std::fs::write(q.dir().join(&name), m.to_json()).unwrap();
    }
    let got = drain(&q);
    assert_eq!(got, (1..=12).map(|i| format!("n{i}")).collect::<Vec<_>>());
}

#[test]
fn b4_priority_zero_and_requeue_prio_zero_are_honoured() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish(&q, "normal");
    let urgent = publish_with(
        &q,
        "urgent",
        PublishOptions {
            priority: Some(0),
            ..Default::default()
        },
    );
    assert_eq!(urgent.priority, 0);
    assert!(urgent.filename.starts_with("0."));
    assert_eq!(
        q.consume_one().unwrap().unwrap().message.body_text(),
        "urgent"
    );
    // requeue_prio 0 (the default): a nacked message goes to the front.
    publish(&q, "later");
    let d = q.consume_one().unwrap().unwrap();
    assert_eq!(d.message.body_text(), "normal");
    assert_eq!(q.settings().unwrap().requeue_prio, 0);
    let RequeueOutcome::Requeued(n) = q.nack(&d.work_name.to_string(), true).unwrap() else {
        panic!()
    };
    assert_eq!(n.priority, 0);
    assert_eq!(
        q.consume_one().unwrap().unwrap().message.body_text(),
        "normal"
    );
}

#[test]
fn b5_requeue_keeps_timeout_counts_and_enforces_the_limit_on_nack_too() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "job",
        PublishOptions {
            timeout: Some(30),
            requeue: Some(Requeue::QueuePriority),
            requeue_limit: Some(2),
            ..Default::default()
        },
    );
    for round in 0..3u64 {
        let before = now_secs();
        let d = q.consume_one().unwrap().unwrap();
        assert_eq!(
            d.message.timeout,
            Some(30),
            "timeout kept through requeues (round {round})"
        );
        assert!(
            d.work_name.expiry >= before + 30 && d.work_name.expiry <= now_secs() + 30,
            "expiry from the message's timeout"
        );
        assert_eq!(d.message.requeue_counter, round);
        let outcome = q.nack(&d.work_name.to_string(), false).unwrap();
        if round < 2 {
            assert!(
                matches!(outcome, RequeueOutcome::Requeued(_)),
                "{outcome:?}"
            );
        } else {
            assert_eq!(
                outcome,
                RequeueOutcome::LimitReached {
                    dead_lettered: false
                }
            );
        }
    }
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 0,
            in_flight: 0,
            oldest_waiting_age: None
        }
    );
    // The limit holds on expiry as well: limit 1 means at most two deliveries.
    publish_with(
        &q,
        "expiring",
        PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            requeue_limit: Some(1),
            ..Default::default()
        },
    );
    let mut deliveries = 0;
    while let Some(_d) = q.consume_one().unwrap() {
        deliveries += 1;
        expire_in_flight(&q);
        q.clean().unwrap();
    }
    assert_eq!(deliveries, 2);
}

#[test]
fn b6_nack_of_a_drop_message_deletes_it_and_says_so() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    publish_with(
        &q,
        "x",
        PublishOptions {
            requeue: Some(Requeue::Drop),
            ..Default::default()
        },
    );
    publish_with(
        &q,
        "y",
        PublishOptions {
            requeue: Some(Requeue::Priority(9)),
            ..Default::default()
        },
    );
    let got = q.consume(2, &no_clean()).unwrap();
    assert_eq!(
        q.nack(&got[0].work_name.to_string(), false).unwrap(),
        RequeueOutcome::Dropped
    );
    // The message's own flag is honoured without forcing (the original's CLI always dropped).
    let RequeueOutcome::Requeued(n) = q.nack(&got[1].work_name.to_string(), false).unwrap() else {
        panic!()
    };
    assert_eq!(n.priority, 9);
    assert!(entries(&q.dir().join("work")).is_empty());
}

#[test]
fn b7_settings_are_read_fresh_by_a_long_lived_queue() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    assert_eq!(publish(&q, "a").priority, 999);
    std::fs::write(q.config_path(), "cleaned: 0\npriority: 7\n").unwrap(); // an edit by someone else
    // Settings are trusted for at most a second: after that the edit must be seen.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(publish(&q, "b").priority, 7);
    assert_eq!(b.queue("q").unwrap().settings().unwrap().priority, 7);
}

/// Another host replacing `ddmq.yaml` over a network filesystem can make it read torn for a
/// while (the sshfs two-host test saw `could not find expected ':'`): a queue that read its
/// settings before keeps them, and publish, consume and clean go on.
#[test]
fn a_torn_settings_read_keeps_the_last_good_settings() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    std::fs::write(
        q.config_path(),
        "cleaned: 0
priority: 7
",
    )
    .unwrap();
    assert_eq!(publish(&q, "a").priority, 7);
    // What a torn read looks like: the new size over old pages.
    std::fs::write(
        q.config_path(),
        "cleaned: 0
priority: 7
message_ti\0\0\0\0",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(publish(&q, "b").priority, 7);
    assert_eq!(drain(&q).len(), 2);
    q.clean().unwrap();
    assert_eq!(q.settings().unwrap().priority, 7);
    // The file was not rewritten from a broken read.
    assert!(
        std::fs::read_to_string(q.config_path())
            .unwrap()
            .contains("message_ti")
    );
    // A client that never read it cleanly reports the file.
    let fresh = Broker::open(b.root()).unwrap().queue("q").unwrap();
    let e = fresh.settings().unwrap_err().to_string();
    assert!(e.contains("ddmq.yaml"), "{e}");
}

#[test]
fn b12_clean_on_a_fresh_broker_works() {
    let (d, b) = root_with_queue();
    b.create_queue("other").unwrap();
    let fresh = Broker::open(d.path()).unwrap();
    for name in fresh.list_queues().unwrap() {
        assert_eq!(
            fresh.queue(&name).unwrap().clean().unwrap(),
            CleanReport::default()
        );
    }
}

#[test]
fn b13_delete_message_works_for_waiting_and_in_flight() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let a = publish(&q, "a");
    publish(&q, "b");
    publish(&q, "c");
    let consumed = q.consume_one().unwrap().unwrap(); // "a"
    let waiting = q.waiting().unwrap();
    assert!(q.delete_message(&waiting[0].to_string()).unwrap());
    assert!(q.delete_message(&consumed.work_name.to_string()).unwrap());
    assert!(!q.delete_message(&a.filename).unwrap(), "already gone");
    assert!(matches!(
        q.delete_message("ddmq.yaml").unwrap_err(),
        Error::InvalidMessageName(_)
    ));
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 1,
            in_flight: 0,
            oldest_waiting_age: None
        }
    );
    assert_eq!(drain(&q), ["c"]);
}

#[test]
fn b14_the_requeue_setting_is_honoured() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    assert_eq!(
        publish(&q, "default").requeue,
        Requeue::QueuePriority,
        "requeue: true is the default setting"
    );
    set_queue_settings(&q, "requeue: false\n");
    assert_eq!(publish(&q, "no").requeue, Requeue::Drop);
    let got = q.consume(2, &no_clean()).unwrap();
    assert!(matches!(
        q.nack(&got[0].work_name.to_string(), false).unwrap(),
        RequeueOutcome::Requeued(_)
    ));
    assert_eq!(
        q.nack(&got[1].work_name.to_string(), false).unwrap(),
        RequeueOutcome::Dropped
    );
    assert_eq!(drain(&q), ["default"]);
}

#[test]
fn b15_a_new_queue_does_not_shadow_root_settings() {
    let (d, b) = root_with_queue();
    std::fs::write(
        d.path().join("ddmq.yaml"),
        "priority: 5\nmessage_timeout: 42\n",
    )
    .unwrap();
    let b2 = Broker::open(d.path()).unwrap();
    b2.create_queue("fresh").unwrap();
    let text = std::fs::read_to_string(d.path().join("fresh/ddmq.yaml")).unwrap();
    assert_eq!(text, "cleaned: 0\n");
    let q = b2.queue("fresh").unwrap();
    assert_eq!(publish(&q, "x").priority, 5);
    assert_eq!(q.settings().unwrap().message_timeout, 42);
    // The queue's own file still wins over the root.
    set_queue_settings(&q, "priority: 8\n");
    assert_eq!(publish(&q, "y").priority, 8);
    drop(b);
}

#[test]
fn b16_delete_refuses_before_deleting_anything_when_foreign_files_exist() {
    for foreign_in_work in [false, true] {
        let (_d, b) = root_with_queue();
        let q = b.queue("q").unwrap();
        publish(&q, "a");
        publish(&q, "b");
        q.consume_one().unwrap().unwrap();
        let foreign = if foreign_in_work {
            q.dir().join("work/notes.txt")
        } else {
            q.dir().join("notes.txt")
        };
        std::fs::write(&foreign, "not ddmq's").unwrap();
        let before_q = entries(q.dir());
        let before_w = entries(&q.dir().join("work"));
        let e = b.delete_queue("q", false).unwrap_err();
        assert!(matches!(e, Error::ForeignFiles { .. }), "{e}");
        assert!(e.to_string().contains("notes.txt"), "{e}");
        assert_eq!(entries(q.dir()), before_q, "nothing deleted");
        assert_eq!(
            entries(&q.dir().join("work")),
            before_w,
            "nothing deleted in work/"
        );
        assert!(b.queue_exists("q").unwrap());
    }
}

#[test]
fn r1_r2_racing_consumers_never_err_never_duplicate_never_orphan() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    const N: usize = 600;
    for i in 0..N {
        publish(&q, &format!("{i}"));
    }
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (root, barrier) = (d.path().to_path_buf(), barrier.clone());
            std::thread::spawn(move || {
                // Each thread is its own client, as separate processes are.
                let b = Broker::open(root).unwrap();
                let q = b.queue("q").unwrap();
                barrier.wait();
                let mut got = Vec::new();
                loop {
                    let batch = q
                        .consume(if t % 2 == 0 { 1 } else { 10 }, &no_clean())
                        .expect("a lost race is not an error");
                    if batch.is_empty() {
                        // Empty only when nothing is left unclaimed.
                        assert_eq!(
                            q.waiting().unwrap().len(),
                            0,
                            "consume said empty while messages wait"
                        );
                        break;
                    }
                    got.extend(batch.into_iter().map(|d| d.message.body_text()));
                }
                got
            })
        })
        .collect();
    let all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        N,
        "every claimed message was returned exactly once"
    );
    assert_eq!(distinct.len(), N);
    // Every message in work/ was returned to somebody: nothing orphaned.
    assert_eq!(q.status(false).unwrap().in_flight, N);
}

#[test]
fn r3_a_reader_never_sees_a_partial_file() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spy = {
        let (dir, stop) = (q.dir().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut names_seen) = (0usize, BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for dir in [dir.clone(), dir.join("work")] {
                    for e in std::fs::read_dir(&dir).unwrap().flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if !name.contains(".ddmq") {
                            names_seen.insert(name.split('-').next().unwrap().to_string());
                            continue;
                        }
                        assert!(
                            WaitingName::parse(&name).is_some() || WorkName::parse(&name).is_some(),
                            "a *.ddmq* name that is not a message: {name}"
                        );
                        match std::fs::read(e.path()) {
                            Ok(bytes) => {
                                Message::from_json(&bytes).unwrap_or_else(|err| {
                                    panic!(
                                        "partial file {name}: {err}: {:?}",
                                        String::from_utf8_lossy(&bytes)
                                    )
                                });
                                reads += 1;
                            }
                            Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::NotFound),
                        }
                    }
                }
            }
            (reads, names_seen)
        })
    };
    let big = "x".repeat(200_000);
    let root = d.path().to_path_buf();
    let worker = std::thread::spawn(move || {
        let b = Broker::open(root).unwrap();
        let q = b.queue("q").unwrap();
        for i in 0..150 {
            q.publish(
                json!(format!("{i}{big}")),
                &PublishOptions {
                    requeue: Some(Requeue::QueuePriority),
                    ..Default::default()
                },
            )
            .unwrap();
            if i % 3 == 0 {
                let d = q.consume_one().unwrap().unwrap();
                q.nack(&d.work_name.to_string(), false).unwrap(); // claim files in work/
                q.clean().unwrap(); // settings temp files in the queue dir
            }
        }
    });
    worker.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, others) = spy.join().unwrap();
    assert!(reads > 0);
    assert_eq!(q.status(false).unwrap().waiting, 150);
    // Everything else seen on the way: our own files and temporary names only.
    for n in &others {
        assert!(
            matches!(
                n.as_str(),
                "ddmq.yaml" | "work" | ".tmp" | ".claim" | ".take"
            ),
            "unexpected entry {n}"
        );
    }
    drop(b);
}

#[test]
fn r4_r5_concurrent_cleaners_requeue_each_message_exactly_once() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..300 {
        ids.insert(
            publish_with(
                &q,
                &format!("{i}"),
                PublishOptions {
                    requeue: Some(Requeue::QueuePriority),
                    ..Default::default()
                },
            )
            .id,
        );
    }
    assert_eq!(q.consume(300, &no_clean()).unwrap().len(), 300);
    assert_eq!(expire_in_flight(&q), 300);
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (root, barrier) = (d.path().to_path_buf(), barrier.clone());
            std::thread::spawn(move || {
                let b = Broker::open(root).unwrap();
                let q = b.queue("q").unwrap();
                barrier.wait();
                let mut requeued = 0;
                for _ in 0..3 {
                    requeued += q
                        .clean()
                        .expect("a concurrent clean is not an error")
                        .requeued;
                }
                requeued
            })
        })
        .collect();
    let requeued: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        requeued, 300,
        "each expired message requeued by exactly one cleaner"
    );
    let waiting = q.waiting().unwrap();
    assert_eq!(waiting.len(), 300);
    assert_eq!(
        waiting
            .iter()
            .map(|w| w.id.to_string())
            .collect::<BTreeSet<_>>(),
        ids
    );
    assert!(
        entries(&q.dir().join("work")).is_empty(),
        "{:?}",
        entries(&q.dir().join("work"))
    );
    assert!(q.read_config_text().unwrap().contains("cleaned:"));
    // Each cleaner wrote its `cleaned` stamp through a temporary name of its own, renamed over
    // ddmq.yaml (0.9.10 shared one name between writers, R4): none is left behind.
    let left: Vec<String> = entries(q.dir())
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn r7_queue_numbers_are_unique_and_increasing() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let numbers: Vec<u64> = (0..200).map(|_| publish(&q, "x").queue_number).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "increasing within one publisher"
    );
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|_| publish(&q, "y").queue_number)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.extend(&numbers);
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 1000, "unique across concurrent publishers");
    assert!(
        all[..800].iter().all(|n| *n > numbers[199]),
        "later publishes number higher"
    );
}

#[test]
fn s1_names_pointing_outside_the_queue_are_refused_and_nothing_is_deleted() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("1.2.3.ddmqabc");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::write(d.path().join("1.2.3.ddmqabc"), "also precious").unwrap();
    let hostile = [
        victim.display().to_string(),
        "../1.2.3.ddmqabc".to_string(),
        "../../1.2.3.ddmqabc".to_string(),
        format!("../../{}", victim.strip_prefix("/").unwrap().display()),
        "1.2.3.ddmqabc/../../x".to_string(),
        "".to_string(),
    ];
    for name in &hostile {
        assert!(q.ack(name).is_err(), "ack {name:?}");
        assert!(q.nack(name, true).is_err(), "nack {name:?}");
        assert!(q.touch(name).is_err(), "touch {name:?}");
        assert!(q.delete_message(name).is_err(), "delete {name:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(
        std::fs::read_to_string(d.path().join("1.2.3.ddmqabc")).unwrap(),
        "also precious"
    );
}

// ------------------------------------------------------------------ hostile and broken files

fn write_raw(q: &Queue, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = q.dir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn corrupt_old_message_at_the_head_is_quarantined_and_the_queue_flows() {
    for (i, bad) in [
        &b""[..],
        b"{\"message\": \"trunc",
        b"\x00\x01garbage",
        b"[1, 2]",
    ]
    .into_iter()
    .enumerate()
    {
        let (_d, b) = root_with_queue();
        let q = b.queue("q").unwrap();
        let name = format!("0.1.ddmq{:032x}", i + 1);
        let p = write_raw(&q, &name, bad);
        age_file(&p, 3600);
        publish(&q, "good");
        assert_eq!(drain(&q), ["good"], "corrupt {bad:?}");
        let quarantined = entries(&q.dir().join("quarantine"));
        assert_eq!(quarantined.len(), 1);
        assert!(quarantined[0].contains(&name), "{quarantined:?}");
        assert_eq!(
            std::fs::read(q.dir().join("quarantine").join(&quarantined[0])).unwrap(),
            bad,
            "kept as it was"
        );
        assert_eq!(
            q.status(false).unwrap(),
            QueueStatus {
                waiting: 0,
                in_flight: 1,
                oldest_waiting_age: None
            }
        );
        b.delete_queue("q", false).expect("quarantine/ is ours");
    }
}

#[test]
fn corrupt_young_message_is_skipped_and_retried_once_written() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let name = format!("0.1.ddmq{:032x}", 7);
    let p = write_raw(&q, &name, b""); // as the original leaves it between create and write (it writes in place, R3)
    publish(&q, "good");
    assert_eq!(drain(&q), ["good"]);
    assert_eq!(
        message_files(q.dir()),
        vec![name.clone()],
        "given back, not quarantined"
    );
    assert!(!q.dir().join("quarantine").exists());
    // The writer finishes; the next consume (after the short deferral) gets it.
    let m = Message {
        message: json!("late writer"),
        queue: "q".into(),
        id: format!("{:032x}", 7),
        filename: name.clone(),
        queue_number: 1,
        ..serde_json::from_str("{}").unwrap()
    };
    std::fs::write(&p, m.to_json()).unwrap();
    let got = q
        .consume_wait(Duration::from_secs(30), Duration::from_millis(50), &|| {
            false
        })
        .unwrap();
    assert_eq!(got.unwrap().message.body_text(), "late writer");
}

#[test]
fn junk_files_are_ignored() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    for junk in [
        "foo.ddmq.bak",
        "README",
        "999.x.ddmqab",
        "1.2.ddmq",
        "1.2.ddmqab-c",
        ".hidden",
        "999.1.ddmqab.swp",
    ] {
        write_raw(&q, junk, b"{}");
        std::fs::write(q.dir().join("work").join(junk), b"{}").unwrap();
    }
    std::fs::write(q.dir().join("work/1.2.ddmqab"), b"{}").unwrap(); // a waiting name in work/
    publish(&q, "real");
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 1,
            in_flight: 0,
            oldest_waiting_age: None
        }
    );
    assert_eq!(drain(&q), ["real"]);
    assert_eq!(q.clean().unwrap(), CleanReport::default());
    assert_eq!(q.in_flight().unwrap().len(), 1);
    assert!(q.dir().join("foo.ddmq.bak").exists() && q.dir().join("work/README").exists());
}

#[test]
fn a_symlink_planted_as_a_message_is_never_followed() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("secret.json");
    let secret = r#"{"message": "SECRET", "queue": "q", "priority": 0, "requeue": true}"#;
    std::fs::write(&target, secret).unwrap();
    let before = std::fs::metadata(&target).unwrap();
    let link_name = format!("0.1.ddmq{:032x}", 1);
    std::os::unix::fs::symlink(&target, q.dir().join(&link_name)).unwrap();
    let link2 = format!("0.2.ddmq{:032x}", 2);
    std::os::unix::fs::symlink(&target, q.dir().join(&link2)).unwrap();
    publish(&q, "real");
    assert_eq!(
        q.read_waiting(&WaitingName::parse(&link2).unwrap())
            .map(|m| m.map(|m| m.body_text()))
            .ok()
            .flatten(),
        None,
        "read_waiting does not follow it"
    );
    let got = drain(&q);
    assert_eq!(got, ["real"], "the link's target is never delivered");
    // Links in work/ are not followed by clean either, and purge removes links, not targets.
    std::os::unix::fs::symlink(
        &target,
        q.dir().join("work").join(format!("1.0.3.ddmq{:032x}", 3)),
    )
    .unwrap();
    let r = q.clean().expect("a planted link does not make clean fail");
    assert_eq!((r.requeued, r.quarantined), (0, 1), "{r:?}");
    assert_eq!(
        q.clean().unwrap(),
        CleanReport::default(),
        "set aside once, not met again"
    );
    std::os::unix::fs::symlink(&target, q.dir().join(format!("0.4.ddmq{:032x}", 4))).unwrap();
    q.purge().unwrap();
    b.delete_queue("q", false).unwrap();
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        secret,
        "target untouched"
    );
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (before.len(), before.modified().unwrap())
    );
    assert!(
        entries(d.path()).iter().all(|n| n.starts_with("ddmq.yaml")),
        "{:?}",
        entries(d.path())
    );
}

#[test]
fn a_symlinked_queue_dir_is_not_a_queue() {
    let (d, b) = root_with_queue();
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = Broker::open_or_init(outside.path()).unwrap();
    elsewhere.create_queue("real").unwrap();
    publish(&elsewhere.queue("real").unwrap(), "outside");
    std::os::unix::fs::symlink(outside.path().join("real"), d.path().join("linked")).unwrap();
    assert_eq!(b.list_queues().unwrap(), ["q"]);
    assert!(!b.queue_exists("linked").unwrap());
    assert!(b.queue("linked").is_err());
    assert!(b.delete_queue("linked", false).is_err());
    assert!(b.create_queue("linked").is_err());
    assert_eq!(
        elsewhere
            .queue("real")
            .unwrap()
            .status(false)
            .unwrap()
            .waiting,
        1,
        "untouched"
    );
}

#[test]
fn a_directory_or_fifo_named_like_a_message_is_set_aside() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    std::fs::create_dir(q.dir().join(format!("0.1.ddmq{:032x}", 1))).unwrap();
    let fifo = std::ffi::CString::new(
        q.dir()
            .join(format!("0.2.ddmq{:032x}", 2))
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(q.dir().join("work").join(format!("1.0.3.ddmq{:032x}", 3))).unwrap();
    publish(&q, "real");
    assert_eq!(
        drain(&q),
        ["real"],
        "no hang on the fifo, no error on the directory"
    );
    assert_eq!(q.clean().unwrap().quarantined, 1);
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 0,
            in_flight: 1,
            oldest_waiting_age: None
        }
    );
    assert_eq!(entries(&q.dir().join("quarantine")).len(), 3);
}

#[test]
fn consume_waiting_takes_up_to_n_once_the_first_arrives_and_gives_up_when_asked() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let root = d.path().to_path_buf();
    // Three published by another handle while we wait.
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let b = Broker::open(root).unwrap();
        let q = b.queue("q").unwrap();
        for body in ["a", "b", "c"] {
            publish(&q, body);
        }
    });
    // An infinite wait is honoured as a very long one, not a panic.
    let wait = Wait::uninterrupted(f64::INFINITY, Duration::from_millis(10));
    assert_eq!(wait.limit, LONGEST_WAIT);
    let got = q.consume_waiting(5, &no_clean(), Some(&wait)).unwrap();
    publisher.join().unwrap();
    // The first is claimed as soon as it shows; the others, if already there, come with it.
    assert!(!got.is_empty() && got.len() <= 3, "{}", got.len());
    let mut all = bodies(&got);
    all.extend(drain(&q));
    assert_eq!(all, ["a", "b", "c"]);
    // Given up: nothing claimed, nothing returned.
    let give_up = || true;
    let wait = Wait::new(60.0, Duration::from_millis(10), &give_up);
    assert!(
        q.consume_waiting(2, &no_clean(), Some(&wait))
            .unwrap()
            .is_empty()
    );
    // No wait: what is there now.
    publish(&q, "d");
    let got = q.consume_waiting(2, &no_clean(), None).unwrap();
    assert_eq!(bodies(&got), ["d"]);
}

#[test]
fn a_queue_found_gone_is_forgotten_so_the_next_call_looks_again() {
    let (d, b) = root_with_queue();
    let before = b.queue("q").unwrap();
    std::fs::remove_dir_all(d.path().join("q")).unwrap();
    assert!(matches!(
        b.with_queue("q", |q| q.status(false)),
        Err(Error::NoSuchQueue(_))
    ));
    assert!(b.create_queue("q").unwrap());
    publish(&b.queue("q").unwrap(), "x");
    let after = b.queue("q").unwrap();
    assert!(
        !Arc::ptr_eq(&before, &after),
        "the gone queue's handle was kept"
    );
    assert_eq!(b.with_queue("q", |q| q.status(false)).unwrap().waiting, 1);
}

/// R6: a requeue is a claim (rename into a private name in work/), a publish of the copy, then
/// the claim's removal. A client that dies after the claim leaves the message in its claim,
/// which a cleaner recovers once it is stale: no loss. One that dies after the publish leaves
/// the copy and the claim: the recovery requeues it again, one duplicate at most.
#[test]
fn r6_a_crash_in_a_requeue_leaves_at_most_one_duplicate_and_never_a_loss() {
    let (_d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let requeue = PublishOptions {
        requeue: Some(Requeue::QueuePriority),
        ..Default::default()
    };
    let lost_one = publish_with(&q, "died after the claim", requeue.clone());
    let doubled = publish_with(&q, "died after the publish", requeue);
    let got = q.consume(2, &no_clean()).unwrap();
    let work = q.dir().join("work");
    let stale = now_secs() - 3600;
    for d in &got {
        let claim = work.join(names::claim_name(stale));
        std::fs::rename(work.join(d.work_name.to_string()), &claim).unwrap();
        if d.message.id == doubled.id {
            // The copy the dying client had published before it could remove its claim.
            let copy = WaitingName {
                priority: d.work_name.waiting.priority,
                queue_number: next_queue_number(),
                id: d.work_name.waiting.id.clone(),
            };
            std::fs::copy(&claim, q.dir().join(copy.to_string())).unwrap();
        }
    }
    let report = q.clean().unwrap();
    assert_eq!(report.recovered_claims, 2, "{report:?}");
    assert!(
        entries(&work).is_empty(),
        "claims left: {:?}",
        entries(&work)
    );
    let mut ids: Vec<String> = q
        .waiting()
        .unwrap()
        .iter()
        .map(|w| w.id.to_string())
        .collect();
    ids.sort();
    let mut want = vec![lost_one.id.clone(), doubled.id.clone(), doubled.id.clone()];
    want.sort();
    assert_eq!(
        ids, want,
        "each message back, the one published twice once more"
    );
    // A claim that is not stale may belong to a client still requeueing it: left alone.
    let d = q.consume_one().unwrap().unwrap();
    std::fs::rename(
        work.join(d.work_name.to_string()),
        work.join(names::claim_name(now_secs())),
    )
    .unwrap();
    assert_eq!(q.clean().unwrap().recovered_claims, 0);
    assert_eq!(entries(&work).len(), 1);
}

/// S3: settings are data. A YAML tag (the original's PyYAML would construct Python objects
/// from `!!python/...`) is never looked through: a tagged value of a setting is refused,
/// naming the key, and so is a tagged document (YAML's own `!!int`, `!!bool`… are plain
/// values); files over 1 MiB are refused unread.
#[test]
fn s3_settings_are_data_tags_are_refused_and_size_is_bounded() {
    let (d, b) = root_with_queue();
    let q = b.queue("q").unwrap();
    let pwned = d.path().join("pwned");
    let payload = format!(
        "!!python/object/apply:os.system [\"touch {}\"]",
        pwned.display()
    );
    for (text, named) in [
        (format!("message_timeout: {payload}\n"), "message_timeout"),
        ("priority: !custom 5\n".to_string(), "priority"),
        (format!("{payload}\n"), "mapping"),
        (format!("pad: \"{}\"\n", "x".repeat(1 << 20)), "larger than"),
    ] {
        let e = q
            .write_config_text(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains(named) && e.contains("ddmq.yaml"), "{e}");
        // Written behind the engine's back, the file fails every read of the settings.
        std::fs::write(q.config_path(), &text).unwrap();
        b.forget_queue("q");
        let e = b.queue("q").unwrap().settings().unwrap_err().to_string();
        assert!(e.contains(named), "{e}");
    }
    assert!(!pwned.exists());
}
