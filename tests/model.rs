//! Reference model of one queue, and the parsers fuzzed.
//!
//! `engine_matches_model`: proptest generates random sequences of publish, consume, ack, nack,
//! give-back, touch, expiry and clean (with priorities, timeouts, requeue flags and limits, and
//! random queue settings), runs each step on the engine and on a plain in-memory model of the
//! documented semantics (src/engine/mod.rs and queue.rs), and compares every result.
//!
//! Expiry is crafted, not waited for: an `Expire` step renames the message's `work/` file to an
//! expiry in the past, exactly what the passing of its timeout would leave on disk, and the next
//! `Clean` must requeue, drop or dead-letter it. So a case runs in milliseconds, independent of
//! the clock. (The real timeout path is exercised by tests/reliability.rs: chaos and daemon kill.)
//!
//! Messages requeued by one clean are listed in directory order, so their new queue numbers are
//! in no defined order among themselves: the model treats them as tied, and a consume may return
//! any of the tied ones.
//!
//! Bounded: DDMQ_MODEL_CASES (default 96) cases of up to 60 steps; DDMQ_FUZZ_CASES (default 2000)
//! inputs per parser.

use ddmq::engine::{
    AckOutcome, Broker, ConsumeOptions, Message, PublishOptions, Queue, Requeue, RequeueOutcome,
    WorkName, config,
};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;

fn env_cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Debug)]
struct ModelSettings {
    message_timeout: u64,
    priority: u64,
    requeue: bool,
    requeue_prio: u64,
    dead_letter: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Publish {
        priority: Option<u64>,
        timeout: Option<u64>,
        requeue: Option<Requeue>,
        limit: Option<u64>,
    },
    Consume(usize),
    Ack {
        pick: usize,
        by_id: bool,
    },
    Nack {
        pick: usize,
        force: bool,
        by_id: bool,
    },
    GiveBack {
        pick: usize,
    },
    Touch {
        pick: usize,
    },
    Expire {
        pick: usize,
    },
    Clean,
    AckGone {
        pick: usize,
    },
}

fn settings_strategy() -> impl Strategy<Value = ModelSettings> {
    (
        prop_oneof![Just(60u64), Just(600), Just(3600)],
        0u64..4,
        any::<bool>(),
        0u64..4,
        any::<bool>(),
    )
        .prop_map(
            |(message_timeout, priority, requeue, requeue_prio, dead_letter)| ModelSettings {
                message_timeout,
                priority,
                requeue,
                requeue_prio,
                dead_letter,
            },
        )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let requeue = prop_oneof![
        Just(None),
        Just(Some(Requeue::Drop)),
        Just(Some(Requeue::QueuePriority)),
        (1u64..4).prop_map(|p| Some(Requeue::Priority(p)))
    ];
    prop_oneof![
        4 => (proptest::option::of(0u64..4), prop_oneof![Just(None), Just(Some(0u64)), Just(Some(120)), Just(Some(7200))], requeue, prop_oneof![Just(None), Just(Some(0u64)), Just(Some(1)), Just(Some(2))])
            .prop_map(|(priority, timeout, requeue, limit)| Op::Publish { priority, timeout, requeue, limit }),
        3 => (1usize..4).prop_map(Op::Consume),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, by_id)| Op::Ack { pick, by_id }),
        2 => (any::<usize>(), any::<bool>(), any::<bool>()).prop_map(|(pick, force, by_id)| Op::Nack { pick, force, by_id }),
        1 => any::<usize>().prop_map(|pick| Op::GiveBack { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Touch { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Expire { pick }),
        2 => Just(Op::Clean),
        1 => any::<usize>().prop_map(|pick| Op::AckGone { pick }),
    ]
}

/// A message as the model knows it.
#[derive(Clone, Debug)]
struct ModelMsg {
    body: String,
    id: String,
    priority: u64,
    /// Delivery order within a priority; equal values are tied (requeued by the same clean).
    seq: u64,
    timeout: Option<u64>,
    requeue: Requeue,
    counter: u64,
    limit: Option<u64>,
}

