//! The `sweeps` table: each run of the service (a scheduled sweep, an API
//! trigger, an approval, a resume), from start to outcome.

use super::{StateError, StateStore, q};

/// Runs cut short by a crash: marked interrupted at start.
pub async fn interrupt_running(state: &StateStore, now: &str) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE sweeps SET status = 'interrupted', finished_at = $1 WHERE status = 'running'",
    )
    .bind(now)
    .execute(state.pool())
    .await
    .map_err(q("recording runs"))?;
    Ok(())
}

/// Records a run's start; returns its id.
pub async fn start(
    state: &StateStore,
    trigger: &str,
    mode: &str,
    scheduled_for: Option<String>,
    now: &str,
    plan_id: Option<String>,
) -> Result<i64, StateError> {
    sqlx::query_scalar(
        "INSERT INTO sweeps(trigger, mode, scheduled_for, started_at, status, plan_id)
         VALUES ($1, $2, $3, $4, 'running', $5) RETURNING id",
    )
    .bind(trigger)
    .bind(mode)
    .bind(scheduled_for)
    .bind(now)
    .bind(plan_id)
    .fetch_one(state.pool())
    .await
    .map_err(q("recording the run"))
}

/// Records a run's outcome.
pub async fn finish(
    state: &StateStore,
    id: i64,
    status: &str,
    now: &str,
    plan_id: Option<String>,
    error: Option<&str>,
    summary: Option<String>,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE sweeps SET status = $1, finished_at = $2, plan_id = coalesce($3, plan_id), error = $4, summary = $5
         WHERE id = $6",
    )
    .bind(status)
    .bind(now)
    .bind(plan_id)
    .bind(error)
    .bind(summary)
    .bind(id)
    .execute(state.pool())
    .await
    .map_err(q("recording the end of the run"))?;
    Ok(())
}

/// The runs, newest first.
pub async fn list(state: &StateStore, limit: i64) -> Result<Vec<SweepRow>, StateError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SWEEP_SELECT} ORDER BY id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(state.pool())
    .await
    .map_err(q("listing runs"))?;
    Ok(rows.iter().map(SweepRow::from_row).collect())
}

pub async fn get(state: &StateStore, id: i64) -> Result<Option<SweepRow>, StateError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SWEEP_SELECT} WHERE id = $1")))
        .bind(id)
        .fetch_optional(state.pool())
        .await
        .map_err(q("reading a run"))?;
    Ok(row.as_ref().map(SweepRow::from_row))
}

/// The columns `SweepRow::from_row` reads, in its order.
const SWEEP_SELECT: &str = "SELECT id, trigger, mode, scheduled_for, started_at, finished_at, status, plan_id, error, summary FROM sweeps";

/// One run, as `GET /v1/sweeps` shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SweepRow {
    pub id: i64,
    /// schedule, catch-up, api, approval or resume
    pub trigger: String,
    /// sweep, plan or apply
    pub mode: String,
    /// The schedule tick this run is for.
    pub scheduled_for: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// running, done, partial, failed, awaiting-approval or interrupted
    pub status: String,
    pub plan_id: Option<String>,
    pub error: Option<String>,
    /// Counts from index, plan, apply and verify.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
}

impl SweepRow {
    fn from_row(r: &sqlx::any::AnyRow) -> SweepRow {
        use sqlx::Row;
        let summary: Option<String> = r.get(9);
        SweepRow {
            id: r.get(0),
            trigger: r.get(1),
            mode: r.get(2),
            scheduled_for: r.get(3),
            started_at: r.get(4),
            finished_at: r.get(5),
            status: r.get(6),
            plan_id: r.get(7),
            error: r.get(8),
            summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
        }
    }
}
