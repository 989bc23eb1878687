//! Registry credentials and the `WWW-Authenticate` challenge flow (Basic, and
//! Bearer tokens from the realm the registry names).

use std::fmt;

/// Username and password (or an access token used as the password, as ECR and
/// most registries accept).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials { username: username.into(), password: password.into() }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses the first challenge of a `WWW-Authenticate` header (RFC 7235 syntax:
/// `Bearer realm="...",service="...",scope="..."`).
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |key: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone());
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
    } else {
        None
    }
}

fn parse_params(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',', '\t']);
        let Some((key, rest)) = s.split_once('=') else {
            return out;
        };
        let key = key.trim().to_owned();
        let rest = rest.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            out.push((key, value));
            s = &quoted[end.min(quoted.len())..];
        } else {
            let (value, rest) = rest.split_once(',').unwrap_or((rest, ""));
            out.push((key, value.trim().to_owned()));
            s = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        let h = r#"bearer realm=http://127.0.0.1:1/t, error="insufficient_scope""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer { realm: "http://127.0.0.1:1/t".into(), service: None, scope: None })
        );
        let h = r#"Bearer realm="a\"b",scope="x:y:pull,push""#;
        match parse_challenge(h) {
            Some(Challenge::Bearer { realm, scope, .. }) => {
                assert_eq!(realm, "a\"b");
                assert_eq!(scope.as_deref(), Some("x:y:pull,push"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_basic_and_rejects_unknown() {
        assert_eq!(parse_challenge(r#"Basic realm="basic-realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn debug_redacts_password() {
        let c = Credentials::new("AWS", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
