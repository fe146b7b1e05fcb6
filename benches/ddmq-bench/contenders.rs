//! The contenders: one way each of publishing N messages and of consuming+acking N messages,
//! all timed the same way (wall time of the work alone, set-up excluded).

use ddmq::engine::{Broker, PublishOptions};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Everything measured. The order is the order of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contender {
    /// The syscalls alone, in Rust: the ceiling.
    Floor,
    /// Our engine as a library, one long-lived `Queue`.
    Engine,
    /// `ddmq publish` / `ddmq consume --ack` as one process per message.
    CliSingle,
    /// `ddmq publish --lines` / `ddmq consume --ack -n N`: one process per batch.
    CliBulk,
    /// A long-lived Rust client of `ddmq mount`: open/write/close `in`, open/read/close `next`.
    Mount,
    /// The same through Python file objects.
    MountPy,
    /// The same Python client against the minimal FUSE file queue with the mount's options
    /// (see fuse_floor.rs): what a FUSE file queue costs.
    FuseQueuePy,
    /// The same Python client against a do-nothing fuser filesystem with the mount's options
    /// (see fuse_floor.rs): what any FUSE filesystem costs.
    FuseFloorPy,
    /// The original ddmq 0.9.10 module with its defaults (clean=True).
    OrigDefaults,
    /// The original with clean=False.
    OrigNoClean,
    /// python-dirq `Queue` (the Directory::Queue port), schema body: binary.
    Dirq,
    /// python-dirq `QueueSimple`.
    DirqSimple,
}

impl Contender {
    pub fn label(self) -> &'static str {
        match self {
            Contender::Floor => "floor (syscalls, Rust)",
            Contender::Engine => "ddmq engine (library)",
            Contender::CliSingle => "ddmq CLI, one process per message",
            Contender::CliBulk => "ddmq CLI bulk (--lines, consume --ack -n)",
            Contender::Mount => "ddmq mount, Rust client",
            Contender::MountPy => "ddmq mount, Python client",
            Contender::FuseQueuePy => "FUSE file queue (minimal fuser fs), Python client",
            Contender::FuseFloorPy => "FUSE floor (do-nothing fuser fs), Python client",
            Contender::OrigDefaults => "original 0.9.10, defaults",
            Contender::OrigNoClean => "original 0.9.10, clean=False",
            Contender::Dirq => "python-dirq Queue",
            Contender::DirqSimple => "python-dirq QueueSimple",
        }
    }

    pub fn needs_cli(self) -> bool {
        matches!(self, Contender::CliSingle | Contender::CliBulk)
    }

    pub fn needs_mount(self) -> bool {
        matches!(self, Contender::Mount | Contender::MountPy)
    }
}

/// Where a contender's queue lives. For the floor and dirq, `root/queue` is a plain directory;
/// for the mount contenders, `root` is the mounted root and `mnt` its mountpoint.
#[derive(Clone, Debug)]
pub struct Place {
    pub root: PathBuf,
    pub queue: String,
    pub mnt: Option<PathBuf>,
    pub durable: bool,
}

impl Place {
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.queue)
    }
    fn mount_file(&self, name: &str) -> io::Result<PathBuf> {
        let mnt = self
            .mnt
            .as_ref()
            .ok_or_else(|| io::Error::other("no mount for this place"))?;
        Ok(mnt.join(&self.queue).join(name))
    }
}

/// The programs the contenders run.
#[derive(Clone, Debug)]
pub struct Tools {
    pub ddmq: PathBuf,
    pub python: PathBuf,
    pub peers: PathBuf,
    /// Run the Python peers on these CPUs only (the fuse-floor part's pinned rounds).
    pub cpus: Option<Vec<usize>>,
}

