//! Interop with the real original, ddmq 0.9.10 on Python 3 (the venv made by scripts/test or
//! scripts/python-env): both write to the same directories, each reads what the other wrote.
//! The original's own bugs show where noted: string order (B3), priority 0 turned into 999 (B4),
//! the timeout dropped on requeue (B5).

mod support;

use ddmq::engine::message::to_python_json;
use ddmq::engine::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use support::*;

/// The original publishes; each spec is a dict of keyword arguments of `broker.publish`.
fn py_publish(root: &Path, queue: &str, specs: &[Value]) -> Vec<Value> {
    let code = "b = broker(sys.argv[1], create=True)\n\
                out = [b.publish(sys.argv[2], clean=False, **kw).__dict__ for kw in json.loads(sys.argv[3])]\n\
                print(json.dumps(out))";
    let v = py_json(
        code,
        &[root.to_str().unwrap(), queue, &to_python_json(&specs)],
    );
    v.as_array().unwrap().clone()
}

/// The original consumes up to `n` messages (without cleaning); returns their dicts in its order.
fn py_consume(root: &Path, queue: &str, n: usize) -> Vec<Value> {
    let code = "b = broker(sys.argv[1])\n\
                r = b.consume(sys.argv[2], n=int(sys.argv[3]), clean=False)\n\
                r = [] if r is None else (r if isinstance(r, list) else [r])\n\
                print(json.dumps([m.__dict__ for m in r]))";
    py_json(code, &[root.to_str().unwrap(), queue, &n.to_string()])
        .as_array()
        .unwrap()
        .clone()
}

fn py_bodies(msgs: &[Value]) -> Vec<Value> {
    msgs.iter().map(|m| m["message"].clone()).collect()
}

fn rust_drain(q: &Queue) -> Vec<Delivery> {
    q.consume(usize::MAX, &ConsumeOptions { clean: false })
        .unwrap()
}

fn rust_bodies(ds: &[Delivery]) -> Vec<Value> {
    ds.iter().map(|d| d.message.message.clone()).collect()
}

fn texts(v: &[&str]) -> Vec<Value> {
    v.iter().map(|s| json!(s)).collect()
}

#[test]
fn python_publishes_rust_consumes_in_numeric_order() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // 12 at one priority: the original numbers them 1..12 and would itself give 1, 10, 11, 12, 2, ...
    let fifo: Vec<Value> = (1..=12)
        .map(|i| json!({"msg_text": format!("m{i}")}))
        .collect();
    py_publish(root, "q", &fifo);
    let b = Broker::open(root).unwrap();
    let q = b.queue("q").unwrap();
    let got = rust_drain(&q);
    assert_eq!(
        rust_bodies(&got),
        (1..=12).map(|i| json!(format!("m{i}"))).collect::<Vec<_>>()
    );
    assert_eq!(
        got.iter()
            .map(|d| d.message.queue_number)
            .collect::<Vec<_>>(),
        (1..=12).collect::<Vec<u64>>()
    );
    // Priorities: numeric for us. The original stores priority 0 as its default 999 (`if not priority`, B4).
    let prios = [
        json!({"msg_text": "p1000", "priority": 1000}),
        json!({"msg_text": "p999", "priority": 999}),
        json!({"msg_text": "p10", "priority": 10}),
        json!({"msg_text": "p5", "priority": 5}),
        json!({"msg_text": "p0", "priority": 0}),
    ];
    let published = py_publish(root, "q", &prios);
    assert_eq!(
        published[4]["priority"],
        json!(999),
        "0.9.10 turns priority 0 into the default"
    );
    let got = rust_drain(&q);
    assert_eq!(
        rust_bodies(&got),
        texts(&["p5", "p10", "p999", "p0", "p1000"])
    );
    // The same names through the original: its string order (B3: 10 < 1000 < 5), recorded here as documentation.
    py_publish(root, "q", &prios[..4]);
    assert_eq!(
        py_bodies(&py_consume(root, "q", 10)),
        texts(&["p10", "p1000", "p5", "p999"])
    );
}

