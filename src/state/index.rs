//! The link index: `objects` (one row per object the store listed: size,
//! date, etag, status, why it was unreadable, the run that last saw it) and
//! `links` (each object's links, with rule, location and record), and the
//! marks of the last index run in `meta` (`index.run`, `index.rules`,
//! `index.store`, `index.completed_at`). The index stage lists the store
//! and extracts; it writes and reads the index only through this module:
//! the writer of a run ([`write_objects`], [`remove_objects`],
//! [`replace_rule_links`], [`record_run`]), the totals a run reports
//! ([`links_per_rule`], [`unreadable_count`]), the plan's read
//! ([`for_each_entry`]) and the apply re-check's ([`links_and_metas_of_keys`]).
//!
//! The writer's statements are shaped for speed: many rows per statement,
//! the text built once per batch size ([`super::RowsSql`]), and a long run
//! of one object's links of one rule (a CSV export: a link per row) bound
//! as key, location and record only.

use std::collections::HashMap;

use sqlx::Row;

use super::status::IndexStatus;
use super::{StateError, StateStore, parse_json_rows, q, registered};
use crate::store::{Expected, ObjectMeta};

/// One link found in one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub entity_type: String,
    pub entity_key: String,
    pub rule: usize,
    pub location: Option<String>,
    /// The record of a record link (a CSV row; the element a JSON or XML
    /// rule names with `record`): what a redaction removes. `None` for a
    /// whole-file link.
    pub record: Option<String>,
}

/// One object as an index run writes it: what the listing said of it, its
/// status, why it was unreadable (if it was), and the links its rules found.
#[derive(Clone, Debug)]
pub struct ObjectRow {
    pub meta: ObjectMeta,
    pub status: IndexStatus,
    pub error: Option<String>,
    pub links: Vec<Link>,
}

/// What the index holds of an object, for the next run's "unchanged?".
#[derive(Clone, Debug)]
pub struct IndexedObject {
    pub id: i64,
    pub size: u64,
    pub modified: Option<i64>,
    pub etag: Option<String>,
}

/// The index as the plan reads it: one entry per object, with its links.
#[derive(Clone, Debug)]
pub struct IndexedEntry {
    pub key: String,
    pub size: u64,
    pub modified: Option<i64>,
    pub status: String,
    /// Why an unreadable object could not be read (never its content).
    pub error: Option<String>,
    pub links: Vec<(String, String)>,
    /// Beside each link: its rule and its record (`None`: the whole file).
    pub records: Vec<(usize, Option<String>)>,
}

/// The marks an index run leaves, read by the next run (same rules and
/// store: unchanged objects are not read again) and by the plan (the run it
/// read).
#[derive(Clone, Copy, Debug)]
pub struct RunMarks<'a> {
    pub run: i64,
    /// The digest of the rules that read objects.
    pub rules: &'a str,
    /// The store, as it describes itself.
    pub store: &'a str,
    pub completed_at: &'a str,
}

impl StateStore {
    /// How many objects the index holds.
    pub async fn indexed_count(&self) -> Result<u64, StateError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM objects")
            .fetch_one(self.pool())
            .await
            .map_err(q("counting the index"))?;
        Ok(n.max(0) as u64)
    }

    /// Every indexed object: key → (id, size, modified, etag).
    pub async fn indexed_objects(&self) -> Result<HashMap<String, IndexedObject>, StateError> {
        self.indexed_objects_paged(20_000).await
    }

    /// [`StateStore::indexed_objects`], `page` objects per query (tests use
    /// small pages).
    pub async fn indexed_objects_paged(
        &self,
        page: i64,
    ) -> Result<HashMap<String, IndexedObject>, StateError> {
        // Pages of objects as one JSON text each: a row at a time, the hand-
        // over between the database driver's thread and this task cost more
        // than the rest of an unchanged re-index.
        let sql = format!(
            "SELECT {}, max(id), count(*)
             FROM (SELECT id, key, size, modified, etag FROM objects WHERE id > $1 ORDER BY id LIMIT $2) AS page",
            self.json_rows("id, key, size, modified, etag")
        );
        type Entry = (i64, String, i64, Option<i64>, Option<String>);
        let mut out = HashMap::new();
        let mut after = i64::MIN;
        loop {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(after)
                .bind(page)
                .fetch_one(&self.pool)
                .await
                .map_err(q("reading the index"))?;
            let (text, last, n): (String, Option<i64>, i64) = (row.get(0), row.get(1), row.get(2));
            let entries: Vec<Entry> = parse_json_rows(&text, "reading the index")?;
            for (id, key, size, modified, etag) in entries {
                out.insert(
                    key,
                    IndexedObject {
                        id,
                        size: size as u64,
                        modified,
                        etag,
                    },
                );
            }
            match last {
                Some(last) if n == page => after = last,
                _ => return Ok(out),
            }
        }
    }
}

