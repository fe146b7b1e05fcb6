//! The tree's semantics driven without a mount, with other clients acting on the root directly.

use super::*;
use crate::engine::{Broker, ConsumeOptions, PublishOptions};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

struct Fixture {
    _dir: tempfile::TempDir,
    fs: Arc<QueueFs>,
    /// A second, independent client of the same root (as the CLI or another host would be).
    other: Broker,
}

fn fixture_with(opts: FsOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let other = Broker::open_or_init(&root).unwrap();
    other.create_queue("q").unwrap();
    let fs = Arc::new(QueueFs::new(Broker::open(&root).unwrap(), opts));
    Fixture {
        _dir: dir,
        fs,
        other,
    }
}

/// Every entry of the open directory `fh` from `offset` on, as READDIR pages would give them.
pub(super) fn read_all(fs: &QueueFs, fh: u64, offset: u64) -> Vec<(u64, DirEntry)> {
    let mut all = Vec::new();
    fs.readdir(fh, offset, |next, e| {
        all.push((next, e.clone()));
        false
    })
    .unwrap();
    all
}

fn fixture() -> Fixture {
    fixture_with(FsOptions {
        wait_limit: Duration::from_millis(400),
        wait_poll: Duration::from_millis(20),
        ..FsOptions::default()
    })
}

impl Fixture {
    fn ino(&self, path: &str) -> u64 {
        self.try_ino(path)
            .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
    }

    fn try_ino(&self, path: &str) -> Result<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.fs.lookup(ino, part)?.ino;
        }
        Ok(ino)
    }

    /// open, write in chunks, flush, release: what `echo body > in` does.
    fn publish(&self, queue: &str, chunks: &[&[u8]]) -> Result<()> {
        let fh = self
            .fs
            .open(self.ino(&format!("{queue}/in")), Access::Write, 1)?;
        self.fs.setattr(
            self.ino(&format!("{queue}/in")),
            Some(fh),
            &SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        )?;
        self.fs.flush(fh, 1)?; // the shell's dup2 closes a copy before writing
        let mut offset = 0u64;
        let mut result = Ok(());
        for chunk in chunks {
            if let Err(e) = self.fs.write(fh, offset, chunk) {
                result = Err(e);
                break;
            }
            offset += chunk.len() as u64;
        }
        let flushed = self.fs.flush(fh, 1);
        self.fs.release(fh)?;
        result.and(flushed)
    }

    /// open, read until an empty read, release: what `cat` does.
    fn cat(&self, path: &str) -> Result<Vec<u8>> {
        let fh = self.fs.open(self.ino(path), Access::Read, 1)?;
        let mut out = Vec::new();
        loop {
            let chunk = self.fs.read(fh, out.len() as u64, 131072, PID)?;
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        self.fs.flush(fh, 1)?;
        self.fs.release(fh)?;
        Ok(out)
    }

    fn write_file(&self, path: &str, text: &[u8]) -> Result<()> {
        let fh = self.fs.open(self.ino(path), Access::Write, 1)?;
        let written = self.fs.write(fh, 0, text);
        let flushed = self.fs.flush(fh, 1);
        let released = self.fs.release(fh);
        written.and(flushed).and(released)
    }

    fn counts(&self, queue: &str) -> (usize, usize) {
        let s = self.other.queue(queue).unwrap().status(false).unwrap();
        (s.waiting, s.in_flight)
    }

    fn engine_publish(&self, queue: &str, body: &str) -> String {
        self.other
            .queue(queue)
            .unwrap()
            .publish(
                serde_json::Value::String(body.into()),
                &PublishOptions::default(),
            )
            .unwrap()
            .id
    }
}

/// The task every request of a test comes from, unless the test says otherwise.
const PID: u32 = 1;

fn errno<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

