//! What the tree grants each caller, leases kept by open files, and the sizes of message
//! entries: the semantics a team's mount relies on, without a mount.

use super::*;
use crate::engine::HOLD_FOR;
use crate::engine::InFlight;
use crate::engine::names::{TakeKind, TakeName};
use std::os::unix::fs::PermissionsExt;

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A caller that is not root, in group 4242 besides its own.
fn member(uid: u32) -> Caller {
    Caller {
        uid,
        gid: uid,
        groups: vec![4242],
    }
}

/// The root and queue directories: mode `mode`, group 4242, owner 0 (as the tests run).
fn share(f: &Fixture, mode: u32) {
    let root = f.fs.broker().root().to_path_buf();
    for d in [root.clone(), root.join("q"), root.join("q/work")] {
        std::os::unix::fs::chown(&d, Some(0), Some(4242)).unwrap();
        chmod(&d, mode);
    }
}

#[test]
fn each_request_is_checked_against_its_own_caller() {
    let f = fixture();
    share(&f, 0o2770);
    // Past the stat cache: the modes just set are the ones read.
    std::thread::sleep(Duration::from_millis(1100));
    let (m, outsider) = (
        member(5000),
        Caller {
            uid: 6000,
            gid: 6000,
            groups: vec![],
        },
    );
    let q = f.ino("q");
    let inn = f.ino("q/in");
    let write = OpenMode::from_flags(libc::O_WRONLY | libc::O_TRUNC);
    let permit =
        |ino, who: &Caller, intent| f.fs.permit("test", ino, who, intent).map_err(|e| e.errno());

    assert_eq!(permit(ROOT_INO, &m, Intent::Lookup), Ok(()));
    assert_eq!(permit(inn, &m, Intent::Open(write)), Ok(()));
    assert_eq!(permit(q, &m, Intent::ChangeEntries), Ok(()));
    // The outsider is refused at every directory, cached names or not.
    assert_eq!(
        permit(ROOT_INO, &outsider, Intent::Lookup),
        Err(libc::EACCES)
    );
    assert_eq!(
        permit(inn, &outsider, Intent::Open(write)),
        Err(libc::EACCES)
    );
    assert_eq!(permit(inn, &outsider, Intent::Stat), Err(libc::EACCES));
    assert_eq!(permit(inn, &Caller::root(), Intent::Open(write)), Ok(()));
    // Nothing here is executable, not even for root.
    assert_eq!(
        permit(inn, &Caller::root(), Intent::Access(1)),
        Err(libc::EACCES)
    );
    assert_eq!(permit(q, &m, Intent::Access(1)), Ok(()));

    // Copy tools set the mode, owner and times of `in`: whoever may publish may do that
    // (without effect); on other files only the owner may change a mode.
    let chmod_in = SetAttr {
        mode: Some(0o644),
        uid: Some(5000),
        times: true,
        ..SetAttr::default()
    };
    let setattr = |change| Intent::SetAttr { change, open: true };
    assert_eq!(permit(inn, &m, setattr(&chmod_in)), Ok(()));
    assert_eq!(
        permit(inn, &outsider, setattr(&chmod_in)),
        Err(libc::EACCES)
    );
    let status = f.ino("q/status");
    assert_eq!(permit(status, &m, setattr(&chmod_in)), Err(libc::EPERM));
    let truncate = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    let by_name = Intent::SetAttr {
        change: &truncate,
        open: false,
    };
    assert_eq!(permit(status, &m, by_name), Err(libc::EACCES));

    // Each caller sees `in` as its own, with its own right to publish as the owner's bits.
    let mine = f.fs.lookup_by(q, "in", 1, Some(&m)).unwrap();
    let theirs = f.fs.lookup_by(q, "in", 1, Some(&outsider)).unwrap();
    assert_ne!(mine.ino, theirs.ino);
    assert_eq!((mine.uid, mine.perm & 0o700), (5000, 0o200));
    assert_eq!((theirs.uid, theirs.perm & 0o700), (6000, 0));
    assert!(
        mine.per_caller,
        "the kernel may not cache it for the next caller"
    );
}

