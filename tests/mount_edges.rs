//! `ddmq mount` at its edges: a mountpoint that is already mounted, names the tree cannot hold,
//! who may do what through a mount served by root, and listings of deep queues.

mod mount_support;

use ddmq::engine::Broker;
use mount_support::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ddmq(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(DDMQ).args(args).output().unwrap()
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

/// A fresh root with queue `q` and an empty mountpoint beside it.
fn root_and_mountpoint() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    Broker::open_or_init(&root)
        .unwrap()
        .create_queue("q")
        .unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    (dir, root, mnt)
}

#[test]
fn mounting_onto_a_live_mount_is_refused_and_one_umount_clears_it() {
    let (_dir, root, mnt) = root_and_mountpoint();
    let daemon = Daemon::start(&root, &mnt, "");
    for foreground in [false, true] {
        let mut args = vec![std::ffi::OsStr::new("mount")];
        if foreground {
            args.push("-f".as_ref());
        }
        args.extend([root.as_os_str(), mnt.as_os_str()]);
        let out = ddmq(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("already a mount"), "{stderr}");
        assert!(stderr.contains("fuse.ddmq"), "{stderr}");
    }
    assert_eq!(mounts_at(&mnt), 1, "nothing stacked");
    std::fs::write(mnt.join("q/in"), "still served").unwrap();
    let out = ddmq(&["umount".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mounts_at(&mnt), 0, "one umount clears it");
    drop(daemon);
}

#[test]
fn names_that_are_not_utf8_are_absent_and_cannot_be_made() {
    let (_dir, root, mnt) = root_and_mountpoint();
    let _daemon = Daemon::start(&root, &mnt, "");
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
    assert_eq!(errno(std::fs::metadata(mnt.join(bad))), libc::ENOENT);
    assert_eq!(
        errno(std::fs::metadata(mnt.join("q").join(bad))),
        libc::ENOENT
    );
    assert_eq!(errno(std::fs::create_dir(mnt.join(bad))), libc::EINVAL);
    assert_eq!(errno(std::fs::create_dir(mnt.join("café"))), libc::EINVAL);
}

/// Tries each kind of access to queue `q` as `user`: one line each, `ok` or the errno.
fn probe(accounts: &Accounts, user: &str, mnt: &Path) -> String {
    const PROBE: &str = r#"
import errno, os, sys
m = sys.argv[1]
def read(name):
    with open(os.path.join(m, "q", name)) as f:
        return f.read()
def publish():
    with open(os.path.join(m, "q/in"), "w") as f:
        f.write("probe")
def edit():
    with open(os.path.join(m, "q/ddmq.yaml"), "w") as f:
        f.write("message_timeout: 5\n")
for name, act in [("next", lambda: read("next")), ("wait", lambda: read("wait")),
                  ("claim", lambda: read("claim")), ("in", publish),
                  ("messages", lambda: os.listdir(os.path.join(m, "q/messages"))),
                  ("ddmq.yaml", lambda: read("ddmq.yaml")), ("edit ddmq.yaml", edit),
                  ("status", lambda: read("status"))]:
    try:
        act()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
"#;
    let out = accounts
        .as_user(user, "python3")
        .args(["-c", PROBE])
        .arg(mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// (waiting, in flight) and the names of the files in the queue directory.
fn queue_state(root: &Path) -> ((usize, usize), Vec<String>) {
    let q = Broker::open(root).unwrap().queue("q").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(root.join("q"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (
        (q.waiting().unwrap().len(), q.in_flight().unwrap().len()),
        names,
    )
}

const DENIED_ALL: &str = "next EACCES\nwait EACCES\nclaim EACCES\nin EACCES\nmessages EACCES\n\
                          ddmq.yaml EACCES\nedit ddmq.yaml EACCES\nstatus EACCES\n";

#[test]
fn through_a_root_run_mount_each_user_gets_what_root_grants_them() {
    if !is_root() {
        eprintln!("skipped: needs root to make users and to act as them");
        return;
    }
    let accounts = Accounts::new();
    let shared_gid = accounts.gid();
    let (dir, root, mnt) = root_and_mountpoint();
    chmod(dir.path(), 0o755);
    let q = Broker::open(&root).unwrap().queue("q").unwrap();
    q.publish(serde_json::json!("waiting"), &Default::default())
        .unwrap();
    let before = queue_state(&root);

    // A private root (0700, root's own): nobody else gets anything.
    chmod(&root, 0o700);
    let daemon = Daemon::start(&root, &mnt, "allow_other");
    assert_eq!(probe(&accounts, &accounts.outsider, &mnt), DENIED_ALL);
    assert_eq!(probe(&accounts, &accounts.member, &mnt), DENIED_ALL);
    assert_eq!(queue_state(&root), before, "the queue is unchanged");
    drop(daemon);

    // A root others may read (0755) but not write: they may look, not publish nor consume.
    chmod(&root, 0o755);
    let daemon = Daemon::start(&root, &mnt, "allow_other");
    assert_eq!(
        probe(&accounts, &accounts.outsider, &mnt),
        "next EACCES\nwait EACCES\nclaim EACCES\nin EACCES\nmessages ok\nddmq.yaml ok\n\
         edit ddmq.yaml EACCES\nstatus ok\n"
    );
    assert_eq!(queue_state(&root), before, "the queue is unchanged");
    drop(daemon);

    // A group-shared root (2770): members publish and consume, outsiders get nothing.
    for path in [root.clone(), root.join("q"), root.join("q/work")] {
        std::os::unix::fs::chown(&path, None, Some(shared_gid)).unwrap();
        chmod(&path, 0o2770);
    }
    for file in ["q/ddmq.yaml", "ddmq.yaml"] {
        let file = root.join(file);
        if file.exists() {
            std::os::unix::fs::chown(&file, None, Some(shared_gid)).unwrap();
            chmod(&file, 0o660);
        }
    }
    let _daemon = Daemon::start(&root, &mnt, "allow_other");
    assert_eq!(probe(&accounts, &accounts.outsider, &mnt), DENIED_ALL);
    assert_eq!(queue_state(&root), before, "the queue is unchanged");

    // A small body (kept in memory until close) and a large one (spilled to a file as written).
    let out = accounts.sh(
        &accounts.member,
        "printf mine > \"$MNT/q/in\" && head -c 200000 /dev/zero | tr '\\0' x > \"$MNT/q/in\"",
        &mnt,
    );
    assert!(out.status.success(), "{out:?}");
    let member_uid = id_of("-u", &accounts.member);
    let q = Broker::open(&root).unwrap().queue("q").unwrap();
    let owners: Vec<(u32, u32)> = q
        .waiting()
        .unwrap()
        .iter()
        .map(|w| {
            let m = std::fs::metadata(root.join("q").join(w.to_string())).unwrap();
            (m.uid(), m.gid())
        })
        .collect();
    assert_eq!(
        owners,
        [(0, 0), (member_uid, shared_gid), (member_uid, shared_gid)],
        "the member's message file is theirs"
    );
    let out = accounts.sh(
        &accounts.member,
        "cat \"$MNT/q/next\"; echo; cat \"$MNT/q/next\"; echo; cat \"$MNT/q/next\" | wc -c",
        &mnt,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "waiting\nmine\n200000\n"
    );
    assert_eq!(queue_state(&root).0, (0, 0), "all consumed and acked");
}

/// How many requests of the operation `op` (as fuser names it: LOOKUP, READDIRPLUS, ...) the
/// daemon logged.
fn requests(log: &Path, op: &str) -> usize {
    let pattern = format!(" {op} ");
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&pattern))
        .count()
}

#[test]
fn ls_l_of_a_deep_queue_gets_attributes_with_the_listing_not_a_lookup_per_entry() {
    const WAITING: usize = 20_000;
    let (dir, root, mnt) = root_and_mountpoint();
    let q = Broker::open(&root).unwrap().queue("q").unwrap();
    let ids: Vec<String> = (0..WAITING)
        .map(|i| {
            q.publish(serde_json::json!(i), &Default::default())
                .unwrap()
                .id
        })
        .collect();
    let log = dir.path().join("requests.log");
    let daemon = Daemon::start_with_request_log(&root, &mnt, &log);
    let messages = mnt.join("q/messages");
    // Looked up before the listing starts, so that every LOOKUP counted below is ls's.
    assert!(std::fs::metadata(&messages).unwrap().is_dir());
    let before = requests(&log, "LOOKUP");

    let out = Command::new("ls")
        .arg("-l")
        .arg(&messages)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with("total"))
        .collect();
    assert_eq!(lines.len(), WAITING);
    // Every entry stat'ed: a failed stat shows as "-?????????".
    assert!(lines.iter().all(|l| l.starts_with("-r")), "{}", lines[0]);

    let lookups = requests(&log, "LOOKUP") - before;
    let plus = requests(&log, "READDIRPLUS");
    assert!(
        plus > 0,
        "no READDIRPLUS logged: is the request log's format still fuser's?"
    );
    assert!(
        lookups < WAITING / 100,
        "{lookups} LOOKUPs for {WAITING} entries ({plus} READDIRPLUS)"
    );

    // Entries handed out with the listing are the kernel's like looked-up ones: what is still
    // waiting can be read, and what another client took since answers ENOENT.
    let taken = q.consume(3, &Default::default()).unwrap();
    for d in &taken {
        let name = d.message.id.to_string();
        assert_eq!(errno(std::fs::read(messages.join(&name))), libc::ENOENT);
    }
    assert_eq!(
        std::fs::read_to_string(messages.join(&ids[3])).unwrap(),
        "3"
    );
    assert_eq!(
        std::fs::read_to_string(messages.join(&ids[WAITING - 1])).unwrap(),
        (WAITING - 1).to_string()
    );
    drop(daemon);
}
