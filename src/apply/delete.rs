//! The deletes themselves: the store's calls, retried with the bounded
//! backoff `[apply]` configures, several at a time (one call per object, or
//! the store's batch call). A delete whose answer was lost and is then
//! found gone counts as deleted by us.

use std::collections::HashMap;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;

use crate::config::ApplySettings;
use crate::state::journal::PlannedObject;
use crate::store::{DeleteOutcome, Expected, StoreError, StoreErrorKind, TechnicalStore};

/// Bounded exponential backoff with jitter, as `[apply]` configures it.
pub(super) fn backoff(s: &ApplySettings) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(s.backoff)
        .with_max_delay(s.max_backoff)
        .with_max_times(s.max_attempts.saturating_sub(1))
        .with_jitter()
}

/// Deletes one object, retrying transient faults. A delete whose answer was
/// lost (a timeout after the store acted) is retried, finds the object gone,
/// and counts as deleted by us: the journal shows it existed.
async fn delete_with_retry(
    store: &dyn TechnicalStore,
    key: &str,
    expected: Option<&Expected>,
    settings: &ApplySettings,
) -> Result<DeleteOutcome, StoreError> {
    let faulted = std::sync::atomic::AtomicBool::new(false);
    let result = (|| store.delete_expecting(key, expected))
        .retry(backoff(settings))
        .when(|e: &StoreError| e.kind() == StoreErrorKind::Transient)
        .notify(|_, _| faulted.store(true, std::sync::atomic::Ordering::Relaxed))
        .await;
    match result {
        Ok(DeleteOutcome::AlreadyGone) if faulted.load(std::sync::atomic::Ordering::Relaxed) => {
            Ok(DeleteOutcome::Deleted)
        }
        other => other,
    }
}

/// Deletes objects through the store's batch call (`delete_batch_size` at a
/// time), retrying the keys that failed transiently, with the same backoff
/// as single deletes. One result per object; a key whose answer was lost
/// and is then found gone counts as deleted by us, as with single deletes.
async fn delete_batched<'o>(
    store: &dyn TechnicalStore,
    objects: &[&'o PlannedObject],
    expected: &HashMap<String, Expected>,
    settings: &ApplySettings,
) -> Vec<(&'o PlannedObject, Result<DeleteOutcome, StoreError>)> {
    use backon::BackoffBuilder;
    let mut out = Vec::with_capacity(objects.len());
    // All of them in one call: the store splits them into its batches and
    // sends several at once.
    for chunk in [objects] {
        let mut results: Vec<Option<Result<DeleteOutcome, StoreError>>> =
            (0..chunk.len()).map(|_| None).collect();
        let mut faulted = vec![false; chunk.len()];
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let mut delays = backoff(settings).build();
        loop {
            let keys: Vec<String> = pending.iter().map(|&i| chunk[i].key.clone()).collect();
            let expect: Vec<Option<Expected>> =
                keys.iter().map(|k| expected.get(k).cloned()).collect();
            let answers = store.delete_many_expecting(&keys, &expect).await;
            let mut again = Vec::new();
            for (&i, answer) in pending.iter().zip(answers) {
                results[i] = Some(match answer {
                    Err(e) if e.kind() == StoreErrorKind::Transient => {
                        faulted[i] = true;
                        again.push(i);
                        Err(e)
                    }
                    Ok(DeleteOutcome::AlreadyGone) if faulted[i] => Ok(DeleteOutcome::Deleted),
                    other => other,
                });
            }
            if again.is_empty() {
                break;
            }
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => break,
            }
            pending = again;
        }
        for (o, r) in chunk.iter().zip(results) {
            out.push((
                *o,
                r.unwrap_or_else(|| {
                    Err(StoreError::failed(
                        "batch delete",
                        StoreErrorKind::Transient,
                        "no answer for this key",
                    ))
                }),
            ));
        }
    }
    out
}

/// Deletes `objects`, each only if it is still what the index read
/// (`expected`; an object without one left the index and is found gone):
/// through the store's batch call when it has one, else one call per
/// object, `parallel_deletes` at a time. One answer per object.
pub(super) async fn delete_objects<'o>(
    store: &dyn TechnicalStore,
    objects: &[&'o PlannedObject],
    expected: &HashMap<String, Expected>,
    settings: &ApplySettings,
) -> Vec<(&'o PlannedObject, Result<DeleteOutcome, StoreError>)> {
    if store.delete_batch_size() > 1 {
        // S3 DeleteObjects; Azure blobs many at a time.
        return delete_batched(store, objects, expected, settings).await;
    }
    // Boxed as `Send` futures: spelled out, so that an apply can run on a
    // spawned task (the service) without a higher-ranked lifetime tripping
    // the compiler's Send inference. Each answers with its object's index.
    type Delete<'f> = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = (usize, Result<DeleteOutcome, StoreError>)>
                + Send
                + 'f,
        >,
    >;
    let deletes: Vec<Delete<'_>> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let key: &str = &o.key;
            let e = expected.get(key);
            Box::pin(async move { (i, delete_with_retry(store, key, e, settings).await) })
                as Delete<'_>
        })
        .collect();
    let answers: Vec<(usize, Result<DeleteOutcome, StoreError>)> = futures::stream::iter(deletes)
        .buffer_unordered(settings.parallel_deletes)
        .collect()
        .await;
    answers
        .into_iter()
        .map(|(i, answer)| (objects[i], answer))
        .collect()
}
