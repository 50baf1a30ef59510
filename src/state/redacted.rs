//! What a redaction writes to the state store: the intent (the digest of
//! the content about to replace the object, so that a resumed apply knows
//! its own rewrite), and, in the journal's transaction, the object's new
//! index entry — its new size, date and etag, and the links of the records
//! that stayed (CSV row numbers shift), replacing those of its content
//! rules. On SQLite the links of the records that stayed are changed in
//! place (their rows are known by id) and only those of the removed
//! records are deleted: each link row deleted or inserted also changes a
//! page of the entity index (`links_entity`), scattered over the whole
//! index, which is most of what the new entry costs to write.

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

/// The entities a planned object linked when planned (type, key), from
/// the plan's `entities` (`["lead:7", …]`).
pub async fn planned_entities(
    state: &StateStore,
    plan_id: &str,
    item: u64,
) -> Result<Vec<(String, String)>, StateError> {
    let text: Option<Option<String>> =
        sqlx::query_scalar("SELECT entities FROM plan_objects WHERE plan_id = $1 AND item = $2")
            .bind(plan_id)
            .bind(item as i64)
            .fetch_optional(state.pool())
            .await
            .map_err(q("reading the journal"))?;
    let Some(text) = text.flatten() else {
        return Ok(Vec::new());
    };
    entities_of(&text).map_err(|e| StateError::Corrupt(format!("a planned object's entities: {e}")))
}

/// A planned object's `entities` (`["lead:7", …]`) as (type, key).
pub(super) fn entities_of(text: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    let refs: Vec<String> = serde_json::from_str(text)?;
    Ok(refs
        .into_iter()
        .filter_map(|r| {
            let (t, k) = r.split_once(':')?;
            Some((t.to_string(), k.to_string()))
        })
        .collect())
}

/// How the links of a redacted object's content rules can change in place:
/// the index rows (as [`entry_of`] read them) of the links whose records
/// went, and, beside each new link, the row of the kept link that becomes
/// it (same rule, type and key; only location and record change).
#[derive(Clone, Debug, Default)]
pub struct InPlace {
    pub gone: Vec<i64>,
    pub kept: Vec<i64>,
}

/// Replaces the index entry of a rewritten object, in the caller's
/// transaction: its size, date and etag as the store shows them now, and
/// the links of `content_rules` by `links` (the other rules' links — path,
/// metadata, CRM column, registered — do not depend on the content). With
/// `in_place` (SQLite), the rows of the kept links take the new locations
/// and records and the rows of the removed ones go; that is kept only when
/// afterwards the object's links of `content_rules` are exactly `links`
/// (every kept row still there, as read, and no other row of those rules),
/// otherwise (the index changed since it was read) every link of
/// `content_rules` is deleted and `links` inserted, as without it.
pub async fn replace_entry(
    tx: &mut Tx<'_>,
    meta: &ObjectMeta,
    content_rules: &[usize],
    links: Vec<Link>,
    in_place: Option<InPlace>,
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
    if let Some(in_place) = in_place.filter(|p| sqlite && p.kept.len() == links.len())
        && changed_in_place(tx, id, content_rules, &links, &in_place).await?
    {
        return Ok(());
    }
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

/// [`replace_entry`] in place (SQLite): deletes the rows of `in_place.gone`
/// and gives the rows of `in_place.kept` the locations and records of
/// `links`, each only where the row is still the object's link of the same
/// rule, type and key. True when the object's links of `content_rules` are
/// now exactly `links`; false when not (the caller then replaces them all,
/// in the same transaction).
async fn changed_in_place(
    tx: &mut Tx<'_>,
    id: i64,
    content_rules: &[usize],
    links: &[Link],
    in_place: &InPlace,
) -> Result<bool, StateError> {
    let rules = serde_json::to_string(content_rules)
        .map_err(|e| StateError::Corrupt(format!("packing rules: {e}")))?;
    let gone = serde_json::to_string(&in_place.gone)
        .map_err(|e| StateError::Corrupt(format!("packing links: {e}")))?;
    sqlx::query(
        "DELETE FROM links WHERE rowid IN (SELECT value FROM json_each($1))
         AND object_id = $2 AND rule IN (SELECT value FROM json_each($3))",
    )
    .bind(gone)
    .bind(id)
    .bind(rules.clone())
    .execute(&mut **tx)
    .await
    .map_err(q("updating the index"))?;
    // (Each row found by its id: `+` keeps the planner from walking the
    // object's links and the packed rows for each.)
    type Row<'l> = (i64, i64, &'l str, &'l str, Option<&'l str>, Option<&'l str>);
    let rows: Vec<Row<'_>> = links
        .iter()
        .zip(&in_place.kept)
        .map(|(l, &row)| {
            (
                row,
                i64::try_from(l.rule).unwrap_or(i64::MAX),
                l.entity_type.as_str(),
                l.entity_key.as_str(),
                l.location.as_deref(),
                l.record.as_deref(),
            )
        })
        .collect();
    let packed = serde_json::to_string(&rows)
        .map_err(|e| StateError::Corrupt(format!("packing links: {e}")))?;
    let updated = sqlx::query(
        "UPDATE links SET location = j.location, record = j.record
         FROM (SELECT value ->> 0 AS row, value ->> 1 AS rule, value ->> 2 AS entity_type,
                      value ->> 3 AS entity_key, value ->> 4 AS location, value ->> 5 AS record
               FROM json_each($1)) AS j
         WHERE links.rowid = j.row AND +links.object_id = $2 AND links.rule = j.rule
           AND links.entity_type = j.entity_type AND links.entity_key = j.entity_key",
    )
    .bind(packed)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(q("updating the index"))?
    .rows_affected();
    if updated != links.len() as u64 {
        return Ok(false);
    }
    let now: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM links WHERE object_id = $1 AND rule IN (SELECT value FROM json_each($2))",
    )
    .bind(id)
    .bind(rules)
    .fetch_one(&mut **tx)
    .await
    .map_err(q("updating the index"))?;
    Ok(now == links.len() as i64)
}

