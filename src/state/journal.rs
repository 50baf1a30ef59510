//! The journal: what `apply` did to each planned item (`plan_entities`,
//! `plan_objects` statuses). Read here by verify and the brake; written by
//! apply's batch transactions.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{StateError, StateStore, q};
use crate::model::EntityKey;

/// A page of the entities of type `entity_type` that plan `plan_id`
/// deleted, in key order after `after`: (stored key, typed key).
pub async fn deleted_entities(
    state: &StateStore,
    plan_id: &str,
    entity_type: &str,
    after: Option<&str>,
    page: i64,
) -> Result<Vec<(String, Option<EntityKey>)>, StateError> {
    // Two texts, so that each can walk the primary key.
    let query = match after {
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
    let mut query = query.bind(plan_id).bind(entity_type).bind(page);
    if let Some(a) = after {
        query = query.bind(a.to_string());
    }
    let rows = query
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the journal"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let key: String = r.get(0);
            let typed = EntityKey::from_stored(r.get::<String, _>(1).as_str(), &key);
            (key, typed)
        })
        .collect())
}

/// A page of the objects plan `plan_id` deleted, in item order after
/// `after`: (item, key).
pub async fn deleted_objects(
    state: &StateStore,
    plan_id: &str,
    after: i64,
    page: i64,
) -> Result<Vec<(i64, String)>, StateError> {
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
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Entities lethe deleted, per type, by the plan `since` and every plan
/// made after it (read inside the planning transaction).
pub async fn deleted_since(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    since: &str,
) -> Result<std::collections::BTreeMap<String, u64>, StateError> {
    let rows = sqlx::query(
        "SELECT e.entity_type, CAST(count(*) AS BIGINT) FROM plan_entities e JOIN plans p ON p.id = e.plan_id
         WHERE e.status = 'deleted' AND p.seq >= (SELECT seq FROM plans WHERE id = $1)
         GROUP BY e.entity_type",
    )
    .bind(since)
    .fetch_all(&mut **tx)
    .await
    .map_err(q("reading what lethe deleted since the previous plan"))?;
    Ok(rows
        .iter()
        .map(|r| {
            use sqlx::Row;
            (r.get::<String, _>(0), r.get::<i64, _>(1).max(0) as u64)
        })
        .collect())
}

async fn counts(
    state: &StateStore,
    sql: &'static str,
    plan_id: &str,
) -> Result<BTreeMap<String, u64>, StateError> {
    let rows = sqlx::query(sql)
        .bind(plan_id)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the journal"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<Option<String>, _>(0).unwrap_or_default(),
                r.get::<i64, _>(1) as u64,
            )
        })
        .collect())
}

/// What the journal says of one plan, for its report. Keys appear only in
/// the failures, which the report pseudonymizes.
#[derive(Debug, Default)]
pub struct Tally {
    /// Case status → count.
    pub cases: BTreeMap<String, u64>,
    /// Object status → count.
    pub objects: BTreeMap<String, u64>,
    /// Skip reason → count (cases and objects).
    pub skipped: BTreeMap<String, u64>,
    /// Policy → entity type → deleted.
    pub deleted: BTreeMap<String, BTreeMap<String, u64>>,
    pub entities_gone: u64,
    pub bytes_deleted: u64,
    /// (root type, root key, reason) of each failed case.
    pub failed_cases: Vec<(String, String, String)>,
    /// (key, reason) of each failed object.
    pub failed_objects: Vec<(String, String)>,
}

