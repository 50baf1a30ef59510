//! `GET /v1/entities/{entity}/explain`: why an entity is kept, or when it
//! becomes due.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiResult, AppState, ErrorBody};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct AsOfQuery {
    /// Judge as of this instant (RFC 3339 or a date) instead of now.
    as_of: Option<String>,
}

/// Why an entity is kept, or when it becomes due.
///
/// Reads the entity's part of the CRM graph (its connected component) on
/// each request: current, and as fast at a million leads as at ten.
#[utoipa::path(get, path = "/v1/entities/{entity}/explain", tag = "entities",
    security(("bearer" = [])),
    params(("entity" = String, Path, description = "An entity ref, type:key", example = "lead:4711"), AsOfQuery),
    responses(
        (status = 200, description = "The entity's cases and their verdicts", body = Object),
        (status = 400, description = "Not an entity ref of this config, or a bad as_of", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn explain(
    State(app): State<AppState>,
    entity: Result<Path<String>, PathRejection>,
    query: Result<Query<AsOfQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(entity) = entity?;
    let Query(q) = query?;
    let kinds = app.runner.key_kinds().await?;
    let (r, key) = kinds
        .parse(&app.runner.config, &entity)
        .map_err(ApiError::bad_request)?;
    let at = parse_as_of(q.as_of.as_deref())?.as_second();
    let config = &app.runner.config;
    let crm = crate::crm::connect(config)
        .await
        .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    let found = crate::plan::load_component(
        config,
        crm.as_ref(),
        &app.runner.state,
        &r.entity_type,
        &key,
    )
    .await
    .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    let entity = r.to_string();
    let Some((world, id)) = found else {
        return Ok(Json(
            serde_json::json!({ "entity": entity, "exists": false }),
        ));
    };
    let world = &world;
    let eval = crate::evaluate::evaluate(&world.graph, &world.policies, at);
    let cases = crate::evaluate::cases_containing(&world.graph, &world.policies, id, at);
    let mut doc = crate::plan::explain::explain_json(&entity, world, &cases, eval.is_deleted(id));
    let pair = (r.entity_type.clone(), r.key.clone());
    let entries = crate::state::index::entries_linking(
        &app.runner.state,
        std::slice::from_ref(&pair),
        &kinds.uuid_types(),
    )
    .await
    .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    let pseudo = crate::audit::pseudonym::Pseudonymizer::new(app.runner.config.audit_key.clone());
    crate::plan::explain::add_objects(&mut doc, &pair, &entries, &pseudo);
    Ok(Json(doc))
}

pub(super) fn parse_as_of(text: Option<&str>) -> Result<jiff::Timestamp, ApiError> {
    match text {
        None => Ok(
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                .unwrap_or_else(|_| jiff::Timestamp::now()),
        ),
        Some(t) => {
            crate::model::parse_as_of(t).map_err(|e| ApiError::bad_request(format!("as_of: {e}")))
        }
    }
}
