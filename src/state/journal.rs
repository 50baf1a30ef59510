//! The journal: what `apply` did to each planned item (the statuses and
//! reasons of `plan_cases`, `plan_entities` and `plan_objects`, and its
//! attempts). Written here by apply's steps, each inside the transaction
//! apply hands in, so that a step and its audit records commit together;
//! read here by verify, audit verify, the brake and the report.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

pub use super::status::{CaseStatus, EntityStatus, ObjectFate, ObjectStatus};
use super::{StateError, StateStore, exec_in, q};
use crate::model::EntityKey;

/// A connection inside a transaction apply holds open (`&mut tx`).
type Conn = sqlx::AnyConnection;

fn stored<T>(parsed: Option<T>, what: &str, s: &str) -> Result<T, StateError> {
    parsed.ok_or_else(|| StateError::Corrupt(format!("{what} `{s}` is not one lethe writes")))
}

/// What earlier plans erased and left behind: for each object a plan
/// skipped or failed (changed since the plan, a redaction refused), the
/// entities among its links that the same plan deleted, as (object key,
/// type, key as the object's links spelled it). A later sweep's plan waives
/// the orphans' grace for these links of these objects only
/// (`plan::fate::LinkTarget::Erased`): the grace waits for an entity to
/// appear, and lethe itself erased these; a new file naming the same key
/// keeps its grace. Read per plan in statements of a few hundred keys, on
/// the partial index of the objects left behind.
pub async fn erased_left_behind(
    state: &StateStore,
) -> Result<std::collections::HashSet<(String, String, String)>, StateError> {
    use std::collections::{BTreeMap, BTreeSet, HashSet};
    let left: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT plan_id, key, entities FROM plan_objects WHERE status IN ('skipped', 'failed')",
    )
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the journal"))?;
    // Per plan and type, the keys its left objects link, and which objects.
    let mut asked: BTreeMap<(String, String), BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (plan, object, entities) in left {
        let refs: BTreeSet<(String, String)> = entities
            .as_deref()
            .and_then(|e| super::redacted::entities_of(e).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (t, k) in refs {
            asked
                .entry((plan.clone(), t))
                .or_default()
                .entry(k)
                .or_default()
                .push(object.clone());
        }
    }
    let mut out = HashSet::new();
    for ((plan, ty), keys) in asked {
        let all: Vec<&String> = keys.keys().collect();
        for chunk in all.chunks(400) {
            let text = format!(
                "SELECT entity_key FROM plan_entities WHERE plan_id = $1 AND entity_type = $2 AND status IN ('deleted', 'gone') AND entity_key IN ({})",
                super::params(chunk.len(), "?", 3)
            );
            let mut query = sqlx::query_scalar::<_, String>(super::sql(state.is_sqlite(), text))
                .bind(plan.clone())
                .bind(ty.clone());
            for k in chunk {
                query = query.bind((*k).clone());
            }
            let erased = query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the journal"))?;
            for k in erased {
                for object in keys.get(&k).into_iter().flatten() {
                    out.insert((object.clone(), ty.clone(), k.clone()));
                }
            }
        }
    }
    Ok(out)
}

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

// The steps apply journals. Statements that belong to one step take the
// caller's transaction (`&mut tx`): apply decides what commits together
// (a step with its audit records), and in which order.

/// At the start of a run: the items that failed in an earlier run are open
/// again (`planned`, unclaimed), cases first, then objects.
pub async fn reopen_failed(state: &StateStore, plan_id: &str) -> Result<(), StateError> {
    for table in ["plan_cases", "plan_objects"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET status = 'planned', claimed_by = NULL WHERE plan_id = $1 AND status = 'failed'"
        )))
        .bind(plan_id)
        .execute(state.pool())
        .await
        .map_err(q("journaling"))?;
    }
    Ok(())
}

/// How many cases the plan has.
pub async fn case_count(state: &StateStore, plan_id: &str) -> Result<u64, StateError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM plan_cases WHERE plan_id = $1")
        .bind(plan_id)
        .fetch_one(state.pool())
        .await
        .map_err(q("reading the plan"))?;
    Ok(n.max(0) as u64)
}

