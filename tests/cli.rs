//! The `ddmq` command line, run as a real process on temporary roots: every subcommand, output
//! format and exit-code class, the additions (stdin and bulk publish, consume --ack / --wait), the
//! json command, hostile names, and one test per 0.9.10 bug fixed at the CLI level.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    fn code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

fn ddmq_cmd(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddmq"));
    c.env_remove("RUST_LOG").current_dir(cwd);
    c
}

fn finish(c: &mut Command, input: Option<&[u8]>) -> Out {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = c.spawn().expect("run ddmq");
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(bytes).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().expect("ddmq was killed by a signal"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A sandbox: `<tmp>/R` is the root, `<tmp>/cwd` the working directory of every run, and
/// `<tmp>/outside/victim` a file that no command may ever touch.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("cwd")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/victim"), "precious").unwrap();
        Sandbox { dir }
    }

    /// A sandbox with an initialised root and queue `q`.
    fn with_queue() -> Sandbox {
        let s = Sandbox::new();
        s.run(&["create", "-f", "-s", &s.root(), "q"]).ok();
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> String {
        self.path().join("R").to_string_lossy().into_owned()
    }

    fn q(&self) -> PathBuf {
        self.path().join("R/q")
    }

    fn run(&self, args: &[&str]) -> Out {
        finish(ddmq_cmd(&self.path().join("cwd")).args(args), None)
    }

    fn run_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        finish(ddmq_cmd(&self.path().join("cwd")).args(args), Some(input))
    }

    fn publish(&self, queue: &str, text: &str, extra: &[&str]) {
        let root = self.root();
        let mut args = vec!["publish", "-s"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&root, queue, text]);
        self.run(&args).ok();
    }

    /// Consumes `n` from q as JSON and returns the records.
    fn consume(&self, n: usize) -> Vec<Value> {
        let out = self
            .run(&["consume", "-n", &n.to_string(), &self.root(), "q"])
            .ok();
        if out.stdout.starts_with("No more messages") {
            return Vec::new();
        }
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    fn waiting(&self) -> Vec<String> {
        names_in(&self.q())
    }

    fn in_work(&self) -> Vec<String> {
        names_in(&self.q().join("work"))
    }

    /// Every file outside ROOT with its content (to prove nothing outside ROOT was touched).
    fn outside_root(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut all = BTreeMap::new();
        snapshot(self.path(), &self.path().join("R"), &mut all);
        all
    }
}

fn snapshot(dir: &Path, skip: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p == skip {
            continue;
        }
        if p.is_dir() {
            into.insert(p.clone(), b"<dir>".to_vec());
            snapshot(&p, skip, into);
        } else {
            into.insert(p.clone(), fs::read(&p).unwrap_or_default());
        }
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".ddmq"))
        .collect();
    v.sort();
    v
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Makes an in-flight message look expired (its expiry prefix in the past).
fn expire(s: &Sandbox, work_name: &str) -> String {
    let rest = work_name.split_once('.').unwrap().1;
    let expired = format!("1.{rest}");
    fs::rename(
        s.q().join("work").join(work_name),
        s.q().join("work").join(&expired),
    )
    .unwrap();
    expired
}

fn set_queue_setting(s: &Sandbox, text: &str) {
    fs::write(s.q().join("ddmq.yaml"), text).unwrap();
}

// ------------------------------------------------------------------------------------ top level

