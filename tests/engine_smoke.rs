use ddmq::engine::*;
use serde_json::json;

#[test]
fn publish_consume_ack_nack_clean() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open_or_init(dir.path()).unwrap();
    assert!(b.create_queue("q").unwrap());
    assert!(!b.create_queue("q").unwrap());
    let q = b.queue("q").unwrap();
    for i in 0..12 {
        q.publish(json!(format!("m{i}")), &PublishOptions::default()).unwrap();
    }
    q.publish(json!("urgent"), &PublishOptions { priority: Some(0), ..Default::default() }).unwrap();
    let got = q.consume(3, &ConsumeOptions::default()).unwrap();
    let bodies: Vec<_> = got.iter().map(|d| d.message.body_text()).collect();
    assert_eq!(bodies, ["urgent", "m0", "m1"]);
    assert!(matches!(q.ack(&got[0].message.filename).unwrap(), AckOutcome::Acked(_)));
    assert_eq!(q.ack(&got[0].message.filename).unwrap(), AckOutcome::NotFound);
    // nack requeues (requeue setting defaults to true), at requeue_prio 0: first again
    assert!(matches!(q.nack(&got[1].work_name.to_string(), false).unwrap(), RequeueOutcome::Requeued(_)));
    let d = q.consume_one().unwrap().unwrap();
    assert_eq!(d.message.body_text(), "m0");
    assert_eq!(d.message.requeue_counter, 1);
    let st = q.status(true).unwrap();
    assert_eq!((st.waiting, st.in_flight), (10, 2));
    let rest = q.consume(100, &ConsumeOptions::default()).unwrap();
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[9].message.body_text(), "m11");
    assert!(q.consume_one().unwrap().is_none());
    let r = q.clean().unwrap();
    assert_eq!(r.requeued, 0);
}
