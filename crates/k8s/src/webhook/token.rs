//! Token authentication: `aws eks get-token` tokens, as aws-iam-authenticator verifies them.
//!
//! A token is `k8s-aws-v1.` and the unpadded base64url of a presigned STS GetCallerIdentity
//! URL whose signature covers the `x-k8s-aws-id` header, the cluster's name. It is good when
//! the URL is STS's (or Flotilla's own API, where `AWS_ENDPOINT_URL` points the CLI), asks for
//! GetCallerIdentity, signs `x-k8s-aws-id` with this cluster's name, lasts at most 15 minutes,
//! and its signature holds under Flotilla's SigV4 verifier (IAM keys and sessions included).
//!
//! The cluster's creator (or a session of the role that created it) is `kubernetes-admin` in
//! `system:masters`, as on EKS. Any other valid identity is who the cluster's `aws-auth`
//! ConfigMap (kube-system) maps it to (`mapUsers` by user ARN, `mapRoles` by role ARN for its
//! sessions, `mapAccounts`; usernames may use `{{AccountID}}`, `{{SessionName}}`,
//! `{{SessionNameRaw}}` and `{{AccessKeyID}}`, as aws-iam-authenticator's templates do), else
//! its ARN with no groups: RBAC decides what it may do.

use base64::Engine;
use serde_json::{Value, json};

use super::{AwsIdentity, CallerVerifier, Clusters, PresignedRequest};

pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header a token's URL signs the cluster's name in.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// How long a token is good from its signing, whatever its URL's `X-Amz-Expires` says.
pub const TOKEN_LIFETIME_SECS: i64 = 15 * 60;

/// Answers a TokenReview request body for `cluster`.
pub async fn review(
    clusters: &dyn Clusters,
    callers: &dyn CallerVerifier,
    cluster: &str,
    body: &[u8],
) -> Result<Value, String> {
    let request: Value = serde_json::from_slice(body).map_err(|e| format!("not a TokenReview: {e}"))?;
    let api_version = request["apiVersion"].as_str().unwrap_or("authentication.k8s.io/v1").to_owned();
    let token = request["spec"]["token"].as_str().ok_or("a TokenReview without spec.token")?;
    let status = match authenticate(clusters, callers, cluster, token).await {
        Ok(user) => json!({"authenticated": true, "user": user}),
        Err(why) => {
            tracing::info!(cluster, "token refused: {why}");
            json!({"authenticated": false, "error": why})
        }
    };
    Ok(json!({"apiVersion": api_version, "kind": "TokenReview", "status": status}))
}

/// The URL a token carries, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenUrl {
    pub host: String,
    pub path: String,
    pub query: String,
}

/// Decodes a token to its presigned URL.
pub fn parse_token(token: &str) -> Result<TokenUrl, String> {
    let encoded = token.strip_prefix(TOKEN_PREFIX).ok_or("not an EKS token (no k8s-aws-v1. prefix)")?;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|e| format!("the token is not base64url: {e}"))?;
    let url = String::from_utf8(url).map_err(|_| "the token's URL is not UTF-8")?;
    let rest =
        url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or("the token's URL is not http(s)")?;
    let (authority, path_query) = rest.find(['/', '?']).map_or((rest, ""), |i| rest.split_at(i));
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    if authority.is_empty() || authority.contains('@') {
        return Err("the token's URL has no host".into());
    }
    Ok(TokenUrl {
        host: authority.to_owned(),
        path: if path.is_empty() { "/".to_owned() } else { path.to_owned() },
        query: query.to_owned(),
    })
}

