//! `/v1/sweeps` and `/v1/schedule`: the runs, a run started now, and the
//! schedule with its next run.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::entities::parse_as_of;
use super::plans::Started;
use super::{ApiError, ApiResult, AppState, Caller, ErrorBody};
use crate::config::Scope;
use crate::serve::runner::{SweepRow, Work};
use crate::serve::schedule::Mode;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// At most this many, newest first (default 50, at most 1000).
    limit: Option<u32>,
}

/// The runs, newest first.
#[utoipa::path(get, path = "/v1/sweeps", tag = "sweeps",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Runs", body = Vec<SweepRow>),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn sweeps_list(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<SweepRow>>> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(app.runner.sweeps(limit as i64).await?))
}

/// One run: its status, and its counts when it has finished.
#[utoipa::path(get, path = "/v1/sweeps/{id}", tag = "sweeps",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "A run id")),
    responses(
        (status = 200, description = "The run", body = SweepRow),
        (status = 400, description = "Not a run id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ))]
pub(super) async fn sweep_show(
    State(app): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<SweepRow>> {
    let Path(id) = id?;
    app.runner
        .sweep(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such run; GET /v1/sweeps lists them"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Trigger {
    /// sweep (index, plan, apply: needs the admin scope) or plan (index and
    /// plan; the plan waits for approval). Default: the schedule's mode.
    mode: Option<TriggerMode>,
    /// Judge as of this instant instead of now.
    as_of: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum TriggerMode {
    Sweep,
    Plan,
}

/// Start a run now (in the background).
#[utoipa::path(post, path = "/v1/sweeps", tag = "sweeps",
    security(("bearer" = [])),
    request_body = Trigger,
    responses(
        (status = 202, description = "Started; follow the run", body = Started),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "A sweep (which deletes) needs the admin scope", body = ErrorBody),
        (status = 409, description = "A run is in progress", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub(super) async fn sweeps_trigger(
    State(app): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Json<Trigger>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let Json(t) = body?;
    let mode = match t.mode {
        Some(TriggerMode::Sweep) => Mode::Sweep,
        Some(TriggerMode::Plan) => Mode::Plan,
        None => app
            .runner
            .config
            .schedule
            .as_ref()
            .map(|s| s.mode)
            .unwrap_or(Mode::Plan),
    };
    if mode == Mode::Sweep {
        let admin = caller.is_some_and(|c| c.0.1 >= Scope::Admin);
        if !admin {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden"));
        }
    }
    let as_of = match t.as_of.as_deref() {
        None => None,
        Some(s) => Some(parse_as_of(Some(s))?),
    };
    let run = app.runner.start(Work::Sweep { mode, as_of }, "api").await?;
    Ok((StatusCode::ACCEPTED, Json(Started { run })))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ScheduleView {
    /// False when the config has no [schedule].
    configured: bool,
    cron: Option<String>,
    timezone: Option<String>,
    mode: Option<Mode>,
    /// The next run (RFC 3339, UTC), while the scheduler waits for it.
    next_run: Option<String>,
    /// The same, as wall-clock time in the schedule's zone.
    next_run_local: Option<String>,
    /// The last tick run.
    last_tick: Option<String>,
    /// Whether a run is in progress.
    running: bool,
}

/// The schedule and its next run.
#[utoipa::path(get, path = "/v1/schedule", tag = "sweeps",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn schedule_show(State(app): State<AppState>) -> ApiResult<Json<ScheduleView>> {
    use crate::serve::schedule::Job;
    let s = app.runner.config.schedule.as_ref();
    let next = app.runner.next_run();
    Ok(Json(ScheduleView {
        configured: s.is_some(),
        cron: s.map(|s| s.pattern.clone()),
        timezone: s.map(|s| s.timezone.clone()),
        mode: s.map(|s| s.mode),
        next_run: next.map(|t| t.to_string()),
        next_run_local: next.and_then(|t| s.map(|s| s.local(t))),
        last_tick: app.runner.last_tick().await.map(|t| t.to_string()),
        running: app.runner.busy(),
    }))
}