#[test]
fn version_help_no_command_and_unknown_command() {
    let s = Sandbox::new();
    let expected = format!("ddmq version {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(s.run(&["-v"]).ok().stdout, expected);
    assert_eq!(s.run(&["--version"]).ok().stdout, expected);
    let help = s.run(&["-h"]).ok().stdout;
    for cmd in [
        "view", "create", "delete", "publish", "consume", "ack", "nack", "del_msg", "purge",
        "clean", "json",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from help:\n{help}");
    }
    let none = s.run(&[]).code(1);
    assert!(none.stderr.contains("Usage"), "{}", none.stderr);
    let unknown = s.run(&["foo", "bar"]).code(1);
    assert!(
        unknown.stderr.starts_with("Unrecognized command: foo\n"),
        "{}",
        unknown.stderr
    );
    assert!(unknown.stderr.contains("Usage"));
    // Sub-command -v means verbose, not version.
    let v = s.run(&["view", "-v", "-f", &s.root()]).ok();
    assert!(!v.stdout.contains("version"));
    s.run(&["publish", "-h"]).ok();
}

#[test]
fn readme_walkthrough_works() {
    let s = Sandbox::new();
    let root = s.root();
    assert_eq!(
        s.run(&["create", "-f", &root, "queue_name"]).ok().stdout,
        "Created new queue: queue_name\n"
    );
    let p = s
        .run(&["publish", &root, "queue_name", "Hello World!"])
        .ok();
    assert!(
        p.stdout.starts_with("Successfully published message:\n\n"),
        "{}",
        p.stdout
    );
    assert!(p.stdout.contains("\nmessage = Hello World!\n"));
    let c = s.run(&["consume", &root, "queue_name"]).ok();
    let m: Value = serde_json::from_str(c.stdout.trim_end()).unwrap();
    assert_eq!(m["message"], "Hello World!");
    let v = s.run(&["view", &root]).ok();
    assert!(
        v.stdout
            .contains("| queue_name |      0       |      1      |"),
        "{}",
        v.stdout
    );
    assert!(
        s.run(&["purge", &root, "queue_name"])
            .ok()
            .stdout
            .starts_with("Purged queue: queue_name\t(0 messages in queue, 1 messages in work)")
    );
    assert_eq!(
        s.run(&["delete", &root, "queue_name"]).ok().stdout,
        "Deleted queue: queue_name\n"
    );
    assert!(!s.path().join("R/queue_name").exists());
}

// ------------------------------------------------------------------------------------ view

#[test]
fn view_every_format() {
    let s = Sandbox::new();
    let root = s.root();
    s.run(&["create", "-f", "-s", &root, "q1,newq"]).ok();
    for i in 0..5 {
        s.publish("q1", &format!("m{i}"), &[]);
    }
    s.publish("newq", "x", &[]);
    let table = s.run(&["view", &root]).ok().stdout;
    let expected = "\
+-------+--------------+-------------+
| queue | msg in queue | msg at work |
+-------+--------------+-------------+
| newq  |      1       |      0      |
+-------+--------------+-------------+
|  q1   |      5       |      0      |
+-------+--------------+-------------+
";
    assert_eq!(table, expected);
    assert_eq!(
        s.run(&["view", "--format", "default", &root]).ok().stdout,
        expected
    );
    assert_eq!(
        s.run(&["view", "--format", "plain", &root]).ok().stdout,
        "| *queue* | *msg in queue* | *msg at work* |\n| newq    | 1              | 0             |\n| q1      | 5              | 0             |\n"
    );
    assert_eq!(
        s.run(&["view", "--format", "json", &root]).ok().stdout,
        "{\"newq\": [1, 0], \"q1\": [5, 0]}\n"
    );
    assert_eq!(
        s.run(&["view", "-n", "--format", "json", &root])
            .ok()
            .stdout,
        "[\"newq\", \"q1\"]\n"
    );
    assert_eq!(
        s.run(&["view", "--format", "yaml", &root]).ok().stdout,
        "newq:\n- 1\n- 0\nq1:\n- 5\n- 0\n"
    );
    assert_eq!(
        s.run(&["view", "-n", "--format", "yaml", &root])
            .ok()
            .stdout,
        "- newq\n- q1\n"
    );
    assert_eq!(
        s.run(&["view", "-n", "--format", "plain", &root])
            .ok()
            .stdout,
        "newq\nq1\n"
    );
    let names = s.run(&["view", "-n", &root]).ok().stdout;
    assert!(
        names.starts_with("+-------+\n| queue |\n") && names.contains("|  q1   |"),
        "{names}"
    );
    // A filter: only the named queues; unknown ones are warned about on stderr.
    let filtered = s.run(&["view", "--format", "json", &root, "q1,nope"]).ok();
    assert_eq!(filtered.stdout, "{\"q1\": [5, 0]}\n");
    assert!(
        filtered
            .stderr
            .contains("Warning: requested queue does not exist (nope)")
    );
    assert!(
        s.run(&["view", "--format", "xml", &root])
            .code(2)
            .stderr
            .contains("xml")
    );
}

#[test]
fn view_of_an_empty_root_still_shows_the_header() {
    let s = Sandbox::new();
    let out = s.run(&["view", "-f", &s.root()]).ok().stdout;
    assert_eq!(
        out,
        "+-------+--------------+-------------+\n| queue | msg in queue | msg at work |\n+-------+--------------+-------------+\n|       |              |             |\n+-------+--------------+-------------+\n"
    );
    assert!(s.path().join("R/ddmq.yaml").is_file());
}

// ------------------------------------------------------------------------------------ create, delete, purge, clean

#[test]
fn create_reports_each_queue() {
    let s = Sandbox::new();
    let root = s.root();
    let out = s
        .run(&["create", "-f", &root, "a,b,bad.name,a"])
        .ok()
        .stdout;
    assert_eq!(
        out,
        "Created new queue: a\nCreated new queue: b\nSkipping bad.name, invalid name\nAlready existing: a\nCreated 2 new queues\n"
    );
    assert_eq!(s.run(&["create", "-s", &root, "c"]).ok().stdout, "");
    assert!(s.path().join("R/c/work").is_dir());
}

#[test]
fn b17_create_advice_is_correct() {
    let s = Sandbox::new();
    let root = s.root();
    s.run(&["view", "-f", &root]).ok();
    fs::create_dir(s.path().join("R/plain_dir")).unwrap();
    fs::write(s.path().join("R/plain_dir/data"), "mine").unwrap();
    let out = s.run(&["create", "-f", &root, "plain_dir"]).ok().stdout;
    assert!(
        out.contains("already exists but is not a ddmq queue"),
        "{out}"
    );
    assert!(
        !out.contains("-f"),
        "the advice must not suggest -f, which cannot help: {out}"
    );
    assert_eq!(
        fs::read_to_string(s.path().join("R/plain_dir/data")).unwrap(),
        "mine"
    );
}

#[test]
fn delete_reports_and_refuses_foreign_files() {
    let s = Sandbox::new();
    let root = s.root();
    s.run(&["create", "-f", "-s", &root, "a,b,c"]).ok();
    s.publish("a", "m", &[]);
    let out = s.run(&["delete", &root, "a,b,zz,x.y"]).ok().stdout;
    assert_eq!(
        out,
        "Deleted queue: a\nDeleted queue: b\nQueue not existing: zz\nSkipping x.y, invalid name\nDeleted 2 queues\n"
    );
    fs::write(s.path().join("R/c/notes.txt"), "keep").unwrap();
    let refused = s.run(&["delete", &root, "c"]).code(1);
    assert!(refused.stderr.contains("notes.txt"), "{}", refused.stderr);
    assert!(
        s.path().join("R/c/ddmq.yaml").is_file() && s.path().join("R/c/work").is_dir(),
        "nothing deleted (0.9.10 deleted half the queue first, B16)"
    );
}

#[test]
fn purge_and_clean_report_each_queue() {
    let s = Sandbox::with_queue();
    let root = s.root();
    s.run(&["create", "-s", &root, "q2"]).ok();
    for i in 0..3 {
        s.publish("q", &format!("m{i}"), &[]);
    }
    s.consume(1);
    let out = s.run(&["purge", &root, "q,q2,zz,b.d"]).ok().stdout;
    let zz = s.path().join("R/zz");
    assert_eq!(
        out,
        format!(
            "Purged queue: q\t(2 messages in queue, 1 messages in work)\nPurged queue: q2\t(0 messages in queue, 0 messages in work)\nQueue does not exist: {}\nSkipping b.d, invalid name\nPurged 2 queues\n",
            zz.display()
        )
    );
    assert!(s.waiting().is_empty() && s.in_work().is_empty());
    // clean requeues an expired message (requeue true by default) at requeue_prio 0.
    s.publish("q", "late", &[]);
    let m = s.consume(1);
    expire(&s, m[0]["filename"].as_str().unwrap());
    let out = s.run(&["clean", &root, "q,q2,zz"]).ok().stdout;
    assert_eq!(
        out,
        format!(
            "Cleaned queue: q\nCleaned queue: q2\nQueue does not exist: {}\nCleaned 2 queues\n",
            zz.display()
        )
    );
    let back = s.waiting();
    assert_eq!(back.len(), 1);
    assert!(back[0].starts_with("0."), "{back:?}");
    assert!(s.in_work().is_empty());
    assert_eq!(s.run(&["clean", "-s", &root, "q"]).ok().stdout, "");
}

// ------------------------------------------------------------------------------------ publish

#[test]
fn publish_prints_the_message_as_python_repr() {
    let s = Sandbox::with_queue();
    let out = s.run(&["publish", &s.root(), "q", "hello"]).ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["Successfully published message:", ""]);
    let keys: Vec<&str> = lines[2..]
        .iter()
        .map(|l| l.split(" = ").next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "filename",
            "id",
            "message",
            "priority",
            "queue",
            "queue_number",
            "requeue",
            "requeue_counter",
            "requeue_limit",
            "timeout"
        ]
    );
    assert!(
        out.contains("\nmessage = hello\npriority = 999\nqueue = q\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "\nrequeue = True\nrequeue_counter = 0\nrequeue_limit = None\ntimeout = None\n"
        ),
        "{out}"
    );
    let name = lines[2].strip_prefix("filename = ").unwrap();
    assert_eq!(s.waiting(), [name]);
    assert!(!name.contains('/'));
}

