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
//! A rewrite (a redaction) asks first (a HEAD: gone is `AlreadyGone`, another
//! object than the index read is `Changed`), then PUTs the new content
//! conditional on the etag that HEAD answered (`If-Match`, object_store's
//! `PutMode::Update`), keeping the object's content type and user metadata:
//! a write by someone else in between fails the PUT (412) and the object is
//! `Changed`, untouched. AWS S3, s3s-fs, moto and Azure (Azurite too) honour
//! `If-Match` on a PUT; an S3-compatible server that ignored it would leave
//! the moment between the HEAD and the PUT unguarded (`check` says so). The
//! PUT is one request, its body read from the spool into memory, up to
//! [`WHOLE_PUT_MAX`]. Larger objects go in parts of [`PART_SIZE`], one in
//! memory at a time, and only their completion changes the object
//! (object_store's own multipart uploads take no condition, so these are
//! lethe's requests, `s3/parts.rs` and `azure/blocks.rs`): Azure's Put Block
//! List carries `If-Match`; S3's CompleteMultipartUpload carries it too (AWS
//! and s3s-fs honour it, moto ignores it), after one more HEAD right before
//! it, so that a server ignoring the condition leaves only the moment
//! between that HEAD and the completion. After the PUT, the old content goes
//! where the provider keeps it: in a versioned S3 bucket every older version
//! and delete marker of the key (never the new version, nor whatever is
//! latest), in Azure the blob's snapshots (never the blob). Not carried over
//! to the new content: object tags, ACLs, the storage class or access tier,
//! and per-object encryption settings (the bucket's or account's defaults
//! apply).

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
    TechnicalStore, Written, validate_key,
};

/// The largest object a rewrite PUTs in one request (its body in memory).
pub const WHOLE_PUT_MAX: u64 = 64 << 20;
/// The parts larger rewrites are uploaded in (more where 10,000 parts would
/// not hold the object).
pub const PART_SIZE: u64 = 16 << 20;

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

/// What a HEAD answered of an object: its meta and attributes.
struct Head {
    meta: object_store::ObjectMeta,
    attributes: object_store::Attributes,
}

/// The request headers that give a new object the attributes of the old
/// one (content type and the like, user metadata), as S3 (`s3`) or Azure
/// (`az`) names them, for the writes object_store does not make.
fn attribute_headers(attributes: &object_store::Attributes, scheme: &str) -> Vec<(String, String)> {
    use object_store::Attribute;
    let azure = scheme == "az";
    attributes
        .iter()
        .filter_map(|(k, v)| {
            let name = match k {
                Attribute::Metadata(m) if azure => format!("x-ms-meta-{m}"),
                Attribute::Metadata(m) => format!("x-amz-meta-{m}"),
                Attribute::ContentType => "content-type".into(),
                Attribute::ContentEncoding => "content-encoding".into(),
                Attribute::ContentLanguage => "content-language".into(),
                Attribute::ContentDisposition => "content-disposition".into(),
                Attribute::CacheControl => "cache-control".into(),
                _ => return None,
            };
            // Azure's Put Block List sets the blob's properties by their
            // x-ms-blob- names (its own content-type is the list's).
            let name = if azure && !name.starts_with("x-ms-") {
                format!("x-ms-blob-{name}")
            } else {
                name
            };
            Some((name, v.as_ref().to_string()))
        })
        .collect()
}