/// An object's index entry, as a redaction reads it.
#[derive(Debug)]
pub struct Entry {
    /// What the last index run saw of it (the rewrite's expectation).
    pub expected: Expected,
    /// Every link, with rule and record.
    pub links: Vec<Link>,
    /// Beside each link, its row of the index (SQLite's `rowid`), for
    /// [`InPlace`]; `None` where rows have no such id (PostgreSQL).
    pub rows: Option<Vec<i64>>,
}

/// What the index holds of `key` (see [`Entry`]); `None` when it left the
/// index. One statement, its links packed into one JSON text (row by row,
/// the hand-over from the database driver's thread costs more than the
/// query: see `StateStore::json_rows`). Memory: the links of this one
/// object.
pub async fn entry_of(state: &StateStore, key: &str) -> Result<Option<Entry>, StateError> {
    let row_id = if state.is_sqlite() { "l.rowid" } else { "NULL" };
    let sql = format!(
        "SELECT o.size, o.modified, o.etag,
                (SELECT {} FROM links l WHERE l.object_id = o.id)
         FROM objects o WHERE o.key = $1",
        state.json_rows(&format!(
            "l.entity_type, l.entity_key, l.rule, l.location, l.record, {row_id}"
        ))
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
    type Packed = (
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Packed> = match text {
        Some(t) => parse_json_rows(&t, "reading the index")?,
        None => Vec::new(),
    };
    let mut ids = Vec::with_capacity(rows.len());
    let links = rows
        .into_iter()
        .map(|(entity_type, entity_key, rule, location, record, id)| {
            ids.push(id);
            Link {
                entity_type,
                entity_key,
                // (Registered links have no rule of the config: a number none has.)
                rule: usize::try_from(rule).unwrap_or(usize::MAX),
                location,
                record,
            }
        })
        .collect();
    Ok(Some(Entry {
        expected,
        links,
        rows: ids.into_iter().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::index::{ObjectRow, write_objects};
    use crate::state::status::IndexStatus;

    fn link(rule: usize, key: &str, record: Option<&str>) -> Link {
        Link {
            entity_type: "lead".into(),
            entity_key: key.into(),
            rule,
            location: record.map(str::to_string),
            record: record.map(str::to_string),
        }
    }

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            key: "exports/a.csv".into(),
            size,
            modified: Some(1),
            etag: None,
            metadata: Vec::new(),
            name: None,
        }
    }

    type Row = (String, String, i64, Option<String>, Option<String>);

    async fn links_now(state: &StateStore) -> Vec<Row> {
        let mut rows: Vec<Row> = sqlx::query_as(
            "SELECT entity_type, entity_key, rule, location, record FROM links ORDER BY rowid",
        )
        .fetch_all(state.pool())
        .await
        .unwrap();
        rows.sort();
        rows
    }

    fn sorted(links: &[Link]) -> Vec<Row> {
        let mut rows: Vec<Row> = links
            .iter()
            .map(|l| {
                (
                    l.entity_type.clone(),
                    l.entity_key.clone(),
                    l.rule as i64,
                    l.location.clone(),
                    l.record.clone(),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// An object of rule 1 (rows 2 to 5: leads 7, 8, 9, 7) and rule 0 (a
    /// path link); rows 3 and 4 go. `in_place` is made from the entry as
    /// read, then `spoil` may change the index before the journal step.
    async fn redact_one(spoil: &str, stale: bool) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open_sqlite(&dir.path().join("s.db"))
            .await
            .unwrap();
        let before = vec![
            link(0, "7", None),
            link(1, "7", Some("row 2")),
            link(1, "8", Some("row 3")),
            link(1, "9", Some("row 4")),
            link(1, "7", Some("row 5")),
        ];
        write_objects(
            &state,
            1,
            vec![ObjectRow {
                meta: meta(100),
                status: IndexStatus::Ok,
                error: None,
                links: before,
            }],
        )
        .await
        .unwrap();
        let entry = entry_of(&state, "exports/a.csv").await.unwrap().unwrap();
        let rows = entry.rows.clone().unwrap();
        let row_of = |key: &str, record: &str| {
            entry
                .links
                .iter()
                .zip(&rows)
                .find(|(l, _)| l.entity_key == key && l.record.as_deref() == Some(record))
                .map(|(_, r)| *r)
                .unwrap()
        };
        // The file after: lead 7 in rows 2 and 3.
        let after = vec![link(1, "7", Some("row 2")), link(1, "7", Some("row 3"))];
        let in_place = InPlace {
            gone: vec![row_of("8", "row 3"), row_of("9", "row 4")],
            kept: vec![row_of("7", "row 2"), row_of("7", "row 5")],
        };
        if !spoil.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(spoil.to_string()))
                .execute(state.pool())
                .await
                .unwrap();
        }
        let mut tx = state.begin_write().await.unwrap();
        let id: i64 = sqlx::query_scalar("SELECT id FROM objects")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let changed = changed_in_place(&mut tx, id, &[1], &after, &in_place)
            .await
            .unwrap();
        assert_eq!(changed, !stale, "{spoil}");
        tx.rollback().await.unwrap();
        let mut tx = state.begin_write().await.unwrap();
        replace_entry(&mut tx, &meta(60), &[1], after.clone(), Some(in_place))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut want = after;
        want.push(link(0, "7", None));
        if spoil.contains("'5', 2") {
            // A link of another rule, added since, stays.
            want.push(link(2, "5", None));
        }
        assert_eq!(links_now(&state).await, sorted(&want), "{spoil}");
        let size: i64 = sqlx::query_scalar("SELECT size FROM objects")
            .fetch_one(state.pool())
            .await
            .unwrap();
        assert_eq!(size, 60);
    }

    #[tokio::test]
    async fn a_redacted_entry_changes_in_place_when_the_index_is_as_read() {
        redact_one("", false).await;
        // Links of other rules may come and go meanwhile.
        redact_one(
            "INSERT INTO links(object_id, entity_type, entity_key, rule) SELECT id, 'lead', '5', 2 FROM objects",
            false,
        )
        .await;
    }

    #[tokio::test]
    async fn a_redacted_entry_is_replaced_whole_when_the_index_changed_since() {
        // A kept row is no longer the link that was read.
        redact_one(
            "UPDATE links SET entity_key = '6' WHERE record = 'row 5'",
            true,
        )
        .await;
        // A row of the content rule appeared.
        redact_one(
            "INSERT INTO links(object_id, entity_type, entity_key, rule, record) SELECT id, 'lead', '9', 1, 'row 6' FROM objects",
            true,
        )
        .await;
        // The entry was written again (new rows).
        redact_one("UPDATE links SET rowid = rowid + 100 WHERE rule = 1", true).await;
    }
}