#[test]
fn publish_options_are_stored() {
    let s = Sandbox::with_queue();
    let root = s.root();
    s.publish(
        "q",
        "a",
        &["-p", "5", "-t", "30", "-l", "2", "--requeue_prio", "7"],
    );
    s.publish("q", "b", &["--no-requeue"]);
    s.publish(
        "q",
        "c",
        &["-r", "--requeue-limit", "3", "--requeue-prio", "0"],
    );
    let got = s.consume(3);
    assert_eq!(
        (got[0]["message"].as_str(), got[0]["priority"].as_u64()),
        (Some("a"), Some(5))
    );
    assert_eq!(
        (
            got[0]["timeout"].as_u64(),
            got[0]["requeue_limit"].as_u64(),
            got[0]["requeue"].as_u64()
        ),
        (Some(30), Some(2), Some(7))
    );
    assert_eq!(got[1]["requeue"], Value::Bool(false));
    assert_eq!(
        (got[2]["requeue"].clone(), got[2]["requeue_limit"].as_u64()),
        (Value::Bool(true), Some(3))
    );
    // --no-requeue cannot be combined with -r.
    s.run(&["publish", "--no-requeue", "-r", &root, "q", "x"])
        .code(2);
}

#[test]
fn b4_priority_zero_is_top_priority() {
    let s = Sandbox::with_queue();
    s.publish("q", "normal", &[]);
    s.publish("q", "urgent", &["-p", "0"]);
    let got = s.consume(2);
    assert_eq!(got[0]["message"], "urgent");
    assert_eq!(got[0]["priority"], 0);
}

#[test]
fn b14_publish_requeue_follows_the_queue_setting() {
    let s = Sandbox::with_queue();
    s.publish("q", "default", &[]);
    set_queue_setting(&s, "cleaned: 0\nrequeue: false\n");
    s.publish("q", "setting false", &[]);
    s.publish("q", "forced", &["-r"]);
    let got = s.consume(3);
    assert_eq!(got[0]["requeue"], Value::Bool(true));
    assert_eq!(got[1]["requeue"], Value::Bool(false));
    assert_eq!(got[2]["requeue"], Value::Bool(true));
}

#[test]
fn publish_to_a_missing_queue_needs_force() {
    let s = Sandbox::with_queue();
    let root = s.root();
    let e = s.run(&["publish", &root, "other", "x"]).code(1);
    assert!(
        e.stderr.contains("does not exist") && e.stderr.contains("-f"),
        "{}",
        e.stderr
    );
    let out = s.run(&["publish", "-f", &root, "other", "x"]).ok().stdout;
    assert!(
        out.starts_with("Created new queue: other\nSuccessfully published message:"),
        "{out}"
    );
    let e = s.run(&["publish", "-f", &root, "bad.name", "x"]).code(1);
    assert!(e.stderr.contains("invalid queue name"), "{}", e.stderr);
    assert!(!s.path().join("R/bad.name").exists());
    // -f also initialises a new root.
    let other_root = s.path().join("R2").to_string_lossy().into_owned();
    s.run(&["publish", "-f", "-s", &other_root, "q", "x"]).ok();
    assert_eq!(names_in(&s.path().join("R2/q")).len(), 1);
}

#[test]
fn publish_reads_stdin_exactly_as_given() {
    let s = Sandbox::with_queue();
    let text = "line one\n  line two with ünïcødé and \"quotes\"\n\n";
    s.run_stdin(&["publish", "-s", &s.root(), "q", "-"], text.as_bytes())
        .ok();
    let got = s.consume(1);
    assert_eq!(got[0]["message"], text);
    let e = s
        .run_stdin(&["publish", &s.root(), "q", "-"], &[0xff, 0xfe])
        .code(1);
    assert!(e.stderr.contains("UTF-8"), "{}", e.stderr);
    assert!(s.waiting().is_empty());
}

#[test]
fn publish_lines_publishes_each_line_in_one_process() {
    let s = Sandbox::with_queue();
    let input: String = (0..150).map(|i| format!("job {i}\n")).collect();
    let out = s
        .run_stdin(
            &["publish", "--lines", &s.root(), "q", "-"],
            input.as_bytes(),
        )
        .ok();
    assert_eq!(out.stdout, "Published 150 messages to q\n");
    let got = s.consume(500);
    assert_eq!(got.len(), 150);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m["message"], format!("job {i}"), "FIFO order");
    }
    // CRLF endings are line endings; a last line without one counts; -s prints nothing.
    let out = s
        .run_stdin(
            &["publish", "--lines", "-s", &s.root(), "q", "-"],
            b"a\r\nb",
        )
        .ok();
    assert_eq!(out.stdout, "");
    let got = s.consume(5);
    assert_eq!(
        (got[0]["message"].as_str(), got[1]["message"].as_str()),
        (Some("a"), Some("b"))
    );
    // --lines needs `-`.
    s.run(&["publish", "--lines", &s.root(), "q", "text"])
        .code(2);
    // One message is "1 message".
    let one = s
        .run_stdin(&["publish", "--lines", &s.root(), "q", "-"], b"solo\n")
        .ok();
    assert_eq!(one.stdout, "Published 1 message to q\n");
    s.consume(5);
}

#[test]
fn publish_lines_stops_at_a_bad_line_and_keeps_what_it_published() {
    let s = Sandbox::with_queue();
    let e = s
        .run_stdin(
            &["publish", "--lines", &s.root(), "q", "-"],
            b"first\n\xff\nthird\n",
        )
        .code(1);
    assert_eq!(
        e.stderr,
        "Error: stopped after publishing 1 message: line 2 is not valid UTF-8 text\n"
    );
    let got = s.consume(5);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["message"], "first");
}

#[test]
fn a_new_root_gets_an_example_with_every_setting() {
    let s = Sandbox::new();
    s.run(&["create", "-f", "-s", &s.root(), "q"]).ok();
    let example = fs::read_to_string(s.path().join("R/ddmq.yaml.example")).unwrap();
    assert_eq!(
        example,
        "cleaned: 0\ndead_letter: false\ndurable: false\nmax_message_bytes: 16777216\nmessage_timeout: 600\npriority: 999\nrequeue: true\nrequeue_prio: 0\n"
    );
    // The root's own settings file stays empty, as the original makes it.
    assert_eq!(fs::read(s.path().join("R/ddmq.yaml")).unwrap(), b"");
}

// ------------------------------------------------------------------------------------ consume