/// One DeleteObjects request (unversioned S3) for `chunk`; an answer
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
    let whole = match results.into_iter().find_map(|r| r.err()) {
        Some(e) => io("batch delete", e),
        None => StoreError::failed(
            "batch delete",
            StoreErrorKind::Transient,
            "the store answered for fewer keys than it was sent",
        ),
    };
    chunk
        .iter()
        .map(|(i, _)| (*i, Err(whole.again("batch delete"))))
        .collect()
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
        use futures::StreamExt;
        let mut out: Vec<Option<Result<DeleteOutcome, StoreError>>> =
            (0..keys.len()).map(|_| None).collect();
        let mut paths: Vec<(usize, Path, Option<Expected>)> = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            match self.path(k) {
                Ok(p) => paths.push((i, p, expected.get(i).cloned().flatten())),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        match &self.api {
            Api::Azure(api) => {
                // For the report's note; a failure to read it is said there.
                let _ = api.soft_delete().await;
                let items: Vec<(usize, String, Option<String>)> = paths
                    .drain(..)
                    .map(|(i, p, e)| (i, p.as_ref().to_string(), e.and_then(|e| e.etag)))
                    .collect();
                type Batch<'a> = std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                                Output = Vec<(usize, Result<DeleteOutcome, StoreError>)>,
                            > + Send
                            + 'a,
                    >,
                >;
                let answers: Vec<(usize, Result<DeleteOutcome, StoreError>)> = if self.batch {
                    let mut batches: Vec<Batch<'_>> = Vec::new();
                    for chunk in items.chunks(super::azure::batch::MAX_BATCH) {
                        batches.push(Box::pin(api.delete_batch(chunk)));
                    }
                    futures::stream::iter(batches)
                        .buffer_unordered(4)
                        .collect::<Vec<_>>()
                        .await
                        .into_iter()
                        .flatten()
                        .collect()
                } else {
                    api.delete_each(&items).await
                };
                for (i, r) in answers {
                    out[i] = Some(r);
                }
            }
            Api::S3(api) => match api.versioning().await {
                Err(e) => {
                    for (i, _, _) in paths.drain(..) {
                        out[i] = Some(Err(e.again("delete")));
                    }
                }
                Ok(Versioning::On { .. }) => {
                    let full: Vec<(usize, String, Option<Expected>)> = paths
                        .drain(..)
                        .map(|(i, p, e)| (i, p.as_ref().to_string(), e))
                        .collect();
                    for (i, r) in api.delete_all_versions(&full, self.batch).await {
                        out[i] = Some(r);
                    }
                }
                Ok(_) => {
                    for (i, r) in self.delete_current(paths).await {
                        out[i] = Some(r);
                    }
                }
            },
        }
        super::answered(out)
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
        let path = self.path(key)?;
        let size = tokio::fs::metadata(content)
            .await
            .map_err(|source| StoreError::io("stat spool", source))?
            .len();
        let Some(head) = self.head_with_attributes(&path).await? else {
            return Ok(RewriteOutcome::AlreadyGone);
        };
        let now = self.meta(&head.meta);
        if !expected.matches(&now) {
            return self
                .rewritten_before(&path, key, &head.meta, size, content)
                .await;
        }
        let Some(etag) = head.meta.e_tag.clone() else {
            return Err(StoreError::failed(
                "rewrite",
                StoreErrorKind::Permanent,
                "the store answered no etag, so the rewrite cannot be made conditional",
            ));
        };
        let written = if size <= self.whole_put_max {
            self.put_whole(&path, &head, &etag, content).await?
        } else {
            self.put_in_parts(&path, &head, &etag, content, size)
                .await?
        };
        match written {
            Written::Put { e_tag, version } => {
                self.drop_old_content(&path, version.as_deref()).await?;
                Ok(RewriteOutcome::Rewritten(
                    self.meta_after_put(&path, key, size, e_tag, version)
                        .await?,
                ))
            }
            Written::ConditionFailed => {
                let Some(again) = self.head_with_attributes(&path).await? else {
                    return Ok(RewriteOutcome::AlreadyGone);
                };
                let same = |e: &Option<String>| {
                    e.as_deref().map(|e| e.trim_matches('"')) == Some(etag.trim_matches('"'))
                };
                if same(&again.meta.e_tag) {
                    // The object is the one the PUT was conditional on, yet
                    // the condition failed: a lease or a policy refused it.
                    return Err(StoreError::failed(
                        "rewrite",
                        StoreErrorKind::Permanent,
                        "the store refused the conditional PUT though the object is the one the index read (a lease or a policy?)",
                    ));
                }
                self.rewritten_before(&path, key, &again.meta, size, content)
                    .await
            }
        }
    }

    async fn delete_expecting(
        &self,
        key: &str,
        expected: Option<&Expected>,
    ) -> Result<DeleteOutcome, StoreError> {
        let path = self.path(key)?;
        match &self.api {
            Api::Azure(api) => {
                let _ = api.soft_delete().await;
                let etag = expected.and_then(|e| e.etag.as_deref());
                api.delete_with_snapshots(path.as_ref(), etag).await
            }
            Api::S3(api) => match api.versioning().await? {
                Versioning::On { .. } => {
                    let full = [(0, path.as_ref().to_string(), expected.cloned())];
                    let mut r = api.delete_all_versions(&full, self.batch).await;
                    r.pop()
                        .map(|(_, r)| r)
                        .unwrap_or_else(|| Err(super::unanswered()))
                }
                _ => {
                    match self.inner.head(&path).await {
                        Err(object_store::Error::NotFound { .. }) => {
                            return Ok(DeleteOutcome::AlreadyGone);
                        }
                        Err(e) => return Err(io("head", e)),
                        Ok(now) => {
                            if expected.is_some_and(|e| !e.matches(&self.meta(&now))) {
                                return Ok(DeleteOutcome::Changed);
                            }
                        }
                    }
                    self.inner
                        .delete(&path)
                        .await
                        .map_err(|e| io("delete", e))?;
                    Ok(DeleteOutcome::Deleted)
                }
            },
        }
    }
}

