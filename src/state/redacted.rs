//! What a redaction writes to the state store: the intent (the digest of
//! the content about to replace the object, so that a resumed apply knows
//! its own rewrite), and, in the journal's transaction, the object's new
//! index entry — its new size, date and etag, and the links of the records
//! that stayed (CSV row numbers shift), replacing those of its content
//! rules.

use super::index::Link;
use sqlx::Row;

use super::{StateError, StateStore, parse_json_rows, q};
use crate::store::{Expected, ObjectMeta};

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// Journals the intent to rewrite item `item` with content of this digest
/// (hex SHA-256), in the caller's transaction, which commits before the
/// store is asked.
pub async fn intend(
    tx: &mut sqlx::AnyConnection,
    plan_id: &str,
    item: u64,
    digest: &str,
) -> Result<(), StateError> {
    sqlx::query("UPDATE plan_objects SET new_digest = $1 WHERE plan_id = $2 AND item = $3")
        .bind(digest.to_string())
        .bind(plan_id.to_string())
        .bind(item as i64)
        .execute(&mut *tx)
        .await
        .map_err(q("journaling a redaction"))?;
    Ok(())
}

/// The digest a previous run of item `item` meant to write, if any.
pub async fn intended(
    state: &StateStore,
    plan_id: &str,
    item: u64,
) -> Result<Option<String>, StateError> {
    let d: Option<Option<String>> =
        sqlx::query_scalar("SELECT new_digest FROM plan_objects WHERE plan_id = $1 AND item = $2")
            .bind(plan_id)
            .bind(item as i64)
            .fetch_optional(state.pool())
            .await
            .map_err(q("reading the journal"))?;
    Ok(d.flatten())
}

/// Replaces the index entry of a rewritten object, in the caller's
/// transaction: its size, date and etag as the store shows them now, and
/// the links of `content_rules` by `links` (the other rules' links — path,
/// metadata, CRM column, registered — do not depend on the content).
pub async fn replace_entry(
    tx: &mut Tx<'_>,
    meta: &ObjectMeta,
    content_rules: &[usize],
    links: Vec<Link>,
) -> Result<(), StateError> {
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM objects WHERE key = $1")
        .bind(meta.key.clone())
        .fetch_optional(&mut **tx)
        .await
        .map_err(q("updating the index"))?;
    let Some(id) = id else {
        // Left the index since (a new index run saw it gone): the next run
        // reads it afresh.
        return Ok(());
    };
    sqlx::query("UPDATE objects SET size = $1, modified = $2, etag = $3 WHERE id = $4")
        .bind(meta.size as i64)
        .bind(meta.modified)
        .bind(meta.etag.clone())
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(q("updating the index"))?;
    let sqlite = super::is_sqlite(tx);
    if !content_rules.is_empty() {
        let sql = format!(
            "DELETE FROM links WHERE object_id = $1 AND rule IN ({})",
            super::params(content_rules.len(), "?", 2)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql)).bind(id);
        for r in content_rules {
            query = query.bind(*r as i64);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("updating the index"))?;
    }
    super::index::insert_links_packed(tx, sqlite, id, links).await?;
    Ok(())
}

/// What the index holds of `key`: what the last index run saw of it (the
/// rewrite's expectation) and every link, with rule and record; `None`
/// when it left the index. One statement, its links packed into one JSON
/// text (row by row, the hand-over from the database driver's thread
/// costs more than the query: see `StateStore::json_rows`). Memory: the
/// links of this one object.
pub async fn entry_of(
    state: &StateStore,
    key: &str,
) -> Result<Option<(Expected, Vec<Link>)>, StateError> {
    let sql = format!(
        "SELECT o.size, o.modified, o.etag,
                (SELECT {} FROM links l WHERE l.object_id = o.id)
         FROM objects o WHERE o.key = $1",
        state.json_rows("l.entity_type, l.entity_key, l.rule, l.location, l.record")
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(state.pool())
        .await
        .map_err(q("reading the index"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let expected = Expected {
        size: row.get::<i64, _>(0).max(0) as u64,
        modified: row.get(1),
        etag: row.get(2),
    };
    let text: Option<String> = row.get(3);
    let rows: Vec<super::index::PackedLink> = match text {
        Some(t) => parse_json_rows(&t, "reading the index")?,
        None => Vec::new(),
    };
    let links = rows
        .into_iter()
        .map(|(entity_type, entity_key, rule, location, record)| Link {
            entity_type,
            entity_key,
            // (Registered links have no rule of the config: a number none has.)
            rule: usize::try_from(rule).unwrap_or(usize::MAX),
            location,
            record,
        })
        .collect();
    Ok(Some((expected, links)))
}
