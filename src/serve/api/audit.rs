//! `/v1/audit/verify` and `/v1/audit/lookup`: the audit chain checked, and
//! one entity's or object's records found by pseudonym.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use super::holds::TargetQuery;
use super::{ApiError, ApiResult, AppState, ErrorBody};
use crate::audit::{self, pseudonym::Pseudonymizer};

/// Check the audit chain (and its agreement with the journal).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "records, head, and problems (empty when intact)", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn audit_verify(
    State(app): State<AppState>,
) -> ApiResult<Json<audit::Verification>> {
    let pseudo = Pseudonymizer::new(app.runner.config.audit_key.clone());
    Ok(Json(audit::verify(&app.runner.state, &pseudo).await?))
}

/// The audit records of one entity or object, found by its pseudonym.
#[utoipa::path(get, path = "/v1/audit/lookup", tag = "audit",
    security(("bearer" = [])),
    params(TargetQuery),
    responses(
        (status = 200, description = "The pseudonym and its records (none: lethe has not deleted it)", body = Object),
        (status = 400, description = "Not an entity ref or object:KEY", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn audit_lookup(
    State(app): State<AppState>,
    query: Result<Query<TargetQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query?;
    let pseudo = Pseudonymizer::new(app.runner.config.audit_key.clone());
    let p = if let Some(k) = q.target.strip_prefix("object:") {
        pseudo.object(k)
    } else {
        let r = crate::model::EntityRef::parse(&q.target)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        pseudo.entity(&r.entity_type, &r.key)
    };
    let records = audit::lookup(&app.runner.state, &p).await?;
    Ok(Json(
        serde_json::json!({ "target": q.target, "pseudonym": p, "records": records }),
    ))
}
