//! The mount as a team uses it: a daemon run by root with `-o allow_other`, a queue shared by a
//! group whose members do not own it (the recipe of doc/SECURITY.md), and the programs people
//! already use: copy tools, rsync, tar and du, readers slower than the lease. Each test makes
//! its own group and users and runs their commands with setpriv, as an unprivileged member of
//! the queue's group (or an outsider). These tests need root (CI runs as root).

mod mount_support;

use ddmq::engine::{Broker, PublishOptions, Queue};
use mount_support::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A root shared by a group: ROOT, ROOT/q and ROOT/q/work owned by root and the group with the
/// setgid bit, the settings files root's and the group's, mode 0664; mounted at `mnt`.
struct Team {
    accounts: Accounts,
    dir: tempfile::TempDir,
    root: PathBuf,
    mnt: PathBuf,
}

impl Team {
    /// Directories 2770: members may do everything, others nothing.
    fn new() -> Team {
        Team::with_dir_mode(0o2770)
    }

    fn with_dir_mode(mode: u32) -> Team {
        let accounts = Accounts::new();
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let root = dir.path().join("root");
        Broker::open_or_init(&root)
            .unwrap()
            .create_queue("q")
            .unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let team = Team {
            accounts,
            dir,
            root,
            mnt,
        };
        team.share(mode);
        team
    }

    /// Gives the root to the group, directories with `mode`, settings files 0664.
    fn share(&self, mode: u32) {
        let gid = self.accounts.gid();
        for d in [
            self.root.clone(),
            self.root.join("q"),
            self.root.join("q/work"),
        ] {
            std::os::unix::fs::chown(&d, Some(0), Some(gid)).unwrap();
            chmod(&d, mode);
        }
        for f in [self.root.join("ddmq.yaml"), self.root.join("q/ddmq.yaml")] {
            if f.exists() {
                std::os::unix::fs::chown(&f, Some(0), Some(gid)).unwrap();
                chmod(&f, 0o664);
            }
        }
    }

    /// Sets the queue's settings (as root, then shared again).
    fn settings(&self, yaml: &str) {
        self.queue().write_config_text(yaml.as_bytes()).unwrap();
        self.share(std::fs::metadata(self.root.join("q")).unwrap().mode() & 0o7777);
    }

    /// The daemon, as root, its log in the test's directory.
    fn mount(&self, options: &str) -> Daemon {
        let log = self.dir.path().join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        Daemon::start_logging(&self.root, &self.mnt, options, Some(&log), "info")
    }

    fn queue(&self) -> Arc<Queue> {
        Broker::open(&self.root).unwrap().queue("q").unwrap()
    }

    fn member(&self) -> &str {
        &self.accounts.member
    }

    fn outsider(&self) -> &str {
        &self.accounts.outsider
    }

    /// A shell script as `user`, with $MNT and $TMP (the test's directory) set.
    fn sh(&self, user: &str, script: &str) -> Output {
        self.accounts
            .as_user(user, "sh")
            .args(["-c", script])
            .env("MNT", &self.mnt)
            .env("TMP", self.dir.path())
            .output()
            .unwrap()
    }