#[test]
fn consume_every_format() {
    let s = Sandbox::with_queue();
    let root = s.root();
    for i in 0..6 {
        s.publish("q", &format!("m{i}"), &[]);
    }
    // json (the default): one Python-style object per line, filename = the work/ name.
    let out = s.run(&["consume", "-n", "2", &root, "q"]).ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("{\"message\": \"m0\", \"queue\": \"q\", \"timeout\": null, \"id\": "),
        "{}",
        lines[0]
    );
    for line in &lines {
        let m: Value = serde_json::from_str(line).unwrap();
        let name = m["filename"].as_str().unwrap();
        assert!(
            s.q().join("work").join(name).is_file(),
            "{name} is the in-flight file"
        );
    }
    assert_eq!(
        s.run(&["consume", "--format", "json", &root, "q"])
            .ok()
            .stdout
            .lines()
            .count(),
        1
    );
    // plain: sorted key = value lines.
    let plain = s
        .run(&["consume", "--format", "plain", &root, "q"])
        .ok()
        .stdout;
    assert!(
        plain.starts_with("filename = ")
            && plain.contains("\nmessage = m3\n")
            && plain.ends_with("timeout = None\n"),
        "{plain}"
    );
    // yaml: several messages form one valid stream, documents separated by ---.
    let yaml = s
        .run(&["consume", "--format", "yaml", "-n", "2", &root, "q"])
        .ok()
        .stdout;
    let docs: Vec<&str> = yaml.split("---\n").collect();
    assert_eq!(docs.len(), 2, "{yaml}");
    assert!(
        docs[0].starts_with("filename: ") && docs[0].contains("\nmessage: m4\n"),
        "{yaml}"
    );
    assert!(
        docs[1].contains("\nmessage: m5\n") && docs[1].contains("\nrequeue: true\n"),
        "{yaml}"
    );
    assert_eq!(s.in_work().len(), 6);
}

#[test]
fn a_missing_queue_is_advised_force_only_by_commands_that_have_it() {
    let s = Sandbox::with_queue();
    let root = s.root();
    for (args, advises) in [
        (vec!["consume", &root, "nope"], true),
        (vec!["publish", &root, "nope", "x"], true),
        (vec!["ack", &root, "nope", "x"], false),
        (vec!["del_msg", &root, "nope", "x"], false),
    ] {
        let e = s.run(&args).code(1);
        assert!(
            e.stderr.contains("does not exist"),
            "{args:?}: {}",
            e.stderr
        );
        assert_eq!(e.stderr.contains("(-f)"), advises, "{args:?}: {}", e.stderr);
    }
}

#[test]
fn consume_from_an_empty_queue_is_a_soft_outcome() {
    let s = Sandbox::with_queue();
    assert_eq!(
        s.run(&["consume", &s.root(), "q"]).ok().stdout,
        "No more messages in q\n"
    );
    let e = s.run(&["consume", &s.root(), "nope"]).code(1);
    assert!(e.stderr.contains("does not exist"), "{}", e.stderr);
}

#[test]
fn b2_consume_without_n_works() {
    let s = Sandbox::with_queue();
    for i in 0..3 {
        s.publish("q", &format!("m{i}"), &[]);
    }
    let out = s.run(&["consume", &s.root(), "q"]).ok().stdout;
    let m: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(m["message"], "m0");
    assert_eq!(s.in_work().len(), 1, "exactly one taken");
    for n in ["0", "1"] {
        let out = s.run(&["consume", "-n", n, &s.root(), "q"]).ok().stdout;
        assert_eq!(out.lines().count(), 1, "-n {n}");
    }
    assert!(s.waiting().is_empty());
}

#[test]
fn b17_consume_force_validates_the_queue_name() {
    let s = Sandbox::new();
    let before = s.outside_root();
    let e = s.run(&["consume", "-f", &s.root(), "../escaped"]).code(1);
    assert!(e.stderr.contains("invalid queue name"), "{}", e.stderr);
    assert_eq!(s.outside_root(), before);
}

#[test]
fn consume_ack_drains_what_it_printed() {
    let s = Sandbox::with_queue();
    for i in 0..3 {
        s.publish("q", &format!("m{i}"), &["-r"]);
    }
    let out = s
        .run(&["consume", "--ack", "-n", "5", &s.root(), "q"])
        .ok()
        .stdout;
    assert_eq!(out.lines().count(), 3);
    assert!(
        s.waiting().is_empty() && s.in_work().is_empty(),
        "printed and acknowledged"
    );
}

#[test]
fn consume_wait_receives_a_message_published_later() {
    let s = Sandbox::with_queue();
    let root = s.root();
    let publisher_cwd = s.path().join("cwd");
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        finish(
            ddmq_cmd(&publisher_cwd).args(["publish", "-s", &root, "q", "late news"]),
            None,
        )
        .ok();
    });
    let out = s
        .run(&["consume", "--wait", "60", "--poll-ms", "5", &s.root(), "q"])
        .ok()
        .stdout;
    publisher.join().unwrap();
    let m: Value = serde_json::from_str(out.trim_end()).expect(&out);
    assert_eq!(m["message"], "late news");
    // Nothing comes: the wait ends with the usual soft outcome.
    assert_eq!(
        s.run(&["consume", "--wait", "0.05", &s.root(), "q"])
            .ok()
            .stdout,
        "No more messages in q\n"
    );
    s.run(&["consume", "--wait", "-1", &s.root(), "q"]).code(2);
}

#[test]
fn consume_gives_messages_back_when_they_cannot_be_printed() {
    // /dev/full (every write fails with ENOSPC) is part of every Linux system: a test that
    // passed without it would check nothing.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full: needed as a stdout that cannot be written");
    let s = Sandbox::with_queue();
    s.publish("q", "keep me", &[]);
    let mut c = ddmq_cmd(&s.path().join("cwd"));
    c.args(["consume", &s.root(), "q"])
        .stdout(full)
        .stderr(Stdio::piped());
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(s.waiting().len(), 1, "the message went back to the queue");
    assert!(s.in_work().is_empty());
}

// ------------------------------------------------------------------------------------ ack, nack, del_msg

#[test]
fn ack_reports_acked_and_failed() {
    let s = Sandbox::with_queue();
    let root = s.root();
    s.publish("q", "a", &[]);
    let m = s.consume(1);
    let name = m[0]["filename"].as_str().unwrap();
    let missing = "1.999.1.ddmqabc";
    let out = s
        .run(&["ack", &root, "q", &format!("{name},{missing}")])
        .ok();
    assert_eq!(
        out.stdout,
        format!("acked {root}/q/work/{name}\nfailed ack {root}/q/work/{missing}\n")
    );
    assert!(
        out.stderr.contains("Warning: message file missing"),
        "{}",
        out.stderr
    );
    assert!(s.in_work().is_empty());
    // A message id works too.
    s.publish("q", "b", &[]);
    let m = s.consume(1);
    let out = s
        .run(&[
            "ack",
            "--skip_cleaning",
            &root,
            "q",
            m[0]["id"].as_str().unwrap(),
        ])
        .ok()
        .stdout;
    assert_eq!(
        out,
        format!(
            "acked {root}/q/work/{}\n",
            m[0]["filename"].as_str().unwrap()
        )
    );
}