#[test]
fn in_publishes_exactly_the_bytes_written_and_next_consumes_them() {
    let f = fixture();
    f.publish("q", &[b"hello ", b"w\xc3", b"\xa9rld\n"])
        .unwrap();
    let q = f.other.queue("q").unwrap();
    let msg = q.read_waiting(&q.waiting().unwrap()[0]).unwrap().unwrap();
    assert_eq!(
        msg.message,
        serde_json::Value::String("hello wérld\n".into())
    );
    assert_eq!(f.cat("q/next").unwrap(), "hello wérld\n".as_bytes());
    assert_eq!(f.counts("q"), (0, 0), "read to EOF and closed: acked");
    assert_eq!(
        errno(f.fs.open(f.ino("q/next"), Access::Read, 1)),
        libc::ENODATA
    );
    assert_eq!(f.fs.open_file_count(), 0);
}

#[test]
fn an_open_without_writes_publishes_nothing() {
    let f = fixture();
    f.publish("q", &[]).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
}

#[test]
fn oversized_and_non_utf8_bodies_fail_the_write_and_publish_nothing() {
    let f = fixture();
    f.write_file("q/ddmq.yaml", b"max_message_bytes: 8\n")
        .unwrap();
    assert_eq!(errno(f.publish("q", &[b"12345", b"6789"])), libc::EFBIG);
    assert_eq!(errno(f.publish("q", &[b"ok", b"\xff"])), libc::EILSEQ);
    // A character cut at the end and never completed fails the close.
    assert_eq!(errno(f.publish("q", &[b"ab\xc3"])), libc::EILSEQ);
    assert_eq!(f.counts("q"), (0, 0));
    f.publish("q", &[b"12345678"]).unwrap();
    assert_eq!(f.counts("q"), (1, 0));
}

#[test]
fn a_reader_that_stops_early_gives_the_message_back_at_once() {
    let f = fixture();
    f.engine_publish("q", "a long body");
    let fh = f.fs.open(f.ino("q/next"), Access::Read, 1).unwrap();
    assert_eq!(f.counts("q"), (0, 1));
    assert_eq!(f.fs.read(fh, 0, 4, PID).unwrap(), b"a lo");
    f.fs.release(fh).unwrap();
    assert_eq!(f.counts("q"), (1, 0));
    // Opened and closed without reading: given back too.
    let fh = f.fs.open(f.ino("q/next"), Access::Read, 1).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(f.counts("q"), (1, 0));
}

#[test]
fn byte_by_byte_reads_of_a_whole_line_ack_like_shell_read() {
    let f = fixture();
    f.engine_publish("q", "one line\n");
    let fh = f.fs.open(f.ino("q/next"), Access::Read, 1).unwrap();
    let mut got: Vec<u8> = Vec::new();
    loop {
        let b = f.fs.read(fh, got.len() as u64, 1, PID).unwrap();
        got.extend(&b);
        if b == b"\n" {
            break;
        }
    }
    f.fs.release(fh).unwrap();
    assert_eq!(got, b"one line\n");
    assert_eq!(f.counts("q"), (0, 0));
}

#[test]
fn next_follows_priority_then_fifo_and_sees_other_clients() {
    let f = fixture();
    let q = f.other.queue("q").unwrap();
    let publish = |body: &str, priority| {
        q.publish(
            serde_json::Value::String(body.into()),
            &PublishOptions {
                priority: Some(priority),
                ..Default::default()
            },
        )
        .unwrap()
    };
    publish("late", 5);
    f.publish("q", &[b"default"]).unwrap(); // queue default priority 999
    publish("urgent", 0);
    publish("late2", 5);
    let order: Vec<String> = (0..4)
        .map(|_| String::from_utf8(f.cat("q/next").unwrap()).unwrap())
        .collect();
    assert_eq!(order, ["urgent", "late", "late2", "default"]);
}

