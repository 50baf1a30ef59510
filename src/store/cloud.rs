//! Object storage as a technical store, through object_store: S3 (and
//! S3-compatible servers) as `s3://bucket/prefix`, Azure Blob as
//! `az://container/prefix`. Credentials, region and endpoints come from the
//! providers' standard environment variables (`AWS_*`, `AZURE_STORAGE_*`)
//! and are never printed.
//!
//! Providers disagree about deleting a missing key (S3 answers success), so
//! `delete` asks first: a key that is not there is `AlreadyGone`, and only a
//! key that was there is `Deleted`. Versions, snapshots and soft delete are
//! kept by the provider: `check` says plainly that lethe deletes the current
//! version only (so far).

use std::io::Read;

use async_trait::async_trait;
use futures::TryStreamExt;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{DeleteOutcome, Listed, ObjectMeta, StoreError, TechnicalStore, validate_key};

pub struct CloudStore {
    inner: Arc<dyn ObjectStore>,
    /// `s3` or `az`.
    scheme: &'static str,
    bucket: String,
    prefix: String,
    /// `prefix` as a path, checked when the store was opened.
    prefix_path: Option<Path>,
    /// Batch requests for deletes (`technical.batch_deletes`).
    batch: bool,
}

fn open_error(scheme: &str, bucket: &str, e: object_store::Error) -> StoreError {
    StoreError::Open {
        store: format!("{scheme}://{bucket}"),
        source: std::io::Error::other(e.to_string()),
    }
}

fn io(op: &'static str, e: object_store::Error) -> StoreError {
    let kind = match &e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => std::io::ErrorKind::PermissionDenied,
        object_store::Error::Precondition { .. } | object_store::Error::NotSupported { .. } => {
            std::io::ErrorKind::InvalidInput
        }
        // Network trouble, throttling, 5xx: worth a retry.
        _ => std::io::ErrorKind::TimedOut,
    };
    StoreError::Io {
        op,
        source: std::io::Error::new(kind, redact(&e)),
    }
}

/// object_store's messages quote the request URL, which holds the object
/// key (possibly personal data): keep the kind and the HTTP status only.
fn redact(e: &object_store::Error) -> String {
    let text = e.to_string();
    let status = text.find("status code: ").map(|i| {
        let rest = &text[i + 13..];
        let end = rest.find(':').unwrap_or(rest.len()).min(40);
        format!(" (HTTP {})", rest[..end].trim())
    });
    let code = text.find("<Code>").and_then(|i| {
        let rest = &text[i + 6..];
        rest.find("</Code>")
            .map(|j| format!(" {}", &rest[..j.min(60)]))
    });
    let what = match e {
        object_store::Error::NotFound { .. } => "not found",
        object_store::Error::PermissionDenied { .. } => "permission denied",
        object_store::Error::Unauthenticated { .. } => "unauthenticated",
        object_store::Error::Precondition { .. } => "precondition failed",
        object_store::Error::NotSupported { .. } => "not supported by the store",
        _ => "request failed",
    };
    format!(
        "{what}{}{}",
        status.unwrap_or_default(),
        code.unwrap_or_default()
    )
}

/// One batch request (DeleteObjects or Blob Batch) for `chunk`; an answer
/// per key, by the key's index in the caller's list.
async fn delete_chunk(
    inner: &dyn ObjectStore,
    chunk: &[(usize, Path)],
) -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
    use futures::StreamExt;
    let locations =
        futures::stream::iter(chunk.iter().map(|(_, p)| Ok(p.clone())).collect::<Vec<_>>()).boxed();
    let results: Vec<Result<Path, object_store::Error>> =
        inner.delete_stream(locations).collect().await;
    if results.len() == chunk.len() {
        // One result per key, in order (object_store keeps the order).
        return chunk
            .iter()
            .zip(results)
            .map(|((i, _), r)| {
                let r = match r {
                    Ok(_) => Ok(DeleteOutcome::Deleted),
                    Err(object_store::Error::NotFound { .. }) => Ok(DeleteOutcome::AlreadyGone),
                    Err(e) => Err(io("delete", e)),
                };
                (*i, r)
            })
            .collect();
    }
    // The request as a whole failed: every key of it failed with that error
    // (a transient one is retried).
    let (kind, text) = match results.into_iter().find_map(|r| r.err()) {
        Some(e) => match io("batch delete", e) {
            StoreError::Io { source, .. } => (source.kind(), source.to_string()),
            other => (std::io::ErrorKind::Other, other.to_string()),
        },
        None => (
            std::io::ErrorKind::Other,
            "the store answered for fewer keys than it was sent".to_string(),
        ),
    };
    chunk
        .iter()
        .map(|(i, _)| {
            (
                *i,
                Err(StoreError::Io {
                    op: "batch delete",
                    source: std::io::Error::new(kind, text.clone()),
                }),
            )
        })
        .collect()
}

impl CloudStore {
    /// One request per deleted object instead of batches.
    pub fn without_batches(mut self) -> CloudStore {
        self.batch = false;
        self
    }