#[test]
fn b1_ack_deletes_even_requeue_messages() {
    let s = Sandbox::with_queue();
    s.publish("q", "r", &["-r"]);
    s.publish("q", "rp", &["--requeue_prio", "3"]);
    let got = s.consume(2);
    let names: Vec<&str> = got
        .iter()
        .map(|m| m["filename"].as_str().unwrap())
        .collect();
    s.run(&["ack", &s.root(), "q", &names.join(",")]).ok();
    assert!(
        s.waiting().is_empty() && s.in_work().is_empty(),
        "acked means gone"
    );
}

#[test]
fn ack_with_r_requeues() {
    let s = Sandbox::with_queue();
    s.publish("q", "again", &["--no-requeue"]);
    let m = s.consume(1);
    let out = s
        .run(&[
            "ack",
            "-r",
            &s.root(),
            "q",
            m[0]["filename"].as_str().unwrap(),
        ])
        .ok()
        .stdout;
    assert!(out.starts_with("acked "), "{out}");
    let again = s.consume(1);
    assert_eq!(
        (
            again[0]["message"].as_str(),
            again[0]["requeue_counter"].as_u64()
        ),
        (Some("again"), Some(1))
    );
}

#[test]
fn b6_nack_honours_message_requeue() {
    let s = Sandbox::with_queue();
    let root = s.root();
    s.publish("q", "requeue me", &["-r"]);
    s.publish("q", "drop me", &["--no-requeue"]);
    s.publish("q", "force me", &["--no-requeue"]);
    let got = s.consume(3);
    let name = |i: usize| got[i]["filename"].as_str().unwrap().to_string();
    let out = s
        .run(&["nack", &root, "q", &format!("{},{}", name(0), name(1))])
        .ok()
        .stdout;
    assert_eq!(
        out,
        format!(
            "nacked {root}/q/work/{}\nnacked {root}/q/work/{}\n",
            name(0),
            name(1)
        )
    );
    assert_eq!(
        s.in_work(),
        [name(2)],
        "nacked messages never stay in work/"
    );
    let back = s.consume(5);
    assert_eq!(back.len(), 1);
    assert_eq!(
        (
            back[0]["message"].as_str(),
            back[0]["requeue_counter"].as_u64(),
            back[0]["priority"].as_u64()
        ),
        (Some("requeue me"), Some(1), Some(0))
    );
    // -r forces a requeue of a message that says drop.
    s.run(&["nack", "-r", "-C", &root, "q", &name(2)]).ok();
    let forced = s.consume(5);
    assert_eq!(forced.len(), 1);
    assert_eq!(forced[0]["message"], "force me");
    // Missing: a soft outcome.
    let out = s.run(&["nack", &root, "q", &name(2)]).ok().stdout;
    assert_eq!(out, format!("failed nack {root}/q/work/{}\n", name(2)));
}

#[test]
fn b5_nack_respects_the_requeue_limit() {
    let s = Sandbox::with_queue();
    s.publish("q", "limited", &["-r", "-l", "1"]);
    let first = s.consume(1);
    s.run(&[
        "nack",
        &s.root(),
        "q",
        first[0]["filename"].as_str().unwrap(),
    ])
    .ok();
    let second = s.consume(1);
    assert_eq!(second[0]["requeue_counter"], 1);
    s.run(&[
        "nack",
        &s.root(),
        "q",
        second[0]["filename"].as_str().unwrap(),
    ])
    .ok();
    assert!(
        s.waiting().is_empty() && s.in_work().is_empty(),
        "the limit is reached: dropped"
    );
}

#[test]
fn del_msg_deletes_waiting_and_consumed_messages() {
    let s = Sandbox::with_queue();
    let root = s.root();
    for t in ["a", "b", "c"] {
        s.publish("q", t, &[]);
    }
    let consumed = s.consume(1)[0]["filename"].as_str().unwrap().to_string();
    let waiting = s.waiting();
    let out = s
        .run(&["del_msg", &root, "q", &format!("{consumed},{}", waiting[0])])
        .ok()
        .stdout;
    assert_eq!(
        out,
        format!(
            "Deleted {root}/q/work/{consumed}\nDeleted {root}/q/{}\nDeleted 2 messages\n",
            waiting[0]
        )
    );
    assert_eq!(s.waiting(), [waiting[1].clone()]);
    assert!(s.in_work().is_empty());
    let out = s
        .run(&["del-msg", "--skip-cleaning", &root, "q", &waiting[0]])
        .ok()
        .stdout;
    assert_eq!(
        out,
        format!("Skipping {root}/q/{}, file does not exists\n", waiting[0])
    );
    assert_eq!(
        s.run(&["del_msg", "-s", &root, "q", &waiting[1]])
            .ok()
            .stdout,
        ""
    );
    assert!(s.waiting().is_empty());
}

#[test]
fn del_msg_accepts_message_ids() {
    let s = Sandbox::with_queue();
    let root = s.root();
    for t in ["a", "b", "c"] {
        s.publish("q", t, &[]);
    }
    let consumed = s.consume(1).remove(0);
    let work_name = consumed["filename"].as_str().unwrap().to_string();
    let waiting = s.waiting();
    let waiting_id = waiting[0].rsplit("ddmq").next().unwrap().to_string();
    let consumed_id = consumed["id"].as_str().unwrap().to_string();
    let unknown_id = "0123456789abcdef0123456789abcdef";
    let out = s
        .run(&[
            "del_msg",
            &root,
            "q",
            &format!("{consumed_id},{waiting_id},{unknown_id}"),
        ])
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "Deleted {root}/q/work/{work_name}\nDeleted {root}/q/{}\nSkipping {unknown_id}, no message with this id in {root}/q\nDeleted 2 messages\n",
            waiting[0]
        )
    );
    assert_eq!(s.waiting(), [waiting[1].clone()]);
    assert!(s.in_work().is_empty());
    // Neither a name nor an id: an error whose hint names both.
    let e = s.run(&["del_msg", &root, "q", "not-an-id"]).code(1);
    assert!(e.stderr.contains("or the message id"), "{}", e.stderr);
}

// ------------------------------------------------------------------------------------ exit codes, flags, logging

