//! Stage 5, verify: after apply, asks the CRM and the store again whether
//! every item the journal calls deleted is really gone.

use serde::Serialize;
use sqlx::Row;

use crate::config::Config;
use crate::crm::{Crm, CrmError};
use crate::model::EntityKey;
use crate::state::{StateError, StateStore, q};
use crate::store::{StoreError, TechnicalStore};

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
    let mut report = VerifyReport::default();
    for et in &config.entities {
        let rows = sqlx::query(
            "SELECT entity_key, key_kind FROM plan_entities WHERE plan_id = $1 AND entity_type = $2 AND status = 'deleted'",
        )
        .bind(plan_id)
        .bind(&et.name)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the journal"))?;
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
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM plan_objects WHERE plan_id = $1 AND status = 'deleted'",
    )
    .bind(plan_id)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the journal"))?;
    for k in keys {
        report.objects_checked += 1;
        if store.head(&k).await?.is_some() {
            report.objects_remaining += 1;
        }
    }
    Ok(report)
}