pub fn body_text(size: usize) -> String {
    "x".repeat(size)
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

fn engine_err(e: ddmq::engine::Error) -> io::Error {
    other(e.to_string())
}

/// Creates the queue (or plain directory) a contender needs, with the durable setting.
pub fn prepare(c: Contender, place: &Place) -> io::Result<()> {
    match c {
        Contender::Floor => fs::create_dir_all(place.dir().join("work")),
        Contender::FuseFloorPy | Contender::FuseQueuePy => Ok(()),
        Contender::Dirq | Contender::DirqSimple => fs::create_dir_all(place.root.clone()),
        Contender::OrigDefaults | Contender::OrigNoClean => fs::create_dir_all(&place.root), // the module initialises it
        _ => {
            let broker = Broker::open_or_init(&place.root).map_err(engine_err)?;
            broker.create_queue(&place.queue).map_err(engine_err)?;
            let q = broker.queue(&place.queue).map_err(engine_err)?;
            let text = if place.durable {
                "cleaned: 0\ndurable: true\n"
            } else {
                "cleaned: 0\n"
            };
            q.write_config_text(text.as_bytes()).map_err(engine_err)
        }
    }
}

/// The bytes the engine writes for a message with this body: what the floor writes too.
pub fn engine_file_bytes(scratch: &Path, size: usize) -> io::Result<Vec<u8>> {
    let broker = Broker::open_or_init(scratch).map_err(engine_err)?;
    broker.create_queue("sample").map_err(engine_err)?;
    let q = broker.queue("sample").map_err(engine_err)?;
    let msg = q
        .publish(Value::String(body_text(size)), &PublishOptions::default())
        .map_err(engine_err)?;
    fs::read(q.dir().join(&msg.filename))
}

/// Publishes `n` messages; returns the time the work took.
pub fn publish(
    c: Contender,
    place: &Place,
    tools: &Tools,
    n: usize,
    size: usize,
    floor_bytes: &[u8],
) -> io::Result<Duration> {
    match c {
        Contender::Floor => floor_publish(&place.dir(), n, floor_bytes, place.durable),
        Contender::Engine => {
            let broker = Broker::open(&place.root).map_err(engine_err)?;
            let q = broker.queue(&place.queue).map_err(engine_err)?;
            let body = Value::String(body_text(size));
            let started = Instant::now();
            for _ in 0..n {
                q.publish(body.clone(), &PublishOptions::default())
                    .map_err(engine_err)?;
            }
            Ok(started.elapsed())
        }
        Contender::CliSingle => {
            let body = body_text(size);
            let started = Instant::now();
            for _ in 0..n {
                cli_publish_one(tools, place, &body)?;
            }
            Ok(started.elapsed())
        }
        Contender::CliBulk => {
            let mut lines = String::with_capacity(n * (size + 1));
            for _ in 0..n {
                lines.push_str(&body_text(size));
                lines.push('\n');
            }
            let started = Instant::now();
            run_with_stdin(
                Command::new(&tools.ddmq)
                    .args(["publish", "-s", "--lines"])
                    .arg(&place.root)
                    .arg(&place.queue)
                    .arg("-"),
                lines.as_bytes(),
            )?;
            Ok(started.elapsed())
        }
        Contender::Mount => {
            let path = place.mount_file("in")?;
            let body = body_text(size);
            let before = count_waiting(&place.dir())?;
            let started = Instant::now();
            for _ in 0..n {
                let mut f = OpenOptions::new().write(true).open(&path)?;
                f.write_all(body.as_bytes())?;
                drop(f); // close publishes
            }
            wait_until_published(&place.dir(), before + n)?;
            Ok(started.elapsed())
        }
        Contender::MountPy | Contender::FuseQueuePy => {
            let mnt = place.mnt.as_ref().ok_or_else(|| other("no mount".into()))?;
            let before = count_waiting(&place.dir())?;
            let (client, _) = peer(
                tools,
                &[
                    "mount-publish".as_ref(),
                    mnt.as_os_str(),
                    place.queue.as_ref(),
                    n.to_string().as_ref(),
                    size.to_string().as_ref(),
                ],
            )?;
            // The client's own time, plus whatever the daemon still had to publish after it.
            Ok(client + wait_until_published(&place.dir(), before + n)?)
        }
        Contender::FuseFloorPy => {
            let mnt = place.mnt.as_ref().ok_or_else(|| other("no floor".into()))?;
            let (n, size) = (n.to_string(), size.to_string());
            let args = [
                "mount-publish".as_ref(),
                mnt.as_os_str(),
                place.queue.as_ref(),
                n.as_ref(),
                size.as_ref(),
            ];
            peer(tools, &args).map(|(d, _)| d)
        }
        Contender::OrigDefaults | Contender::OrigNoClean => {
            let mode = if c == Contender::OrigDefaults {
                "defaults"
            } else {
                "noclean"
            };
            peer(
                tools,
                &[
                    "orig-publish".as_ref(),
                    place.root.as_os_str(),
                    place.queue.as_ref(),
                    n.to_string().as_ref(),
                    size.to_string().as_ref(),
                    mode.as_ref(),
                ],
            )
            .map(|(d, _)| d)
        }
        Contender::Dirq | Contender::DirqSimple => {
            let cmd = if c == Contender::Dirq {
                "dirq-publish"
            } else {
                "dirqs-publish"
            };
            peer(
                tools,
                &[
                    cmd.as_ref(),
                    place.dir().as_os_str(),
                    n.to_string().as_ref(),
                    size.to_string().as_ref(),
                ],
            )
            .map(|(d, _)| d)
        }
    }
}

/// Consumes and acks up to `n` messages; returns the time and how many were consumed.
pub fn consume(
    c: Contender,
    place: &Place,
    tools: &Tools,
    n: usize,
) -> io::Result<(Duration, usize)> {
    match c {
        Contender::Floor => floor_consume(&place.dir(), n),
        Contender::Engine => {
            let broker = Broker::open(&place.root).map_err(engine_err)?;
            let q = broker.queue(&place.queue).map_err(engine_err)?;
            let started = Instant::now();
            let mut done = 0;
            while done < n {
                let Some(d) = q.consume_one().map_err(engine_err)? else {
                    break;
                };
                q.ack(&d.message.filename).map_err(engine_err)?;
                done += 1;
            }
            Ok((started.elapsed(), done))
        }
        Contender::CliSingle => {
            let started = Instant::now();
            for _ in 0..n {
                run_quiet(
                    Command::new(&tools.ddmq)
                        .args(["consume", "--ack"])
                        .arg(&place.root)
                        .arg(&place.queue),
                )?;
            }
            Ok((started.elapsed(), n))
        }
        Contender::CliBulk => {
            let started = Instant::now();
            let out = run_capture(
                Command::new(&tools.ddmq)
                    .args(["consume", "--ack", "-n", &n.to_string()])
                    .arg(&place.root)
                    .arg(&place.queue),
            )?;
            let elapsed = started.elapsed();
            let got = out.lines().filter(|l| l.starts_with('{')).count();
            Ok((elapsed, got))
        }
        Contender::Mount => mount_consume(place, n),
        Contender::MountPy | Contender::FuseQueuePy | Contender::FuseFloorPy => {
            let mnt = place.mnt.as_ref().ok_or_else(|| other("no mount".into()))?;
            peer(
                tools,
                &[
                    "mount-consume".as_ref(),
                    mnt.as_os_str(),
                    place.queue.as_ref(),
                    n.to_string().as_ref(),
                ],
            )
        }
        Contender::OrigDefaults | Contender::OrigNoClean => {
            let mode = if c == Contender::OrigDefaults {
                "defaults"
            } else {
                "noclean"
            };
            peer(
                tools,
                &[
                    "orig-consume".as_ref(),
                    place.root.as_os_str(),
                    place.queue.as_ref(),
                    n.to_string().as_ref(),
                    mode.as_ref(),
                ],
            )
        }
        Contender::Dirq | Contender::DirqSimple => {
            let cmd = if c == Contender::Dirq {
                "dirq-consume"
            } else {
                "dirqs-consume"
            };
            peer(
                tools,
                &[
                    cmd.as_ref(),
                    place.dir().as_os_str(),
                    n.to_string().as_ref(),
                ],
            )
        }
    }
}

/// Messages waiting in a queue directory (names the original would take for messages).
fn count_waiting(dir: &Path) -> io::Result<usize> {
    Ok(fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".ddmq"))
        .count())
}

