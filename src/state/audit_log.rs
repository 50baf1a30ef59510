//! The `audit` table: hash-chained, pseudonymous records, appended in the
//! caller's transaction (the same as the journal step or hold change they
//! describe), and read back in chain order. `audit` verifies the chain.

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use super::{StateError, StateStore, q};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record before it is chained.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub plan_id: String,
    pub policy: Option<String>,
    pub basis: Option<String>,
    /// `delete-entity`, `delete-object`, …
    pub action: &'static str,
    pub entity_type: Option<String>,
    pub pseudonym: String,
    pub bytes: Option<i64>,
    /// Who made the change (holds); None for deletions, which a plan makes.
    pub author: Option<String>,
    /// The length of a hold's reason, in characters (never its text).
    pub reason_chars: Option<i64>,
    /// `redact-object`: what went, as JSON (records removed, bytes before
    /// and after, the pseudonyms of the entities whose records went).
    pub detail: Option<String>,
}

/// The actions whose records `verify` matches with the journal, one record
/// per item the journal says lethe deleted.
pub const DELETE_ENTITY: &str = "delete-entity";
pub const DELETE_OBJECT: &str = "delete-object";
/// A legal hold put on (`hold add`) or lifted (`hold rm`).
pub const HOLD_ADD: &str = "hold-add";
pub const HOLD_RM: &str = "hold-rm";
/// A shared object rewritten without the records of deleted entities.
pub const REDACT_OBJECT: &str = "redact-object";
/// An identifier lifted from the suppression list (renewed consent); its
/// pseudonym is the identifier's keyed hash.
pub const SUPPRESSION_RM: &str = "suppression-rm";
/// A subject's access export (Art. 15/20) was written: the request's id as
/// the pseudonym, counts and bytes in `detail`.
pub const ACCESS_EXPORT: &str = "access-export";

#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    pub seq: i64,
    pub plan_id: String,
    pub policy: Option<String>,
    pub basis: Option<String>,
    pub action: String,
    pub entity_type: Option<String>,
    pub pseudonym: String,
    pub bytes: Option<i64>,
    pub at: String,
    pub prev: String,
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_chars: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub fn record_hash(r: &Record) -> String {
    let mut h = Sha256::new();
    let mut fields = vec![
        r.seq.to_string(),
        r.plan_id.clone(),
        r.policy.clone().unwrap_or_default(),
        r.basis.clone().unwrap_or_default(),
        r.action.clone(),
        r.entity_type.clone().unwrap_or_default(),
        r.pseudonym.clone(),
        r.bytes.map(|b| b.to_string()).unwrap_or_default(),
        r.at.clone(),
        r.prev.clone(),
    ];
    // Fields added later are hashed only when present, so the records
    // written before them keep their hashes.
    if r.author.is_some() || r.reason_chars.is_some() {
        fields.push(r.author.clone().unwrap_or_default());
        fields.push(r.reason_chars.map(|n| n.to_string()).unwrap_or_default());
    }
    if let Some(d) = &r.detail {
        fields.push(d.clone());
    }
    for f in fields {
        // Length-prefixed so that no two field lists hash alike.
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends records inside the caller's transaction; returns the new head.
pub async fn append(
    tx: &mut Transaction<'_, Any>,
    records: Vec<NewRecord>,
) -> Result<Option<String>, StateError> {
    if records.is_empty() {
        return Ok(None);
    }
    // One appender at a time: several workers may share the chain.
    super::serialize_audit(tx).await?;
    let head = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(q("reading the audit head"))?;
    let (mut seq, mut prev) = match head {
        Some(r) => (r.get::<i64, _>(0), r.get::<String, _>(1)),
        None => (0, GENESIS.to_string()),
    };
    let at = jiff::Timestamp::now().to_string();
    let mut chained = Vec::with_capacity(records.len());
    for n in records {
        seq += 1;
        let mut r = Record {
            seq,
            plan_id: n.plan_id,
            policy: n.policy,
            basis: n.basis,
            action: n.action.to_string(),
            entity_type: n.entity_type,
            pseudonym: n.pseudonym,
            bytes: n.bytes,
            at: at.clone(),
            prev: prev.clone(),
            hash: String::new(),
            author: n.author,
            reason_chars: n.reason_chars,
            detail: n.detail,
        };
        r.hash = record_hash(&r);
        prev = r.hash.clone();
        chained.push(r);
    }
    // Many rows per statement: the audit is written on apply's hot path.
    // The records move into the statements (no copy of their strings).
    const ROWS: usize = 200;
    let statement = super::RowsSql::new(
        super::is_sqlite(tx),
        "INSERT INTO audit(seq, plan_id, policy, basis, action, entity_type, pseudonym, bytes, at, prev, hash, author, reason_chars, detail) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        1,
        "",
        ROWS,
    );
    let mut rest = chained.into_iter();
    loop {
        let chunk: Vec<Record> = rest.by_ref().take(ROWS).collect();
        if chunk.is_empty() {
            break;
        }
        let mut query = sqlx::query(statement.rows(chunk.len()));
        for r in chunk {
            query = query
                .bind(r.seq)
                .bind(r.plan_id)
                .bind(r.policy)
                .bind(r.basis)
                .bind(r.action)
                .bind(r.entity_type)
                .bind(r.pseudonym)
                .bind(r.bytes)
                .bind(r.at)
                .bind(r.prev)
                .bind(r.hash)
                .bind(r.author)
                .bind(r.reason_chars)
                .bind(r.detail);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("appending to the audit log"))?;
    }
    sqlx::query("INSERT INTO meta(k, v) VALUES ('audit.head', $1) ON CONFLICT(k) DO UPDATE SET v = excluded.v")
        .bind(format!("{seq}:{prev}"))
        .execute(&mut **tx)
        .await
        .map_err(q("updating the audit head"))?;
    Ok(Some(prev))
}

fn row_record(r: &sqlx::any::AnyRow) -> Record {
    Record {
        seq: r.get(0),
        plan_id: r.get(1),
        policy: r.get(2),
        basis: r.get(3),
        action: r.get(4),
        entity_type: r.get(5),
        pseudonym: r.get(6),
        bytes: r.get(7),
        at: r.get(8),
        prev: r.get(9),
        hash: r.get(10),
        author: r.get(11),
        reason_chars: r.get(12),
        detail: r.get(13),
    }
}

const SELECT: &str = "SELECT seq, plan_id, policy, basis, action, entity_type, pseudonym, bytes, at, prev, hash, author, reason_chars, detail FROM audit";

/// Streams every record in chain order.
pub async fn for_each(
    state: &StateStore,
    sink: &mut (dyn FnMut(Record) + Send),
) -> Result<(), StateError> {
    use futures::TryStreamExt;
    let mut rows =
        sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY seq"))).fetch(state.pool());
    while let Some(r) = rows.try_next().await.map_err(q("reading the audit log"))? {
        sink(row_record(&r));
    }
    Ok(())
}

pub async fn lookup(state: &StateStore, pseudonym: &str) -> Result<Vec<Record>, StateError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE pseudonym = $1 ORDER BY seq"
    )))
    .bind(pseudonym)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the audit log"))?;
    Ok(rows.iter().map(row_record).collect())
}

/// How many audit records name plan `plan_id`.
pub async fn count_of_plan(state: &super::StateStore, plan_id: &str) -> Result<u64, StateError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE plan_id = $1")
        .bind(plan_id.to_string())
        .fetch_one(state.pool())
        .await
        .map_err(q("reading the audit log"))?;
    Ok(n.max(0) as u64)
}