#[test]
fn claim_returns_the_record_and_leaves_it_in_flight_until_acked() {
    let f = fixture();
    let id = f.engine_publish("q", "job");
    let record: serde_json::Value = serde_json::from_slice(&f.cat("q/claim").unwrap()).unwrap();
    assert_eq!(record["id"], serde_json::Value::String(id.clone()));
    assert_eq!(record["message"], "job");
    assert_eq!(record["requeue_counter"], 0);
    assert_eq!(f.counts("q"), (0, 1));
    assert_eq!(f.cat(&format!("q/work/{id}")).unwrap(), b"job");
    assert_eq!(
        errno(f.write_file("q/ack", b"0123456789abcdef\n")),
        libc::ENOENT
    );
    assert_eq!(errno(f.write_file("q/ack", b"not/an id\n")), libc::EINVAL);
    f.write_file("q/ack", format!("{id}\n").as_bytes()).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
    assert_eq!(errno(f.try_ino(&format!("q/work/{id}"))), libc::ENOENT);
}

#[test]
fn nack_requeues_and_rm_acks_and_touch_extends_the_lease() {
    let f = fixture();
    let a = f.engine_publish("q", "a");
    let b = f.engine_publish("q", "b");
    f.cat("q/claim").unwrap();
    f.cat("q/claim").unwrap();
    // Both ids in one write, the second line completed by the close.
    let fh = f.fs.open(f.ino("q/nack"), Access::Write, 1).unwrap();
    f.fs.write(fh, 0, format!("{a}\n{}", &b[..4]).as_bytes())
        .unwrap();
    f.fs.write(fh, 0, &b.as_bytes()[4..]).unwrap();
    f.fs.flush(fh, 1).unwrap();
    f.fs.release(fh).unwrap();
    let q = f.other.queue("q").unwrap();
    assert_eq!(f.counts("q"), (2, 0));
    assert_eq!(
        q.read_waiting(&q.waiting().unwrap()[0])
            .unwrap()
            .unwrap()
            .requeue_counter,
        1
    );

    f.write_file("q/ddmq.yaml", b"message_timeout: 5\n")
        .unwrap();
    f.cat("q/claim").unwrap();
    let before = q.in_flight().unwrap()[0].clone();
    f.write_file("q/ddmq.yaml", b"message_timeout: 500\n")
        .unwrap();
    let entry = f.ino(&format!("q/work/{}", before.waiting.id));
    f.fs.setattr(
        entry,
        None,
        &SetAttr {
            times: true,
            ..SetAttr::default()
        },
    )
    .unwrap();
    let after = q.in_flight().unwrap()[0].clone();
    assert!(after.expiry >= before.expiry + 400, "{before} -> {after}");
    f.fs.unlink(f.ino("q/work"), &before.waiting.id.to_string())
        .unwrap();
    assert_eq!(f.counts("q"), (1, 0));
    assert_eq!(
        errno(f.fs.unlink(f.ino("q/work"), &before.waiting.id.to_string())),
        libc::ENOENT
    );
    assert_eq!(errno(f.fs.unlink(f.ino("q"), "next")), libc::EPERM);
}