#[derive(Clone, Debug)]
struct InFlight {
    msg: ModelMsg,
    work: WorkName,
}

struct Model {
    s: ModelSettings,
    waiting: Vec<ModelMsg>,
    in_flight: Vec<InFlight>,
    /// Work names of messages that are finished (acked, dropped, requeued under a new name).
    gone: Vec<String>,
    dead: usize,
    next_seq: u64,
    published: u64,
}

enum Fate {
    Requeued(u64),
    Dropped,
    Dead,
    Deleted,
}

impl Model {
    fn timeout_of(&self, m: &ModelMsg) -> u64 {
        m.timeout
            .filter(|t| *t > 0)
            .unwrap_or(self.s.message_timeout)
    }

    /// nack and expiry: the documented rules, in the documented order.
    fn fate(&self, m: &ModelMsg, force: bool) -> Fate {
        if !force && m.requeue == Requeue::Drop {
            return Fate::Dropped;
        }
        if let Some(limit) = m.limit.filter(|l| *l > 0)
            && m.counter >= limit
        {
            return if self.s.dead_letter {
                Fate::Dead
            } else {
                Fate::Deleted
            };
        }
        Fate::Requeued(match m.requeue {
            Requeue::Priority(p) => p,
            _ => self.s.requeue_prio,
        })
    }
}

fn check_expiry(w: &WorkName, before: u64, after: u64, timeout: u64) -> Result<(), TestCaseError> {
    prop_assert!(
        w.expiry >= before + timeout && w.expiry <= after + timeout,
        "expiry {} not in [{}+{t}, {}+{t}]",
        w.expiry,
        before,
        after,
        t = timeout
    );
    Ok(())
}

fn run_case(s: ModelSettings, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open_or_init(dir.path()).unwrap();
    broker.create_queue("q").unwrap();
    let q = broker.queue("q").unwrap();
    q.write_config_text(
        format!(
            "cleaned: 0\nmessage_timeout: {}\npriority: {}\nrequeue: {}\nrequeue_prio: {}\ndead_letter: {}\n",
            s.message_timeout, s.priority, s.requeue, s.requeue_prio, s.dead_letter
        )
        .as_bytes(),
    )
    .unwrap();
    let mut m = Model {
        s,
        waiting: vec![],
        in_flight: vec![],
        gone: vec![],
        dead: 0,
        next_seq: 0,
        published: 0,
    };
    let no_clean = ConsumeOptions { clean: false };
    for op in ops {
        step(&q, &mut m, &op, &no_clean)
            .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
        let st = q.status(false).unwrap();
        prop_assert_eq!(
            (st.waiting, st.in_flight),
            (m.waiting.len(), m.in_flight.len()),
            "counts after {:?}",
            op
        );
    }
    // Drain: everything left comes out in an order the model allows, then the queue is empty.
    while !m.waiting.is_empty() {
        step(&q, &mut m, &Op::Consume(3), &no_clean)
            .map_err(|e| TestCaseError::fail(format!("drain: {e}")))?;
    }
    prop_assert!(q.consume_one().unwrap().is_none());
    let dead_files = std::fs::read_dir(q.dir().join("dead"))
        .map(|d| d.count())
        .unwrap_or(0);
    prop_assert_eq!(dead_files, m.dead);
    prop_assert!(!q.dir().join("quarantine").exists());
    Ok(())
}