#[test]
fn an_open_reader_keeps_its_lease_and_a_lost_one_fails_its_close() {
    let f = fixture();
    set_timeout(&f, 1);
    f.engine_publish("q", "slow");
    f.engine_publish("q", "lost");
    let q = f.other.queue("q").unwrap();
    let slow = f.fs.open(f.ino("q/next"), Access::Read, PID).unwrap();
    // Held first; its first renewal (a quarter of the lease) gives it its work/ name.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(f.fs.leases_due(), [slow]);
    f.fs.renew_lease(slow).unwrap();
    let before = q.in_flight().unwrap()[0].clone();
    // Due after a quarter of the lease: renewed, by rename to a later expiry.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(f.fs.leases_due(), [slow]);
    f.fs.renew_lease(slow).unwrap();
    let after = q.in_flight().unwrap();
    assert_eq!(after.len(), 1);
    assert!(
        after[0].expiry > before.expiry,
        "{after:?} after {before:?}"
    );
    assert_eq!(f.fs.read(slow, 0, 100, PID).unwrap(), b"slow");
    assert_eq!(f.fs.read(slow, 4, 100, PID).unwrap(), b"");
    f.fs.flush(slow, PID).unwrap();
    f.fs.release(slow).unwrap();
    assert_eq!(f.counts("q"), (1, 0), "acked at close");

    // Another client takes the message back while the reader holds it: the renewal finds it
    // gone, status says so, and the reader's close fails.
    let lost = f.fs.open(f.ino("q/next"), Access::Read, PID).unwrap();
    let [held] = &held_names(&f)[..] else {
        panic!("one held message")
    };
    q.nack_in_flight(&InFlight::Held(held.clone()), true)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(f.fs.leases_due().contains(&lost));
    assert_eq!(errno(f.fs.renew_lease(lost)), libc::EIO);
    let status = String::from_utf8(f.cat("q/status").unwrap()).unwrap();
    assert!(
        status.contains("last_error:") && status.contains("lease"),
        "{status}"
    );
    f.fs.read(lost, 0, 100, PID).unwrap();
    f.fs.read(lost, 4, 100, PID).unwrap();
    assert_eq!(errno(f.fs.flush(lost, PID)), libc::EIO);
    f.fs.release(lost).unwrap();
    assert_eq!(
        f.counts("q"),
        (1, 0),
        "the message is waiting again, not lost"
    );
    assert!(f.fs.leases_due().is_empty());
}

/// The `.held-` names in the queue's `work/` (messages of open `next` and `wait` files).
fn held_names(f: &Fixture) -> Vec<TakeName> {
    let work = f.fs.broker().root().join("q/work");
    std::fs::read_dir(work)
        .unwrap()
        .filter_map(|e| TakeName::parse(e.unwrap().file_name().to_str()?))
        .filter(|t| t.kind == TakeKind::Held)
        .collect()
}

#[test]
fn a_next_closed_within_a_second_is_acked_held_and_one_kept_open_gets_its_work_name() {
    let f = fixture();
    let q = f.other.queue("q").unwrap();
    f.engine_publish("q", "quick");
    let quick = f.fs.open(f.ino("q/next"), Access::Read, PID).unwrap();
    // One rename: held under its take name, counted in flight, not in work/ by name.
    assert_eq!(held_names(&f).len(), 1);
    assert!(q.in_flight().unwrap().is_empty());
    assert_eq!(f.counts("q"), (0, 1));
    assert!(f.fs.leases_due().is_empty(), "no renewal before a second");
    assert_eq!(f.fs.read(quick, 0, 100, PID).unwrap(), b"quick");
    assert_eq!(f.fs.read(quick, 5, 100, PID).unwrap(), b"");
    f.fs.flush(quick, PID).unwrap();
    f.fs.release(quick).unwrap();
    assert_eq!(f.counts("q"), (0, 0), "acked from its held name");
    assert!(held_names(&f).is_empty());

    let id = f.engine_publish("q", "slow");
    let slow = f.fs.open(f.ino("q/wait"), Access::Read, PID).unwrap();
    assert_eq!(held_names(&f).len(), 1);
    std::thread::sleep(HOLD_FOR + Duration::from_millis(500));
    assert_eq!(f.fs.leases_due(), [slow], "due after a second");
    f.fs.renew_lease(slow).unwrap();
    assert!(held_names(&f).is_empty());
    let leased = q.in_flight().unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].waiting.id.to_string(), id);
    assert_eq!(
        String::from_utf8(f.cat(&format!("q/work/{id}")).unwrap()).unwrap(),
        "slow"
    );
    f.fs.read(slow, 0, 100, PID).unwrap();
    f.fs.read(slow, 4, 100, PID).unwrap();
    f.fs.flush(slow, PID).unwrap();
    f.fs.release(slow).unwrap();
    assert_eq!(f.counts("q"), (0, 0), "acked by its work/ name");

    // Not read whole: given back from its held name, uncounted.
    f.engine_publish("q", "left");
    let left = f.fs.open(f.ino("q/next"), Access::Read, PID).unwrap();
    f.fs.release(left).unwrap();
    assert_eq!(f.counts("q"), (1, 0));
    assert!(held_names(&f).is_empty());
    let again = q.consume_one().unwrap().unwrap();
    assert_eq!(again.message.requeue_counter, 0);
}

