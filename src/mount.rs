//! `ddmq mount` and `ddmq umount`: options, daemon life cycle. (Skeleton, filled in by the mount work.)

use std::path::PathBuf;

/// Options of `ddmq mount`.
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The ddmq root directory to serve.
    pub root: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
}

/// Options of `ddmq umount`.
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// The mountpoint to unmount.
    pub mountpoint: PathBuf,
}

pub fn run_mount(args: MountArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err(format!("mount of {} at {} is not built yet", args.root.display(), args.mountpoint.display()).into())
}

pub fn run_umount(args: UmountArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err(format!("umount of {} is not built yet", args.mountpoint.display()).into())
}
