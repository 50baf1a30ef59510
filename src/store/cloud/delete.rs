//! The deletes of the cloud stores: versioned S3 by every version and
//! delete marker (`s3/versions.rs`), unversioned S3 by a HEAD of each key
//! (which carries the comparison with what the index read) and then
//! DeleteObjects for the keys present, Azure by Blob Batch or one Delete
//! Blob each, with the blob's snapshots and `If-Match` (`azure/`).

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{Api, CloudStore, io};
use crate::store::s3::Versioning;
use crate::store::{DeleteOutcome, Expected, StoreError, StoreErrorKind, TechnicalStore};

impl CloudStore {
    /// `delete_many_expecting`: an answer per key, in the keys' order.
    pub(super) async fn delete_objects(
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
                    for chunk in items.chunks(crate::store::azure::batch::MAX_BATCH) {
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
        crate::store::answered(out)
    }

    /// One key, as `delete_objects` deletes many.
    pub(super) async fn delete_object(
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
                        .unwrap_or_else(|| Err(crate::store::unanswered()))
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
        .buffered(crate::store::ASKS_IN_FLIGHT)
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
