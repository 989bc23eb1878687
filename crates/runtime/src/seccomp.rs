//! `linux.seccomp` compiled to a BPF filter by libseccomp, as runc does it: one rule per
//! syscall name (names this libseccomp does not know are skipped), conditions on the same
//! argument split into separate rules (they are alternatives), rules that repeat the default
//! action left out.

use std::io;

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

    #[test]
    fn unknown_actions_and_operators_are_refused() {
        assert!(action("SCMP_ACT_NOPE", None).is_err());
        let bad = SeccompArg { index: 0, value: 1, value_two: 0, op: "SCMP_CMP_NOPE".into() };
        assert!(compare(&bad).is_err());
    }
}
