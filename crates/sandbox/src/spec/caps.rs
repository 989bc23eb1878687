//! Capability sets: Fargate's default set, plus `add` (Fargate allows only SYS_PTRACE), minus
//! `drop`.

use crate::task::SpecError;

/// Every capability the kernel knows, by bit number; the list lives with the OCI types.
pub use flotilla_oci::ALL_CAPS;

/// What a Fargate container gets unless it drops some.
pub const FARGATE_DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
];

/// The only capability a Fargate task definition may add.
pub const ADDABLE_CAPS: &[&str] = &["SYS_PTRACE"];

/// Accepts `SYS_PTRACE`, `CAP_SYS_PTRACE` and lower case; returns the bare upper-case name.
fn normalise(name: &str) -> Result<String, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper).to_string();
    if bare == "ALL" || ALL_CAPS.contains(&bare.as_str()) {
        Ok(bare)
    } else {
        Err(SpecError::invalid(format!("unknown capability {name:?}")))
    }
}

/// The container's capability set, sorted by bit number, as `CAP_*` names.
pub fn resolve_caps(add: &[String], drop: &[String]) -> Result<Vec<String>, SpecError> {
    // Docker's order: drops apply to the defaults, then adds, so `drop ALL` + `add X` is X.
    let mut set: Vec<&str> = FARGATE_DEFAULT_CAPS.to_vec();
    for d in drop {
        let d = normalise(d)?;
        if d == "ALL" {
            set.clear();
        } else {
            set.retain(|c| *c != d);
        }
    }
    for a in add {
        let a = normalise(a)?;
        let Some(allowed) = ADDABLE_CAPS.iter().find(|c| **c == a) else {
            return Err(SpecError::invalid(format!(
                "capability {a} cannot be added on Fargate (only {})",
                ADDABLE_CAPS.join(", ")
            )));
        };
        set.push(allowed);
    }
    let mut bits: Vec<usize> = set.iter().filter_map(|c| ALL_CAPS.iter().position(|a| a == c)).collect();
    bits.sort_unstable();
    bits.dedup();
    Ok(bits.into_iter().map(|b| format!("CAP_{}", ALL_CAPS[b])).collect())
}

/// The `CapEff` bitmask `/proc/<pid>/status` shows for a set of `CAP_*` names.
pub fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .filter_map(|c| ALL_CAPS.iter().position(|a| Some(*a) == c.strip_prefix("CAP_")))
        .fold(0, |m, bit| m | (1u64 << bit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_matches_docker_mask() {
        let caps = resolve_caps(&[], &[]).unwrap();
        assert_eq!(caps.len(), 14);
        // Docker and containerd's default set shows as this CapEff.
        assert_eq!(cap_mask(&caps), 0xa80425fb);
    }

    #[test]
    fn add_only_sys_ptrace() {
        let caps = resolve_caps(&["cap_sys_ptrace".into()], &[]).unwrap();
        assert!(caps.contains(&"CAP_SYS_PTRACE".to_string()));
        let err = resolve_caps(&["SYS_ADMIN".into()], &[]).unwrap_err();
        assert!(err.reason.contains("SYS_ADMIN"));
        assert!(resolve_caps(&["NOT_A_CAP".into()], &[]).is_err());
    }

    #[test]
    fn drop_removes_and_all_clears() {
        let caps = resolve_caps(&[], &["NET_RAW".into(), "CAP_MKNOD".into()]).unwrap();
        assert!(!caps.iter().any(|c| c == "CAP_NET_RAW" || c == "CAP_MKNOD"));
        assert_eq!(caps.len(), 12);
        assert!(resolve_caps(&[], &["ALL".into()]).unwrap().is_empty());
        assert_eq!(resolve_caps(&["SYS_PTRACE".into()], &["ALL".into()]).unwrap(), vec!["CAP_SYS_PTRACE"]);
    }
}
