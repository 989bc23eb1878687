//! ELB's rule conditions and redirect placeholders, on a request as the listener saw it.

use std::net::Ipv4Addr;

use flotilla_host::lb::{RedirectSpec, RuleCondition};
use http::HeaderMap;

/// The parts of a request conditions look at.
pub(crate) struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty when there is none.
    pub query: &'a str,
    /// Without a port.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub source: Option<Ipv4Addr>,
}

/// Whether every condition matches (a condition matches when any of its values does).
pub(crate) fn matches(conditions: &[RuleCondition], req: &RequestView<'_>) -> bool {
    conditions.iter().all(|condition| match condition {
        RuleCondition::PathPattern { values } => values.iter().any(|v| wildcard(v, req.path, false)),
        RuleCondition::HostHeader { values } => values.iter().any(|v| wildcard(v, req.host, true)),
        RuleCondition::HttpHeader { name, values } => req
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|h| h.to_str().ok())
            .any(|h| values.iter().any(|v| wildcard(v, h, true))),
        RuleCondition::HttpRequestMethod { values } => values.iter().any(|v| v == req.method),
        RuleCondition::QueryString { values } => query_pairs(req.query).any(|(key, value)| {
            values
                .iter()
                .any(|m| m.key.as_deref().is_none_or(|k| wildcard(k, key, true)) && wildcard(&m.value, value, true))
        }),
        RuleCondition::SourceIp { values } => req.source.is_some_and(|ip| values.iter().any(|net| net.contains(&ip))),
    })
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// ELB's wildcards: `*` any run of characters, `?` exactly one.
pub(crate) fn wildcard(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let eq = |a: u8, b: u8| if ignore_case { a.eq_ignore_ascii_case(&b) } else { a == b };
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much of the text it has taken: on a mismatch it takes one
    // more character (the classic linear backtracking for a single kind of star).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The request a redirect is computed from.
pub(crate) struct RedirectFrom<'a> {
    /// `http` or `https`.
    pub protocol: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// With its leading `/`.
    pub path: &'a str,
    pub query: &'a str,
}

/// The `Location` of an ELB redirect: each part with its `#{…}` placeholders filled from the
/// request (`#{path}` without its leading `/`).
pub(crate) fn redirect_location(spec: &RedirectSpec, from: &RedirectFrom<'_>) -> String {
    let port = from.port.to_string();
    let fill = |part: &str| {
        part.replace("#{protocol}", from.protocol)
            .replace("#{host}", from.host)
            .replace("#{port}", &port)
            .replace("#{path}", from.path.strip_prefix('/').unwrap_or(from.path))
            .replace("#{query}", from.query)
    };
    let protocol = fill(&spec.protocol).to_ascii_lowercase();
    let mut location = format!("{protocol}://{}:{}{}", fill(&spec.host), fill(&spec.port), fill(&spec.path));
    let query = fill(&spec.query);
    if !query.is_empty() {
        location.push('?');
        location.push_str(&query);
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_elb_does() {
        assert!(wildcard("/api/*", "/api/v1/users", false));
        assert!(wildcard("/api/*", "/api/", false));
        assert!(!wildcard("/api/*", "/api", false));
        assert!(wildcard("/img/?.png", "/img/a.png", false));
        assert!(!wildcard("/img/?.png", "/img/ab.png", false));
        assert!(wildcard("*.example.com", "WWW.Example.COM", true));
        assert!(!wildcard("/API/*", "/api/x", false));
        assert!(wildcard("*a*b*c", "xxaxxbxxbxc", false));
        assert!(!wildcard("*a*b*c", "xxaxxbxxbx", false));
        assert!(wildcard("*", "", false));
    }

    #[test]
    fn redirect_fills_placeholders() {
        let spec = RedirectSpec {
            protocol: "HTTPS".into(),
            host: "#{host}".into(),
            port: "443".into(),
            path: "/new/#{path}".into(),
            query: "#{query}&from=old".into(),
            status: 301,
        };
        let from = RedirectFrom { protocol: "http", host: "a.example", port: 80, path: "/x/y", query: "q=1" };
        assert_eq!(redirect_location(&spec, &from), "https://a.example:443/new/x/y?q=1&from=old");
    }

    #[test]
    fn query_and_source_conditions() {
        let headers = HeaderMap::new();
        let req = RequestView {
            method: "GET",
            path: "/",
            query: "version=v2&flag",
            host: "h",
            headers: &headers,
            source: Some(Ipv4Addr::new(10, 0, 1, 5)),
        };
        let q = |key: Option<&str>, value: &str| RuleCondition::QueryString {
            values: vec![flotilla_host::lb::QueryMatch { key: key.map(Into::into), value: value.into() }],
        };
        assert!(matches(&[q(Some("Version"), "V*")], &req));
        assert!(matches(&[q(None, "v2")], &req));
        assert!(!matches(&[q(Some("version"), "v3")], &req));
        let src = |net: &str| RuleCondition::SourceIp { values: vec![net.parse().unwrap()] };
        assert!(matches(&[src("10.0.0.0/16")], &req));
        assert!(!matches(&[src("10.1.0.0/16"), q(None, "v2")], &req));
    }
}
