//! `linux.seccomp` compiled to a BPF filter by libseccomp, as runc does it: one rule per
//! syscall name (names this libseccomp does not know are skipped), conditions on the same
//! argument split into separate rules (they are alternatives), rules that repeat the default
//! action left out.
//!
//! Compiling the default profile (~350 syscalls) costs libseccomp about 5 ms of CPU, on every
//! container start; every task of a host uses the same few profiles. So the compiled program is
//! kept in a cache directory (`--seccomp-cache`, which the shim points at the sandbox root's
//! `.seccomp-cache`), one file per profile, holding the profile and the library's version it
//! was compiled from in full: a file is used only when both match exactly, never on its name's
//! hash alone. The cache is root's (0700), like the runtime's state.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use flotilla_oci::{Seccomp, SeccompArg};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("seccomp {what}: {e}"))
}

fn action(name: &str, errno: Option<u32>) -> io::Result<ScmpAction> {
    let errno = errno.unwrap_or(libc::EPERM as u32) as i32;
    Ok(match name {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(errno),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_LOG" => ScmpAction::Log,
        "SCMP_ACT_TRACE" => ScmpAction::Trace(errno as u16),
        other => return Err(err("action", format!("{other:?} is not supported"))),
    })
}

fn arch(name: &str) -> io::Result<ScmpArch> {
    Ok(match name {
        "SCMP_ARCH_X86_64" => ScmpArch::X8664,
        "SCMP_ARCH_X86" => ScmpArch::X86,
        "SCMP_ARCH_X32" => ScmpArch::X32,
        "SCMP_ARCH_AARCH64" => ScmpArch::Aarch64,
        "SCMP_ARCH_ARM" => ScmpArch::Arm,
        other => return Err(err("architecture", format!("{other:?} is not supported"))),
    })
}

fn compare(a: &SeccompArg) -> io::Result<ScmpArgCompare> {
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // The OCI value is the mask and valueTwo the datum.
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(a.index, ScmpCompareOp::MaskedEqual(a.value), a.value_two));
        }
        other => return Err(err("operator", format!("{other:?} is not supported"))),
    };
    Ok(ScmpArgCompare::new(a.index, op, a.value))
}

/// Builds the filter; [`ScmpFilterContext::load`] installs it on the calling thread.
pub fn compile(profile: &Seccomp) -> io::Result<ScmpFilterContext> {
    let default = action(&profile.default_action, None)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("init", e))?;
    // The runtime sets no_new_privs itself when the config asks for it.
    ctx.set_ctl_nnp(false).map_err(|e| err("attribute", e))?;
    let native = ScmpArch::native();
    for a in &profile.architectures {
        let a = arch(a)?;
        if a != native {
            ctx.add_arch(a).map_err(|e| err("architecture", e))?;
        }
    }
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno_ret)?;
        if act == default {
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule.args.iter().map(compare).collect::<io::Result<_>>()?;
        let mut indexes: Vec<u32> = rule.args.iter().map(|a| a.index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let alternatives = indexes.len() < rule.args.len();
        for name in &rule.names {
            let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
            if alternatives {
                for c in &conditions {
                    ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c))
                        .map_err(|e| err(&format!("rule for {name}"), e))?;
                }
            } else {
                ctx.add_rule_conditional(act, syscall, &conditions).map_err(|e| err(&format!("rule for {name}"), e))?;
            }
        }
    }
    Ok(ctx)
}

pub fn load(ctx: &ScmpFilterContext) -> io::Result<()> {
    ctx.load().map_err(|e| err("load", e))
}

/// A filter ready to install on the calling thread.
pub enum Filter {
    Compiled(ScmpFilterContext),
    /// The program, as the kernel takes it, from the cache.
    Program(Vec<libc::sock_filter>),
}

impl Filter {
    /// Installs the filter as libseccomp's `seccomp_load` does with the attributes
    /// [`compile`] sets (no flags, no_new_privs left to the caller).
    pub fn load(&self) -> io::Result<()> {
        match self {
            Filter::Compiled(ctx) => load(ctx),
            Filter::Program(program) => {
                let len = u16::try_from(program.len()).map_err(|_| err("load", "the program is too long"))?;
                let prog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
                // SAFETY: `prog` points at `len` filter instructions that outlive the call;
                // the kernel copies them.
                let rc = unsafe {
                    libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog)
                };
                if rc != 0 {
                    return Err(err("load", io::Error::last_os_error()));
                }
                Ok(())
            }
        }
    }
}

/// What a cached program must have been compiled from: the library's version, the
/// architecture and the profile itself.
fn cache_key(profile: &Seccomp) -> io::Result<Vec<u8>> {
    let version = libseccomp::ScmpVersion::current().map_err(|e| err("version", e))?;
    let mut key =
        format!("{}.{}.{} {:?}\n", version.major, version.minor, version.micro, ScmpArch::native()).into_bytes();
    serde_json::to_writer(&mut key, profile).map_err(|e| err("cache key", e))?;
    Ok(key)
}

/// FNV-1a: the cache file's name only; a file is trusted for its full key, not its name.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The program of `key` in `file`: a length-prefixed copy of the key, then the instructions.
fn read_cached(path: &Path, key: &[u8]) -> Option<Vec<libc::sock_filter>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.read_to_end(&mut bytes).ok()?;
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let rest = bytes.get(8..)?;
    if rest.get(..len)? != key {
        return None;
    }
    let code = &rest[len..];
    if code.is_empty() || !code.len().is_multiple_of(8) {
        return None;
    }
    Some(
        code.chunks_exact(8)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect(),
    )
}

