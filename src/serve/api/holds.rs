//! `/v1/holds`: legal holds listed, put and lifted; the author is always
//! the token's configured name.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, App, AppState, Caller, ErrorBody};
use crate::audit::pseudonym::Pseudonymizer;
use crate::state::HoldKind;

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HoldBody {
    /// entity, object or prefix
    kind: String,
    /// `type:key`, `object:KEY` or `prefix:PREFIX`
    target: String,
    reason: String,
    author: String,
    created_at: String,
}

/// The legal holds.
#[utoipa::path(get, path = "/v1/holds", tag = "holds",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every hold", body = Vec<HoldBody>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn holds_list(State(app): State<AppState>) -> ApiResult<Json<Vec<HoldBody>>> {
    let holds = app.runner.state.holds().await?;
    Ok(Json(
        holds
            .into_iter()
            .map(|h| HoldBody {
                kind: h.kind.as_str().to_string(),
                target: crate::holds::canonical(h.kind, &h.target),
                reason: h.reason,
                author: h.author,
                created_at: crate::holds::show_instant(&h.created_at),
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewHold {
    /// `type:key`, `object:KEY` or `prefix:PREFIX`
    #[schema(example = "lead:4711")]
    target: String,
    /// Why (a case number, not personal data).
    reason: String,
    /// Who: always the token's configured name; if given, it must be that.
    author: Option<String>,
    /// Hold an entity the CRM does not have (yet); without it such a hold
    /// is refused (422), since it would protect nothing.
    #[serde(default)]
    allow_absent: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct HoldChange {
    target: String,
    /// For add: false when it was on hold already. For remove: true.
    changed: bool,
}

/// Put an entity, an object or a prefix on legal hold.
#[utoipa::path(post, path = "/v1/holds", tag = "holds",
    security(("bearer" = [])),
    request_body = NewHold,
    responses(
        (status = 200, description = "On hold (changed = false: it was already)", body = HoldChange),
        (status = 400, description = "Not a hold target of this config", body = ErrorBody),
        (status = 422, description = "A text too long or with control characters, an author that is not the token's name, or (add) an entity the CRM does not have", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the operate scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub(super) async fn holds_add(
    State(app): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Json<NewHold>, JsonRejection>,
) -> ApiResult<Json<HoldChange>> {
    let Json(h) = body?;
    let author = hold_author(caller, h.author.as_deref())?;
    check_hold_text("target", &h.target, crate::holds::check_target)?;
    check_hold_text("reason", &h.reason, crate::holds::check_reason)?;
    let (kind, target, key) = hold_target(&app, &h.target).await?;
    if let (HoldKind::Entity, Some(key), false) = (kind, &key, h.allow_absent) {
        // One look-up by key, as `lethe hold add` makes (not the graph).
        let config = &app.runner.config;
        let crm = crate::crm::connect(config)
            .await
            .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
        let ty = target.split_once(':').map(|(ty, _)| ty).unwrap_or_default();
        let found = crate::crm::refs::exists(config, crm.as_ref(), ty, key)
            .await
            .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
        if !found {
            return Err(ApiError::unprocessable(format!(
                "target: {target} is not in the CRM; a hold on it protects only the payloads that name it so (send allow_absent: true for an entity not yet created)"
            )));
        }
    }
    let pseudo = Pseudonymizer::new(app.runner.config.audit_key.clone());
    let added = crate::holds::add(
        &app.runner.state,
        &pseudo,
        kind,
        &target,
        &h.reason,
        &author,
    )
    .await?;
    Ok(Json(HoldChange {
        target: crate::holds::canonical(kind, &target),
        changed: added,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetQuery {
    /// `type:key`, `object:KEY` or `prefix:PREFIX`
    pub(super) target: String,
}

/// Lift a legal hold.
#[utoipa::path(delete, path = "/v1/holds", tag = "holds",
    security(("bearer" = [])),
    params(TargetQuery),
    responses(
        (status = 200, description = "Lifted", body = HoldChange),
        (status = 400, description = "Not a hold target of this config", body = ErrorBody),
        (status = 422, description = "A text too long or with control characters, an author that is not the token's name, or (add) an entity the CRM does not have", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the operate scope", body = ErrorBody),
        (status = 404, description = "Not on hold", body = ErrorBody),
    ))]
pub(super) async fn holds_remove(
    State(app): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    query: Result<Query<TargetQuery>, QueryRejection>,
) -> ApiResult<Json<HoldChange>> {
    let Query(q) = query?;
    let author = hold_author(caller, None)?;
    check_hold_text("target", &q.target, crate::holds::check_target)?;
    let (kind, target, _) = hold_target(&app, &q.target).await?;
    let pseudo = Pseudonymizer::new(app.runner.config.audit_key.clone());
    if !crate::holds::remove(&app.runner.state, &pseudo, kind, &target, &author).await? {
        return Err(ApiError::not_found(
            "not on hold; GET /v1/holds lists the holds",
        ));
    }
    Ok(Json(HoldChange {
        target: q.target,
        changed: true,
    }))
}

async fn hold_target(
    app: &App,
    text: &str,
) -> Result<(HoldKind, String, Option<crate::model::EntityKey>), ApiError> {
    // Only an entity ref needs the CRM's key columns (a file can be held
    // while the CRM is down).
    let kinds = if text.starts_with("object:") || text.starts_with("prefix:") {
        crate::crm::refs::KeyKinds::default()
    } else {
        app.runner.key_kinds().await?
    };
    crate::holds::parse_target(&app.runner.config, &kinds, text)
        .map_err(|m| ApiError::bad_request(format!("target: {m}")))
}

/// A hold's text within its bounds and printable, or 422 naming the field.
fn check_hold_text(
    field: &str,
    text: &str,
    check: fn(&str) -> Result<(), crate::holds::TextError>,
) -> Result<(), ApiError> {
    check(text)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{field}: {e}")))
}

/// The author of a hold change is the token's configured name; an `author`
/// in the body may only repeat it.
fn hold_author(
    caller: Option<axum::Extension<Caller>>,
    given: Option<&str>,
) -> Result<String, ApiError> {
    let Some(axum::Extension(Caller(name, _))) = caller else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized"));
    };
    if given.is_some_and(|g| g != name) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "author: the author of a hold is the token's configured name; leave author out",
        ));
    }
    Ok(name)
}
