//! Stage 5, verify: after apply, asks the CRM and the store again whether
//! every item the journal calls deleted is really gone.

use futures::StreamExt;
use serde::Serialize;
use sqlx::Row;

use crate::config::Config;
use crate::crm::{Crm, CrmError};
use crate::model::EntityKey;
use crate::state::{StateError, StateStore, q};
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
}

impl VerifyReport {
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
    // The journal is read in pages (keyset, in key order), so memory stays
    // bounded whatever the plan's size.
    for et in &config.entities {
        let mut after: Option<String> = None;
        loop {
            // Two texts, so that each can walk the primary key.
            let query = match &after {
                None => sqlx::query(
                    "SELECT entity_key, key_kind FROM plan_entities
                     WHERE plan_id = $1 AND entity_type = $2 AND status = 'deleted'
                     ORDER BY entity_key LIMIT $3",
                ),
                Some(_) => sqlx::query(
                    "SELECT entity_key, key_kind FROM plan_entities
                     WHERE plan_id = $1 AND entity_type = $2 AND status = 'deleted'
                       AND entity_key > $4
                     ORDER BY entity_key LIMIT $3",
                ),
            };
            let mut query = query.bind(plan_id).bind(&et.name).bind(page);
            if let Some(a) = &after {
                query = query.bind(a.clone());
            }
            let rows = query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the journal"))?;
            let Some(last) = rows.last() else {
                break;
            };
            after = Some(last.get::<String, _>(0));
            let keys: Vec<EntityKey> = rows
                .iter()
                .filter_map(|r| {
                    EntityKey::from_stored(
                        r.get::<String, _>(1).as_str(),
                        r.get::<String, _>(0).as_str(),
                    )
                })
                .collect();
            report.entities_checked += keys.len() as u64;
            report.entities_remaining += crm.existing(et, &keys).await?.len() as u64;
        }
    }
    // Each object asked for on its own (a HEAD on cloud stores), many at
    // once: against a remote endpoint one at a time would take a round
    // trip per object.
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT item, key FROM plan_objects
             WHERE plan_id = $1 AND status = 'deleted' AND item > $2
             ORDER BY item LIMIT $3",
        )
        .bind(plan_id)
        .bind(after)
        .bind(page)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the journal"))?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.get::<i64, _>(0);
        let keys: Vec<String> = rows.iter().map(|r| r.get::<String, _>(1)).collect();
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
