//! The OCI / Docker v2 JSON documents we read: manifests, indexes and image configs.
//! Our own serde types rather than a spec crate: we need a small, stable subset and
//! want unknown fields (and Docker's `null`s) to be tolerated.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;

pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// Every manifest kind we can follow, for the `Accept` header.
    pub const MANIFEST_ACCEPT: [&str; 4] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// What the media type claims; `None` means the type is not a layer we know.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        use media_type::*;
        // Non-distributable OCI layers share the suffixes of the regular ones.
        let oci_nondistributable = "application/vnd.oci.image.layer.nondistributable.v1.tar";
        match media_type {
            OCI_LAYER | DOCKER_LAYER => Some(Compression::None),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD => Some(Compression::Zstd),
            t if t == oci_nondistributable => Some(Compression::None),
            t if t.strip_prefix(oci_nondistributable) == Some("+gzip") => Some(Compression::Gzip),
            t if t.strip_prefix(oci_nondistributable) == Some("+zstd") => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// What the bytes say. Tools mislabel layers (uncompressed blobs under a gzip type
    /// are common in `docker save` output), so the magic number has the last word.
    pub fn sniff(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The only platform Fargate-style tasks run on here.
    pub fn linux_amd64() -> Platform {
        Platform { architecture: "amd64".into(), os: "linux".into(), variant: None }
    }

    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(deserialize_with = "null_default")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest document of either kind.
#[derive(Debug, Clone)]
pub enum ManifestDocument {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },
    #[error("Docker schema 1 manifests are not supported; re-push the image with a current client")]
    SchemaOne,
    #[error("malformed manifest JSON")]
    Json(#[source] serde_json::Error),
}

impl ManifestDocument {
    /// Parses by the served Content-Type, falling back to the document's own
    /// `mediaType` and then its shape, since registries and layouts differ in which
    /// of those they fill in.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        if probe.schema_version == Some(1) {
            return Err(ManifestError::SchemaOne);
        }
        // Registries answer `application/json` or `text/plain` for some stored documents.
        let content_type =
            content_type.map(|t| t.split(';').next().unwrap_or(t).trim()).filter(|t| t.starts_with("application/vnd."));
        let kind = content_type.map(str::to_owned).or(probe.media_type).unwrap_or_else(|| {
            if probe.manifests.is_some() { media_type::OCI_INDEX.into() } else { media_type::OCI_MANIFEST.into() }
        });
        match kind.as_str() {
            media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => {
                serde_json::from_slice(bytes).map(ManifestDocument::Index).map_err(ManifestError::Json)
            }
            media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => {
                serde_json::from_slice(bytes).map(ManifestDocument::Manifest).map_err(ManifestError::Json)
            }
            "application/vnd.docker.distribution.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v1+prettyjws" => Err(ManifestError::SchemaOne),
            _ => Err(ManifestError::UnsupportedMediaType { media_type: kind }),
        }
    }
}

impl Index {
    /// The manifest for `platform`, skipping attestation manifests (which carry an
    /// `unknown/unknown` platform in BuildKit output).
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| platform.matches(p))
                && d.annotations.get("vnd.docker.reference.type").map(String::as_str) != Some("attestation-manifest")
        })
    }
}

/// The image configuration blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(deserialize_with = "null_default")]
    pub diff_ids: Vec<Digest>,
}

/// The part of the image config a sandbox needs to build the process spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

impl ContainerConfig {
    /// `"80/tcp"`-style keys, in order.
    pub fn exposed_ports(&self) -> impl Iterator<Item = &str> {
        self.exposed_ports.keys().map(String::as_str)
    }

    /// `KEY=VALUE` entries split at the first `=`; an entry without one has an empty value.
    pub fn env_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|e| e.split_once('=').unwrap_or((e.as_str(), "")))
    }
}

/// The `{}` values of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// Docker writes `null` where OCI omits a field; both mean empty.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_config_with_nulls() {
        let json = br#"{
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin", "EMPTY"], "Cmd": ["sh"], "Entrypoint": null,
                       "ExposedPorts": {"80/tcp": {}}, "Labels": null, "WorkingDir": "/srv",
                       "User": "1000:1000", "Volumes": null},
            "rootfs": {"type": "layers", "diff_ids": []}
        }"#;
        let config: ImageConfig = serde_json::from_slice(json).unwrap();
        let c = &config.config;
        assert_eq!(c.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.exposed_ports().collect::<Vec<_>>(), ["80/tcp"]);
        assert_eq!(c.env_pairs().collect::<Vec<_>>(), [("PATH", "/bin"), ("EMPTY", "")]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert!(c.labels.is_empty());
        let round: ImageConfig = serde_json::from_slice(&serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(round, config);
    }

    #[test]
    fn detects_document_kind() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(ManifestDocument::parse(index, Some("application/json")), Ok(ManifestDocument::Index(_))));
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(ManifestDocument::parse(v1, None), Err(ManifestError::SchemaOne)));
        let weird = br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.config"}"#;
        assert!(matches!(ManifestDocument::parse(weird, None), Err(ManifestError::UnsupportedMediaType { .. })));
    }

    #[test]
    fn compression_from_type_and_magic() {
        assert_eq!(Compression::from_media_type(media_type::OCI_LAYER_ZSTD), Some(Compression::Zstd));
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type("text/plain"), None);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }
}
