//! `ddmq-bench`: the benchmark behind `scripts/bench`. In one run, on the same filesystems, it
//! measures the syscall floor, our engine, CLI and mount, the original ddmq 0.9.10 and
//! python-dirq, interleaving the contenders round by round (the machine is noisy: ratios are
//! taken within a round, then the median over rounds is reported). It prints a markdown table
//! and the targets with PASS/MISS. It is a benchmark, not a test: nothing asserts a time.

// The parts, one file each, in the order they run; then what they share.
mod cluster;
mod contenders;
mod deep_ls;
mod depth;
mod farm;
mod fuse_floor;
mod latency;
mod process_wall;
mod python_module;
mod report;
mod soak;
mod system;
mod throughput;
mod versus;
mod workers;

use clap::Parser;
use contenders::{Contender, Place, Tools};
use report::{Rates, Target, median};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use system::MountDaemon;

#[derive(Parser)]
#[command(
    name = "ddmq-bench",
    bin_name = "ddmq-bench",
    about = "Benchmark of ddmq against the syscall floor, the original ddmq and python-dirq"
)]
struct Args {
    /// About 1–2 minutes: fewer messages, fewer depths.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Longer: more messages and rounds, the disk in every section, a million messages through the mount.
    #[arg(long)]
    full: bool,
    /// A tmpfs directory to measure on.
    #[arg(long, default_value = "/dev/shm")]
    tmpfs: PathBuf,
    /// A directory on the disk to measure on.
    #[arg(long, default_value = "/var/tmp")]
    disk: PathBuf,
    /// The ddmq binary (default: the one cargo built with this benchmark).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_ddmq"))]
    ddmq: PathBuf,
    /// The Python of the venv holding ddmq==0.9.10, PyYAML==5.3.1 and dirq.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// scripts/bench_peers.py.
    #[arg(long, default_value = "scripts/bench_peers.py")]
    peers: PathBuf,
    /// The Python with the package built from python/ installed (scripts/python-module).
    #[arg(long)]
    module_python: Option<PathBuf>,
    /// scripts/bench_python_loop.py: the loop run under both `import ddmq`s.
    #[arg(long, default_value = "scripts/bench_python_loop.py")]
    python_loop: PathBuf,
    /// Rounds (default by mode).
    #[arg(long)]
    rounds: Option<usize>,
    /// Messages per round and contender (default by mode).
    #[arg(long)]
    messages: Option<usize>,
    /// Run only these parts (comma-separated): main, fuse-floor, deep-ls, depth, workers,
    /// process, versus, python, latency, soak, farm, cluster.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Re-exec'd consumer processes (internal).
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    worker: Vec<String>,
}

/// How much of everything, by mode.
struct Plan {
    mode: &'static str,
    rounds: usize,
    n: usize,
    n_single: usize,
    n_orig: usize,
    n_durable_disk: usize,
    depths: Vec<usize>,
    depth_batch: usize,
    depth_batch_orig: usize,
    depth_on_disk: bool,
    big_on_disk: bool,
    workers_n: usize,
    process_calls: usize,
    latency_samples: usize,
    versus_n: usize,
    versus_rounds: usize,
    /// Rounds of the fuse-floor part (each runs every contender unpinned, then pinned).
    floor_rounds: usize,
    soak: usize,
    /// Tasks per round of the task-farm part, and its rounds.
    farm_tasks: usize,
    farm_rounds: usize,
}

