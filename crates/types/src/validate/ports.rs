//! Port mappings. The containers of an awsvpc task share one network namespace, so each port
//! is bound at most once per task and the host port is the container port.

use serde_json::Value;

use super::{Check, FieldError, check_range};
use crate::task_definition::PortMapping;

/// The ports the containers checked so far have mapped.
#[derive(Default)]
pub(super) struct PortClaims {
    claims: Vec<PortClaim>,
}

struct PortClaim {
    first: i32,
    last: i32,
    protocol: String,
    field: String,
}

impl PortClaims {
    /// Checks the mappings of the container at `at` and claims their ports.
    pub(super) fn check(&mut self, at: &str, mappings: &[PortMapping]) -> Check {
        for (j, mapping) in mappings.iter().enumerate() {
            let at = format!("{at}.portMappings[{j}]");
            let range = mapping.other.get("containerPortRange").filter(|v| !v.is_null());
            let (first, last, field) = match (mapping.container_port, range) {
                (Some(port), None) => {
                    let field = format!("{at}.containerPort");
                    check_range(&field, port, 1, 65535, "")?;
                    if let Some(host) = mapping.host_port
                        && host != port
                    {
                        return Err(FieldError::new(
                            format!("{at}.hostPort"),
                            format!(
                                "must be omitted or equal to containerPort ({port}) in the awsvpc network mode, got {host}"
                            ),
                        ));
                    }
                    (port, port, field)
                }
                (None, Some(range)) => {
                    let field = format!("{at}.containerPortRange");
                    let Some((first, last)) = parse_port_range(range) else {
                        return Err(FieldError::new(
                            field,
                            format!("must be \"first-last\" with 1 <= first < last <= 65535, got {range}"),
                        ));
                    };
                    if mapping.host_port.is_some() {
                        return Err(FieldError::new(
                            format!("{at}.hostPort"),
                            "must be omitted with containerPortRange",
                        ));
                    }
                    (first, last, field)
                }
                (Some(_), Some(_)) => {
                    return Err(FieldError::new(
                        format!("{at}.containerPortRange"),
                        "cannot be combined with containerPort; give one or the other",
                    ));
                }
                (None, None) => {
                    return Err(FieldError::new(
                        format!("{at}.containerPort"),
                        "is required (or containerPortRange), between 1 and 65535",
                    ));
                }
            };
            let protocol = mapping.protocol.as_deref().unwrap_or("tcp");
            if !matches!(protocol, "tcp" | "udp") {
                return Err(FieldError::new(format!("{at}.protocol"), format!("must be tcp or udp, got {protocol:?}")));
            }
            let clash = self
                .claims
                .iter()
                .find(|claim| claim.protocol == protocol && claim.first <= last && first <= claim.last);
            if let Some(claim) = clash {
                let port = first.max(claim.first);
                return Err(FieldError::new(
                    field,
                    format!(
                        "port {port}/{protocol} is already mapped by {}; the containers of a task share one network interface",
                        claim.field
                    ),
                ));
            }
            self.claims.push(PortClaim { first, last, protocol: protocol.to_owned(), field });
        }
        Ok(())
    }
}

fn parse_port_range(value: &Value) -> Option<(i32, i32)> {
    let (first, last) = value.as_str()?.split_once('-')?;
    let first: i32 = first.trim().parse().ok()?;
    let last: i32 = last.trim().parse().ok()?;
    (1 <= first && first < last && last <= 65535).then_some((first, last))
}