/// FUSE sends RELEASE without waiting for its reply, so `close` on `in` returns before the
/// daemon has published: the publish is only done when the message is in the queue directory.
/// Returns how long we waited for that.
fn wait_until_published(dir: &Path, expected: usize) -> io::Result<Duration> {
    let started = Instant::now();
    while count_waiting(dir)? < expected {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(other(format!(
                "only {} of {expected} messages reached {} within 60 s",
                count_waiting(dir)?,
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(started.elapsed())
}

/// One `ddmq publish` process; returns its wall time.
pub fn cli_publish_one(tools: &Tools, place: &Place, body: &str) -> io::Result<Duration> {
    let started = Instant::now();
    run_quiet(
        Command::new(&tools.ddmq)
            .args(["publish", "-s"])
            .arg(&place.root)
            .arg(&place.queue)
            .arg(body),
    )?;
    Ok(started.elapsed())
}

// ------------------------------------------------------------------ the floor

static FLOOR_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Publish at the floor: create a temporary file, write, close, rename into the queue directory
/// (with fsync of the file and the directory when durable, as the engine does).
fn floor_publish(dir: &Path, n: usize, bytes: &[u8], durable: bool) -> io::Result<Duration> {
    let pid = std::process::id();
    let started = Instant::now();
    for _ in 0..n {
        let k = FLOOR_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{pid}-{k}"));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, dir.join(format!("999.{:020}.m{pid}", k)))?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(started.elapsed())
}

/// Consume+ack at the floor: list the directory once per batch, then for each message rename
/// it into work/, read it, unlink it. A lost race (ENOENT) moves on to the next name.
pub fn floor_consume(dir: &Path, n: usize) -> io::Result<(Duration, usize)> {
    let work = dir.join("work");
    let started = Instant::now();
    let mut done = 0;
    let mut buf = Vec::new();
    'outer: while done < n {
        let mut names: Vec<String> = fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|s| s.starts_with("999."))
            .collect();
        if names.is_empty() {
            break;
        }
        names.sort_unstable();
        for name in names {
            if done >= n {
                break 'outer;
            }
            let to = work.join(&name);
            match fs::rename(dir.join(&name), &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            buf.clear();
            File::open(&to)?.read_to_end(&mut buf)?;
            fs::remove_file(&to)?;
            done += 1;
        }
    }
    Ok((started.elapsed(), done))
}

// ------------------------------------------------------------------ the mount

/// Takes messages through `next` one by one: open claims, read to EOF, close acks.
pub fn mount_consume(place: &Place, n: usize) -> io::Result<(Duration, usize)> {
    let path = place.mount_file("next")?;
    let started = Instant::now();
    let mut done = 0;
    let mut buf = Vec::new();
    while done < n {
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => break,
            Err(e) => return Err(e),
        };
        buf.clear();
        f.read_to_end(&mut buf)?;
        drop(f);
        done += 1;
    }
    Ok((started.elapsed(), done))
}

// ------------------------------------------------------------------ processes

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().to_string();
    for a in cmd.get_args().take(6) {
        let a = a.to_string_lossy();
        s.push(' ');
        s.push_str(if a.len() > 40 { "…" } else { &a });
    }
    s
}

fn check(cmd: &Command, out: &std::process::Output) -> io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(other(format!(
        "`{}` failed ({}): {}",
        describe(cmd),
        out.status,
        err.trim().lines().last().unwrap_or("")
    )))
}

pub fn run_quiet(cmd: &mut Command) -> io::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    check(cmd, &out)
}

