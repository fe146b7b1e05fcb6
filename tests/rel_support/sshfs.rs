//! A real network filesystem on loopback: an sshd of our own on 127.0.0.1 and sshfs mounts of one
//! directory, each mount playing another host. Needs root and the Debian packages sshfs and
//! openssh-server (installed here if missing).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Installs the packages once if a binary is missing (apt-get update once, then install).
pub fn ensure_packages() {
    if Path::new("/usr/sbin/sshd").exists() && Path::new("/usr/bin/sshfs").exists() {
        return;
    }
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        ok(Command::new("apt-get").args(["update", "-qq"])),
        "apt-get update failed"
    );
    assert!(
        ok(Command::new("apt-get")
            .args(["install", "-y", "-qq", "sshfs", "openssh-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")),
        "apt-get install sshfs openssh-server failed"
    );
}

pub struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Child,
    mounts: Vec<PathBuf>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    /// Starts sshd on a free port of 127.0.0.1 with fresh host and client keys kept in `dir`.
    pub fn start(dir: &Path) -> Sshd {
        ensure_packages();
        let dir = dir.to_path_buf();
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key)));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPermitRootLogin prohibit-password\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\nMaxStartups 100\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd"); // privilege separation directory
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd {
            dir,
            port,
            child,
            mounts: Vec::new(),
        }
    }

    /// Mounts `remote` (a path on this same machine) at `at` with sshfs. `dir_cache=no`: a host
    /// must see another host's new files at once, as with NFS `lookupcache=positive`/`actimeo`
    /// kept low; `hard_remove`: a file removed or renamed over while open elsewhere is removed at
    /// once instead of being hidden as `.fuse_hidden*` (which libfuse then leaves behind in the
    /// queue); no rename workaround is needed (OpenSSH's sftp server does POSIX rename).
    pub fn mount(&mut self, remote: &Path, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("sshfs")
            .arg(format!("root@127.0.0.1:{}", remote.display()))
            .arg(at)
            .args(["-p", &self.port.to_string(), "-o"])
            .arg(format!(
                "IdentityFile={}/client_key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR,BatchMode=yes,dir_cache=no",
                self.dir.display()
            )));
        self.mounts.push(at.to_path_buf());
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            let _ = Command::new("fusermount").arg("-uz").arg(&m).status();
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&m)
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
