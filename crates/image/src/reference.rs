//! Image references as users write them in a task definition's `image` field,
//! normalised the way Docker does (`nginx` means `docker.io/library/nginx:latest`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's name and its API endpoint differ; only the API host is ever dialled.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: image reference is empty")]
    Empty,
    #[error("invalid reference format: {reference:?} contains whitespace or control characters")]
    Whitespace { reference: String },
    #[error(
        "invalid reference format: {reference:?} is a 64-character hex string, which is ambiguous with an image ID"
    )]
    AmbiguousId { reference: String },
    #[error("invalid reference format: repository name in {reference:?} must be lowercase")]
    Uppercase { reference: String },
    #[error("invalid reference format: {reference:?} has an invalid registry host {registry:?}")]
    InvalidRegistry { reference: String, registry: String },
    #[error("invalid reference format: {reference:?} has an invalid repository path component {component:?}")]
    InvalidComponent { reference: String, component: String },
    #[error("invalid reference format: {reference:?} has an invalid tag {tag:?}")]
    InvalidTag { reference: String, tag: String },
    #[error("invalid reference format: {reference:?} has an invalid digest")]
    InvalidDigest {
        reference: String,
        #[source]
        source: DigestError,
    },
    #[error("invalid reference format: repository name in {reference:?} is longer than {MAX_NAME_LEN} characters")]
    NameTooLong { reference: String },
}

impl Reference {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let reference = || input.to_owned();
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::Whitespace { reference: reference() });
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::AmbiguousId { reference: reference() });
        }

        let (name_and_tag, digest) = match input.rsplit_once('@') {
            Some((rest, digest)) => {
                let digest = Digest::parse(digest)
                    .map_err(|source| ReferenceError::InvalidDigest { reference: reference(), source })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };

        // A ':' is a tag separator only after the last '/', so `host:5000/app` has no tag.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_and_tag[..at], Some(&name_and_tag[at + 1..]))
            }
            None => (name_and_tag, None),
        };

        let (registry, path) = split_registry(name);
        if let Some(registry) = registry
            && !valid_registry(registry)
        {
            return Err(ReferenceError::InvalidRegistry { reference: reference(), registry: registry.to_owned() });
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { reference: reference() });
        }
        for component in path.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::InvalidComponent {
                    reference: reference(),
                    component: component.to_owned(),
                });
            }
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::InvalidTag { reference: reference(), tag: tag.to_owned() });
        }

        let registry = match registry {
            None | Some("index.docker.io") => DOCKER_HUB,
            Some(r) => r,
        };
        let repository =
            if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_owned() };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong { reference: reference() });
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference { registry: registry.to_owned(), repository, tag, digest })
    }

    /// The registry as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the registry API is served on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry }
    }

    /// The repository path (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What goes after `/manifests/` in the API: the digest wins over the tag, so a
    /// pinned reference is never affected by a tag moving.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same reference pinned to `digest` (the tag, if any, is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }

    /// The same repository at another tag; keeps no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(&format!("{}:{tag}", self.name()))
    }

    /// True for registries served over loopback, which are dialled over plain HTTP
    /// like Docker does: no certificate can be expected there.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