/// How many objects the plan has.
pub async fn object_count(state: &StateStore, plan_id: &str) -> Result<u64, StateError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM plan_objects WHERE plan_id = $1")
        .bind(plan_id)
        .fetch_one(state.pool())
        .await
        .map_err(q("reading the plan"))?;
    Ok(n.max(0) as u64)
}

/// Cases and objects of the plan journaled `failed`, whichever worker
/// wrote them.
pub async fn failed_count(state: &StateStore, plan_id: &str) -> Result<u64, StateError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM plan_cases WHERE plan_id = $1 AND status = 'failed')
              + (SELECT count(*) FROM plan_objects WHERE plan_id = $1 AND status = 'failed')",
    )
    .bind(plan_id)
    .fetch_one(state.pool())
    .await
    .map_err(q("reading the journal"))?;
    Ok(n.max(0) as u64)
}

/// The planned entities of `case_ids`: (case id, entity type, stored key).
pub async fn case_entities(
    state: &StateStore,
    plan_id: &str,
    case_ids: &[u64],
) -> Result<Vec<(u64, String, String)>, StateError> {
    let id_list = case_ids
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let rows: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM plan_entities WHERE plan_id = $1 AND case_id IN ({id_list})",
        state.json_rows("case_id, entity_type, entity_key")
    )))
    .bind(plan_id)
    .fetch_one(state.pool())
    .await
    .map_err(q("reading the plan"))?;
    Ok(
        super::parse_json_rows::<(i64, String, String)>(&rows, "reading the plan")?
            .into_iter()
            .map(|(c, t, k)| (c as u64, t, k))
            .collect(),
    )
}

/// One entity's status, where its case's entities do not all share one.
pub async fn set_entity_status(
    tx: &mut Conn,
    plan_id: &str,
    entity_type: &str,
    key: &str,
    status: EntityStatus,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE plan_entities SET status = $1 WHERE plan_id = $2 AND entity_type = $3 AND entity_key = $4",
    )
    .bind(status.as_str())
    .bind(plan_id)
    .bind(entity_type)
    .bind(key)
    .execute(&mut *tx)
    .await
    .map_err(q("journaling"))?;
    Ok(())
}

/// Every entity of `case_ids` deleted by this plan.
pub async fn case_entities_deleted(
    tx: &mut Conn,
    plan_id: &str,
    case_ids: &[i64],
) -> Result<(), StateError> {
    exec_in(
        tx,
        "UPDATE plan_entities SET status = 'deleted' WHERE plan_id = $1 AND case_id IN ({in})",
        &[plan_id],
        case_ids,
    )
    .await?;
    Ok(())
}

/// Cases re-checked and deleted.
pub async fn cases_done(tx: &mut Conn, plan_id: &str, case_ids: &[i64]) -> Result<(), StateError> {
    exec_in(
        tx,
        "UPDATE plan_cases SET status = 'done', reason = NULL WHERE plan_id = $1 AND case_id IN ({in})",
        &[plan_id],
        case_ids,
    )
    .await?;
    Ok(())
}

/// Cases kept at the re-check for `reason`, and their entities with them.
pub async fn cases_skipped(
    tx: &mut Conn,
    plan_id: &str,
    reason: &str,
    case_ids: &[i64],
) -> Result<(), StateError> {
    exec_in(
        tx,
        "UPDATE plan_cases SET status = 'skipped', reason = $1 WHERE plan_id = $2 AND case_id IN ({in})",
        &[reason, plan_id],
        case_ids,
    )
    .await?;
    exec_in(
        tx,
        "UPDATE plan_entities SET status = 'skipped' WHERE plan_id = $1 AND case_id IN ({in})",
        &[plan_id],
        case_ids,
    )
    .await?;
    Ok(())
}

