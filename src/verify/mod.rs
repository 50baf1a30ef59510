//! Stage 5, verify: after apply, asks the CRM and the store again whether
//! every item the journal calls deleted is really gone, then searches every
//! object of the store for the identifiers of the deleted entities
//! (`residual`: from their keyed hashes only). It owns the verdict apply,
//! sweep and `lethe verify` print and exit by.

use futures::StreamExt;
use serde::Serialize;

use crate::config::Config;
use crate::crm::{Crm, CrmError};
use crate::model::EntityKey;
use crate::state::{StateError, StateStore};
use crate::store::{StoreError, TechnicalStore};

/// Journal rows read at a time.
const PAGE: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub entities_checked: u64,
    pub entities_remaining: u64,
    pub objects_checked: u64,
    pub objects_remaining: u64,
    /// Objects the plan kept whole although they link a deleted entity
    /// (they also serve a retained one): they still hold its records, so
    /// "gone" is not proven for the store as a whole.
    pub shared_kept_whole: u64,
    /// Objects no rule linked or could read (the plan could not judge
    /// them by their links; the residual scan searches them all the same).
    pub not_searched: u64,
    /// Distinct identifiers of the deleted entities searched for (keyed
    /// hashes); 0 when no type declares `identifiers`.
    pub identifiers: u64,
    /// Objects of the store read by the residual scan, and their bytes.
    pub objects_scanned: u64,
    pub bytes_scanned: u64,
    /// Objects the scan could not read: not proven clean.
    pub scan_failed: u64,
    /// Entries the listing skipped (symlinks, names that are not UTF-8, a
    /// rewrite's leftover temporary file): lethe cannot read them, so they
    /// were not searched, and "all gone" is not claimed.
    #[serde(default)]
    pub scan_skipped: u64,
    /// Each object that still names a deleted entity.
    pub residual: Vec<Residual>,
    /// Seconds the existence checks took (journal, CRM, store), and the
    /// residual scan.
    #[serde(default)]
    pub seconds_checks: f64,
    #[serde(default)]
    pub seconds_scan: f64,
}

/// An object that still holds an identifier of a deleted entity.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Residual {
    /// The object's pseudonym (`object:~…`; the key with `--keys`).
    pub object: String,
    /// How many deleted entities it still names.
    pub entities: u64,
    /// Why it was left: `held`, `shared` (unredactable, redaction off, or
    /// the value sits outside the removed records), `unlinked` (no link to
    /// the entity it names), `unreadable`, `changed` (changed since the
    /// index read it: skipped), `failed` (its delete or redaction failed).
    pub why: String,
}

impl VerifyReport {
    /// Every item the journal calls deleted is gone, and no object that is
    /// not held names a deleted entity (as far as the scan could read).
    pub fn ok(&self) -> bool {
        self.entities_remaining == 0
            && self.objects_remaining == 0
            && self.scan_failed == 0
            && self.residual_failing() == 0
    }

    /// Residual objects that are not held: what makes the verdict fail.
    pub fn residual_failing(&self) -> u64 {
        self.residual.iter().filter(|r| r.why != "held").count() as u64
    }
}

pub mod residual;
pub mod scan;

pub async fn verify(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
) -> Result<VerifyReport, VerifyError> {
    verify_with(config, crm, store, state, plan_id, &|_, _| {}).await
}

/// As `verify`, telling `progress(done, total)` as the scan reads objects.
pub async fn verify_with(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport, VerifyError> {
    let started = std::time::Instant::now();
    let mut report = verify_paged(config, crm, store, state, plan_id, PAGE).await?;
    report.seconds_checks = started.elapsed().as_secs_f64();
    scan::residual(config, store, state, plan_id, &mut report, progress).await?;
    report.seconds_scan = started.elapsed().as_secs_f64() - report.seconds_checks;
    if let Ok(json) = serde_json::to_string(&report) {
        crate::state::plans::record_verified(state, plan_id, &json).await?;
    }
    Ok(report)
}

/// As `verify`, reading `page` journal rows at a time (tests use small
/// pages).
pub async fn verify_paged(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
    page: i64,
) -> Result<VerifyReport, VerifyError> {
    let page = page.max(1);
    let mut report = VerifyReport::default();
    // What the plan kept that may still name its deleted entities: said
    // beside the result, so that "gone" claims no more than was checked.
    let stored = crate::plan::load(state, Some(plan_id)).await?;
    let o = &stored.summary.objects;
    report.shared_kept_whole = o.shared;
    report.not_searched = o.unlinked + o.unreadable;
    // The journal is read in pages (keyset, in key order), so memory stays
    // bounded whatever the plan's size.
    for et in &config.entities {
        let mut after: Option<String> = None;
        loop {
            let rows = crate::state::journal::deleted_entities(
                state,
                plan_id,
                &et.name,
                after.as_deref(),
                page,
            )
            .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = Some(last.0.clone());
            let keys: Vec<EntityKey> = rows.into_iter().filter_map(|(_, k)| k).collect();
            report.entities_checked += keys.len() as u64;
            report.entities_remaining += crm.existing(et, &keys).await?.len() as u64;
        }
    }
    // Each object asked for on its own (a HEAD on cloud stores), many at
    // once: against a remote endpoint one at a time would take a round
    // trip per object.
    let mut after = i64::MIN;
    loop {
        let rows = crate::state::journal::deleted_objects(state, plan_id, after, page).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.0;
        let keys: Vec<String> = rows.into_iter().map(|(_, k)| k).collect();
        let heads: Vec<_> = keys.iter().map(|k| store.head(k)).collect();
        let answers: Vec<Result<Option<crate::store::ObjectMeta>, StoreError>> =
            futures::stream::iter(heads)
                .buffer_unordered(crate::store::ASKS_IN_FLIGHT)
                .collect()
                .await;
        for answer in answers {
            report.objects_checked += 1;
            if answer?.is_some() {
                report.objects_remaining += 1;
            }
        }
    }
    Ok(report)
}
