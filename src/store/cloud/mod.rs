//! Object storage as a technical store, through object_store: S3 (and
//! S3-compatible servers) as `s3://bucket/prefix`, Azure Blob as
//! `az://container/prefix`. Credentials, region and endpoints come from the
//! providers' standard environment variables (`AWS_*`, `AZURE_STORAGE_*`)
//! and are never printed.
//!
//! Providers disagree about deleting a missing key (S3 answers success), so
//! `delete` asks first: a key that is not there is `AlreadyGone`, and only a
//! key that was there is `Deleted`.
//!
//! What a delete leaves behind is the provider's to keep, and lethe removes
//! it where the API lets it (`s3/`, `azure/`): in a versioned S3 bucket every
//! version and delete marker of a key is deleted; an Azure blob is deleted
//! with its snapshots. What remains (soft-deleted Azure blobs, Azure blob
//! versions, versions under an S3 Object Lock) is said by `check` and in
//! every apply report that deleted objects.
//!
//! This file opens the stores, lists, reads and checks them; the deletes
//! are `delete.rs`'s, a rewrite (a redaction) is `rewrite.rs`'s: a HEAD,
//! then a PUT conditional on the etag it answered, whole or in parts, then
//! the old content dropped from versions and snapshots.

use std::io::Read;

use async_trait::async_trait;
use futures::TryStreamExt;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::azure::{AzureBlobs, SoftDelete};
use super::s3::{S3Versions, Versioning};
use super::{
    DeleteOutcome, Expected, Listed, ObjectMeta, RewriteOutcome, StoreError, StoreErrorKind,
    TechnicalStore, validate_key,
};

mod delete;
mod rewrite;

pub use rewrite::{PART_SIZE, WHOLE_PUT_MAX};

/// The provider calls object_store does not make (versions, snapshots).
#[derive(Clone)]
enum Api {
    S3(Arc<S3Versions>),
    Azure(Arc<AzureBlobs>),
}

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
    /// Rewrites larger than this go in parts of `part_size`.
    whole_put_max: u64,
    part_size: u64,
    api: Api,
}

fn s3_api(
    builder: &AmazonS3Builder,
    inner: object_store::aws::AmazonS3,
    bucket: &str,
) -> Result<Api, StoreError> {
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted = builder
        .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .as_deref()
        == Some("true");
    Ok(Api::S3(Arc::new(S3Versions::new(
        inner,
        bucket,
        endpoint.as_deref(),
        &region,
        virtual_hosted,
    )?)))
}

