//! ECS `ulimits` -> OCI rlimits, clamped to what the host lets us set. A process without
//! CAP_SYS_RESOURCE cannot raise a hard limit above its own, and runc fails the whole start
//! if asked to, so every limit is capped at the shim's own hard limit.

use std::collections::BTreeMap;

use rustix::process::Resource;

use crate::oci::Rlimit;
use crate::task::{SpecError, Ulimit};

/// ECS ulimit name -> (OCI name, Linux resource).
const RESOURCES: &[(&str, &str, Resource)] = &[
    ("cpu", "RLIMIT_CPU", Resource::Cpu),
    ("fsize", "RLIMIT_FSIZE", Resource::Fsize),
    ("data", "RLIMIT_DATA", Resource::Data),
    ("stack", "RLIMIT_STACK", Resource::Stack),
    ("core", "RLIMIT_CORE", Resource::Core),
    ("rss", "RLIMIT_RSS", Resource::Rss),
    ("nproc", "RLIMIT_NPROC", Resource::Nproc),
    ("nofile", "RLIMIT_NOFILE", Resource::Nofile),
    ("memlock", "RLIMIT_MEMLOCK", Resource::Memlock),
    ("locks", "RLIMIT_LOCKS", Resource::Locks),
    ("sigpending", "RLIMIT_SIGPENDING", Resource::Sigpending),
    ("msgqueue", "RLIMIT_MSGQUEUE", Resource::Msgqueue),
    ("nice", "RLIMIT_NICE", Resource::Nice),
    ("rtprio", "RLIMIT_RTPRIO", Resource::Rtprio),
    ("rttime", "RLIMIT_RTTIME", Resource::Rttime),
];

/// Fargate overrides only nofile: soft and hard 65535.
pub const FARGATE_DEFAULT_NOFILE: u64 = 65535;

/// The shim's own hard limits by ECS name (`u64::MAX` = unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimits {
    pub hard: BTreeMap<String, u64>,
}

impl HostLimits {
    /// Reads this process's hard limits with getrlimit(2).
    pub fn current() -> Self {
        let mut hard = BTreeMap::new();
        for (name, _, resource) in RESOURCES {
            // `None` is RLIM_INFINITY.
            let max = rustix::process::getrlimit(*resource).maximum.unwrap_or(u64::MAX);
            hard.insert(name.to_string(), max);
        }
        HostLimits { hard }
    }

    /// No limits at all; for tests.
    pub fn unlimited() -> Self {
        HostLimits { hard: RESOURCES.iter().map(|(n, _, _)| (n.to_string(), u64::MAX)).collect() }
    }

    fn cap(&self, name: &str) -> u64 {
        self.hard.get(name).copied().unwrap_or(u64::MAX)
    }
}

/// The container's rlimits: Fargate's nofile default, then the task definition's ulimits,
/// each clamped to the host. Unlisted resources are inherited from the shim.
pub fn resolve_rlimits(ulimits: &[Ulimit], host: &HostLimits) -> Result<Vec<Rlimit>, SpecError> {
    let mut wanted: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    wanted.insert("nofile", (FARGATE_DEFAULT_NOFILE, FARGATE_DEFAULT_NOFILE));
    for u in ulimits {
        let Some((name, _, _)) = RESOURCES.iter().find(|(n, _, _)| *n == u.name) else {
            return Err(SpecError::invalid(format!("unknown ulimit {:?}", u.name)));
        };
        if u.soft_limit > u.hard_limit {
            return Err(SpecError::invalid(format!(
                "ulimit {}: softLimit {} exceeds hardLimit {}",
                u.name, u.soft_limit, u.hard_limit
            )));
        }
        wanted.insert(name, (u.soft_limit, u.hard_limit));
    }
    let mut out: Vec<Rlimit> = wanted
        .into_iter()
        .map(|(name, (soft, hard))| {
            let hard = hard.min(host.cap(name));
            let oci = RESOURCES.iter().find(|(n, _, _)| *n == name).map(|(_, o, _)| *o).unwrap_or_default();
            Rlimit { kind: oci.to_string(), hard, soft: soft.min(hard) }
        })
        .collect();
    out.sort_by(|a, b| a.kind.cmp(&b.kind));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(nofile: u64) -> HostLimits {
        let mut h = HostLimits::unlimited();
        h.hard.insert("nofile".into(), nofile);
        h
    }

    #[test]
    fn default_nofile_is_clamped_to_the_host() {
        assert_eq!(
            resolve_rlimits(&[], &host(20_000)).unwrap(),
            vec![Rlimit { kind: "RLIMIT_NOFILE".into(), hard: 20_000, soft: 20_000 }]
        );
        assert_eq!(
            resolve_rlimits(&[], &HostLimits::unlimited()).unwrap(),
            vec![Rlimit { kind: "RLIMIT_NOFILE".into(), hard: 65535, soft: 65535 }]
        );
    }

    #[test]
    fn requested_limits_override_and_clamp() {
        let ul = vec![
            Ulimit { name: "nofile".into(), soft_limit: 1024, hard_limit: 100_000 },
            Ulimit { name: "core".into(), soft_limit: 0, hard_limit: 0 },
        ];
        let got = resolve_rlimits(&ul, &host(20_000)).unwrap();
        assert_eq!(
            got,
            vec![
                Rlimit { kind: "RLIMIT_CORE".into(), hard: 0, soft: 0 },
                Rlimit { kind: "RLIMIT_NOFILE".into(), hard: 20_000, soft: 1024 },
            ]
        );
    }

    #[test]
    fn bad_ulimits_are_rejected() {
        let unknown = vec![Ulimit { name: "files".into(), soft_limit: 1, hard_limit: 1 }];
        assert!(resolve_rlimits(&unknown, &host(10)).is_err());
        let inverted = vec![Ulimit { name: "nofile".into(), soft_limit: 10, hard_limit: 1 }];
        assert!(resolve_rlimits(&inverted, &host(10)).is_err());
    }

    #[test]
    fn reads_the_real_host_limits() {
        let h = HostLimits::current();
        assert!(h.hard.get("nofile").copied().unwrap_or(0) > 0);
    }
}
