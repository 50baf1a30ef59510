//! The plan tables (`plans`, `plan_cases`, `plan_entities`,
//! `plan_objects`, `plan_review`, `pruned_plans`): reading a stored plan
//! back (`lethe plan show`, the report), and pruning old plans (`lethe plan
//! prune`). The rows are read in pages (keyset, in
//! primary-key order), so a plan of millions of items is never held whole.

use serde::Serialize;
use sqlx::Row;

use super::status::{CaseStatus, EntityStatus, ObjectFate, ObjectStatus};
use super::{StateError, StateStore, q};

/// Where a plan is in its life: stored as these words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanStatus {
    /// Stored; nothing of it applied yet.
    Planned,
    /// An apply started it and has not finished.
    Applying,
    /// Applied to the end, every item done or skipped.
    Applied,
    /// Applied to the end with some items failed.
    Partial,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Planned => "planned",
            PlanStatus::Applying => "applying",
            PlanStatus::Applied => "applied",
            PlanStatus::Partial => "partial",
        }
    }

    pub fn parse(s: &str) -> Option<PlanStatus> {
        [
            PlanStatus::Planned,
            PlanStatus::Applying,
            PlanStatus::Applied,
            PlanStatus::Partial,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for PlanStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn plan_status(s: &str) -> Result<PlanStatus, StateError> {
    PlanStatus::parse(s)
        .ok_or_else(|| StateError::Corrupt(format!("plan status `{s}` is not one lethe writes")))
}

/// Marks the plan `applying` (an apply started or resumed it). `false`
/// when the plan is no longer there: a `plan prune` that won the race
/// removed it before it was marked, and nothing of it may be applied
/// without its journal.
pub async fn mark_applying(state: &StateStore, id: &str) -> Result<bool, StateError> {
    sqlx::query("UPDATE plans SET status = 'applying' WHERE id = $1 AND status <> 'applying'")
        .bind(id)
        .execute(state.pool())
        .await
        .map_err(q("marking the plan"))?;
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM plans WHERE id = $1")
        .bind(id)
        .fetch_one(state.pool())
        .await
        .map_err(q("marking the plan"))?;
    Ok(still > 0)
}

/// Marks an applied plan with its outcome and the audit head after it.
pub async fn mark_applied(
    state: &StateStore,
    id: &str,
    status: PlanStatus,
    audit_head: Option<&str>,
) -> Result<(), StateError> {
    sqlx::query("UPDATE plans SET status = $1, audit_head = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(audit_head)
        .bind(id)
        .execute(state.pool())
        .await
        .map_err(q("marking the plan"))?;
    Ok(())
}

/// A plan's row as stored: its summary and brake are the plan module's
/// JSON, read back there.
#[derive(Clone, Debug)]
pub struct PlanRow {
    pub id: String,
    pub as_of: i64,
    pub status: PlanStatus,
    pub summary: String,
    pub brake: Option<String>,
}

/// The plan `id`, or the latest plan when `id` is `None`.
pub async fn plan_row(state: &StateStore, id: Option<&str>) -> Result<PlanRow, StateError> {
    let row = match id {
        Some(id) => {
            sqlx::query("SELECT id, as_of, status, summary, brake FROM plans WHERE id = $1")
                .bind(id)
                .fetch_optional(state.pool())
                .await
                .map_err(q("reading the plan"))?
                .ok_or_else(|| StateError::NoSuchPlan(id.to_string()))?
        }
        None => sqlx::query(
            "SELECT id, as_of, status, summary, brake FROM plans ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(state.pool())
        .await
        .map_err(q("reading the plan"))?
        .ok_or(StateError::NoPlan)?,
    };
    Ok(PlanRow {
        id: row.get(0),
        as_of: row.get(1),
        status: plan_status(&row.get::<String, _>(2))?,
        summary: row.get(3),
        brake: row.get(4),
    })
}

/// One line of `lethe plan --list`. Its JSON is the array `[id,
/// created_at, as_of, status]` that `plan --list --format json` has always
/// printed (scripts read it so).
#[derive(Clone, Debug)]
pub struct PlanListRow {
    pub id: String,
    pub created_at: String,
    /// RFC 3339.
    pub as_of: String,
    pub status: PlanStatus,
}

impl Serialize for PlanListRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            &self.id,
            &self.created_at,
            &self.as_of,
            self.status.as_str(),
        )
            .serialize(s)
    }
}

/// Every stored plan, oldest first.
pub async fn list(state: &StateStore) -> Result<Vec<PlanListRow>, StateError> {
    let rows = sqlx::query("SELECT id, created_at, as_of, status FROM plans ORDER BY seq")
        .fetch_all(state.pool())
        .await
        .map_err(q("listing plans"))?;
    rows.iter()
        .map(|r| {
            Ok(PlanListRow {
                id: r.get(0),
                created_at: r.get(1),
                as_of: crate::model::format_instant(r.get(2)),
                status: plan_status(&r.get::<String, _>(3))?,
            })
        })
        .collect()
}

/// The latest plan that an apply started or finished (the report's
/// default), if any.
pub async fn latest_applied(state: &StateStore) -> Result<Option<String>, StateError> {
    sqlx::query_scalar(
        "SELECT id FROM plans WHERE status IN ('applied', 'partial', 'applying') ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(state.pool())
    .await
    .map_err(q("choosing the plan to report"))
}

/// The latest plan whose apply was started and stopped (the service
/// resumes it at start), if any.
pub async fn latest_applying(state: &StateStore) -> Result<Option<String>, StateError> {
    sqlx::query_scalar("SELECT id FROM plans WHERE status = 'applying' ORDER BY seq DESC LIMIT 1")
        .fetch_optional(state.pool())
        .await
        .map_err(q("reading plans"))
}

/// The summary (JSON) of the latest plan, if any.
pub async fn latest_summary(state: &StateStore) -> Result<Option<String>, StateError> {
    sqlx::query_scalar("SELECT summary FROM plans ORDER BY seq DESC LIMIT 1")
        .fetch_optional(state.pool())
        .await
        .map_err(q("reading the last plan"))
}

/// The summary (JSON) of the plan the brake compares a new plan with: the
/// last one that was clear or applied (a braked plan never applied must not
/// become the new normal by planning again). Read inside the planning
/// transaction.
pub async fn baseline_summary(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<Option<String>, StateError> {
    sqlx::query_scalar(
        "SELECT summary FROM plans WHERE brake IS NULL OR status IN ('applied', 'partial')
         ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(q("reading the previous plan"))
}

// ---- writing a plan (one transaction, `plan::make_plan`) -------------

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// A case of a new plan.
pub struct NewCase<'a> {
    pub case_id: u64,
    pub policy: &'a str,
    pub root_type: &'a str,
    pub root_key: String,
    /// `i` or `t` (`EntityKey::stored_kind`).
    pub root_kind: &'static str,
    pub case_clock: Option<i64>,
}

pub async fn write_cases(
    tx: &mut Tx<'_>,
    plan_id: &str,
    rows: &[NewCase<'_>],
) -> Result<(), StateError> {
    let sqlite = super::is_sqlite(tx);
    for chunk in rows.chunks(140) {
        let sql = format!(
            "INSERT INTO plan_cases(plan_id, case_id, policy, root_type, root_key, root_kind, case_clock, status) VALUES {}",
            super::params(chunk.len(), "(?, ?, ?, ?, ?, ?, ?, 'planned')", 1)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql));
        for c in chunk {
            query = query
                .bind(plan_id)
                .bind(c.case_id as i64)
                .bind(c.policy)
                .bind(c.root_type)
                .bind(c.root_key.clone())
                .bind(c.root_kind)
                .bind(c.case_clock);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("writing the plan"))?;
    }
    Ok(())
}

/// An entity a new plan deletes.
pub struct NewEntity<'a> {
    pub case_id: u64,
    pub entity_type: &'a str,
    pub key: String,
    pub key_kind: &'static str,
}

/// Writes entities; at most 150 a call keeps one statement per call.
pub async fn write_entities(
    tx: &mut Tx<'_>,
    plan_id: &str,
    rows: &[NewEntity<'_>],
) -> Result<(), StateError> {
    let sqlite = super::is_sqlite(tx);
    for chunk in rows.chunks(150) {
        let sql = format!(
            "INSERT INTO plan_entities(plan_id, case_id, entity_type, entity_key, key_kind, status) VALUES {}",
            super::params(chunk.len(), "(?, ?, ?, ?, ?, 'planned')", 1)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql));
        for e in chunk {
            query = query
                .bind(plan_id)
                .bind(e.case_id as i64)
                .bind(e.entity_type)
                .bind(e.key.clone())
                .bind(e.key_kind);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("writing the plan"))?;
    }
    Ok(())
}

/// An object a new plan deletes.
pub struct NewObject {
    pub key: String,
    pub size: u64,
    /// `delete`, `orphan` or `redact`.
    pub fate: &'static str,
    pub policy: String,
    /// The digest of its links (the apply re-check compares it).
    pub links: String,
    /// Its links as a JSON array of refs, for review.
    pub entities: String,
    /// `redact`: what goes, `{"rule": N, "records": [...]}`.
    pub records: Option<String>,
}

/// Writes objects, numbered in order from 0.
pub async fn write_objects(
    tx: &mut Tx<'_>,
    plan_id: &str,
    rows: &[NewObject],
) -> Result<(), StateError> {
    let sqlite = super::is_sqlite(tx);
    for (i, chunk) in rows.chunks(110).enumerate() {
        let sql = format!(
            "INSERT INTO plan_objects(plan_id, item, key, size, fate, policy, links, entities, records, status) VALUES {}",
            super::params(chunk.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned')", 1)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql));
        for (j, o) in chunk.iter().enumerate() {
            query = query
                .bind(plan_id)
                .bind((i * 110 + j) as i64)
                .bind(o.key.clone())
                .bind(o.size as i64)
                .bind(o.fate)
                .bind(o.policy.clone())
                .bind(o.links.clone())
                .bind(o.entities.clone())
                .bind(o.records.clone());
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("writing the plan"))?;
    }
    Ok(())
}

/// Something a new plan keeps, for review.
pub struct NewReview {
    pub kind: &'static str,
    pub entity_type: Option<String>,
    pub key: String,
    pub size: Option<u64>,
    pub fate: String,
    pub reason: Option<String>,
    pub entities: Option<String>,
}

pub async fn write_review(
    tx: &mut Tx<'_>,
    plan_id: &str,
    rows: &[NewReview],
) -> Result<(), StateError> {
    let sqlite = super::is_sqlite(tx);
    for (i, chunk) in rows.chunks(100).enumerate() {
        let sql = format!(
            "INSERT INTO plan_review(plan_id, item, kind, entity_type, key, size, fate, reason, entities) VALUES {}",
            super::params(chunk.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?)", 1)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql));
        for (j, r) in chunk.iter().enumerate() {
            query = query
                .bind(plan_id)
                .bind((i * 100 + j) as i64)
                .bind(r.kind)
                .bind(r.entity_type.clone())
                .bind(r.key.clone())
                .bind(r.size.map(|n| n as i64))
                .bind(r.fate.clone())
                .bind(r.reason.clone())
                .bind(r.entities.clone());
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("writing the plan's review rows"))?;
    }
    Ok(())
}

/// The plan's own row, written last in its transaction.
pub struct NewPlan<'a> {
    pub id: &'a str,
    pub created_at: &'a str,
    pub as_of: i64,
    pub config_hash: &'a str,
    pub digest: &'a str,
    /// The plan module's summary, as JSON.
    pub summary: String,
    /// The brake's reasons, as JSON; none when clear.
    pub brake: Option<String>,
}

pub async fn write_plan(tx: &mut Tx<'_>, p: NewPlan<'_>) -> Result<(), StateError> {
    sqlx::query(
        "INSERT INTO plans(id, created_at, as_of, config_hash, digest, summary, brake, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'planned')",
    )
    .bind(p.id)
    .bind(p.created_at)
    .bind(p.as_of)
    .bind(p.config_hash)
    .bind(p.digest)
    .bind(p.summary)
    .bind(p.brake)
    .execute(&mut **tx)
    .await
    .map_err(q("writing the plan"))?;
    Ok(())
}

/// Which items `plan show --items` lists.
#[derive(Clone, Debug, Default)]
pub struct ItemFilter {
    /// `delete` or `orphan`: objects of that fate (cases are deletions, so
    /// `orphan` lists no case).
    pub fate: Option<String>,
    /// The policy (`orphans` for orphaned objects).
    pub policy: Option<String>,
    /// An entity type: the cases holding one, and only those entities of
    /// them; no objects. `object`: only the objects.
    pub entity_type: Option<String>,
}

impl ItemFilter {
    fn cases_wanted(&self) -> bool {
        self.fate.as_deref().is_none_or(|f| f == "delete")
            && self.entity_type.as_deref() != Some("object")
    }

    fn objects_wanted(&self) -> bool {
        self.entity_type.as_deref().is_none_or(|t| t == "object")
            && self.fate.as_deref().is_none_or(is_fate)
    }
}

/// One case of a plan, with the entities inside it.
#[derive(Clone, Debug, Serialize)]
pub struct CaseRow {
    pub case_id: i64,
    pub policy: String,
    pub root_type: String,
    pub root_key: String,
    /// The latest clock inside the case (plans from before it was kept: none).
    pub case_clock: Option<i64>,
    pub status: &'static str,
    pub reason: Option<String>,
    pub entities: Vec<EntityRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EntityRow {
    pub entity_type: String,
    pub entity_key: String,
    pub status: &'static str,
}

/// One object of a plan.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectRow {
    pub item: i64,
    pub key: String,
    pub size: u64,
    pub fate: &'static str,
    pub policy: String,
    pub status: &'static str,
    pub reason: Option<String>,
    /// The entities it links, as refs (plans from before they were kept: empty).
    pub entities: Vec<String>,
    /// `redact`: how many of its records go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_to_remove: Option<u64>,
}

/// Something the plan keeps, for review: an object it does not delete, an
/// undatable entity, or a dangling parent reference.
#[derive(Clone, Debug, Serialize)]
pub struct ReviewRow {
    pub item: i64,
    /// `object`, `undatable` or `dangling`.
    pub kind: &'static str,
    pub entity_type: Option<String>,
    pub key: String,
    pub size: Option<u64>,
    /// Object: `shared`, `orphan-young`, `unlinked`, `unreadable`, `held`.
    /// Dangling: the parent type named.
    pub fate: String,
    /// Unreadable: why. Dangling: the missing parent's key.
    pub reason: Option<String>,
    pub entities: Vec<String>,
}

const REVIEW_KINDS: &[&str] = &["object", "undatable", "dangling"];

fn refs(json: Option<String>) -> Vec<String> {
    json.and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default()
}

/// The review rows of `plan_id` that `filter` admits, a page at a time.
pub async fn for_each_review(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    sink: &mut (dyn FnMut(&[ReviewRow]) + Send),
) -> Result<(), StateError> {
    for_each_review_up_to(state, plan_id, filter, page, u64::MAX, sink).await
}

/// As [`for_each_review`], stopping after `limit` rows (the report shows
/// the first few; it must not read a million to show them).
pub async fn for_each_review_up_to(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    limit: u64,
    sink: &mut (dyn FnMut(&[ReviewRow]) + Send),
) -> Result<(), StateError> {
    let mut read = 0u64;
    // The review rows have no policy; a policy filter lists none.
    if filter.policy.is_some() || filter.fate.as_deref().is_some_and(is_fate) {
        return Ok(());
    }
    let page = page.max(1);
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT item, kind, entity_type, key, size, fate, reason, entities FROM plan_review
             WHERE plan_id = $1 AND item > $2
               AND ($3 IS NULL OR fate = $3 OR kind = $3)
               AND ($4 IS NULL OR entity_type = $4 OR ($4 = 'object' AND kind = 'object'))
             ORDER BY item LIMIT $5",
        )
        .bind(plan_id)
        .bind(after)
        .bind(filter.fate.clone())
        .bind(filter.entity_type.clone())
        .bind(page)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's review rows"))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0);
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(ReviewRow {
                item: r.get(0),
                kind: known(REVIEW_KINDS, &r.get::<String, _>(1), "review kind")?,
                entity_type: r.get(2),
                key: r.get(3),
                size: r.get::<Option<i64>, _>(4).map(|n| n.max(0) as u64),
                fate: r.get(5),
                reason: r.get(6),
                entities: refs(r.get(7)),
            });
        }
        read += out.len() as u64;
        sink(&out);
        if (rows.len() as i64) < page || read >= limit {
            return Ok(());
        }
    }
}

fn is_fate(s: &str) -> bool {
    ObjectFate::parse(s).is_some()
}

/// The stored word of `s` as one of `T`'s (the journal's enums), or what
/// lethe never writes.
fn word<T: Copy>(
    parse: fn(&str) -> Option<T>,
    as_str: fn(T) -> &'static str,
    s: &str,
    what: &str,
) -> Result<&'static str, StateError> {
    parse(s)
        .map(as_str)
        .ok_or_else(|| StateError::Corrupt(format!("{what} `{s}` is not one lethe writes")))
}