/// Writes a batch of objects of run `run`, in one transaction: each object
/// upserted with its status, its links replaced, and the links registered
/// for it copied in.
pub async fn write_objects(
    state: &StateStore,
    run: i64,
    batch: Vec<ObjectRow>,
) -> Result<(), StateError> {
    if batch.is_empty() {
        return Ok(());
    }
    let sqlite = state.is_sqlite();
    let mut tx = state.begin_write().await.map_err(q("writing the index"))?;
    // Objects, many rows per statement; each statement answers with the
    // ids of its rows (inserted or updated).
    const OBJECTS: usize = 100;
    let objects_sql = super::RowsSql::new(
        sqlite,
        "INSERT INTO objects(key, size, modified, etag, status, error, seen_run) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?)",
        1,
        " ON CONFLICT(key) DO UPDATE SET size = excluded.size, modified = excluded.modified, etag = excluded.etag,
           status = excluded.status, error = excluded.error, seen_run = excluded.seen_run
         RETURNING id, key",
        OBJECTS,
    );
    let mut ids = HashMap::with_capacity(batch.len());
    for chunk in batch.chunks(OBJECTS) {
        let mut query = sqlx::query(objects_sql.rows(chunk.len()));
        for o in chunk {
            query = query
                .bind(o.meta.key.clone())
                .bind(o.meta.size as i64)
                .bind(o.meta.modified)
                .bind(o.meta.etag.clone())
                .bind(o.status.as_str())
                .bind(o.error.clone())
                .bind(run);
        }
        for r in query
            .fetch_all(&mut *tx)
            .await
            .map_err(q("writing the index"))?
        {
            ids.insert(r.get::<String, _>(1), r.get::<i64, _>(0));
        }
    }
    // Their links replaced.
    let id_list: Vec<i64> = ids.values().copied().collect();
    super::exec_in(
        &mut tx,
        "DELETE FROM links WHERE object_id IN ({in})",
        &[],
        &id_list,
    )
    .await?;
    let rows = batch
        .into_iter()
        .filter_map(|o| ids.get(&o.meta.key).map(|&id| (id, o.links)));
    insert_links(&mut tx, sqlite, rows).await?;
    // Links registered through the API for these objects (before the index
    // first saw them, or kept across a change of content).
    for chunk in id_list.chunks(400) {
        registered::materialize(&mut tx, "o.id", chunk).await?;
    }
    tx.commit().await.map_err(q("writing the index"))?;
    Ok(())
}