#[test]
fn exit_code_classes() {
    let s = Sandbox::with_queue();
    let root = s.root();
    // 0: success and soft outcomes.
    assert!(
        s.run(&["create", &root, "q"])
            .ok()
            .stdout
            .contains("Already existing: q")
    );
    assert!(
        s.run(&["delete", &root, "nope"])
            .ok()
            .stdout
            .contains("Queue not existing: nope")
    );
    assert!(
        s.run(&["ack", &root, "q", "1.2.3.ddmqab"])
            .ok()
            .stdout
            .contains("failed ack")
    );
    assert!(
        s.run(&["consume", &root, "q"])
            .ok()
            .stdout
            .contains("No more messages in q")
    );
    // 1: errors, one line on stderr.
    for args in [
        vec!["publish", root.as_str(), "nope", "x"],
        vec!["view", "/nonexistent/ddmq/root"],
        vec!["ack", root.as_str(), "q", "../x"],
    ] {
        let e = s.run(&args).code(1);
        assert!(
            e.stderr.contains("Error: ") || e.stderr.contains("does not exist"),
            "{args:?}: {}",
            e.stderr
        );
    }
    // 2: usage errors.
    for args in [
        vec!["publish", "-p", "-3", root.as_str(), "q", "x"],
        vec!["publish", "-p", "high", root.as_str(), "q", "x"],
        vec!["consume", "-n", "-1", root.as_str(), "q"],
        vec!["consume", "-n", "many", root.as_str(), "q"],
        vec!["publish", root.as_str(), "q"],
        vec!["view"],
        vec!["publish", "-t", "1.5", root.as_str(), "q", "x"],
    ] {
        s.run(&args).code(2);
    }
    assert!(s.waiting().is_empty(), "no usage error published anything");
}

#[test]
fn skip_cleaning_has_both_spellings_everywhere() {
    let s = Sandbox::with_queue();
    let root = s.root();
    for flag in ["-C", "--skip-cleaning", "--skip_cleaning"] {
        s.publish("q", "m", &[flag]);
        let m = s.run(&["consume", flag, &root, "q"]).ok().stdout;
        let name = serde_json::from_str::<Value>(m.trim_end()).unwrap()["filename"]
            .as_str()
            .unwrap()
            .to_string();
        s.run(&["nack", flag, &root, "q", &name]).ok();
        let m = s.consume(1);
        s.run(&["ack", flag, &root, "q", m[0]["filename"].as_str().unwrap()])
            .ok();
        s.publish("q", "m", &[]);
        let w = s.waiting();
        s.run(&["del_msg", flag, &root, "q", &w[0]]).ok();
    }
    assert!(s.waiting().is_empty() && s.in_work().is_empty());
}

#[test]
fn b8_publish_skip_cleaning_is_not_inverted() {
    let s = Sandbox::with_queue();
    s.publish("q", "expiring", &["-C"]);
    let m = s.consume(1);
    let expired = expire(&s, m[0]["filename"].as_str().unwrap());
    set_queue_setting(&s, "cleaned: 0\n");
    s.publish("q", "with -C", &["-C"]);
    assert_eq!(s.in_work(), [expired], "-C: no cleaning");
    assert_eq!(
        fs::read_to_string(s.q().join("ddmq.yaml")).unwrap(),
        "cleaned: 0\n"
    );
    s.publish("q", "default", &[]);
    assert!(
        s.in_work().is_empty(),
        "publish cleans by default: the expired message was requeued"
    );
    assert_eq!(s.waiting().len(), 3);
    assert!(
        !fs::read_to_string(s.q().join("ddmq.yaml"))
            .unwrap()
            .contains("cleaned: 0\n")
    );
}

#[test]
fn verbose_debug_and_rust_log_go_to_stderr() {
    let s = Sandbox::with_queue();
    let quiet = s.run(&["publish", "-C", "-s", &s.root(), "q", "x"]).ok();
    assert_eq!(quiet.stderr, "");
    let verbose = s
        .run(&["publish", "-C", "-s", "-v", &s.root(), "q", "x"])
        .ok();
    assert!(
        verbose.stderr.contains("INFO:\tSkipping queue cleaning."),
        "{}",
        verbose.stderr
    );
    assert_eq!(verbose.stdout, "");
    let debug = s
        .run(&[
            "json",
            &format!(
                "{{\"cmd\": \"view\", \"root\": \"{}\", \"d\": true}}",
                s.root()
            ),
        ])
        .ok();
    assert!(
        debug.stderr.contains("DEBUG:\tjson payload runs"),
        "{}",
        debug.stderr
    );
    let mut c = ddmq_cmd(&s.path().join("cwd"));
    c.env("RUST_LOG", "info")
        .args(["publish", "-C", "-s", &s.root(), "q", "x"]);
    assert!(finish(&mut c, None).ok().stderr.contains("INFO:"));
}

#[test]
fn b9_missing_root_is_a_friendly_error() {
    let s = Sandbox::new();
    let missing = s.path().join("missing").to_string_lossy().into_owned();
    let uninit = s.path().join("uninit");
    fs::create_dir(&uninit).unwrap();
    let uninit = uninit.to_string_lossy().into_owned();
    for root in [&missing, &uninit] {
        let runs: Vec<Vec<&str>> = vec![
            vec!["view", root],
            vec!["create", root, "q"],
            vec!["delete", root, "q"],
            vec!["publish", root, "q", "m"],
            vec!["consume", root, "q"],
            vec!["ack", root, "q", "1.2.3.ddmqab"],
            vec!["nack", root, "q", "1.2.3.ddmqab"],
            vec!["del_msg", root, "q", "1.2.ddmqab"],
            vec!["purge", root, "q"],
            vec!["clean", root, "q"],
        ];
        for args in runs {
            let e = s.run(&args).code(1);
            let first = e.stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with("Error: root folder "),
                "{args:?}: {}",
                e.stderr
            );
            assert!(first.contains(root.as_str()));
            assert_eq!(
                e.stderr.lines().count(),
                1,
                "one line, no traceback: {}",
                e.stderr
            );
            let has_force = !matches!(args[0], "ack" | "nack" | "del_msg");
            assert_eq!(
                first.contains("-f"),
                has_force,
                "advice to use -f only where it exists: {first}"
            );
        }
    }
    assert!(
        !Path::new(&missing).exists(),
        "nothing was created without -f"
    );
    assert!(!Path::new(&uninit).join("ddmq.yaml").exists());
}

// ------------------------------------------------------------------------------------ json

fn json_run(s: &Sandbox, payload: Value) -> Out {
    s.run(&["json", &payload.to_string()])
}

