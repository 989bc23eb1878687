//! IAM's input rules: names, paths, session names, and the size limits of policy documents,
//! with the messages IAM words them in.

use crate::IamError;
use crate::policy::{Policy, PolicyKind};

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// A user, role or policy name: `[\w+=,.@-]+`, at most `max` characters. `field` is the
/// wire's member name (`userName`, `roleName`, `policyName`).
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> Result<(), IamError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(IamError::InvalidInput(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must have length less than or equal to {max} and greater than or equal to 1"
        )));
    }
    if !value.chars().all(name_char) {
        return Err(IamError::InvalidInput(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        )));
    }
    Ok(())
}

/// A path: `/`, or `/` + segments + `/`, printable ASCII, at most 512 characters. `None` is `/`.
pub(crate) fn check_path(path: Option<&str>) -> Result<String, IamError> {
    let path = path.unwrap_or("/");
    let printable = path.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c));
    if path.is_empty() || path.len() > 512 || !printable || !path.starts_with('/') || !path.ends_with('/') {
        return Err(IamError::InvalidInput(format!(
            "The specified value for path is invalid. It must begin and end with / and contain only alphanumeric characters and/or / characters. Path: {path}"
        )));
    }
    if path.contains("//") {
        return Err(IamError::InvalidInput(format!("The specified value for path is invalid: {path}")));
    }
    Ok(path.to_owned())
}

/// A role session name: `[\w+=,.@-]*`, 2 to 64 characters.
pub(crate) fn check_session_name(value: &str) -> Result<(), IamError> {
    let n = value.chars().count();
    if !(2..=64).contains(&n) {
        return Err(IamError::InvalidInput(format!(
            "1 validation error detected: Value '{value}' at 'roleSessionName' failed to satisfy constraint: Member must have length {}",
            if n < 2 { "greater than or equal to 2" } else { "less than or equal to 64" }
        )));
    }
    if !value.chars().all(name_char) {
        return Err(IamError::InvalidInput(format!(
            "1 validation error detected: Value '{value}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )));
    }
    Ok(())
}

/// A document's size as IAM counts it: characters other than whitespace.
pub(crate) fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// Parses `document` as IAM would, its errors as `MalformedPolicyDocument`.
pub(crate) fn parse_policy(document: &str, kind: PolicyKind) -> Result<Policy, IamError> {
    if document.is_empty() {
        return Err(IamError::InvalidInput(
            "1 validation error detected: Value at 'policyDocument' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    Policy::parse(document, kind).map_err(|e| IamError::MalformedPolicyDocument(e.0))
}

/// The role name in a role ARN of `account` (`arn:aws:iam::ACCOUNT:role/PATH/NAME`).
pub(crate) fn role_name_of(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (_, resource) = rest.split_once(':')?;
    let path_and_name = resource.strip_prefix("role/")?;
    path_and_name.rsplit('/').next().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_sizes() {
        assert!(check_name("userName", "alice+ops@example.com", 64).is_ok());
        assert!(check_name("userName", "", 64).is_err());
        assert!(check_name("userName", "a b", 64).is_err());
        assert!(check_name("userName", &"a".repeat(65), 64).is_err());
        assert_eq!(check_path(None).unwrap(), "/");
        assert_eq!(check_path(Some("/team/a/")).unwrap(), "/team/a/");
        assert!(check_path(Some("team/")).is_err());
        assert!(check_path(Some("/team")).is_err());
        assert!(check_session_name("s").is_err());
        assert!(check_session_name("my-session@1").is_ok());
        assert_eq!(policy_size("{ \"a\" :\n 1 }"), 7);
        assert_eq!(role_name_of("arn:aws:iam::123456789012:role/a/b/name"), Some("name"));
        assert_eq!(role_name_of("arn:aws:iam::123456789012:user/name"), None);
    }
}
