//! A pod's configMap, secret, downwardAPI and projected volumes: task volumes whose files the
//! agent writes before the containers start (`flotilla_host::TaskVolumes::files`).
//!
//! Nothing of them is stored: when the task's host asks, [`PodFiles`] (the control plane's
//! [`TaskFiles`] provider) reads the ConfigMaps and Secrets from the pod's cluster. Before a
//! pod's task runs, the scheduler resolves them once too ([`resolve`]): a missing one keeps the
//! pod Pending with the kubelet's `FailedMount` event, as a node's kubelet would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use flotilla_control::TaskFiles;
use flotilla_host::{BoxFuture, FileVolume, HostApiError, VolumeFile};
use flotilla_types::task::Task;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, SecretProjection, Volume, VolumeProjection,
};
use kube::Api;

/// What a configMap, secret or downwardAPI file gets without `defaultMode` or `mode`.
const DEFAULT_MODE: i32 = 0o644;

/// Whether the agent fills `volume` with files (rather than it being an empty directory).
pub fn is_file_volume(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
}

/// The ConfigMaps and Secrets a pod's volumes name, as read from its namespace (key -> bytes;
/// `None`: it does not exist).
#[derive(Default)]
pub struct Sources {
    pub config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// (audience, expirationSeconds) -> a token of the pod's service account bound to the pod
    /// (TokenRequest), for `serviceAccountToken` projections.
    pub tokens: HashMap<(String, i64), Vec<u8>>,
}

/// A `serviceAccountToken` projection's token key: its audience ("" for the API server's)
/// and lifetime (an hour unless it says).
fn token_key(t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection) -> (String, i64) {
    (t.audience.clone().unwrap_or_default(), t.expiration_seconds.unwrap_or(3600))
}

/// The names of the ConfigMaps and the Secrets `pod`'s file volumes read.
fn referenced(pod: &Pod) -> (HashSet<String>, HashSet<String>) {
    let (mut maps, mut secrets) = (HashSet::new(), HashSet::new());
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(c) = &v.config_map {
            maps.insert(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                maps.insert(c.name.clone());
            }
            if let Some(SecretProjection { name, .. }) = &p.secret {
                secrets.insert(name.clone());
            }
        }
    }
    (maps, secrets)
}

/// Reads what `pod`'s file volumes name from its cluster.
async fn read_sources(client: &kube::Client, pod: &Pod) -> Result<Sources, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let (maps, secrets) = referenced(pod);
    let mut out = Sources::default();
    let map_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for name in maps {
        let found = map_api.get_opt(&name).await.map_err(|e| format!("cannot read configmap {name}: {e}"))?;
        let data = found.map(|m| {
            let mut data: BTreeMap<String, Vec<u8>> =
                m.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            data.extend(m.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            data
        });
        out.config_maps.insert(name, data);
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in secrets {
        let found = secret_api.get_opt(&name).await.map_err(|e| format!("cannot read secret {name}: {e}"))?;
        let data = found.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect());
        out.secrets.insert(name, data);
    }
    let projections = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).flat_map(|v| v.projected.iter());
    let tokens = projections.flat_map(|p| p.sources.iter().flatten()).filter_map(|s| s.service_account_token.as_ref());
    for t in tokens {
        let key = token_key(t);
        if out.tokens.contains_key(&key) {
            continue;
        }
        let token = request_token(client, pod, &key).await.map_err(|e| format!("failed to fetch token: {e}"))?;
        out.tokens.insert(key, token.into_bytes());
    }
    Ok(out)
}

/// A token of the pod's service account, bound to the pod, as a kubelet requests one.
async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    (audience, seconds): &(String, i64),
) -> Result<String, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let audiences: Vec<&str> = if audience.is_empty() { vec![] } else { vec![audience.as_str()] };
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    });
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let answer: serde_json::Value = accounts
        .create_subresource("token", &account, &kube::api::PostParams::default(), &body)
        .await
        .map_err(|e| e.to_string())?;
    answer["status"]["token"].as_str().map(str::to_owned).ok_or_else(|| "no token in the answer".to_owned())
}

/// Why a pod's file volumes cannot be made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// A non-optional ConfigMap, Secret or key is missing: the kubelet's `FailedMount` message.
    Missing(String),
    /// The cluster did not answer.
    Unreachable(String),
}

/// Reads and lays out `pod`'s file volumes.
pub async fn resolve(client: &kube::Client, pod: &Pod) -> Result<Vec<FileVolume>, Unresolved> {
    if !pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(is_file_volume) {
        return Ok(Vec::new());
    }
    let sources = read_sources(client, pod).await.map_err(Unresolved::Unreachable)?;
    volume_files(pod, &sources).map_err(Unresolved::Missing)
}

/// `pod`'s file volumes laid out from `sources`, or the `FailedMount` message of the first
/// that cannot be (`MountVolume.SetUp failed for volume "x" : configmap "y" not found`).
pub fn volume_files(pod: &Pod, sources: &Sources) -> Result<Vec<FileVolume>, String> {
    let mut out = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).filter(|v| is_file_volume(v)) {
        let failed = |why: String| format!("MountVolume.SetUp failed for volume \"{}\" : {why}", v.name);
        let mut files: BTreeMap<String, (Vec<u8>, i32)> = BTreeMap::new();
        if let Some(c) = &v.config_map {
            let mode = c.default_mode.unwrap_or(DEFAULT_MODE);
            let data = sources.config_maps.get(&c.name).cloned().flatten();
            keys(&mut files, "configmap", &c.name, data, c.items.as_deref(), mode, c.optional == Some(true))
                .map_err(failed)?;
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
            let data = sources.secrets.get(&name).cloned().flatten();
            keys(&mut files, "secret", &name, data, s.items.as_deref(), mode, s.optional == Some(true))
                .map_err(failed)?;
        }
        if let Some(d) = &v.downward_api {
            downward(&mut files, pod, d.items.iter().flatten(), d.default_mode.unwrap_or(DEFAULT_MODE));
        }
        if let Some(p) = &v.projected {
            let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
            for source in p.sources.iter().flatten() {
                project(&mut files, pod, source, mode, sources).map_err(failed)?;
            }
        }
        let files = files
            .into_iter()
            .map(|(path, (data, mode))| VolumeFile { path, data, mode: (mode & 0o7777) as u32 })
            .collect();
        out.push(FileVolume { name: v.name.clone(), files });
    }
    Ok(out)
}