/// Writes `ctx`'s program under `key` to `path`, whole or not at all (a temporary file renamed).
fn write_cached(dir: &Path, path: &Path, key: &[u8], ctx: &ScmpFilterContext) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&(key.len() as u64).to_le_bytes())?;
    f.write_all(key)?;
    ctx.export_bpf(&f).map_err(|e| err("export", e))?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| drop(std::fs::remove_file(&tmp)))
}

/// [`compile`], or the program an earlier compile of the same profile left in `cache`. A cache
/// that cannot be read or written only costs the compile.
pub fn prepare(profile: &Seccomp, cache: Option<&Path>) -> io::Result<Filter> {
    let Some(dir) = cache else { return compile(profile).map(Filter::Compiled) };
    let key = cache_key(profile)?;
    let path = dir.join(format!("{:016x}.bpf", fnv1a64(&key)));
    if let Some(program) = read_cached(&path, &key) {
        return Ok(Filter::Program(program));
    }
    let ctx = compile(profile)?;
    let _ = write_cached(dir, &path, &key, &ctx);
    Ok(Filter::Compiled(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter as libseccomp renders it (pseudo-C).
    fn pfc(ctx: &ScmpFilterContext) -> String {
        let mut out = tempfile::tempfile().unwrap();
        ctx.export_pfc(&mut out).unwrap();
        use std::io::{Read, Seek};
        out.rewind().unwrap();
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn a_profile_compiles_to_its_rules() {
        // The sandbox's default profile is compiled by its own tests; this one is small and
        // shows what each part becomes.
        let profile: Seccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["read", "execve", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}
                ]},
                {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}
            ]
        }))
        .unwrap();
        let text = pfc(&compile(&profile).unwrap());
        assert!(text.contains("read") && text.contains("execve"), "{}", &text[..text.len().min(400)]);
        assert!(text.contains("personality"), "conditional rules are kept");
        assert!(!text.contains("kexec_load"), "a rule repeating the default is left out");
    }

    /// Everything allowed but `getppid`, which fails with ENOSYS.
    fn deny_getppid() -> Seccomp {
        serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": [],
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}]
        }))
        .unwrap()
    }

    /// The program's instructions as the kernel takes them.
    fn bytes(program: &[libc::sock_filter]) -> Vec<u8> {
        program
            .iter()
            .flat_map(|i| {
                let mut b = i.code.to_ne_bytes().to_vec();
                b.extend([i.jt, i.jf]);
                b.extend(i.k.to_ne_bytes());
                b
            })
            .collect()
    }

    #[test]
    fn a_cached_program_is_libseccomps_own_and_is_enforced() {
        let cache = tempfile::tempdir().unwrap();
        let profile = deny_getppid();
        assert!(matches!(prepare(&profile, Some(cache.path())).unwrap(), Filter::Compiled(_)), "the first compiles");
        let Filter::Program(program) = prepare(&profile, Some(cache.path())).unwrap() else {
            panic!("the second prepare compiled again instead of using the cache");
        };
        let mut exported = tempfile::tempfile().unwrap();
        compile(&profile).unwrap().export_bpf(&mut exported).unwrap();
        use std::io::Seek;
        exported.rewind().unwrap();
        let mut expected = Vec::new();
        exported.read_to_end(&mut expected).unwrap();
        assert_eq!(bytes(&program), expected, "the cached program is the one libseccomp makes");

        // Loaded in a child (a filter is for good): getppid fails as the profile says.
        let filter = Filter::Program(program);
        // SAFETY: the child makes only raw system calls and exits without unwinding.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: plain system calls; `filter` outlives the load.
                let code = unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    let loaded = filter.load().is_ok();
                    let ppid = libc::syscall(libc::SYS_getppid);
                    if loaded && ppid == -1 && *libc::__errno_location() == libc::ENOSYS { 0 } else { 1 }
                };
                // SAFETY: leaving the forked child at once.
                unsafe { libc::_exit(code) }
            }
            pid => {
                assert!(pid > 0, "fork failed");
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "getppid was not denied: {status}");
            }
        }
    }

    #[test]
    fn a_cache_file_of_another_profile_is_not_used() {
        let cache = tempfile::tempdir().unwrap();
        let (mine, other) = (deny_getppid(), Seccomp { default_action: "SCMP_ACT_LOG".into(), ..deny_getppid() });
        prepare(&other, Some(cache.path())).unwrap();
        // As if the two names collided: the other profile's file under this one's name.
        let written = std::fs::read_dir(cache.path()).unwrap().next().unwrap().unwrap().path();
        let key = cache_key(&mine).unwrap();
        std::fs::rename(written, cache.path().join(format!("{:016x}.bpf", fnv1a64(&key)))).unwrap();
        assert!(matches!(prepare(&mine, Some(cache.path())).unwrap(), Filter::Compiled(_)));
    }

    #[test]
    fn unknown_actions_and_operators_are_refused() {
        assert!(action("SCMP_ACT_NOPE", None).is_err());
        let bad = SeccompArg { index: 0, value: 1, value_two: 0, op: "SCMP_CMP_NOPE".into() };
        assert!(compare(&bad).is_err());
    }
}
