//! The close contract of open files (see the rule in the module docs of `fs`): which FLUSH
//! publishes or acks, with opener, children and killed tasks played by pids.

use super::*;

/// pid 666 plays a task torn down by a signal; pids 1 (the opener) and 2 (a child that
/// inherited the descriptor) are alive.
const OPENER: u32 = 1;
const CHILD: u32 = 2;
const KILLED: u32 = 666;

fn killable() -> Fixture {
    let f = fixture();
    let fs = QueueFs::new(
        Broker::open(f.other.root()).unwrap(),
        f.fs.options().clone(),
    )
    .with_killed_check(|pid| pid == KILLED);
    Fixture {
        fs: Arc::new(fs),
        ..f
    }
}

impl Fixture {
    fn open_in(&self, mode: impl Into<OpenMode>) -> u64 {
        self.fs.open(self.ino("q/in"), mode, OPENER).unwrap()
    }

    /// Bodies waiting in `q`, in delivery order, read directly from the root.
    fn bodies(&self) -> Vec<String> {
        let q = self.other.queue("q").unwrap();
        q.waiting()
            .unwrap()
            .iter()
            .filter_map(|w| q.read_waiting(w).unwrap())
            .map(|m| m.body_text())
            .collect()
    }
}

#[test]
fn the_openers_close_publishes_before_it_returns_and_an_empty_close_publishes_nothing() {
    let f = killable();
    let fh = f.open_in(Access::Write);
    f.fs.flush(fh, OPENER).unwrap(); // the shell's dup2 before its first write
    assert_eq!(f.counts("q"), (0, 0));
    f.fs.write(fh, 0, b"hello\n").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    assert_eq!(
        f.bodies(),
        ["hello\n"],
        "published by the FLUSH, before RELEASE"
    );
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["hello\n"], "RELEASE publishes nothing more");
}

#[test]
fn each_close_of_a_shared_descriptor_publishes_what_came_since_in_order() {
    // exec 3> in; printf a >&3; printf bc >&3; exec 3>&-
    let f = killable();
    let fh = f.open_in(Access::Write);
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.write(fh, 0, b"a").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.write(fh, 1, b"bc").unwrap(); // the file position went on: no padding
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["a", "bc"]);
}

#[test]
fn closes_of_children_leave_the_message_to_the_opener() {
    // (echo a; /bin/echo b; printf c) > in: one message.
    let f = killable();
    let fh = f.open_in(Access::Write);
    f.fs.write(fh, 0, b"a\n").unwrap();
    f.fs.write(fh, 2, b"b\n").unwrap();
    f.fs.flush(fh, CHILD).unwrap();
    assert_eq!(f.counts("q"), (0, 0), "a child's close publishes nothing");
    f.fs.write(fh, 4, b"c").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    assert_eq!(f.bodies(), ["a\nb\nc"]);
    f.fs.release(fh).unwrap();
    assert_eq!(f.counts("q"), (1, 0));
}

#[test]
fn what_children_write_after_the_opener_closed_is_published_at_release() {
    let f = killable();
    let fh = f.open_in(Access::Write);
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.write(fh, 0, b"late").unwrap();
    f.fs.flush(fh, CHILD).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["late"]);
}

#[test]
fn a_killed_child_does_not_poison_its_parents_file() {
    // exec 3> in; printf KEEP1 >&3; yes | head -1 (yes dies of SIGPIPE); printf KEEP2 >&3
    let f = killable();
    let fh = f.open_in(Access::Write);
    f.fs.write(fh, 0, b"KEEP1").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.flush(fh, KILLED).unwrap();
    f.fs.write(fh, 5, b"KEEP2").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    // A child killed while the parent's bytes are pending: the parent goes on and publishes.
    f.fs.write(fh, 10, b"MORE").unwrap();
    f.fs.flush(fh, KILLED).unwrap();
    f.fs.write(fh, 14, b"!")
        .expect("no EINTR after a child's death");
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["KEEP1", "KEEP2", "MORE!"]);
}

#[test]
fn a_writer_killed_as_the_last_holder_publishes_nothing() {
    let f = killable();
    let fh = f.fs.open(f.ino("q/in"), Access::Write, KILLED).unwrap();
    f.fs.write(fh, 0, b"half a mess").unwrap();
    f.fs.flush(fh, KILLED).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
    // Killed opener, but a child still holds the file and closes it normally: published.
    let fh = f.fs.open(f.ino("q/in"), Access::Write, KILLED).unwrap();
    f.fs.write(fh, 0, b"kept").unwrap();
    f.fs.flush(fh, KILLED).unwrap();
    f.fs.flush(fh, CHILD).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["kept"]);
}

#[test]
fn append_writes_land_at_the_end_whatever_the_offset() {
    // echo first > in; echo second >> in: the kernel places O_APPEND writes at its own idea of
    // the file's size, which still counts the first message.
    let f = killable();
    let append = OpenMode {
        access: Access::Write,
        append: true,
        truncate: false,
    };
    let fh = f.open_in(append);
    f.fs.write(fh, 6, b"second\n").unwrap();
    f.fs.write(fh, 50, b"third\n").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["second\nthird\n"]);
}