fn step(q: &Queue, m: &mut Model, op: &Op, no_clean: &ConsumeOptions) -> Result<(), TestCaseError> {
    match op {
        Op::Publish {
            priority,
            timeout,
            requeue,
            limit,
        } => {
            let body = format!("m{}", m.published);
            m.published += 1;
            let opts = PublishOptions {
                priority: *priority,
                timeout: *timeout,
                requeue: *requeue,
                requeue_limit: *limit,
                clean: false,
            };
            let got = q.publish(Value::String(body.clone()), &opts).unwrap();
            let want_requeue = requeue.unwrap_or(if m.s.requeue {
                Requeue::QueuePriority
            } else {
                Requeue::Drop
            });
            prop_assert_eq!(got.priority, priority.unwrap_or(m.s.priority));
            prop_assert_eq!(got.requeue, want_requeue);
            prop_assert_eq!(got.timeout, timeout.filter(|t| *t > 0));
            prop_assert_eq!(got.requeue_limit, limit.filter(|l| *l > 0));
            prop_assert_eq!(got.requeue_counter, 0);
            prop_assert_eq!(got.body_text(), body.clone());
            m.waiting.push(ModelMsg {
                body,
                id: got.id.clone(),
                priority: got.priority,
                seq: m.next_seq,
                timeout: got.timeout,
                requeue: got.requeue,
                counter: 0,
                limit: got.requeue_limit,
            });
            m.next_seq += 1;
        }
        Op::Consume(n) => {
            let before = ddmq::engine::now_secs();
            let got = q.consume(*n, no_clean).unwrap();
            let after = ddmq::engine::now_secs();
            prop_assert_eq!(
                got.len(),
                (*n).min(m.waiting.len()),
                "consume {} with {} waiting",
                n,
                m.waiting.len()
            );
            for d in got {
                let best = m.waiting.iter().map(|w| (w.priority, w.seq)).min().unwrap();
                let body = d.message.body_text();
                let pos = m.waiting.iter().position(|w| w.body == body);
                prop_assert!(pos.is_some(), "delivered {} which is not waiting", body);
                let w = m.waiting.remove(pos.unwrap());
                prop_assert_eq!((w.priority, w.seq), best, "{} delivered out of order", body);
                prop_assert_eq!(d.message.requeue_counter, w.counter);
                prop_assert_eq!(d.message.priority, w.priority);
                prop_assert_eq!(&d.message.id, &w.id);
                prop_assert_eq!(&d.message.filename, &d.work_name.to_string());
                check_expiry(&d.work_name, before, after, m.timeout_of(&w))?;
                m.in_flight.push(InFlight {
                    msg: w,
                    work: d.work_name,
                });
            }
        }
        Op::Ack { pick, by_id } => {
            if m.in_flight.is_empty() {
                prop_assert_eq!(q.ack("1.999.1.ddmq0123abcd").unwrap(), AckOutcome::NotFound);
                return Ok(());
            }
            let f = m.in_flight.remove(pick % m.in_flight.len());
            let key = if *by_id {
                f.msg.id.clone()
            } else {
                f.work.to_string()
            };
            prop_assert_eq!(q.ack(&key).unwrap(), AckOutcome::Acked(f.work.to_string()));
            m.gone.push(f.work.to_string());
        }
        Op::Nack { pick, force, by_id } => {
            if m.in_flight.is_empty() {
                prop_assert_eq!(
                    q.nack("1.999.1.ddmq0123abcd", *force).unwrap(),
                    RequeueOutcome::NotFound
                );
                return Ok(());
            }
            let f = m.in_flight.remove(pick % m.in_flight.len());
            let key = if *by_id {
                f.msg.id.clone()
            } else {
                f.work.to_string()
            };
            let got = q.nack(&key, *force).unwrap();
            m.gone.push(f.work.to_string());
            apply_fate(m, f.msg, *force, got, None)?;
        }
        Op::GiveBack { pick } => {
            if m.in_flight.is_empty() {
                return Ok(());
            }
            let f = m.in_flight.remove(pick % m.in_flight.len());
            prop_assert!(q.give_back(&f.work).unwrap());
            m.gone.push(f.work.to_string());
            m.waiting.push(f.msg);
        }
        Op::Touch { pick } => {
            if m.in_flight.is_empty() {
                return Ok(());
            }
            let i = pick % m.in_flight.len();
            let before = ddmq::engine::now_secs();
            let renewed = q.touch(&m.in_flight[i].work.to_string()).unwrap();
            let after = ddmq::engine::now_secs();
            prop_assert!(renewed.is_some());
            let renewed = renewed.unwrap();
            check_expiry(&renewed, before, after, m.timeout_of(&m.in_flight[i].msg))?;
            if renewed != m.in_flight[i].work {
                m.gone.push(m.in_flight[i].work.to_string());
            }
            m.in_flight[i].work = renewed;
        }
        Op::Expire { pick } => {
            if m.in_flight.is_empty() {
                return Ok(());
            }
            let i = pick % m.in_flight.len();
            let f = &mut m.in_flight[i];
            let expired = WorkName {
                expiry: 1_000_000_000,
                waiting: f.work.waiting.clone(),
            };
            let work = q.dir().join("work");
            std::fs::rename(
                work.join(f.work.to_string()),
                work.join(expired.to_string()),
            )
            .unwrap();
            f.work = expired;
        }
        Op::Clean => {
            let report = q.clean().unwrap();
            let (expired, live): (Vec<_>, Vec<_>) = m
                .in_flight
                .drain(..)
                .partition(|f| f.work.expiry == 1_000_000_000);
            m.in_flight = live;
            let (mut requeued, mut dropped, mut dead) = (0, 0, 0);
            let tie = m.next_seq;
            m.next_seq += 1;
            for f in expired {
                match m.fate(&f.msg, false) {
                    Fate::Requeued(p) => {
                        requeued += 1;
                        m.waiting.push(ModelMsg {
                            priority: p,
                            seq: tie,
                            counter: f.msg.counter + 1,
                            ..f.msg
                        });
                    }
                    Fate::Dropped | Fate::Deleted => dropped += 1,
                    Fate::Dead => {
                        dead += 1;
                        m.dead += 1;
                    }
                }
                m.gone.push(f.work.to_string());
            }
            prop_assert_eq!(
                (
                    report.requeued,
                    report.dropped,
                    report.dead_lettered,
                    report.quarantined
                ),
                (requeued, dropped, dead, 0)
            );
        }
        Op::AckGone { pick } => {
            if m.gone.is_empty() {
                return Ok(());
            }
            let name = m.gone[pick % m.gone.len()].clone();
            // A finished name may still resolve if its message is in flight again (same id): skip those.
            let w = WorkName::parse(&name).unwrap();
            if m.in_flight
                .iter()
                .any(|f| f.work.waiting.id == w.waiting.id)
            {
                return Ok(());
            }
            prop_assert_eq!(q.ack(&name).unwrap(), AckOutcome::NotFound);
            prop_assert_eq!(q.nack(&name, true).unwrap(), RequeueOutcome::NotFound);
            prop_assert!(q.touch(&name).unwrap().is_none());
        }
    }
    Ok(())
}