#[test]
fn rust_publishes_python_consumes_every_message_in_byte_wise_name_order() {
    let d = tempfile::tempdir().unwrap();
    let b = Broker::open_or_init(d.path()).unwrap();
    b.create_queue("q").unwrap();
    let q = b.queue("q").unwrap();
    let mut expected: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut names = Vec::new();
    for i in 0..30u64 {
        let p = [5, 10, 999, 1000, 0][(i % 5) as usize];
        let body = format!("p{p}-{i}");
        let m = q
            .publish(
                json!(body),
                &PublishOptions {
                    priority: Some(p),
                    ..Default::default()
                },
            )
            .unwrap();
        expected.entry(p).or_default().push(body);
        names.push(m.filename);
    }
    let got = py_consume(d.path(), "q", 100);
    assert_eq!(got.len(), 30);
    // The original sorts names as strings (B3: FIFO breaks from the 10th message). Our queue numbers are microsecond stamps of one
    // width, so within a priority that is still FIFO; across priorities it is string order:
    // 0, 10, 1000, 5, 999.
    names.sort();
    let order: Vec<String> = got
        .iter()
        .map(|m| {
            m["filename"]
                .as_str()
                .unwrap()
                .split_once('.')
                .unwrap()
                .1
                .to_string()
        })
        .collect();
    assert_eq!(order, names);
    let prio_order: Vec<u64> = got
        .iter()
        .map(|m| m["priority"].as_u64().unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Vec::new(), |mut v, p| {
            if v.last() != Some(&p) {
                v.push(p)
            }
            v
        });
    assert_eq!(prio_order, [0, 10, 1000, 5, 999]);
    let mut per_prio: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for m in &got {
        per_prio
            .entry(m["priority"].as_u64().unwrap())
            .or_default()
            .push(m["message"].as_str().unwrap().to_string());
    }
    assert_eq!(per_prio, expected, "same set, FIFO within each priority");
    // The original moved them to work/ with its expiry prefix; we see them in flight.
    assert_eq!(
        q.status(false).unwrap(),
        QueueStatus {
            waiting: 0,
            in_flight: 30,
            oldest_waiting_age: None
        }
    );
}

const UNICODE: &[&str] = &[
    "héllo wörld",
    "日本語のメッセージ",
    "emoji 😀🎉 and 𝄞",
    "quote \" backslash \\ slash / tab \t newline \n nul \u{0} bell \u{7}",
    "line sep \u{2028} para sep \u{2029} bom \u{feff}",
    "",
];

#[test]
fn unicode_bodies_are_byte_exact_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // Python -> Rust
    let specs: Vec<Value> = UNICODE.iter().map(|s| json!({"msg_text": s})).collect();
    py_publish(root, "q", &specs);
    let b = Broker::open(root).unwrap();
    let q = b.queue("q").unwrap();
    // Files the original wrote are written back by us byte for byte.
    for w in q.waiting().unwrap() {
        let bytes = std::fs::read(q.dir().join(w.to_string())).unwrap();
        assert_eq!(
            Message::from_json(&bytes).unwrap().to_json().as_bytes(),
            &bytes[..]
        );
    }
    assert_eq!(rust_bodies(&rust_drain(&q)), texts(UNICODE));
    // Rust -> Python
    for s in UNICODE {
        q.publish(json!(s), &PublishOptions::default()).unwrap();
    }
    // Our files are exactly what Python's json.dumps makes of them.
    let same = py_json(
        "d = sys.argv[1]\n\
         names = [n for n in os.listdir(d) if '.ddmq' in n]\n\
         print(json.dumps([json.dumps(json.load(open(os.path.join(d, n)))) == open(os.path.join(d, n)).read() for n in names]))",
        &[q.dir().to_str().unwrap()],
    );
    assert_eq!(same, json!(vec![true; UNICODE.len()]));
    assert_eq!(py_bodies(&py_consume(root, "q", 100)), texts(UNICODE));
}

#[test]
fn extra_json_keys_survive_a_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    py_publish(root, "q", &[json!({"msg_text": "traced", "requeue": true})]);
    // Another tool added keys of its own to the file.
    py(
        "d = os.path.join(sys.argv[1], 'q')\n\
         n = [n for n in os.listdir(d) if '.ddmq' in n][0]\n\
         m = json.load(open(os.path.join(d, n)))\n\
         m['trace'] = {'hop': 1, 'host': 'h\\u00e9'}\n\
         m['tags'] = ['a', 2, None]\n\
         open(os.path.join(d, n), 'w').write(json.dumps(m))",
        &[root.to_str().unwrap()],
    );
    let b = Broker::open(root).unwrap();
    let q = b.queue("q").unwrap();
    let d1 = q.consume_one().unwrap().unwrap();
    assert_eq!(d1.message.extra["trace"], json!({"hop": 1, "host": "hé"}));
    assert_eq!(d1.message.extra["tags"], json!(["a", 2, null]));
    assert!(matches!(
        q.nack(&d1.work_name.to_string(), false).unwrap(),
        RequeueOutcome::Requeued(_)
    ));
    let got = py_consume(root, "q", 5);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["trace"], json!({"hop": 1, "host": "hé"}));
    assert_eq!(got[0]["tags"], json!(["a", 2, null]));
    assert_eq!(got[0]["requeue_counter"], json!(1));
}

