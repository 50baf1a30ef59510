//! Stage 5, verify: after apply, asks the CRM and the store again whether
//! every item the journal calls deleted is really gone.

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

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub entities_checked: u64,
    pub entities_remaining: u64,
    pub objects_checked: u64,
    pub objects_remaining: u64,
    /// Objects the plan kept whole although they link a deleted entity
    /// (they also serve a retained one): they still hold its records, so
    /// "gone" is not proven for the store as a whole.
    pub shared_kept_whole: u64,
    /// Objects no rule linked or could read: not searched for data of the
    /// deleted entities.
    pub not_searched: u64,
}

impl VerifyReport {
    /// Every item the journal calls deleted is gone.
    pub fn ok(&self) -> bool {
        self.entities_remaining == 0 && self.objects_remaining == 0
    }
}

pub async fn verify(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
) -> Result<VerifyReport, VerifyError> {
    verify_paged(config, crm, store, state, plan_id, PAGE).await
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