fn known(set: &[&'static str], s: &str, what: &str) -> Result<&'static str, StateError> {
    set.iter()
        .copied()
        .find(|k| *k == s)
        .ok_or_else(|| StateError::Corrupt(format!("{what} `{s}` is not one lethe writes")))
}

/// Rows read per query.
pub const PAGE: i64 = 2_000;

/// Every case of `plan_id` that `filter` admits, in case order, handed to
/// `sink` one page at a time.
pub async fn for_each_case(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    sink: &mut (dyn FnMut(&[CaseRow]) + Send),
) -> Result<(), StateError> {
    if !filter.cases_wanted() {
        return Ok(());
    }
    let page = page.max(1);
    let ty = filter.entity_type.clone();
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT case_id, policy, root_type, root_key, status, reason, case_clock FROM plan_cases
             WHERE plan_id = $1 AND case_id > $2 AND ($3 IS NULL OR policy = $3)
               AND ($4 IS NULL OR EXISTS (SELECT 1 FROM plan_entities e
                    WHERE e.plan_id = plan_cases.plan_id AND e.case_id = plan_cases.case_id
                      AND e.entity_type = $4))
             ORDER BY case_id LIMIT $5",
        )
        .bind(plan_id)
        .bind(after)
        .bind(filter.policy.clone())
        .bind(ty.clone())
        .bind(page)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's cases"))?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        let (lo, hi): (i64, i64) = (first.get(0), last.get(0));
        let mut cases = Vec::with_capacity(rows.len());
        for r in &rows {
            cases.push(CaseRow {
                case_id: r.get(0),
                policy: r.get(1),
                root_type: r.get(2),
                root_key: r.get(3),
                case_clock: r.get(6),
                status: word(
                    CaseStatus::parse,
                    CaseStatus::as_str,
                    &r.get::<String, _>(4),
                    "case status",
                )?,
                reason: r.get(5),
                entities: Vec::new(),
            });
        }
        let ents = sqlx::query(
            "SELECT case_id, entity_type, entity_key, status FROM plan_entities
             WHERE plan_id = $1 AND case_id >= $2 AND case_id <= $3 AND ($4 IS NULL OR entity_type = $4)
             ORDER BY case_id, entity_type, entity_key",
        )
        .bind(plan_id)
        .bind(lo)
        .bind(hi)
        .bind(ty.clone())
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's entities"))?;
        let mut i = 0;
        for e in &ents {
            let case: i64 = e.get(0);
            while i < cases.len() && cases[i].case_id < case {
                i += 1;
            }
            if let Some(c) = cases.get_mut(i).filter(|c| c.case_id == case) {
                c.entities.push(EntityRow {
                    entity_type: e.get(1),
                    entity_key: e.get(2),
                    status: word(
                        EntityStatus::parse,
                        EntityStatus::as_str,
                        &e.get::<String, _>(3),
                        "entity status",
                    )?,
                });
            }
        }
        sink(&cases);
        if (rows.len() as i64) < page {
            return Ok(());
        }
        after = hi;
    }
}