impl Plan {
    fn new(a: &Args) -> Plan {
        let mut p = if a.quick {
            Plan {
                mode: "quick",
                rounds: 3,
                n: 300,
                n_single: 20,
                n_orig: 100,
                n_durable_disk: 50,
                depths: vec![2_000, 100_000],
                depth_batch: 1_000,
                depth_batch_orig: 10,
                depth_on_disk: false,
                big_on_disk: false,
                workers_n: 1_000,
                process_calls: 10,
                latency_samples: 3,
                versus_n: 300,
                versus_rounds: 1,
                floor_rounds: 3,
                soak: 20_000,
                farm_tasks: 500,
                farm_rounds: 1,
            }
        } else if a.full {
            Plan {
                mode: "full",
                rounds: 5,
                n: 5_000,
                n_single: 200,
                n_orig: 2_000,
                n_durable_disk: 500,
                depths: vec![1_000, 2_000, 10_000, 100_000],
                depth_batch: 2_000,
                depth_batch_orig: 50,
                depth_on_disk: true,
                big_on_disk: true,
                workers_n: 10_000,
                process_calls: 50,
                latency_samples: 10,
                versus_n: 2_000,
                versus_rounds: 3,
                floor_rounds: 10,
                soak: 1_000_000,
                farm_tasks: 2_000,
                farm_rounds: 5,
            }
        } else {
            Plan {
                mode: "default",
                rounds: 3,
                n: 2_000,
                n_single: 100,
                n_orig: 500,
                n_durable_disk: 200,
                depths: vec![1_000, 2_000, 10_000, 100_000],
                depth_batch: 2_000,
                depth_batch_orig: 20,
                depth_on_disk: false,
                big_on_disk: true,
                workers_n: 4_000,
                process_calls: 30,
                latency_samples: 7,
                versus_n: 2_000,
                versus_rounds: 1,
                floor_rounds: 6,
                soak: 100_000,
                farm_tasks: 2_000,
                farm_rounds: 3,
            }
        };
        if let Some(r) = a.rounds {
            p.rounds = r.max(1);
            p.floor_rounds = r.max(1);
        }
        if let Some(n) = a.messages {
            p.n = n.max(1);
        }
        p
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fs {
    Tmpfs,
    Disk,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Tmpfs => "tmpfs",
            Fs::Disk => "disk",
        }
    }
}

/// One group of contenders measured together (their ratios are taken within it).
struct Section {
    title: String,
    fs: Fs,
    size: usize,
    durable: bool,
    contenders: Vec<(Contender, usize)>,
}

