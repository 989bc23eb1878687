//! Load balancer and target group attributes: ELB's key/value pairs, each key with its default
//! and its allowed values. Only keys Flotilla honours are accepted; any other is refused, so a
//! setting never silently does nothing.

use std::collections::BTreeMap;

use flotilla_host::lb::{LbKind, TargetProtocol};
use serde::{Deserialize, Serialize};

use crate::ElbError;

/// One attribute as the API carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub key: String,
    pub value: String,
}

impl Attribute {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Attribute {
        Attribute { key: key.into(), value: value.into() }
    }
}

/// What values a key takes.
#[derive(Clone, Copy)]
enum Allowed {
    Bool,
    /// An integer in the range, or 0 where the second flag says so.
    Range(u32, u32, bool),
    OneOf(&'static [&'static str]),
}

struct Key {
    key: &'static str,
    default: &'static str,
    allowed: Allowed,
}

const fn key(key: &'static str, default: &'static str, allowed: Allowed) -> Key {
    Key { key, default, allowed }
}

const APPLICATION: &[Key] = &[
    key("deletion_protection.enabled", "false", Allowed::Bool),
    key("idle_timeout.timeout_seconds", "60", Allowed::Range(1, 4000, false)),
    key("routing.http2.enabled", "true", Allowed::Bool),
    key("routing.http.drop_invalid_header_fields.enabled", "false", Allowed::Bool),
    key("client_keep_alive.seconds", "3600", Allowed::Range(60, 604800, false)),
    // Every node reaches every target; it cannot be turned off on application load balancers.
    key("load_balancing.cross_zone.enabled", "true", Allowed::OneOf(&["true"])),
];

const NETWORK: &[Key] = &[
    key("deletion_protection.enabled", "false", Allowed::Bool),
    key("load_balancing.cross_zone.enabled", "false", Allowed::Bool),
];

const HTTP_GROUP: &[Key] = &[
    key("deregistration_delay.timeout_seconds", "300", Allowed::Range(0, 3600, false)),
    key("slow_start.duration_seconds", "0", Allowed::Range(30, 900, true)),
    key("stickiness.enabled", "false", Allowed::Bool),
    key("stickiness.type", "lb_cookie", Allowed::OneOf(&["lb_cookie"])),
    key("stickiness.lb_cookie.duration_seconds", "86400", Allowed::Range(1, 604800, false)),
    key("load_balancing.algorithm.type", "round_robin", Allowed::OneOf(&["round_robin"])),
];

const TCP_GROUP: &[Key] = &[
    key("deregistration_delay.timeout_seconds", "300", Allowed::Range(0, 3600, false)),
    key("stickiness.enabled", "false", Allowed::Bool),
    key("stickiness.type", "source_ip", Allowed::OneOf(&["source_ip"])),
    key("proxy_protocol_v2.enabled", "false", Allowed::OneOf(&["false"])),
    key("preserve_client_ip.enabled", "false", Allowed::OneOf(&["false"])),
];

fn check(table: &[Key], attr: &Attribute) -> Result<(), ElbError> {
    let Some(k) = table.iter().find(|k| k.key == attr.key) else {
        return Err(ElbError::Validation(format!("Attribute key '{}' is not recognized", attr.key)));
    };
    let v = attr.value.as_str();
    let ok = match k.allowed {
        Allowed::Bool => v == "true" || v == "false",
        Allowed::Range(lo, hi, zero) => v.parse::<u32>().is_ok_and(|n| (zero && n == 0) || (lo..=hi).contains(&n)),
        Allowed::OneOf(values) => values.contains(&v),
    };
    if !ok {
        let allowed = match k.allowed {
            Allowed::Bool => "'true' or 'false'".to_owned(),
            Allowed::Range(lo, hi, zero) => format!("{}{lo} to {hi}", if zero { "0 or " } else { "" }),
            Allowed::OneOf(values) => values.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", "),
        };
        return Err(ElbError::Validation(format!("Attribute '{}' value '{v}' is not valid: allowed {allowed}", k.key)));
    }
    Ok(())
}

/// Every key of `table` with its value (the set one, else the default), sorted by key.
fn all(table: &[Key], set: &BTreeMap<String, String>) -> Vec<Attribute> {
    let mut out: Vec<Attribute> =
        table.iter().map(|k| Attribute::new(k.key, set.get(k.key).map(String::as_str).unwrap_or(k.default))).collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn value<'a>(table: &'a [Key], set: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    set.get(key).map(String::as_str).or_else(|| table.iter().find(|k| k.key == key).map(|k| k.default))
}

/// Refuses the same key twice in one request, as ELB does.
fn no_repeats(attrs: &[Attribute]) -> Result<(), ElbError> {
    for (i, a) in attrs.iter().enumerate() {
        if attrs[..i].iter().any(|b| b.key == a.key) {
            return Err(ElbError::Validation(format!("Attribute key '{}' is given more than once", a.key)));
        }
    }
    Ok(())
}

/// A load balancer's attributes that differ from the defaults of its type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbAttributes(BTreeMap<String, String>);

