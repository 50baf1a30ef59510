//! `/v1/requests` and `/v1/suppression/check`: subject requests (erase,
//! access) received and tracked to their deadline, the access export
//! downloaded, and the suppression list asked at ingest time. Identifier
//! values come in request bodies and go nowhere but into the CRM's query
//! and the keyed hash; answers name kinds, pseudonyms and counts.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, ErrorBody};
use crate::request::{self, RequestError, Subject};
use crate::state::requests::{Request, RequestKind};

/// At most this many identifiers in one suppression check.
pub const MAX_CHECK: usize = 1000;

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        match e {
            RequestError::Usage(m) => ApiError::unprocessable(m),
            other => ApiError::from(anyhow::Error::new(other)),
        }
    }
}

/// A body that does not fit, said without any value of it: axum's message
/// quotes what serde met (`invalid type: string "…"`, `unknown field
/// `…``), and in these bodies that is an identifier. What stays: where (a
/// path of the endpoint's own `fields`), the kind of misfit, what was
/// expected, the line and column. Other rejections (syntax, size, content
/// type) name no value and pass as they are.
fn quiet(r: JsonRejection, fields: &[&str]) -> ApiError {
    let JsonRejection::JsonDataError(e) = &r else {
        return ApiError::from(r);
    };
    const PREFIX: &str = "Failed to deserialize the JSON body into the target type";
    let text = e.body_text();
    let detail = text
        .strip_prefix(PREFIX)
        .and_then(|t| t.strip_prefix(": "))
        .unwrap_or("");
    // `… at line L column C`, the position serde_json adds.
    let (detail, at) = match detail.rsplit_once(" at line ") {
        Some((d, pos))
            if pos
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            (d, format!(" at line {pos}"))
        }
        _ => (detail, String::new()),
    };
    const KINDS: &[&str] = &[
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "unknown field",
        "missing field",
        "duplicate field",
    ];
    // The path comes first (`subject[0]: invalid type: …`), unless at the
    // top.
    let found = KINDS
        .iter()
        .filter_map(|k| {
            if detail.starts_with(k) {
                Some((0, *k))
            } else {
                detail.find(&format!(": {k}")).map(|i| (i + 2, *k))
            }
        })
        .min();
    let Some((start, kind)) = found else {
        return ApiError::bad_request(format!("{PREFIX}{at}"));
    };
    let path = detail.get(..start.saturating_sub(2)).unwrap_or("");
    let own_path = path.split(['.', '[', ']']).all(|seg| {
        seg.is_empty() || fields.contains(&seg) || seg.bytes().all(|b| b.is_ascii_digit())
    });
    let path = if !path.is_empty() && own_path {
        format!("{path}: ")
    } else {
        String::new()
    };
    let message = detail.get(start..).unwrap_or("");
    // What was expected is the endpoint's own (serde's last `, expected`).
    let expected = message
        .rsplit_once(", expected ")
        .map(|(_, e)| e)
        .filter(|e| {
            e.len() <= 120
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" `_,".contains(&b))
                && e.split('`').skip(1).step_by(2).all(|n| fields.contains(&n))
        })
        .map(|e| format!(", expected {e}"))
        .unwrap_or_default();
    let what = match kind {
        "missing field" | "duplicate field" => {
            let name = message
                .strip_prefix(kind)
                .map(|n| n.trim().trim_matches('`'))
                .filter(|n| fields.contains(n));
            match name {
                Some(n) => format!("{kind} `{n}`"),
                None => kind.to_string(),
            }
        }
        "unknown field" => format!("unknown field; the fields are {}", fields.join(", ")),
        "invalid length" => {
            let n = message
                .strip_prefix("invalid length ")
                .and_then(|m| m.split(',').next())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            format!("{kind}{n}{expected}")
        }
        _ => format!("{kind}{expected}"),
    };
    ApiError::bad_request(format!(
        "{PREFIX}: {path}{what}{at} (the values given are not repeated)"
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRequest {
    /// erase (Art. 17) or access (Art. 15/20)
    #[schema(example = "erase")]
    kind: String,
    /// Who: `email=ADDRESS`, `phone=NUMBER` or an entity ref (`lead:4711`),
    /// as on the command line; several name one person by all of them.
    #[schema(example = json!(["email=jane@example.com"]))]
    subject: Vec<String>,
    /// The ticket or letter the request came with.
    #[schema(example = "TICKET-4711")]
    reference: String,
    /// The day it was received (YYYY-MM-DD); default today.
    received: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RequestView {
    id: String,
    /// erase or access
    kind: String,
    reference: String,
    received: String,
    /// received + 1 month
    due: String,
    /// Days until due (negative: past).
    days_left: i64,
    /// Past due and not done.
    overdue: bool,
    /// open, planned, done or done-with-kept
    status: String,
    /// The kinds of identifier given (never their values).
    subject_kinds: Vec<String>,
    /// How many entities the subject resolved to.
    entities: u64,
    /// An erasure's plan: review it (`GET /v1/plans/{id}`) and approve it by
    /// its digest (`POST /v1/plans/{id}/apply`).
    plan_id: Option<String>,
    done_at: Option<String>,
    /// Counts only.
    #[schema(value_type = Object)]
    summary: Option<serde_json::Value>,
}

fn view(r: &Request) -> RequestView {
    let (left, overdue) = request::days_left(r, request::today());
    RequestView {
        id: r.id.clone(),
        kind: r.kind.as_str().into(),
        reference: r.reference.clone(),
        received: r.received.clone(),
        due: r.due.clone(),
        days_left: left,
        overdue,
        status: r.status.as_str().into(),
        subject_kinds: r
            .subject
            .identifiers
            .iter()
            .map(|h| h.kind.clone())
            .collect(),
        entities: r.entities.len() as u64,
        plan_id: r.plan_id.clone(),
        done_at: r.done_at.clone(),
        summary: r.summary.clone(),
    }
}

/// Receive a subject request.
///
/// erase: finds the subject's entities, plans their erasure (no retention
/// period; what a keep_if or a hold keeps stays, with its reason) and
/// searches the store for files that name the subject without a link;
/// answers with the request and its plan, which waits for approval like
/// any plan. access: resolves the subject and records the request; the
/// export is `GET /v1/requests/{id}/export`.
#[utoipa::path(post, path = "/v1/requests", tag = "requests",
    security(("bearer" = [])),
    request_body = NewRequest,
    responses(
        (status = 201, description = "Received (and, for erase, planned)", body = RequestView),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the operate scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not a subject, reference or date lethe can use", body = ErrorBody),
    ))]
pub(super) async fn requests_create(
    State(app): State<AppState>,
    body: Result<Json<NewRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RequestView>)> {
    let Json(b) = body.map_err(|r| quiet(r, &["kind", "subject", "reference", "received"]))?;
    let kind = RequestKind::parse(&b.kind)
        .ok_or_else(|| ApiError::unprocessable("kind is erase or access"))?;
    let subject = Subject::parse(&b.subject)?;
    request::check_reference(&b.reference)?;
    let received = match b.received.as_deref() {
        None => request::today(),
        Some(d) => d
            .trim()
            .parse::<jiff::civil::Date>()
            .map_err(|_| ApiError::unprocessable("received is a date: YYYY-MM-DD"))?,
    };
    let config = app.runner.config.as_ref();
    let state = &app.runner.state;
    let crm = crate::crm::connect(config)
        .await
        .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    let r = match kind {
        RequestKind::Erase => {
            let outcome = request::erase(
                config,
                crm.as_ref(),
                app.store.as_ref(),
                state,
                request::Asked {
                    subject: &subject,
                    reference: &b.reference,
                    received,
                },
                &|_, _, _| {},
            )
            .await?;
            outcome.request
        }
        RequestKind::Access => {
            request::record_access(
                config,
                crm.as_ref(),
                state,
                &subject,
                &b.reference,
                received,
            )
            .await?
        }
    };
    Ok((StatusCode::CREATED, Json(view(&r))))
}

/// The requests, newest first, with their deadlines.
#[utoipa::path(get, path = "/v1/requests", tag = "requests",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Requests", body = Vec<RequestView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn requests_list(
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<RequestView>>> {
    let list = crate::state::requests::list(&app.runner.state, 1000).await?;
    Ok(Json(list.iter().map(view).collect()))
}

async fn load(app: &AppState, id: &str) -> ApiResult<Request> {
    crate::state::requests::get(&app.runner.state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such request; GET /v1/requests lists them"))
}

/// One request.
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A request id (R-…)")),
    responses(
        (status = 200, description = "The request", body = RequestView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
    ))]
pub(super) async fn request_show(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<RequestView>> {
    let Path(id) = id?;
    Ok(Json(view(&load(&app, &id).await?)))
}

/// The access export of a request (a zip): the subject's entities, their
/// payload files (from shared files only their records) and a readable
/// summary. The one answer of lethe that holds personal data; the audit
/// records that it was made. An access request is done once exported.
#[utoipa::path(get, path = "/v1/requests/{id}/export", tag = "requests",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A request id (R-…)")),
    responses(
        (status = 200, description = "The zip", content_type = "application/zip", body = Vec<u8>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the admin scope", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
        (status = 422, description = "An entity of the request that the CRM's key type cannot name any more (the configuration changed since it was received)", body = ErrorBody),
    ))]
pub(super) async fn request_export(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let Path(id) = id?;
    let r = load(&app, &id).await?;
    let config = app.runner.config.as_ref();
    let crm = crate::crm::connect(config)
        .await
        .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    let dir = tempfile::tempdir().map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    let out = dir.path().join("export.zip");
    request::export_request(
        config,
        crm.as_ref(),
        app.store.as_ref(),
        &app.runner.state,
        &r,
        &out,
    )
    .await?;
    let file = tokio::fs::File::open(&out)
        .await
        .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    // The folder goes when the answer has been sent (the open file keeps
    // its bytes on Unix until then).
    drop(dir);
    let stream = futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/zip".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.zip\"", r.id),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SuppressionQuery {
    /// `email=ADDRESS` or `phone=NUMBER`, at most 1,000.
    #[schema(example = json!(["email=jane@example.com"]))]
    subject: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SuppressionAnswer {
    /// In the order given, by kind only (never the value).
    #[schema(value_type = Vec<Object>)]
    results: Vec<request::Suppressed>,
}

/// Is this person erased? For integration services at ingest time: each
/// identifier's answer from the suppression list (the keyed hashes of the
/// identifiers of everyone lethe erased).
#[utoipa::path(post, path = "/v1/suppression/check", tag = "requests",
    security(("bearer" = [])),
    request_body = SuppressionQuery,
    responses(
        (status = 200, description = "One answer per identifier, in order", body = SuppressionAnswer),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the operate scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not an identifier, an entity ref, or too many", body = ErrorBody),
    ))]
pub(super) async fn suppression_check(
    State(app): State<AppState>,
    body: Result<Json<SuppressionQuery>, JsonRejection>,
) -> ApiResult<Json<SuppressionAnswer>> {
    let Json(q) = body.map_err(|r| quiet(r, &["subject"]))?;
    if q.subject.len() > MAX_CHECK {
        return Err(ApiError::unprocessable(format!(
            "at most {MAX_CHECK} identifiers at once"
        )));
    }
    let subject = Subject::parse(&q.subject)?;
    if subject
        .parts
        .iter()
        .any(|p| matches!(p, request::SubjectPart::Ref(_)))
    {
        return Err(ApiError::unprocessable(
            "the suppression list holds identifiers (email=…, phone=…), not entity refs",
        ));
    }
    let results =
        request::suppression_check(&app.runner.config, &app.runner.state, &subject).await?;
    Ok(Json(SuppressionAnswer { results }))
}
