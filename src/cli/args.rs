//! The arguments of every subcommand of the original `ddmq`, each flag defined once (in a small
//! group below) and documented where it is defined. The `json` subcommand maps its keys onto these
//! same structures (by argument id), so both ways of calling run the same code.

use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// `-v` / `-d`: how much the engine and the CLI log to stderr (RUST_LOG is honoured as well).
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct LogFlags {
    /// verbose mode (log at info level to stderr)
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// debug mode (log at debug level to stderr)
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
}

/// `-s`: print nothing on success.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct SilentFlag {
    /// silent mode (print nothing on success; errors still go to stderr)
    #[arg(short = 's', long = "silent")]
    pub silent: bool,
}

/// `-f` for commands that may initialise the root only.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct ForceRootFlag {
    /// create (and initialise) the root folder if needed
    #[arg(short = 'f', long = "force")]
    pub force: bool,
}

/// `-f` for commands that may also create the queue.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct ForceQueueFlag {
    /// create the root folder and the queue if needed (queue names are still validated)
    #[arg(short = 'f', long = "force")]
    pub force: bool,
}

/// `-C`: skip housekeeping. Both spellings of the original are accepted everywhere.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct SkipCleaningFlag {
    /// do not clean the queue (requeue or drop expired messages; otherwise done at most once a minute)
    #[arg(short = 'C', long = "skip-cleaning", visible_alias = "skip_cleaning")]
    pub skip_cleaning: bool,
}

/// Output formats of `view` and `consume`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// view: a table; consume: json
    Default,
    /// `key = value` lines (consume), `| name | n | n |` lines (view)
    Plain,
    /// JSON, Python `json.dumps` style
    Json,
    /// YAML (several messages are separated by `---`)
    Yaml,
}

/// The root folder: the first positional of every subcommand.
#[derive(Args, Debug, Clone)]
pub struct RootArg {
    /// the message queue's root folder
    #[arg(value_name = "ROOT")]
    pub root: PathBuf,
}

/// `ddmq view [-f] [-n] [--format F] ROOT [Q1,Q2,...]`
#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    #[command(flatten)]
    pub force: ForceRootFlag,
    /// only print the names of the queues (faster: no counting)
    #[arg(short = 'n', long = "names-only")]
    pub names_only: bool,
    /// output format
    #[arg(long = "format", value_enum, default_value_t = Format::Default, hide_default_value = true)]
    pub format: Format,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub root: RootArg,
    /// comma-separated names of the queues to view (default: all)
    #[arg(value_name = "QUEUE1,QUEUE2,...")]
    pub queues: Option<String>,
}

/// `ddmq create|delete|purge|clean [-f] [-s] ROOT Q1[,Q2,...]`
#[derive(Args, Debug, Clone)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub force: ForceRootFlag,
    #[command(flatten)]
    pub silent: SilentFlag,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub root: RootArg,
    /// comma-separated names of the queues
    #[arg(value_name = "QUEUE1,QUEUE2,...")]
    pub queues: String,
}

/// `ddmq publish [options] ROOT QUEUE MESSAGE`
#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    #[command(flatten)]
    pub force: ForceQueueFlag,
    /// priority of the message: 0 is the most urgent (default: the queue's `priority`, 999)
    #[arg(short = 'p', long = "priority", value_name = "PRIORITY")]
    pub priority: Option<u64>,
    /// seconds the message may stay consumed before it expires (default: the queue's `message_timeout`)
    #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// requeue the message on nack or expiry, at the queue's `requeue_prio` (default: the queue's `requeue` setting, true)
    #[arg(short = 'r', long = "requeue")]
    pub requeue: bool,
    /// store `requeue: false`: the message is deleted on nack or expiry
    #[arg(long = "no-requeue", conflicts_with_all = ["requeue", "requeue_prio"])]
    pub no_requeue: bool,
    /// requeues allowed on expiry and nack before the message is dropped (0: unlimited)
    #[arg(
        short = 'l',
        long = "requeue_limit",
        visible_alias = "requeue-limit",
        value_name = "N"
    )]
    pub requeue_limit: Option<u64>,
    /// priority the message gets when it is requeued; implies -r (0 stores `requeue: true`: the queue's `requeue_prio` applies)
    #[arg(
        long = "requeue_prio",
        visible_alias = "requeue-prio",
        value_name = "PRIORITY"
    )]
    pub requeue_prio: Option<u64>,
    /// with MESSAGE `-`: publish each line of stdin as its own message (one process, bulk)
    #[arg(long = "lines")]
    pub lines: bool,
    #[command(flatten)]
    pub skip_cleaning: SkipCleaningFlag,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub silent: SilentFlag,
    #[command(flatten)]
    pub root: RootArg,
    /// name of the queue to publish to
    #[arg(value_name = "QUEUE")]
    pub queue: String,
    /// the message text (quote it); `-` reads the whole of stdin as one message
    #[arg(value_name = "MESSAGE", allow_hyphen_values = true)]
    pub message: String,
}

