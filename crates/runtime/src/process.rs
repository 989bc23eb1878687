//! The container process's identity and limits: rlimits, user and groups, capability sets,
//! no_new_privs, and finding the executable on the container's PATH.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flotilla_oci::{ALL_CAPS, Process, Rlimit};

use crate::sys;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

pub fn set_rlimits(limits: &[Rlimit]) -> io::Result<()> {
    for l in limits {
        let resource = rlimit_resource(&l.kind)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("unknown rlimit {:?}", l.kind)))?;
        let lim = libc::rlimit { rlim_cur: l.soft, rlim_max: l.hard };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(resource, &lim) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("setrlimit {} {}/{}: {e}", l.kind, l.soft, l.hard)));
        }
    }
    Ok(())
}

/// Capability numbers for `CAP_*` names; unknown names are an error, as in runc.
pub fn cap_bits(names: &[String]) -> io::Result<u64> {
    names.iter().try_fold(0u64, |mask, name| {
        let bit = ALL_CAPS
            .iter()
            .position(|c| Some(*c) == name.strip_prefix("CAP_"))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("unknown capability {name:?}")))?;
        Ok(mask | (1u64 << bit))
    })
}

fn last_cap() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(ALL_CAPS.len() as u64 - 1)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let header = CapHeader { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3
    let lo = |m: u64| m as u32;
    let hi = |m: u64| (m >> 32) as u32;
    let data = [
        CapData { effective: lo(effective), permitted: lo(permitted), inheritable: lo(inheritable) },
        CapData { effective: hi(effective), permitted: hi(permitted), inheritable: hi(inheritable) },
    ];
    // SAFETY: header and two data words, as capset(2) with version 3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc < 0 { Err(io::Error::other(format!("capset: {}", io::Error::last_os_error()))) } else { Ok(()) }
}

/// Drops what the bounding set excludes, switches to the configured user and groups, then
/// sets the effective, permitted, inheritable and ambient sets.
pub fn set_user_and_caps(p: &Process) -> io::Result<()> {
    let bounding = cap_bits(&p.capabilities.bounding)?;
    for cap in 0..=last_cap() {
        if bounding & (1 << cap) == 0 {
            sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong)?;
        }
    }
    sys::prctl(libc::PR_SET_KEEPCAPS, 1)?;
    let groups: Vec<libc::gid_t> = p.user.additional_gids.clone();
    // SAFETY: a valid array of groups.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } < 0 {
        return Err(io::Error::other(format!("setgroups: {}", io::Error::last_os_error())));
    }
    // SAFETY: plain ids.
    if unsafe { libc::setresgid(p.user.gid, p.user.gid, p.user.gid) } < 0 {
        return Err(io::Error::other(format!("setgid {}: {}", p.user.gid, io::Error::last_os_error())));
    }
    // SAFETY: plain ids.
    if unsafe { libc::setresuid(p.user.uid, p.user.uid, p.user.uid) } < 0 {
        return Err(io::Error::other(format!("setuid {}: {}", p.user.uid, io::Error::last_os_error())));
    }
    sys::prctl(libc::PR_SET_KEEPCAPS, 0)?;
    let c = &p.capabilities;
    capset(cap_bits(&c.effective)?, cap_bits(&c.permitted)?, cap_bits(&c.inheritable)?)?;
    // SAFETY: integer arguments only.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    let ambient = cap_bits(&c.ambient)?;
    for cap in 0..64u64 {
        if ambient & (1 << cap) != 0 {
            // SAFETY: integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) };
            if rc < 0 {
                return Err(io::Error::other(format!("raising ambient cap {cap}: {}", io::Error::last_os_error())));
            }
        }
    }
    Ok(())
}

/// The executable `name` names on the container's PATH, as runc finds it (a name with a slash
/// is taken as it is).
pub fn lookup(name: &str, env: &[String]) -> io::Result<PathBuf> {
    let runnable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if runnable(&p) {
            Ok(p)
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("exec: {name:?}: no such executable file")))
        };
    }
    let path = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| runnable(p))
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("exec: {name:?}: executable file not found in $PATH"))
        })
}

pub fn c_strings(items: &[String]) -> io::Result<Vec<CString>> {
    items.iter().map(|s| sys::cstring(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_map_to_kernel_bits() {
        assert_eq!(cap_bits(&["CAP_CHOWN".into(), "CAP_KILL".into()]).unwrap(), 1 | (1 << 5));
        assert_eq!(cap_bits(&["CAP_SYS_PTRACE".into()]).unwrap(), 1 << 19);
        assert!(cap_bits(&["CAP_NOPE".into()]).is_err());
    }

    #[test]
    fn lookup_follows_path_and_needs_an_executable() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];
        assert!(lookup("tool", &env).is_err(), "not executable yet");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(lookup("tool", &env).unwrap(), exe);
        assert_eq!(lookup(exe.to_str().unwrap(), &[]).unwrap(), exe);
        assert!(lookup("/no/such/binary", &env).is_err());
        assert!(lookup("missing", &env).unwrap_err().to_string().contains("not found in $PATH"));
    }
}