#[test]
fn messages_lists_waiting_in_delivery_order_and_tolerates_vanishing_entries() {
    let f = fixture();
    let q = f.other.queue("q").unwrap();
    let low = q
        .publish(
            "low".into(),
            &PublishOptions {
                priority: Some(9),
                ..Default::default()
            },
        )
        .unwrap()
        .id;
    let high = q
        .publish(
            "high".into(),
            &PublishOptions {
                priority: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
        .id;
    let dir = f.ino("q/messages");
    let fh = f.fs.opendir(dir).unwrap();
    let names: Vec<String> = read_all(&f.fs, fh, 0)
        .into_iter()
        .map(|(_, e)| e.name)
        .collect();
    f.fs.releasedir(fh);
    assert_eq!(
        names,
        [".".to_string(), "..".into(), high.clone(), low.clone()]
    );
    // Paging from an offset continues where the kernel left off.
    let fh = f.fs.opendir(dir).unwrap();
    let rest = read_all(&f.fs, fh, 3);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1.name, low);
    f.fs.releasedir(fh);

    assert_eq!(f.cat(&format!("q/messages/{high}")).unwrap(), b"high");
    assert_eq!(f.counts("q"), (2, 0), "peeking takes nothing");
    let held = f.ino(&format!("q/messages/{high}"));
    // Another client consumes it behind our back.
    let d = q.consume(1, &ConsumeOptions { clean: false }).unwrap();
    assert_eq!(d[0].message.id, high);
    assert_eq!(errno(f.fs.open(held, Access::Read, 1)), libc::ENOENT);
    assert_eq!(
        errno(f.try_ino(&format!("q/messages/{high}"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(f.fs.open(f.ino(&format!("q/messages/{low}")), Access::Write, 1)),
        libc::EACCES
    );
}

#[test]
fn queues_are_made_and_removed_with_mkdir_and_rmdir() {
    let f = fixture();
    assert_eq!(errno(f.fs.mkdir(ROOT_INO, "bad name")), libc::EINVAL);
    assert_eq!(errno(f.fs.mkdir(ROOT_INO, "q")), libc::EEXIST);
    assert_eq!(errno(f.fs.mkdir(f.ino("q"), "sub")), libc::EPERM);
    f.fs.mkdir(ROOT_INO, "fresh").unwrap();
    assert!(f.other.queue_exists("fresh").unwrap());
    f.publish("fresh", &[b"x"]).unwrap();
    assert_eq!(errno(f.fs.rmdir(ROOT_INO, "fresh")), libc::ENOTEMPTY);
    f.cat("fresh/next").unwrap();
    f.fs.rmdir(ROOT_INO, "fresh").unwrap();
    assert!(!f.other.queue_exists("fresh").unwrap());
    assert_eq!(errno(f.fs.rmdir(ROOT_INO, "fresh")), libc::ENOENT);
    assert_eq!(errno(f.fs.rmdir(f.ino("q"), "work")), libc::EPERM);
    // A queue deleted by another client vanishes from the tree.
    f.other.create_queue("gone").unwrap();
    f.ino("gone/next");
    f.other.delete_queue("gone", true).unwrap();
    assert_eq!(errno(f.try_ino("gone")), libc::ENOENT);
    let fh = f.fs.opendir(ROOT_INO).unwrap();
    let names: Vec<String> = read_all(&f.fs, fh, 0)
        .into_iter()
        .map(|(_, e)| e.name)
        .collect();
    assert_eq!(names, [".", "..", "q"]);
}

#[test]
fn settings_file_refuses_invalid_text_and_changes_nothing() {
    let f = fixture();
    let before = f.cat("q/ddmq.yaml").unwrap();
    assert_eq!(
        errno(f.write_file("q/ddmq.yaml", b"message_timeout: soon\n")),
        libc::EINVAL
    );
    assert_eq!(
        errno(f.write_file("q/ddmq.yaml", b"- a list\n")),
        libc::EINVAL
    );
    // The write itself fails (shells ignore errors from close), and later writes change nothing.
    let fh = f.fs.open(f.ino("q/ddmq.yaml"), Access::Write, 1).unwrap();
    assert_eq!(errno(f.fs.write(fh, 0, b"priority: high\n")), libc::EINVAL);
    assert_eq!(errno(f.fs.write(fh, 0, b"priority: 1\n")), libc::EINVAL);
    f.fs.release(fh).unwrap();
    // Without a final newline it is judged on close.
    assert_eq!(
        errno(f.write_file("q/ddmq.yaml", b"priority: high")),
        libc::EINVAL
    );
    assert_eq!(f.cat("q/ddmq.yaml").unwrap(), before);
    f.write_file("q/ddmq.yaml", b"priority: 3\n").unwrap();
    assert_eq!(f.other.queue("q").unwrap().settings().unwrap().priority, 3);
    let status = String::from_utf8(f.cat("q/status").unwrap()).unwrap();
    assert!(status.contains("waiting: 0\nin_flight: 0\n"), "{status}");
}

#[test]
fn files_refuse_the_wrong_direction() {
    let f = fixture();
    f.engine_publish("q", "x");
    for path in ["q/next", "q/claim", "q/wait", "q/status"] {
        assert_eq!(
            errno(f.fs.open(f.ino(path), Access::Write, 1)),
            libc::EACCES,
            "{path}"
        );
    }
    for path in ["q/in", "q/ack", "q/nack"] {
        assert_eq!(
            errno(f.fs.open(f.ino(path), Access::Read, 1)),
            libc::EACCES,
            "{path}"
        );
    }
    assert_eq!(f.counts("q"), (1, 0));
    assert_eq!(errno(f.fs.open(f.ino("q"), Access::Read, 1)), libc::EISDIR);
}

#[test]
fn read_only_mount_refuses_every_change() {
    let f = fixture_with(FsOptions {
        read_only: true,
        ..FsOptions::default()
    });
    f.engine_publish("q", "x");
    assert_eq!(
        errno(f.fs.open(f.ino("q/in"), Access::Write, 1)),
        libc::EROFS
    );
    assert_eq!(
        errno(f.fs.open(f.ino("q/next"), Access::Read, 1)),
        libc::EROFS
    );
    assert_eq!(
        errno(f.fs.open(f.ino("q/ddmq.yaml"), Access::Write, 1)),
        libc::EROFS
    );
    assert_eq!(errno(f.fs.mkdir(ROOT_INO, "new")), libc::EROFS);
    assert_eq!(errno(f.fs.rmdir(ROOT_INO, "q")), libc::EROFS);
    assert_eq!(f.fs.getattr(f.ino("q/in")).unwrap().perm, 0);
    assert_eq!(f.counts("q"), (1, 0));
    assert!(!f.cat("q/status").unwrap().is_empty());
}

#[test]
fn wait_blocks_until_a_message_arrives_or_the_limit_passes() {
    let f = fixture();
    let wait = f.ino("q/wait");
    let started = Instant::now();
    assert_eq!(errno(f.fs.open(wait, Access::Read, 1)), libc::ENODATA);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let other = f.other.queue("q").unwrap();
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        other
            .publish("arrived".into(), &PublishOptions::default())
            .unwrap();
    });
    let fh = f.fs.open(wait, Access::Read, 1).unwrap();
    publisher.join().unwrap();
    assert_eq!(f.fs.read(fh, 0, 100, PID).unwrap(), b"arrived");
    assert_eq!(f.fs.read(fh, 7, 100, PID).unwrap(), b"");
    f.fs.release(fh).unwrap();
    assert_eq!(f.counts("q"), (0, 0));
}

#[test]
fn an_interrupted_waiter_gives_up_and_takes_nothing() {
    let dying = Arc::new(AtomicBool::new(false));
    let flag = dying.clone();
    let dir = tempfile::tempdir().unwrap();
    let other = Broker::open_or_init(dir.path()).unwrap();
    other.create_queue("q").unwrap();
    let opts = FsOptions {
        wait_limit: Duration::from_secs(20),
        wait_poll: Duration::from_millis(20),
        ..FsOptions::default()
    };
    let fs = Arc::new(
        QueueFs::new(Broker::open(dir.path()).unwrap(), opts)
            .with_interrupt_check(move |pid| pid == 42 && flag.load(Ordering::Relaxed)),
    );
    let q_ino = fs.lookup(ROOT_INO, "q").unwrap().ino;
    let wait = fs.lookup(q_ino, "wait").unwrap().ino;
    let waiter = {
        let fs = fs.clone();
        std::thread::spawn(move || fs.open(wait, Access::Read, 42).map_err(|e| e.errno()))
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    dying.store(true, Ordering::Relaxed);
    assert_eq!(waiter.join().unwrap(), Err(libc::EINTR));
    assert!(started.elapsed() < Duration::from_secs(10));
    // A message that arrives for a dying reader stays queued.
    other
        .queue("q")
        .unwrap()
        .publish("stay".into(), &PublishOptions::default())
        .unwrap();
    assert_eq!(
        fs.open(wait, Access::Read, 42).unwrap_err().errno(),
        libc::EINTR
    );
    let s = other.queue("q").unwrap().status(false).unwrap();
    assert_eq!((s.waiting, s.in_flight), (1, 0));
}

#[test]
fn forgotten_entries_leave_the_inode_table() {
    let f = fixture();
    let ids: Vec<String> = (0..30)
        .map(|i| f.engine_publish("q", &format!("m{i}")))
        .collect();
    let dir = f.ino("q/messages");
    let base = f.fs.inode_count();
    let inos: Vec<u64> = ids
        .iter()
        .map(|id| f.fs.lookup(dir, id).unwrap().ino)
        .collect();
    assert_eq!(f.fs.inode_count(), base + 30);
    for ino in inos {
        f.fs.forget(ino, 1);
    }
    assert_eq!(f.fs.inode_count(), base);
}

#[test]
fn shutdown_gives_back_claimed_messages() {
    let f = fixture();
    f.engine_publish("q", "held");
    let fh = f.fs.open(f.ino("q/next"), Access::Read, 1).unwrap();
    f.fs.read(fh, 0, 2, PID).unwrap();
    assert_eq!(f.counts("q"), (0, 1));
    f.fs.shutdown();
    assert_eq!(f.counts("q"), (1, 0));
    assert_eq!(errno(f.fs.read(fh, 0, 2, PID)), libc::EBADF);
}

#[test]
fn a_writer_killed_before_it_closed_publishes_nothing_and_a_killed_reader_gives_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let other = Broker::open_or_init(&root).unwrap();
    other.create_queue("q").unwrap();
    // pid 666 plays a process torn down by a signal.
    let fs = QueueFs::new(Broker::open(&root).unwrap(), FsOptions::default())
        .with_killed_check(|pid| pid == 666);
    let path_ino = |path: &str| {
        path.split('/')
            .fold(ROOT_INO, |ino, part| fs.lookup(ino, part).unwrap().ino)
    };
    let counts = || {
        let s = other.queue("q").unwrap().status(false).unwrap();
        (s.waiting, s.in_flight)
    };

    let fh = fs.open(path_ino("q/in"), Access::Write, 666).unwrap();
    fs.write(fh, 0, b"half a mess").unwrap();
    fs.flush(fh, 666).unwrap();
    fs.release(fh).unwrap();
    assert_eq!(
        counts(),
        (0, 0),
        "a killed writer's bytes are not a message"
    );

    other
        .queue("q")
        .unwrap()
        .publish("whole".into(), &PublishOptions::default())
        .unwrap();
    let fh = fs.open(path_ino("q/next"), Access::Read, 666).unwrap();
    assert_eq!(fs.read(fh, 0, 4096, 666).unwrap(), b"whole");
    assert!(fs.read(fh, 5, 4096, 666).unwrap().is_empty());
    fs.flush(fh, 666).unwrap();
    fs.release(fh).unwrap();
    assert_eq!(
        counts(),
        (1, 0),
        "a reader killed before it used the message gives it back"
    );

    let fh = fs.open(path_ino("q/next"), Access::Read, 7).unwrap();
    assert_eq!(fs.read(fh, 0, 4096, 7).unwrap(), b"whole");
    fs.flush(fh, 7).unwrap();
    fs.release(fh).unwrap();
    assert_eq!(counts(), (0, 0), "a reader that closed normally acks it");
}

mod bodies;
mod closing;
mod listing;
mod teams;
