//! The CLI layer's one error type, and the one place where outcomes become exit codes.
//!
//! Exit codes are those of ddmq 0.9.10: 0 for success and for its "soft" outcomes (already
//! existing, queue not existing, failed ack, no more messages; these print a line and carry on),
//! 1 for errors (one message on stderr), 2 for a subcommand's usage errors (clap's message, where
//! the original's argparse exits 2). No command, or an unknown one, prints the help and exits 1:
//! the original's `main()` does that itself, before any argparse runs. `ddmq work` adds 1 when
//! any task failed, 2 when its command cannot be found (or `--drain-before` is given outside a
//! Slurm job), and 128+N when signal N stopped it.

use crate::engine;
use clap::CommandFactory;
use std::io;

/// Everything that can make a `ddmq` invocation fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command line (or `json` payload that maps to one): exit 2, clap's own text.
    #[error("{0}")]
    Usage(#[from] clap::Error),
    /// The engine refused or failed; its message names the path or queue.
    #[error("{0}")]
    Engine(#[from] engine::Error),
    /// A failure the CLI words itself (missing queue, missing root, invalid queue name …).
    #[error("{0}")]
    Failed(String),
    /// Some items of a comma-separated list failed; each was reported on stderr as it happened.
    #[error("{failed} of {total} {what} failed")]
    Partial {
        what: &'static str,
        failed: usize,
        total: usize,
    },
    /// Reading stdin or writing stdout failed.
    #[error("{op}: {source}")]
    Io { op: &'static str, source: io::Error },
    /// `ddmq` with no command: the help goes to stderr.
    #[error("no command given")]
    NoCommand,
    /// `ddmq frob`: named as the original names it, then the help.
    #[error("Unrecognized command: {0}")]
    UnknownCommand(String),
    /// `mount` / `umount` failed: the daemon's error, naming what it was doing and on what.
    #[error("{0}")]
    Mount(#[from] crate::mount::MountError),
    /// `work` could not run (its own error type).
    #[error("{0}")]
    Work(crate::work::Error),
    /// `work` ran, and this many tasks failed (its summary said so).
    #[error("{0} tasks failed")]
    TasksFailed(u64),
    /// `work` was stopped by this signal (its summary said so).
    #[error("stopped by signal {0}")]
    Stopped(i32),
}

pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError::Failed(message.into())
    }

    /// An error opening ROOT, with the advice the engine leaves to us: `fix_flag` is the flag of
    /// this command that creates or initialises the root, if it has one.
    pub fn opening_root(e: engine::Error, fix_flag: Option<&str>) -> CliError {
        let what = match e {
            engine::Error::RootMissing(_) => "create",
            engine::Error::RootUninitiated(_) => "initiate",
            _ => return e.into(),
        };
        match fix_flag {
            Some(flag) => CliError::Failed(format!("{e} (use {flag} to {what} it)")),
            None => e.into(),
        }
    }

    /// A failure of `mount` or `umount`; a root that `-o create` would make says so.
    pub fn mount(e: crate::mount::MountError) -> CliError {
        match e {
            crate::mount::MountError::Engine(e) => Self::opening_root(e, Some("-o create")),
            other => CliError::Mount(other),
        }
    }

    pub fn stdout(source: io::Error) -> CliError {
        CliError::Io {
            op: "writing to stdout",
            source,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(e) => e.exit_code().clamp(0, 255) as u8,
            // A command that cannot be run is a mistake in the command line, not a task's failure.
            CliError::Work(crate::work::Error::CommandNotFound(_)) => 2,
            // So is an option that cannot apply where the runner runs.
            CliError::Work(crate::work::Error::NotInSlurmJob) => 2,
            CliError::Stopped(signal) => (128 + signal).clamp(0, 255) as u8,
            CliError::TasksFailed(_) => 1,
            CliError::NoCommand
            | CliError::UnknownCommand(_)
            | CliError::Engine(_)
            | CliError::Failed(_)
            | CliError::Partial { .. }
            | CliError::Io { .. }
            | CliError::Mount(_)
            | CliError::Work(_) => 1,
        }
    }

    /// Prints the error the way the original does (`Error: …` on stderr; usage errors as clap
    /// renders them, help and version requests on stdout).
    pub fn report(&self) {
        match self {
            CliError::Usage(e) => {
                let _ = e.print();
            }
            CliError::NoCommand => eprint!("{}", super::Cli::command().render_help()),
            CliError::UnknownCommand(_) => {
                warn_line!("{self}");
                eprint!("{}", super::Cli::command().render_help());
            }
            // The runner's summary line already told.
            CliError::TasksFailed(_) | CliError::Stopped(_) => {}
            // A broken pipe on stdout is the reader's choice (`ddmq view R | head`): no noise.
            CliError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe => {}
            other => warn_line!("Error: {other}"),
        }
    }
}
