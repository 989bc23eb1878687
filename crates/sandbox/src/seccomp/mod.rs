//! The default seccomp policy. The policy itself is data (`default.json`, our own format,
//! modelled on Docker's default profile); this module selects the rules that apply to a
//! container's architecture and capabilities and renders them as the OCI seccomp object.

use serde::Deserialize;

use crate::oci::{Seccomp, SeccompArg, Syscall};

const DEFAULT_POLICY: &str = include_str!("default.json");

#[derive(Debug, Deserialize)]
struct Policy {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    action: Action,
    names: Vec<String>,
    #[serde(default)]
    errno: Option<u32>,
    #[serde(default)]
    args: Vec<SeccompArg>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    not_caps: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Allow,
    Errno,
}

/// Host architecture as the policy names it, plus the seccomp arches its processes can use
/// (32-bit compat modes included, so that their syscall numbers are filtered too).
fn arch() -> (&'static str, Vec<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" if x32_syscalls_work() => ("x86_64", vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        // Without the x32 ABI in the kernel (the default almost everywhere) an x32 syscall
        // fails whatever the filter says; leaving the arch out of the filter only changes how
        // it fails (the filter's verdict instead of ENOSYS) and saves runc ~6 ms per start,
        // a third of the profile's cost.
        "x86_64" => ("x86_64", vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]),
        "aarch64" => ("aarch64", vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        "riscv64" => ("riscv64", vec!["SCMP_ARCH_RISCV64"]),
        other => (other, vec![]),
    }
}

/// Whether this kernel runs x32-ABI syscalls: a child makes one (`getpid` with the x32 bit)
/// and reports. Asked once per process; when in doubt, yes.
#[cfg(target_arch = "x86_64")]
fn x32_syscalls_work() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
        // A fork whose exit signal is 0 rather than SIGCHLD: a `waitpid(-1)` reaper in this
        // process (the shim has one) does not collect such a child; only `__WCLONE` does.
        // SAFETY: clone without CLONE_VM or a new stack behaves as fork. The child only makes
        // raw syscalls and exits, which is allowed after fork in a multi-threaded process; an
        // outer seccomp filter may kill it, which reads as "no".
        let pid = unsafe { libc::syscall(libc::SYS_clone, 0 as libc::c_ulong, 0 as libc::c_ulong, 0, 0, 0) };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let r = libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid);
                libc::syscall(libc::SYS_exit_group, if r > 0 { 0 } else { 1 });
            }
        }
        if pid < 0 {
            return true;
        }
        let mut status = 0;
        let waited = loop {
            // SAFETY: waits for the child just created, writing into a valid i32.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::__WCLONE) };
            if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break r;
            }
        };
        if waited != pid as libc::pid_t {
            return true;
        }
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_syscalls_work() -> bool {
    false
}

/// The seccomp filter for a container whose effective capabilities are `caps` (`CAP_*`).
pub fn default_profile(caps: &[String]) -> Seccomp {
    // The policy is compiled in and covered by a unit test; failing to parse it is a build bug.
    let policy: Policy = serde_json::from_str(DEFAULT_POLICY).expect("seccomp/default.json is valid");
    let (host_arch, architectures) = arch();
    let has = |c: &String| caps.contains(c);
    let syscalls = policy
        .rules
        .into_iter()
        .filter(|r| r.arches.is_empty() || r.arches.iter().any(|a| a == host_arch))
        .filter(|r| r.caps.iter().all(has))
        .filter(|r| !r.not_caps.iter().any(has))
        .map(|r| Syscall {
            names: r.names,
            action: match r.action {
                Action::Allow => "SCMP_ACT_ALLOW".to_string(),
                Action::Errno => "SCMP_ACT_ERRNO".to_string(),
            },
            errno_ret: r.errno,
            args: r.args,
        })
        .collect();
    Seccomp {
        default_action: "SCMP_ACT_ERRNO".to_string(),
        architectures: architectures.into_iter().map(str::to_string).collect(),
        syscalls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::caps::resolve_caps;

    fn allowed(p: &Seccomp, name: &str) -> bool {
        p.syscalls
            .iter()
            .any(|s| s.action == "SCMP_ACT_ALLOW" && s.args.is_empty() && s.names.iter().any(|n| n == name))
    }

    #[test]
    fn the_default_profile_compiles_with_the_builtin_runtime() {
        let profile = default_profile(&resolve_caps(&[], &[]).unwrap());
        let ctx = flotilla_runtime::seccomp::compile(&profile).unwrap();
        // libseccomp can render what it built: the allow list is in it.
        let mut out = tempfile::tempfile().unwrap();
        ctx.export_pfc(&mut out).unwrap();
        use std::io::{Read, Seek};
        out.rewind().unwrap();
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        assert!(text.contains("read") && text.contains("execve"), "{}", &text[..text.len().min(400)]);
        assert!(!text.contains("kexec_load"), "an admin syscall is allowed");
    }

    #[test]
    fn default_caps_get_the_usual_allow_list_and_no_admin_syscalls() {
        let p = default_profile(&resolve_caps(&[], &[]).unwrap());
        assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
        for ok in ["read", "write", "execve", "openat", "clone3", "chroot", "socket"] {
            let present = p.syscalls.iter().any(|s| s.names.iter().any(|n| n == ok));
            assert!(present, "{ok} has no rule");
        }
        for denied in ["mount", "unshare", "setns", "kexec_load", "init_module", "keyctl", "add_key", "reboot", "bpf"] {
            assert!(!allowed(&p, denied), "{denied} must not be allowed");
        }
        // clone is allowed only without namespace flags; clone3 fails with ENOSYS.
        let clone = p.syscalls.iter().find(|s| s.names == ["clone"]).unwrap();
        assert_eq!(clone.args[0].op, "SCMP_CMP_MASKED_EQ");
        let clone3 = p.syscalls.iter().find(|s| s.names == ["clone3"]).unwrap();
        assert_eq!(clone3.errno_ret, Some(38));
        assert!(!allowed(&p, "kcmp"));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x32_is_filtered_exactly_when_the_kernel_runs_it() {
        // The probe agrees with the kernel's own configuration where that is readable.
        let p = default_profile(&resolve_caps(&[], &[]).unwrap());
        assert!(p.architectures.iter().any(|a| a == "SCMP_ARCH_X86"));
        let has_x32 = p.architectures.iter().any(|a| a == "SCMP_ARCH_X32");
        assert_eq!(has_x32, x32_syscalls_work());
        if let Ok(out) = std::process::Command::new("sh").args(["-c", "zcat /proc/config.gz"]).output()
            && String::from_utf8_lossy(&out.stdout).contains("# CONFIG_X86_X32_ABI is not set")
        {
            assert!(!has_x32);
        }
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let p = default_profile(&resolve_caps(&["SYS_PTRACE".into()], &[]).unwrap());
        assert!(allowed(&p, "kcmp"));
        let p = default_profile(&resolve_caps(&[], &["SYS_CHROOT".into()]).unwrap());
        assert!(!allowed(&p, "chroot"));
    }
}
