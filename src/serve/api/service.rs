//! `/healthz`, `/readyz` and `/metrics`: the service's own endpoints.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, ErrorBody};
use crate::serve::metrics;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
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
pub(super) async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
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
    let state = match tokio::time::timeout(limit, app.runner.state.ping()).await {
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
pub(super) async fn metrics_text(State(app): State<AppState>) -> Response {
    // Deadlines move with the clock: counted when scraped.
    let today = crate::request::today().to_string();
    if let Ok((overdue, open)) =
        crate::state::requests::open_counts(&app.runner.state, &today).await
    {
        metrics::requests(overdue, open);
    }
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
