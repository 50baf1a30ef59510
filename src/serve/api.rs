//! The HTTP API: routes, handlers, bearer-token scopes, and the OpenAPI
//! description served at `/openapi.json`. Every endpoint but `/healthz` and
//! `/readyz` needs a token; a missing or unknown token gets 401, a token
//! without the scope 403, neither with detail. Request logs name the route
//! template, never the path (an entity ref in a path is the user's data).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::metrics;
use super::runner::{Busy, Runner, SweepRow, Work};
use super::schedule::Mode;
use crate::audit::{self, pseudonym::Pseudonymizer};
use crate::config::{ApiToken, Scope};
use crate::index::register::{self, Registered, Registration};
use crate::plan;
use crate::state::HoldKind;
use crate::store::TechnicalStore;

/// At most this many objects in one batch registration.
pub const MAX_BATCH: usize = 10_000;

pub struct App {
    pub runner: Arc<Runner>,
    pub store: Box<dyn TechnicalStore>,
    pub tokens: Vec<ApiToken>,
}

type AppState = Arc<App>;

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, message)
    }
    fn unprocessable(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if e.downcast_ref::<Busy>().is_some() {
            return ApiError::conflict(e.to_string());
        }
        // Library errors name no keys and no payload content.
        tracing::error!(error = %format!("{e:#}"), "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<crate::state::StateError> for ApiError {
    fn from(e: crate::state::StateError) -> ApiError {
        ApiError::from(anyhow::Error::new(e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------- auth

async fn require(
    State((app, need)): State<(AppState, Scope)>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let token = presented.and_then(|t| known_token(&app.tokens, t));
    match token {
        None => {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Some(t) if t.scope < need => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden").into_response()
        }
        Some(t) => {
            let caller = Caller(t.name.clone(), t.scope);
            let mut req = req;
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    }
}

/// The token of an `Authorization` value; the scheme is case-insensitive
/// (RFC 9110 11.1), so `bearer x` is as good as `Bearer x`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The configured token whose digest is the presented token's. Every
/// digest is compared, each in constant time, so the answer's timing says
/// nothing about how much of a digest matched.
fn known_token<'a>(tokens: &'a [ApiToken], presented: &str) -> Option<&'a ApiToken> {
    use subtle::ConstantTimeEq;
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for k in tokens {
        if bool::from(k.sha256.ct_eq(&digest)) {
            found = Some(k);
        }
    }
    found
}

/// The name and scope of the token a request came with.
#[derive(Clone, Debug)]
struct Caller(String, Scope);

async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    metrics::http_request(&route, response.status().as_u16());
    response
}

// ---------------------------------------------------------------- router

pub fn router(app: AppState, body_limit: usize, timeout: Duration) -> axum::Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::TraceLayer;
    // The recorder first, so that nothing counted before /metrics is lost.
    metrics::handle();

    let read = axum::Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_text))
        .route("/v1/entities/{entity}/explain", get(explain))
        .route("/v1/holds", get(holds_list))
        .route("/v1/plans", get(plans_list))
        .route("/v1/plans/{id}", get(plan_show))
        .route("/v1/sweeps", get(sweeps_list))
        .route("/v1/sweeps/{id}", get(sweep_show))
        .route("/v1/schedule", get(schedule_show))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/lookup", get(audit_lookup))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Read),
            require,
        ));
    let operate = axum::Router::new()
        .route("/v1/links", post(links_register))
        .route("/v1/links/batch", post(links_register_batch))
        .route("/v1/holds", post(holds_add).delete(holds_remove))
        .route("/v1/sweeps", post(sweeps_trigger))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Operate),
            require,
        ));
    let admin = axum::Router::new()
        .route("/v1/plans/{id}/apply", post(plan_apply))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Admin),
            require,
        ));
    let open = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));

    let trace = TraceLayer::new_for_http()
        .on_request(())
        .on_response(
            tower_http::trace::DefaultOnResponse::new()
                .level(tracing::Level::INFO)
                .latency_unit(tower_http::LatencyUnit::Micros),
        )
        .make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "unmatched".into());
            tracing::info_span!("request", request_id = %id, method = %req.method(), route = %route)
        });

    // Routes are merged so that a path served under two scopes (GET and
    // POST /v1/holds) answers both methods.
    read.merge(operate)
        .merge(admin)
        .merge(open)
        .fallback(|| async {
            ApiError::not_found("no such endpoint; GET /openapi.json lists them")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(app)
        .layer(middleware::from_fn(count_requests))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

// ---------------------------------------------------------------- OpenAPI

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lethe",
        description = "GDPR retention and erasure for CRM data and the technical data behind it. \
            Bearer tokens carry a scope: read < operate < admin.",
    ),
    paths(
        healthz, readyz, metrics_text, openapi_json,
        links_register, links_register_batch, explain,
        holds_list, holds_add, holds_remove,
        plans_list, plan_show, plan_apply,
        sweeps_list, sweep_show, sweeps_trigger, schedule_show,
        audit_verify, audit_lookup,
    ),
    components(schemas(ErrorBody, SweepRow)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI description of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OpenAPI 3.1 document", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

// ---------------------------------------------------------------- health

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    ready: bool,
    crm: String,
    store: String,
    state: String,
}

/// Readiness: the CRM, the technical store and the state store answer.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A backend does not answer", body = Readiness),
    ))]