    /// `location` is `bucket/prefix` (the part after `s3://`); the rest
    /// comes from the environment.
    pub fn s3(location: &str) -> Result<CloudStore, StoreError> {
        let mut builder = AmazonS3Builder::from_env();
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            builder = builder.with_endpoint(endpoint);
        }
        let (bucket, _) = location.split_once('/').unwrap_or((location, ""));
        let inner = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| open_error("s3", bucket, e))?;
        Self::build("s3", location, Arc::new(inner))
    }

    /// `location` is `container/prefix` (the part after `az://`); account
    /// and credentials from the environment.
    pub fn azure(location: &str) -> Result<CloudStore, StoreError> {
        let (container, _) = location.split_once('/').unwrap_or((location, ""));
        let inner = MicrosoftAzureBuilder::from_env()
            .with_container_name(container)
            .build()
            .map_err(|e| open_error("az", container, e))?;
        Self::build("az", location, Arc::new(inner))
    }

    /// Azure Blob in the Azurite emulator on loopback (127.0.0.1:10000, or
    /// `AZURITE_BLOB_STORAGE_URL`): for tests.
    pub fn azurite(location: &str) -> Result<CloudStore, StoreError> {
        let (container, _) = location.split_once('/').unwrap_or((location, ""));
        let inner = MicrosoftAzureBuilder::new()
            .with_use_emulator(true)
            .with_container_name(container)
            .build()
            .map_err(|e| open_error("az", container, e))?;
        Self::build("az", location, Arc::new(inner))
    }

    /// An S3-compatible server at `endpoint` (plain HTTP allowed), with
    /// explicit credentials: for tests against a loopback server.
    pub fn s3_at(
        location: &str,
        endpoint: &str,
        access_key: &str,
        secret: &str,
    ) -> Result<CloudStore, StoreError> {
        let (bucket, _) = location.split_once('/').unwrap_or((location, ""));
        let inner = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(access_key)
            .with_secret_access_key(secret)
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| open_error("s3", bucket, e))?;
        Self::build("s3", location, Arc::new(inner))
    }

    fn build(
        scheme: &'static str,
        location: &str,
        inner: Arc<dyn ObjectStore>,
    ) -> Result<CloudStore, StoreError> {
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        let prefix = prefix.trim_matches('/');
        // A prefix that does not parse must not silently become the whole bucket.
        let prefix_path = if prefix.is_empty() {
            None
        } else {
            Some(Path::parse(prefix).map_err(|_| StoreError::Open {
                store: format!("{scheme}://{bucket}"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the prefix is not a valid object path",
                ),
            })?)
        };
        Ok(CloudStore {
            inner,
            scheme,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            prefix_path,
            batch: true,
        })
    }

    /// The object's path, exactly as the key says: `Path::parse` keeps
    /// spaces and non-ASCII as they are (`Path::from` would percent-encode
    /// them into a different S3 key).
    fn path(&self, key: &str) -> Result<Path, StoreError> {
        validate_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|_| StoreError::InvalidKey {
            reason: "not a valid object path",
        })
    }

    fn key_of_path(&self, path: &Path) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(full)
                .to_string()
        }
    }

    /// Writes an object with user metadata (tests and tooling).
    pub async fn put_with_metadata(
        &self,
        key: &str,
        content: Vec<u8>,
        metadata: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let mut attributes = object_store::Attributes::new();
        for (k, v) in metadata {
            attributes.insert(
                object_store::Attribute::Metadata(k.to_string().into()),
                v.to_string().into(),
            );
        }
        let options = object_store::PutOptions {
            attributes,
            ..Default::default()
        };
        self.inner
            .put_opts(&self.path(key)?, content.into(), options)
            .await
            .map_err(|e| io("put", e))?;
        Ok(())
    }

    /// Writes an object (tests and tooling; lethe itself never writes).
    pub async fn put(&self, key: &str, content: Vec<u8>) -> Result<(), StoreError> {
        self.inner
            .put(&self.path(key)?, content.into())
            .await
            .map_err(|e| io("put", e))?;
        Ok(())
    }

    fn meta(&self, m: &object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            key: self.key_of_path(&m.location),
            size: m.size,
            modified: Some(m.last_modified.timestamp()),
            etag: m.e_tag.clone(),
            metadata: Vec::new(),
        }
    }
}

