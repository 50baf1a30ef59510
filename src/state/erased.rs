//! The `erased_identifiers` table: what is left of an erased person's
//! identifiers — the keyed hash of each normalised value (never the
//! value), the kind, and the pseudonym of the entity it identified. Written
//! in the transaction that journals the entity's deletion (a resumed apply
//! still verifies); read by the residual scan of verify, and, later, as the
//! suppression list.
//!
//! An apply writes them to `erased_staged` first, in the order it reads
//! them (pending, then confirmed by the journal step), and moves the
//! confirmed ones into `erased_identifiers` sorted by hash ([`flush`]) at
//! the end of its CRM phase: inserted one batch at a time, the two indexes
//! by hash took a random page per identifier (47 of the 71 s of the CRM
//! phase at 1M leads). Every reader here flushes first, so a crashed or
//! running apply's confirmed identifiers are never missed.

use sqlx::Row;

use super::{StateError, StateStore, q};

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// One erased identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasedIdentifier {
    /// Hex HMAC-SHA256(audit key, kind ‖ 0 ‖ normalised value).
    pub hash: String,
    /// `email` or `phone`.
    pub kind: String,
    /// The entity's pseudonym (as in the audit log).
    pub entity: String,
    /// The normalised value's length in bytes (for a phone: its digits).
    pub len: Option<u64>,
}

/// Records identifiers erased by `plan_id`, in the caller's transaction
/// (the journal step of their case), staged; one already recorded (a
/// resumed batch, the same value twice, a pending row) is kept once when
/// they are flushed.
pub async fn record(
    tx: &mut Tx<'_>,
    plan_id: &str,
    at: &str,
    rows: &[ErasedIdentifier],
) -> Result<(), StateError> {
    let rows: Vec<(Option<u64>, &ErasedIdentifier)> = rows.iter().map(|r| (None, r)).collect();
    insert(tx, plan_id, at, &rows).await
}

/// Records the identifiers of case `case_id`'s planned rows, read before
/// the CRM deletes them, as pending: the case's journal step confirms them
/// (`confirm`) or, when the case was not deleted, drops them (`drop_pending`).
/// A crash between the CRM's commit and the journal's loses none: the
/// resumed batch confirms what it finds deleted.
pub async fn record_pending(
    state: &StateStore,
    plan_id: &str,
    at: &str,
    rows: &[(u64, ErasedIdentifier)],
) -> Result<(), StateError> {
    let mut tx = state
        .begin_write()
        .await
        .map_err(q("recording erased identifiers"))?;
    let rows: Vec<(Option<u64>, &ErasedIdentifier)> =
        rows.iter().map(|(c, r)| (Some(*c), r)).collect();
    insert(&mut tx, plan_id, at, &rows).await?;
    tx.commit().await.map_err(q("recording erased identifiers"))
}

/// Stages identifiers, each pending for its case (`Some`) or erased
/// (`None`), many rows per statement whatever their cases: a statement per
/// case cost a hand-over to the database's thread per case, which made
/// recording a batch's identifiers most of the CRM phase (4.8 of 6.2 s at
/// 100,000 leads).
async fn insert(
    conn: &mut sqlx::AnyConnection,
    plan_id: &str,
    at: &str,
    rows: &[(Option<u64>, &ErasedIdentifier)],
) -> Result<(), StateError> {
    const ROWS: usize = 500;
    let sqlite = super::is_sqlite(conn);
    for chunk in rows.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO erased_staged(hash, kind, entity, plan_id, erased_at, case_id, pending, len) VALUES {}",
            super::params(chunk.len(), "(?, ?, ?, ?, ?, ?, ?, ?)", 1)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql));
        for (case, r) in chunk {
            query = query
                .bind(r.hash.clone())
                .bind(r.kind.clone())
                .bind(r.entity.clone())
                .bind(plan_id)
                .bind(at)
                .bind(case.map(|c| c as i64))
                .bind(i64::from(case.is_some()))
                .bind(r.len.map(|n| n as i64));
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(q("recording erased identifiers"))?;
    }
    Ok(())
}

/// The journal step of cases that were deleted: their pending identifiers
/// are erased ones now.
pub async fn confirm(tx: &mut Tx<'_>, plan_id: &str, cases: &[i64]) -> Result<(), StateError> {
    by_cases(
        tx,
        "UPDATE {table} SET pending = 0 WHERE pending = 1 AND plan_id = $1 AND case_id IN ({in})",
        plan_id,
        cases,
    )
    .await
}

