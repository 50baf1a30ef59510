//! The residual scan of verify: every object of the store, whatever its
//! fate or format, read once and searched (by `residual::Scanner`) for the
//! identifiers the plan erased; each object that still names a deleted
//! entity is reported with why it was left.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;

use super::residual::{Erased, Fingerprint, IdentifierKind, Scanner, parse_hash};
use super::{Residual, VerifyError, VerifyReport};
use crate::audit::pseudonym::Pseudonymizer;
use crate::config::Config;
use crate::state::{ObjectHolds, StateStore};
use crate::store::{Listed, StoreError, TechnicalStore};

/// Identifier rows read at a time.
const PAGE: i64 = 10_000;
/// Objects read and scanned at once.
const IN_FLIGHT: usize = 8;

/// Scans the store for the identifiers `plan_id` erased; fills the scan's
/// fields of `report`.
pub(super) async fn residual(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
    report: &mut VerifyReport,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), VerifyError> {
    let Some(scanner) = load_scanner(config, state, plan_id).await? else {
        return Ok(());
    };
    report.identifiers = scanner.len() as u64;
    let found = store_scan(store, Arc::new(scanner), progress).await?;
    report.objects_scanned += found.scanned;
    report.bytes_scanned += found.bytes;
    report.scan_skipped += found.skipped;
    report.scan_failed += found.failed;
    let mut hits = found.hits;
    hits.sort();
    let fates = crate::state::plans::object_fates(
        state,
        plan_id,
        &hits.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
    )
    .await?;
    let holds = ObjectHolds::from_holds(&state.holds().await?);
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    for (key, named) in hits {
        let why = why_left(holds.holds(&key), fates.get(&key));
        report.residual.push(Residual {
            object: pseudo.show_object(&key),
            entities: named,
            why: why.to_string(),
        });
    }
    Ok(())
}

/// What a scan of the whole store found.
#[derive(Debug, Default)]
pub struct StoreScan {
    /// Objects that name a searched identifier, with how many distinct
    /// entities (the scanner's indices) they name; in key order.
    pub hits: Vec<(String, u64)>,
    pub scanned: u64,
    pub bytes: u64,
    /// Entries the listing skips (symlinks, leftover rewrite files): not
    /// searched.
    pub skipped: u64,
    /// Objects that could not be read (and were not gone since).
    pub failed: u64,
}

/// Reads every object of the store once through `scanner`, several at a
/// time, streaming. `progress(done, total)`.
pub async fn store_scan(
    store: &dyn TechnicalStore,
    scanner: Arc<Scanner>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<StoreScan, VerifyError> {
    let mut out = StoreScan::default();
    let mut keys = Vec::new();
    store
        .list(&mut |l| match l {
            Listed::Object(m) => keys.push(m.key),
            Listed::Skipped { .. } => out.skipped += 1,
        })
        .await?;
    let total = keys.len() as u64;
    progress(0, total);
    let scans = keys.into_iter().map(|key| {
        let scanner = scanner.clone();
        async move {
            let found = scan_one(store, scanner, &key).await;
            (key, found)
        }
    });
    let mut results = futures::stream::iter(scans).buffer_unordered(IN_FLIGHT);
    let mut done = 0;
    while let Some((key, found)) = results.next().await {
        done += 1;
        if done % 256 == 0 || done == total {
            progress(done, total);
        }
        match found {
            Ok((bytes, named)) => {
                out.scanned += 1;
                out.bytes += bytes;
                if named > 0 {
                    out.hits.push((key, named));
                }
            }
            Err(e) => {
                // Gone since the listing: nothing left in it to find.
                if !matches!(store.head(&key).await, Ok(None)) {
                    tracing::warn!(error = %e, "residual scan could not read an object");
                    out.failed += 1;
                }
            }
        }
    }
    drop(results);
    out.hits.sort();
    Ok(out)
}

/// The scanner over the plan's erased identifiers; `None` when it erased
/// none (no type declares `identifiers`, or nothing was deleted).
async fn load_scanner(
    config: &Config,
    state: &StateStore,
    plan_id: &str,
) -> Result<Option<Scanner>, VerifyError> {
    let mut entities: HashMap<String, u32> = HashMap::new();
    let mut erased = Erased::default();
    let mut after: Option<(String, String)> = None;
    loop {
        let rows = crate::state::erased::of_plan(
            state,
            plan_id,
            after.as_ref().map(|(h, e)| (h.as_str(), e.as_str())),
            PAGE,
        )
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.hash.clone(), last.entity.clone()));
        for r in rows {
            let (Ok(kind), Some(hash)) = (r.kind.parse::<IdentifierKind>(), parse_hash(&r.hash))
            else {
                continue;
            };
            let next = entities.len() as u32;
            let id = *entities.entry(r.entity).or_insert(next);
            erased.add(kind, hash, id, r.len);
        }
    }
    Ok(erased.scanner(Fingerprint::new(&config.audit_key)))
}

/// Reads one object through the scanner: its size and how many distinct
/// deleted entities it names.
async fn scan_one(
    store: &dyn TechnicalStore,
    scanner: Arc<Scanner>,
    key: &str,
) -> Result<(u64, u64), StoreError> {
    let reader = store.read(key).await?;
    tokio::task::spawn_blocking(move || {
        let mut named = BTreeSet::new();
        let stats = scanner.scan(reader, &mut |e| {
            named.insert(e);
        })?;
        Ok::<_, std::io::Error>((stats.bytes, named.len() as u64))
    })
    .await
    .map_err(|e| StoreError::io("scanning an object", std::io::Error::other(e.to_string())))?
    .map_err(|e| StoreError::io("scanning an object", e))
}

/// Why an object that names a deleted entity was left, from the plan's
/// decision about it (`state::plans::object_fates`) and the holds now.
fn why_left(held: bool, fate: Option<&(String, Option<String>)>) -> &'static str {
    if held {
        return "held";
    }
    let Some((fate, status)) = fate else {
        // Linked only to retained entities, or newer than the plan's index:
        // it names a deleted entity that no link tied it to.
        return "unlinked";
    };
    match (fate.as_str(), status.as_deref()) {
        ("held", _) => "held",
        ("unreadable", _) => "unreadable",
        ("shared", _) => "shared",
        (_, Some("skipped")) => "changed",
        (_, Some("failed" | "planned" | "executing")) => "failed",
        // Redacted: the value sits outside the records that went (a kept
        // record, a header, a comment).
        ("redact", _) => "shared",
        _ => "unlinked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_follows_the_plan_and_the_holds() {
        let f = |fate: &str, status: Option<&str>| (fate.to_string(), status.map(String::from));
        assert_eq!(why_left(true, Some(&f("delete", Some("deleted")))), "held");
        assert_eq!(why_left(false, Some(&f("held", None))), "held");
        assert_eq!(why_left(false, Some(&f("shared", None))), "shared");
        assert_eq!(why_left(false, Some(&f("unreadable", None))), "unreadable");
        assert_eq!(
            why_left(false, Some(&f("redact", Some("skipped")))),
            "changed"
        );
        assert_eq!(
            why_left(false, Some(&f("delete", Some("failed")))),
            "failed"
        );
        assert_eq!(
            why_left(false, Some(&f("redact", Some("redacted")))),
            "shared"
        );
        assert_eq!(why_left(false, Some(&f("orphan-young", None))), "unlinked");
        assert_eq!(why_left(false, None), "unlinked");
    }
}