/// `ddmq consume [-f] [-n N] [--format F] [-C] [--ack] [--wait S] ROOT QUEUE`
#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub force: ForceQueueFlag,
    /// the number of messages to consume (default 1; 0 also means 1, as in the original)
    #[arg(short = 'n', long = "number", value_name = "N", default_value_t = 1)]
    pub count: u64,
    /// output format (default: json, one object per line)
    #[arg(long = "format", value_enum, default_value_t = Format::Default, hide_default_value = true)]
    pub format: Format,
    /// acknowledge the messages once they are printed (drain the queue)
    #[arg(long = "ack")]
    pub ack: bool,
    /// wait up to SECONDS for a message when the queue is empty
    #[arg(long = "wait", value_name = "SECONDS", value_parser = parse_seconds)]
    pub wait: Option<f64>,
    /// how often --wait looks at the queue directory, in milliseconds
    #[arg(long = "poll-ms", visible_alias = "poll_ms", value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_ms: u64,
    #[command(flatten)]
    pub skip_cleaning: SkipCleaningFlag,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub root: RootArg,
    /// name of the queue to consume from
    #[arg(value_name = "QUEUE")]
    pub queue: String,
}

/// `ddmq ack|nack [-C] [-r] ROOT QUEUE FILE1[,FILE2,...]`
#[derive(Args, Debug, Clone)]
pub struct AckArgs {
    #[command(flatten)]
    pub skip_cleaning: SkipCleaningFlag,
    /// requeue the messages (ack: instead of deleting; nack: even those published with requeue false)
    #[arg(short = 'r', long = "requeue")]
    pub requeue: bool,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub root: RootArg,
    /// name of the queue the messages are in
    #[arg(value_name = "QUEUE")]
    pub queue: String,
    /// comma-separated file names of consumed messages (as `consume` printed them), or message ids
    #[arg(value_name = "FILE1,FILE2,...")]
    pub files: String,
}

/// `ddmq del_msg [-C] [-s] ROOT QUEUE FILE1[,FILE2,...]`
#[derive(Args, Debug, Clone)]
pub struct DelMsgArgs {
    #[command(flatten)]
    pub skip_cleaning: SkipCleaningFlag,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub silent: SilentFlag,
    #[command(flatten)]
    pub root: RootArg,
    /// name of the queue the messages are in
    #[arg(value_name = "QUEUE")]
    pub queue: String,
    /// comma-separated file names of messages, waiting or consumed (bare names, no paths), or message ids
    #[arg(value_name = "FILE1,FILE2,...")]
    pub files: String,
}

/// `ddmq json '<json object>'`
#[derive(Args, Debug, Clone)]
pub struct JsonArgs {
    /// the JSON object, within single quotes, e.g. '{"cmd": "publish", "root": "R", "queue": "q", "message": "hi"}'
    #[arg(value_name = "JSON_PAYLOAD")]
    pub json_payload: String,
}