#[test]
fn seeks_and_truncation_give_what_a_file_would_hold() {
    let f = killable();
    // f.write('abcdef'); f.truncate(3)
    let fh = f.open_in(Access::Write);
    f.fs.write(fh, 0, b"abcdef").unwrap();
    f.fs.setattr(
        f.ino("q/in"),
        Some(fh),
        &SetAttr {
            size: Some(3),
            ..SetAttr::default()
        },
    )
    .unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    // cp --sparse=always: data, a hole made by lseek, data, ftruncate for a trailing hole.
    f.fs.write(fh, 3, b"xy").unwrap();
    f.fs.write(fh, 8, b"z").unwrap();
    f.fs.setattr(
        f.ino("q/in"),
        Some(fh),
        &SetAttr {
            size: Some(12),
            ..SetAttr::default()
        },
    )
    .unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    // Reaching back into a published message fails and publishes nothing.
    assert_eq!(errno(f.fs.write(fh, 0, b"late")), libc::EINVAL);
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["abc", "xy\0\0\0z\0\0\0"]);
}

#[test]
fn a_refusal_is_reported_once_and_ends_only_its_own_message() {
    let f = killable();
    f.other
        .queue("q")
        .unwrap()
        .write_config_text(b"max_message_bytes: 8\n")
        .unwrap();
    let fh = f.open_in(Access::Write);
    f.fs.write(fh, 0, b"1234").unwrap();
    assert_eq!(errno(f.fs.write(fh, 4, b"56789")), libc::EFBIG);
    f.fs.flush(fh, OPENER)
        .expect("the write already reported it");
    f.fs.write(fh, 4, b"ok").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["ok"]);
    // Found only at close (a character cut off at the end): close reports it.
    let fh = f.open_in(Access::Write);
    f.fs.write(fh, 0, "é".as_bytes().split_at(1).0).unwrap();
    assert_eq!(errno(f.fs.flush(fh, OPENER)), libc::EILSEQ);
    f.fs.release(fh).unwrap();
    assert_eq!(f.bodies(), ["ok"]);
}

#[test]
fn a_publish_that_fails_at_close_reports_it_and_leaves_nothing() {
    let f = killable();
    let fh = f.open_in(Access::Write);
    f.fs.write(fh, 0, b"orphan").unwrap();
    f.other.delete_queue("q", true).unwrap();
    assert_eq!(errno(f.fs.flush(fh, OPENER)), libc::ENOENT);
    f.fs.release(fh).unwrap();
    assert!(!f.other.queue_exists("q").unwrap());
}

#[test]
fn a_message_read_whole_is_acked_by_its_readers_close_and_kept_from_killed_holders() {
    let f = killable();
    // The parent reads it whole; a child that inherited the descriptor dies: acked, once.
    f.engine_publish("q", "whole");
    let fh = f.fs.open(f.ino("q/next"), Access::Read, OPENER).unwrap();
    assert_eq!(f.fs.read(fh, 0, 4096, OPENER).unwrap(), b"whole");
    f.fs.flush(fh, KILLED).unwrap();
    assert_eq!(f.counts("q"), (0, 1));
    f.fs.flush(fh, OPENER).unwrap();
    assert_eq!(
        f.counts("q"),
        (0, 0),
        "acked when the reader's close returns"
    );
    f.fs.release(fh).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
    // The reader that got it all is killed before it closes: back to the queue.
    f.engine_publish("q", "again");
    let fh = f.fs.open(f.ino("q/next"), Access::Read, KILLED).unwrap();
    assert_eq!(f.fs.read(fh, 0, 4096, KILLED).unwrap(), b"again");
    f.fs.flush(fh, KILLED).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.counts("q"), (1, 0));
    // A child's close before the reader finished decides nothing.
    let fh = f.fs.open(f.ino("q/next"), Access::Read, OPENER).unwrap();
    f.fs.flush(fh, CHILD).unwrap();
    assert_eq!(f.fs.read(fh, 0, 4096, OPENER).unwrap(), b"again");
    f.fs.flush(fh, OPENER).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
    f.fs.release(fh).unwrap();
}

#[test]
fn settings_opened_without_truncation_start_from_the_file_and_refuse_unknown_keys() {
    let f = killable();
    f.other
        .queue("q")
        .unwrap()
        .write_config_text(b"legacy_key: 1\nmessage_timeout: 7\n")
        .unwrap();
    let config = f.ino("q/ddmq.yaml");
    let append = OpenMode {
        access: Access::Write,
        append: true,
        truncate: false,
    };
    // echo 'durable: true' >> ddmq.yaml: appended; a key the file had already is kept.
    let fh = f.fs.open(config, append, OPENER).unwrap();
    f.fs.write(fh, 0, b"durable: true\n").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.release(fh).unwrap();
    let text = f.other.queue("q").unwrap().read_config_text().unwrap();
    for key in ["legacy_key: 1", "message_timeout: 7", "durable: true"] {
        assert!(text.contains(key), "{key} in {text}");
    }
    // A key ddmq does not know is refused, once, and the reason shows in status.
    let fh = f.fs.open(config, append, OPENER).unwrap();
    assert_eq!(errno(f.fs.write(fh, 0, b"bogus: 1\n")), libc::EINVAL);
    f.fs.flush(fh, OPENER).expect("the write said it already");
    f.fs.release(fh).unwrap();
    assert_eq!(
        f.other.queue("q").unwrap().read_config_text().unwrap(),
        text
    );
    let status = String::from_utf8(f.cat("q/status").unwrap()).unwrap();
    assert!(
        status.contains("last_error: ") && status.contains("unknown setting \"bogus\""),
        "{status}"
    );
    // O_TRUNC starts empty.
    let trunc = OpenMode {
        access: Access::Write,
        append: false,
        truncate: true,
    };
    let fh = f.fs.open(config, trunc, OPENER).unwrap();
    f.fs.write(fh, 0, b"priority: 3\n").unwrap();
    f.fs.flush(fh, OPENER).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(
        f.other.queue("q").unwrap().read_config_text().unwrap(),
        "priority: 3\n"
    );
}