fn apply_fate(
    m: &mut Model,
    msg: ModelMsg,
    force: bool,
    got: RequeueOutcome,
    tie: Option<u64>,
) -> Result<(), TestCaseError> {
    match (m.fate(&msg, force), got) {
        (Fate::Requeued(p), RequeueOutcome::Requeued(name)) => {
            prop_assert_eq!(name.priority, p);
            prop_assert_eq!(&name.id, &msg.id);
            let seq = tie.unwrap_or_else(|| {
                m.next_seq += 1;
                m.next_seq - 1
            });
            m.waiting.push(ModelMsg {
                priority: p,
                seq,
                counter: msg.counter + 1,
                ..msg
            });
        }
        (Fate::Dropped, RequeueOutcome::Dropped) => {}
        (
            Fate::Deleted,
            RequeueOutcome::LimitReached {
                dead_lettered: false,
            },
        ) => {}
        (
            Fate::Dead,
            RequeueOutcome::LimitReached {
                dead_lettered: true,
            },
        ) => m.dead += 1,
        (_, got) => prop_assert!(
            false,
            "model and engine disagree on the fate of {:?}: engine says {:?}",
            msg,
            got
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: env_cases("DDMQ_MODEL_CASES", 96), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(s in settings_strategy(), ops in proptest::collection::vec(op_strategy(), 1..60)) {
        run_case(s, ops)?;
    }
}

// ------------------------------------------------------------------ parsers fuzzed

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const MESSAGE_KEYS: [&str; 10] = [
    "message",
    "queue",
    "timeout",
    "id",
    "priority",
    "queue_number",
    "filename",
    "requeue",
    "requeue_counter",
    "requeue_limit",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: env_cases("DDMQ_FUZZ_CASES", 2000), ..ProptestConfig::default() })]

    /// Arbitrary bytes: an error or a message, never a panic.
    #[test]
    fn message_json_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::from_json(&bytes);
    }

    /// Objects with the message keys holding any JSON: when accepted, writing and reading back is stable.
    #[test]
    fn message_json_round_trips(fields in proptest::collection::vec((0usize..MESSAGE_KEYS.len(), json_value()), 0..10), extra in proptest::collection::btree_map("[a-z_]{1,6}", json_value(), 0..3)) {
        let mut obj = serde_json::Map::new();
        for (k, v) in extra {
            obj.insert(k, v);
        }
        for (k, v) in fields {
            obj.insert(MESSAGE_KEYS[k].to_string(), v);
        }
        let text = serde_json::to_vec(&Value::Object(obj)).unwrap();
        if let Ok(m) = Message::from_json(&text) {
            let written = m.to_json();
            prop_assert!(written.is_ascii());
            let again = Message::from_json(written.as_bytes());
            prop_assert!(again.is_ok(), "{} does not read back: {:?}", written, again.err());
            prop_assert_eq!(again.unwrap().to_json(), written);
        }
    }

    /// Arbitrary text as ddmq.yaml: an error naming the file, or settings; never a panic.
    #[test]
    fn settings_yaml_never_panics(text in "(.|\n){0,200}") {
        let p = Path::new("fuzz/ddmq.yaml");
        if let Err(e) = config::validate(p, text.as_bytes()) {
            prop_assert!(e.to_string().contains("fuzz/ddmq.yaml"), "{}", e);
        }
    }

    /// YAML-shaped input built from the real keys, anchors and aliases, and odd values.
    #[test]
    fn settings_yaml_structured(entries in proptest::collection::vec((prop_oneof![Just("cleaned"), Just("message_timeout"), Just("priority"), Just("requeue"), Just("requeue_prio"), Just("dead_letter"), Just("durable"), Just("max_message_bytes"), Just("x")], prop_oneof![Just("0".to_string()), Just("-1".to_string()), Just("1e400".to_string()), Just("18446744073709551615".to_string()), Just("99999999999999999999999".to_string()), Just("~".to_string()), Just("yes".to_string()), Just("[1, 2]".to_string()), Just("{a: b}".to_string()), Just("&x 5".to_string()), Just("*x".to_string()), Just("!!binary aGk=".to_string()), "[a-z0-9 .:-]{0,12}"]), 0..8)) {
        let text: String = entries.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        let p = Path::new("fuzz/ddmq.yaml");
        if let Ok(map) = config::validate(p, text.as_bytes()) {
            // What we accept we can write and read back to the same settings.
            let rendered = config::render(&map);
            let back = config::validate(p, rendered.as_bytes());
            prop_assert!(back.is_ok(), "{} renders to unreadable {}", text, rendered);
            prop_assert_eq!(ddmq::engine::Settings::resolve(&[(p, &map)]).unwrap(), ddmq::engine::Settings::resolve(&[(p, &back.unwrap())]).unwrap());
        }
    }
}
