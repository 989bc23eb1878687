//! Reading a policy document: the grammar of IAM's JSON policy language and the
//! `MalformedPolicyDocument` messages IAM answers a document it refuses with.

use serde_json::{Map, Value};

use super::condition;
use super::glob::Template;
use super::{Effect, Matcher, PolicyError, PolicyKind, PrincipalMatcher, Statement};

fn syntax() -> PolicyError {
    PolicyError("Syntax errors in policy.".into())
}

/// Parses the document's statements; the `bool` is whether it supports policy variables
/// (version `2012-10-17`).
pub(super) fn parse(text: &str, kind: PolicyKind) -> Result<(Vec<Statement>, bool), PolicyError> {
    let doc: Value = serde_json::from_str(text).map_err(|_| syntax())?;
    let Value::Object(doc) = doc else { return Err(syntax()) };
    for key in doc.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return Err(PolicyError(format!("Unknown field {key}")));
        }
    }
    let variables = match doc.get("Version") {
        None => false,
        Some(Value::String(v)) if v == "2012-10-17" => true,
        Some(Value::String(v)) if v == "2008-10-17" => false,
        Some(_) => return Err(PolicyError("The policy failed legacy parsing".into())),
    };
    if let Some(id) = doc.get("Id")
        && !id.is_string()
    {
        return Err(syntax());
    }
    let statements = match doc.get("Statement") {
        None => return Err(PolicyError("Missing required field Statement".into())),
        Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err(syntax()),
    };
    if statements.is_empty() {
        return Err(syntax());
    }
    let mut sids = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(statements.len());
    for st in statements {
        let Value::Object(st) = st else { return Err(syntax()) };
        let statement = parse_statement(st, kind, variables)?;
        if let Some(sid) = &statement.sid
            && !sids.insert(sid.clone())
        {
            return Err(PolicyError("Statement IDs (SID) in a single policy must be unique.".into()));
        }
        out.push(statement);
    }
    Ok((out, variables))
}

fn parse_statement(st: &Map<String, Value>, kind: PolicyKind, variables: bool) -> Result<Statement, PolicyError> {
    const FIELDS: [&str; 10] = [
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
        "Id",
    ];
    for key in st.keys() {
        if !FIELDS.contains(&key.as_str()) {
            return Err(PolicyError(format!("Unknown field {key}")));
        }
    }
    let sid = match st.get("Sid") {
        None => None,
        Some(Value::String(s)) => {
            if kind == PolicyKind::Identity && !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(PolicyError(
                    "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*".into(),
                ));
            }
            Some(s.clone())
        }
        Some(_) => return Err(syntax()),
    };
    let effect = match st.get("Effect") {
        None => return Err(PolicyError("Missing required field Effect".into())),
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(Value::String(e)) => return Err(PolicyError(format!("Invalid effect: {e}"))),
        Some(_) => return Err(syntax()),
    };
    let principal = match (st.get("Principal"), st.get("NotPrincipal"), kind) {
        (Some(_), Some(_), _) => return Err(syntax()),
        (Some(_), None, PolicyKind::Identity) | (None, Some(_), PolicyKind::Identity) => {
            return Err(PolicyError("Policy document should not specify a principal.".into()));
        }
        (None, None, PolicyKind::Trust) => return Err(PolicyError("Missing required field Principal".into())),
        (Some(p), None, PolicyKind::Trust) => Some((parse_principal(p)?, false)),
        (None, Some(p), PolicyKind::Trust) => Some((parse_principal(p)?, true)),
        (None, None, PolicyKind::Identity) => None,
    };
    let action = match (st.get("Action"), st.get("NotAction")) {
        (Some(_), Some(_)) => return Err(syntax()),
        (None, None) => return Err(PolicyError("Policy statement must contain actions.".into())),
        (Some(a), None) => Matcher { not: false, patterns: actions(a)? },
        (None, Some(a)) => Matcher { not: true, patterns: actions(a)? },
    };
    if kind == PolicyKind::Trust {
        let sts_only =
            action.patterns.iter().all(|p| p.resolve(Default::default()).is_some_and(|a| a.starts_with("sts:")));
        if action.not || !sts_only {
            return Err(PolicyError("AssumeRole policy may only specify STS AssumeRole actions.".into()));
        }
    }
    let resource = match (st.get("Resource"), st.get("NotResource"), kind) {
        (Some(_), Some(_), _) => return Err(syntax()),
        (Some(_), None, PolicyKind::Trust) => return Err(PolicyError("Has prohibited field Resource".into())),
        (None, Some(_), PolicyKind::Trust) => return Err(PolicyError("Has prohibited field NotResource".into())),
        (None, None, PolicyKind::Trust) => None,
        (None, None, PolicyKind::Identity) => {
            return Err(PolicyError("Policy statement must contain resources.".into()));
        }
        (Some(r), None, _) => Some(Matcher { not: false, patterns: resources(r, variables)? }),
        (None, Some(r), _) => Some(Matcher { not: true, patterns: resources(r, variables)? }),
    };
    let conditions = match st.get("Condition") {
        None => Vec::new(),
        Some(c) => condition::parse(c, variables)?,
    };
    Ok(Statement { sid, effect, principal, action, resource, conditions })
}

