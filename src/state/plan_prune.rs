//! `lethe plan prune`: old plans deleted with their items, never one in
//! progress, the latest or the brake's baseline; each remembered in
//! `pruned_plans`. Re-exported by `plans`.

use serde::Serialize;
use sqlx::Row;

use super::{StateError, StateStore, q};

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
        "SELECT id FROM plans WHERE kind IS NULL AND (brake IS NULL OR status IN ('applied', 'partial')) ORDER BY seq DESC LIMIT 1",
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
