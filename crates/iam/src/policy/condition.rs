//! The `Condition` element: operators, the `...IfExists` suffix, the `ForAnyValue:` and
//! `ForAllValues:` set operators, and AWS's rules for absent keys (a positive operator is false,
//! a negated one true, `...IfExists` true, `ForAllValues` true).

use std::net::IpAddr;

use serde_json::Value;

use super::glob::Template;
use super::{ContextKeys, PolicyError};

/// Every operator of the policy grammar, before `IfExists` and the set prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(NumOp),
    Date(NumOp),
    Bool,
    BinaryEquals,
    IpAddress,
    ArnLike,
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetOp {
    Single,
    ForAnyValue,
    ForAllValues,
}

/// One operator with one key and its values (`"StringEquals": {"aws:username": ["a", "b"]}`
/// holds one per key).
#[derive(Clone, Debug)]
pub(crate) struct Condition {
    base: Base,
    negated: bool,
    if_exists: bool,
    set: SetOp,
    /// Lowercased.
    key: String,
    values: Vec<Template>,
}

/// Parses a statement's `Condition` object.
pub(crate) fn parse(value: &Value, variables: bool) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = value else {
        return Err(PolicyError("Syntax errors in policy.".into()));
    };
    let mut out = Vec::new();
    for (op_name, block) in ops {
        let (set, base, negated, if_exists) = parse_operator(op_name)?;
        let Value::Object(keys) = block else {
            return Err(PolicyError("Syntax errors in policy.".into()));
        };
        for (key, values) in keys {
            if !key.contains(':') {
                return Err(PolicyError(
                    "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.".into(),
                ));
            }
            let raw = scalars(values)?;
            let templates = raw
                .iter()
                .map(|v| {
                    check_value(base, op_name, v)?;
                    let arn = base == Base::ArnLike;
                    let vars = variables
                        && matches!(
                            base,
                            Base::StringEquals | Base::StringEqualsIgnoreCase | Base::StringLike | Base::ArnLike
                        );
                    Ok(Template::new(v, vars, arn, base == Base::StringEqualsIgnoreCase))
                })
                .collect::<Result<Vec<_>, PolicyError>>()?;
            out.push(Condition { base, negated, if_exists, set, key: key.to_ascii_lowercase(), values: templates });
        }
    }
    Ok(out)
}

fn parse_operator(name: &str) -> Result<(SetOp, Base, bool, bool), PolicyError> {
    let invalid = || PolicyError(format!("Policy has an invalid condition operator: {name}"));
    let (set, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (SetOp::ForAnyValue, rest)
    } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (SetOp::ForAllValues, rest)
    } else {
        (SetOp::Single, name)
    };
    let (rest, if_exists) = match rest.strip_suffix("IfExists") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (base, negated) = match rest {
        "StringEquals" => (Base::StringEquals, false),
        "StringNotEquals" => (Base::StringEquals, true),
        "StringEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, true),
        "StringLike" => (Base::StringLike, false),
        "StringNotLike" => (Base::StringLike, true),
        "NumericEquals" => (Base::Numeric(NumOp::Eq), false),
        "NumericNotEquals" => (Base::Numeric(NumOp::Eq), true),
        "NumericLessThan" => (Base::Numeric(NumOp::Lt), false),
        "NumericLessThanEquals" => (Base::Numeric(NumOp::Le), false),
        "NumericGreaterThan" => (Base::Numeric(NumOp::Gt), false),
        "NumericGreaterThanEquals" => (Base::Numeric(NumOp::Ge), false),
        "DateEquals" => (Base::Date(NumOp::Eq), false),
        "DateNotEquals" => (Base::Date(NumOp::Eq), true),
        "DateLessThan" => (Base::Date(NumOp::Lt), false),
        "DateLessThanEquals" => (Base::Date(NumOp::Le), false),
        "DateGreaterThan" => (Base::Date(NumOp::Gt), false),
        "DateGreaterThanEquals" => (Base::Date(NumOp::Ge), false),
        "Bool" => (Base::Bool, false),
        "BinaryEquals" => (Base::BinaryEquals, false),
        "IpAddress" => (Base::IpAddress, false),
        "NotIpAddress" => (Base::IpAddress, true),
        "ArnEquals" | "ArnLike" => (Base::ArnLike, false),
        "ArnNotEquals" | "ArnNotLike" => (Base::ArnLike, true),
        "Null" if !if_exists => (Base::Null, false),
        _ => return Err(invalid()),
    };
    Ok((set, base, negated, if_exists))
}

/// A condition value as a string: IAM accepts strings, numbers and booleans, alone or in an
/// array.
fn scalars(value: &Value) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(PolicyError("Syntax errors in policy.".into())),
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

/// IAM refuses values its operator can never match: a bad CIDR, a non-number.
fn check_value(base: Base, op: &str, value: &str) -> Result<(), PolicyError> {
    let ok = match base {
        Base::IpAddress => parse_cidr(value).is_some(),
        Base::Numeric(_) => value.parse::<f64>().is_ok(),
        Base::Date(_) => parse_date(value).is_some(),
        Base::Bool | Base::Null => value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"),
        _ => true,
    };
    if ok { Ok(()) } else { Err(PolicyError(format!("Invalid value for condition operator {op}: {value}"))) }
}

