//! The local file store: objects as files, signed URLs served by our own endpoints.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Bucket, ObjectInfo, ObjectReader, SignedRequest, StorageError, check_key};

/// The method signed into "up to N bytes" upload links.
pub const UPTO_METHOD: &str = "PUT-UPTO";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    signing_key: Vec<u8>,
    /// e.g. `http://127.0.0.1:3000` — how clients (browsers, GPU workers) reach us.
    public_url: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the link has expired; ask for a new one")]
    Expired,
    #[error(
        "the link's signature does not match (it was altered, or is for another method or object)"
    )]
    Invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload is larger than the declared {declared} bytes")]
    TooLarge { declared: u64 },
    #[error("the upload ended after {received} of {declared} bytes")]
    Incomplete { received: u64, declared: u64 },
    #[error("the upload stream failed: {0}")]
    Stream(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a finished upload measured.
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    pub size: u64,
    pub sha256: String,
}

fn io_error(key: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        key: key.to_owned(),
        source,
    }
}

impl LocalStore {
    pub fn new(root: PathBuf, signing_key: Vec<u8>, public_url: String) -> Self {
        Self {
            root,
            signing_key,
            public_url: public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Where the object lives on disk.
    pub fn path(&self, bucket: Bucket, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(bucket.name()).join(key))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".sha256");
        path.with_file_name(name)
    }

    fn signature(
        &self,
        method: &str,
        bucket: Bucket,
        key: &str,
        expires: i64,
        size: Option<u64>,
    ) -> HmacSha256 {
        // Keys of any length are valid for HMAC.
        let mut mac =
            HmacSha256::new_from_slice(&self.signing_key).expect("HMAC accepts any key length");
        let size = size.map_or_else(|| "-".to_owned(), |s| s.to_string());
        mac.update(format!("v1\n{method}\n{}\n{key}\n{expires}\n{size}", bucket.name()).as_bytes());
        mac
    }

    pub fn presign(
        &self,
        method: &'static str,
        bucket: Bucket,
        key: &str,
        size: Option<u64>,
        ttl: chrono::Duration,
    ) -> Result<SignedRequest, StorageError> {
        check_key(key)?;
        let expires_at = Utc::now() + ttl;
        let expires = expires_at.timestamp();
        let signature = hex::encode(
            self.signature(method, bucket, key, expires, size)
                .finalize()
                .into_bytes(),
        );
        let mut url = format!(
            "{}/storage/{}/{key}?expires={expires}&signature={signature}",
            self.public_url,
            bucket.name()
        );
        let mut headers = std::collections::BTreeMap::new();
        if let Some(size) = size {
            url.push_str(&format!("&size={size}"));
            headers.insert("Content-Length".to_owned(), size.to_string());
        }
        Ok(SignedRequest {
            method: method.into(),
            url,
            expires_at: DateTime::from_timestamp(expires, 0).unwrap_or(expires_at),
            headers,
        })
    }

    /// A PUT link for an object of unknown size up to `max` bytes (a worker's output files).
    pub fn presign_put_upto(
        &self,
        bucket: Bucket,
        key: &str,
        max: u64,
        ttl: chrono::Duration,
    ) -> Result<SignedRequest, StorageError> {
        check_key(key)?;
        let expires_at = Utc::now() + ttl;
        let expires = expires_at.timestamp();
        // A distinct method in the signature: an exact-size link cannot be turned into this.
        let signature = hex::encode(
            self.signature(UPTO_METHOD, bucket, key, expires, Some(max))
                .finalize()
                .into_bytes(),
        );
        Ok(SignedRequest {
            method: "PUT".into(),
            url: format!(
                "{}/storage/{}/{key}?expires={expires}&signature={signature}&max={max}",
                self.public_url,
                bucket.name()
            ),
            expires_at: DateTime::from_timestamp(expires, 0).unwrap_or(expires_at),
            headers: std::collections::BTreeMap::new(),
        })
    }

    /// Checks a signed URL's parameters (constant-time comparison).
    pub fn verify(
        &self,
        method: &str,
        bucket: Bucket,
        key: &str,
        expires: i64,
        size: Option<u64>,
        signature: &str,
    ) -> Result<(), SignatureError> {
        let provided = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        self.signature(method, bucket, key, expires, size)
            .verify_slice(&provided)
            .map_err(|_| SignatureError::Invalid)?;
        if Utc::now().timestamp() > expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }

    /// Writes an upload to a temporary file, enforcing the declared size (exactly, or as a
    /// maximum when `exact` is false) as bytes arrive
    /// (constant memory), then moves it into place. A failed upload leaves nothing behind.
    pub async fn write_stream<S, B, E>(
        &self,
        bucket: Bucket,
        key: &str,
        declared: u64,
        exact: bool,
        mut body: S,
    ) -> Result<UploadOutcome, UploadError>
    where
        S: futures_core::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let path = self.path(bucket, key)?;
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        private_dir(&dir).await.map_err(io_error(key))?;
        let partial = dir.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = private_file(&partial).await.map_err(io_error(key))?;
            let mut hasher = Sha256::new();
            let mut received = 0u64;
            while let Some(chunk) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_next(cx)).await
            {
                let chunk = chunk.map_err(|e| UploadError::Stream(e.to_string()))?;
                let bytes = chunk.as_ref();
                received += bytes.len() as u64;
                if received > declared {
                    return Err(UploadError::TooLarge { declared });
                }
                hasher.update(bytes);
                file.write_all(bytes).await.map_err(io_error(key))?;
            }
            if exact && received != declared {
                return Err(UploadError::Incomplete { received, declared });
            }
            file.sync_all().await.map_err(io_error(key))?;
            Ok(UploadOutcome {
                size: received,
                sha256: hex::encode(hasher.finalize()),
            })
        }
        .await;
        match result {
            Ok(outcome) => {
                tokio::fs::rename(&partial, &path)
                    .await
                    .map_err(io_error(key))?;
                private_file(&Self::meta_path(&path))
                    .await
                    .map_err(io_error(key))?
                    .write_all(outcome.sha256.as_bytes())
                    .await
                    .map_err(io_error(key))?;
                Ok(outcome)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    pub async fn info(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path(bucket, key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                size: meta.len(),
                sha256: tokio::fs::read_to_string(Self::meta_path(&path)).await.ok(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(key)(e)),
        }
    }

    pub async fn open(&self, bucket: Bucket, key: &str) -> Result<ObjectReader, StorageError> {
        let path = self.path(bucket, key)?;
        let file = tokio::fs::File::open(&path).await.map_err(io_error(key))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 20, file)))
    }

    pub async fn put_file(
        &self,
        bucket: Bucket,
        key: &str,
        source: &Path,
    ) -> Result<u64, StorageError> {
        let path = self.path(bucket, key)?;
        if let Some(dir) = path.parent() {
            private_dir(dir).await.map_err(io_error(key))?;
        }
        // Copy then rename, so readers never see a half-written object.
        let partial = path.with_file_name(format!(".put-{}", uuid::Uuid::new_v4().simple()));
        let size = tokio::fs::copy(source, &partial)
            .await
            .map_err(io_error(key))?;
        // `copy` keeps the source's mode: objects are the owner's only.
        tokio::fs::set_permissions(
            &partial,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .await
        .map_err(io_error(key))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io_error(key))?;
        let _ = tokio::fs::remove_file(Self::meta_path(&path)).await;
        Ok(size)
    }

    /// Moves `from` to `to` (an atomic rename); `false` when there is nothing at `from`. The
    /// moved object's digest is dropped: a PUT racing the move may have written either file's.
    pub async fn seal(&self, bucket: Bucket, from: &str, to: &str) -> Result<bool, StorageError> {
        let (source, target) = (self.path(bucket, from)?, self.path(bucket, to)?);
        match tokio::fs::rename(&source, &target).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(from)(e)),
        }
        for meta in [Self::meta_path(&source), Self::meta_path(&target)] {
            let _ = tokio::fs::remove_file(meta).await;
        }
        Ok(true)
    }

    /// Every object file under the bucket's directory; digests (`*.sha256`) and uploads in
    /// progress (`.upload-*`) are not objects.
    pub async fn list(&self, bucket: Bucket) -> Result<Vec<super::ListedObject>, StorageError> {
        let root = self.root.join(bucket.name());
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&dir.to_string_lossy())(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_error(&dir.to_string_lossy()))?;
                    let path = entry.path();
                    let meta = entry
                        .metadata()
                        .map_err(io_error(&path.to_string_lossy()))?;
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if meta.is_dir() {
                        dirs.push(path);
                    } else if meta.is_file()
                        && !name.ends_with(".sha256")
                        && !name.starts_with(".upload-")
                        && let Ok(relative) = path.strip_prefix(&root)
                    {
                        found.push(super::ListedObject {
                            key: relative.to_string_lossy().into_owned(),
                            size: meta.len(),
                            modified: meta.modified().ok().map(DateTime::<Utc>::from),
                        });
                    }
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
        .await
        .map_err(|e| io_error("listing")(std::io::Error::other(e)))?
    }

    pub async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), StorageError> {
        let path = self.path(bucket, key)?;
        for p in [Self::meta_path(&path), path] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(key)(e)),
            }
        }
        Ok(())
    }
}