/// `statement` (with `{table}` and `{in}`, `$1` the plan) for `cases`, on
/// the staged identifiers and on `erased_identifiers` (where an apply by a
/// lethe before staging left its pending rows).
async fn by_cases(
    conn: &mut sqlx::AnyConnection,
    statement: &str,
    plan_id: &str,
    cases: &[i64],
) -> Result<(), StateError> {
    for table in ["erased_staged", "erased_identifiers"] {
        super::exec_in(
            conn,
            &statement.replace("{table}", table),
            &[plan_id],
            cases,
        )
        .await?;
    }
    Ok(())
}

/// Cases that were not deleted (skipped, failed): their pending identifiers
/// go (the person was not erased).
pub async fn drop_pending(
    conn: &mut sqlx::AnyConnection,
    plan_id: &str,
    cases: &[i64],
) -> Result<(), StateError> {
    by_cases(
        conn,
        "DELETE FROM {table} WHERE pending = 1 AND plan_id = $1 AND case_id IN ({in})",
        plan_id,
        cases,
    )
    .await
}

/// Moves the confirmed staged identifiers (of `plan_id`, or of every
/// plan) into `erased_identifiers`, sorted by hash, in one transaction;
/// an identifier already there is kept once. Returns how many staged rows
/// moved. A no-op (one index probe) when none are staged.
pub async fn flush(state: &StateStore, plan_id: Option<&str>) -> Result<u64, StateError> {
    let filter = match plan_id {
        Some(_) => "pending = 0 AND plan_id = $1",
        None => "pending = 0",
    };
    let bind = |sql: String| {
        let query = sqlx::query(super::sql(state.is_sqlite(), sql));
        match plan_id {
            Some(p) => query.bind(p.to_string()),
            None => query,
        }
    };
    let staged = bind(format!(
        "SELECT 1 FROM erased_staged WHERE {filter} LIMIT 1"
    ))
    .fetch_optional(state.pool())
    .await
    .map_err(q("reading erased identifiers"))?;
    if staged.is_none() {
        return Ok(0);
    }
    const COLUMNS: &str = "hash, kind, entity, plan_id, erased_at, case_id, pending, len";
    const MOVED: &str = "hash, kind, entity, plan_id, erased_at, case_id, 0, len";
    let mut tx = state
        .begin_write()
        .await
        .map_err(q("recording erased identifiers"))?;
    let moved = if state.is_sqlite() {
        // One writer: nothing is staged between the two statements.
        bind(format!(
            "INSERT INTO erased_identifiers({COLUMNS})
             SELECT {MOVED} FROM erased_staged WHERE {filter} ORDER BY hash, entity
             ON CONFLICT DO NOTHING"
        ))
        .execute(&mut *tx)
        .await
        .map_err(q("recording erased identifiers"))?;
        // When nothing else is staged, the whole table is emptied: SQLite
        // then drops its pages at once instead of deleting row by row (at
        // 1M leads 0.1 s instead of 1 s).
        let others = bind(format!(
            "SELECT 1 FROM erased_staged WHERE pending = 1
             UNION ALL SELECT 1 FROM erased_staged WHERE NOT ({filter}) AND pending = 0
             LIMIT 1"
        ))
        .fetch_optional(&mut *tx)
        .await
        .map_err(q("recording erased identifiers"))?;
        let delete = if others.is_none() {
            sqlx::query("DELETE FROM erased_staged")
        } else {
            bind(format!("DELETE FROM erased_staged WHERE {filter}"))
        };
        delete
            .execute(&mut *tx)
            .await
            .map_err(q("recording erased identifiers"))?
            .rows_affected()
    } else {
        // Another worker may confirm rows meanwhile: exactly the rows
        // deleted are the rows inserted.
        let moved: Option<i64> = bind(format!(
            "WITH moved AS (DELETE FROM erased_staged WHERE {filter} RETURNING {COLUMNS}),
             ins AS (INSERT INTO erased_identifiers({COLUMNS})
                     SELECT {MOVED} FROM moved ORDER BY hash, entity
                     ON CONFLICT DO NOTHING)
             SELECT count(*) FROM moved"
        ))
        .fetch_one(&mut *tx)
        .await
        .map_err(q("recording erased identifiers"))?
        .try_get(0)
        .map_err(q("recording erased identifiers"))?;
        moved.map_or(0, |n| n as u64)
    };
    tx.commit()
        .await
        .map_err(q("recording erased identifiers"))?;
    Ok(moved)
}

/// A page of [`of_plan`]: a range of the index `(plan_id, hash, entity)`.
const PAGE_OF_PLAN: &str = "SELECT hash, kind, entity, len FROM erased_identifiers
     WHERE plan_id = $1 AND pending = 0 AND (hash > $2 OR (hash = $2 AND entity > $3))
     ORDER BY hash, entity LIMIT $4";