#[async_trait]
impl TechnicalStore for CloudStore {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}://{}", self.scheme, self.bucket)
        } else {
            format!("{}://{}/{}", self.scheme, self.bucket, self.prefix)
        }
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        self.inner
            .list_with_delimiter(self.prefix_path.as_ref())
            .await
            .map_err(|source| StoreError::Open {
                store: self.describe(),
                source: std::io::Error::other(redact(&source)),
            })?;
        let mut notes = vec![format!("{}: listable", self.describe())];
        notes.extend(self.erasure_note());
        Ok(notes)
    }

    fn erasure_note(&self) -> Option<String> {
        Some(match self.scheme {
            "s3" => "s3: lethe deletes the current version of each object; in a versioned bucket older versions and delete markers remain until a lifecycle rule expires them".into(),
            _ => "azure: lethe deletes the current blob; blob snapshots, versions and soft-deleted copies remain until the account's retention expires them".into(),
        })
    }

    async fn list(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError> {
        let mut stream = self.inner.list(self.prefix_path.as_ref());
        let mut n = 0;
        while let Some(m) = stream.try_next().await.map_err(|e| StoreError::List {
            store: self.describe(),
            at: format!("after {n} objects"),
            source: std::io::Error::other(redact(&e)),
        })? {
            sink(Listed::Object(self.meta(&m)));
            n += 1;
        }
        Ok(n)
    }

    async fn read(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let got = self
            .inner
            .get(&self.path(key)?)
            .await
            .map_err(|e| io("open", e))?;
        // Small objects in memory; larger ones spill to a temporary file, so
        // that reading costs bounded memory either way.
        if got.meta.size <= crate::index::extract::SLURP_MAX {
            let bytes = got.bytes().await.map_err(|e| io("read", e))?;
            return Ok(Box::new(std::io::Cursor::new(bytes)));
        }
        let mut file = tempfile::tempfile().map_err(|source| StoreError::Io {
            op: "spill",
            source,
        })?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| io("read", e))? {
            std::io::Write::write_all(&mut file, &chunk).map_err(|source| StoreError::Io {
                op: "spill",
                source,
            })?;
        }
        std::io::Seek::rewind(&mut file).map_err(|source| StoreError::Io {
            op: "spill",
            source,
        })?;
        Ok(Box::new(file))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self.inner.head(&self.path(key)?).await {
            Ok(m) => Ok(Some(self.meta(&m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io("head", e)),
        }
    }

    async fn metadata(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let options = object_store::GetOptions {
            head: true,
            ..Default::default()
        };
        let got = self
            .inner
            .get_opts(&self.path(key)?, options)
            .await
            .map_err(|e| io("head", e))?;
        Ok(got
            .attributes
            .iter()
            .filter_map(|(k, v)| match k {
                object_store::Attribute::Metadata(name) => {
                    Some((name.to_ascii_lowercase(), v.as_ref().to_string()))
                }
                _ => None,
            })
            .collect())
    }

    fn delete_batch_size(&self) -> usize {
        if !self.batch {
            return 1;
        }
        match self.scheme {
            // DeleteObjects takes up to 1,000 keys, Blob Batch up to 256.
            "s3" => 1000,
            _ => 256,
        }
    }

    /// S3: every key is asked for first (DeleteObjects reports a missing
    /// key as deleted, and lethe never claims an erasure it did not do),
    /// sixteen at a time, then the ones present go in DeleteObjects requests.
    /// Azure: one Blob Batch; a missing blob answers 404 per key.
    async fn delete_many(&self, keys: &[String]) -> Vec<Result<DeleteOutcome, StoreError>> {
        use futures::StreamExt;
        let mut out: Vec<Option<Result<DeleteOutcome, StoreError>>> =
            (0..keys.len()).map(|_| None).collect();
        let mut paths: Vec<(usize, Path)> = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            match self.path(k) {
                Ok(p) => paths.push((i, p)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if self.scheme == "s3" {
            let inner = self.inner.clone();
            let heads: Vec<(usize, Path, Result<(), object_store::Error>)> =
                futures::stream::iter(paths.drain(..).map(|(i, p)| {
                    let inner = inner.clone();
                    async move {
                        let r = inner.head(&p).await.map(|_| ());
                        (i, p, r)
                    }
                }))
                .buffered(16)
                .collect()
                .await;
            for (i, p, r) in heads {
                match r {
                    Ok(()) => paths.push((i, p)),
                    Err(object_store::Error::NotFound { .. }) => {
                        out[i] = Some(Ok(DeleteOutcome::AlreadyGone))
                    }
                    Err(e) => out[i] = Some(Err(io("head", e))),
                }
            }
        }
        // Batches go four at a time; each answers for its own keys.
        let inner = self.inner.clone();
        type Answers = Vec<(usize, Result<DeleteOutcome, StoreError>)>;
        let batches: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Answers> + Send>>> =
            paths
                .chunks(self.delete_batch_size())
                .map(|chunk| {
                    let inner = inner.clone();
                    let chunk = chunk.to_vec();
                    Box::pin(async move { delete_chunk(inner.as_ref(), &chunk).await })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = Answers> + Send>>
                })
                .collect();
        let answers: Vec<Answers> = futures::stream::iter(batches)
            .buffer_unordered(4)
            .collect()
            .await;
        for (i, r) in answers.into_iter().flatten() {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(StoreError::Io {
                        op: "batch delete",
                        source: std::io::Error::other("no answer for this key"),
                    })
                })
            })
            .collect()
    }

    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError> {
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(DeleteOutcome::AlreadyGone),
            Err(e) => return Err(io("head", e)),
            Ok(_) => {}
        }
        self.inner
            .delete(&path)
            .await
            .map_err(|e| io("delete", e))?;
        Ok(DeleteOutcome::Deleted)
    }
}