/// Creates `dir` (and its parents) readable by the server's user only: other local users
/// cannot read datasets and adapters.
async fn private_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
}

/// Creates (or truncates) `path` readable and writable by the server's user only.
async fn private_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> LocalStore {
        LocalStore::new(
            std::env::temp_dir(),
            b"test key".to_vec(),
            "http://x".into(),
        )
    }

    fn params(url: &str) -> (i64, String) {
        let query = url.split_once('?').unwrap().1;
        let get = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        (get("expires").parse().unwrap(), get("signature"))
    }

    #[tokio::test]
    async fn objects_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let store = LocalStore::new(
            root.path().join("objects"),
            b"k".to_vec(),
            "http://x".into(),
        );
        /// One chunk, then the end.
        struct Once(Option<Vec<u8>>);
        impl futures_core::Stream for Once {
            type Item = Result<Vec<u8>, std::io::Error>;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                std::task::Poll::Ready(self.0.take().map(Ok))
            }
        }
        let body = Once(Some(b"hello".to_vec()));
        store
            .write_stream(Bucket::Datasets, "u/d/file.jsonl", 5, true, body)
            .await
            .unwrap();
        let path = store.path(Bucket::Datasets, "u/d/file.jsonl").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&LocalStore::meta_path(&path)), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&root.path().join("objects")), 0o700);
    }

    #[test]
    fn signatures_bind_method_object_size_and_time() {
        let store = store();
        let signed = store
            .presign(
                "PUT",
                Bucket::Datasets,
                "u/d/f.jsonl",
                Some(10),
                chrono::Duration::minutes(5),
            )
            .unwrap();
        let (expires, sig) = params(&signed.url);
        assert!(
            store
                .verify(
                    "PUT",
                    Bucket::Datasets,
                    "u/d/f.jsonl",
                    expires,
                    Some(10),
                    &sig
                )
                .is_ok()
        );
        let invalid = Err(SignatureError::Invalid);
        assert_eq!(
            store.verify(
                "GET",
                Bucket::Datasets,
                "u/d/f.jsonl",
                expires,
                Some(10),
                &sig
            ),
            invalid
        );
        assert_eq!(
            store.verify(
                "PUT",
                Bucket::Models,
                "u/d/f.jsonl",
                expires,
                Some(10),
                &sig
            ),
            invalid
        );
        assert_eq!(
            store.verify(
                "PUT",
                Bucket::Datasets,
                "u/d/g.jsonl",
                expires,
                Some(10),
                &sig
            ),
            invalid
        );
        assert_eq!(
            store.verify(
                "PUT",
                Bucket::Datasets,
                "u/d/f.jsonl",
                expires,
                Some(11),
                &sig
            ),
            invalid
        );
        assert_eq!(
            store.verify(
                "PUT",
                Bucket::Datasets,
                "u/d/f.jsonl",
                expires + 1,
                Some(10),
                &sig
            ),
            invalid
        );
        assert_eq!(
            store.verify(
                "PUT",
                Bucket::Datasets,
                "u/d/f.jsonl",
                expires,
                Some(10),
                "zz"
            ),
            invalid
        );

        let old = store
            .presign(
                "GET",
                Bucket::Datasets,
                "u/d/f.jsonl",
                None,
                chrono::Duration::seconds(-5),
            )
            .unwrap();
        let (expires, sig) = params(&old.url);
        assert_eq!(
            store.verify("GET", Bucket::Datasets, "u/d/f.jsonl", expires, None, &sig),
            Err(SignatureError::Expired)
        );
    }
}