/// A case the CRM failed on, with the error's text (no keys).
pub async fn case_failed(
    state: &StateStore,
    plan_id: &str,
    case_id: u64,
    reason: &str,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE plan_cases SET status = 'failed', reason = $1 WHERE plan_id = $2 AND case_id = $3",
    )
    .bind(reason)
    .bind(plan_id)
    .bind(case_id as i64)
    .execute(state.pool())
    .await
    .map_err(q("journaling"))?;
    Ok(())
}

/// A planned object as apply reads it back for its batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedObject {
    pub item: i64,
    pub key: String,
    pub size: i64,
    pub fate: ObjectFate,
    pub policy: String,
    /// The digest of the links the plan judged.
    pub links: String,
    /// Journaled `executing` by an earlier run: the store may have deleted
    /// it already.
    pub resumed: bool,
    /// `redact`: what goes (`{"rule": N, "records": [...]}`).
    pub records: Option<String>,
}

/// The planned objects `items` (claimed by the caller), in item order.
pub async fn planned_objects(
    state: &StateStore,
    plan_id: &str,
    items: &[i64],
) -> Result<Vec<PlannedObject>, StateError> {
    let sql = format!(
        "SELECT item, key, size, fate, policy, links, status, records FROM plan_objects
         WHERE plan_id = $1 AND item IN ({}) ORDER BY item",
        super::params(items.len(), "?", 2)
    );
    let mut query = sqlx::query(super::sql(state.is_sqlite(), sql)).bind(plan_id);
    for i in items {
        query = query.bind(*i);
    }
    let rows = query
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan"))?;
    rows.iter()
        .map(|r| {
            let fate: String = r.get(3);
            let status: String = r.get(6);
            Ok(PlannedObject {
                item: r.get(0),
                key: r.get(1),
                size: r.get(2),
                fate: stored(ObjectFate::parse(&fate), "object fate", &fate)?,
                policy: r.get(4),
                links: r.get(5),
                resumed: stored(ObjectStatus::parse(&status), "object status", &status)?
                    == ObjectStatus::Executing,
                records: r.get(7),
            })
        })
        .collect()
}

/// The objects of `keys` this plan deletes (fate `delete` or `orphan`)
/// that are not settled yet (`planned` or `executing`), in item order.
pub async fn pending_deletes_by_key(
    state: &StateStore,
    plan_id: &str,
    keys: &[String],
) -> Result<Vec<PlannedObject>, StateError> {
    let mut items: Vec<i64> = Vec::new();
    for chunk in keys.chunks(400) {
        let sql = format!(
            "SELECT item FROM plan_objects
             WHERE plan_id = $1 AND status IN ('planned', 'executing')
               AND fate IN ('delete', 'orphan') AND key IN ({})",
            super::params(chunk.len(), "?", 2)
        );
        let mut query =
            sqlx::query_scalar::<_, i64>(super::sql(state.is_sqlite(), sql)).bind(plan_id);
        for k in chunk {
            query = query.bind(k.clone());
        }
        items.extend(
            query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the plan"))?,
        );
    }
    items.sort_unstable();
    items.dedup();
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(400) {
        out.extend(planned_objects(state, plan_id, chunk).await?);
    }
    Ok(out)
}

/// The journal status in this plan of each of `targets` (entity type,
/// stored key) that the plan has.
pub async fn entity_statuses(
    state: &StateStore,
    plan_id: &str,
    targets: &[(String, String)],
) -> Result<HashMap<(String, String), EntityStatus>, StateError> {
    // Many pairs per statement, their answers packed into one JSON text
    // (row by row, the driver's hand-over costs more than the look-up).
    let mut out = HashMap::with_capacity(targets.len());
    for chunk in targets.chunks(2000) {
        // The pairs drive the join, so each is one look-up in the primary
        // key (as `(type, key) IN (VALUES …)`, SQLite scans the plan's every
        // entity per statement). Placeholders in order: pairs, then plan.
        let sql = format!(
            "SELECT {} FROM (VALUES {}) AS v
             JOIN plan_entities p ON p.entity_type = v.column1 AND p.entity_key = v.column2
                                 AND p.plan_id = ${}",
            state.json_rows("p.entity_type, p.entity_key, p.status"),
            super::params(chunk.len(), "(?, ?)", 1),
            chunk.len() * 2 + 1
        );
        let mut query = sqlx::query_scalar::<_, String>(super::sql(state.is_sqlite(), sql));
        for (t, k) in chunk {
            query = query.bind(t.clone()).bind(k.clone());
        }
        let query = query.bind(plan_id.to_string());
        let text = query
            .fetch_one(state.pool())
            .await
            .map_err(q("reading the journal"))?;
        for (t, k, status) in
            super::parse_json_rows::<(String, String, String)>(&text, "reading the journal")?
        {
            out.insert(
                (t, k),
                stored(EntityStatus::parse(&status), "entity status", &status)?,
            );
        }
    }
    Ok(out)
}