/// [`PAGE_OF_PLAN`] folded into one JSON text.
fn page_of_plan(state: &StateStore) -> String {
    format!(
        "SELECT {} FROM ({PAGE_OF_PLAN}) AS p",
        state.json_rows("p.hash, p.kind, p.entity, p.len")
    )
}

/// The identifiers `plan_id` erased, `page` at a time after `after` (a
/// hash and entity; keyset order). The first page flushes the plan's
/// staged ones. A page crosses from the database's thread as one JSON text
/// (row by row, 650,000 identifiers at 1M leads cost seconds of hand-over
/// alone: see [`StateStore::json_rows`]), and is put in keyset order here,
/// whatever order the aggregate kept.
pub async fn of_plan(
    state: &StateStore,
    plan_id: &str,
    after: Option<(&str, &str)>,
    page: i64,
) -> Result<Vec<ErasedIdentifier>, StateError> {
    if after.is_none() {
        flush(state, Some(plan_id)).await?;
    }
    let (h, e) = after.unwrap_or(("", ""));
    let text: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(page_of_plan(state)))
        .bind(plan_id)
        .bind(h)
        .bind(e)
        .bind(page)
        .fetch_one(state.pool())
        .await
        .map_err(q("reading erased identifiers"))?;
    let mut rows: Vec<(String, String, String, Option<i64>)> = match text {
        Some(t) => super::parse_json_rows(&t, "reading erased identifiers")?,
        None => Vec::new(),
    };
    rows.sort_unstable_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    Ok(rows
        .into_iter()
        .map(|(hash, kind, entity, len)| ErasedIdentifier {
            hash,
            kind,
            entity,
            len: len.and_then(|n| u64::try_from(n).ok()),
        })
        .collect())
}

/// The planned entities of `cases` of the types in `types`, with their keys
/// typed as the plan stored them: whose identifiers to read before the CRM
/// deletes them.
pub async fn planned_keys(
    state: &StateStore,
    plan_id: &str,
    cases: &[u64],
    types: &[&str],
) -> Result<Vec<(u64, String, crate::model::EntityKey)>, StateError> {
    let mut out = Vec::new();
    if types.is_empty() {
        return Ok(out);
    }
    for chunk in cases.chunks(400) {
        let sql = format!(
            "SELECT case_id, entity_type, entity_key, key_kind FROM plan_entities
             WHERE plan_id = $1 AND case_id IN ({})",
            super::params(chunk.len(), "?", 2)
        );
        let mut query =
            sqlx::query_as::<_, (i64, String, String, String)>(super::sql(state.is_sqlite(), sql))
                .bind(plan_id);
        for c in chunk {
            query = query.bind(*c as i64);
        }
        for (case, ty, key, kind) in query
            .fetch_all(state.pool())
            .await
            .map_err(q("reading the plan"))?
        {
            if !types.contains(&ty.as_str()) {
                continue;
            }
            if let Some(k) = crate::model::EntityKey::from_stored(&kind, &key) {
                out.push((case as u64, ty, k));
            }
        }
    }
    Ok(out)
}

/// The suppression list: which of `hashes` (hex keyed hashes of normalised
/// identifiers) belong to an erased person (an erasure lethe journaled;
/// pending rows do not count).
pub async fn suppressed(
    state: &StateStore,
    hashes: &[String],
) -> Result<std::collections::HashSet<String>, StateError> {
    let mut out = std::collections::HashSet::new();
    if hashes.is_empty() {
        return Ok(out);
    }
    flush(state, None).await?;
    for chunk in hashes.chunks(400) {
        let sql = format!(
            "SELECT DISTINCT hash FROM erased_identifiers WHERE pending = 0 AND hash IN ({})",
            super::params(chunk.len(), "?", 1)
        );
        let mut query = sqlx::query_scalar::<_, String>(super::sql(state.is_sqlite(), sql));
        for h in chunk {
            query = query.bind(h.clone());
        }
        out.extend(
            query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the suppression list"))?,
        );
    }
    Ok(out)
}

/// Every hash on the suppression list, `page` at a time after `after`
/// (keyset order), with its kind and normalised length. The first page
/// (`after` empty) flushes the staged ones.
pub async fn suppression_page(
    state: &StateStore,
    after: &str,
    page: i64,
) -> Result<Vec<(String, String, Option<u64>)>, StateError> {
    if after.is_empty() {
        flush(state, None).await?;
    }
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT hash, min(kind), min(len) FROM erased_identifiers
         WHERE pending = 0 AND hash > $1 GROUP BY hash ORDER BY hash LIMIT $2",
    )
    .bind(after.to_string())
    .bind(page)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the suppression list"))?;
    Ok(rows
        .into_iter()
        .map(|(h, k, l)| (h, k, l.and_then(|n| u64::try_from(n).ok())))
        .collect())
}