/// Everything a measurement needs.
struct Bench {
    plan: Plan,
    tools: Tools,
    self_exe: PathBuf,
    bases: BTreeMap<&'static str, PathBuf>,
    mounts: BTreeMap<&'static str, MountDaemon>,
    mount_error: Option<String>,
    cli_error: Option<String>,
    floor_bytes: BTreeMap<usize, Vec<u8>>,
    rates: Rates,
    notes: Vec<String>,
    targets: Vec<Target>,
    /// The mount daemon's VmRSS (KiB) after listing the deepest queue.
    depth_memory: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.worker.first().map(String::as_str) {
        Some("fuse-floor") => {
            let [_, mnt] = &args.worker[..] else {
                eprintln!("usage: ddmq-bench fuse-floor MNT");
                return ExitCode::from(2);
            };
            return served("fuse-floor", fuse_floor::serve_floor(Path::new(mnt)));
        }
        Some("fuse-queue") => {
            let [_, dir, mnt] = &args.worker[..] else {
                eprintln!("usage: ddmq-bench fuse-queue DIR MNT");
                return ExitCode::from(2);
            };
            return served(
                "fuse-queue",
                fuse_floor::serve_queue(Path::new(dir), Path::new(mnt)),
            );
        }
        _ => {}
    }
    if args.worker.first().map(String::as_str) == Some("worker") {
        return match contenders::worker(&args.worker[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ddmq-bench worker: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(extra) = args.worker.first() {
        eprintln!("ddmq-bench: unexpected argument {extra:?} (see --help)");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddmq-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// The exit of a floor's process.
fn served(what: &str, result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddmq-bench {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

fn run(args: Args) -> io::Result<()> {
    let plan = Plan::new(&args);
    let self_exe = std::env::current_exe()?;
    let tools = Tools {
        ddmq: args.ddmq.clone(),
        python: args.python.clone(),
        peers: fs::canonicalize(&args.peers)?,
        cpus: None,
    };
    let tag = format!("ddmq-bench-{}", std::process::id());
    let mut bases = BTreeMap::new();
    bases.insert("tmpfs", args.tmpfs.join(&tag));
    bases.insert("disk", args.disk.join(&tag));
    for b in bases.values() {
        fs::create_dir_all(b)?;
    }
    let mut bench = Bench {
        plan,
        tools,
        self_exe,
        bases,
        mounts: BTreeMap::new(),
        mount_error: None,
        cli_error: None,
        floor_bytes: BTreeMap::new(),
        rates: Rates::default(),
        notes: Vec::new(),
        targets: Vec::new(),
        depth_memory: None,
    };
    let started = Instant::now();
    let result = bench.run_all(&args);
    for (_, mut m) in std::mem::take(&mut bench.mounts) {
        m.stop();
    }
    for b in bench.bases.values() {
        let _ = fs::remove_dir_all(b);
    }
    result?;
    progress(&format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    Ok(())
}

impl Bench {
    fn base(&self, fs: Fs) -> &Path {
        &self.bases[fs.name()]
    }

    fn run_all(&mut self, args: &Args) -> io::Result<()> {
        self.setup()?;
        let header = format!(
            "## Benchmark ({} mode, {})\n\nMachine: {}. tmpfs: {} = {}; disk: {} = {}. {} rounds, contenders interleaved round by round; \
             the figures are medians over rounds, and each ratio is the median of the per-round ratios.\n",
            self.plan.mode,
            system::today(),
            system::machine(),
            args.tmpfs.display(),
            system::fs_type(&args.tmpfs),
            args.disk.display(),
            system::fs_type(&args.disk),
            self.plan.rounds,
        );
        let wanted = |part: &str| args.only.is_empty() || args.only.iter().any(|o| o == part);
        if wanted("main") {
            self.main_sections()?;
        }
        if wanted("fuse-floor") {
            self.versus_fuse_floor()?;
        }
        let mut deep_ls_markdown = String::new();
        if wanted("deep-ls") {
            deep_ls_markdown = self.deep_ls()?;
        }
        if wanted("depth") {
            self.depth_sections()?;
        }
        if wanted("workers") {
            self.worker_sections()?;
        }
        if wanted("process") {
            self.process_wall()?;
        }
        if wanted("versus") {
            self.versus_original()?;
        }
        if wanted("python") {
            let script = fs::canonicalize(&args.python_loop)?;
            self.python_module(args.module_python.as_ref(), &script)?;
        }
        if wanted("latency") {
            self.wake_up_latency()?;
        }
        if wanted("soak") {
            self.mount_memory_soak()?;
        }
        let mut farm_markdown = String::new();
        if wanted("farm") {
            let report = farm::run(
                &self.tools,
                &self.base(Fs::Tmpfs).join("farm"),
                self.plan.farm_tasks,
                self.plan.farm_rounds,
                100_000,
            )?;
            farm_markdown = report.markdown;
            self.targets.extend(report.targets);
        }

        let mut cluster_markdown = String::new();
        if wanted("cluster") {
            let report = cluster::run(
                &self.tools,
                &self.base(Fs::Tmpfs).join("cluster"),
                self.plan.farm_tasks.max(2_000),
            )?;
            cluster_markdown = report.markdown;
            self.targets.extend(report.targets);
        }

        let mut out = header;
        out.push_str("\n### Messages per second\n\n× floor: the rate over the syscall floor's in the same round and section; × original: over the original 0.9.10 module with its defaults (publish with clean=True, consume with clean=True then ack), same round and section. \"msgs/round\" is how many messages each round moved.\n");
        out.push_str(&self.rates.markdown());
        out.push_str(&deep_ls_markdown);
        out.push_str(&farm_markdown);
        out.push_str(&cluster_markdown);
        out.push_str(&report::targets_markdown(&self.targets));
        if !self.notes.is_empty() {
            out.push_str("\n### Notes\n\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        println!("{out}");
        Ok(())
    }

    fn setup(&mut self) -> io::Result<()> {
        let scratch = self.base(Fs::Tmpfs).join("scratch");
        for size in [100, 65_536] {
            let bytes = contenders::engine_file_bytes(&scratch.join(size.to_string()), size)?;
            self.floor_bytes.insert(size, bytes);
        }
        // Is our CLI there? (It is built by another part of the project.)
        let probe = self.base(Fs::Tmpfs).join("probe");
        let probe_place = Place {
            root: probe.clone(),
            queue: "q".into(),
            mnt: None,
            durable: false,
        };
        contenders::prepare(Contender::Engine, &probe_place)?;
        if let Err(e) = contenders::cli_publish_one(&self.tools, &probe_place, "probe") {
            self.cli_error = Some(format!("the CLI could not publish: {e}"));
            progress(&format!("CLI contenders will not run: {e}"));
        }
        for fs_kind in [Fs::Tmpfs, Fs::Disk] {
            let root = self.base(fs_kind).join("mount-root");
            ddmq::engine::Broker::open_or_init(&root)
                .map_err(|e| io::Error::other(e.to_string()))?;
            let mnt = self.base(Fs::Tmpfs).join(format!("mnt-{}", fs_kind.name()));
            let log = self
                .base(Fs::Tmpfs)
                .join(format!("mount-{}.log", fs_kind.name()));
            match MountDaemon::start(&self.tools.ddmq, &root, &mnt, &log) {
                Ok(m) => {
                    self.mounts.insert(fs_kind.name(), m);
                }
                Err(e) => {
                    progress(&format!("mount contenders will not run: {e}"));
                    self.mount_error = Some(e.to_string());
                    break;
                }
            }
        }
        Ok(())
    }

    /// A fresh place for a contender in a section and round (not durable: set `durable` on it
    /// for a durable section).
    fn place(&self, c: Contender, fs: Fs, key: &str) -> Place {
        if c.needs_mount() {
            let m = &self.mounts[fs.name()];
            return Place {
                root: m.root.clone(),
                queue: key.replace(['/', '.', ' '], "_"),
                mnt: Some(m.mnt.clone()),
                durable: false,
            };
        }
        Place {
            root: self.base(fs).join("runs").join(key),
            queue: "q".into(),
            mnt: None,
            durable: false,
        }
    }

    fn unavailable(&self, c: Contender) -> Option<String> {
        if c.needs_cli() {
            return self.cli_error.clone();
        }
        if c.needs_mount() {
            return self
                .mount_error
                .clone()
                .map(|e| format!("the mount is not available: {e}"));
        }
        None
    }

    /// Publishes n, then consumes+acks n, and records both rates in section `sec` for `round`
    /// (or why they could not be measured); returns them when measured.
    fn measure_pair(
        &mut self,
        sec: usize,
        round: usize,
        c: Contender,
        place: &Place,
        n: usize,
        size: usize,
    ) -> Option<(f64, f64)> {
        let measured = (|| {
            contenders::prepare(c, place)?;
            let floor_bytes = &self.floor_bytes[&size];
            let t_pub = contenders::publish(c, place, &self.tools, n, size, floor_bytes)?;
            let (t_con, got) = contenders::consume(c, place, &self.tools, n)?;
            if got != n {
                return Err(io::Error::other(format!("consumed {got} of {n} messages")));
            }
            Ok((
                n as f64 / t_pub.as_secs_f64(),
                n as f64 / t_con.as_secs_f64(),
            ))
        })();
        match measured {
            Ok((publish, consume)) => {
                self.rates.record(sec, c, "publish", round, publish);
                self.rates.record(sec, c, "consume+ack", round, consume);
                self.rates.counts.insert((sec, c), n);
                Some((publish, consume))
            }
            Err(e) => {
                progress(&format!("{} failed: {e}", c.label()));
                self.rates.failures.insert((sec, c), e.to_string());
                None
            }
        }
    }

    /// Median over rounds of rate(sa, ca) / rate(sb, cb).
    fn round_ratio(
        &self,
        sa: usize,
        ca: Contender,
        sb: usize,
        cb: Contender,
        op: &'static str,
    ) -> Option<f64> {
        let a = self.rates.by_round.get(&(sa, ca, op))?;
        let b = self.rates.by_round.get(&(sb, cb, op))?;
        median(
            &a.iter()
                .filter_map(|(r, x)| b.get(r).map(|y| x / y))
                .collect::<Vec<_>>(),
        )
    }
}

fn thousands(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