#[test]
fn requeue_as_bool_and_int_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // Python -> Rust: requeue=True, requeue_prio=7 (stored as the int 7), requeue=False.
    py_publish(
        root,
        "q",
        &[
            json!({"msg_text": "bool", "requeue": true}),
            json!({"msg_text": "int", "requeue_prio": 7}),
            json!({"msg_text": "drop"}),
        ],
    );
    let b = Broker::open(root).unwrap();
    let q = b.queue("q").unwrap();
    let got = rust_drain(&q);
    let by_body: BTreeMap<String, &Delivery> =
        got.iter().map(|d| (d.message.body_text(), d)).collect();
    assert_eq!(by_body["bool"].message.requeue, Requeue::QueuePriority);
    assert_eq!(by_body["int"].message.requeue, Requeue::Priority(7));
    assert_eq!(by_body["drop"].message.requeue, Requeue::Drop);
    let mut prios = BTreeMap::new();
    for d in &got {
        match q.nack(&d.work_name.to_string(), false).unwrap() {
            RequeueOutcome::Requeued(n) => {
                prios.insert(d.message.body_text(), n.priority);
            }
            RequeueOutcome::Dropped => assert_eq!(d.message.body_text(), "drop"),
            other => panic!("{other:?}"),
        }
    }
    // requeue_prio of a queue the original made is 0, which we honour (0.9.10 turns 0 into 999, B4).
    assert_eq!(
        prios,
        BTreeMap::from([("bool".to_string(), 0), ("int".to_string(), 7)])
    );
    let raw: Vec<String> = q
        .waiting()
        .unwrap()
        .iter()
        .map(|w| std::fs::read_to_string(q.dir().join(w.to_string())).unwrap())
        .collect();
    assert!(
        raw[0].contains(r#""requeue": true"#) && raw[1].contains(r#""requeue": 7"#),
        "{raw:?}"
    );
    // The original reads our requeued files and requeues them again by their flags.
    let again = py_consume(root, "q", 10);
    assert_eq!(
        again
            .iter()
            .map(|m| (
                m["message"].clone(),
                m["requeue"].clone(),
                m["requeue_counter"].clone()
            ))
            .collect::<Vec<_>>(),
        [
            (json!("bool"), json!(true), json!(1)),
            (json!("int"), json!(7), json!(1))
        ]
    );
    let names: Vec<Value> = again.iter().map(|m| m["filename"].clone()).collect();
    py(
        "b = broker(sys.argv[1])\nb.nack('q', json.loads(sys.argv[2]), requeue=None)",
        &[root.to_str().unwrap(), &Value::Array(names).to_string()],
    );
    // Python requeues `true` at its requeue_prio 0, which 0.9.10 turns into 999 (B4); `7` at 7.
    let back = rust_drain(&q);
    let seen: Vec<(String, u64, Requeue, u64)> = back
        .iter()
        .map(|d| {
            (
                d.message.body_text(),
                d.message.priority,
                d.message.requeue,
                d.message.requeue_counter,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("int".to_string(), 7, Requeue::Priority(7), 2),
            ("bool".to_string(), 999, Requeue::QueuePriority, 2)
        ]
    );
}

#[test]
fn python_consumes_rust_cleans_and_the_message_comes_back() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    py_publish(
        root,
        "q",
        &[
            json!({"msg_text": "retry me", "requeue": true, "timeout": 30}),
            json!({"msg_text": "let me go"}),
        ],
    );
    let taken = py_consume(root, "q", 2);
    assert_eq!(taken.len(), 2);
    let b = Broker::open(root).unwrap();
    let q = b.queue("q").unwrap();
    assert_eq!(q.status(false).unwrap().in_flight, 2);
    // Its consumer died: the leases run out (we backdate the original's expiry prefixes).
    assert_eq!(expire_in_flight(&q), 2);
    let r = q.clean().unwrap();
    assert_eq!((r.requeued, r.dropped), (1, 1), "{r:?}");
    let back = q.consume_one().unwrap().unwrap();
    assert_eq!(back.message.body_text(), "retry me");
    assert_eq!(back.message.requeue_counter, 1);
    assert_eq!(back.message.id, taken[0]["id"].as_str().unwrap());
    assert_eq!(
        back.message.timeout,
        Some(30),
        "the timeout is kept (0.9.10 drops it on requeue, B5)"
    );
    assert!(q.consume_one().unwrap().is_none());
}

