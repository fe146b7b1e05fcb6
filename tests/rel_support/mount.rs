//! A `ddmq mount` daemon run in the foreground as our child, so a test can read its memory and
//! descriptors from /proc, kill it with SIGKILL, and always unmount what it mounted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mount {
    pub mnt: PathBuf,
    pub child: Option<Child>,
}

/// True when `path` is a mountpoint (its device differs from its parent's).
pub fn is_mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.display().to_string();
    mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

impl Mount {
    pub fn start(root: &Path, mnt: &Path) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let child = Command::new(super::ddmq_bin())
            .args(["mount", "-f"])
            .arg(root)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let m = Mount {
            mnt: mnt.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(mnt) {
            assert!(
                Instant::now() < deadline,
                "ddmq mount did not mount {}",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL the daemon and clear the dead mount (as an admin would: fusermount -uz).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            super::sigkill(&mut c);
        }
        let _ = Command::new("fusermount")
            .arg("-uz")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
    }

    /// A clean stop: `ddmq umount`, then the daemon exits by itself.
    pub fn stop(&mut self) {
        let st = Command::new(super::ddmq_bin())
            .arg("umount")
            .arg(&self.mnt)
            .status()
            .unwrap();
        assert!(st.success(), "ddmq umount failed");
        if let Some(mut c) = self.child.take() {
            assert!(
                super::wait_or_kill(&mut c, Duration::from_secs(30)).is_some(),
                "the daemon did not exit after umount"
            );
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new(super::ddmq_bin())
                .arg("umount")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
            if let Some(mut c) = self.child.take() {
                super::wait_or_kill(&mut c, Duration::from_secs(10));
            }
            let _ = Command::new("fusermount")
                .arg("-uz")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
        }
    }
}