    /// A script as `user` that must succeed and print nothing on stderr; returns its stdout.
    fn sh_ok(&self, user: &str, script: &str) -> String {
        let out = self.sh(user, script);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{script}: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Python code as `user`, with `sys.argv[1]` the mountpoint; returns its stdout.
    fn python(&self, user: &str, code: &str) -> String {
        let out = self
            .accounts
            .as_user(user, "python3")
            .args(["-c", code])
            .arg(&self.mnt)
            .env("TMP", self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{code}: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The waiting messages' bodies and the owners of their files, in delivery order.
    fn waiting(&self) -> Vec<(String, u32)> {
        let q = self.queue();
        q.waiting()
            .unwrap()
            .iter()
            .map(|w| {
                let body = q.read_waiting(w).unwrap().unwrap().body_text();
                let owner = std::fs::metadata(q.dir().join(w.to_string()))
                    .unwrap()
                    .uid();
                (body, owner)
            })
            .collect()
    }

    /// Waiting and in flight, as `status` counts them: a message of an open `next` is in flight
    /// under its held name before it has a `work/` name.
    fn counts(&self) -> (usize, usize) {
        let s = self.queue().status(false).unwrap();
        (s.waiting, s.in_flight)
    }

    fn uid(&self, user: &str) -> u32 {
        id_of("-u", user)
    }

    /// The `last_error:` line of the queue's status, as `user` reads it.
    fn last_error(&self, user: &str) -> String {
        let status = self.sh_ok(user, "cat \"$MNT/q/status\"");
        status
            .lines()
            .find_map(|l| l.strip_prefix("last_error: "))
            .unwrap_or("")
            .to_string()
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------ copy tools

#[test]
fn copy_tools_run_by_a_group_member_publish_once_and_succeed() {
    let t = Team::new();
    let _daemon = t.mount("allow_other");
    let src = t.dir.path().join("src.txt");
    std::fs::write(&src, "copied by a member\n").unwrap();
    chmod(&src, 0o644);
    let tools = [
        (
            "install -m 644",
            r#"install -m 644 "$TMP/src.txt" "$MNT/q/in""#,
        ),
        ("cp -p", r#"cp -p "$TMP/src.txt" "$MNT/q/in""#),
        (
            "shutil.copy",
            r#"python3 -c 'import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])' "$TMP/src.txt" "$MNT/q/in""#,
        ),
        (
            "shutil.copy2",
            r#"python3 -c 'import shutil, sys; shutil.copy2(sys.argv[1], sys.argv[2])' "$TMP/src.txt" "$MNT/q/in""#,
        ),
        (
            "rsync --inplace",
            r#"rsync --inplace "$TMP/src.txt" "$MNT/q/in""#,
        ),
        (
            "rsync -a --inplace",
            r#"rsync -a --inplace "$TMP/src.txt" "$MNT/q/in""#,
        ),
    ];
    let member = t.uid(t.member());
    for (n, (tool, script)) in tools.iter().enumerate() {
        let out = t.sh(t.member(), script);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{tool} run by a member: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let waiting = t.waiting();
        assert_eq!(waiting.len(), n + 1, "{tool} publishes exactly once");
        assert_eq!(
            waiting[n],
            ("copied by a member\n".to_string(), member),
            "{tool}: the bytes, in a file of the member's"
        );
    }

    // An outsider may not publish, with any tool; nothing is published.
    for (tool, script) in tools {
        let out = t.sh(t.outsider(), script);
        assert!(!out.status.success(), "{tool} run by an outsider succeeded");
    }
    assert_eq!(
        t.waiting().len(),
        tools.len(),
        "outsiders published nothing"
    );
}

/// Two members publishing with `install` and `cp -p` at the same time: each sets the ACL of
/// the `in` it opened, which the kernel allows only to that inode's owner, so each must have
/// been handed an `in` of its own whatever the other looked up meanwhile.
#[test]
fn two_members_copying_at_once_both_succeed() {
    let t = Team::new();
    let _daemon = t.mount("allow_other");
    std::fs::write(t.dir.path().join("src.txt"), "at once\n").unwrap();
    chmod(&t.dir.path().join("src.txt"), 0o644);
    const ROUNDS: usize = 25;
    let script = format!(
        r#"i=0; while [ $i -lt {ROUNDS} ]; do install -m 644 "$TMP/src.txt" "$MNT/q/in" && cp -p "$TMP/src.txt" "$MNT/q/in" || exit 1; i=$((i+1)); done"#
    );
    let spawn = |user: &str| {
        t.accounts
            .as_user(user, "sh")
            .args(["-c", &script])
            .env("MNT", &t.mnt)
            .env("TMP", t.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(t.member()), spawn(&t.accounts.member2));
    for (who, child) in [("member", a), ("member2", b)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let waiting = t.waiting();
    assert_eq!(waiting.len(), 4 * ROUNDS, "each copy published once");
    let (m1, m2) = (t.uid(t.member()), t.uid(&t.accounts.member2));
    for uid in [m1, m2] {
        assert_eq!(
            waiting.iter().filter(|(_, o)| *o == uid).count(),
            2 * ROUNDS,
            "uid {uid}'s copies are uid {uid}'s"
        );
    }
}

// ------------------------------------------------------------------------------ entry points

/// A writer whose bytes are published at RELEASE: it opens `in` (after removing it, with
/// O_EXCL: a CREATE, when `create`), forks a child, closes its own descriptor, and the child
/// writes after that and exits. Prints "done" once both have closed.
const PUBLISH_AT_RELEASE: &str = r#"
import os, sys
path = sys.argv[1] + "/q/in"
create = sys.argv[2] == "create"
if create:
    os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
else:
    fd = os.open(path, os.O_WRONLY)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    os.read(r, 1)           # the opener has closed
    os.write(fd, b"written after the opener closed")
    os._exit(0)
os.close(r)
os.close(fd)
os.write(w, b"x")
os.close(w)
os.waitpid(pid, 0)
print("done")
"#;

/// Tries to publish through each entry point; prints one line each: `ok` or the errno.
const PUBLISH_EACH_WAY: &str = r#"
import errno, os, sys
m = sys.argv[1]
def opened():
    with open(m + "/q/in", "w") as f:
        f.write("opened")
def created():
    os.unlink(m + "/q/in")
    fd = os.open(m + "/q/in", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"created")
    os.close(fd)
for name, act in [("open", opened), ("create", created)]:
    try:
        act()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
"#;

/// A team whose mount grants everybody everything (`umask=000`), so that only ROOT's own
/// permissions, checked against the identity each request is carried out as, can refuse the
/// outsider (who may read the root, mode 2775, but not write it). Each entry point that
/// publishes, takes or settles a message is tested on it: what the member makes is the
/// member's, and the outsider is refused by ROOT (had the daemon acted as itself, as root, the
/// outsider would have succeeded).
fn team_granted_by_root_alone() -> (Team, Daemon) {
    let t = Team::with_dir_mode(0o2775);
    let daemon = t.mount("allow_other,umask=000");
    (t, daemon)
}

/// Runs PUBLISH_AT_RELEASE as `user`, opening `in` the way `how` says.
fn publish_at_release(t: &Team, user: &str, how: &str) {
    let out = t
        .accounts
        .as_user(user, "python3")
        .args(["-c", PUBLISH_AT_RELEASE])
        .arg(&t.mnt)
        .arg(how)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n", "{out:?}");
}

#[test]
fn open_and_create_of_in_publish_at_flush_as_the_caller() {
    let (t, _daemon) = team_granted_by_root_alone();
    let member = t.uid(t.member());
    assert_eq!(
        t.python(t.member(), PUBLISH_EACH_WAY),
        "open ok\ncreate ok\n"
    );
    assert_eq!(
        t.waiting(),
        [
            ("opened".to_string(), member),
            ("created".to_string(), member)
        ],
        "the files are the member's"
    );
    // The outsider: refused by ROOT at the close (EACCES), both ways; nothing is published.
    assert_eq!(
        t.python(t.outsider(), PUBLISH_EACH_WAY),
        "open EACCES\ncreate EACCES\n"
    );
    assert_eq!(t.waiting().len(), 2, "the outsider published nothing");
}

#[test]
fn what_release_publishes_is_published_as_the_opener() {
    let (t, _daemon) = team_granted_by_root_alone();
    let member = t.uid(t.member());
    let q = t.queue();
    // RELEASE comes without a caller, after OPEN or after CREATE: carried out as the opener.
    for how in ["open", "create"] {
        publish_at_release(&t, t.member(), how);
        wait_until("the publish at release", Duration::from_secs(10), || {
            t.counts().0 == 1
        });
        assert_eq!(
            t.waiting(),
            [("written after the opener closed".to_string(), member)],
            "published at RELEASE after {how}: the member's"
        );
        drain(&q);
    }
    // The outsider's is refused by ROOT: nothing shows to the program, status says why.
    for how in ["open", "create"] {
        // Another error first, so that the refusal waited for below is this round's.
        let out = t.sh(t.member(), "echo no-such-id > \"$MNT/q/ack\"");
        assert!(!out.status.success());
        assert!(t.last_error(t.member()).contains("ack"));
        publish_at_release(&t, t.outsider(), how);
        wait_until("the refusal at release", Duration::from_secs(10), || {
            t.last_error(t.member()).contains("release q/in")
        });
        let last_error = t.last_error(t.member());
        assert!(
            last_error.contains("ermission denied"),
            "{how}: {last_error}"
        );
    }
    assert_eq!(t.counts(), (0, 0), "the outsider published nothing");
}

#[test]
fn next_is_taken_and_acked_at_flush_as_the_caller() {
    let (t, _daemon) = team_granted_by_root_alone();
    let q = t.queue();
    q.publish(serde_json::json!("to take"), &PublishOptions::default())
        .unwrap();
    let out = t.sh(t.outsider(), "cat \"$MNT/q/next\"");
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(t.counts(), (1, 0), "the outsider took nothing");
    assert_eq!(t.sh_ok(t.member(), "cat \"$MNT/q/next\""), "to take");
    assert_eq!(t.counts(), (0, 0), "taken and acked by the member");
}

#[test]
fn ack_nack_and_rm_settle_as_the_caller() {
    let (t, _daemon) = team_granted_by_root_alone();
    let member = t.uid(t.member());
    let q = t.queue();
    for settle in ["ack", "nack", "rm"] {
        q.publish(serde_json::json!(settle), &PublishOptions::default())
            .unwrap();
        let script = match settle {
            "rm" => "rm \"$MNT/q/work/$ID\"".to_string(),
            file => format!("echo \"$ID\" > \"$MNT/q/{file}\""),
        };
        let claimed = t.sh_ok(t.member(), "head -1 \"$MNT/q/claim\"");
        let record: serde_json::Value = serde_json::from_str(&claimed).unwrap();
        let id = record["id"].as_str().unwrap().to_string();
        assert_eq!(t.counts(), (0, 1), "{settle}: claimed");
        let run = |user: &str| {
            t.accounts
                .as_user(user, "sh")
                .args(["-c", &script])
                .env("MNT", &t.mnt)
                .env("ID", &id)
                .output()
                .unwrap()
        };
        let out = run(t.outsider());
        assert!(!out.status.success(), "{settle} by the outsider: {out:?}");
        assert_eq!(
            t.counts(),
            (0, 1),
            "{settle} by the outsider changed nothing"
        );
        let out = run(t.member());
        assert!(out.status.success(), "{settle} by the member: {out:?}");
        assert_eq!(t.counts().1, 0, "{settle} by the member settled it");
        if settle == "nack" {
            assert_eq!(
                t.waiting(),
                [("nack".to_string(), member)],
                "the requeued file is the member's"
            );
            drain(&q);
        }
    }
    assert_eq!(t.counts(), (0, 0));
}

/// Takes and acks every waiting message (as root, directly).
fn drain(q: &Queue) {
    for d in q.consume(1000, &Default::default()).unwrap() {
        q.ack(&d.work_name.to_string()).unwrap();
    }
}

// ------------------------------------------------------------------------------ sizes

/// Each file of `dir` (a copy), by name.
fn files_in(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn messages_and_work_show_each_body_s_length_and_rsync_tar_and_du_copy_them_whole() {
    let t = Team::new();
    let _daemon = t.mount("allow_other");
    let q = t.queue();
    // Bodies whose length differs from their JSON's: escapes, multi-byte characters, a body
    // that is not a string, a large one.
    t.sh_ok(t.member(), "printf 'hello\\n' > \"$MNT/q/in\"");
    t.python(
        t.member(),
        "import sys; open(sys.argv[1] + '/q/in', 'w').write('quote \" back \\\\ tab \\t ünïcødé ✓ \\x01\\n')",
    );
    q.publish(
        serde_json::json!({"a": [1, 2.5, "x"], "b": null}),
        &PublishOptions::default(),
    )
    .unwrap();
    t.sh_ok(
        t.member(),
        "head -c 300000 /dev/zero | tr '\\0' 'y' > \"$MNT/q/in\"",
    );
    let bodies: std::collections::BTreeMap<String, Vec<u8>> = q
        .waiting()
        .unwrap()
        .iter()
        .map(|w| {
            let m = q.read_waiting(w).unwrap().unwrap();
            (w.id.to_string(), m.body_text().into_bytes())
        })
        .collect();
    assert_eq!(bodies.len(), 4);

    // stat's size is the body's length, the size of what reading gives.
    let sizes = t.python(
        t.member(),
        r#"
import os, sys
d = sys.argv[1] + "/q/messages"
for name in sorted(os.listdir(d)):
    st = os.stat(os.path.join(d, name))
    with open(os.path.join(d, name), "rb") as f:
        print(name, st.st_size, len(f.read()), st.st_blocks > 0)
"#,
    );
    for line in sizes.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let want = bodies[f[0]].len().to_string();
        assert_eq!(f[1..], [want.as_str(), want.as_str(), "True"], "{line}");
    }

    // rsync -a, tar and du, run by a member, copy every byte.
    let copies = t.dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    std::os::unix::fs::chown(&copies, Some(t.uid(t.member())), None).unwrap();
    t.sh_ok(
        t.member(),
        "rsync -a \"$MNT/q/messages/\" \"$TMP/copies/rsync/\" && mkdir \"$TMP/copies/tar\" && \
         tar -C \"$MNT/q/messages\" -cf - . | tar -C \"$TMP/copies/tar\" -xf -",
    );
    assert_eq!(files_in(&copies.join("rsync")), bodies, "rsync -a");
    assert_eq!(files_in(&copies.join("tar")), bodies, "tar");
    let du = t.sh_ok(t.member(), "du -sb \"$MNT/q/messages\"");
    let total: usize = bodies.values().map(Vec::len).sum();
    assert_eq!(
        du.split_whitespace().next(),
        Some(total.to_string().as_str()),
        "du -b"
    );
    assert_eq!(t.counts(), (4, 0), "copying took nothing");

    // work/: a claimed message shows its body's length too, and copies whole.
    let record = t.sh_ok(t.member(), "head -1 \"$MNT/q/claim\"");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    let id = record["id"].as_str().unwrap();
    t.sh_ok(
        t.member(),
        "rsync -a \"$MNT/q/work/\" \"$TMP/copies/work/\"",
    );
    let copied = files_in(&copies.join("work"));
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[id], bodies[id], "rsync -a of work/");
    let size = t.sh_ok(t.member(), &format!("stat -c %s \"$MNT/q/work/{id}\""));
    assert_eq!(size.trim(), bodies[id].len().to_string());
}

// ------------------------------------------------------------------------------ ddmq.yaml

fn mode_group_owner(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap();
    (m.mode() & 0o7777, m.gid(), m.uid())
}

#[test]
fn ddmq_yaml_keeps_its_mode_and_group_when_rewritten_through_the_mount_and_by_housekeeping() {
    let t = Team::new();
    let _daemon = t.mount("allow_other");
    let file = t.root.join("q/ddmq.yaml");
    let gid = t.accounts.gid();
    let (member, member2) = (t.uid(t.member()), t.uid(&t.accounts.member2));
    assert_eq!(mode_group_owner(&file), (0o664, gid, 0));

    // A member edits it through the mount: it stays 0664 and the group's; the owner is now the
    // member (who may not give a file to root).
    t.sh_ok(
        t.member(),
        "echo 'message_timeout: 77' >> \"$MNT/q/ddmq.yaml\"",
    );
    assert_eq!(mode_group_owner(&file), (0o664, gid, member));
    // So another member may still edit it.
    t.sh_ok(
        &t.accounts.member2,
        "echo 'priority: 3' >> \"$MNT/q/ddmq.yaml\"",
    );
    assert_eq!(mode_group_owner(&file), (0o664, gid, member2));
    let settings = t.queue().settings().unwrap();
    assert_eq!((settings.message_timeout, settings.priority), (77, 3));

    // Housekeeping run by root (it records when it ran in the file) keeps mode, group and
    // owner alike.
    let out = Command::new(DDMQ)
        .arg("clean")
        .arg(&t.root)
        .arg("q")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_ne!(t.queue().settings().unwrap().cleaned, 0, "housekeeping ran");
    assert_eq!(mode_group_owner(&file), (0o664, gid, member2));
    t.sh_ok(t.member(), "echo 'requeue_prio: 1' >> \"$MNT/q/ddmq.yaml\"");
    assert_eq!(t.queue().settings().unwrap().requeue_prio, 1);
}

// ------------------------------------------------------------------------------ leases

/// Holds one file of the mount open: opens argv[1], prints "open", waits for a line on stdin,
/// reads to the end, closes, and prints "closed" or the close's errno, then what it read.
const HOLD: &str = r#"
import errno, os, sys
f = open(sys.argv[1], "rb", buffering=0)
print("open", flush=True)
sys.stdin.readline()
data = f.read()
try:
    f.close()
    print("closed", data.decode(), flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], data.decode(), flush=True)
"#;

struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    /// A member's process holding `path` open.
    fn start(t: &Team, path: &Path) -> Holder {
        let mut child = t
            .accounts
            .as_user(t.member(), "python3")
            .args(["-c", HOLD])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "open\n", "holding {}", path.display());
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    /// Lets it read and close; returns what it printed.
    fn finish(mut self) -> String {
        self.stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        self.child.wait().unwrap();
        line.trim_end().to_string()
    }
}

/// Three member processes hold a message each, open as `next`, as `claim`, and as `work/<id>`
/// of a message claimed before.
fn hold_three(t: &Team) -> (Holder, Holder, Holder, String) {
    let q = t.queue();
    for body in ["for next", "for claim", "for work"] {
        q.publish(serde_json::json!(body), &PublishOptions::default())
            .unwrap();
    }
    let next = Holder::start(t, &t.mnt.join("q/next"));
    let claim = Holder::start(t, &t.mnt.join("q/claim"));
    let record = t.sh_ok(t.member(), "head -1 \"$MNT/q/claim\"");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["message"], "for work");
    let id = record["id"].as_str().unwrap().to_string();
    let work = Holder::start(t, &t.mnt.join("q/work").join(&id));
    assert_eq!(t.counts(), (0, 3));
    (next, claim, work, id)
}

#[test]
fn a_reader_holding_a_message_longer_than_its_timeout_keeps_its_lease() {
    let t = Team::new();
    t.settings("message_timeout: 4\n");
    let _daemon = t.mount("allow_other");
    let (next, claim, work, work_id) = hold_three(&t);

    // Any cleaner requeues what expired; for 2.5 timeouts nothing held may be.
    let q = t.queue();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        q.clean().unwrap();
        assert_eq!(
            t.counts(),
            (0, 3),
            "after {:?}: a held message was requeued",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    assert_eq!(next.finish(), "closed for next");
    let claimed = claim.finish();
    assert!(claimed.starts_with("closed {"), "{claimed}");
    assert!(claimed.contains("\"for claim\""), "{claimed}");
    assert_eq!(work.finish(), "closed for work");
    // next acked at its close; the claimed ones are still in flight, with time left.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let in_flight = q.in_flight().unwrap();
    assert_eq!(in_flight.len(), 2);
    assert!(in_flight.iter().all(|w| w.expiry >= now), "{in_flight:?}");
    let claim_id = in_flight
        .iter()
        .map(|w| w.waiting.id.to_string())
        .find(|id| *id != work_id)
        .unwrap();
    t.sh_ok(
        t.member(),
        &format!("rm \"$MNT/q/work/{claim_id}\" \"$MNT/q/work/{work_id}\""),
    );
    assert_eq!(t.counts(), (0, 0));
    assert_eq!(t.last_error(t.member()), "", "nothing failed");
}

#[test]
fn a_reader_whose_lease_was_lost_anyway_fails_its_close_and_status_says_why() {
    let t = Team::new();
    t.settings("message_timeout: 2\n");
    let daemon = t.mount("allow_other");
    let (next, claim, work, _) = hold_three(&t);

    // The daemon stopped (as an overloaded or suspended host would be): nobody renews, and
    // a cleaner requeues all three once they expire.
    signal(daemon.pid(), libc::SIGSTOP);
    let q = t.queue();
    wait_until("the three to expire", Duration::from_secs(30), || {
        q.clean().unwrap();
        t.counts() == (3, 0)
    });
    signal(daemon.pid(), libc::SIGCONT);

    assert_eq!(next.finish(), "EIO for next");
    let claimed = claim.finish();
    assert!(claimed.starts_with("EIO {"), "{claimed}");
    assert_eq!(work.finish(), "EIO for work");
    let last_error = t.last_error(t.member());
    assert!(last_error.contains("lease"), "{last_error}");
    assert_eq!(t.counts(), (3, 0), "all three are waiting again");
}

// ------------------------------------------------------------------------------ small ones

#[test]
fn umount_of_a_directory_that_is_not_a_mount_says_so() {
    let t = Team::new();
    let plain = t.dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::os::unix::fs::chown(&plain, Some(t.uid(t.member())), None).unwrap();
    // As root (umount2) and as a user (fusermount3).
    let as_root = Command::new(DDMQ)
        .arg("umount")
        .arg(&plain)
        .output()
        .unwrap();
    let as_user = t
        .accounts
        .as_user(t.member(), DDMQ)
        .arg("umount")
        .arg(&plain)
        .output()
        .unwrap();
    for (who, out) in [("root", as_root), ("a user", as_user)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{who}: {stderr}");
        assert!(stderr.contains("is not a mount point"), "{who}: {stderr}");
        assert!(!stderr.contains("os error 22"), "{who}: {stderr}");
    }

    // A mount of another kind is not ddmq's to unmount.
    let tmpfs = t.dir.path().join("tmpfs");
    std::fs::create_dir(&tmpfs).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&tmpfs),
    );
    let out = Command::new(DDMQ)
        .arg("umount")
        .arg(&tmpfs)
        .output()
        .unwrap();
    let still = mounts_at(&tmpfs);
    let _ = Command::new("umount").arg(&tmpfs).output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a ddmq mount"), "{stderr}");
    assert_eq!(still, 1, "the tmpfs stayed mounted");
}

#[test]
fn allow_root_for_a_user_says_once_what_it_needs() {
    let t = Team::new();
    let mnt = t.dir.path().join("users-mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(t.uid(t.member())), None).unwrap();
    let allowed = std::fs::read_to_string("/etc/fuse.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == "user_allow_other");
    let out = t
        .accounts
        .as_user(t.member(), DDMQ)
        .args(["mount", "-o", "allow_root"])
        .arg(&t.root)
        .arg(&mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dev_fuse_for_all = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o006 == 0o006;
    if allowed && !dev_fuse_for_all {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("only root can make FUSE mounts"),
            "{stderr}"
        );
        return;
    }
    if allowed {
        assert!(out.status.success(), "{stderr}");
        t.accounts
            .as_user(t.member(), DDMQ)
            .arg("umount")
            .arg(&mnt)
            .output()
            .unwrap();
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("Error:").count(), 1, "said once: {stderr}");
    assert_eq!(
        stderr.matches("user_allow_other").count(),
        1,
        "said once: {stderr}"
    );
    assert!(stderr.contains("/etc/fuse.conf"), "{stderr}");
    assert_eq!(mounts_at(&mnt), 0);
}

#[test]
fn a_mount_by_a_user_works_or_says_once_why_not() {
    let t = Team::new();
    let mnt = t.dir.path().join("users-mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(t.uid(t.member())), None).unwrap();
    let dev_fuse_for_all = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o006 == 0o006;
    let out = t
        .accounts
        .as_user(t.member(), DDMQ)
        .arg("mount")
        .arg(&t.root)
        .arg(&mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if dev_fuse_for_all {
        assert!(out.status.success(), "{stderr}");
        t.sh_ok(t.member(), &format!("echo mine > {}/q/in", mnt.display()));
        let out = t
            .accounts
            .as_user(t.member(), DDMQ)
            .arg("umount")
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(t.waiting().len(), 1);
        return;
    }
    // A background daemon reports its failure through its parent only: said once.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("Error:").count(), 1, "said once: {stderr}");
    assert!(
        stderr.contains("only root can make FUSE mounts"),
        "{stderr}"
    );
    assert_eq!(mounts_at(&mnt), 0);
}