/// A string or a non-empty array of strings.
fn strings(value: &Value) -> Result<Vec<&str>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => items.iter().map(|v| v.as_str().ok_or_else(syntax)).collect(),
        _ => Err(syntax()),
    }
}

fn actions(value: &Value) -> Result<Vec<Template>, PolicyError> {
    strings(value)?
        .into_iter()
        .map(|a| {
            let valid = a == "*" || a.split_once(':').is_some_and(|(vendor, op)| !vendor.is_empty() && !op.is_empty());
            if !valid {
                return Err(PolicyError(
                    "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.".into(),
                ));
            }
            Ok(Template::new(a, false, false, true))
        })
        .collect()
}

fn resources(value: &Value, variables: bool) -> Result<Vec<Template>, PolicyError> {
    strings(value)?
        .into_iter()
        .map(|r| {
            if r != "*" && !is_arn_form(r) {
                return Err(PolicyError(format!("Resource {r} must be in ARN format or \"*\".")));
            }
            Ok(Template::new(r, variables, true, false))
        })
        .collect()
}

/// `arn:partition:service:region:account:resource`, wildcards allowed in the segments.
fn is_arn_form(r: &str) -> bool {
    let parts: Vec<&str> = r.splitn(6, ':').collect();
    parts.len() == 6 && parts[0] == "arn" && !parts[1].is_empty() && !parts[2].is_empty()
        || r.starts_with("arn:") && r.ends_with('*') && parts.len() < 6
}

fn invalid_principal(kind: &str, value: &str) -> PolicyError {
    PolicyError(format!("Invalid principal in policy: \"{kind}\":\"{value}\""))
}

fn parse_principal(value: &Value) -> Result<PrincipalMatcher, PolicyError> {
    let mut out = PrincipalMatcher::default();
    match value {
        Value::String(s) if s == "*" => {
            out.any = true;
            return Ok(out);
        }
        Value::Object(map) => {
            for (kind, values) in map {
                let values = strings(values)?;
                match kind.as_str() {
                    "AWS" => {
                        for v in values {
                            if v == "*" {
                                out.any = true;
                            } else if is_account_id(v) {
                                out.accounts.push(v.to_owned());
                            } else if let Some(account) = iam_principal_account(v) {
                                if v.ends_with(":root") {
                                    out.accounts.push(account.to_owned());
                                } else {
                                    out.arns.push(v.to_owned());
                                }
                            } else {
                                return Err(invalid_principal("AWS", v));
                            }
                        }
                    }
                    "Service" => {
                        for v in values {
                            if v.is_empty() || v.contains('*') || v.contains(' ') {
                                return Err(invalid_principal("Service", v));
                            }
                            out.services.push(v.to_ascii_lowercase());
                        }
                    }
                    // Flotilla has no identity providers: a federated principal is accepted (AWS
                    // takes any provider ARN or name) and never matches.
                    "Federated" => {
                        for v in values {
                            if v.is_empty() || v.contains('*') {
                                return Err(invalid_principal("Federated", v));
                            }
                        }
                    }
                    "CanonicalUser" => return Err(invalid_principal(kind, values[0])),
                    _ => return Err(PolicyError(format!("Unknown field {kind}"))),
                }
            }
        }
        _ => return Err(syntax()),
    }
    Ok(out)
}

fn is_account_id(v: &str) -> bool {
    v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit())
}

/// The account of an IAM principal ARN (`root`, `user/...`, `role/...`, or an STS
/// `assumed-role/ROLE/SESSION`), with no wildcards; `None` for anything else.
pub(super) fn iam_principal_account(v: &str) -> Option<&str> {
    if v.contains('*') || v.contains('?') {
        return None;
    }
    let parts: Vec<&str> = v.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else { return None };
    if arn != "arn" || partition.is_empty() || !region.is_empty() || !is_account_id(account) {
        return None;
    }
    let ok = match service {
        "iam" => {
            resource == "root"
                || resource.strip_prefix("user/").is_some_and(|n| !n.is_empty())
                || resource.strip_prefix("role/").is_some_and(|n| !n.is_empty())
        }
        "sts" => resource.strip_prefix("assumed-role/").is_some_and(|n| n.split('/').count() == 2),
        _ => false,
    };
    ok.then_some(account)
}
