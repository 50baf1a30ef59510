//! Stage 6, audit: the hash-chained, pseudonymous record of every deletion.
//! Each record carries HMAC-SHA256(audit key, ref) instead of the ref, and
//! the hash of the record before it; `verify` recomputes the chain and
//! compares its end with the head stored beside it, so an edited, removed or
//! reordered record is found.
//!
//! Architecture invariant: records are appended in the same state-store
//! transaction as the journal step they describe.

pub mod pseudonym;

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::state::{StateError, StateStore, q};

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
}

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
}

fn record_hash(r: &Record) -> String {
    let mut h = Sha256::new();
    let fields = [
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
    crate::state::serialize_audit(tx).await?;
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
        };
        r.hash = record_hash(&r);
        prev = r.hash.clone();
        chained.push(r);
    }
    // Many rows per statement: the audit is written on apply's hot path.
    // The records move into the statements (no copy of their strings).
    const ROWS: usize = 200;
    let statement = crate::state::RowsSql::new(
        crate::state::is_sqlite(tx),
        "INSERT INTO audit(seq, plan_id, policy, basis, action, entity_type, pseudonym, bytes, at, prev, hash) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                .bind(r.hash);
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

#[derive(Debug, Default, serde::Serialize)]
pub struct Verification {
    pub records: u64,
    pub head: Option<String>,
    /// Empty when the chain is intact.
    pub problems: Vec<String>,
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
    }
}

const SELECT: &str = "SELECT seq, plan_id, policy, basis, action, entity_type, pseudonym, bytes, at, prev, hash FROM audit";

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

/// Recomputes the chain; checks it against the stored head and the journal.
pub async fn verify(state: &StateStore) -> Result<Verification, StateError> {
    let mut v = Verification::default();
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 1i64;
    let mut per_plan: std::collections::BTreeMap<String, u64> = Default::default();
    let problems = &mut v.problems;
    let mut count = 0u64;
    for_each(state, &mut |r| {
        count += 1;
        if problems.len() < 20 {
            if r.seq != expect_seq {
                problems.push(format!("record {}: expected sequence number {expect_seq} (a record was removed or reordered)", r.seq));
            }
            if r.prev != prev {
                problems.push(format!("record {}: does not follow the record before it (removed, inserted or reordered)", r.seq));
            }
            if record_hash(&r) != r.hash {
                problems.push(format!("record {}: content does not match its hash (edited)", r.seq));
            }
        }
        *per_plan.entry(r.plan_id.clone()).or_default() += 1;
        expect_seq = r.seq + 1;
        prev = r.hash;
    })
    .await?;
    v.records = count;
    let head = state.meta_get("audit.head").await?;
    match (&head, count) {
        (None, 0) => {}
        (None, _) => v.problems.push("the stored chain head is missing".into()),
        (Some(h), _) => {
            if h != &format!("{}:{prev}", expect_seq - 1) {
                v.problems.push(format!(
                    "the chain ends at record {} but the stored head is {}: records were removed from the end or the head was altered",
                    expect_seq - 1,
                    h.split(':').next().unwrap_or("?")
                ));
            }
        }
    }
    // The journal and the audit agree: one record per item lethe deleted.
    let rows = sqlx::query(
        "SELECT plan_id, CAST(sum(n) AS BIGINT) FROM (
            SELECT plan_id, count(*) AS n FROM plan_entities WHERE status = 'deleted' GROUP BY plan_id
            UNION ALL
            SELECT plan_id, count(*) AS n FROM plan_objects WHERE status = 'deleted' GROUP BY plan_id
         ) AS t GROUP BY plan_id",
    )
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the journal"))?;
    for r in rows {
        let plan: String = r.get(0);
        let journal: i64 = r.get(1);
        let audited = per_plan.get(&plan).copied().unwrap_or(0);
        if audited != journal as u64 {
            v.problems.push(format!(
                "plan {plan}: the journal shows {journal} deleted items but the audit log has {audited} records"
            ));
        }
    }
    v.head = if count > 0 { Some(prev) } else { None };
    Ok(v)
}

/// Neutralises a CSV cell against formula injection.
pub fn csv_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_become_formulas() {
        for evil in ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx"] {
            assert!(csv_cell(evil).starts_with('\''), "{evil:?}");
        }
        assert_eq!(csv_cell("delete-entity"), "delete-entity");
        assert_eq!(csv_cell("GDPR Art. 17"), "GDPR Art. 17");
    }
}