/// Inserts the links of objects (by index id), in the caller's transaction:
/// many rows per statement, and a long run of one object's links of one
/// rule and type (a CSV export: a link per row) bound as key, location and
/// record only. The links move into the statements (no copy of their
/// strings).
pub(super) async fn insert_links(
    tx: &mut sqlx::AnyConnection,
    sqlite: bool,
    objects: impl IntoIterator<Item = (i64, Vec<Link>)>,
) -> Result<(), StateError> {
    const LINKS: usize = 400;
    let links_sql = super::RowsSql::new(
        sqlite,
        "INSERT INTO links(object_id, entity_type, entity_key, rule, location, record) VALUES ",
        "(?, ?, ?, ?, ?, ?)",
        1,
        "",
        LINKS,
    );
    // The links move into the statements (no copy of their strings). A
    // long run of one object's links of one rule (a CSV export: a link per
    // row) binds only key, location and record per link; the rest bind all six.
    const RUN: usize = 1000;
    let run_sql = super::RowsSql::new(
        sqlite,
        "INSERT INTO links(object_id, entity_type, entity_key, rule, location, record)
         SELECT $1, $2, v.column1, $3, v.column2, v.column3 FROM (VALUES ",
        "(?, ?, ?)",
        4,
        ") AS v",
        RUN,
    );
    let mut scattered: Vec<(i64, Link)> = Vec::new();
    for (id, links) in objects {
        let mut found = links.into_iter().peekable();
        while let Some(first) = found.next() {
            let mut same: Vec<Link> = vec![first];
            while same.len() < RUN
                && found
                    .peek()
                    .is_some_and(|l| l.rule == same[0].rule && l.entity_type == same[0].entity_type)
            {
                same.extend(found.next());
            }
            if same.len() < 64 {
                scattered.extend(same.into_iter().map(|l| (id, l)));
                continue;
            }
            let mut query = sqlx::query(run_sql.rows(same.len()))
                .bind(id)
                .bind(same[0].entity_type.clone())
                .bind(same[0].rule as i64);
            for l in same {
                query = query.bind(l.entity_key).bind(l.location).bind(l.record);
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(q("writing the index"))?;
        }
    }
    let mut rest = scattered.into_iter();
    loop {
        let chunk: Vec<(i64, Link)> = rest.by_ref().take(LINKS).collect();
        if chunk.is_empty() {
            break;
        }
        let mut query = sqlx::query(links_sql.rows(chunk.len()));
        for (id, l) in chunk {
            query = query
                .bind(id)
                .bind(l.entity_type)
                .bind(l.entity_key)
                .bind(l.rule as i64)
                .bind(l.location)
                .bind(l.record);
        }
        query
            .execute(&mut *tx)
            .await
            .map_err(q("writing the index"))?;
    }
    Ok(())
}

/// A link as it travels packed: type, key, rule, location, record.
pub(super) type PackedLink = (String, String, i64, Option<String>, Option<String>);

/// Inserts the links of one object (by index id), in the caller's
/// transaction, in one statement whatever their number: the links travel
/// as one JSON text that the database unpacks (SQLite's `json_each`,
/// PostgreSQL's `json_array_elements`). Binding each value costs more than
/// inserting it; a redaction's new index entry is thousands of links.
pub(super) async fn insert_links_packed(
    tx: &mut sqlx::AnyConnection,
    sqlite: bool,
    id: i64,
    links: Vec<Link>,
) -> Result<(), StateError> {
    if links.is_empty() {
        return Ok(());
    }
    let rows: Vec<PackedLink> = links
        .into_iter()
        .map(|l| {
            (
                l.entity_type,
                l.entity_key,
                i64::try_from(l.rule).unwrap_or(i64::MAX),
                l.location,
                l.record,
            )
        })
        .collect();
    let packed = serde_json::to_string(&rows)
        .map_err(|e| StateError::Corrupt(format!("packing links: {e}")))?;
    let sql = if sqlite {
        "INSERT INTO links(object_id, entity_type, entity_key, rule, location, record)
         SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each($2)"
    } else {
        "INSERT INTO links(object_id, entity_type, entity_key, rule, location, record)
         SELECT $1, v ->> 0, v ->> 1, (v ->> 2)::bigint, v ->> 3, v ->> 4
         FROM json_array_elements($2::json) AS v"
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(packed)
        .execute(&mut *tx)
        .await
        .map_err(q("writing the index"))?;
    Ok(())
}

/// The index of links by entity (a subject request's objects, the export's
/// files), created if missing.
pub(crate) const ENTITY_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS links_entity ON links(entity_type, entity_key)";

/// Drops the index of links by entity before an index run that writes most
/// of the links: one random insert into it per link costs several times
/// what the run's other writes do (measured: 7.2 s instead of 2.0 s for
/// 640k links), while building it once, sorted, afterwards costs a fraction
/// of a second. Readers meanwhile are slower, never wrong; a run that stops
/// before `restore_entity_index` leaves it to the next open
/// (`schema::migrate`).
pub async fn suspend_entity_index(state: &StateStore) -> Result<(), StateError> {
    sqlx::raw_sql("DROP INDEX IF EXISTS links_entity")
        .execute(state.pool())
        .await
        .map_err(q("setting the index of links by entity aside"))?;
    Ok(())
}

/// Builds the index of links by entity again (after `suspend_entity_index`).
/// SQLite sorts the keys on helper threads too (`PRAGMA threads`, set on
/// the building connection and back to none after the statement; a build
/// that fails leaves that connection with them, which changes only speed):
/// 608k CSV links, 0.50 s → 0.41 s.
pub async fn restore_entity_index(state: &StateStore) -> Result<(), StateError> {
    let sql = if state.is_sqlite() {
        let helpers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        format!("PRAGMA threads = {helpers}; {ENTITY_INDEX}; PRAGMA threads = 0")
    } else {
        ENTITY_INDEX.to_string()
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(state.pool())
        .await
        .map_err(q("building the index of links by entity"))?;
    Ok(())
}

/// Removes the objects of these ids from the index, in one transaction
/// (their links go with them: ON DELETE CASCADE). Returns how many went.
pub async fn remove_objects(state: &StateStore, ids: &[i64]) -> Result<u64, StateError> {
    let mut tx = state
        .begin_write()
        .await
        .map_err(q("removing objects gone from the store"))?;
    let removed =
        super::exec_in(&mut tx, "DELETE FROM objects WHERE id IN ({in})", &[], ids).await?;
    tx.commit()
        .await
        .map_err(q("removing objects gone from the store"))?;
    Ok(removed)
}

/// Replaces every link of rule `rule` with links of `entity_type` from the
/// objects named in `pairs` (object key, entity key) that the index holds,
/// in one transaction, so the index never lacks them. Returns the links
/// written.
pub async fn replace_rule_links(
    state: &StateStore,
    rule: usize,
    entity_type: &str,
    location: &str,
    pairs: &[(String, String)],
) -> Result<u64, StateError> {
    let mut tx = state.begin_write().await.map_err(q("writing the index"))?;
    sqlx::query("DELETE FROM links WHERE rule = $1")
        .bind(rule as i64)
        .execute(&mut *tx)
        .await
        .map_err(q("writing the index"))?;
    let mut linked = 0;
    for chunk in pairs.chunks(300) {
        let sql = format!(
            "INSERT INTO links(object_id, entity_type, entity_key, rule, location)
             SELECT o.id, $1, v.column2, $2, $3 FROM (VALUES {}) AS v JOIN objects o ON o.key = v.column1",
            super::params(chunk.len(), "(?, ?)", 4)
        );
        let mut query = sqlx::query(super::sql(state.is_sqlite(), sql))
            .bind(entity_type.to_string())
            .bind(rule as i64)
            .bind(location.to_string());
        for (object, key) in chunk {
            query = query.bind(object.clone()).bind(key.clone());
        }
        linked += query
            .execute(&mut *tx)
            .await
            .map_err(q("writing the index"))?
            .rows_affected();
    }
    tx.commit().await.map_err(q("writing the index"))?;
    Ok(linked)
}

/// How many links the index holds per rule: (rule, count), registered
/// links under [`registered::REGISTERED_RULE`].
pub async fn links_per_rule(state: &StateStore) -> Result<Vec<(i64, u64)>, StateError> {
    let rows = sqlx::query("SELECT rule, count(*) FROM links GROUP BY rule")
        .fetch_all(state.pool())
        .await
        .map_err(q("counting links"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1) as u64))
        .collect())
}

/// How many objects of the index a content rule could not read.
pub async fn unreadable_count(state: &StateStore) -> Result<u64, StateError> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM objects WHERE status = 'unreadable'")
            .fetch_one(state.pool())
            .await
            .map_err(q("counting unreadable objects"))? as u64,
    )
}