pub async fn tally(state: &StateStore, id: &str) -> Result<Tally, StateError> {
    let mut t = Tally {
        cases: counts(
            state,
            "SELECT status, count(*) FROM plan_cases WHERE plan_id = $1 GROUP BY status",
            id,
        )
        .await?,
        objects: counts(
            state,
            "SELECT status, count(*) FROM plan_objects WHERE plan_id = $1 GROUP BY status",
            id,
        )
        .await?,
        skipped: counts(
            state,
            "SELECT reason, count(*) FROM plan_cases WHERE plan_id = $1 AND status = 'skipped' GROUP BY reason",
            id,
        )
        .await?,
        ..Tally::default()
    };
    for (reason, n) in counts(
        state,
        "SELECT reason, count(*) FROM plan_objects WHERE plan_id = $1 AND status = 'skipped' GROUP BY reason",
        id,
    )
    .await?
    {
        *t.skipped.entry(reason).or_default() += n;
    }
    let rows = sqlx::query(
        "SELECT c.policy, e.entity_type, count(*) FROM plan_entities e
         JOIN plan_cases c ON c.plan_id = e.plan_id AND c.case_id = e.case_id
         WHERE e.plan_id = $1 AND e.status = 'deleted' GROUP BY 1, 2",
    )
    .bind(id)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the journal"))?;
    for r in rows {
        t.deleted
            .entry(r.get(0))
            .or_default()
            .insert(r.get(1), r.get::<i64, _>(2) as u64);
    }
    let gone: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plan_entities WHERE plan_id = $1 AND status = 'gone'",
    )
    .bind(id)
    .fetch_one(state.pool())
    .await
    .map_err(q("reading the journal"))?;
    t.entities_gone = gone.max(0) as u64;
    let bytes: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(sum(size) AS BIGINT) FROM plan_objects WHERE plan_id = $1 AND status = 'deleted'",
    )
    .bind(id)
    .fetch_one(state.pool())
    .await
    .map_err(q("reading the journal"))?;
    t.bytes_deleted = bytes.unwrap_or(0).max(0) as u64;
    for r in sqlx::query(
        "SELECT root_type, root_key, reason FROM plan_cases WHERE plan_id = $1 AND status = 'failed'",
    )
    .bind(id)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the journal"))?
    {
        t.failed_cases.push((
            r.get(0),
            r.get(1),
            r.get::<Option<String>, _>(2).unwrap_or_default(),
        ));
    }
    for r in
        sqlx::query("SELECT key, reason FROM plan_objects WHERE plan_id = $1 AND status = 'failed'")
            .bind(id)
            .fetch_all(state.pool())
            .await
            .map_err(q("reading the journal"))?
    {
        t.failed_objects
            .push((r.get(0), r.get::<Option<String>, _>(1).unwrap_or_default()));
    }
    Ok(t)
}

/// Audit records of one plan.
pub async fn audit_records(state: &StateStore, id: &str) -> Result<u64, StateError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE plan_id = $1")
        .bind(id)
        .fetch_one(state.pool())
        .await
        .map_err(q("reading the audit log"))?;
    Ok(n.max(0) as u64)
}

/// A page of every plan's deleted entities, in (plan, type, key) order
/// after `after` (audit verify matches them with the audit records).
pub async fn deleted_entity_items(
    state: &StateStore,
    after: Option<&(String, String, String)>,
    page: i64,
) -> Result<Vec<(String, String, String)>, StateError> {
    let query = match after {
        None => sqlx::query(
            "SELECT plan_id, entity_type, entity_key FROM plan_entities WHERE status = 'deleted'
             ORDER BY plan_id, entity_type, entity_key LIMIT $1",
        )
        .bind(page),
        Some((p, t, k)) => sqlx::query(
            "SELECT plan_id, entity_type, entity_key FROM plan_entities WHERE status = 'deleted'
               AND (plan_id, entity_type, entity_key) > ($2, $3, $4)
             ORDER BY plan_id, entity_type, entity_key LIMIT $1",
        )
        .bind(page)
        .bind(p.clone())
        .bind(t.clone())
        .bind(k.clone()),
    };
    let rows = query
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the journal"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// A page of every plan's deleted objects, in (plan, item) order after
/// `after`: (plan, item, key).
pub async fn deleted_object_items(
    state: &StateStore,
    after: Option<&(String, i64)>,
    page: i64,
) -> Result<Vec<(String, i64, String)>, StateError> {
    let query = match after {
        None => sqlx::query(
            "SELECT plan_id, item, key FROM plan_objects WHERE status = 'deleted'
             ORDER BY plan_id, item LIMIT $1",
        )
        .bind(page),
        Some((p, i)) => sqlx::query(
            "SELECT plan_id, item, key FROM plan_objects WHERE status = 'deleted'
               AND (plan_id, item) > ($2, $3)
             ORDER BY plan_id, item LIMIT $1",
        )
        .bind(page)
        .bind(p.clone())
        .bind(*i),
    };
    let rows = query
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the journal"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