#[test]
fn rust_consumes_python_cleans_and_the_message_comes_back() {
    let d = tempfile::tempdir().unwrap();
    let b = Broker::open_or_init(d.path()).unwrap();
    b.create_queue("q").unwrap();
    let q = b.queue("q").unwrap();
    q.publish(
        json!("retry me"),
        &PublishOptions {
            requeue: Some(Requeue::QueuePriority),
            ..Default::default()
        },
    )
    .unwrap();
    q.publish(
        json!("let me go"),
        &PublishOptions {
            requeue: Some(Requeue::Drop),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rust_drain(&q).len(), 2);
    expire_in_flight(&q);
    let cleaned = py_json(
        "b = broker(sys.argv[1])\nb.get_settings('q')\nprint(json.dumps(b.clean('q', force=True)))",
        &[d.path().to_str().unwrap()],
    );
    assert_eq!(cleaned, json!(true));
    assert!(message_files(&q.dir().join("work")).is_empty());
    let back = rust_drain(&q);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].message.body_text(), "retry me");
    assert_eq!(back[0].message.requeue_counter, 1);
    assert_eq!(back[0].message.requeue, Requeue::QueuePriority);
    // The original recorded its clean in our settings file, and we read it.
    let fresh = Broker::open(d.path()).unwrap().queue("q").unwrap();
    assert!(fresh.settings().unwrap().cleaned + 60 > now_secs());
}

#[test]
fn view_counts_agree_with_the_original_and_its_cli_runs_through_the_shim() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    py_publish(
        root,
        "qa",
        &(0..5)
            .map(|i| json!({"msg_text": format!("py{i}")}))
            .collect::<Vec<_>>(),
    );
    let b = Broker::open(root).unwrap();
    b.create_queue("qb").unwrap();
    let (qa, qb) = (b.queue("qa").unwrap(), b.queue("qb").unwrap());
    for i in 0..3 {
        qa.publish(json!(format!("rs{i}")), &PublishOptions::default())
            .unwrap();
    }
    for i in 0..2 {
        qb.publish(json!(format!("rs{i}")), &PublishOptions::default())
            .unwrap();
    }
    qa.consume(2, &ConsumeOptions { clean: false }).unwrap();
    assert_eq!(py_consume(root, "qb", 1).len(), 1);
    let python_view = py_json(
        "b = broker(sys.argv[1])\nprint(json.dumps({q: [len(l) for l in b.get_message_list(q)] for q in b.list_queues()}))",
        &[root.to_str().unwrap()],
    );
    let ours: serde_json::Map<String, Value> = b
        .list_queues()
        .unwrap()
        .into_iter()
        .map(|name| {
            let s = b.queue(&name).unwrap().status(false).unwrap();
            (name, json!([s.waiting, s.in_flight]))
        })
        .collect();
    assert_eq!(
        Value::Object(ours.clone()),
        json!({"qa": [6, 2], "qb": [1, 1]})
    );
    assert_eq!(python_view, Value::Object(ours.clone()));
    let (status, out, err) = original_cli(&["view", "--format", "json", root.to_str().unwrap()]);
    assert!(status.success(), "shim failed: {err}");
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap(),
        Value::Object(ours)
    );
}