/// Every object of `plan_id` that `filter` admits, in item order, handed to
/// `sink` one page at a time.
pub async fn for_each_object(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    sink: &mut (dyn FnMut(&[ObjectRow]) + Send),
) -> Result<(), StateError> {
    if !filter.objects_wanted() {
        return Ok(());
    }
    let page = page.max(1);
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT item, key, size, fate, policy, status, reason, entities, records FROM plan_objects
             WHERE plan_id = $1 AND item > $2 AND ($3 IS NULL OR policy = $3)
               AND ($4 IS NULL OR fate = $4)
             ORDER BY item LIMIT $5",
        )
        .bind(plan_id)
        .bind(after)
        .bind(filter.policy.clone())
        .bind(filter.fate.clone())
        .bind(page)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's objects"))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0);
        let mut objects = Vec::with_capacity(rows.len());
        for r in &rows {
            objects.push(ObjectRow {
                item: r.get(0),
                key: r.get(1),
                size: r.get::<i64, _>(2).max(0) as u64,
                fate: word(
                    ObjectFate::parse,
                    ObjectFate::as_str,
                    &r.get::<String, _>(3),
                    "object fate",
                )?,
                policy: r.get(4),
                status: word(
                    ObjectStatus::parse,
                    ObjectStatus::as_str,
                    &r.get::<String, _>(5),
                    "object status",
                )?,
                reason: r.get(6),
                entities: refs(r.get(7)),
                records_to_remove: r
                    .get::<Option<String>, _>(8)
                    .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                    .and_then(|v| v["records"].as_array().map(|a| a.len() as u64)),
            });
        }
        sink(&objects);
        if (rows.len() as i64) < page {
            return Ok(());
        }
    }
}

