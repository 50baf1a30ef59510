//! The rewrite of an object of the cloud stores (a redaction), S3 and
//! Azure alike.
//!
//! A rewrite asks first (a HEAD: gone is `AlreadyGone`, another
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

use object_store::ObjectStore;
use object_store::path::Path;

use super::{Api, CloudStore, io};
use crate::store::s3::Versioning;
use crate::store::{
    Expected, ObjectMeta, RewriteOutcome, StoreError, StoreErrorKind, TechnicalStore, Written,
};

/// The largest object a rewrite PUTs in one request (its body in memory).
pub const WHOLE_PUT_MAX: u64 = 64 << 20;
/// The parts larger rewrites are uploaded in (more where 10,000 parts would
/// not hold the object).
pub const PART_SIZE: u64 = 16 << 20;

/// What a HEAD answered of an object: its meta and attributes.
struct Head {
    meta: object_store::ObjectMeta,
    attributes: object_store::Attributes,
}

/// An etag without its quotes (stores answer `"abc"`, some `abc`).
fn bare_etag(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// Whether the etag a store answered (`seen`) is `etag`, quoted or not.
fn same_etag(seen: Option<&str>, etag: &str) -> bool {
    seen.map(bare_etag) == Some(bare_etag(etag))
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

impl CloudStore {
    /// The rewrite of `key` with the spool at `content`, conditional on
    /// the object being the one the index read (`expected`); see the
    /// module doc.
    pub(super) async fn rewrite_object(
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
                if same_etag(again.meta.e_tag.as_deref(), &etag) {
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
            crate::store::same_content(reader, spool)
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
                match self.head_with_attributes(path).await {
                    Ok(Some(now)) if same_etag(now.meta.e_tag.as_deref(), etag) => {}
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
        match self.inner.get_opts(path, options).await {
            Ok(got)
                if e_tag
                    .as_deref()
                    .is_none_or(|e| same_etag(got.meta.e_tag.as_deref(), e)) =>
            {
                Ok(self.meta(&got.meta))
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(ObjectMeta {
                key: key.to_string(),
                size,
                modified: None,
                etag: e_tag.as_deref().map(|e| bare_etag(e).to_string()),
                metadata: Vec::new(),
                name: None,
            }),
            Err(e) => Err(io("head", e)),
        }
    }
}
