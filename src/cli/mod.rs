//! The command line: a drop-in for the original `ddmq` 0.9.10 command (view, create, delete,
//! publish, consume, ack, nack, del_msg, purge, clean, json) with its bugs fixed, plus `mount`
//! and `umount`, and the task farm's `work` and `top`. Parsing is clap's; each subcommand lives in [`commands`], outputs in [`output`],
//! and every outcome becomes an exit code in [`error`].

/// `eprintln!` that never panics: a stderr that fails (closed, full, an injected EIO) must not
/// turn an exit status of 1 into a panic's 101.
macro_rules! warn_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod args;
mod commands;
pub mod error;
mod farm;
mod json_cmd;
pub mod output;

use args::{
    AckArgs, ConsumeArgs, DelMsgArgs, JsonArgs, LogFlags, PublishArgs, QueuesArgs, TopArgs,
    ViewArgs, WorkArgs,
};
use clap::{CommandFactory, Parser, Subcommand};
use error::{CliError, CliResult};
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ddmq",
    about = "Dead Drop Messaging Queue: a message queue with no server (each queue a directory, each message a file)",
    disable_version_flag = true,
    after_help = "For more info about the commands, run\n  ddmq <command> -h"
)]
pub(crate) struct Cli {
    /// print version
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// List queues and number of messages
    View(ViewArgs),
    /// Create queue(s)
    Create(QueuesArgs),
    /// Delete queue(s), with their messages
    Delete(QueuesArgs),
    /// Publish a message to a queue
    Publish(PublishArgs),
    /// Consume message(s) from a queue
    Consume(ConsumeArgs),
    /// Positively acknowledge consumed message(s): delete them
    Ack(AckArgs),
    /// Negatively acknowledge consumed message(s): requeue or drop, as each message says
    Nack(AckArgs),
    /// Delete the specified message(s), waiting or consumed
    #[command(name = "del_msg", visible_alias = "del-msg")]
    DelMsg(DelMsgArgs),
    /// Purge all messages from queue(s)
    Purge(QueuesArgs),
    /// Clean out expired messages from queue(s) now
    Clean(QueuesArgs),
    /// Run a command packaged as a JSON object
    Json(JsonArgs),
    /// Run a command once for each message of a queue, N at a time (ack on success, nack on failure)
    Work(WorkArgs),
    /// Show each queue's waiting, in flight, dead, rates and ETA, refreshed
    Top(TopArgs),
    /// Serve ROOT as a filesystem at MOUNTPOINT.
    Mount(args::MountArgs),
    /// Unmount a ddmq mount.
    Umount(args::UmountArgs),
    #[command(external_subcommand)]
    Unknown(Vec<OsString>),
}

impl Command {
    fn log_flags(&self) -> LogFlags {
        match self {
            Command::View(a) => a.log,
            Command::Create(a) | Command::Delete(a) | Command::Purge(a) | Command::Clean(a) => {
                a.log
            }
            Command::Publish(a) => a.log,
            Command::Consume(a) => a.log,
            Command::Ack(a) | Command::Nack(a) => a.log,
            Command::DelMsg(a) => a.log,
            Command::Work(a) => a.log,
            Command::Top(a) => a.log,
            Command::Json(_) | Command::Mount(_) | Command::Umount(_) | Command::Unknown(_) => {
                LogFlags::default()
            }
        }
    }
}

/// A usage error found after parsing (exit 2, rendered by clap like its own).
pub(crate) fn usage_error(message: &str) -> CliError {
    CliError::Usage(Cli::command().error(clap::error::ErrorKind::ValueValidation, message))
}

/// mount(8) runs `/sbin/mount.fuse.ddmq ROOT MNT -o OPTS` for `mount -t fuse.ddmq` and fstab
/// lines: installed as a symlink to `ddmq` under that name, the binary acts as `ddmq mount`.
fn arguments() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args.first().and_then(|a| {
        std::path::Path::new(a)
            .file_name()
            .map(|n| n.to_os_string())
    });
    if invoked_as.is_some_and(|n| n == "mount.fuse.ddmq" || n == "mount.ddmq") {
        args.insert(1, OsString::from("mount"));
    }
    args
}

