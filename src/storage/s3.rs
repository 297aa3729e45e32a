//! S3 (AWS, MinIO, R2, any S3-compatible service) through aws-sdk-s3: presigned URLs for
//! clients, streaming reads and file uploads for the server.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};

use super::{Bucket, ObjectInfo, ObjectReader, SignedRequest, StorageError, check_key};

/// Connection settings for an S3-compatible service.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// e.g. `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000` (MinIO).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `http://host/bucket/key` instead of `http://bucket.host/key` (MinIO, most self-hosted).
    pub path_style: bool,
    /// Prefix of the bucket names (`{prefix}lora-datasets`), to share an account.
    pub bucket_prefix: String,
}

#[derive(Debug)]
pub struct S3Store {
    client: Client,
    prefix: String,
}

fn s3_error(key: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError::Io {
        key: key.to_owned(),
        source: std::io::Error::other(error.to_string()),
    }
}

impl S3Store {
    pub fn new(settings: &S3Settings) -> Self {
        let credentials = Credentials::new(
            &settings.access_key_id,
            &settings.secret_access_key,
            None,
            None,
            "lora-pipeline",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .endpoint_url(&settings.endpoint)
            .credentials_provider(credentials)
            .force_path_style(settings.path_style)
            .build();
        Self {
            client: Client::from_conf(config),
            prefix: settings.bucket_prefix.clone(),
        }
    }

    fn bucket(&self, bucket: Bucket) -> String {
        format!("{}{}", self.prefix, bucket.name())
    }

    /// Creates the two buckets when they do not exist (idempotent; run at start).
    pub async fn ensure_buckets(&self) -> Result<(), StorageError> {
        for bucket in [Bucket::Datasets, Bucket::Models] {
            let name = self.bucket(bucket);
            if self.client.head_bucket().bucket(&name).send().await.is_ok() {
                continue;
            }
            if let Err(e) = self.client.create_bucket().bucket(&name).send().await {
                // Another replica may have created it meanwhile.
                if self
                    .client
                    .head_bucket()
                    .bucket(&name)
                    .send()
                    .await
                    .is_err()
                {
                    return Err(s3_error(&name, aws_sdk_s3::error::DisplayErrorContext(e)));
                }
            }
        }
        Ok(())
    }

    pub async fn presign(
        &self,
        method: &'static str,
        bucket: Bucket,
        key: &str,
        size: Option<u64>,
        ttl: chrono::Duration,
    ) -> Result<SignedRequest, StorageError> {
        check_key(key)?;
        let seconds = ttl.num_seconds().clamp(1, 7 * 24 * 3600) as u64;
        let config = PresigningConfig::expires_in(Duration::from_secs(seconds))
            .map_err(|e| s3_error(key, e))?;
        let display = |e: &dyn std::fmt::Display| s3_error(key, e);
        let request = match method {
            "PUT" => {
                let mut put = self
                    .client
                    .put_object()
                    .bucket(self.bucket(bucket))
                    .key(key);
                if let Some(size) = size {
                    // Signed, so a client cannot send another size.
                    put = put.content_length(size as i64);
                }
                put.presigned(config)
                    .await
                    .map_err(|e| display(&aws_sdk_s3::error::DisplayErrorContext(e)))?
            }
            _ => self
                .client
                .get_object()
                .bucket(self.bucket(bucket))
                .key(key)
                .presigned(config)
                .await
                .map_err(|e| display(&aws_sdk_s3::error::DisplayErrorContext(e)))?,
        };
        Ok(SignedRequest {
            method: method.into(),
            url: request.uri().to_owned(),
            expires_at: Utc::now() + chrono::Duration::seconds(seconds as i64),
            headers: request
                .headers()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        })
    }

    pub async fn info(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<ObjectInfo>, StorageError> {
        check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(ObjectInfo {
                size: head.content_length().unwrap_or(0).max(0) as u64,
                sha256: None,
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    pub async fn open(&self, bucket: Bucket, key: &str) -> Result<ObjectReader, StorageError> {
        check_key(key)?;
        let object = self
            .client
            .get_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(Box::new(object.body.into_async_read()))
    }

    pub async fn put_file(
        &self,
        bucket: Bucket,
        key: &str,
        path: &Path,
    ) -> Result<u64, StorageError> {
        check_key(key)?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| s3_error(key, e))?
            .len();
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| s3_error(key, e))?;
        self.client
            .put_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(size)
    }

    /// Copies `from` to `to` inside the bucket (server-side), then deletes `from`; `false` when
    /// there is nothing at `from`.
    pub async fn seal(&self, bucket: Bucket, from: &str, to: &str) -> Result<bool, StorageError> {
        check_key(from)?;
        check_key(to)?;
        if self.info(bucket, from).await?.is_none() {
            return Ok(false);
        }
        let name = self.bucket(bucket);
        self.client
            .copy_object()
            .copy_source(format!("{name}/{from}"))
            .bucket(name)
            .key(to)
            .send()
            .await
            .map_err(|e| s3_error(to, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        self.delete(bucket, from).await?;
        Ok(true)
    }

    /// Every object in the bucket, a page (1,000 keys) at a time.
    pub async fn list(&self, bucket: Bucket) -> Result<Vec<super::ListedObject>, StorageError> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(self.bucket(bucket))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error(bucket.name(), aws_sdk_s3::error::DisplayErrorContext(e)))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                found.push(super::ListedObject {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object
                        .last_modified()
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => token = Some(next.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    pub async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(key, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}
