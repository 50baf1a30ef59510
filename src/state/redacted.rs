//! What a redaction writes to the state store: the intent (the digest of
//! the content about to replace the object, so that a resumed apply knows
//! its own rewrite), and, in the journal's transaction, the object's new
//! index entry — its new size, date and etag, and the links of the records
//! that stayed (CSV row numbers shift), replacing those of its content
//! rules.

use super::index::Link;
use super::{StateError, StateStore, q};
use crate::store::ObjectMeta;

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// Journals the intent to rewrite item `item` with content of this digest
/// (hex SHA-256): committed before the store is asked.
pub async fn intend(
    state: &StateStore,
    plan_id: &str,
    item: u64,
    digest: &str,
) -> Result<(), StateError> {
    sqlx::query("UPDATE plan_objects SET new_digest = $1 WHERE plan_id = $2 AND item = $3")
        .bind(digest)
        .bind(plan_id)
        .bind(item as i64)
        .execute(state.pool())
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
    links: &[Link],
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
    for chunk in links.chunks(150) {
        let sql = format!(
            "INSERT INTO links(object_id, entity_type, entity_key, rule, location, record) VALUES {}",
            super::params(chunk.len(), "(?, ?, ?, ?, ?, ?)", 1)
        );
        let mut query = sqlx::query(super::sql(sqlite, sql));
        for l in chunk {
            query = query
                .bind(id)
                .bind(l.entity_type.clone())
                .bind(l.entity_key.clone())
                .bind(l.rule as i64)
                .bind(l.location.clone())
                .bind(l.record.clone());
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("updating the index"))?;
    }
    Ok(())
}

/// A link row: type, key, rule, location, record.
type LinkRow = (String, String, i64, Option<String>, Option<String>);

/// The links the index holds for `key`, with their rules and records.
pub async fn links_of(state: &StateStore, key: &str) -> Result<Vec<Link>, StateError> {
    let rows: Vec<LinkRow> = sqlx::query_as(
        "SELECT l.entity_type, l.entity_key, l.rule, l.location, l.record
         FROM objects o JOIN links l ON l.object_id = o.id WHERE o.key = $1",
    )
    .bind(key)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the index"))?;
    Ok(rows
        .into_iter()
        .map(|(entity_type, entity_key, rule, location, record)| Link {
            entity_type,
            entity_key,
            rule: usize::try_from(rule).unwrap_or(usize::MAX),
            location,
            record,
        })
        .collect())
}