impl CloudStore {
    /// The current version of each S3 key (unversioned buckets): HEAD each,
    /// 64 at a time, then DeleteObjects for the ones present, four
    /// requests in flight.
    async fn delete_current(
        &self,
        with_expected: Vec<(usize, Path, Option<Expected>)>,
    ) -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
        use futures::StreamExt;
        let mut out = Vec::with_capacity(with_expected.len());
        let mut paths: Vec<(usize, Path)> = Vec::with_capacity(with_expected.len());
        let inner = self.inner.clone();
        let heads: Vec<(
            usize,
            Path,
            Option<Expected>,
            Result<_, object_store::Error>,
        )> = futures::stream::iter(with_expected.into_iter().map(|(i, p, e)| {
            let inner = inner.clone();
            async move {
                let r = inner.head(&p).await;
                (i, p, e, r)
            }
        }))
        .buffered(super::ASKS_IN_FLIGHT)
        .collect()
        .await;
        for (i, p, e, r) in heads {
            match r {
                Ok(now) if e.is_some_and(|e| !e.matches(&self.meta(&now))) => {
                    out.push((i, Ok(DeleteOutcome::Changed)))
                }
                Ok(_) => paths.push((i, p)),
                Err(object_store::Error::NotFound { .. }) => {
                    out.push((i, Ok(DeleteOutcome::AlreadyGone)))
                }
                Err(e) => out.push((i, Err(io("head", e)))),
            }
        }
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
        out.extend(answers.into_iter().flatten());
        out
    }

    /// A HEAD with the object's attributes (content type, user metadata);
    /// `None` when it is not there.
    async fn head_with_attributes(&self, path: &Path) -> Result<Option<Head>, StoreError> {
        let options = object_store::GetOptions {
            head: true,
            ..Default::default()
        };
        match self.inner.get_opts(path, options).await {
            Ok(got) => Ok(Some(Head {
                meta: got.meta,
                attributes: got.attributes,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io("head", e)),
        }
    }

    /// A rewrite found another object than the index read (`now`): if it
    /// already holds exactly the new content (an earlier rewrite whose
    /// answer was lost, a resumed apply), that rewrite is done once the old
    /// content is gone from versions and snapshots; otherwise `Changed`.
    async fn rewritten_before(
        &self,
        path: &Path,
        key: &str,
        now: &object_store::ObjectMeta,
        size: u64,
        content: &std::path::Path,
    ) -> Result<RewriteOutcome, StoreError> {
        if now.size != size {
            return Ok(RewriteOutcome::Changed);
        }
        let reader = self.read(key).await?;
        let content = content.to_path_buf();
        let same = tokio::task::spawn_blocking(move || {
            let spool = std::fs::File::open(content)?;
            super::same_content(reader, spool)
        })
        .await
        .map_err(|e| StoreError::io("compare", std::io::Error::other(e.to_string())))?
        .map_err(|source| StoreError::io("compare", source))?;
        if !same {
            return Ok(RewriteOutcome::Changed);
        }
        self.drop_old_content(path, now.version.as_deref()).await?;
        Ok(RewriteOutcome::Rewritten(self.meta(now)))
    }

    /// What a rewrite leaves of the old content, removed: older versions in
    /// a versioned S3 bucket (never `keep`, the rewrite's own, nor the
    /// latest), the snapshots of an Azure blob. An error here comes after
    /// the new content is in place, and says so.
    async fn drop_old_content(&self, path: &Path, keep: Option<&str>) -> Result<(), StoreError> {
        let after = |e: StoreError| {
            StoreError::failed(
                "rewrite",
                e.kind(),
                format!("the new content is in place, but the old content may remain: {e}"),
            )
        };
        match &self.api {
            Api::S3(api) => match api.versioning().await.map_err(after)? {
                Versioning::On { .. } => api
                    .delete_versions_except(path.as_ref(), keep, self.batch)
                    .await
                    .map(|_| ())
                    .map_err(after),
                // Unknown: `erasure_note` says what may remain.
                _ => Ok(()),
            },
            Api::Azure(api) => {
                let _ = api.soft_delete().await;
                api.delete_snapshots(path.as_ref()).await.map_err(after)
            }
        }
    }

    /// One conditional PUT of the whole spool (object_store's
    /// `PutMode::Update`), keeping the object's attributes.
    async fn put_whole(
        &self,
        path: &Path,
        head: &Head,
        etag: &str,
        content: &std::path::Path,
    ) -> Result<Written, StoreError> {
        let body = tokio::fs::read(content)
            .await
            .map_err(|source| StoreError::io("read spool", source))?;
        let options = object_store::PutOptions {
            mode: object_store::PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(etag.to_string()),
                version: head.meta.version.clone(),
            }),
            attributes: head.attributes.clone(),
            ..Default::default()
        };
        match self.inner.put_opts(path, body.into(), options).await {
            Ok(put) => Ok(Written::Put {
                e_tag: put.e_tag,
                version: put.version,
            }),
            // object_store reports S3's 404 for `If-Match` on a missing
            // key as a failed condition too.
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(Written::ConditionFailed),
            Err(e) => Err(io("rewrite", e)),
        }
    }

    /// The spool in parts, committed conditional on `etag` (see the module
    /// doc): S3 multipart with one more HEAD right before the completion,
    /// Azure blocks and a conditional block list.
    async fn put_in_parts(
        &self,
        path: &Path,
        head: &Head,
        etag: &str,
        content: &std::path::Path,
        size: u64,
    ) -> Result<Written, StoreError> {
        let part = self.part_size.max(size.div_ceil(10_000));
        let headers = attribute_headers(&head.attributes, self.scheme);
        match &self.api {
            Api::S3(api) => {
                let upload = api
                    .upload_parts(path.as_ref(), content, part, &headers)
                    .await?;
                let bare = |e: &str| e.trim_matches('"').to_string();
                match self.head_with_attributes(path).await {
                    Ok(Some(now)) if now.meta.e_tag.as_deref().map(bare) == Some(bare(etag)) => {}
                    Ok(_) => {
                        api.abort_upload(&upload).await;
                        return Ok(Written::ConditionFailed);
                    }
                    Err(e) => {
                        api.abort_upload(&upload).await;
                        return Err(e);
                    }
                }
                api.complete_upload(&upload, etag).await
            }
            Api::Azure(api) => {
                let ids = api.put_blocks(path.as_ref(), content, part).await?;
                api.commit_blocks(path.as_ref(), &ids, etag, &headers).await
            }
        }
    }

    /// What the index will see of the object a rewrite just put: a HEAD (of
    /// that very version where the store names one), when it shows the
    /// PUT's etag; otherwise (written again since) its size and etag with
    /// no date, so that the next apply finds it changed.
    async fn meta_after_put(
        &self,
        path: &Path,
        key: &str,
        size: u64,
        e_tag: Option<String>,
        version: Option<String>,
    ) -> Result<ObjectMeta, StoreError> {
        let options = object_store::GetOptions {
            head: true,
            version: match self.api {
                Api::S3(_) => version,
                Api::Azure(_) => None,
            },
            ..Default::default()
        };
        let bare = |e: &Option<String>| e.as_deref().map(|e| e.trim_matches('"').to_string());
        match self.inner.get_opts(path, options).await {
            Ok(got) if e_tag.is_none() || bare(&got.meta.e_tag) == bare(&e_tag) => {
                Ok(self.meta(&got.meta))
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(ObjectMeta {
                key: key.to_string(),
                size,
                modified: None,
                etag: bare(&e_tag),
                metadata: Vec::new(),
            }),
            Err(e) => Err(io("head", e)),
        }
    }

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