/// Lifts `hash` from the suppression list (renewed consent), in the
/// caller's transaction: its rows go, staged or not. Returns how many went
/// (0: it was not on the list).
pub async fn lift(conn: &mut sqlx::AnyConnection, hash: &str) -> Result<u64, StateError> {
    let mut n = 0;
    for table in ["erased_identifiers", "erased_staged"] {
        n += sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE hash = $1 AND pending = 0"
        )))
        .bind(hash.to_string())
        .execute(&mut *conn)
        .await
        .map_err(q("lifting a suppression"))?
        .rows_affected();
    }
    Ok(n)
}

/// Takes `hashes` off plan `plan_id`'s erased identifiers (an entity that
/// stays still carries them), staged ones flushed first; returns how many
/// rows went.
pub async fn release(
    state: &StateStore,
    plan_id: &str,
    hashes: &[String],
) -> Result<u64, StateError> {
    flush(state, Some(plan_id)).await?;
    let mut tx = state
        .begin_write()
        .await
        .map_err(q("recording erased identifiers"))?;
    let mut n = 0;
    for chunk in hashes.chunks(400) {
        let sql = format!(
            "DELETE FROM erased_identifiers WHERE plan_id = $1 AND pending = 0 AND hash IN ({})",
            super::params(chunk.len(), "?", 2)
        );
        let mut query = sqlx::query(super::sql(state.is_sqlite(), sql)).bind(plan_id.to_string());
        for h in chunk {
            query = query.bind(h.clone());
        }
        n += query
            .execute(&mut *tx)
            .await
            .map_err(q("recording erased identifiers"))?
            .rows_affected();
    }
    tx.commit()
        .await
        .map_err(q("recording erased identifiers"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// Verify reads a plan's identifiers a page at a time after the last
    /// one read: each page must be a range of an index, not a sort of every
    /// identifier of the plan (that made the read quadratic: 19 s at 1M
    /// leads).
    #[tokio::test]
    async fn a_page_of_a_plans_identifiers_is_an_index_range() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open_sqlite(&dir.path().join("s.db"))
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            page_of_plan(&state)
        )))
        .bind("p")
        .bind("a")
        .bind("b")
        .bind(10i64)
        .fetch_all(state.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(3))
        .collect();
        assert!(
            plan.iter()
                .any(|d| d.contains("USING INDEX erased_identifiers_plan_hash")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// Page by page (two rows each, one JSON text each), every identifier
    /// of the plan comes once, in keyset order, with its kind and length;
    /// the same hash for two entities and the other plan's and pending
    /// rows included in the table.
    #[tokio::test]
    async fn pages_of_a_plans_identifiers_cover_it_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open_sqlite(&dir.path().join("s.db"))
            .await
            .unwrap();
        let rows = [
            ("bb", "email", "e2", "p", 0, Some(7)),
            ("aa", "phone", "e1", "p", 0, None),
            ("bb", "email", "e1", "p", 0, Some(7)),
            ("cc", "email", "e3", "q", 0, Some(5)),
            ("dd", "email", "e3", "p", 1, Some(5)),
            ("ee", "phone", "e4", "p", 0, Some(11)),
            ("0f", "email", "e0", "p", 0, Some(3)),
        ];
        for (hash, kind, entity, plan, pending, len) in rows {
            sqlx::query(
                "INSERT INTO erased_identifiers(hash, kind, entity, plan_id, erased_at, pending, len)
                 VALUES ($1, $2, $3, $4, '2026-01-01', $5, $6)",
            )
            .bind(hash)
            .bind(kind)
            .bind(entity)
            .bind(plan)
            .bind(pending)
            .bind(len)
            .execute(state.pool())
            .await
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = of_plan(
                &state,
                "p",
                after.as_ref().map(|(h, e)| (h.as_str(), e.as_str())),
                2,
            )
            .await
            .unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = Some((last.hash.clone(), last.entity.clone()));
            seen.extend(page.into_iter().map(|r| (r.hash, r.entity, r.kind, r.len)));
        }
        let want: Vec<(String, String, String, Option<u64>)> = [
            ("0f", "e0", "email", Some(3)),
            ("aa", "e1", "phone", None),
            ("bb", "e1", "email", Some(7)),
            ("bb", "e2", "email", Some(7)),
            ("ee", "e4", "phone", Some(11)),
        ]
        .into_iter()
        .map(|(h, e, k, l)| (h.into(), e.into(), k.into(), l))
        .collect();
        assert_eq!(seen, want);
    }
}