#[test]
fn b10_json_runs_every_subcommand() {
    use serde_json::json;
    let s = Sandbox::new();
    let root = s.root();
    let out = json_run(
        &s,
        json!({"cmd": "create", "root": root, "queue": ["q", "q2"], "f": true}),
    )
    .ok()
    .stdout;
    assert_eq!(
        out,
        "Created new queue: q\nCreated new queue: q2\nCreated 2 new queues\n"
    );
    let out = json_run(&s, json!({"command": "publish", "root": root, "queue": "q", "message": "hi", "priority": 0, "format": "plain"})).ok().stdout;
    assert!(out.contains("message = hi\npriority = 0\n"), "{out}");
    json_run(&s, json!({"cmd": "publish", "root": root, "queue": "q", "message": "two", "requeue": true, "s": true, "n": false, "timeout": null})).ok();
    json_run(&s, json!({"cmd": "publish", "root": root, "queue": "q", "message": "three", "s": true, "C": true})).ok();
    // The original's json mode defaults to the plain format.
    let out = json_run(&s, json!({"cmd": "view", "root": root}))
        .ok()
        .stdout;
    assert_eq!(
        out,
        "| *queue* | *msg in queue* | *msg at work* |\n| q       | 3              | 0             |\n| q2      | 0              | 0             |\n"
    );
    let out = json_run(
        &s,
        json!({"cmd": "consume", "root": root, "queue": "q", "n": 2, "format": "json"}),
    )
    .ok()
    .stdout;
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["filename"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names.len(), 2);
    let out = json_run(
        &s,
        json!({"cmd": "ack", "root": root, "queue": "q", "msg_files": [names[0]]}),
    )
    .ok()
    .stdout;
    assert!(out.starts_with("acked "), "{out}");
    let out = json_run(
        &s,
        json!({"cmd": "nack", "root": root, "queue": "q", "msg_files": names[1], "requeue": true}),
    )
    .ok()
    .stdout;
    assert!(out.starts_with("nacked "), "{out}");
    let out = json_run(
        &s,
        json!({"cmd": "consume", "root": root, "queue": "q", "n": 1}),
    )
    .ok()
    .stdout;
    assert!(
        out.starts_with("filename = "),
        "plain by default in json mode: {out}"
    );
    let waiting = s.waiting();
    let out = json_run(
        &s,
        json!({"cmd": "del_msg", "root": root, "queue": "q", "message": waiting[0]}),
    )
    .ok()
    .stdout;
    assert!(out.starts_with("Deleted "), "{out}");
    assert!(
        json_run(&s, json!({"cmd": "clean", "root": root, "queue": "q"}))
            .ok()
            .stdout
            .starts_with("Cleaned queue: q")
    );
    assert!(
        json_run(&s, json!({"cmd": "purge", "root": root, "queue": "q"}))
            .ok()
            .stdout
            .starts_with("Purged queue: q")
    );
    assert_eq!(
        json_run(&s, json!({"cmd": "delete", "root": root, "queue": "q2"}))
            .ok()
            .stdout,
        "Deleted queue: q2\n"
    );
    // The full example structure of the original, filled in, works as it is.
    let full = json!({"cmd": "view", "root": root, "queue": null, "message": null, "f": false, "v": false, "d": false, "n": true,
                      "format": "json", "s": false, "priority": null, "timeout": null, "requeue": false, "requeue_prio": null, "skip_cleaning": false});
    assert_eq!(json_run(&s, full).ok().stdout, "[\"q\"]\n");
}

#[test]
fn json_errors_have_the_usual_exit_codes() {
    use serde_json::json;
    let s = Sandbox::with_queue();
    let root = s.root();
    let e = s.run(&["json", "{not json"]).code(1);
    assert!(
        e.stderr
            .starts_with("Error: unable to load the JSON object"),
        "{}",
        e.stderr
    );
    assert!(e.stderr.contains("\"cmd\": null"), "{}", e.stderr);
    assert!(
        json_run(&s, json!({"cmd": "fly", "root": root}))
            .code(1)
            .stderr
            .contains("Unrecognized command: fly")
    );
    json_run(&s, json!({"root": root})).code(2);
    json_run(&s, json!({"cmd": "json", "root": root})).code(1);
    json_run(&s, json!({"cmd": "mount", "root": root})).code(1);
    json_run(
        &s,
        json!({"cmd": "publish", "root": root, "queue": "q", "message": "x", "priority": -1}),
    )
    .code(2);
    json_run(
        &s,
        json!({"cmd": "publish", "root": root, "queue": "q", "message": "x", "bogus": 1}),
    )
    .code(2);
    json_run(
        &s,
        json!({"cmd": "consume", "root": root, "queue": "q", "priority": 3}),
    )
    .code(2);
    json_run(&s, json!({"cmd": "publish", "root": root, "message": "x"})).code(2);
    json_run(
        &s,
        json!({"cmd": "publish", "command": "view", "root": root}),
    )
    .code(2);
    assert!(s.waiting().is_empty());
}

#[test]
fn s2_json_evaluates_nothing() {
    use serde_json::json;
    let s = Sandbox::with_queue();
    let root = s.root();
    let marker = s.path().join("outside/pwned");
    let m = marker.to_string_lossy().into_owned();
    let before = s.outside_root();
    let payloads = [
        json!({"command": format!("__import__('os').system('touch {m}')"), "root": root}),
        json!({"cmd": format!("view; touch {m}"), "root": root}),
        json!({"cmd": "view", "root": format!("$(touch {m})")}),
        json!({"cmd": "publish", "root": root, "queue": "q", "message": format!("`touch {m}`"), "priority": format!("__import__('os').system('touch {m}')")}),
        json!({"cmd": "publish", "root": root, "queue": format!("q; touch {m}"), "message": "x", "f": true}),
    ];
    for p in payloads {
        let out = json_run(&s, p.clone());
        assert_ne!(out.code, 0, "{p}: {}", out.stdout);
        assert!(!out.stderr.contains("panicked"));
    }
    // A message that looks like code is just text.
    json_run(&s, json!({"cmd": "publish", "root": root, "queue": "q", "message": format!("__import__('os').system('touch {m}')"), "s": true})).ok();
    assert!(!marker.exists());
    assert_eq!(s.outside_root(), before);
    assert_eq!(s.waiting().len(), 1);
}

// ------------------------------------------------------------------------------------ hostile names

#[test]
fn b11_silent_does_not_skip_name_validation() {
    let s = Sandbox::new();
    let root = s.root();
    // A queue-looking directory outside ROOT, reachable as ../victimq.
    let victim = s.path().join("victimq");
    fs::create_dir_all(victim.join("work")).unwrap();
    fs::write(victim.join("ddmq.yaml"), "cleaned: 0\n").unwrap();
    fs::write(victim.join("999.1.ddmqabc"), "{\"message\": \"m\"}").unwrap();
    let before = s.outside_root();
    let out = s
        .run(&["create", "-f", "-s", &root, "ok,bad.name,../escaped"])
        .ok();
    assert_eq!(out.stdout, "");
    assert!(s.path().join("R/ok").is_dir());
    assert!(!s.path().join("R/bad.name").exists());
    for cmd in ["delete", "purge", "clean"] {
        s.run(&[cmd, "-s", &root, "../victimq,bad.name"]).ok();
    }
    assert_eq!(s.outside_root(), before);
}

