//! Container start and stop order from `dependsOn`.
//!
//! A container starts once each of its dependencies has reached its condition: START (the
//! dependency started), COMPLETE (it exited), SUCCESS (it exited 0) or HEALTHY (its health check
//! passed). Containers stop in reverse: one stops only after every container that depends on it
//! has stopped.

use std::collections::HashMap;

use flotilla_types::task::HealthStatus;

/// What the agent knows of one container right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub started: bool,
    pub exit_code: Option<i32>,
    pub health: Option<HealthStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Waiting,
    /// The condition can never be met; the task cannot start.
    Impossible(String),
}

/// Whether a container with these `(dependency, condition)` pairs may start.
pub fn readiness(depends_on: &[(String, String)], observed: &HashMap<String, Observed>) -> Readiness {
    let mut waiting = false;
    for (name, condition) in depends_on {
        let o = observed.get(name).cloned().unwrap_or_default();
        let met = match condition.as_str() {
            "START" => o.started,
            "COMPLETE" => o.exit_code.is_some(),
            "SUCCESS" => match o.exit_code {
                Some(0) => true,
                Some(code) => {
                    return Readiness::Impossible(format!(
                        "dependency {name} exited with code {code}; condition SUCCESS cannot be met"
                    ));
                }
                None => false,
            },
            "HEALTHY" => match (o.health, o.exit_code) {
                (Some(HealthStatus::Healthy), _) => true,
                (_, Some(code)) => {
                    return Readiness::Impossible(format!(
                        "dependency {name} exited with code {code} before becoming HEALTHY"
                    ));
                }
                (Some(HealthStatus::Unhealthy), _) => {
                    return Readiness::Impossible(format!(
                        "dependency {name} is UNHEALTHY; condition HEALTHY cannot be met"
                    ));
                }
                _ => false,
            },
            other => return Readiness::Impossible(format!("unknown dependsOn condition {other}")),
        };
        waiting |= !met;
    }
    if waiting { Readiness::Waiting } else { Readiness::Ready }
}

/// Stop waves: each inner list can be stopped together, after all earlier waves have stopped.
/// Containers nobody depends on go first; dependencies go last.
pub fn stop_waves(containers: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let mut remaining: Vec<&(String, Vec<String>)> = containers.iter().collect();
    let mut waves = Vec::new();
    while !remaining.is_empty() {
        // A container may stop once no remaining container depends on it.
        let wave: Vec<String> = remaining
            .iter()
            .filter(|(name, _)| !remaining.iter().any(|(_, deps)| deps.contains(name)))
            .map(|(name, _)| name.clone())
            .collect();
        if wave.is_empty() {
            // A cycle (validation forbids them); stop the rest together rather than hang.
            waves.push(remaining.iter().map(|(n, _)| n.clone()).collect());
            break;
        }
        remaining.retain(|(name, _)| !wave.contains(name));
        waves.push(wave);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, cond: &str) -> (String, String) {
        (name.to_owned(), cond.to_owned())
    }

    fn seen(entries: &[(&str, Observed)]) -> HashMap<String, Observed> {
        entries.iter().map(|(n, o)| (n.to_string(), o.clone())).collect()
    }

    #[test]
    fn conditions() {
        let running = Observed { started: true, ..Default::default() };
        let exited = |c| Observed { started: true, exit_code: Some(c), health: None };
        let healthy = Observed { started: true, exit_code: None, health: Some(HealthStatus::Healthy) };
        assert_eq!(readiness(&[dep("a", "START")], &seen(&[])), Readiness::Waiting);
        assert_eq!(readiness(&[dep("a", "START")], &seen(&[("a", running.clone())])), Readiness::Ready);
        assert_eq!(readiness(&[dep("a", "COMPLETE")], &seen(&[("a", running.clone())])), Readiness::Waiting);
        assert_eq!(readiness(&[dep("a", "COMPLETE")], &seen(&[("a", exited(4))])), Readiness::Ready);
        assert_eq!(readiness(&[dep("a", "SUCCESS")], &seen(&[("a", exited(0))])), Readiness::Ready);
        assert!(matches!(readiness(&[dep("a", "SUCCESS")], &seen(&[("a", exited(1))])), Readiness::Impossible(_)));
        assert_eq!(readiness(&[dep("a", "HEALTHY")], &seen(&[("a", running)])), Readiness::Waiting);
        assert_eq!(readiness(&[dep("a", "HEALTHY")], &seen(&[("a", healthy.clone())])), Readiness::Ready);
        assert!(matches!(readiness(&[dep("a", "HEALTHY")], &seen(&[("a", exited(0))])), Readiness::Impossible(_)));
        assert_eq!(
            readiness(&[dep("a", "HEALTHY"), dep("b", "COMPLETE")], &seen(&[("a", healthy), ("b", exited(0))])),
            Readiness::Ready
        );
    }

    #[test]
    fn stop_order_reverses_dependencies() {
        // web depends on app, app depends on db.
        let containers = vec![
            ("db".to_owned(), vec![]),
            ("app".to_owned(), vec!["db".to_owned()]),
            ("web".to_owned(), vec!["app".to_owned()]),
            ("sidecar".to_owned(), vec![]),
        ];
        assert_eq!(stop_waves(&containers), vec![vec!["web", "sidecar"], vec!["app"], vec!["db"]]);
    }
}