#[test]
fn what_this_mount_settles_is_no_lost_lease_for_its_other_files() {
    let f = fixture();
    let id = f.engine_publish("q", "claimed");
    let claim = f.fs.open(f.ino("q/claim"), Access::Read, PID).unwrap();
    let entry =
        f.fs.open(f.ino(&format!("q/work/{id}")), Access::Read, PID)
            .unwrap();
    assert_eq!(f.fs.read(entry, 0, 100, PID).unwrap(), b"claimed");
    f.write_file("q/ack", format!("{id}\n").as_bytes()).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
    // Both were acked through this mount: their closes succeed.
    f.fs.read(claim, 0, 4096, PID).unwrap();
    f.fs.read(claim, 4096, 4096, PID).unwrap();
    f.fs.flush(claim, PID).unwrap();
    f.fs.flush(entry, PID).unwrap();
    f.fs.release(claim).unwrap();
    f.fs.release(entry).unwrap();

    // A reader of next whose message was removed from work/ through this mount meanwhile.
    let id = f.engine_publish("q", "removed");
    let next = f.fs.open(f.ino("q/next"), Access::Read, PID).unwrap();
    let work = f.ino("q/work");
    // Held, it is not in work/ yet: once its first renewal gave it its name, it is.
    assert_eq!(errno(f.fs.unlink(work, &id)), libc::ENOENT);
    std::thread::sleep(HOLD_FOR + Duration::from_millis(100));
    f.fs.renew_lease(next).unwrap();
    f.fs.unlink(work, &id).unwrap();
    f.fs.read(next, 0, 100, PID).unwrap();
    f.fs.read(next, 7, 100, PID).unwrap();
    f.fs.flush(next, PID).unwrap();
    f.fs.release(next).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
}

#[test]
fn message_entries_show_their_body_s_length() {
    let f = fixture();
    let plain = f.engine_publish("q", "plain");
    let escaped = f.engine_publish("q", "a \"quoted\"\n\tünï ✓");
    let object = f
        .other
        .queue("q")
        .unwrap()
        .publish(
            serde_json::json!({"k": [1, 2.5]}),
            &PublishOptions::default(),
        )
        .unwrap()
        .id;
    for (id, body) in [
        (&plain, "plain".to_string()),
        (&escaped, "a \"quoted\"\n\tünï ✓".to_string()),
        (&object, r#"{"k":[1,2.5]}"#.to_string()),
    ] {
        let attr = f.fs.getattr(f.ino(&format!("q/messages/{id}"))).unwrap();
        assert_eq!(attr.size, body.len() as u64, "{body}");
        assert_eq!(f.cat(&format!("q/messages/{id}")).unwrap(), body.as_bytes());
    }
    assert_eq!(f.fs.getattr(f.ino("q/status")).unwrap().size, 0);
}

fn set_timeout(f: &Fixture, secs: u64) {
    f.other
        .queue("q")
        .unwrap()
        .write_config_text(format!("message_timeout: {secs}\n").as_bytes())
        .unwrap();
}