#[test]
fn s1_ack_cannot_delete_outside_root() {
    let s = Sandbox::with_queue();
    let root = s.root();
    let victim = s
        .path()
        .join("outside/victim")
        .to_string_lossy()
        .into_owned();
    // A victim that looks like a message file name, next to work/ and next to ROOT.
    fs::write(s.path().join("R/1.2.3.ddmqab"), "x").unwrap();
    fs::write(s.path().join("cwd/1.2.3.ddmqab"), "x").unwrap();
    fs::write(s.path().join("cwd/1.2.ddmqab"), "x").unwrap();
    let before = s.outside_root();
    let hostile = [
        victim.as_str(),
        "../../../outside/victim",
        "../../1.2.3.ddmqab",
        "../1.2.3.ddmqab",
        "./../../cwd/1.2.ddmqab",
        "work/../../1.2.3.ddmqab",
    ];
    for name in hostile {
        for cmd in ["ack", "nack", "del_msg"] {
            let e = s.run(&[cmd, &root, "q", name]).code(1);
            assert!(
                e.stderr.contains("invalid message file name"),
                "{cmd} {name}: {}",
                e.stderr
            );
        }
        s.run(&["ack", "-r", &root, "q", name]).code(1);
        s.run(&["nack", "-r", &root, "q", name]).code(1);
    }
    assert_eq!(s.outside_root(), before);
    assert!(s.path().join("R/1.2.3.ddmqab").exists());
}

#[test]
fn hostile_queue_names_touch_nothing_outside_root() {
    let s = Sandbox::with_queue();
    let root = s.root();
    let abs = s.path().join("outside/absq").to_string_lossy().into_owned();
    let long = "x".repeat(300);
    let before = s.outside_root();
    let before_root: Vec<_> = fs::read_dir(s.path().join("R"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for name in [
        "../x",
        abs.as_str(),
        "a/b",
        long.as_str(),
        "..",
        ".",
        "",
        "q/../../outside",
    ] {
        for args in [
            vec!["create", "-f", root.as_str(), name],
            vec!["delete", root.as_str(), name],
            vec!["purge", root.as_str(), name],
            vec!["clean", root.as_str(), name],
            vec!["view", root.as_str(), name],
        ] {
            let out = s.run(&args).ok();
            if !name.is_empty() && args[0] != "view" {
                assert!(
                    out.stdout.contains("invalid name"),
                    "{args:?}: {}",
                    out.stdout
                );
            }
        }
        for args in [
            vec!["publish", "-f", root.as_str(), name, "m"],
            vec!["consume", "-f", root.as_str(), name],
            vec!["ack", root.as_str(), name, "1.2.3.ddmqab"],
            vec!["nack", root.as_str(), name, "1.2.3.ddmqab"],
            vec!["del_msg", root.as_str(), name, "1.2.ddmqab"],
        ] {
            let e = s.run(&args).code(1);
            assert!(
                e.stderr.contains("invalid queue name"),
                "{args:?}: {}",
                e.stderr
            );
        }
    }
    assert_eq!(s.outside_root(), before);
    let after_root: Vec<_> = fs::read_dir(s.path().join("R"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after_root, before_root, "nothing new inside ROOT either");
}

#[test]
fn message_files_keep_the_original_format() {
    let s = Sandbox::with_queue();
    s.publish("q", "héllo", &[]);
    let name = &s.waiting()[0];
    let text = fs::read_to_string(s.q().join(name)).unwrap();
    assert!(
        text.starts_with("{\"message\": \"h\\u00e9llo\", \"queue\": \"q\", "),
        "{text}"
    );
    assert!(!text.ends_with('\n'));
    assert_eq!(read_json(&s.q().join(name))["filename"], name.as_str());
}

// ------------------------------------------------------------------------------------ promises of doc/CLI.md

#[test]
fn publish_lines_stops_at_a_line_over_max_message_bytes_and_reads_no_further() {
    let s = Sandbox::with_queue();
    fs::write(
        s.q().join("ddmq.yaml"),
        "cleaned: 0\nmax_message_bytes: 8\n",
    )
    .unwrap();
    let e = s
        .run_stdin(
            &["publish", "--lines", &s.root(), "q", "-"],
            b"short\nfits too\nthis line is too long\nafter\n",
        )
        .code(1);
    assert!(
        e.stderr
            .starts_with("Error: stopped after publishing 2 messages: message of 21 bytes is larger than max_message_bytes (8)"),
        "{}",
        e.stderr
    );
    let bodies: Vec<Value> = s.consume(10).iter().map(|m| m["message"].clone()).collect();
    assert_eq!(
        bodies,
        ["short", "fits too"],
        "the lines before it, and nothing after"
    );
}

#[test]
fn consume_with_force_creates_the_root_and_the_queue() {
    let s = Sandbox::new();
    let out = s.run(&["consume", "-f", &s.root(), "fresh"]).ok();
    assert_eq!(out.stdout, "No more messages in fresh\n");
    assert!(
        s.path().join("R/ddmq.yaml").is_file(),
        "the root is initialised"
    );
    assert!(
        s.path().join("R/fresh/work").is_dir(),
        "the queue is created"
    );
    // Without -f, a missing queue is an error and nothing is created.
    s.run(&["consume", &s.root(), "other"]).code(1);
    assert!(!s.path().join("R/other").exists());
}

/// `durable: true` makes publish fsync: with every fsync failing (libfiu), a durable publish
/// fails naming the fsync and leaves nothing, and a publish without it still succeeds.
#[test]
fn durable_publishes_fsync_and_fail_when_fsync_fails() {
    let s = Sandbox::with_queue();
    let publish_with_failing_fsync = |body: &str| {
        let mut cmd = Command::new("fiu-run");
        cmd.args(["-x", "-c", "enable name=posix/io/sync/*,failinfo=5"])
            .arg(env!("CARGO_BIN_EXE_ddmq"))
            .args(["publish", "-s", &s.root(), "q", body])
            .env_remove("RUST_LOG")
            .current_dir(s.path().join("cwd"));
        cmd.output()
            .expect("fiu-run, which scripts/test installs (Debian package fiu-utils)")
    };
    let out = publish_with_failing_fsync("not durable");
    assert!(out.status.success(), "{out:?}");
    fs::write(s.q().join("ddmq.yaml"), "cleaned: 0\ndurable: true\n").unwrap();
    let out = publish_with_failing_fsync("durable");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("Error: fsync") && stderr.contains("Input/output error"),
        "{stderr}"
    );
    let bodies: Vec<Value> = s.consume(10).iter().map(|m| m["message"].clone()).collect();
    assert_eq!(bodies, ["not durable"]);
    assert!(
        names_in(&s.q()).is_empty()
            && !fs::read_dir(s.q()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")),
        "the failed durable publish left a file"
    );
}

/// A stderr that fails (here /dev/full: every write is ENOSPC) leaves the exit status as it
/// would be: 1 for an error, never a panic's 101.
#[test]
fn a_failing_stderr_never_turns_an_error_into_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ddmq"))
        .args(["publish"])
        .arg(&missing)
        .args(["q", "m"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(full)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}
