//! `ddmq-bench`: the benchmark behind `scripts/bench`. In one run, on the same filesystems, it
//! measures the syscall floor, our engine, CLI and mount, the original ddmq 0.9.10 and
//! python-dirq, interleaving the contenders round by round (the machine is noisy: ratios are
//! taken within a round, then the median over rounds is reported). It prints a markdown table
//! and the targets with PASS/MISS. It is a benchmark, not a test: nothing asserts a time.

mod contenders;
mod deep_ls;
mod farm;
mod fuse_floor;
mod python_module;
mod report;
mod system;

use clap::Parser;
use contenders::{Contender, Place, Tools};
use report::{Rates, Target, median};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
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
    /// process, versus, python, latency, soak, farm.
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
                soak: 100_000,
                farm_tasks: 2_000,
                farm_rounds: 3,
            }
        };
        if let Some(r) = a.rounds {
            p.rounds = r.max(1);
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
    if args.worker.first().map(String::as_str) == Some("fuse-floor") {
        let Some(mnt) = args.worker.get(1) else {
            eprintln!("usage: ddmq-bench fuse-floor MNT");
            return ExitCode::from(2);
        };
        return match fuse_floor::serve(Path::new(mnt)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ddmq-bench fuse-floor: {e}");
                ExitCode::FAILURE
            }
        };
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

        let mut out = header;
        out.push_str("\n### Messages per second\n\n× floor: the rate over the syscall floor's in the same round and section; × original: over the original 0.9.10 module with its defaults (publish with clean=True, consume with clean=True then ack), same round and section. \"msgs/round\" is how many messages each round moved.\n");
        out.push_str(&self.rates.markdown());
        out.push_str(&deep_ls_markdown);
        out.push_str(&farm_markdown);
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

    /// A fresh place for a contender in a section and round.
    fn place(&self, c: Contender, fs: Fs, key: &str, durable: bool) -> Place {
        if c.needs_mount() {
            let m = &self.mounts[fs.name()];
            return Place {
                root: m.root.clone(),
                queue: key.replace(['/', '.', ' '], "_"),
                mnt: Some(m.mnt.clone()),
                durable,
            };
        }
        Place {
            root: self.base(fs).join("runs").join(key),
            queue: "q".into(),
            mnt: None,
            durable,
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

    fn main_sections(&mut self) -> io::Result<()> {
        let p = &self.plan;
        let all = |n: usize| {
            vec![
                (Contender::Floor, n),
                (Contender::Engine, n),
                (Contender::CliSingle, p.n_single.min(n)),
                (Contender::CliBulk, n),
                (Contender::Mount, n),
                (Contender::MountPy, n),
                (Contender::OrigDefaults, p.n_orig.min(n)),
                (Contender::OrigNoClean, p.n_orig.min(n)),
                (Contender::Dirq, n),
                (Contender::DirqSimple, n),
            ]
        };
        let big = |n: usize| {
            vec![
                (Contender::Floor, n),
                (Contender::Engine, n),
                (Contender::CliBulk, n),
                (Contender::Mount, n),
                (Contender::OrigDefaults, p.n_orig.min(n)),
                (Contender::DirqSimple, n),
            ]
        };
        let durable = |n: usize| {
            vec![
                (Contender::Floor, n),
                (Contender::Engine, n),
                (Contender::CliBulk, n),
                (Contender::Mount, n),
            ]
        };
        let mut sections = Vec::new();
        for fs_kind in [Fs::Tmpfs, Fs::Disk] {
            let f = fs_kind.name();
            sections.push(Section {
                title: format!("{f}, 100 B bodies"),
                fs: fs_kind,
                size: 100,
                durable: false,
                contenders: all(p.n),
            });
            if fs_kind == Fs::Tmpfs || p.big_on_disk {
                let n = (p.n / 2).max(1);
                sections.push(Section {
                    title: format!("{f}, 64 KiB bodies"),
                    fs: fs_kind,
                    size: 65_536,
                    durable: false,
                    contenders: big(n),
                });
            }
            let n = if fs_kind == Fs::Disk {
                p.n_durable_disk
            } else {
                p.n
            };
            sections.push(Section {
                title: format!("{f}, 100 B bodies, durable (fsync)"),
                fs: fs_kind,
                size: 100,
                durable: true,
                contenders: durable(n),
            });
        }
        for round in 0..self.plan.rounds {
            for (si, s) in sections.iter().enumerate() {
                progress(&format!(
                    "round {}/{}: {}",
                    round + 1,
                    self.plan.rounds,
                    s.title
                ));
                let sec = self.rates.section(s.title.clone());
                let k = s.contenders.len();
                for i in 0..k {
                    // Rotate the order each round so no contender always runs first or last.
                    let (c, n) = s.contenders[(i + round) % k];
                    if let Some(why) = self.unavailable(c) {
                        self.rates.failures.insert((sec, c), why);
                        continue;
                    }
                    let key = format!("r{round}-s{si}-{c:?}");
                    let place = self.place(c, s.fs, &key, s.durable);
                    self.measure_pair(sec, round, c, &place, n, s.size);
                    if !c.needs_mount() {
                        let _ = fs::remove_dir_all(&place.root);
                    }
                }
            }
        }
        self.engine_targets();
        Ok(())
    }

    fn engine_targets(&mut self) {
        let sec = self.rates.section("tmpfs, 100 B bodies".into());
        for op in ["publish", "consume+ack"] {
            let r = self
                .rates
                .ratio(sec, Contender::Engine, Contender::Floor, op);
            self.targets.push(Target {
                what: format!("engine {op} ≥ 0.5× the floor (tmpfs, one process, 100 B)"),
                measured: r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into()),
                pass: r.map(|r| r >= 0.5),
            });
        }
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

    fn depth_sections(&mut self) -> io::Result<()> {
        let contenders = [
            Contender::Floor,
            Contender::Engine,
            Contender::CliBulk,
            Contender::Mount,
            Contender::OrigDefaults,
        ];
        let fss: Vec<Fs> = if self.plan.depth_on_disk {
            vec![Fs::Tmpfs, Fs::Disk]
        } else {
            vec![Fs::Tmpfs]
        };
        let mut places: BTreeMap<(usize, usize, Contender), Place> = BTreeMap::new();
        let depths = self.plan.depths.clone();
        for (fi, fs_kind) in fss.iter().enumerate() {
            for &d in &depths {
                for c in contenders {
                    if self.unavailable(c).is_some() {
                        continue;
                    }
                    progress(&format!(
                        "filling {} with {d} messages for {}",
                        fs_kind.name(),
                        c.label()
                    ));
                    let place = self.place(
                        c,
                        *fs_kind,
                        &format!("depth-{}-{d}-{c:?}", fs_kind.name()),
                        false,
                    );
                    // The original reads our layout: fill it with the engine, as for the others.
                    contenders::prepare(
                        if c == Contender::Floor {
                            c
                        } else {
                            Contender::Engine
                        },
                        &place,
                    )?;
                    if c == Contender::Floor {
                        contenders::fill_floor(&place, d, &self.floor_bytes[&100])?;
                    } else {
                        contenders::fill(&place, d, 100)?;
                    }
                    places.insert((fi, d, c), place);
                }
            }
        }
        for round in 0..self.plan.rounds {
            for (fi, fs_kind) in fss.iter().enumerate() {
                for &d in &depths {
                    let title = format!(
                        "{}, 100 B bodies, consume+ack with {} waiting",
                        fs_kind.name(),
                        thousands(d)
                    );
                    progress(&format!(
                        "round {}/{}: {title}",
                        round + 1,
                        self.plan.rounds
                    ));
                    let sec = self.rates.section(title);
                    for i in 0..contenders.len() {
                        let c = contenders[(i + round) % contenders.len()];
                        if let Some(why) = self.unavailable(c) {
                            self.rates.failures.insert((sec, c), why);
                            continue;
                        }
                        let batch = if c == Contender::OrigDefaults {
                            self.plan.depth_batch_orig
                        } else {
                            self.plan.depth_batch
                        };
                        let batch = batch.min(d).max(1);
                        let place = &places[&(fi, d, c)];
                        match contenders::consume(c, place, &self.tools, batch) {
                            Ok((t, got)) if got == batch => {
                                self.rates.record(
                                    sec,
                                    c,
                                    "consume+ack",
                                    round,
                                    batch as f64 / t.as_secs_f64(),
                                );
                                self.rates.counts.insert((sec, c), batch);
                            }
                            Ok((_, got)) => {
                                self.rates
                                    .failures
                                    .insert((sec, c), format!("consumed {got} of {batch}"));
                            }
                            Err(e) => {
                                self.rates.failures.insert((sec, c), e.to_string());
                            }
                        }
                        // Top the queue up again (untimed) so the depth stays what it says.
                        if c == Contender::Floor {
                            contenders::fill_floor(place, batch, &self.floor_bytes[&100])?;
                        } else {
                            contenders::fill(place, batch, 100)?;
                        }
                    }
                }
            }
            if round == 0
                && let Some(m) = self.mounts.get("tmpfs")
                && let Some((rss, hwm)) = m.memory_kib()
            {
                let deepest = depths.iter().max().copied().unwrap_or(0);
                self.notes.push(format!(
                            "mount daemon memory after the first depth round (queues of {} waiting, listed): VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                            thousands(deepest),
                            rss as f64 / 1024.0,
                            hwm as f64 / 1024.0
                        ));
                self.depth_memory = Some(rss);
            }
        }
        // Depth targets: the rate at 100k over the rate at 2k, per round.
        for c in [
            Contender::CliBulk,
            Contender::Mount,
            Contender::Engine,
            Contender::Floor,
        ] {
            let (Some(&lo), Some(&hi)) =
                (depths.iter().find(|d| **d == 2_000), depths.iter().max())
            else {
                continue;
            };
            let sec_lo = self.rates.section(format!(
                "tmpfs, 100 B bodies, consume+ack with {} waiting",
                thousands(lo)
            ));
            let sec_hi = self.rates.section(format!(
                "tmpfs, 100 B bodies, consume+ack with {} waiting",
                thousands(hi)
            ));
            let what = format!(
                "{}: consume rate at {} waiting ≥ 0.7× the rate at {}",
                c.label(),
                thousands(hi),
                thousands(lo)
            );
            let ratio = self.round_ratio(sec_hi, c, sec_lo, c, "consume+ack");
            self.targets.push(Target {
                what,
                measured: ratio
                    .map(|r| format!("{r:.2}×"))
                    .unwrap_or_else(|| "—".into()),
                // The engine contender opens a fresh queue each round, and the floor lists once
                // per batch: both are shown for what the listing costs, not judged.
                pass: if matches!(c, Contender::CliBulk | Contender::Mount) {
                    ratio.map(|r| r >= 0.7)
                } else {
                    None
                },
            });
        }
        Ok(())
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

/// Compares the seconds per round of `ours` with `base`'s in a map of (contender, round) ->
/// seconds: the median of the per-round ratios base/ours (above 1: ours is faster), and a
/// function giving a contender's median seconds.
fn time_ratio(
    totals: &BTreeMap<(Contender, usize), f64>,
    rounds: usize,
    base: Contender,
    ours: Contender,
) -> (Option<f64>, impl Fn(Contender) -> Option<f64> + '_) {
    let ratios: Vec<f64> = (0..rounds)
        .filter_map(|r| Some(totals.get(&(base, r))? / totals.get(&(ours, r))?))
        .collect();
    let secs = move |c| {
        median(
            &totals
                .iter()
                .filter(|((cc, _), _)| *cc == c)
                .map(|(_, v)| *v)
                .collect::<Vec<_>>(),
        )
    };
    (median(&ratios), secs)
}

fn thousands(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

impl Bench {
    /// k consumer processes sharing one queue.
    fn worker_sections(&mut self) -> io::Result<()> {
        let kinds = [
            (Contender::Floor, "floor"),
            (Contender::Engine, "engine"),
            (Contender::Mount, "mount"),
        ];
        let n = self.plan.workers_n;
        for round in 0..self.plan.rounds {
            for k in [1usize, 2, 4] {
                let title = format!(
                    "tmpfs, 100 B bodies, {k} consumer process{} on one queue of {}",
                    if k == 1 { "" } else { "es" },
                    thousands(n)
                );
                progress(&format!(
                    "round {}/{}: {title}",
                    round + 1,
                    self.plan.rounds
                ));
                let sec = self.rates.section(title);
                for i in 0..kinds.len() {
                    let (c, kind) = kinds[(i + round + k) % kinds.len()];
                    if let Some(why) = self.unavailable(c) {
                        self.rates.failures.insert((sec, c), why);
                        continue;
                    }
                    let place = self.place(
                        c,
                        Fs::Tmpfs,
                        &format!("workers-r{round}-k{k}-{kind}"),
                        false,
                    );
                    let outcome = (|| {
                        if c == Contender::Floor {
                            contenders::prepare(c, &place)?;
                            contenders::fill_floor(&place, n, &self.floor_bytes[&100])?;
                        } else {
                            contenders::prepare(Contender::Engine, &place)?;
                            contenders::fill(&place, n, 100)?;
                        }
                        contenders::consume_with_workers(&self.self_exe, kind, &place, k)
                    })();
                    match outcome {
                        Ok((t, got)) if got == n => {
                            self.rates.record(
                                sec,
                                c,
                                "consume+ack",
                                round,
                                n as f64 / t.as_secs_f64(),
                            );
                            self.rates.counts.insert((sec, c), n);
                        }
                        Ok((_, got)) => {
                            self.rates
                                .failures
                                .insert((sec, c), format!("{k} workers consumed {got} of {n}"));
                        }
                        Err(e) => {
                            self.rates.failures.insert((sec, c), e.to_string());
                        }
                    }
                    if !c.needs_mount() {
                        let _ = fs::remove_dir_all(&place.root);
                    }
                }
            }
        }
        let one = self.rates.section(format!(
            "tmpfs, 100 B bodies, 1 consumer process on one queue of {}",
            thousands(n)
        ));
        let four = self.rates.section(format!(
            "tmpfs, 100 B bodies, 4 consumer processes on one queue of {}",
            thousands(n)
        ));
        for (c, _) in kinds {
            let r = self.round_ratio(four, c, one, c, "consume+ack");
            self.targets.push(Target {
                what: format!("{}: 4 consumer processes ≥ 1.5× one", c.label()),
                measured: r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into()),
                pass: if c == Contender::Floor {
                    None
                } else {
                    r.map(|r| r >= 1.5)
                },
            });
        }
        Ok(())
    }

    /// `ddmq publish` as a new process, against the original module's publish as a new process
    /// (its own CLI cannot start on Python 3: see the behaviour notes).
    fn process_wall(&mut self) -> io::Result<()> {
        if let Some(why) = self.cli_error.clone() {
            self.targets.push(Target {
                what: "`ddmq publish` as a new process ≤ 5 ms wall".into(),
                measured: format!("not run: {why}"),
                pass: None,
            });
            return Ok(());
        }
        let place = self.place(Contender::CliSingle, Fs::Tmpfs, "process-wall", false);
        contenders::prepare(Contender::CliSingle, &place)?;
        let orig = self.place(
            Contender::OrigDefaults,
            Fs::Tmpfs,
            "process-wall-orig",
            false,
        );
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut spawn_only = Vec::new();
        for round in 0..self.plan.rounds {
            progress(&format!(
                "round {}/{}: publish as a new process",
                round + 1,
                self.plan.rounds
            ));
            for _ in 0..self.plan.process_calls {
                ours.push(
                    contenders::cli_publish_one(&self.tools, &place, &contenders::body_text(100))?
                        .as_secs_f64()
                        * 1e3,
                );
                // What starting any process costs here right now: the floor of this target.
                let started = Instant::now();
                contenders::run_quiet(&mut Command::new("true"))?;
                spawn_only.push(started.elapsed().as_secs_f64() * 1e3);
            }
            for _ in 0..(self.plan.process_calls / 5).max(2) {
                let started = Instant::now();
                contenders::run_quiet(
                    Command::new(&self.tools.python)
                        .arg(&self.tools.peers)
                        .args(["orig-publish"])
                        .arg(&orig.root)
                        .args(["q", "1", "100", "defaults"])
                        .env("PYTHONWARNINGS", "ignore"),
                )?;
                theirs.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let m = median(&ours);
        let o = median(&theirs);
        self.targets.push(Target {
            what: "`ddmq publish` as a new process ≤ 5 ms wall".into(),
            measured: format!(
                "{} ms over {} calls (starting `true`: {} ms; the original module's publish as a new Python process: {} ms)",
                m.map(|x| format!("{x:.2}")).unwrap_or_default(),
                ours.len(),
                median(&spawn_only).map(|x| format!("{x:.2}")).unwrap_or_default(),
                o.map(|x| format!("{x:.0}")).unwrap_or_default()
            ),
            pass: m.map(|x| x <= 5.0),
        });
        Ok(())
    }

    /// The Python client on the mount against the same client on the FUSE floor (a do-nothing
    /// fuser filesystem with the same options, in a process of its own), same work.
    fn versus_fuse_floor(&mut self) -> io::Result<()> {
        let n = self.plan.versus_n;
        let sec = self.rates.section(format!(
            "tmpfs, 100 B bodies, {n} messages: Python on the mount against the FUSE floor"
        ));
        let what = format!(
            "Python client on the mount (write `in`, read `next`, {n} messages) ≥ 0.7× the FUSE floor's rate"
        );
        if let Some(why) = self.unavailable(Contender::MountPy) {
            self.targets.push(Target {
                what,
                measured: why,
                pass: None,
            });
            return Ok(());
        }
        let floor_mnt = self.base(Fs::Tmpfs).join("fuse-floor-mnt");
        let floor = match system::FloorDaemon::start(&floor_mnt) {
            Ok(f) => f,
            Err(e) => {
                self.targets.push(Target {
                    what,
                    measured: format!("the FUSE floor would not mount: {e}"),
                    pass: None,
                });
                return Ok(());
            }
        };
        let mut totals: BTreeMap<(Contender, usize), f64> = BTreeMap::new();
        for round in 0..self.plan.versus_rounds {
            for c in [Contender::FuseFloorPy, Contender::MountPy] {
                progress(&format!(
                    "round {}/{}: {} with {n} messages",
                    round + 1,
                    self.plan.versus_rounds,
                    c.label()
                ));
                let place = if c == Contender::FuseFloorPy {
                    Place {
                        root: floor_mnt.clone(),
                        queue: "q".into(),
                        mnt: Some(floor_mnt.clone()),
                        durable: false,
                    }
                } else {
                    self.place(c, Fs::Tmpfs, &format!("fuse-floor-r{round}"), false)
                };
                if let Some((p, q)) = self.measure_pair(sec, round, c, &place, n, 100) {
                    totals.insert((c, round), n as f64 / p + n as f64 / q);
                }
            }
        }
        drop(floor);
        let (r, secs) = time_ratio(
            &totals,
            self.plan.versus_rounds,
            Contender::FuseFloorPy,
            Contender::MountPy,
        );
        self.targets.push(Target {
            what,
            measured: format!(
                "{} (mount {} s, floor {} s)",
                r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into()),
                secs(Contender::MountPy)
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_default(),
                secs(Contender::FuseFloorPy)
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_default()
            ),
            pass: r.map(|r| r >= 0.7),
        });
        Ok(())
    }

    /// `ls -l` of a deep queue through the tmpfs mount against the queue directory itself.
    fn deep_ls(&mut self) -> io::Result<String> {
        const DEPTH: usize = 100_000;
        let Some(m) = self.mounts.get("tmpfs") else {
            self.targets.push(Target {
                what: format!(
                    "`ls -l MNT/q/messages` within 3× `ls -l ROOT/q` ({DEPTH} waiting, tmpfs)"
                ),
                measured: format!("not run: {}", self.mount_error.clone().unwrap_or_default()),
                pass: None,
            });
            return Ok(String::new());
        };
        let report = deep_ls::run(&self.tools, &m.root, &m.mnt, DEPTH, self.plan.rounds)?;
        self.targets.extend(report.targets);
        Ok(report.markdown)
    }

    /// The Python client on the mount against the original module with its defaults, same work.
    fn versus_original(&mut self) -> io::Result<()> {
        let n = self.plan.versus_n;
        let title = format!(
            "tmpfs, 100 B bodies, {n} messages: Python on the mount against the original module"
        );
        let sec = self.rates.section(title);
        let mut totals: BTreeMap<(Contender, usize), f64> = BTreeMap::new();
        for round in 0..self.plan.versus_rounds {
            for c in [Contender::MountPy, Contender::OrigDefaults] {
                progress(&format!(
                    "round {}/{}: {} with {n} messages",
                    round + 1,
                    self.plan.versus_rounds,
                    c.label()
                ));
                if let Some(why) = self.unavailable(c) {
                    self.rates.failures.insert((sec, c), why);
                    continue;
                }
                let place = self.place(c, Fs::Tmpfs, &format!("versus-r{round}-{c:?}"), false);
                if let Some((p, q)) = self.measure_pair(sec, round, c, &place, n, 100) {
                    totals.insert((c, round), n as f64 / p + n as f64 / q);
                }
            }
        }
        let (r, secs) = time_ratio(
            &totals,
            self.plan.versus_rounds,
            Contender::OrigDefaults,
            Contender::MountPy,
        );
        self.targets.push(Target {
            what: format!("Python client on the mount (write `in`, read `next`, {n} messages) ≥ 20× faster than the original module with its defaults"),
            measured: format!(
                "{} (mount {} s, original {} s)",
                r.map(|r| format!("{r:.0}×")).unwrap_or_else(|| "—".into()),
                secs(Contender::MountPy).map(|s| format!("{s:.2}")).unwrap_or_default(),
                secs(Contender::OrigDefaults).map(|s| format!("{s:.1}")).unwrap_or_default()
            ),
            pass: r.map(|r| r >= 20.0),
        });
        Ok(())
    }

    /// From a publish (through the engine, i.e. another client) to a consumer already waiting.
    fn wake_up_latency(&mut self) -> io::Result<()> {
        let mut cli = Vec::new();
        let mut mount = Vec::new();
        let mut cli_error = self.cli_error.clone();
        let mut mount_error = self.mount_error.clone();
        let cli_place = self.place(Contender::CliSingle, Fs::Tmpfs, "latency-cli", false);
        contenders::prepare(Contender::Engine, &cli_place)?;
        let mount_place = if mount_error.is_none() {
            let p = self.place(Contender::Mount, Fs::Tmpfs, "latency-mount", false);
            contenders::prepare(Contender::Engine, &p)?;
            Some(p)
        } else {
            None
        };
        for round in 0..self.plan.rounds {
            progress(&format!(
                "round {}/{}: wake-up latency",
                round + 1,
                self.plan.rounds
            ));
            for _ in 0..self.plan.latency_samples {
                if cli_error.is_none() {
                    match cli_wake_up(&self.tools, &cli_place) {
                        Ok(d) => cli.push(d.as_secs_f64() * 1e3),
                        Err(e) => cli_error = Some(e.to_string()),
                    }
                }
                if let (None, Some(p)) = (&mount_error, &mount_place) {
                    match mount_wake_up(p) {
                        Ok(d) => mount.push(d.as_secs_f64() * 1e3),
                        Err(e) => mount_error = Some(e.to_string()),
                    }
                }
            }
        }
        for (what, samples, err) in [
            ("CLI `consume --wait`", &cli, &cli_error),
            ("mount: blocking read of `wait`", &mount, &mount_error),
        ] {
            let m = median(samples);
            let max = samples.iter().copied().fold(f64::NAN, f64::max);
            self.targets.push(Target {
                what: format!("wake-up latency, {what}, tmpfs: median ≤ 50 ms"),
                measured: match (err, m) {
                    (Some(e), _) => format!("not run: {e}"),
                    (None, Some(m)) => {
                        format!("{m:.1} ms (max {max:.1} ms, {} samples)", samples.len())
                    }
                    (None, None) => "—".into(),
                },
                pass: if err.is_some() {
                    None
                } else {
                    m.map(|m| m <= 50.0)
                },
            });
        }
        Ok(())
    }

    /// The mount daemon's memory with a deep queue, and over many messages passed through.
    fn mount_memory_soak(&mut self) -> io::Result<()> {
        let what_depth =
            "mount daemon resident memory ≤ 64 MiB with 100k messages waiting".to_string();
        let what_soak = format!(
            "mount daemon memory not growing over {} messages passed through",
            thousands(self.plan.soak)
        );
        let Some(m) = self.mounts.get("tmpfs") else {
            let why = format!("not run: {}", self.mount_error.clone().unwrap_or_default());
            self.targets.push(Target {
                what: what_depth,
                measured: why.clone(),
                pass: None,
            });
            self.targets.push(Target {
                what: what_soak,
                measured: why,
                pass: None,
            });
            return Ok(());
        };
        let deepest = self.plan.depths.iter().max().copied().unwrap_or(0);
        self.targets.push(Target {
            what: what_depth,
            measured: match self.depth_memory {
                Some(kib) => format!(
                    "{:.1} MiB VmRSS after consuming from a queue of {} waiting",
                    kib as f64 / 1024.0,
                    thousands(deepest)
                ),
                None => "—".into(),
            },
            pass: if deepest >= 100_000 {
                self.depth_memory.map(|kib| kib <= 64 * 1024)
            } else {
                None
            },
        });
        let place = Place {
            root: m.root.clone(),
            queue: "soak".into(),
            mnt: Some(m.mnt.clone()),
            durable: false,
        };
        contenders::prepare(Contender::Mount, &place)?;
        let total = self.plan.soak;
        let step = (total / 10).max(1);
        let mut samples = Vec::new();
        let started = Instant::now();
        let mut passed = 0;
        progress(&format!(
            "soak: {} messages through the mount",
            thousands(total)
        ));
        while passed < total {
            let batch = step.min(total - passed);
            let inner = 1000.min(batch);
            let mut done = 0;
            while done < batch {
                let k = inner.min(batch - done);
                contenders::publish(Contender::Mount, &place, &self.tools, k, 100, &[])?;
                let (_, got) = contenders::mount_consume(&place, k)?;
                if got != k {
                    return Err(io::Error::other(format!(
                        "soak: took {got} of {k} messages back through the mount"
                    )));
                }
                done += k;
            }
            passed += batch;
            if let Some((rss, _)) = m.memory_kib() {
                samples.push((passed, rss));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let first = samples.first().map(|s| s.1).unwrap_or(0);
        let last = samples.last().map(|s| s.1).unwrap_or(0);
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let growth = last as i64 - first as i64;
        self.targets.push(Target {
            what: what_soak,
            measured: format!(
                "VmRSS {:.1} MiB after the first {}, {:.1} MiB at the end, peak {:.1} MiB ({:.0} msgs/s round trip)",
                first as f64 / 1024.0,
                thousands(step),
                last as f64 / 1024.0,
                peak as f64 / 1024.0,
                total as f64 / secs
            ),
            // Allocator noise is a few MiB at most; a leak per message would show over the run.
            pass: if samples.len() >= 2 { Some(growth <= 4 * 1024 || (growth as f64) <= first as f64 * 0.1) } else { None },
        });
        Ok(())
    }
}

/// Starts `ddmq consume --ack --wait`, lets it settle into waiting, publishes, times its exit.
fn cli_wake_up(tools: &Tools, place: &Place) -> io::Result<Duration> {
    let mut child = Command::new(&tools.ddmq)
        .args(["consume", "--ack", "--wait", "10"])
        .arg(&place.root)
        .arg(&place.queue)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = child.try_wait()? {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        return Err(io::Error::other(format!(
            "`ddmq consume --wait` ended before a message was published ({status}): {}",
            err.trim()
        )));
    }
    let started = Instant::now();
    contenders::fill(place, 1, 100)?;
    let out = child.wait_with_output()?;
    let elapsed = started.elapsed();
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains('{') {
        return Err(io::Error::other(format!(
            "`ddmq consume --wait` did not deliver the message ({})",
            out.status
        )));
    }
    Ok(elapsed)
}

/// A reader blocked on `MNT/q/wait`; returns the time from the publish to its read.
fn mount_wake_up(place: &Place) -> io::Result<Duration> {
    let path = place
        .mnt
        .as_ref()
        .ok_or_else(|| io::Error::other("no mount"))?
        .join(&place.queue)
        .join("wait");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let result = fs::File::open(&path).and_then(|mut f| {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map(|_| buf.len())
        });
        let _ = tx.send((Instant::now(), result));
    });
    std::thread::sleep(Duration::from_millis(300));
    if let Ok((_, r)) = rx.try_recv() {
        let _ = reader.join();
        return Err(io::Error::other(format!(
            "the read of `wait` returned before any publish: {r:?}"
        )));
    }
    let started = Instant::now();
    contenders::fill(place, 1, 100)?;
    let (at, result) = rx
        .recv_timeout(Duration::from_secs(15))
        .map_err(|_| io::Error::other("no wake-up within 15 s"))?;
    let _ = reader.join();
    let len = result?;
    if len == 0 {
        return Err(io::Error::other("the read of `wait` returned no body"));
    }
    Ok(at.saturating_duration_since(started))
}
