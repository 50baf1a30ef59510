//! The `requests` table: subject requests (erase, access) from receipt to
//! done, with their deadline. What identifies the subject is kept as keyed
//! hashes of the identifiers given (never the values) and the entity refs
//! they resolved to (keys live in the state store).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{StateError, StateStore, q};

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// Art. 17: erase.
    Erase,
    /// Art. 15 / 20: a copy of the data.
    Access,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Erase => "erase",
            RequestKind::Access => "access",
        }
    }

    pub fn parse(s: &str) -> Option<RequestKind> {
        match s {
            "erase" => Some(RequestKind::Erase),
            "access" => Some(RequestKind::Access),
            _ => None,
        }
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestStatus {
    /// Received; nothing planned or made yet.
    Open,
    /// An erasure whose plan is stored and waits to be applied.
    Planned,
    /// Erased (all of it) or exported.
    Done,
    /// Erased, but some of the subject's data is kept on a legal basis
    /// (a `keep_if`, a hold): listed with the plan.
    DoneWithKept,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Open => "open",
            RequestStatus::Planned => "planned",
            RequestStatus::Done => "done",
            RequestStatus::DoneWithKept => "done-with-kept",
        }
    }

    pub fn parse(s: &str) -> Option<RequestStatus> {
        match s {
            "open" => Some(RequestStatus::Open),
            "planned" => Some(RequestStatus::Planned),
            "done" => Some(RequestStatus::Done),
            "done-with-kept" => Some(RequestStatus::DoneWithKept),
            _ => None,
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, RequestStatus::Done | RequestStatus::DoneWithKept)
    }
}

/// One identifier given for the subject: its kind and keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectHash {
    pub kind: String,
    pub hash: String,
}

/// How a request names its subject, as stored: no identifier value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubject {
    #[serde(default)]
    pub identifiers: Vec<SubjectHash>,
    /// Entity refs given directly (`lead:4711`).
    #[serde(default)]
    pub refs: Vec<String>,
}

/// A request as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub kind: RequestKind,
    pub reference: String,
    pub received: String,
    pub due: String,
    pub created_at: String,
    pub subject: StoredSubject,
    /// The entity refs the subject resolved to (the state store is where
    /// keys live; reports show them by pseudonym).
    pub entities: Vec<String>,
    pub plan_id: Option<String>,
    pub status: RequestStatus,
    pub done_at: Option<String>,
    /// Counts only.
    pub summary: Option<serde_json::Value>,
}

/// Stores a new request.
pub async fn insert(state: &StateStore, r: &Request) -> Result<(), StateError> {
    let subject = serde_json::to_string(&r.subject)
        .map_err(|e| StateError::Corrupt(format!("request subject: {e}")))?;
    let entities = serde_json::to_string(&r.entities)
        .map_err(|e| StateError::Corrupt(format!("request entities: {e}")))?;
    sqlx::query(
        "INSERT INTO requests(id, kind, reference, received, due, created_at, subject, entities,
                              plan_id, status, done_at, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(r.id.clone())
    .bind(r.kind.as_str())
    .bind(r.reference.clone())
    .bind(r.received.clone())
    .bind(r.due.clone())
    .bind(r.created_at.clone())
    .bind(subject)
    .bind(entities)
    .bind(r.plan_id.clone())
    .bind(r.status.as_str())
    .bind(r.done_at.clone())
    .bind(r.summary.as_ref().map(|s| s.to_string()))
    .execute(state.pool())
    .await
    .map_err(q("recording the request"))?;
    Ok(())
}

/// Sets a request's status (and its done time and summary, when given).
pub async fn set_status(
    state: &StateStore,
    id: &str,
    status: RequestStatus,
    done_at: Option<&str>,
    summary: Option<&serde_json::Value>,
) -> Result<(), StateError> {
    sqlx::query(
        "UPDATE requests SET status = $1, done_at = coalesce($2, done_at),
                             summary = coalesce($3, summary)
         WHERE id = $4",
    )
    .bind(status.as_str())
    .bind(done_at.map(str::to_string))
    .bind(summary.map(|s| s.to_string()))
    .bind(id.to_string())
    .execute(state.pool())
    .await
    .map_err(q("recording the request"))?;
    Ok(())
}

const COLUMNS: &str = "id, kind, reference, received, due, created_at, subject, entities, plan_id, status, done_at, summary";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Request, StateError> {
    let kind: String = r.get(1);
    let status: String = r.get(9);
    let subject: String = r.get(6);
    let entities: Option<String> = r.get(7);
    let summary: Option<String> = r.get(11);
    let corrupt =
        |what: &str| StateError::Corrupt(format!("request {}: {what}", r.get::<String, _>(0)));
    Ok(Request {
        id: r.get(0),
        kind: RequestKind::parse(&kind).ok_or_else(|| corrupt("unknown kind"))?,
        reference: r.get(2),
        received: r.get(3),
        due: r.get(4),
        created_at: r.get(5),
        subject: serde_json::from_str(&subject).map_err(|_| corrupt("subject not readable"))?,
        entities: match entities {
            Some(e) => serde_json::from_str(&e).map_err(|_| corrupt("entities not readable"))?,
            None => Vec::new(),
        },
        plan_id: r.get(8),
        status: RequestStatus::parse(&status).ok_or_else(|| corrupt("unknown status"))?,
        done_at: r.get(10),
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

/// One request by id.
pub async fn get(state: &StateStore, id: &str) -> Result<Option<Request>, StateError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(state.pool())
    .await
    .map_err(q("reading requests"))?;
    row.as_ref().map(from_row).transpose()
}

/// The request a plan was made for, if any.
pub async fn of_plan(state: &StateStore, plan_id: &str) -> Result<Option<Request>, StateError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE plan_id = $1"
    )))
    .bind(plan_id.to_string())
    .fetch_optional(state.pool())
    .await
    .map_err(q("reading requests"))?;
    row.as_ref().map(from_row).transpose()
}

/// Requests, newest first, at most `limit`.
pub async fn list(state: &StateStore, limit: i64) -> Result<Vec<Request>, StateError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests ORDER BY created_at DESC, id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading requests"))?;
    rows.iter().map(from_row).collect()
}

/// How many requests are not done and past their due date (`today`:
/// YYYY-MM-DD).
pub async fn overdue_count(state: &StateStore, today: &str) -> Result<u64, StateError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests WHERE status NOT IN ('done', 'done-with-kept') AND due < $1",
    )
    .bind(today.to_string())
    .fetch_one(state.pool())
    .await
    .map_err(q("reading requests"))?;
    Ok(n.max(0) as u64)
}

/// Requests not done: (past due, all), as of `today` (YYYY-MM-DD).
pub async fn open_counts(state: &StateStore, today: &str) -> Result<(u64, u64), StateError> {
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests WHERE status NOT IN ('done', 'done-with-kept')",
    )
    .fetch_one(state.pool())
    .await
    .map_err(q("reading requests"))?;
    Ok((overdue_count(state, today).await?, open.max(0) as u64))
}