fn project(
    files: &mut BTreeMap<String, (Vec<u8>, i32)>,
    pod: &Pod,
    source: &VolumeProjection,
    mode: i32,
    sources: &Sources,
) -> Result<(), String> {
    if let Some(c) = &source.config_map {
        let data = sources.config_maps.get(&c.name).cloned().flatten();
        keys(files, "configmap", &c.name, data, c.items.as_deref(), mode, c.optional == Some(true))?;
    }
    if let Some(s) = &source.secret {
        let data = sources.secrets.get(&s.name).cloned().flatten();
        keys(files, "secret", &s.name, data, s.items.as_deref(), mode, s.optional == Some(true))?;
    }
    if let Some(d) = &source.downward_api {
        downward(files, pod, d.items.iter().flatten(), mode);
    }
    if let Some(t) = &source.service_account_token {
        let token = sources.tokens.get(&token_key(t)).ok_or("failed to fetch token: not requested")?;
        files.insert(t.path.clone(), (token.clone(), mode));
    }
    Ok(())
}

/// A ConfigMap's or Secret's keys as files: every key under its own name, or only `items`
/// (key -> path, each with its own mode).
fn keys(
    files: &mut BTreeMap<String, (Vec<u8>, i32)>,
    kind: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    optional: bool,
) -> Result<(), String> {
    let Some(data) = data else {
        return if optional { Ok(()) } else { Err(format!("{kind} \"{name}\" not found")) };
    };
    match items {
        None => {
            for (key, value) in data {
                files.insert(key, (value, mode));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => {
                        files.insert(item.path.clone(), (value.clone(), item.mode.unwrap_or(mode)));
                    }
                    None if optional => {}
                    None => {
                        let what = if kind == "secret" {
                            "secret references non-existent secret key"
                        } else {
                            "configmap references non-existent config key"
                        };
                        return Err(format!("{what}: {}", item.key));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Downward API files: the pod's own fields (`metadata.name`, `namespace`, `uid`, `labels`,
/// `annotations`, one label or annotation). Container resources are not written.
fn downward<'a>(
    files: &mut BTreeMap<String, (Vec<u8>, i32)>,
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    mode: i32,
) {
    let meta = &pod.metadata;
    let pairs = |m: &Option<BTreeMap<String, String>>| -> String {
        m.iter().flatten().map(|(k, v)| format!("{k}={v:?}\n")).collect::<String>()
    };
    for item in items {
        let Some(field) = item.field_ref.as_ref().map(|f| f.field_path.as_str()) else { continue };
        let one = |prefix: &str, m: &Option<BTreeMap<String, String>>| {
            let key = field.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(m.as_ref()?.get(key).cloned().unwrap_or_default())
        };
        let value = match field {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "metadata.labels" => pairs(&meta.labels),
            "metadata.annotations" => pairs(&meta.annotations),
            _ => match one("metadata.labels['", &meta.labels)
                .or_else(|| one("metadata.annotations['", &meta.annotations))
            {
                Some(v) => v,
                None => continue,
            },
        };
        files.insert(item.path.clone(), (value.into_bytes(), item.mode.unwrap_or(mode)));
    }
}

/// The control plane's provider of pods' files: the pods whose tasks run (by uid, their task's
/// `startedBy`) and the client of their cluster. The scheduler tracks a pod before its task
/// runs and forgets it when the pod is retired.
#[derive(Default)]
pub struct PodFiles {
    pods: Mutex<HashMap<String, (kube::Client, Pod)>>,
}

impl PodFiles {
    pub(crate) fn track(&self, client: &kube::Client, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.pods.lock().expect("pod files poisoned").insert(uid, (client.clone(), pod.clone()));
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.pods.lock().expect("pod files poisoned").remove(uid);
    }
}

impl TaskFiles for PodFiles {
    /// A pod's task: in an EKS group, started by the pod's uid.
    fn serves(&self, task: &Task) -> bool {
        task.group.as_deref().is_some_and(|g| g.starts_with("eks:")) && task.started_by.is_some()
    }

    fn files<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Vec<FileVolume>, HostApiError>> {
        Box::pin(async move {
            let uid = task.started_by.as_deref().unwrap_or_default();
            let known = self.pods.lock().expect("pod files poisoned").get(uid).cloned();
            // Not known here (yet): the scheduler runs in another server, or has not started.
            let (client, pod) = known.ok_or_else(|| HostApiError::Unavailable {
                reason: format!("the Fargate scheduler does not know pod {uid} (yet)"),
            })?;
            // A ConfigMap or Secret deleted since the pod started: asked again, as a kubelet
            // retries the mount.
            resolve(&client, &pod).await.map_err(|e| match e {
                Unresolved::Missing(reason) | Unresolved::Unreachable(reason) => HostApiError::Unavailable { reason },
            })
        })
    }
}

#[cfg(test)]
mod tests;