async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let config = app.runner.config.clone();
    let limit = Duration::from_secs(5);
    let crm = tokio::time::timeout(limit, async {
        let c = crate::crm::connect(&config).await?;
        crate::crm::fit::fit(&config, c.as_ref()).await
    })
    .await;
    let crm = match crm {
        Ok(Ok(fit)) if fit.problems.is_empty() => "ok".to_string(),
        // Counts only: the problems name tables and columns of the config,
        // which `lethe check` prints in full.
        Ok(Ok(fit)) => format!(
            "the config does not fit the CRM ({} problems; run `lethe check`)",
            fit.problems.len()
        ),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "timed out".into(),
    };
    let store = match tokio::time::timeout(limit, app.store.check()).await {
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "timed out".into(),
    };
    let state = match tokio::time::timeout(
        limit,
        sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(app.runner.state.pool()),
    )
    .await
    {
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "timed out".into(),
    };
    let ready = crm == "ok" && store == "ok" && state == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            crm,
            store,
            state,
        }),
    )
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "service",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Metrics", body = String, content_type = "text/plain"),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn metrics_text() -> Response {
    match metrics::handle() {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            "# another metrics recorder was installed first\n".to_string(),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------- links

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
struct RegisteredBody {
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
async fn links_register(
    State(app): State<AppState>,
    body: Result<Json<LinkRegistration>, JsonRejection>,
) -> ApiResult<Json<RegisteredBody>> {
    let Json(l) = body?;
    let kinds = app.runner.key_kinds().await?;
    let r = validate_registration(&app, &kinds, "", &l)?;
    let done = register::register(&app.runner.state, &[r], &super::runner::now_text()).await?;
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
async fn links_register_batch(
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
    let done = register::register(&app.runner.state, &regs, &super::runner::now_text()).await?;
    metrics::links_registered(done.new);
    Ok(Json(done.into()))
}

// ---------------------------------------------------------------- explain

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct AsOfQuery {
    /// Judge as of this instant (RFC 3339 or a date) instead of now.
    as_of: Option<String>,
}

/// Why an entity is kept, or when it becomes due.
///
/// Answers from the CRM graph as loaded at most a minute ago (sooner after
/// a run or a change of holds).
#[utoipa::path(get, path = "/v1/entities/{entity}/explain", tag = "entities",
    security(("bearer" = [])),
    params(("entity" = String, Path, description = "An entity ref, type:key", example = "lead:4711"), AsOfQuery),
    responses(
        (status = 200, description = "The entity's cases and their verdicts", body = Object),
        (status = 400, description = "Not an entity ref of this config, or a bad as_of", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn explain(
    State(app): State<AppState>,
    entity: Result<Path<String>, PathRejection>,
    query: Result<Query<AsOfQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(entity) = entity?;
    let Query(q) = query?;
    let kinds = app.runner.key_kinds().await?;
    let (r, _) = kinds
        .parse(&app.runner.config, &entity)
        .map_err(ApiError::bad_request)?;
    let loaded = app.runner.world().await?;
    let world = &loaded.world;
    let entity = r.to_string();
    let Some(id) = world.graph.resolve_named(&r.entity_type, &r.key) else {
        return Ok(Json(
            serde_json::json!({ "entity": entity, "exists": false }),
        ));
    };
    // Now: the evaluation made when the graph was loaded. Another instant:
    // evaluated for this request (the whole graph: slower).
    let (at, fresh) = match q.as_of.as_deref() {
        None => (loaded.as_of, None),
        Some(t) => {
            let at = parse_as_of(Some(t))?.as_second();
            (
                at,
                Some(crate::evaluate::evaluate(&world.graph, &world.policies, at)),
            )
        }
    };
    let eval = fresh.as_ref().unwrap_or(&loaded.eval);
    let cases = crate::evaluate::cases_containing(&world.graph, &world.policies, id, at);
    Ok(Json(crate::plan::explain::explain_json(
        &entity,
        world,
        &cases,
        eval.is_deleted(id),
    )))
}

fn parse_as_of(text: Option<&str>) -> Result<jiff::Timestamp, ApiError> {
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

// ---------------------------------------------------------------- holds

#[derive(Debug, Serialize, ToSchema)]
struct HoldBody {
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
async fn holds_list(State(app): State<AppState>) -> ApiResult<Json<Vec<HoldBody>>> {
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
struct NewHold {
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
struct HoldChange {
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
async fn holds_add(
    State(app): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Json<NewHold>, JsonRejection>,
) -> ApiResult<Json<HoldChange>> {
    let Json(h) = body?;
    let author = hold_author(caller, h.author.as_deref())?;
    check_hold_text("target", &h.target, crate::holds::check_target)?;
    check_hold_text("reason", &h.reason, crate::holds::check_reason)?;
    let (kind, target) = hold_target(&app, &h.target).await?;
    if kind == HoldKind::Entity && !h.allow_absent {
        let loaded = app.runner.world().await?;
        let (ty, key) = target.split_once(':').unwrap_or_default();
        if loaded.world.graph.resolve_named(ty, key).is_none() {
            return Err(ApiError::unprocessable(format!(
                "target: {target} is not in the CRM; a hold on it protects nothing (send allow_absent: true for an entity not yet created)"
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
    app.runner.forget_world().await;
    Ok(Json(HoldChange {
        target: crate::holds::canonical(kind, &target),
        changed: added,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct TargetQuery {
    /// `type:key`, `object:KEY` or `prefix:PREFIX`
    target: String,
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
async fn holds_remove(
    State(app): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    query: Result<Query<TargetQuery>, QueryRejection>,
) -> ApiResult<Json<HoldChange>> {
    let Query(q) = query?;
    let author = hold_author(caller, None)?;
    check_hold_text("target", &q.target, crate::holds::check_target)?;
    let (kind, target) = hold_target(&app, &q.target).await?;
    let pseudo = Pseudonymizer::new(app.runner.config.audit_key.clone());
    if !crate::holds::remove(&app.runner.state, &pseudo, kind, &target, &author).await? {
        return Err(ApiError::not_found(
            "not on hold; GET /v1/holds lists the holds",
        ));
    }
    app.runner.forget_world().await;
    Ok(Json(HoldChange {
        target: q.target,
        changed: true,
    }))
}

async fn hold_target(app: &App, text: &str) -> Result<(HoldKind, String), ApiError> {
    // Only an entity ref needs the CRM's key columns (a file can be held
    // while the CRM is down).
    let kinds = if text.starts_with("object:") || text.starts_with("prefix:") {
        crate::crm::refs::KeyKinds::default()
    } else {
        app.runner.key_kinds().await?
    };
    crate::holds::parse_target(&app.runner.config, &kinds, text)
        .map(|(kind, target, _)| (kind, target))
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

// ---------------------------------------------------------------- plans

#[derive(Debug, Serialize, ToSchema)]
struct PlanListItem {
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
async fn plans_list(State(app): State<AppState>) -> ApiResult<Json<Vec<PlanListItem>>> {
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
struct PlanView {
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
async fn plan_show(
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
struct Approval {
    /// The plan's digest, as `GET /v1/plans/{id}` shows it.
    confirm: String,
    /// Apply even though the mass-delete brake holds the plan.
    #[serde(default)]
    allow_mass_delete: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct Started {
    /// The run's id: `GET /v1/sweeps/{run}` follows it.
    run: i64,
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
async fn plan_apply(
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

// ---------------------------------------------------------------- sweeps

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
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
async fn sweeps_list(
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
async fn sweep_show(
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
struct Trigger {
    /// sweep (index, plan, apply: needs the admin scope) or plan (index and
    /// plan; the plan waits for approval). Default: the schedule's mode.
    mode: Option<TriggerMode>,
    /// Judge as of this instant instead of now.
    as_of: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum TriggerMode {
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
async fn sweeps_trigger(
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
struct ScheduleView {
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
async fn schedule_show(State(app): State<AppState>) -> ApiResult<Json<ScheduleView>> {
    use super::schedule::Job;
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

// ---------------------------------------------------------------- audit

/// Check the audit chain (and its agreement with the journal).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "records, head, and problems (empty when intact)", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn audit_verify(State(app): State<AppState>) -> ApiResult<Json<audit::Verification>> {
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
async fn audit_lookup(
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