pub(crate) fn is_loopback_host(registry: &str) -> bool {
    let host = host_without_port(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn host_without_port(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// Docker's rule: the first component is a registry if it looks like a host
/// (has a dot or port, or is `localhost`, or has uppercase, which repositories can't).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("ipv6", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, the distribution grammar.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned),
            r.digest().map(Digest::to_string),
        )
    }

    #[test]
    fn normalises_docker_hub_names() {
        let r = Reference::parse("nginx").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_reference(), "latest");
        assert!(!r.is_loopback());
        assert_eq!(Reference::parse("nginx:1.25-alpine").unwrap().to_string(), "docker.io/library/nginx:1.25-alpine");
        assert_eq!(Reference::parse("bitnami/redis").unwrap().to_string(), "docker.io/bitnami/redis:latest");
        assert_eq!(
            Reference::parse("index.docker.io/library/nginx").unwrap(),
            Reference::parse("nginx:latest").unwrap()
        );
    }

    #[test]
    fn digest_only_reference_has_no_tag() {
        let s = format!("library/nginx@sha256:{HEX}");
        let (reg, repo, tag, digest) = parts(&s);
        assert_eq!((reg.as_str(), repo.as_str()), ("docker.io", "library/nginx"));
        assert_eq!(tag, None);
        assert_eq!(digest, Some(format!("sha256:{HEX}")));
        let r = Reference::parse(&s).unwrap();
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), format!("docker.io/library/nginx@sha256:{HEX}"));
    }

    #[test]
    fn registry_with_port_and_tag_and_digest() {
        let r = Reference::parse("127.0.0.1:5000/app:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "app");
        assert_eq!(r.tag(), Some("v1"));
        assert!(r.is_loopback());

        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.tag(), Some("latest"));

        let s = format!("registry.example.com/ns/app:tag@sha256:{HEX}");
        let (reg, repo, tag, digest) = parts(&s);
        assert_eq!(reg, "registry.example.com");
        assert_eq!(repo, "ns/app");
        assert_eq!(tag.as_deref(), Some("tag"));
        assert!(digest.is_some());
        let r = Reference::parse(&s).unwrap();
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), s);
    }

    #[test]
    fn loopback_detection() {
        for (s, lo) in [
            ("localhost/app", true),
            ("localhost:5000/app", true),
            ("127.0.0.2:80/app", true),
            ("[::1]:5000/app", true),
            ("[::1]/app", true),
            ("10.0.0.1:5000/app", false),
            ("example.com/app", false),
        ] {
            assert_eq!(Reference::parse(s).unwrap().is_loopback(), lo, "{s}");
        }
        assert_eq!(Reference::parse("[::1]:5000/app").unwrap().registry(), "[::1]:5000");
    }

    #[test]
    fn rejects_malformed_references() {
        use ReferenceError as E;
        type Check = fn(&E) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (String::new(), |e| matches!(e, E::Empty)),
            ("ng inx".into(), |e| matches!(e, E::Whitespace { .. })),
            (HEX.into(), |e| matches!(e, E::AmbiguousId { .. })),
            ("Nginx".into(), |e| matches!(e, E::Uppercase { .. })),
            ("ex ample.com/app".into(), |e| matches!(e, E::Whitespace { .. })),
            ("exa_mple.com/app".into(), |e| matches!(e, E::InvalidRegistry { .. })),
            ("host:port/app".into(), |e| matches!(e, E::InvalidRegistry { .. })),
            ("nginx:".into(), |e| matches!(e, E::InvalidTag { .. })),
            ("nginx:-x".into(), |e| matches!(e, E::InvalidTag { .. })),
            (format!("nginx:{}", "a".repeat(129)), |e| matches!(e, E::InvalidTag { .. })),
            ("nginx@sha256:abc".into(), |e| matches!(e, E::InvalidDigest { .. })),
            ("a//b".into(), |e| matches!(e, E::InvalidComponent { .. })),
            ("-a".into(), |e| matches!(e, E::InvalidComponent { .. })),
            ("a..b".into(), |e| matches!(e, E::InvalidComponent { .. })),
            ("a___b".into(), |e| matches!(e, E::InvalidComponent { .. })),
            ("/app".into(), |e| matches!(e, E::InvalidComponent { .. })),
            (format!("x.io/{}", "a".repeat(260)), |e| matches!(e, E::NameTooLong { .. })),
        ];
        for (input, check) in cases {
            let err = Reference::parse(&input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
            assert!(err.to_string().starts_with("invalid reference format"));
        }
        for ok in ["a-b", "a--b", "a__b", "a.b_c", "ns/a-b.c/d", "my-registry.local/x"] {
            Reference::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
