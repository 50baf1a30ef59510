//! `/v1/plans`: the stored plans, one plan with its digest, and its
//! approval (which starts the apply).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, App, AppState, ErrorBody};
use crate::plan;
use crate::serve::runner::Work;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PlanListItem {
    id: String,
    created_at: String,
    as_of: String,
    /// planned, applying, applied or partial
    status: String,
}

/// The stored plans, oldest first.
#[utoipa::path(get, path = "/v1/plans", tag = "plans",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Plans", body = Vec<PlanListItem>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn plans_list(State(app): State<AppState>) -> ApiResult<Json<Vec<PlanListItem>>> {
    Ok(Json(
        plan::list(&app.runner.state)
            .await?
            .into_iter()
            .map(|p| PlanListItem {
                id: p.id,
                created_at: p.created_at,
                as_of: p.as_of,
                status: p.status.to_string(),
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PlanView {
    id: String,
    /// planned, applying, applied or partial
    status: String,
    /// The plan's hash: approving the plan means sending it back as `confirm`.
    digest: String,
    /// Why the mass-delete brake holds this plan (empty: it does not).
    brake: Vec<String>,
    /// Counts: what goes, what stays and why.
    #[schema(value_type = Object)]
    summary: serde_json::Value,
}

async fn load_plan(app: &App, id: &str) -> ApiResult<plan::StoredPlan> {
    match plan::load(&app.runner.state, Some(id)).await {
        Ok(p) => Ok(p),
        Err(crate::state::StateError::NoSuchPlan(_)) => Err(ApiError::not_found(
            "no such plan; GET /v1/plans lists them",
        )),
        Err(e) => Err(e.into()),
    }
}

/// One stored plan, with the digest to approve it by.
#[utoipa::path(get, path = "/v1/plans/{id}", tag = "plans",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A plan id")),
    responses(
        (status = 200, description = "The plan", body = PlanView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such plan", body = ErrorBody),
    ))]
pub(super) async fn plan_show(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<PlanView>> {
    let Path(id) = id?;
    let p = load_plan(&app, &id).await?;
    Ok(Json(PlanView {
        id: p.id,
        status: p.status.to_string(),
        digest: p.summary.digest.clone(),
        brake: p.brake,
        summary: serde_json::to_value(&p.summary).map_err(anyhow::Error::from)?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Approval {
    /// The plan's digest, as `GET /v1/plans/{id}` shows it.
    confirm: String,
    /// Apply even though the mass-delete brake holds the plan.
    #[serde(default)]
    allow_mass_delete: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Started {
    /// The run's id: `GET /v1/sweeps/{run}` follows it.
    pub(super) run: i64,
}

/// Approve a plan and apply it (in the background).
#[utoipa::path(post, path = "/v1/plans/{id}/apply", tag = "plans",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A plan id")),
    request_body = Approval,
    responses(
        (status = 202, description = "Applying; follow the run", body = Started),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the admin scope", body = ErrorBody),
        (status = 404, description = "No such plan", body = ErrorBody),
        (status = 409, description = "Already applied, held by the brake, or a run is in progress", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "confirm is not the plan's digest", body = ErrorBody),
    ))]
pub(super) async fn plan_apply(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<Approval>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let Path(id) = id?;
    let Json(a) = body?;
    let p = load_plan(&app, &id).await?;
    if p.status == plan::PlanStatus::Applied {
        return Err(ApiError::conflict("the plan is applied already"));
    }
    if a.confirm != p.summary.digest {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirm is not this plan's digest; GET /v1/plans/{id} shows it",
        ));
    }
    if !p.brake.is_empty() && !a.allow_mass_delete {
        return Err(ApiError::conflict(format!(
            "the mass-delete brake holds this plan: {}; send allow_mass_delete = true after review",
            p.brake.join("; ")
        )));
    }
    let run = app
        .runner
        .start(
            Work::Apply {
                plan_id: p.id,
                allow_mass_delete: a.allow_mass_delete,
            },
            "approval",
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Started { run })))
}