/// Records a completed run's marks, in one transaction.
pub async fn record_run(state: &StateStore, marks: RunMarks<'_>) -> Result<(), StateError> {
    let run = marks.run.to_string();
    let mut tx = state.begin_write().await.map_err(q("writing the index"))?;
    for (k, v) in [
        ("index.run", run.as_str()),
        ("index.rules", marks.rules),
        ("index.store", marks.store),
        ("index.completed_at", marks.completed_at),
    ] {
        sqlx::query(
            "INSERT INTO meta(k, v) VALUES ($1, $2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        )
        .bind(k)
        .bind(v)
        .execute(&mut *tx)
        .await
        .map_err(q("writing the index"))?;
    }
    tx.commit().await.map_err(q("writing the index"))?;
    Ok(())
}

/// Streams the index, object by object, in key order.
pub async fn for_each_entry(
    state: &StateStore,
    sink: &mut (dyn FnMut(IndexedEntry) + Send),
) -> Result<u64, StateError> {
    for_each_entry_paged(state, 50_000, sink).await
}

/// As [`for_each_entry`], reading `page_rows` joined rows a page (tests use
/// small pages).
async fn for_each_entry_paged(
    state: &StateStore,
    page_rows: usize,
    sink: &mut (dyn FnMut(IndexedEntry) + Send),
) -> Result<u64, StateError> {
    // Objects joined with their links, a page of rows folded into one JSON
    // text: row by row, the hand-over from the driver's thread and the
    // conversion of each row cost more than the rows themselves (seconds
    // for a million objects). A page ends inside an object's links when it
    // is full: those rows are read again with the next page; an object
    // with more links than a page holds is read on its own, row by row.
    let page_rows = page_rows.max(1);
    let sql = format!(
        "SELECT {}
         FROM (SELECT o.id, o.key, o.size, o.modified, o.status, o.error,
                      l.entity_type, l.entity_key, l.rule, l.record
               FROM objects o LEFT JOIN links l ON l.object_id = o.id
               WHERE o.id > $1 ORDER BY o.id LIMIT $2) AS page",
        state.json_rows(
            "id, key, size, modified, status, error, entity_type, entity_key, rule, record"
        )
    );
    // The next page is read (on the driver's thread) while this one is
    // judged by the sink.
    let fetch = |after: i64| {
        let pool = state.pool().clone();
        let sql = super::sql(state.is_sqlite(), sql.clone());
        tokio::spawn(async move {
            sqlx::query_scalar::<_, String>(sql)
                .bind(after)
                .bind(page_rows as i64)
                .fetch_one(&pool)
                .await
        })
    };
    let mut next = fetch(i64::MIN);
    let mut n = 0;
    loop {
        let text: String = next
            .await
            .map_err(|e| StateError::Corrupt(format!("reading the index stopped: {e}")))?
            .map_err(q("reading the index"))?;
        let mut rows: Vec<EntryRow> = parse_json_rows(&text, "reading the index")?;
        drop(text);
        // By object; each object's links in the order the join gave them.
        rows.sort_by_key(|r| r.0);
        let (Some(first), Some(last)) = (rows.first().map(|r| r.0), rows.last().map(|r| r.0))
        else {
            return Ok(n);
        };
        if rows.len() == page_rows {
            if first == last {
                n += entry_alone(state, last, sink).await?;
                next = fetch(last);
                continue;
            }
            rows.retain(|r| r.0 != last);
        }
        next = fetch(rows.last().map_or(last, |r| r.0));
        // In slices at object boundaries, letting the caller's other work
        // (the plan's writes) go on between them.
        while !rows.is_empty() {
            let mut end = rows.len().min(SLICE_ROWS);
            while end < rows.len() && rows[end].0 == rows[end - 1].0 {
                end += 1;
            }
            n += group_entries(rows.drain(..end), sink);
            tokio::task::yield_now().await;
        }
    }
}

/// How many rows of a page the sink is given between two yields.
const SLICE_ROWS: usize = 4096;

/// One row of an object joined with one of its links (or with none).
type EntryRow = (
    i64,
    String,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

/// Hands the entries of `rows` (sorted by object) to `sink`; how many.
fn group_entries(
    rows: impl IntoIterator<Item = EntryRow>,
    sink: &mut (dyn FnMut(IndexedEntry) + Send),
) -> u64 {
    let mut n = 0;
    let mut current: Option<(i64, IndexedEntry)> = None;
    for (id, key, size, modified, status, error, ty, entity, rule, record) in rows {
        if current.as_ref().map(|c| c.0) != Some(id) {
            if let Some((_, e)) = current.take() {
                sink(e);
                n += 1;
            }
            current = Some((
                id,
                IndexedEntry {
                    key,
                    size: size as u64,
                    modified,
                    status,
                    error,
                    links: Vec::new(),
                    records: Vec::new(),
                },
            ));
        }
        if let (Some(ty), Some(entity), Some((_, e))) = (ty, entity, current.as_mut()) {
            e.links.push((ty, entity));
            // (Registered links have no rule of the config: a rule number
            // none has.)
            let rule = rule
                .and_then(|r| usize::try_from(r).ok())
                .unwrap_or(usize::MAX);
            e.records.push((rule, record));
        }
    }
    if let Some((_, e)) = current.take() {
        sink(e);
        n += 1;
    }
    n
}

/// The entry of one object with more links than a page holds, its links
/// streamed row by row.
async fn entry_alone(
    state: &StateStore,
    id: i64,
    sink: &mut (dyn FnMut(IndexedEntry) + Send),
) -> Result<u64, StateError> {
    use futures::TryStreamExt;
    let mut rows = sqlx::query(super::sql(
        state.is_sqlite(),
        "SELECT o.id, o.key, o.size, o.modified, o.status, o.error,
                l.entity_type, l.entity_key, l.rule, l.record
         FROM objects o LEFT JOIN links l ON l.object_id = o.id
         WHERE o.id = $1"
            .to_string(),
    ))
    .bind(id)
    .fetch(state.pool());
    let mut all: Vec<EntryRow> = Vec::new();
    while let Some(r) = rows.try_next().await.map_err(q("reading the index"))? {
        all.push((
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
            r.get(8),
            r.get(9),
        ));
    }
    Ok(group_entries(all, sink))
}

/// The indexed objects that link any of `entities` (type, stored key),
/// each with every link it has (not only those): what a subject request's
/// plan gives a fate to. Looked up by entity (`links_entity`), the links of
/// each object packed into one JSON text.
///
/// For the types in `uuid_types` (a UUID key column: it prints each key in
/// one spelling and holds no two keys that differ in case), a key is also
/// looked up as a payload may spell it (capitals, braces, no hyphens), and
/// such a link is returned as the key it names, as the plan's graph reads
/// it (`Graph::resolve`).
pub async fn entries_linking(
    state: &StateStore,
    entities: &[(String, String)],
    uuid_types: &std::collections::HashSet<String>,
) -> Result<Vec<IndexedEntry>, StateError> {
    let mut asked: Vec<(String, String)> = entities.to_vec();
    for (t, k) in entities {
        if uuid_types.contains(t) && crate::model::is_printed_uuid(k) {
            asked.extend(
                crate::model::uuid_spellings(k)
                    .into_iter()
                    .map(|s| (t.clone(), s)),
            );
        }
    }
    let entities = &asked[..];
    let mut ids: Vec<i64> = Vec::new();
    for chunk in entities.chunks(2000) {
        let sql = format!(
            "SELECT DISTINCT l.object_id FROM (VALUES {}) AS v
             JOIN links l ON l.entity_type = v.column1 AND l.entity_key = v.column2",
            super::params(chunk.len(), "(?, ?)", 1)
        );
        let mut query = sqlx::query_scalar::<_, i64>(super::sql(state.is_sqlite(), sql));
        for (t, k) in chunk {
            query = query.bind(t.clone()).bind(k.clone());
        }
        ids.extend(
            query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the index"))?,
        );
    }
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(400) {
        let sql = format!(
            "SELECT o.key, o.size, o.modified, o.status, o.error,
                    (SELECT {} FROM links l WHERE l.object_id = o.id)
             FROM objects o WHERE o.id IN ({}) ORDER BY o.id",
            state.json_rows("l.entity_type, l.entity_key, l.rule, l.record"),
            super::params(chunk.len(), "?", 1)
        );
        let mut query = sqlx::query(super::sql(state.is_sqlite(), sql));
        for id in chunk {
            query = query.bind(*id);
        }
        for r in query
            .fetch_all(state.pool())
            .await
            .map_err(q("reading the index"))?
        {
            let text: Option<String> = r.get(5);
            let rows: Vec<(String, String, i64, Option<String>)> = match text {
                Some(t) => parse_json_rows(&t, "reading the index")?,
                None => Vec::new(),
            };
            let mut e = IndexedEntry {
                key: r.get(0),
                size: r.get::<i64, _>(1).max(0) as u64,
                modified: r.get(2),
                status: r.get(3),
                error: r.get(4),
                links: Vec::with_capacity(rows.len()),
                records: Vec::with_capacity(rows.len()),
            };
            for (ty, mut key, rule, record) in rows {
                if uuid_types.contains(&ty)
                    && let Some(printed) = crate::model::uuid_respelled(&key)
                {
                    key = printed;
                }
                e.links.push((ty, key));
                e.records
                    .push((usize::try_from(rule).unwrap_or(usize::MAX), record));
            }
            out.push(e);
        }
    }
    Ok(out)
}

/// Per object key: its current links.
pub type LinksOfKeys = HashMap<String, Vec<(String, String)>>;
/// Per object key: what the last index run saw of it.
pub type MetasOfKeys = HashMap<String, Expected>;

/// What the index holds for each of `keys` that it knows (an object missing
/// from the maps has left the index): its current links, for the apply
/// re-check, and what the last index run saw of it (size, last-modified,
/// etag), which apply's deletes expect the store still to show.
pub async fn links_and_metas_of_keys(
    state: &StateStore,
    keys: &[String],
) -> Result<(LinksOfKeys, MetasOfKeys), StateError> {
    let mut links: LinksOfKeys = Default::default();
    let mut metas = HashMap::new();
    let mut rows = Vec::new();
    for chunk in keys.chunks(400) {
        let sql = format!(
            "SELECT o.key, l.entity_type, l.entity_key, o.size, o.modified, o.etag
             FROM objects o LEFT JOIN links l ON l.object_id = o.id WHERE o.key IN ({})",
            super::params(chunk.len(), "?", 1)
        );
        let mut query = sqlx::query(super::sql(state.is_sqlite(), sql));
        for k in chunk {
            query = query.bind(k.clone());
        }
        rows.extend(
            query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the index"))?,
        );
    }
    for r in rows {
        let key: String = r.get(0);
        let (ty, entity): (Option<String>, Option<String>) = (r.get(1), r.get(2));
        if !metas.contains_key(&key) {
            metas.insert(
                key.clone(),
                Expected {
                    size: r.get::<i64, _>(3) as u64,
                    modified: r.get(4),
                    etag: r.get(5),
                },
            );
        }
        let entry = links.entry(key).or_default();
        if let (Some(ty), Some(entity)) = (ty, entity) {
            entry.push((ty, entity));
        }
    }
    Ok((links, metas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, links: usize) -> ObjectRow {
        ObjectRow {
            meta: ObjectMeta {
                key: key.into(),
                size: links as u64,
                modified: Some(7),
                etag: None,
                metadata: Vec::new(),
                name: None,
            },
            status: IndexStatus::Ok,
            error: None,
            links: (0..links)
                .map(|i| Link {
                    entity_type: "lead".into(),
                    entity_key: format!("{key}-{i}"),
                    rule: i % 2,
                    location: None,
                    record: (i % 3 == 0).then(|| format!("row {i}")),
                })
                .collect(),
        }
    }

    /// Every page size reads the same entries in the same order as one
    /// page that holds everything: objects without links, objects whose
    /// links end a page, and objects with more links than a page holds.
    #[tokio::test]
    async fn every_page_size_reads_the_same_entries() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open_sqlite(&dir.path().join("s.db"))
            .await
            .unwrap();
        let sizes = [0, 1, 3, 0, 7, 2, 12, 0, 0, 5, 1, 4];
        let rows = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| object(&format!("o{i:02}"), n))
            .collect();
        write_objects(&state, 1, rows).await.unwrap();
        let read = |page: usize| {
            let state = state.clone();
            async move {
                let mut seen = Vec::new();
                let n = for_each_entry_paged(&state, page, &mut |e| {
                    seen.push((e.key, e.size, e.links, e.records))
                })
                .await
                .unwrap();
                assert_eq!(n as usize, seen.len());
                seen
            }
        };
        let whole = read(10_000).await;
        assert_eq!(whole.len(), sizes.len());
        for (entry, &n) in whole.iter().zip(&sizes) {
            assert_eq!(entry.2.len(), n, "{}", entry.0);
        }
        for page in 1..=13 {
            assert_eq!(read(page).await, whole, "page of {page} rows");
        }
    }
}
