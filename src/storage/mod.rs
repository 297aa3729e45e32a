//! Object storage: one type over two backends (DESIGN §6.4).
//!
//! - [`LocalStore`], the embedded default: files under `DATA_DIR/objects/{bucket}/{key}`, reached
//!   through HMAC-signed, expiring URLs bound to method, bucket, key (and, for uploads, the exact
//!   size), served by the server's own `/storage/…` endpoints.
//! - [`S3Store`]: any S3-compatible service (AWS, MinIO, R2) through aws-sdk-s3 presigned URLs
//!   with a configurable endpoint and path-style addressing.
//!
//! Buckets: `lora-datasets` (`{user}/{dataset}/…`) and `lora-models` (`{user}/{artifact}/…`).

mod local;
mod s3;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use local::{LocalStore, SignatureError, UPTO_METHOD, UploadError, UploadOutcome};
pub use s3::{S3Settings, S3Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Datasets,
    Models,
}

impl Bucket {
    pub fn name(self) -> &'static str {
        match self {
            Self::Datasets => "lora-datasets",
            Self::Models => "lora-models",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "lora-datasets" => Some(Self::Datasets),
            "lora-models" => Some(Self::Models),
            _ => None,
        }
    }
}

/// A request a client may make without our credentials, until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SignedRequest {
    pub method: std::borrow::Cow<'static, str>,
    pub url: String,
    pub expires_at: DateTime<Utc>,
    /// Headers the client must send with it.
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("storage I/O error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

/// One stored object, as a listing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// Known when the object came through our own upload endpoint.
    pub sha256: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Storage {
    backend: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    Local(LocalStore),
    S3(S3Store),
}

pub type ObjectReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

impl Storage {
    pub fn local(root: PathBuf, signing_key: Vec<u8>, public_url: String) -> Self {
        Self {
            backend: Arc::new(Backend::Local(LocalStore::new(
                root,
                signing_key,
                public_url,
            ))),
        }
    }

    /// S3, creating the buckets when they are missing.
    pub async fn s3(settings: &S3Settings) -> Result<Self, StorageError> {
        let store = S3Store::new(settings);
        store.ensure_buckets().await?;
        Ok(Self {
            backend: Arc::new(Backend::S3(store)),
        })
    }

    /// The local store, for the HTTP endpoints that serve its signed URLs.
    pub fn local_store(&self) -> Option<&LocalStore> {
        match &*self.backend {
            Backend::Local(store) => Some(store),
            Backend::S3(_) => None,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match &*self.backend {
            Backend::Local(_) => "local",
            Backend::S3(_) => "s3",
        }
    }

    pub async fn presign_put(
        &self,
        bucket: Bucket,
        key: &str,
        size: u64,
        ttl: chrono::Duration,
    ) -> Result<SignedRequest, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.presign("PUT", bucket, key, Some(size), ttl),
            Backend::S3(store) => store.presign("PUT", bucket, key, Some(size), ttl).await,
        }
    }

    /// A PUT link for a file whose size the uploader does not know yet (at most `max` bytes).
    pub async fn presign_put_upto(
        &self,
        bucket: Bucket,
        key: &str,
        max: u64,
        ttl: chrono::Duration,
    ) -> Result<SignedRequest, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.presign_put_upto(bucket, key, max, ttl),
            // S3 caps a single PUT at 5 GB; the adapter is far smaller.
            Backend::S3(store) => store.presign("PUT", bucket, key, None, ttl).await,
        }
    }

    pub async fn presign_get(
        &self,
        bucket: Bucket,
        key: &str,
        ttl: chrono::Duration,
    ) -> Result<SignedRequest, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.presign("GET", bucket, key, None, ttl),
            Backend::S3(store) => store.presign("GET", bucket, key, None, ttl).await,
        }
    }

    pub async fn info(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<ObjectInfo>, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.info(bucket, key).await,
            Backend::S3(store) => store.info(bucket, key).await,
        }
    }

    pub async fn open(&self, bucket: Bucket, key: &str) -> Result<ObjectReader, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.open(bucket, key).await,
            Backend::S3(store) => store.open(bucket, key).await,
        }
    }

    /// Stores a local file as an object (e.g. the normalised training file).
    pub async fn put_file(
        &self,
        bucket: Bucket,
        key: &str,
        path: &std::path::Path,
    ) -> Result<u64, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.put_file(bucket, key, path).await,
            Backend::S3(store) => store.put_file(bucket, key, path).await,
        }
    }

    /// Stores a small object from memory (a model card), through a temporary file.
    pub async fn put_bytes(
        &self,
        bucket: Bucket,
        key: &str,
        bytes: &[u8],
    ) -> Result<u64, StorageError> {
        let io = |source| StorageError::Io {
            key: key.to_owned(),
            source,
        };
        let path = std::env::temp_dir().join(format!("lora-pipeline-put-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&path, bytes).await.map_err(io)?;
        let stored = self.put_file(bucket, key, &path).await;
        let _ = tokio::fs::remove_file(&path).await;
        stored
    }

    /// Moves an uploaded object to the key it is kept under once accepted, a key no upload
    /// link points to: a link still valid (S3 cannot revoke a presigned URL) or a PUT still in
    /// flight can then no longer change the accepted file. `false` when `from` holds nothing.
    pub async fn seal(&self, bucket: Bucket, from: &str, to: &str) -> Result<bool, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.seal(bucket, from, to).await,
            Backend::S3(store) => store.seal(bucket, from, to).await,
        }
    }

    pub async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.delete(bucket, key).await,
            Backend::S3(store) => store.delete(bucket, key).await,
        }
    }

    /// Every object in `bucket` (for the orphan sweep, which compares them with the rows).
    pub async fn list(&self, bucket: Bucket) -> Result<Vec<ListedObject>, StorageError> {
        match &*self.backend {
            Backend::Local(store) => store.list(bucket).await,
            Backend::S3(store) => store.list(bucket).await,
        }
    }
}

/// Keys are `/`-separated segments of safe characters: no `..`, no absolute paths, no empty
/// segments, so a key can never leave its bucket's directory.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_their_bucket() {
        assert!(check_key("u/d/original.jsonl").is_ok());
        for bad in [
            "", "/abs", "a//b", "../x", "a/../b", "a/./b", "a b", "a\\b", "a/b/", "é",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