impl Condition {
    /// Whether this condition holds for the request's `keys`.
    pub(crate) fn holds(&self, keys: ContextKeys<'_>) -> bool {
        let request = keys.values(&self.key);
        let present = request.clone().next().is_some();
        if self.base == Base::Null {
            let want_absent =
                self.values.iter().any(|v| v.resolve(keys).is_some_and(|s| s.eq_ignore_ascii_case("true")));
            return want_absent != present;
        }
        if !present {
            return match self.set {
                SetOp::ForAllValues => true,
                SetOp::ForAnyValue => self.if_exists,
                SetOp::Single => self.if_exists || self.negated,
            };
        }
        // A negated operator holds for a value that matches none of the policy's values.
        let one = |r: &str| self.values.iter().any(|v| self.compare(r, v, keys)) != self.negated;
        match self.set {
            SetOp::Single if self.negated => {
                !request.clone().any(|r| self.values.iter().any(|v| self.compare(r, v, keys)))
            }
            SetOp::Single | SetOp::ForAnyValue => request.clone().any(one),
            SetOp::ForAllValues => request.clone().all(one),
        }
    }

    fn compare(&self, request: &str, policy: &Template, keys: ContextKeys<'_>) -> bool {
        match self.base {
            Base::StringLike | Base::ArnLike => policy.matches(request, keys),
            Base::StringEquals | Base::BinaryEquals => policy.resolve(keys).is_some_and(|p| p == request),
            Base::StringEqualsIgnoreCase => policy.resolve(keys).is_some_and(|p| p.eq_ignore_ascii_case(request)),
            Base::Bool => policy.resolve(keys).is_some_and(|p| p.eq_ignore_ascii_case(request)),
            Base::Numeric(op) => {
                match (request.parse::<f64>(), policy.resolve(keys).and_then(|p| p.parse::<f64>().ok())) {
                    (Ok(r), Some(p)) => compare_num(op, r, p),
                    _ => false,
                }
            }
            Base::Date(op) => match (parse_date(request), policy.resolve(keys).and_then(|p| parse_date(&p))) {
                (Some(r), Some(p)) => compare_num(op, r as f64, p as f64),
                _ => false,
            },
            Base::IpAddress => match (request.parse::<IpAddr>(), policy.resolve(keys).and_then(|p| parse_cidr(&p))) {
                (Ok(ip), Some(net)) => in_cidr(ip, net),
                _ => false,
            },
            Base::Null => false,
        }
    }
}

fn compare_num(op: NumOp, r: f64, p: f64) -> bool {
    match op {
        NumOp::Eq => r == p,
        NumOp::Lt => r < p,
        NumOp::Le => r <= p,
        NumOp::Gt => r > p,
        NumOp::Ge => r >= p,
    }
}

/// `203.0.113.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn in_cidr(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(i), IpAddr::V4(n)) => (u32::from(i) as u128, u32::from(n) as u128, 32),
        (IpAddr::V6(i), IpAddr::V6(n)) => (u128::from(i), u128::from(n), 128),
        // An IPv4 address seen through an IPv4-mapped IPv6 socket.
        (IpAddr::V6(i), IpAddr::V4(n)) => match i.to_ipv4_mapped() {
            Some(i) => (u32::from(i) as u128, u32::from(n) as u128, 32),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    if len == 0 {
        return true;
    }
    let shift = bits - u32::from(len);
    (ip >> shift) == (net >> shift)
}

/// Seconds since the epoch from ISO 8601 (`2026-12-07T00:00:00Z`, with or without fractional
/// seconds, or a plain date) or from epoch seconds, the two forms IAM's date operators take.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, t),
        None => (s, "00:00:00Z"),
    };
    let time = time.strip_suffix('Z')?;
    let time = time.split_once('.').map_or(time, |(t, _)| t);
    let date: String = date.chars().filter(|c| *c != '-').collect();
    let time: String = time.chars().filter(|c| *c != ':').collect();
    let time = if time.len() == 4 { format!("{time}00") } else { time };
    flotilla_types::time::parse_basic(&format!("{date}T{time}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net = parse_cidr("203.0.113.0/24").unwrap();
        assert!(in_cidr("203.0.113.9".parse().unwrap(), net));
        assert!(!in_cidr("203.0.114.9".parse().unwrap(), net));
        assert!(in_cidr("::ffff:203.0.113.9".parse().unwrap(), net));
        let net = parse_cidr("2001:db8::/32").unwrap();
        assert!(in_cidr("2001:db8:1::5".parse().unwrap(), net));
        assert!(!in_cidr("2001:db9::5".parse().unwrap(), net));
        assert!(parse_cidr("10.0.0.0/33").is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(parse_date("1970-01-02T00:00:00.123Z"), Some(86_400));
        assert_eq!(parse_date("1970-01-02"), Some(86_400));
        assert_eq!(parse_date("86400"), Some(86_400));
        assert_eq!(parse_date("yesterday"), None);
    }
}
