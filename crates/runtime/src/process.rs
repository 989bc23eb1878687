//! The container process's identity and limits: rlimits, user and groups, capability sets,
//! no_new_privs, and finding the executable on the container's PATH.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flotilla_oci::{ALL_CAPS, Process, Rlimit};
use rustix::process::Resource;
use rustix::thread::{
    CapabilitySet, CapabilitySets, Gid, Uid, clear_ambient_capability_set, configure_capability_in_ambient_set,
    remove_capability_from_bounding_set, set_capabilities, set_keep_capabilities, set_thread_groups,
    set_thread_res_gid, set_thread_res_uid,
};

use crate::sys;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_CPU" => Resource::Cpu,
        "RLIMIT_FSIZE" => Resource::Fsize,
        "RLIMIT_DATA" => Resource::Data,
        "RLIMIT_STACK" => Resource::Stack,
        "RLIMIT_CORE" => Resource::Core,
        "RLIMIT_RSS" => Resource::Rss,
        "RLIMIT_NPROC" => Resource::Nproc,
        "RLIMIT_NOFILE" => Resource::Nofile,
        "RLIMIT_MEMLOCK" => Resource::Memlock,
        "RLIMIT_AS" => Resource::As,
        "RLIMIT_LOCKS" => Resource::Locks,
        "RLIMIT_SIGPENDING" => Resource::Sigpending,
        "RLIMIT_MSGQUEUE" => Resource::Msgqueue,
        "RLIMIT_NICE" => Resource::Nice,
        "RLIMIT_RTPRIO" => Resource::Rtprio,
        "RLIMIT_RTTIME" => Resource::Rttime,
        _ => return None,
    })
}

/// The spec's number for a limit; the kernel's RLIM_INFINITY (all ones) is "none".
fn rlimit_value(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

pub fn set_rlimits(limits: &[Rlimit]) -> io::Result<()> {
    for l in limits {
        let resource = rlimit_resource(&l.kind)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("unknown rlimit {:?}", l.kind)))?;
        let lim = rustix::process::Rlimit { current: rlimit_value(l.soft), maximum: rlimit_value(l.hard) };
        rustix::process::setrlimit(resource, lim).map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("setrlimit {} {}/{}: {e}", l.kind, l.soft, l.hard))
        })?;
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

fn prctl_err(what: &str) -> impl FnOnce(rustix::io::Errno) -> io::Error + '_ {
    move |e| io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

/// One capability by its bit number, as rustix takes it.
fn cap(bit: u64) -> CapabilitySet {
    CapabilitySet::from_bits_retain(1 << bit)
}

/// Drops what the bounding set excludes, switches to the configured user and groups, then
/// sets the effective, permitted, inheritable and ambient sets. The id changes are the
/// thread-level system calls, not libc's process-wide ones: the container's process has one
/// thread.
pub fn set_user_and_caps(p: &Process) -> io::Result<()> {
    let bounding = cap_bits(&p.capabilities.bounding)?;
    for bit in 0..=last_cap() {
        if bounding & (1 << bit) == 0 {
            remove_capability_from_bounding_set(cap(bit)).map_err(prctl_err("dropping a bounding capability"))?;
        }
    }
    set_keep_capabilities(true).map_err(prctl_err("prctl(PR_SET_KEEPCAPS)"))?;
    let groups: Vec<Gid> = p.user.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    set_thread_groups(&groups).map_err(|e| io::Error::other(format!("setgroups: {e}")))?;
    let gid = Gid::from_raw(p.user.gid);
    set_thread_res_gid(gid, gid, gid).map_err(|e| io::Error::other(format!("setgid {}: {e}", p.user.gid)))?;
    let uid = Uid::from_raw(p.user.uid);
    set_thread_res_uid(uid, uid, uid).map_err(|e| io::Error::other(format!("setuid {}: {e}", p.user.uid)))?;
    set_keep_capabilities(false).map_err(prctl_err("prctl(PR_SET_KEEPCAPS)"))?;
    let c = &p.capabilities;
    let sets = CapabilitySets {
        effective: CapabilitySet::from_bits_retain(cap_bits(&c.effective)?),
        permitted: CapabilitySet::from_bits_retain(cap_bits(&c.permitted)?),
        inheritable: CapabilitySet::from_bits_retain(cap_bits(&c.inheritable)?),
    };
    set_capabilities(None, sets).map_err(|e| io::Error::other(format!("capset: {e}")))?;
    // Fails only on kernels without ambient capabilities, where there is nothing to clear.
    let _ = clear_ambient_capability_set();
    let ambient = cap_bits(&c.ambient)?;
    for bit in 0..64u64 {
        if ambient & (1 << bit) != 0 {
            configure_capability_in_ambient_set(cap(bit), true)
                .map_err(|e| io::Error::other(format!("raising ambient cap {bit}: {e}")))?;
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