fn azure_api(
    builder: &MicrosoftAzureBuilder,
    inner: object_store::azure::MicrosoftAzure,
    container: &str,
) -> Result<Api, StoreError> {
    let emulator = builder
        .get_config_value(&AzureConfigKey::UseEmulator)
        .as_deref()
        == Some("true");
    let named = builder.get_config_value(&AzureConfigKey::AccountName);
    let (account, url) = if emulator {
        // Path-style, as object_store addresses the emulator.
        let account = named.unwrap_or_else(|| "devstoreaccount1".into());
        let base = std::env::var("AZURITE_BLOB_STORAGE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
        let url = format!("{}/{account}", base.trim_end_matches('/'));
        (account, url)
    } else {
        let account = named.unwrap_or_default();
        let url = builder
            .get_config_value(&AzureConfigKey::Endpoint)
            .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
        (account, url)
    };
    Ok(Api::Azure(Arc::new(AzureBlobs::new(
        inner, &account, &url, container,
    )?)))
}

fn open_error(scheme: &str, bucket: &str, e: object_store::Error) -> StoreError {
    StoreError::Open {
        store: format!("{scheme}://{bucket}"),
        source: std::io::Error::other(e.to_string()),
    }
}

fn io(op: &'static str, e: object_store::Error) -> StoreError {
    let kind = match &e {
        // As it always was: a missing object where one was expected (a
        // read racing a delete) is worth another look.
        object_store::Error::NotFound { .. } => StoreErrorKind::Transient,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StoreErrorKind::Permanent,
        object_store::Error::Precondition { .. } | object_store::Error::NotSupported { .. } => {
            StoreErrorKind::Permanent
        }
        // Network trouble, throttling, 5xx: worth a retry.
        _ => StoreErrorKind::Transient,
    };
    StoreError::failed(op, kind, redact(&e))
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

impl CloudStore {
    /// One request per deleted object instead of batches.
    pub fn without_batches(mut self) -> CloudStore {
        self.batch = false;
        self
    }

    /// Rewrites larger than `whole_put_max` bytes go in parts of
    /// `part_size` (tests and tooling; [`WHOLE_PUT_MAX`] and [`PART_SIZE`]
    /// otherwise). S3 takes parts of at least 5 MiB.
    pub fn rewriting_in_parts_above(mut self, whole_put_max: u64, part_size: u64) -> CloudStore {
        self.whole_put_max = whole_put_max;
        self.part_size = part_size.max(1);
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
        Self::build_s3(builder.with_bucket_name(bucket), location)
    }

    fn build_s3(builder: AmazonS3Builder, location: &str) -> Result<CloudStore, StoreError> {
        let (bucket, _) = location.split_once('/').unwrap_or((location, ""));
        let inner = builder
            .clone()
            .build()
            .map_err(|e| open_error("s3", bucket, e))?;
        let api = s3_api(&builder, inner.clone(), bucket)?;
        Self::build("s3", location, Arc::new(inner), api)
    }

    fn build_azure(
        builder: MicrosoftAzureBuilder,
        location: &str,
    ) -> Result<CloudStore, StoreError> {
        let (container, _) = location.split_once('/').unwrap_or((location, ""));
        let inner = builder
            .clone()
            .build()
            .map_err(|e| open_error("az", container, e))?;
        let api = azure_api(&builder, inner.clone(), container)?;
        Self::build("az", location, Arc::new(inner), api)
    }

    /// `location` is `container/prefix` (the part after `az://`); account
    /// and credentials from the environment.
    pub fn azure(location: &str) -> Result<CloudStore, StoreError> {
        let (container, _) = location.split_once('/').unwrap_or((location, ""));
        Self::build_azure(
            MicrosoftAzureBuilder::from_env().with_container_name(container),
            location,
        )
    }

    /// Azure Blob in the Azurite emulator on loopback (127.0.0.1:10000, or
    /// `AZURITE_BLOB_STORAGE_URL`): for tests.
    pub fn azurite(location: &str) -> Result<CloudStore, StoreError> {
        let (container, _) = location.split_once('/').unwrap_or((location, ""));
        Self::build_azure(
            MicrosoftAzureBuilder::new()
                .with_use_emulator(true)
                .with_container_name(container),
            location,
        )
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
        let builder = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(access_key)
            .with_secret_access_key(secret)
            .with_bucket_name(bucket);
        Self::build_s3(builder, location)
    }

    fn build(
        scheme: &'static str,
        location: &str,
        inner: Arc<dyn ObjectStore>,
        api: Api,
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
            whole_put_max: WHOLE_PUT_MAX,
            part_size: PART_SIZE,
            api,
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
            // Azure lists etags bare and answers HEADs with them quoted;
            // S3 quotes both. Bare everywhere, so that the two compare.
            etag: m.e_tag.as_deref().map(|e| e.trim_matches('"').to_string()),
            metadata: Vec::new(),
            name: None,
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
        match &self.api {
            Api::S3(api) => {
                notes.push(match api.versioning().await? {
                    Versioning::Off => "s3: versioning is off: a delete removes the object".into(),
                    Versioning::On { status, mfa_delete: false } => format!(
                        "s3: versioning is {status}: apply deletes every version and delete marker of each key"
                    ),
                    Versioning::On { status, mfa_delete: true } => format!(
                        "s3: versioning is {status} with MFA delete: versions cannot be deleted without the MFA device, and apply fails those items as blocked"
                    ),
                    Versioning::Unknown(why) => format!("s3: versioning unknown ({why})"),
                });
                notes.extend(api.object_lock().await?);
                if matches!(api.seen(), Some(Versioning::On { .. })) {
                    let prefix = if self.prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{}/", self.prefix)
                    };
                    let (keys, versions) = api.hidden_versions(&prefix).await?;
                    if keys > 0 {
                        notes.push(format!(
                            "s3: {keys} keys exist only as older versions behind a delete marker ({versions} versions): no listing shows them, so lethe cannot link or delete them; a lifecycle rule for noncurrent versions, or `aws s3api delete-object --version-id`, removes them"
                        ));
                    }
                }
            }
            Api::Azure(api) => {
                api.soft_delete().await?;
            }
        }
        notes.push(format!(
            "{}: rewrites (redactions) are PUTs conditional on the etag a HEAD just answered (If-Match), in parts above {} MiB; a server that ignores If-Match leaves the moment between that HEAD and the PUT (or the completion of the parts) unguarded",
            self.scheme,
            self.whole_put_max >> 20
        ));
        notes.extend(self.erasure_note());
        Ok(notes)
    }

    fn erasure_note(&self) -> Option<String> {
        match &self.api {
            Api::S3(api) => match api.seen() {
                Some(Versioning::Off) => None,
                Some(Versioning::On { .. }) => None,
                Some(Versioning::Unknown(why)) => Some(format!(
                    "s3: the bucket's versioning could not be read ({why}): lethe deleted the current version of each object; if the bucket is versioned, older versions and delete markers remain until a lifecycle rule expires them"
                )),
                None => Some("s3: the bucket's versioning was not read: if the bucket is versioned, older versions remain until a lifecycle rule expires them".into()),
            },
            Api::Azure(api) => {
                let soft = match api.seen() {
                    Some(SoftDelete::Off) => "soft delete is off".to_string(),
                    Some(SoftDelete::Days(d)) => {
                        let until = jiff::Timestamp::now()
                            .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(*d)))
                            .map(|t| t.strftime("%Y-%m-%dT%H:%MZ").to_string())
                            .unwrap_or_default();
                        format!("soft delete is on for {d} days: deleted blobs, and the old content of rewritten ones, are recoverable until {until}")
                    }
                    Some(SoftDelete::Unknown(why)) => format!("soft delete unknown ({why})"),
                    None => "soft delete could not be read".to_string(),
                };
                Some(format!(
                    "azure: lethe deletes each blob with its snapshots (and a rewritten blob's snapshots); {soft}; if blob versioning is on for the account, previous versions remain until its lifecycle policy deletes them"
                ))
            }
        }
    }

    async fn list(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError> {
        let mut stream = self.inner.list(self.prefix_path.as_ref());
        let mut n = 0;
        while let Some(m) = stream.try_next().await.map_err(|e| StoreError::List {
            store: self.describe(),
            at: format!("after {n} objects"),
            kind: StoreErrorKind::Transient,
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
        if got.meta.size <= super::SLURP_MAX {
            let bytes = got.bytes().await.map_err(|e| io("read", e))?;
            return Ok(Box::new(std::io::Cursor::new(bytes)));
        }
        let mut file = tempfile::tempfile().map_err(|source| StoreError::io("spill", source))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| io("read", e))? {
            std::io::Write::write_all(&mut file, &chunk)
                .map_err(|source| StoreError::io("spill", source))?;
        }
        std::io::Seek::rewind(&mut file).map_err(|source| StoreError::io("spill", source))?;
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
            // DeleteObjects takes up to 1,000 keys, a Blob Batch 256.
            "s3" => 1000,
            _ => super::azure::batch::MAX_BATCH,
        }
    }

    /// S3, versioned bucket: every version of each key is listed, then
    /// deleted by version id (DeleteObjects). Unversioned: every key is asked
    /// for first (DeleteObjects reports a missing key as deleted, and lethe
    /// never claims an erasure it did not do), 64 at a time, then the
    /// ones present go in DeleteObjects requests.
    /// Azure: a Blob Batch of Delete Blob sub-requests with snapshots per
    /// 256 keys, four batches in flight (one request per blob, 32 in flight,
    /// without batches); a missing blob answers 404.
    async fn delete_many(&self, keys: &[String]) -> Vec<Result<DeleteOutcome, StoreError>> {
        self.delete_many_expecting(keys, &vec![None; keys.len()])
            .await
    }

    /// Each comparison with what the index read rides on a request the
    /// delete makes anyway: the HEAD (unversioned S3), the version listing
    /// (versioned S3), `If-Match` (Azure).
    async fn delete_many_expecting(
        &self,
        keys: &[String],
        expected: &[Option<Expected>],
    ) -> Vec<Result<DeleteOutcome, StoreError>> {
        self.delete_objects(keys, expected).await
    }

    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError> {
        self.delete_expecting(key, None).await
    }

    async fn rewrite(
        &self,
        key: &str,
        expected: &Expected,
        content: &std::path::Path,
    ) -> Result<RewriteOutcome, StoreError> {
        self.rewrite_object(key, expected, content).await
    }

    async fn delete_expecting(
        &self,
        key: &str,
        expected: Option<&Expected>,
    ) -> Result<DeleteOutcome, StoreError> {
        self.delete_object(key, expected).await
    }
}

impl CloudStore {
    /// The S3 API (the crate's tests).
    #[cfg(test)]
    pub(crate) fn s3_versions(&self) -> Option<Arc<S3Versions>> {
        match &self.api {
            Api::S3(a) => Some(a.clone()),
            Api::Azure(_) => None,
        }
    }

    /// The Azure API (tests and tooling: snapshots).
    pub fn azure_blobs(&self) -> Option<Arc<AzureBlobs>> {
        match &self.api {
            Api::Azure(a) => Some(a.clone()),
            Api::S3(_) => None,
        }
    }

    /// The key as the provider names it (with the store's prefix).
    pub fn full_key(&self, key: &str) -> Result<String, StoreError> {
        Ok(self.path(key)?.as_ref().to_string())
    }
}
