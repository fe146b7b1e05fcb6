//! The command line: a drop-in for the original `ddmq` command, plus `mount` and `umount`.
//! (Skeleton: the subcommands of the original are filled in by the CLI work.)

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ddmq", about = "Dead Drop Messaging Queue: a message queue with no server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve ROOT as a filesystem at MOUNTPOINT.
    Mount(crate::mount::MountArgs),
    /// Unmount a ddmq mount.
    Umount(crate::mount::UmountArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => crate::mount::run_mount(args),
        Command::Umount(args) => crate::mount::run_umount(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}
