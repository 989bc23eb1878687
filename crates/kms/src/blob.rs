//! Encrypt and Decrypt. A ciphertext blob is
//! `0x01 | key-id length (1 byte) | key id | nonce (12) | AES-256-GCM ciphertext and tag`,
//! sealed under the key's own material with the blob's header and the encryption context as
//! additional data: it names its key (Decrypt needs no key id, as on AWS), and a changed byte,
//! another key or another context all fail the same way, `InvalidCiphertextException`.

use std::collections::BTreeMap;

use crate::master::{open, seal};
use crate::{Kms, KmsError};

const VERSION: u8 = 1;

/// An encryption context: pairs that must be given again, exactly, to decrypt.
pub type Context = BTreeMap<String, String>;

fn aad(key_id: &str, context: &Context) -> Vec<u8> {
    let mut out = b"flotilla-kms-blob-v1\0".to_vec();
    out.extend_from_slice(key_id.as_bytes());
    for (k, v) in context {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

fn invalid() -> KmsError {
    KmsError::InvalidCiphertext(
        "The ciphertext is not one this KMS made, was altered, or its encryption context differs.".into(),
    )
}

/// The key id a blob names, and the sealed rest.
fn split(blob: &[u8]) -> Result<(&str, &[u8]), KmsError> {
    let [version, len, rest @ ..] = blob else { return Err(invalid()) };
    let len = usize::from(*len);
    if *version != VERSION || rest.len() < len {
        return Err(invalid());
    }
    let (id, sealed) = rest.split_at(len);
    let id = std::str::from_utf8(id).map_err(|_| invalid())?;
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(invalid());
    }
    Ok((id, sealed))
}

impl Kms {
    /// `plaintext` encrypted under the key `key_id` names; returns the blob and the key's ARN.
    /// No size limit here: the API enforces Encrypt's 4 KiB, services encrypt what they keep.
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &Context,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let (metadata, key) = self.usable(key_id).await?;
        let id = metadata.id.as_bytes();
        let mut blob = vec![VERSION, u8::try_from(id.len()).expect("key ids are UUIDs")];
        blob.extend_from_slice(id);
        blob.extend_from_slice(&seal(&key, &aad(&metadata.id, context), plaintext));
        Ok((blob, metadata.arn))
    }

    /// The plaintext of `blob`, and the ARN of the key it was encrypted under. With `key_id`,
    /// that key must be the blob's (`IncorrectKeyException` otherwise).
    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &Context,
        key_id: Option<&str>,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let (id, sealed) = split(blob)?;
        if let Some(named) = key_id {
            let named = self.describe_key(named).await?;
            if named.id != id {
                return Err(KmsError::IncorrectKey(format!(
                    "The key ID in the request does not identify the KMS key that encrypted the ciphertext ({}).",
                    named.arn
                )));
            }
        }
        let (metadata, key) = self.usable(id).await.map_err(|e| match e {
            KmsError::NotFound(_) => invalid(),
            other => other,
        })?;
        let plain = open(&key, &aad(id, context), sealed).ok_or_else(invalid)?;
        Ok((plain, metadata.arn))
    }

    /// The ARN of the key a blob names, without decrypting it (what SSM shows as a
    /// SecureString's key).
    pub fn blob_key_id(blob: &[u8]) -> Option<String> {
        split(blob).ok().map(|(id, _)| id.to_owned())
    }
}