/// Whether `authority` (`host[:port]`) is an STS endpoint: AWS's (global, regional, China,
/// FIPS) or a loopback one (Flotilla's own API, where the CLI's endpoint points).
pub fn is_sts_host(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    let Some(rest) = host.strip_prefix("sts") else { return false };
    let rest = rest.strip_prefix("-fips").unwrap_or(rest);
    let middle = rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    match middle {
        Some("") => true,
        Some(region) => region
            .strip_prefix('.')
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')),
        None => false,
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

async fn authenticate(
    clusters: &dyn Clusters,
    callers: &dyn CallerVerifier,
    cluster: &str,
    token: &str,
) -> Result<Value, String> {
    let url = parse_token(token)?;
    if !is_sts_host(&url.host) {
        return Err(format!("the token's URL is not STS's ({})", url.host));
    }
    if url.path != "/" || query_param(&url.query, "Action") != Some("GetCallerIdentity") {
        return Err("the token's URL is not a GetCallerIdentity call".into());
    }
    let signed = query_param(&url.query, "X-Amz-SignedHeaders").unwrap_or_default().to_ascii_lowercase();
    if !signed.split("%3b").flat_map(|h| h.split(';')).any(|h| h == CLUSTER_ID_HEADER) {
        return Err(format!("the token does not sign {CLUSTER_ID_HEADER}"));
    }
    let record = clusters.cluster(cluster).await?.ok_or_else(|| format!("no cluster {cluster}"))?;
    let request = PresignedRequest {
        host: url.host.clone(),
        path: url.path,
        query: url.query,
        headers: vec![("host".into(), url.host), (CLUSTER_ID_HEADER.into(), cluster.to_owned())],
    };
    let identity = callers.verify(&request).await?;
    let mut user = user(&identity, &record.creator_arn);
    if user["username"] != "kubernetes-admin" {
        match aws_auth(clusters, cluster).await {
            Ok(map) => {
                if let Some((username, groups)) = map.lookup(&identity) {
                    user["username"] = json!(username);
                    user["groups"] = json!(groups);
                }
            }
            Err(e) => tracing::warn!(cluster, "cannot read kube-system/aws-auth: {e}"),
        }
    }
    Ok(user)
}

/// The `aws-auth` ConfigMap's mappings (what aws-iam-authenticator reads).
#[derive(Debug, Default)]
pub struct AwsAuth {
    users: Vec<Mapping>,
    roles: Vec<Mapping>,
    accounts: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Mapping {
    #[serde(alias = "userarn", alias = "rolearn")]
    arn: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

impl AwsAuth {
    /// From the ConfigMap's `data` (each value a YAML list). A malformed entry is an error.
    pub fn parse(data: &std::collections::BTreeMap<String, String>) -> Result<AwsAuth, String> {
        let list = |key: &str| -> Result<Vec<Mapping>, String> {
            match data.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => Ok(Vec::new()),
                Some(yaml) => serde_saphyr::from_str(yaml).map_err(|e| format!("aws-auth {key}: {e}")),
            }
        };
        let accounts = match data.get("mapAccounts").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Vec::new(),
            Some(yaml) => serde_saphyr::from_str(yaml).map_err(|e| format!("aws-auth mapAccounts: {e}"))?,
        };
        Ok(AwsAuth { users: list("mapUsers")?, roles: list("mapRoles")?, accounts })
    }

    /// The username and groups `identity` maps to, if any entry names it.
    pub fn lookup(&self, identity: &AwsIdentity) -> Option<(String, Vec<String>)> {
        let canonical = canonical_arn(&identity.arn);
        let role_arn = identity.role.as_ref().map(|(arn, _)| arn.as_str());
        let found = match &identity.role {
            None => self.users.iter().find(|m| m.arn == identity.arn),
            Some(_) => self.roles.iter().find(|m| Some(m.arn.as_str()) == role_arn || m.arn == canonical),
        };
        if let Some(mapping) = found {
            let username = mapping.username.as_deref().map_or_else(|| identity.arn.clone(), |t| render(t, identity));
            return Some((username, mapping.groups.clone()));
        }
        self.accounts.contains(&identity.account).then(|| (identity.arn.clone(), Vec::new()))
    }
}

/// A username template's placeholders filled in for `identity`.
fn render(template: &str, identity: &AwsIdentity) -> String {
    let session = identity.role.as_ref().map(|(_, s)| s.as_str()).unwrap_or_default();
    // aws-iam-authenticator replaces '@' in {{SessionName}} (it is not valid in a username).
    template
        .replace("{{AccountID}}", &identity.account)
        .replace("{{SessionNameRaw}}", session)
        .replace("{{SessionName}}", &session.replace('@', "-"))
        .replace("{{AccessKeyID}}", &identity.access_key_id)
}

async fn aws_auth(clusters: &dyn Clusters, cluster: &str) -> Result<AwsAuth, String> {
    let access = clusters.access(cluster).await?;
    let client = crate::plane::client(&access).await?;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "kube-system");
    match api.get_opt("aws-auth").await.map_err(|e| e.to_string())? {
        Some(map) => AwsAuth::parse(&map.data.unwrap_or_default()),
        None => Ok(AwsAuth::default()),
    }
}

/// An assumed-role session's ARN as its role's (`arn:aws:sts::A:assumed-role/R/S` ->
/// `arn:aws:iam::A:role/R`), what aws-iam-authenticator calls the canonical ARN; others as they are.
pub fn canonical_arn(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let [prefix, partition, "sts", "", account, resource] = parts[..]
        && let Some(session) = resource.strip_prefix("assumed-role/")
        && let Some((role, _)) = session.split_once('/')
    {
        return format!("{prefix}:{partition}:iam::{account}:role/{role}");
    }
    arn.to_owned()
}

/// The Kubernetes user `identity` is in a cluster created by `creator_arn`.
fn user(identity: &AwsIdentity, creator_arn: &str) -> Value {
    let canonical = canonical_arn(&identity.arn);
    let is_creator = identity.arn == creator_arn
        || canonical == canonical_arn(creator_arn)
        || identity.role.as_ref().is_some_and(|(role, _)| role == creator_arn);
    let (username, groups) = if is_creator {
        ("kubernetes-admin".to_owned(), vec!["system:masters"])
    } else {
        (identity.arn.clone(), vec![])
    };
    let mut extra = json!({
        "arn": [identity.arn],
        "canonicalArn": [canonical],
        "accessKeyId": [identity.access_key_id],
    });
    if let Some((_, session)) = &identity.role {
        extra["sessionName"] = json!([session]);
    }
    json!({
        "username": username,
        "uid": format!("aws-iam-authenticator:{}:{}", identity.account, identity.user_id),
        "groups": groups,
        "extra": extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_decodes_to_its_url() {
        let url = "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15";
        let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url));
        let parsed = parse_token(&token).unwrap();
        assert_eq!(parsed.host, "sts.us-east-1.amazonaws.com");
        assert_eq!(parsed.path, "/");
        assert_eq!(parsed.query, "Action=GetCallerIdentity&Version=2011-06-15");
        assert!(parse_token("k8s-aws-v2.abc").is_err());
        assert!(parse_token("k8s-aws-v1.!!!").is_err());
    }

    #[test]
    fn only_sts_hosts_count() {
        for good in [
            "sts.amazonaws.com",
            "sts.eu-west-1.amazonaws.com",
            "sts-fips.us-east-1.amazonaws.com",
            "sts.cn-north-1.amazonaws.com.cn",
            "127.0.0.1:4566",
            "localhost:80",
            "[::1]:4566",
        ] {
            assert!(is_sts_host(good), "{good}");
        }
        for bad in [
            "evil.com",
            "sts.amazonaws.com.evil.com",
            "s3.amazonaws.com",
            "sts..amazonaws.com",
            "10.0.0.1:4566",
            "stsx.amazonaws.com",
        ] {
            assert!(!is_sts_host(bad), "{bad}");
        }
    }

    #[test]
    fn aws_auth_maps_users_roles_and_accounts() {
        let data: std::collections::BTreeMap<String, String> = [
            ("mapUsers", "- userarn: arn:aws:iam::123456789012:user/bob\n  username: bob\n  groups:\n    - readers\n"),
            (
                "mapRoles",
                "- rolearn: arn:aws:iam::123456789012:role/dev\n  username: dev:{{SessionName}}\n  groups: [developers]\n",
            ),
            ("mapAccounts", "- \"210987654321\"\n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let auth = AwsAuth::parse(&data).unwrap();
        let bob = AwsIdentity {
            arn: "arn:aws:iam::123456789012:user/bob".into(),
            account: "123456789012".into(),
            user_id: "AIDABOB".into(),
            access_key_id: "AKIABOB".into(),
            role: None,
        };
        assert_eq!(auth.lookup(&bob), Some(("bob".into(), vec!["readers".into()])));
        let dev = AwsIdentity {
            arn: "arn:aws:sts::123456789012:assumed-role/dev/alice@example.com".into(),
            role: Some(("arn:aws:iam::123456789012:role/dev".into(), "alice@example.com".into())),
            ..bob.clone()
        };
        assert_eq!(auth.lookup(&dev), Some(("dev:alice-example.com".into(), vec!["developers".into()])));
        let other = AwsIdentity {
            arn: "arn:aws:iam::210987654321:user/x".into(),
            account: "210987654321".into(),
            ..bob.clone()
        };
        assert_eq!(auth.lookup(&other), Some(("arn:aws:iam::210987654321:user/x".into(), vec![])));
        let stranger = AwsIdentity { arn: "arn:aws:iam::123456789012:user/eve".into(), ..bob };
        assert_eq!(auth.lookup(&stranger), None);
        let broken: std::collections::BTreeMap<String, String> =
            [("mapUsers".to_owned(), "- username: [".to_owned())].into_iter().collect();
        assert!(AwsAuth::parse(&broken).is_err());
    }

    #[test]
    fn the_creator_and_its_role_sessions_are_admins() {
        let session = AwsIdentity {
            arn: "arn:aws:sts::123456789012:assumed-role/admin/alice".into(),
            account: "123456789012".into(),
            user_id: "AROAEXAMPLE:alice".into(),
            access_key_id: "ASIAEXAMPLE".into(),
            role: Some(("arn:aws:iam::123456789012:role/admin".into(), "alice".into())),
        };
        let by_role = user(&session, "arn:aws:iam::123456789012:role/admin");
        assert_eq!(by_role["username"], "kubernetes-admin");
        assert_eq!(by_role["groups"], json!(["system:masters"]));
        let by_other_session = user(&session, "arn:aws:sts::123456789012:assumed-role/admin/bob");
        assert_eq!(by_other_session["username"], "kubernetes-admin");
        let stranger = user(&session, "arn:aws:iam::123456789012:user/carol");
        assert_eq!(stranger["username"], "arn:aws:sts::123456789012:assumed-role/admin/alice");
        assert_eq!(stranger["groups"], json!([]));
        assert_eq!(stranger["extra"]["canonicalArn"], json!(["arn:aws:iam::123456789012:role/admin"]));
    }
}
