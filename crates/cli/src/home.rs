//! The data directory: the store, this installation's identity and credentials, and where the
//! running server listens (so the CLI on the same machine needs no configuration).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flotilla_api::Credentials;
use serde::{Deserialize, Serialize};

pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_DATA_DIR") {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return PathBuf::from("/var/lib/flotilla");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("flotilla")
}

/// Where the KMS master key file lives unless `--kms-key-file` says: apart from the data
/// dir, so that a copy of the data dir (a backup, a stolen disk image of `/var/lib`) reveals no
/// secret. Root's is `/etc/flotilla/kms.key` (with the host's other keys, as sshd's are);
/// another user's `$XDG_CONFIG_HOME/flotilla/kms.key` (`~/.config`), next to nothing of the
/// data in `~/.local/share`.
pub fn default_kms_key_file() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/etc/flotilla/kms.key");
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("flotilla/kms.key")
}

/// Where this host's image store lives; the agent and `flotilla image` share it.
pub fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallIdentity {
    pub region: String,
    pub account_id: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCredentials {
    access_key_id: String,
    secret_access_key: String,
}

pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn open(dir: &Path) -> anyhow::Result<Home> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict permissions of {}", dir.display()))?;
        Ok(Home { dir: dir.to_owned() })
    }

    /// The KMS key file to use: `given`, or the default. Refused inside the data dir, whose
    /// copy must not reveal secrets.
    pub fn kms_key_file(&self, given: Option<&Path>) -> anyhow::Result<PathBuf> {
        let path = given.map(Path::to_owned).unwrap_or_else(default_kms_key_file);
        let absolute = std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))?;
        // The nearest existing ancestor, resolved, says where the file really is.
        let mut existing = absolute.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        let real = fs::canonicalize(existing).unwrap_or_else(|_| existing.to_owned());
        let data = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        if real.starts_with(&data) {
            bail!(
                "the KMS key file {} is inside the data dir {}: keep it apart, so that the data dir alone does not reveal secrets; pick another --kms-key-file",
                path.display(),
                self.dir.display()
            );
        }
        Ok(absolute)
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.join("state.redb")
    }

    /// The identity recorded when this data dir was first used. ARNs embed region and account,
    /// so a later start with different ones would orphan everything: refuse it.
    pub fn identity(&self, region: Option<&str>, account: Option<&str>) -> anyhow::Result<InstallIdentity> {
        let path = self.dir.join("identity.json");
        if let Some(stored) = read_json::<InstallIdentity>(&path)? {
            if region.is_some_and(|r| r != stored.region) || account.is_some_and(|a| a != stored.account_id) {
                bail!(
                    "{} was created for region {} and account {}; start with those (or omit --region/--account-id), or use another --data-dir",
                    self.dir.display(),
                    stored.region,
                    stored.account_id
                );
            }
            return Ok(stored);
        }
        let identity = InstallIdentity {
            region: region.unwrap_or("us-east-1").to_owned(),
            account_id: account.unwrap_or("000000000000").to_owned(),
        };
        if identity.account_id.len() != 12 || !identity.account_id.bytes().all(|b| b.is_ascii_digit()) {
            bail!("--account-id must be 12 digits, got '{}'", identity.account_id);
        }
        write_private(&path, &serde_json::to_vec_pretty(&identity)?)?;
        Ok(identity)
    }

    /// Credentials from the environment when set, else the ones generated on first start.
    pub fn credentials(&self) -> anyhow::Result<(Credentials, bool)> {
        if let (Ok(id), Ok(secret)) =
            (std::env::var("FLOTILLA_ACCESS_KEY_ID"), std::env::var("FLOTILLA_SECRET_ACCESS_KEY"))
        {
            return Ok((Credentials { access_key_id: id, secret_access_key: secret }, false));
        }
        let path = self.dir.join("credentials.json");
        if let Some(stored) = read_json::<StoredCredentials>(&path)? {
            return Ok((
                Credentials { access_key_id: stored.access_key_id, secret_access_key: stored.secret_access_key },
                false,
            ));
        }
        let stored = StoredCredentials {
            access_key_id: format!("AKIA{}", random_text(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?),
            secret_access_key: random_text(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")?,
        };
        write_private(&path, &serde_json::to_vec_pretty(&stored)?)?;
        Ok((Credentials { access_key_id: stored.access_key_id, secret_access_key: stored.secret_access_key }, true))
    }

    /// Records `credentials` as this data dir's (a server of a shared store takes the store's).
    pub fn record_credentials(&self, credentials: &Credentials) -> anyhow::Result<()> {
        let stored = StoredCredentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
        };
        write_private(&self.dir.join("credentials.json"), &serde_json::to_vec_pretty(&stored)?)
    }

    pub fn record_endpoint(&self, endpoint: &str) -> anyhow::Result<()> {
        write_private(&self.dir.join("endpoint"), endpoint.as_bytes())
    }

    pub fn endpoint(&self) -> Option<String> {
        fs::read_to_string(self.dir.join("endpoint")).ok().map(|s| s.trim().to_owned())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a file readable only by its owner, atomically (temp file, fsync, rename).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn random_text(len: usize, alphabet: &[u8]) -> anyhow::Result<String> {
    let mut raw = vec![0u8; len];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut raw)).context("cannot read /dev/urandom")?;
    // alphabet lengths are powers of two (32, 64), so the modulo is unbiased.
    Ok(raw.iter().map(|b| alphabet[*b as usize % alphabet.len()] as char).collect())
}
