//! The `-o` options of `ddmq mount` (as mount(8), fstab and systemd pass them) and what they
//! become: the tree's options, the session's access list.

use super::MountError;
use crate::fs::FsOptions;
use std::time::Duration;

/// Parsed `-o` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    pub read_only: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub umask: Option<u32>,
    pub wait_limit: Duration,
    /// Threads serving requests. One (the default) serves them in the order they came, so a
    /// message written to `in` is in its queue for any request made after the writer's close
    /// (the kernel sends RELEASE without waiting for it); `wait` opens run on threads of their own.
    pub threads: usize,
    /// Initialise the root if needed (as the CLI's -f).
    pub create: bool,
    pub fsname: Option<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            allow_root: false,
            read_only: false,
            uid: None,
            gid: None,
            umask: None,
            wait_limit: Duration::from_secs(30),
            threads: 1,
            create: false,
            fsname: None,
        }
    }
}

impl MountOptions {
    /// Parses `-o` arguments (each a comma-separated list; later options win).
    pub fn parse(args: &[String]) -> Result<MountOptions, MountError> {
        let mut o = MountOptions::default();
        for item in args
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            let bad = |reason: &str| MountError::Option {
                option: item.to_string(),
                reason: reason.to_string(),
            };
            let number = |radix: u32| -> Result<u64, MountError> {
                let v = value.ok_or_else(|| bad("needs a value"))?;
                u64::from_str_radix(v, radix).map_err(|_| {
                    bad(if radix == 8 {
                        "expected an octal number"
                    } else {
                        "expected a number"
                    })
                })
            };
            match key {
                "allow_other" => o.allow_other = true,
                "allow_root" => o.allow_root = true,
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "uid" => o.uid = Some(u32::try_from(number(10)?).map_err(|_| bad("out of range"))?),
                "gid" => o.gid = Some(u32::try_from(number(10)?).map_err(|_| bad("out of range"))?),
                "umask" => {
                    let m = number(8)?;
                    if m > 0o777 {
                        return Err(bad("at most 777"));
                    }
                    o.umask = Some(m as u32);
                }
                "wait_limit" => {
                    let v = value.ok_or_else(|| bad("needs a value"))?;
                    let secs: f64 = v.parse().map_err(|_| bad("expected seconds"))?;
                    if !(0.0..=86400.0).contains(&secs) {
                        return Err(bad("between 0 and 86400 seconds"));
                    }
                    o.wait_limit = Duration::from_secs_f64(secs);
                }
                "threads" => {
                    let n = number(10)?;
                    if !(1..=64).contains(&n) {
                        return Err(bad("between 1 and 64"));
                    }
                    o.threads = n as usize;
                }
                "create" => o.create = true,
                "fsname" => o.fsname = Some(value.ok_or_else(|| bad("needs a value"))?.to_string()),
                // The daemon checks every request itself (see crate::fs's access module);
                // asking the kernel to check as well would refuse copy tools' chmod of `in`.
                "default_permissions" => {}
                // For mount(8), systemd and fstab, not for the filesystem.
                "_netdev" | "nofail" | "noauto" | "auto" | "user" | "users" | "nouser"
                | "defaults" | "nodev" | "nosuid" | "noexec" | "exec" | "dev" | "suid"
                | "atime" | "noatime" | "relatime" | "async" | "subtype" => {}
                k if k.starts_with("x-") || k.starts_with("comment=") => {}
                _ => return Err(bad("unknown option")),
            }
        }
        Ok(o)
    }

    /// The tree's options (`uid=`, `gid=`, `umask=` override what the tree derives from ROOT).
    pub fn fs_options(&self) -> FsOptions {
        FsOptions {
            read_only: self.read_only,
            uid: self.uid,
            gid: self.gid,
            umask: self.umask,
            wait_limit: self.wait_limit,
            ..FsOptions::default()
        }
    }

    /// The option that admits users other than the mount's owner, if any.
    pub fn admits_others(&self) -> Option<&'static str> {
        if self.allow_other {
            Some("allow_other")
        } else if self.allow_root {
            Some("allow_root")
        } else {
            None
        }
    }

    /// Who may use the mount besides its owner.
    pub fn acl(&self) -> fuser::SessionACL {
        if self.allow_other {
            fuser::SessionACL::All
        } else if self.allow_root {
            fuser::SessionACL::RootAndOwner
        } else {
            fuser::SessionACL::Owner
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountOptions, MountError> {
        MountOptions::parse(&[s.to_string()])
    }

    #[test]
    fn options_parse_as_fuse_tools_expect() {
        let o = parse("allow_other,ro,uid=1000,gid=100,umask=027,wait_limit=2.5,_netdev,x-systemd.automount,create").unwrap();
        assert!(o.allow_other && o.read_only && o.create);
        assert_eq!(
            (o.uid, o.gid, o.umask),
            (Some(1000), Some(100), Some(0o027))
        );
        assert_eq!(o.wait_limit, Duration::from_millis(2500));
        assert!(!parse("ro,rw").unwrap().read_only);
        assert_eq!(MountOptions::parse(&[]).unwrap(), MountOptions::default());
        for bad in [
            "bogus",
            "uid=x",
            "umask=999",
            "wait_limit=-1",
            "threads=0",
            "fsname",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("nosuch").unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
    }
}
