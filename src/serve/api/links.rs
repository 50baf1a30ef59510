//! `POST /v1/links` and `/v1/links/batch`: links registered at ingest time.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, App, AppState, ErrorBody, MAX_BATCH};
use crate::index::register::{self, Registered, Registration};
use crate::serve::metrics;

/// One payload object and the entities it belongs to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRegistration {
    /// The object's key, relative to the technical store's root; a folder
    /// store also takes its absolute path or `file://` URL inside the root.
    #[schema(example = "inbound/2026/11/lead-4711.json")]
    pub object: String,
    /// Entity refs, `type:key`.
    #[schema(example = json!(["lead:4711"]))]
    pub entities: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBatch {
    /// Up to 10,000 registrations, stored in one transaction.
    pub links: Vec<LinkRegistration>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RegisteredBody {
    /// Links not registered before.
    new: u64,
    /// Links registered already (repeating a call is harmless).
    existing: u64,
    /// New links whose object is already indexed; the others count once
    /// `lethe index` reads the object.
    indexed: u64,
}

impl From<Registered> for RegisteredBody {
    fn from(r: Registered) -> Self {
        RegisteredBody {
            new: r.new,
            existing: r.existing,
            indexed: r.indexed,
        }
    }
}

fn validate_registration(
    app: &App,
    kinds: &crate::crm::refs::KeyKinds,
    at: &str,
    l: &LinkRegistration,
) -> Result<Registration, ApiError> {
    let object = app.store.key_of(&l.object).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{at}object: not an object of this technical store; write its key relative to the store's root (no `..`, no empty segment, no NUL), or for a folder store its absolute path or file:// URL inside the root"
        ))
    })?;
    if l.entities.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{at}entities: empty; name at least one entity ref such as lead:4711"
        )));
    }
    let mut entities = Vec::with_capacity(l.entities.len());
    for (j, e) in l.entities.iter().enumerate() {
        let (r, _) = kinds
            .parse(&app.runner.config, e)
            .map_err(|m| ApiError::bad_request(format!("{at}entities[{j}]: {m}")))?;
        entities.push((r.entity_type, r.key));
    }
    Ok(Registration { object, entities })
}

/// Register the entities one payload object belongs to.
#[utoipa::path(post, path = "/v1/links", tag = "links",
    security(("bearer" = [])),
    request_body = LinkRegistration,
    responses(
        (status = 200, description = "Registered", body = RegisteredBody),
        (status = 400, description = "Invalid key or entity ref", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the operate scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub(super) async fn links_register(
    State(app): State<AppState>,
    body: Result<Json<LinkRegistration>, JsonRejection>,
) -> ApiResult<Json<RegisteredBody>> {
    let Json(l) = body?;
    let kinds = app.runner.key_kinds().await?;
    let r = validate_registration(&app, &kinds, "", &l)?;
    let done =
        register::register(&app.runner.state, &[r], &crate::serve::runner::now_text()).await?;
    metrics::links_registered(done.new);
    Ok(Json(done.into()))
}

/// Register many objects at once (up to 10,000), in one transaction: all or none.
#[utoipa::path(post, path = "/v1/links/batch", tag = "links",
    security(("bearer" = [])),
    request_body = LinkBatch,
    responses(
        (status = 200, description = "Registered", body = RegisteredBody),
        (status = 400, description = "An invalid key or entity ref (named by position); nothing was registered", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the operate scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub(super) async fn links_register_batch(
    State(app): State<AppState>,
    body: Result<Json<LinkBatch>, JsonRejection>,
) -> ApiResult<Json<RegisteredBody>> {
    let Json(batch) = body?;
    if batch.links.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} registrations; send at most {MAX_BATCH} per batch",
            batch.links.len()
        )));
    }
    let kinds = app.runner.key_kinds().await?;
    let regs = batch
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| validate_registration(&app, &kinds, &format!("links[{i}]."), l))
        .collect::<Result<Vec<_>, _>>()?;
    let done =
        register::register(&app.runner.state, &regs, &crate::serve::runner::now_text()).await?;
    metrics::links_registered(done.new);
    Ok(Json(done.into()))
}