/// What `plan prune` keeps.
#[derive(Clone, Copy, Debug)]
pub enum PruneBy {
    /// The newest N plans.
    Keep(u64),
    /// The plans created at or after this instant.
    Since(jiff::Timestamp),
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// The plans deleted, oldest first.
    pub pruned: Vec<String>,
    /// Plans old enough to go but kept: being applied, or started and not
    /// finished.
    pub in_progress: Vec<String>,
    /// Plans kept because they are new enough (or among the newest N).
    pub kept: u64,
}

/// A plan apply started and has not finished: status `applying`, or items
/// still planned or executing after the plan left `planned`.
async fn in_progress(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    status: &str,
) -> Result<bool, StateError> {
    if status == "applying" {
        return Ok(true);
    }
    if status == "planned" {
        return Ok(false);
    }
    let open: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM plan_cases WHERE plan_id = $1 AND status IN ('planned', 'executing'))
              + (SELECT count(*) FROM plan_objects WHERE plan_id = $1 AND status IN ('planned', 'executing'))",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(q("reading the journal"))?;
    Ok(open > 0)
}

/// Deletes the plans `by` does not keep, with their cases, entities and
/// objects; never one in progress, never an audit record. Each pruned plan
/// is remembered in `pruned_plans`, so that `audit verify` knows its delete
/// records have no journal any more.
pub async fn prune(state: &StateStore, by: PruneBy) -> Result<PruneReport, StateError> {
    let rows = sqlx::query("SELECT id, created_at FROM plans ORDER BY seq DESC")
        .fetch_all(state.pool())
        .await
        .map_err(q("listing plans"))?;
    let mut report = PruneReport::default();
    let mut candidates = Vec::new();
    // Never the latest plan (`lethe apply` without an id applies it) nor
    // the one the mass-delete brake compares the next plan with (the last
    // clear or applied one): without it, a read that comes back short
    // would have nothing to be measured against.
    let baseline: Option<String> = sqlx::query_scalar(
        "SELECT id FROM plans WHERE brake IS NULL OR status IN ('applied', 'partial') ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(state.pool())
    .await
    .map_err(q("listing plans"))?;
    for (n, r) in rows.iter().enumerate() {
        let (id, created): (String, String) = (r.get(0), r.get(1));
        if n == 0 || baseline.as_deref() == Some(id.as_str()) {
            report.kept += 1;
            continue;
        }
        let old = match by {
            PruneBy::Keep(keep) => n as u64 >= keep,
            // A creation time that does not parse is kept: better too much.
            PruneBy::Since(cutoff) => created
                .parse::<jiff::Timestamp>()
                .is_ok_and(|at| at < cutoff),
        };
        if old {
            candidates.push(id);
        } else {
            report.kept += 1;
        }
    }
    candidates.reverse();
    let now = jiff::Timestamp::now().to_string();
    for id in candidates {
        let mut tx = state.begin_write().await.map_err(q("pruning a plan"))?;
        // Locked on PostgreSQL until the prune commits: an apply starting
        // now waits, then finds the plan gone and stops (SQLite writers
        // queue for one connection anyway).
        let sql = if state.dialect() == super::Dialect::Postgres {
            "SELECT status FROM plans WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT status FROM plans WHERE id = $1"
        };
        let status: Option<String> = sqlx::query_scalar(sql)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("pruning a plan"))?;
        let Some(status) = status else {
            continue; // pruned meanwhile
        };
        if in_progress(&mut tx, &id, &status).await? {
            report.in_progress.push(id);
            continue;
        }
        for sql in [
            "DELETE FROM plan_entities WHERE plan_id = $1",
            "DELETE FROM plan_cases WHERE plan_id = $1",
            "DELETE FROM plan_objects WHERE plan_id = $1",
            "DELETE FROM plan_review WHERE plan_id = $1",
            "DELETE FROM workers WHERE plan_id = $1",
            "DELETE FROM plans WHERE id = $1",
        ] {
            sqlx::query(sql)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(q("pruning a plan"))?;
        }
        sqlx::query("INSERT INTO pruned_plans(id, pruned_at) VALUES ($1, $2)")
            .bind(&id)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(q("pruning a plan"))?;
        tx.commit().await.map_err(q("pruning a plan"))?;
        report.pruned.push(id);
    }
    Ok(report)
}