/// The entities of this plan that are not settled as deleted or gone
/// (planned, skipped, failed: few, unless the CRM phase went badly), with
/// their status. Any other entity a redaction's records name was deleted
/// by this plan or was never in it, and either way the CRM must not have
/// it now: the re-check asks the CRM about those.
pub async fn unsettled_entities(
    state: &StateStore,
    plan_id: &str,
) -> Result<HashMap<(String, String), EntityStatus>, StateError> {
    let sql = format!(
        "SELECT {} FROM plan_entities WHERE plan_id = $1 AND status NOT IN ('deleted', 'gone')",
        state.json_rows("entity_type, entity_key, status")
    );
    let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(plan_id.to_string())
        .fetch_one(state.pool())
        .await
        .map_err(q("reading the journal"))?;
    let mut out = HashMap::new();
    for (t, k, status) in
        super::parse_json_rows::<(String, String, String)>(&text, "reading the journal")?
    {
        out.insert(
            (t, k),
            stored(EntityStatus::parse(&status), "entity status", &status)?,
        );
    }
    Ok(out)
}

/// Objects kept for `reason` (at the re-check, or found rewritten).
pub async fn objects_skipped(
    tx: &mut Conn,
    plan_id: &str,
    reason: &str,
    items: &[i64],
) -> Result<(), StateError> {
    exec_in(
        tx,
        "UPDATE plan_objects SET status = 'skipped', reason = $1 WHERE plan_id = $2 AND item IN ({in})",
        &[reason, plan_id],
        items,
    )
    .await?;
    Ok(())
}

/// An object that could not be judged or deleted, with why (no keys).
pub async fn object_failed(
    tx: &mut Conn,
    plan_id: &str,
    item: i64,
    reason: &str,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE plan_objects SET status = 'failed', reason = $1 WHERE plan_id = $2 AND item = $3",
    )
    .bind(reason)
    .bind(plan_id)
    .bind(item)
    .execute(&mut *tx)
    .await
    .map_err(q("journaling"))?;
    Ok(())
}

/// The intent: these objects are about to be deleted (one more attempt).
pub async fn objects_executing(
    tx: &mut Conn,
    plan_id: &str,
    items: &[i64],
) -> Result<(), StateError> {
    exec_in(
        tx,
        "UPDATE plan_objects SET status = 'executing', attempts = attempts + 1 WHERE plan_id = $1 AND item IN ({in})",
        &[plan_id],
        items,
    )
    .await?;
    Ok(())
}

/// Objects settled as `status` (deleted or gone), their reason cleared.
pub async fn objects_settled(
    tx: &mut Conn,
    plan_id: &str,
    status: ObjectStatus,
    items: &[i64],
) -> Result<(), StateError> {
    exec_in(
        tx,
        "UPDATE plan_objects SET status = $1, reason = NULL WHERE plan_id = $2 AND item IN ({in})",
        &[status.as_str(), plan_id],
        items,
    )
    .await?;
    Ok(())
}

/// Objects gone from the store leave the index (their links with them),
/// in the journal step that records them gone.
pub async fn unindex_objects(tx: &mut Conn, keys: &[String]) -> Result<(), StateError> {
    exec_in(tx, "DELETE FROM objects WHERE key IN ({in})", &[], keys).await?;
    Ok(())
}
