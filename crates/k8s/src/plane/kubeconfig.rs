//! What `flotilla eks register` reads from a kubeconfig: how Flotilla reaches an existing
//! cluster's API server as its administrator.

use std::path::Path;

use base64::Engine;
use flotilla_eks::{KubeAccess, KubeAuth};
use kube::config::Kubeconfig;
use serde_json::Value;

/// The API server, CA and credentials of `context` (else the current context) in the
/// kubeconfig at `path`; files it names are read, relative to the kubeconfig's directory.
/// Credentials must be a token or a client certificate and key: an `exec` plugin's come and go,
/// and Flotilla needs its own standing access.
pub fn access_from_kubeconfig(path: &Path, context: Option<&str>) -> Result<KubeAccess, String> {
    let config = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let wanted = context
        .map(str::to_owned)
        .or(config.current_context.clone())
        .ok_or_else(|| format!("{} has no current-context; name one with --context", path.display()))?;
    let ctx = config
        .contexts
        .iter()
        .find(|c| c.name == wanted)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| format!("{} has no context {wanted:?}", path.display()))?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| format!("context {wanted:?} names cluster {:?}, which the kubeconfig lacks", ctx.cluster))?;
    let endpoint = cluster.server.clone().ok_or_else(|| format!("cluster {:?} has no server", ctx.cluster))?;
    let ca_pem =
        inline_or_file(base, cluster.certificate_authority_data.as_deref(), cluster.certificate_authority.as_deref())?
            .ok_or_else(|| format!("cluster {:?} names no certificate-authority(-data)", ctx.cluster))?;
    let user_name = ctx.user.clone().unwrap_or_default();
    let user = config
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_ref())
        .ok_or_else(|| format!("context {wanted:?} names user {user_name:?}, which the kubeconfig lacks"))?;
    // Secrets are kept wrapped; their serialised form is the plain value.
    let user = serde_json::to_value(user).map_err(|e| e.to_string())?;
    let field = |name: &str| user.get(name).and_then(Value::as_str);
    if let Some(token) = field("token") {
        return Ok(KubeAccess { endpoint, ca_pem, auth: KubeAuth::Token { token: token.to_owned() } });
    }
    let cert = inline_or_file(base, field("client-certificate-data"), field("client-certificate"))?;
    let key = inline_or_file(base, field("client-key-data"), field("client-key"))?;
    match (cert, key) {
        (Some(cert_pem), Some(key_pem)) => {
            Ok(KubeAccess { endpoint, ca_pem, auth: KubeAuth::ClientCertificate { cert_pem, key_pem } })
        }
        _ => Err(format!(
            "user {user_name:?} has neither a token nor a client certificate and key; Flotilla needs standing credentials (not an exec plugin's)"
        )),
    }
}

/// A PEM given inline (base64, as kubeconfigs carry `*-data`) or as a file.
fn inline_or_file(base: &Path, data: Option<&str>, file: Option<&str>) -> Result<Option<String>, String> {
    if let Some(data) = data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("a *-data field is not base64: {e}"))?;
        return String::from_utf8(bytes).map(Some).map_err(|_| "a *-data field is not a PEM".to_owned());
    }
    match file {
        Some(f) => std::fs::read_to_string(base.join(f)).map(Some).map_err(|e| format!("{f}: {e}")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_files_and_inline_data_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "CA PEM").unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
             clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:6443', certificate-authority: ca.crt}}}}]\n\
             users: [{{name: t, user: {{token: secret}}}}, {{name: x, user: {{client-certificate-data: {}, client-key-data: {}}}}}, {{name: e, user: {{exec: {{command: aws, apiVersion: client.authentication.k8s.io/v1beta1}}}}}}]\n\
             contexts: [{{name: a, context: {{cluster: c, user: t}}}}, {{name: b, context: {{cluster: c, user: x}}}}, {{name: d, context: {{cluster: c, user: e}}}}]\n",
            b64("CERT"),
            b64("KEY")
        );
        let path = dir.path().join("config");
        std::fs::write(&path, config).unwrap();
        let a = access_from_kubeconfig(&path, None).unwrap();
        assert_eq!(a.endpoint, "https://127.0.0.1:6443");
        assert_eq!(a.ca_pem, "CA PEM");
        assert_eq!(a.auth, KubeAuth::Token { token: "secret".into() });
        let b = access_from_kubeconfig(&path, Some("b")).unwrap();
        assert_eq!(b.auth, KubeAuth::ClientCertificate { cert_pem: "CERT".into(), key_pem: "KEY".into() });
        let e = access_from_kubeconfig(&path, Some("d")).unwrap_err();
        assert!(e.contains("standing credentials"), "{e}");
        assert!(access_from_kubeconfig(&path, Some("nope")).unwrap_err().contains("no context"));
    }
}