/// The ids of the pruned plans.
pub async fn pruned_plans(
    state: &StateStore,
) -> Result<std::collections::HashSet<String>, StateError> {
    let rows = sqlx::query("SELECT id FROM pruned_plans")
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the pruned plans"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What plan `plan_id` decided for each of `keys` that it names: the fate
/// (`delete`, `orphan`, `redact` with the journal status; or a kept fate
/// from the review rows: `shared`, `orphan-young`, `unlinked`,
/// `unreadable`, `held`). Keys the plan does not name were retained (or
/// are newer than its index).
pub async fn object_fates(
    state: &StateStore,
    plan_id: &str,
    keys: &[String],
) -> Result<std::collections::HashMap<String, (String, Option<String>)>, StateError> {
    let sqlite = state.is_sqlite();
    let mut out = std::collections::HashMap::new();
    for chunk in keys.chunks(400) {
        let list = super::params(chunk.len(), "?", 2);
        for sql in [
            format!(
                "SELECT key, fate, status FROM plan_objects WHERE plan_id = $1 AND key IN ({list})"
            ),
            format!(
                "SELECT key, fate, NULL FROM plan_review WHERE plan_id = $1 AND kind = 'object' AND key IN ({list})"
            ),
        ] {
            let mut query =
                sqlx::query_as::<_, (String, String, Option<String>)>(super::sql(sqlite, sql))
                    .bind(plan_id);
            for k in chunk {
                query = query.bind(k.clone());
            }
            for (key, fate, status) in query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the plan"))?
            {
                out.insert(key, (fate, status));
            }
        }
    }
    Ok(out)
}

/// Keeps the last verify of a plan (its JSON: counts and pseudonyms only),
/// for the report.
pub async fn record_verified(
    state: &StateStore,
    plan_id: &str,
    verified: &str,
) -> Result<(), StateError> {
    sqlx::query("UPDATE plans SET verified = $1 WHERE id = $2")
        .bind(verified)
        .bind(plan_id)
        .execute(state.pool())
        .await
        .map_err(q("recording the verify"))?;
    Ok(())
}

/// The last verify of a plan, as recorded.
pub async fn verified(state: &StateStore, plan_id: &str) -> Result<Option<String>, StateError> {
    let v: Option<Option<String>> = sqlx::query_scalar("SELECT verified FROM plans WHERE id = $1")
        .bind(plan_id)
        .fetch_optional(state.pool())
        .await
        .map_err(q("reading the plan"))?;
    Ok(v.flatten())
}
