//! Real distributed filesystems on this machine, each mounted several times: every client mount
//! has its own caches, as another host's would. Started and stopped by `scripts/cluster-fs`
//! (GlusterFS: glusterd and one brick; MooseFS: master and chunkserver in a network namespace).
//! Needs root; the Debian packages are installed by the script if missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gluster,
    MooseFs,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Gluster => "gluster",
            Kind::MooseFs => "moosefs",
        }
    }
}

/// glusterd and the MooseFS namespace are one per machine: one cluster of a kind at a time.
static GLUSTER_TURN: Mutex<()> = Mutex::new(());
static MOOSEFS_TURN: Mutex<()> = Mutex::new(());

pub struct Cluster {
    pub kind: Kind,
    pub dir: PathBuf,
    /// One mountpoint per "host".
    pub mounts: Vec<PathBuf>,
    _state: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster-fs")
}

impl Cluster {
    /// Starts `kind` with `hosts` client mounts. `brick_size` (GlusterFS only): a tmpfs brick of
    /// that size (such as "2m"), for a full disk.
    pub fn start(kind: Kind, hosts: usize, brick_size: Option<&str>) -> Cluster {
        let turn = match kind {
            Kind::Gluster => &GLUSTER_TURN,
            Kind::MooseFs => &MOOSEFS_TURN,
        }
        .lock()
        .unwrap_or_else(|p| p.into_inner());
        // Under /dev/shm: the brick is a directory of this one (tmpfs, as cluster-notes advise).
        let state = tempfile::Builder::new()
            .prefix("ddmq-cluster-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let dir = state.path().to_path_buf();
        let mut cmd = Command::new(script());
        cmd.args(["up", kind.arg()])
            .arg(&dir)
            .arg(hosts.to_string());
        if let Some(size) = brick_size {
            cmd.arg(size);
        }
        let out = cmd.output().unwrap();
        let mut cluster = Cluster {
            kind,
            dir: dir.clone(),
            mounts: Vec::new(),
            _state: state,
            _turn: turn,
        };
        assert!(
            out.status.success(),
            "scripts/cluster-fs up {} failed: {}{}",
            kind.arg(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.mounts = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect();
        assert_eq!(cluster.mounts.len(), hosts, "{:?}", cluster.mounts);
        cluster
    }

    /// Starts the brick's operation counts (GlusterFS).
    pub fn profile_start(&self) {
        let ok = Command::new(script())
            .arg("profile")
            .arg(&self.dir)
            .arg("start")
            .status()
            .unwrap()
            .success();
        assert!(ok, "gluster volume profile start failed");
    }

    /// The operations that reached the brick since the last call, by name (GlusterFS profile).
    pub fn profile_ops(&self) -> Vec<(String, u64)> {
        let out = Command::new(script())
            .arg("profile")
            .arg(&self.dir)
            .arg("info")
            .output()
            .unwrap();
        parse_profile(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Sums the "No. of calls" column of each fop in `gluster volume profile info incremental`.
pub fn parse_profile(text: &str) -> Vec<(String, u64)> {
    let mut ops: Vec<(String, u64)> = Vec::new();
    for line in text.lines() {
        // "  0.00  12.34 us  1.00 us  40.00 us  17  LOOKUP"
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 2 {
            continue;
        }
        let name = cols[cols.len() - 1];
        if !name.chars().all(|c| c.is_ascii_uppercase()) || name.len() < 3 {
            continue;
        }
        let Ok(calls) = cols[cols.len() - 2].parse::<u64>() else {
            continue;
        };
        match ops.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += calls,
            None => ops.push((name.to_string(), calls)),
        }
    }
    ops
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg(&self.dir).status();
    }
}
