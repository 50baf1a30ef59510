//! `/v1/audit/verify`, `/v1/audit/lookup` and `/v1/audit/export`: the
//! audit chain checked, one entity's or object's records found by
//! pseudonym, and every record as CSV or JSON lines.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use serde::Deserialize;
use utoipa::IntoParams;

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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportQuery {
    /// csv or jsonl (default jsonl)
    pub(super) format: Option<String>,
}

/// Every audit record in chain order, as CSV (cells that could start a
/// spreadsheet formula are quoted) or JSON lines, as `lethe audit export`
/// writes them.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    security(("bearer" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "The records", content(
            (String = "text/csv"),
            (String = "application/jsonl"),
        )),
        (status = 400, description = "Not csv or jsonl", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn audit_export(
    State(app): State<AppState>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> ApiResult<axum::response::Response> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let Query(q) = query?;
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::bad_request("format is csv or jsonl")),
    };
    let mut records = Vec::new();
    audit::for_each(&app.runner.state, &mut |r| records.push(r)).await?;
    let (body, content_type, name) = if csv {
        (
            format!("{}{}", audit::CSV_HEADER, audit::csv_rows(&records)?),
            "text/csv; charset=utf-8",
            "lethe-audit.csv",
        )
    } else {
        (
            audit::jsonl(&records)?,
            "application/jsonl",
            "lethe-audit.jsonl",
        )
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}
