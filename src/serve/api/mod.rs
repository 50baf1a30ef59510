//! The HTTP API: routes, handlers, bearer-token scopes, and the OpenAPI
//! description served at `/openapi.json`. Every endpoint but `/healthz` and
//! `/readyz` needs a token; a missing or unknown token gets 401, a token
//! without the scope 403, neither with detail. Request logs name the route
//! template, never the path (an entity ref in a path is the user's data).
//! This file holds the shared parts (state, errors, auth, router, OpenAPI);
//! the handlers are in one file per resource.

mod audit;
mod entities;
mod holds;
mod links;
mod plans;
mod requests;
mod service;
mod sweeps;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::{OpenApi, ToSchema};

use super::metrics;
use super::runner::{Busy, Runner, SweepRow};
use crate::config::{ApiToken, Scope};
use crate::store::TechnicalStore;

// The handlers (and the `__path_*` items the OpenAPI derive reads beside
// them), in scope here for the router and `ApiDoc`.
use audit::*;
use entities::*;
use holds::*;
use links::*;
use plans::*;
use requests::*;
use service::*;
use sweeps::*;

pub use links::{LinkBatch, LinkRegistration};

/// At most this many objects in one batch registration.
pub const MAX_BATCH: usize = 10_000;

pub struct App {
    pub runner: Arc<Runner>,
    pub store: Box<dyn TechnicalStore>,
    pub tokens: Vec<ApiToken>,
    /// The dashboard's sessions and its last check of the audit chain.
    pub ui: ui::Dashboard,
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
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/requests", get(requests_list))
        .route("/v1/requests/{id}", get(request_show))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Read),
            require,
        ));
    let operate = axum::Router::new()
        .route("/v1/links", post(links_register))
        .route("/v1/links/batch", post(links_register_batch))
        .route("/v1/holds", post(holds_add).delete(holds_remove))
        .route("/v1/sweeps", post(sweeps_trigger))
        .route("/v1/requests", post(requests_create))
        .route("/v1/suppression/check", post(suppression_check))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Operate),
            require,
        ));
    let admin = axum::Router::new()
        .route("/v1/plans/{id}/apply", post(plan_apply))
        .route("/v1/requests/{id}/export", get(request_export))
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
        .merge(ui::router(app.clone()))
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
        audit_verify, audit_lookup, audit_export,
        requests_create, requests_list, request_show, request_export, suppression_check,
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