pub fn run_capture(cmd: &mut Command) -> io::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> io::Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    check(cmd, &out)
}

/// Runs a Python peer; returns the time it measured and the count it reported.
fn peer(tools: &Tools, args: &[&std::ffi::OsStr]) -> io::Result<(Duration, usize)> {
    let mut cmd = Command::new(&tools.python);
    cmd.arg(&tools.peers)
        .args(args)
        .env("PYTHONWARNINGS", "ignore");
    if let Some(cpus) = tools.cpus.clone() {
        use std::os::unix::process::CommandExt;
        let mask = crate::system::cpu_mask(&cpus);
        // SAFETY: the closure only calls sched_setaffinity (async-signal-safe) on a mask built
        // before the fork.
        unsafe {
            cmd.pre_exec(move || crate::system::set_affinity_of(0, &mask));
        }
    }
    let out = run_capture(&mut cmd)?;
    let line = out.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line)
        .map_err(|e| other(format!("`{}` printed {line:?}: {e}", describe(&cmd))))?;
    let secs = v["seconds"]
        .as_f64()
        .ok_or_else(|| other(format!("no seconds in {line}")))?;
    let count = v["count"].as_u64().unwrap_or(0) as usize;
    Ok((Duration::from_secs_f64(secs), count))
}

// ------------------------------------------------------------------ worker processes

