//! The plan tables (`plans`, `plan_cases`, `plan_entities`,
//! `plan_objects`, `plan_review`, `pruned_plans`): writing a plan, marking
//! it applying and applied, reading it back for the report; the paged
//! readers of `lethe plan show` are in `plan_show.rs`, `lethe plan prune`
//! in `plan_prune.rs`, both re-exported here.

use serde::Serialize;
use sqlx::Row;

pub use super::plan_prune::{PruneBy, PruneReport, prune, pruned_plans};
pub use super::plan_show::{
    CaseRow, EntityRow, ItemFilter, ObjectRow, PAGE, ReviewRow, for_each_case, for_each_object,
    for_each_review, for_each_review_up_to,
};
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
        "SELECT summary FROM plans WHERE kind IS NULL AND (brake IS NULL OR status IN ('applied', 'partial'))
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
    /// `None`: a sweep's plan; `Some("request")`: a subject request's
    /// (never the brake's baseline).
    pub kind: Option<&'a str>,
}

pub async fn write_plan(tx: &mut Tx<'_>, p: NewPlan<'_>) -> Result<(), StateError> {
    sqlx::query(
        "INSERT INTO plans(id, created_at, as_of, config_hash, digest, summary, brake, status, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, 'planned', $8)",
    )
    .bind(p.id)
    .bind(p.created_at)
    .bind(p.as_of)
    .bind(p.config_hash)
    .bind(p.digest)
    .bind(p.summary)
    .bind(p.brake)
    .bind(p.kind)
    .execute(&mut **tx)
    .await
    .map_err(q("writing the plan"))?;
    Ok(())
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