pub fn main() -> ExitCode {
    ExitCode::from(run_with_args(arguments()))
}

/// Runs one `ddmq` command line (`args[0]` is the program name) and returns its exit code: the
/// entry point for embedders, such as the Python package's `ddmq` console script.
pub fn run_with_args(args: Vec<OsString>) -> u8 {
    let failed = |e: CliError| {
        e.report();
        e.exit_code()
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return failed(CliError::Usage(e)),
    };
    if cli.version {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "ddmq version {}", crate::VERSION);
        return 0;
    }
    let Some(command) = cli.command else {
        return failed(CliError::NoCommand);
    };
    let result = match command {
        Command::Mount(args) => crate::mount::run_mount(args).map_err(CliError::mount),
        Command::Umount(args) => crate::mount::run_umount(args).map_err(CliError::mount),
        // The runner writes the commands' output itself, line by line, as it comes.
        Command::Work(args) => {
            init_logging(args.log);
            farm::work(&args)
        }
        Command::Unknown(words) => {
            let name = words
                .first()
                .map(|w| w.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(CliError::UnknownCommand(name))
        }
        other => execute(other),
    };
    match result {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

/// Runs one subcommand of the original (a `json` payload first becomes the command it names).
fn execute(command: Command) -> CliResult {
    let (command, from_json) = match command {
        Command::Json(a) => {
            let (command, argv) = json_cmd::command_from_payload(&a.json_payload)?;
            (command, Some(argv))
        }
        other => (other, None),
    };
    init_logging(command.log_flags());
    if let Some(argv) = from_json {
        log::debug!("json payload runs: {argv:?}");
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = run(&command, &mut out);
    let flushed = out.flush().map_err(CliError::stdout);
    result.and(flushed)
}

fn run(command: &Command, out: &mut dyn Write) -> CliResult {
    match command {
        Command::View(a) => commands::view(a, out),
        Command::Create(a) => commands::create(a, out),
        Command::Delete(a) => commands::delete(a, out),
        Command::Publish(a) => commands::publish(a, out),
        Command::Consume(a) => commands::consume(a, out),
        Command::Ack(a) => commands::ack_or_nack(a, commands::Settle::Ack, out),
        Command::Nack(a) => commands::ack_or_nack(a, commands::Settle::Nack, out),
        Command::DelMsg(a) => commands::del_msg(a, out),
        Command::Purge(a) => commands::purge(a, out),
        Command::Clean(a) => commands::clean(a, out),
        Command::Top(a) => farm::top(a, out),
        Command::Json(_)
        | Command::Mount(_)
        | Command::Umount(_)
        | Command::Work(_)
        | Command::Unknown(_) => Err(usage_error("this command cannot be run from here")),
    }
}

/// Logging to stderr as the original formats it (`LEVEL:\tmessage`): warnings by default,
/// RUST_LOG honoured, `-v` raises to info and `-d` to debug. No timestamps, no colour probing
/// beyond env_logger's own: publish must stay a few milliseconds.
fn init_logging(flags: LogFlags) {
    use log::LevelFilter;
    let flag_level = if flags.debug {
        LevelFilter::Debug
    } else if flags.verbose {
        LevelFilter::Info
    } else {
        LevelFilter::Warn
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(flag_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
        if flags.verbose || flags.debug {
            // The flags raise the level, never lower one RUST_LOG asked for.
            let env_level = spec.parse::<LevelFilter>().unwrap_or(LevelFilter::Off);
            builder.filter_level(env_level.max(flag_level));
        }
    }
    builder.format(|buf, record| writeln!(buf, "{}:\t{}", record.level(), record.args()));
    let _ = builder.try_init();
}