/// `ddmq-bench worker consume KIND ROOT QUEUE [MNT]`: prints "ready", waits for a line on stdin,
/// consumes+acks until the queue is empty, prints "<count> <seconds>".
pub fn worker(args: &[String]) -> io::Result<()> {
    let [kind, root, queue, rest @ ..] = args else {
        return Err(other(
            "usage: ddmq-bench worker KIND ROOT QUEUE [MNT]".into(),
        ));
    };
    let place = Place {
        root: root.into(),
        queue: queue.clone(),
        mnt: rest.first().map(PathBuf::from),
        durable: false,
    };
    let contender = match kind.as_str() {
        "floor" => Contender::Floor,
        "engine" => Contender::Engine,
        "mount" => Contender::Mount,
        other_kind => return Err(other(format!("unknown worker kind {other_kind}"))),
    };
    println!("ready");
    io::stdout().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let tools = Tools {
        ddmq: PathBuf::new(),
        python: PathBuf::new(),
        peers: PathBuf::new(),
        cpus: None,
    };
    let (elapsed, count) = consume(contender, &place, &tools, usize::MAX)?;
    println!("{count} {}", elapsed.as_secs_f64());
    Ok(())
}

/// Consumes a queue with `k` worker processes started together; returns the wall time from
/// the start signal to the last worker's end, and the total consumed.
pub fn consume_with_workers(
    self_exe: &Path,
    kind: &str,
    place: &Place,
    k: usize,
) -> io::Result<(Duration, usize)> {
    let mut children = Vec::new();
    for _ in 0..k {
        let mut cmd = Command::new(self_exe);
        cmd.args(["worker", kind])
            .arg(&place.root)
            .arg(&place.queue);
        if let Some(m) = &place.mnt {
            cmd.arg(m);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut out = io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.wait();
            return Err(other(format!("worker {kind} did not start: {line:?}")));
        }
        children.push((child, out));
    }
    let started = Instant::now();
    for (child, _) in &mut children {
        child
            .stdin
            .as_mut()
            .expect("piped stdin")
            .write_all(b"go\n")?;
    }
    let mut total = 0;
    for (mut child, mut out) in children {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let status = child.wait()?;
        if !status.success() {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return Err(other(format!(
                "worker {kind} failed ({status}): {}",
                err.trim()
            )));
        }
        total += line
            .split_whitespace()
            .next()
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0);
    }
    Ok((started.elapsed(), total))
}

/// Fills a queue quickly through the engine (untimed set-up for depth and worker runs).
pub fn fill(place: &Place, n: usize, size: usize) -> io::Result<()> {
    let broker = Broker::open(&place.root).map_err(engine_err)?;
    let q = broker.queue(&place.queue).map_err(engine_err)?;
    let body = Value::String(body_text(size));
    for _ in 0..n {
        q.publish(body.clone(), &PublishOptions::default())
            .map_err(engine_err)?;
    }
    Ok(())
}

/// Fills a floor directory with `n` files of `bytes` (untimed).
pub fn fill_floor(place: &Place, n: usize, bytes: &[u8]) -> io::Result<()> {
    floor_publish(&place.dir(), n, bytes, false).map(|_| ())
}