#[test]
fn settings_files_written_by_either_side_are_read_by_the_other() {
    // A root and queue the original made; a queue file we rewrite.
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    py(
        "b = broker(sys.argv[1], create=True)\nb.create_queue('pq')",
        &[root.to_str().unwrap()],
    );
    let b = Broker::open(root).expect("a root the original made (empty ddmq.yaml)");
    let pq = b.queue("pq").unwrap();
    assert_eq!(
        pq.settings().unwrap(),
        Settings::default(),
        "its five keys are our defaults"
    );
    pq.write_config_text(b"priority: 3\nmessage_timeout: 20\nrequeue_prio: 1\nmy_note: kept\n")
        .unwrap();
    pq.clean().unwrap(); // rewrites the file with `cleaned`
    let theirs = py_json(
        "b = broker(sys.argv[1])\nprint(json.dumps(b.get_settings('pq')))",
        &[root.to_str().unwrap()],
    );
    assert_eq!(theirs["priority"], json!(3));
    assert_eq!(theirs["message_timeout"], json!(20));
    assert_eq!(theirs["requeue_prio"], json!(1));
    assert_eq!(theirs["my_note"], json!("kept"));
    assert!(theirs["cleaned"].as_u64().unwrap() + 60 > now_secs());
    assert_eq!(
        py_publish(root, "pq", &[json!({"msg_text": "x"})])[0]["priority"],
        json!(3)
    );
    // The original rewrites the file (its update_settings_file): we read its YAML.
    py(
        "b = broker(sys.argv[1])\nb.update_settings_file('pq', {'priority': 4, 'message_timeout': 15})",
        &[root.to_str().unwrap()],
    );
    let fresh = Broker::open(root).unwrap().queue("pq").unwrap();
    let s = fresh.settings().unwrap();
    assert_eq!((s.priority, s.message_timeout, s.requeue_prio), (4, 15, 1));
    // A root we made: its example file (every key, ours included) is YAML the original reads,
    // with the original's defaults, and its queues read as queues.
    let d2 = tempfile::tempdir().unwrap();
    let ours = Broker::open_or_init(d2.path()).unwrap();
    ours.create_queue("rq").unwrap();
    let (example, settings) = {
        let v = py_json(
            "import yaml\nb = broker(sys.argv[1])\nprint(json.dumps([yaml.load(open(os.path.join(sys.argv[1], 'ddmq.yaml.example'))), b.get_settings('rq')]))",
            &[d2.path().to_str().unwrap()],
        );
        (v[0].clone(), v[1].clone())
    };
    assert_eq!(
        example,
        json!({"cleaned": 0, "message_timeout": 600, "priority": 999, "requeue": true, "requeue_prio": 0,
            "dead_letter": false, "durable": false, "max_message_bytes": 16777216})
    );
    assert_eq!(settings["cleaned"], json!(0));
    assert_eq!(settings["priority"], json!(999));
}

#[test]
fn queues_made_by_either_side_are_used_by_the_other() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let b = Broker::open_or_init(root).unwrap();
    b.create_queue("rq").unwrap();
    py(
        "b = broker(sys.argv[1])\nb.create_queue('pq')",
        &[root.to_str().unwrap()],
    );
    let theirs = py_json(
        "b = broker(sys.argv[1])\nprint(json.dumps(b.list_queues()))",
        &[root.to_str().unwrap()],
    );
    assert_eq!(theirs, json!(["pq", "rq"]));
    assert_eq!(b.list_queues().unwrap(), ["pq", "rq"]);
    // Each side publishes into the other's queue and consumes from it.
    py_publish(root, "rq", &[json!({"msg_text": "py into rq"})]);
    let pq = b.queue("pq").unwrap();
    pq.publish(json!("rs into pq"), &PublishOptions::default())
        .unwrap();
    assert_eq!(
        rust_bodies(&rust_drain(&b.queue("rq").unwrap())),
        texts(&["py into rq"])
    );
    assert_eq!(
        py_bodies(&py_consume(root, "pq", 5)),
        texts(&["rs into pq"])
    );
    // The original acks what it took from our queue; we ack what we took from its queue.
    let pq_work = message_files(&pq.dir().join("work"));
    py(
        "b = broker(sys.argv[1])\nprint(b.ack('pq', json.loads(sys.argv[2])))",
        &[root.to_str().unwrap(), &json!(pq_work).to_string()],
    );
    let rq = b.queue("rq").unwrap();
    for w in rq.in_flight().unwrap() {
        assert!(matches!(
            rq.ack(&w.to_string()).unwrap(),
            AckOutcome::Acked(_)
        ));
    }
    for q in ["pq", "rq"] {
        assert_eq!(
            b.queue(q).unwrap().status(false).unwrap(),
            QueueStatus::default()
        );
    }
    // Deleting: we delete the queue the original made (its files are all ours to know).
    b.delete_queue("pq", true).unwrap();
    let left: BTreeSet<String> = entries(root).into_iter().collect();
    assert_eq!(
        left,
        BTreeSet::from([
            "ddmq.yaml".to_string(),
            "ddmq.yaml.example".to_string(),
            "rq".to_string()
        ])
    );
}