/// `ddmq work [-j N] [--wait SECONDS|inf] [--grace S] [--drain-before S] [--tag] [--joblog FILE] ROOT QUEUE -- COMMAND [ARG...]`
#[derive(Args, Debug, Clone)]
pub struct WorkArgs {
    /// run N tasks at once (default: the number of CPUs this process may use, from its affinity mask)
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// once the queue is empty and nothing runs, wait up to SECONDS for more messages (`inf`: serve forever)
    #[arg(long = "wait", value_name = "SECONDS|inf", value_parser = parse_wait)]
    pub wait: Option<f64>,
    /// seconds the running commands get between the passed-on SIGTERM/SIGINT and SIGKILL (in a Slurm job, fitted below its KillWait)
    #[arg(long = "grace", value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_seconds)]
    pub grace: f64,
    /// in a Slurm job: SECONDS before the job's time limit, take no more tasks and let the running ones finish (as SIGUSR1 does)
    #[arg(long = "drain-before", value_name = "SECONDS", value_parser = parse_seconds)]
    pub drain_before: Option<f64>,
    /// prefix each output line with the message id and a tab
    #[arg(long = "tag")]
    pub tag: bool,
    /// append one line per task to FILE, in GNU parallel's --joblog format
    #[arg(long = "joblog", value_name = "FILE")]
    pub joblog: Option<PathBuf>,
    /// how often an empty queue is looked at again, in milliseconds
    #[arg(long = "poll-ms", visible_alias = "poll_ms", value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_ms: u64,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub root: RootArg,
    /// name of the queue to take the tasks from
    #[arg(value_name = "QUEUE")]
    pub queue: String,
    /// after `--`: the command and its arguments, run without a shell; every `{}` is replaced by the message body, and with no `{}` the body is the command's stdin
    #[arg(value_name = "COMMAND", last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Output formats of `top`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopFormat {
    /// a table, refreshed in place on a terminal
    Table,
    /// one JSON object per refresh (one line each)
    Json,
}

/// `ddmq top [--interval S] [--once] [--format table|json] ROOT [QUEUE...]`
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// seconds between refreshes; rates are measured over this interval
    #[arg(long = "interval", value_name = "SECONDS", default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,
    /// print one report (after one interval, for the rates) and exit
    #[arg(long = "once")]
    pub once: bool,
    /// output format
    #[arg(long = "format", value_enum, default_value_t = TopFormat::Table)]
    pub format: TopFormat,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub root: RootArg,
    /// the queues to show (default: all)
    #[arg(value_name = "QUEUE")]
    pub queues: Vec<String>,
}

fn parse_wait(text: &str) -> Result<f64, String> {
    match text {
        "inf" | "infinity" | "forever" => Ok(f64::INFINITY),
        _ => parse_seconds(text),
    }
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match parse_seconds(text)? {
        s if s >= 0.01 => Ok(s),
        _ => Err("expected at least 0.01 seconds".to_string()),
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..1e9).contains(&s) => Ok(s),
        Ok(_) => Err("expected a number of seconds, at least 0 (and below 1e9)".to_string()),
        Err(e) => Err(format!("expected a number of seconds: {e}")),
    }
}

/// Splits a comma-separated list as the original does (`split(',')`), dropping empty items.
pub fn split_list(list: &str) -> Vec<&str> {
    list.split(',').filter(|s| !s.is_empty()).collect()
}

/// `ddmq mount [-f] [-v] [--log-file FILE] [-o OPTIONS] ROOT MNT` (also as `mount.fuse.ddmq`).
#[derive(Args, Debug)]
pub struct MountArgs {
    /// The ddmq root directory to serve.
    pub root: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated: allow_other, allow_root, ro, rw, uid=N, gid=N, umask=OOO,
    /// wait_limit=SECONDS, create, fsname=NAME, threads=N; options for mount(8) and systemd
    /// (_netdev, nofail, noauto, auto, user, users, defaults, x-systemd.*) are ignored.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Stay in the foreground (log to stderr) instead of daemonising once the mount is up.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Where a background daemon appends its log (default: discarded; use -f to see it).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Log each request (debug level), unless RUST_LOG says otherwise.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Accepted for mount(8) helpers (no mtab): ignored.
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,
    /// Accepted for mount(8) helpers (sloppy options): ignored.
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,
    /// Accepted for mount(8) helpers (the filesystem type): ignored.
    #[arg(short = 't', hide = true)]
    pub fs_type: Option<String>,
}

/// `ddmq umount [-l] MNT`
#[derive(Args, Debug)]
pub struct UmountArgs {
    /// The mountpoint to unmount.
    pub mountpoint: PathBuf,
    /// Detach now even if files are open (they keep working until closed).
    #[arg(short = 'l', long)]
    pub lazy: bool,
}