impl LbAttributes {
    fn table(kind: LbKind) -> &'static [Key] {
        match kind {
            LbKind::Application => APPLICATION,
            LbKind::Network => NETWORK,
        }
    }

    /// Applies `changes` (all checked first: one bad key changes nothing).
    pub fn modify(&mut self, kind: LbKind, changes: &[Attribute]) -> Result<(), ElbError> {
        no_repeats(changes)?;
        for a in changes {
            check(Self::table(kind), a)?;
        }
        for a in changes {
            self.0.insert(a.key.clone(), a.value.clone());
        }
        Ok(())
    }

    pub fn all(&self, kind: LbKind) -> Vec<Attribute> {
        all(Self::table(kind), &self.0)
    }

    pub fn deletion_protection(&self) -> bool {
        self.0.get("deletion_protection.enabled").is_some_and(|v| v == "true")
    }

    /// Application load balancers' idle timeout; network load balancers close idle TCP flows
    /// after 350 s, which cannot be changed.
    pub fn idle_timeout_s(&self, kind: LbKind) -> u32 {
        match kind {
            LbKind::Application => {
                value(APPLICATION, &self.0, "idle_timeout.timeout_seconds").and_then(|v| v.parse().ok()).unwrap_or(60)
            }
            LbKind::Network => 350,
        }
    }
}

/// A target group's attributes that differ from the defaults of its protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TgAttributes(BTreeMap<String, String>);

impl TgAttributes {
    fn table(protocol: TargetProtocol) -> &'static [Key] {
        match protocol {
            TargetProtocol::Http | TargetProtocol::Https => HTTP_GROUP,
            TargetProtocol::Tcp | TargetProtocol::Tls => TCP_GROUP,
        }
    }

    pub fn modify(&mut self, protocol: TargetProtocol, changes: &[Attribute]) -> Result<(), ElbError> {
        no_repeats(changes)?;
        for a in changes {
            check(Self::table(protocol), a)?;
        }
        for a in changes {
            self.0.insert(a.key.clone(), a.value.clone());
        }
        Ok(())
    }

    pub fn all(&self, protocol: TargetProtocol) -> Vec<Attribute> {
        all(Self::table(protocol), &self.0)
    }

    fn number(&self, protocol: TargetProtocol, key: &str) -> Option<u32> {
        value(Self::table(protocol), &self.0, key).and_then(|v| v.parse().ok())
    }

    pub fn deregistration_delay_s(&self, protocol: TargetProtocol) -> u32 {
        self.number(protocol, "deregistration_delay.timeout_seconds").unwrap_or(300)
    }

    pub fn slow_start_s(&self, protocol: TargetProtocol) -> u32 {
        self.number(protocol, "slow_start.duration_seconds").unwrap_or(0)
    }

    /// The `lb_cookie` lifetime when stickiness is on (HTTP and HTTPS groups only; the data
    /// plane has no source-IP stickiness, so TCP groups refuse `stickiness.enabled` `true`).
    pub fn stickiness_s(&self, protocol: TargetProtocol) -> Option<u32> {
        let on = value(Self::table(protocol), &self.0, "stickiness.enabled") == Some("true");
        on.then(|| self.number(protocol, "stickiness.lb_cookie.duration_seconds").unwrap_or(86400))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_changes_and_refusals() {
        let mut a = TgAttributes::default();
        assert_eq!(a.deregistration_delay_s(TargetProtocol::Http), 300);
        a.modify(TargetProtocol::Http, &[Attribute::new("deregistration_delay.timeout_seconds", "0")]).unwrap();
        assert_eq!(a.deregistration_delay_s(TargetProtocol::Http), 0);
        for (k, v) in [
            ("stickiness.type", "app_cookie"),
            ("slow_start.duration_seconds", "10"),
            ("deregistration_delay.timeout_seconds", "3601"),
            ("bogus", "1"),
            ("stickiness.enabled", "yes"),
        ] {
            let e = a.modify(TargetProtocol::Http, &[Attribute::new(k, v)]).unwrap_err();
            assert!(matches!(e, ElbError::Validation(_)), "{k}={v}: {e:?}");
        }
        assert!(a.stickiness_s(TargetProtocol::Http).is_none());
        a.modify(
            TargetProtocol::Http,
            &[
                Attribute::new("stickiness.enabled", "true"),
                Attribute::new("stickiness.lb_cookie.duration_seconds", "60"),
            ],
        )
        .unwrap();
        assert_eq!(a.stickiness_s(TargetProtocol::Http), Some(60));
        let keys: Vec<String> = a.all(TargetProtocol::Tcp).into_iter().map(|a| a.key).collect();
        assert!(!keys.contains(&"slow_start.duration_seconds".to_owned()));
        let mut lb = LbAttributes::default();
        assert_eq!(lb.idle_timeout_s(LbKind::Application), 60);
        lb.modify(LbKind::Application, &[Attribute::new("idle_timeout.timeout_seconds", "5")]).unwrap();
        assert_eq!(lb.idle_timeout_s(LbKind::Application), 5);
        assert!(lb.modify(LbKind::Network, &[Attribute::new("idle_timeout.timeout_seconds", "5")]).is_err());
    }
}
