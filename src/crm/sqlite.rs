//! The SQLite CRM backend (the embedded default). Every connection runs with
//! `secure_delete=ON`, so deleted rows are overwritten in the file, and
//! `after_apply` checkpoints the WAL so no copy lingers there either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column as _, Executor, Row, SqliteConnection, SqlitePool, TypeInfo, ValueRef,
};

use super::component::{self, ComponentInput};
use super::fit::Column;
use super::recheck::{self, EntityNow, TxnOps};
use super::{
    BatchOutcome, CaseNow, Crm, CrmError, Decision, EntityRow, LockedPayload, PayloadColumn,
    PayloadInput, RecheckInput, bind_keys, quote_ident,
};
use crate::config::EntityType;
use crate::model::{EntityKey, Instant, parse_clock_text};
use crate::verify::residual::IdentifierKind;

/// How many values go into one `IN (…)` list.
const CHUNK: usize = 500;

pub struct SqliteCrm {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteCrm {
    /// Every entity of `et`, row by row (a view, a table without rowid).
    async fn scan_rows(
        &self,
        et: &EntityType,
        sink: &mut (dyn FnMut(EntityRow) + Send),
    ) -> Result<u64, CrmError> {
        let sql = format!(
            "SELECT {} FROM {}",
            select_list(et, None),
            quote_ident(&et.table)
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await.map_err(|e| CrmError::query(et, e))? {
            sink(entity_row(et, &row)?);
            n += 1;
        }
        Ok(n)
    }

    /// Every entity of `et` in rowid order, [`SCAN_PAGE`] rows folded into
    /// one JSON text per statement: row by row, the hand-over of each row
    /// from sqlx's thread costs more than reading it (seconds per million
    /// rows). `None` when the table has no rowid to page by (a view, a
    /// table `WITHOUT ROWID`, or every alias of the rowid taken by a
    /// column): nothing was read, the caller reads row by row.
    ///
    /// The values are what [`entity_row`] reads from a row: a NULL or blob
    /// key and a blob parent fail the read (as there; the last value of
    /// each row says which), a blob clock is a text no date parses (so the
    /// entity is undatable, as there).
    async fn scan_pages(
        &self,
        et: &EntityType,
        sink: &mut (dyn FnMut(EntityRow) + Send),
    ) -> Result<Option<u64>, CrmError> {
        let Some(rowid) = self.rowid_alias(et).await? else {
            return Ok(None);
        };
        let value = |c: &str| {
            let c = quote_ident(c);
            format!("CASE WHEN typeof({c}) = 'blob' THEN NULL ELSE {c} END")
        };
        let clock = |c: &str| {
            let c = quote_ident(c);
            format!("CASE WHEN typeof({c}) = 'blob' THEN 'blob' ELSE {c} END")
        };
        let mut cols = vec![value(&et.key)];
        cols.extend(et.clock.iter().map(|c| clock(c)));
        cols.extend(et.parents.iter().map(|(_, c)| value(c)));
        // Last, what [`entity_row`] refuses, as bits: 1 the key is NULL, 2
        // the key is a blob, 4 << i parent i is a blob.
        let mut unreadable = vec![
            format!("({} IS NULL)", quote_ident(&et.key)),
            format!("((typeof({}) = 'blob') << 1)", quote_ident(&et.key)),
        ];
        unreadable.extend(
            et.parents
                .iter()
                .enumerate()
                .map(|(i, (_, c))| format!("((typeof({}) = 'blob') << {})", quote_ident(c), i + 2)),
        );
        cols.push(format!("({})", unreadable.join(" | ")));
        let sql = format!(
            "SELECT json_group_array(json_array({})), max(r_), count(*)
             FROM (SELECT {rowid} AS r_, * FROM {} WHERE {rowid} > ?1 ORDER BY {rowid} LIMIT ?2)",
            cols.join(", "),
            quote_ident(&et.table),
        );
        let mut after = i64::MIN;
        let mut n = 0u64;
        loop {
            let Some(Page { text, next }) = self.page(et, &sql, after).await? else {
                return Ok(None);
            };
            let text = text.map_err(|e| CrmError::query(et, e))?;
            let page: Vec<Vec<serde_json::Value>> = serde_json::from_str(&text).map_err(|e| {
                CrmError::query(
                    et,
                    sqlx::Error::Protocol(format!("a page of rows is not JSON: {e}")),
                )
            })?;
            for values in &page {
                sink(entity_row_json(et, values)?);
                n += 1;
            }
            match next {
                Some(next) => after = next,
                None => return Ok(Some(n)),
            }
        }
    }

    /// [`Crm::column_values`] row by row.
    async fn column_rows(
        &self,
        et: &EntityType,
        column: &str,
        sink: &mut (dyn FnMut(EntityKey, String) + Send),
    ) -> Result<(), CrmError> {
        let sql = format!(
            "SELECT {k}, CAST({c} AS TEXT) FROM {t} WHERE {c} IS NOT NULL",
            k = quote_ident(&et.key),
            c = quote_ident(column),
            t = quote_ident(&et.table)
        );
        self.pairs_of_rows(et, sql, None, 0, sink).await
    }

    /// Feeds `sink` the (key, text value) pairs of the rows `sql` selects
    /// (bound to the page after rowid `after`, when given), the key in
    /// column `at` and the value after it; a NULL or blob key, or a value
    /// that is not text, is left out.
    async fn pairs_of_rows(
        &self,
        et: &EntityType,
        sql: String,
        after: Option<i64>,
        at: usize,
        sink: &mut (dyn FnMut(EntityKey, String) + Send),
    ) -> Result<(), CrmError> {
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(after) = after {
            query = query.bind(after).bind(SCAN_PAGE);
        }
        let mut rows = query.fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(|e| CrmError::query(et, e))? {
            if let (Some(k), Ok(v)) = (key_at(&row, at), row.try_get::<String, _>(at + 1)) {
                sink(k, v);
            }
        }
        Ok(())
    }

    /// [`Crm::column_values`] in rowid order, [`SCAN_PAGE`] rows folded into
    /// one JSON text per statement, as [`Self::scan_pages`] reads entities
    /// (row by row, the 1.35M identifier values of a 1M-lead CRM took
    /// seconds of hand-over alone). False when the table has no rowid to
    /// page by: nothing was read, the caller reads row by row. The pairs
    /// are those the row-by-row read gives (a NULL or blob key is left
    /// out); a page whose text does not come back as JSON (a value that is
    /// not UTF-8) is read again row by row.
    async fn column_pages(
        &self,
        et: &EntityType,
        column: &str,
        sink: &mut (dyn FnMut(EntityKey, String) + Send),
    ) -> Result<bool, CrmError> {
        let Some(rowid) = self.rowid_alias(et).await? else {
            return Ok(false);
        };
        let (k, c, t) = (
            quote_ident(&et.key),
            quote_ident(column),
            quote_ident(&et.table),
        );
        let page = format!(
            "SELECT {rowid} AS r_, {k} AS k_, CAST({c} AS TEXT) AS v_ FROM {t}
             WHERE {rowid} > ?1 AND {c} IS NOT NULL ORDER BY {rowid} LIMIT ?2"
        );
        let packed = format!(
            "SELECT json_group_array(json_array(CASE WHEN typeof(k_) = 'blob' THEN NULL ELSE k_ END, v_)),
                    max(r_), count(*)
             FROM ({page})"
        );
        let mut after = i64::MIN;
        loop {
            let Some(Page { text, next }) = self.page(et, &packed, after).await? else {
                return Ok(false);
            };
            let parsed = text.ok().and_then(|text| {
                serde_json::from_str::<Vec<(serde_json::Value, String)>>(&text).ok()
            });
            match parsed {
                Some(pairs) => {
                    for (key, value) in pairs {
                        if let Some(key) = key_json(&key) {
                            sink(key, value);
                        }
                    }
                }
                None => {
                    self.pairs_of_rows(et, page.clone(), Some(after), 1, sink)
                        .await?
                }
            }
            match next {
                Some(next) => after = next,
                None => return Ok(true),
            }
        }
    }

    /// One page of a paged read: `sql` selects (the page's rows as one
    /// JSON text, the last rowid, the count) for the rows after rowid
    /// `after`, [`SCAN_PAGE`] at most. `None` when the first page cannot
    /// name the rowid (a view): nothing was read.
    async fn page(&self, et: &EntityType, sql: &str, after: i64) -> Result<Option<Page>, CrmError> {
        let row = match sqlx::query(AssertSqlSafe(sql.to_string()))
            .bind(after)
            .bind(SCAN_PAGE)
            .fetch_one(&self.pool)
            .await
        {
            Ok(row) => row,
            Err(e) if after == i64::MIN && super::statement_error(&e).is_some() => {
                return Ok(None);
            }
            Err(e) => return Err(CrmError::query(et, e)),
        };
        let last: Option<i64> = row.try_get(1).map_err(|e| CrmError::query(et, e))?;
        let count: i64 = row.try_get(2).map_err(|e| CrmError::query(et, e))?;
        Ok(Some(Page {
            text: row.try_get(0),
            next: last.filter(|_| count == SCAN_PAGE),
        }))
    }

    /// The first of SQLite's names of the rowid (`rowid`, `_rowid_`, `oid`)
    /// that no column of `et`'s table takes; `None` when each is a column.
    async fn rowid_alias(&self, et: &EntityType) -> Result<Option<&'static str>, CrmError> {
        let columns = self.columns(&et.table).await?.unwrap_or_default();
        Ok(["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|a| !columns.iter().any(|c| c.name.eq_ignore_ascii_case(a))))
    }

    /// Opens an existing CRM database; `create` is for the demo and tests
    /// only (a missing CRM must be an error, never an empty CRM).
    pub async fn open(path: &Path, create: bool) -> Result<SqliteCrm, CrmError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|source| CrmError::Connect {
                target: format!("sqlite://{}", path.display()),
                source,
            })?;
        Ok(SqliteCrm {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn select_list(et: &EntityType, extra: Option<&str>) -> String {
    let mut cols = vec![quote_ident(&et.key)];
    cols.extend(et.clock.iter().map(|c| quote_ident(c)));
    cols.extend(et.parents.iter().map(|(_, c)| quote_ident(c)));
    if let Some(e) = extra {
        cols.push(quote_ident(e));
    }
    cols.join(", ")
}

pub(crate) fn key_at(row: &SqliteRow, i: usize) -> Option<EntityKey> {
    let raw = row.try_get_raw(i).ok()?;
    if raw.is_null() {
        return None;
    }
    match raw.type_info().name() {
        "INTEGER" => row.try_get::<i64, _>(i).ok().map(EntityKey::Int),
        "REAL" => {
            let f = row.try_get::<f64, _>(i).ok()?;
            if f.fract() == 0.0 && f.abs() < 9e15 {
                Some(EntityKey::Int(f as i64))
            } else {
                Some(EntityKey::Text(f.to_string()))
            }
        }
        "TEXT" => row.try_get::<String, _>(i).ok().map(EntityKey::Text),
        _ => None,
    }
}

/// (clock, unreadable): first non-null clock column wins; a non-null value
/// that is not a date makes the entity undatable rather than falling back.
fn clock_at(row: &SqliteRow, first: usize, count: usize) -> (Option<Instant>, bool) {
    for i in first..first + count {
        let Ok(raw) = row.try_get_raw(i) else {
            return (None, true);
        };
        if raw.is_null() {
            continue;
        }
        let v = match raw.type_info().name() {
            "INTEGER" => row
                .try_get::<i64, _>(i)
                .ok()
                .and_then(|n| super::clock_from_number(n as f64)),
            "REAL" => row
                .try_get::<f64, _>(i)
                .ok()
                .and_then(super::clock_from_number),
            "TEXT" => row
                .try_get::<String, _>(i)
                .ok()
                .and_then(|t| parse_clock_text(&t)),
            _ => None,
        };
        return match v {
            Some(c) => (Some(c), false),
            None => (None, true),
        };
    }
    (None, false)
}

fn entity_row(et: &EntityType, row: &SqliteRow) -> Result<EntityRow, CrmError> {
    let key = key_at(row, 0).ok_or_else(|| unreadable_key(et, &et.key, what_at(row, 0), true))?;
    let (clock, clock_unreadable) = clock_at(row, 1, et.clock.len());
    let base = 1 + et.clock.len();
    let mut parents = Vec::with_capacity(et.parents.len());
    for (i, (_, column)) in et.parents.iter().enumerate() {
        let parent = key_at(row, base + i);
        if parent.is_none() && !row.try_get_raw(base + i).is_ok_and(|v| v.is_null()) {
            return Err(unreadable_key(et, column, what_at(row, base + i), false));
        }
        parents.push(parent);
    }
    Ok(EntityRow {
        key,
        clock,
        clock_unreadable,
        parents,
    })
}

/// What a key or parent column that [`key_at`] cannot read holds.
fn what_at(row: &SqliteRow, i: usize) -> &'static str {
    match row.try_get_raw(i) {
        Ok(v) if v.is_null() => "NULL",
        Ok(v) if v.type_info().name() == "BLOB" => "a blob",
        _ => "a value of a type lethe does not read",
    }
}

/// [`CrmError::UnreadableKey`] with the query that finds such rows: in
/// the key column NULL or a blob, in a parent column a blob (NULL is no
/// parent there).
fn unreadable_key(et: &EntityType, column: &str, what: &'static str, key: bool) -> CrmError {
    // Standard SQL quotes in the hint, for the sqlite3 shell.
    let dq = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let c = dq(column);
    let cond = if key {
        format!("{c} IS NULL OR typeof({c}) = 'blob'")
    } else {
        format!("typeof({c}) = 'blob'")
    };
    CrmError::unreadable_key(
        et,
        column,
        what,
        format!(
            "Find such rows with `SELECT rowid, * FROM {} WHERE {cond}` and give each a key (an integer or text) or, for a parent, its parent's key or NULL.",
            dq(&et.table)
        ),
    )
}

/// Rows per statement of a paged scan.
const SCAN_PAGE: i64 = 10_000;

/// A page of a paged read ([`SqliteCrm::page`]): its rows as one JSON
/// text (or why the text could not be read), and the rowid to read on
/// after when the page was full.
struct Page {
    text: Result<String, sqlx::Error>,
    next: Option<i64>,
}

/// [`entity_row`] of a row folded into JSON by a paged scan: the same
/// key, clock and parents as the row read (an integer stays an integer; a
/// real that is a whole number is an integer key, as there).
fn entity_row_json(et: &EntityType, values: &[serde_json::Value]) -> Result<EntityRow, CrmError> {
    let base = 1 + et.clock.len();
    let bits = values
        .get(base + et.parents.len())
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if bits & 1 != 0 {
        return Err(unreadable_key(et, &et.key, "NULL", true));
    }
    if bits & 2 != 0 {
        return Err(unreadable_key(et, &et.key, "a blob", true));
    }
    if let Some((_, column)) = et
        .parents
        .iter()
        .enumerate()
        .find(|(i, _)| bits & (4 << i) != 0)
        .map(|(_, p)| p)
    {
        return Err(unreadable_key(et, column, "a blob", false));
    }
    let key = values.first().and_then(key_json).ok_or_else(|| {
        unreadable_key(et, &et.key, "a value of a type lethe does not read", true)
    })?;
    let mut clock = None;
    let mut clock_unreadable = false;
    for v in values.iter().skip(1).take(et.clock.len()) {
        let c = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(|i| i as f64)
                .or_else(|| n.as_f64())
                .and_then(super::clock_from_number),
            serde_json::Value::String(t) => parse_clock_text(t),
            _ => None,
        };
        match c {
            Some(c) => clock = Some(c),
            None => clock_unreadable = true,
        }
        break;
    }
    let parents = (0..et.parents.len())
        .map(|i| values.get(base + i).and_then(key_json))
        .collect();
    Ok(EntityRow {
        key,
        clock,
        clock_unreadable,
        parents,
    })
}

/// [`key_at`] of a JSON value.
fn key_json(v: &serde_json::Value) -> Option<EntityKey> {
    match v {
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Some(EntityKey::Int(i)),
            None => {
                let f = n.as_f64()?;
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    Some(EntityKey::Int(f as i64))
                } else {
                    Some(EntityKey::Text(f.to_string()))
                }
            }
        },
        serde_json::Value::String(t) => Some(EntityKey::Text(t.clone())),
        _ => None,
    }
}

/// One value of a row as an export gives it, by what SQLite stores (not
/// the declared type): integer and real as numbers, text as a string (text
/// that is not UTF-8 as base64, like a blob), a blob as base64, NULL as
/// null. A real that JSON cannot hold (infinite) is its text.
fn json_at(row: &SqliteRow, i: usize) -> Result<serde_json::Value, sqlx::Error> {
    use serde_json::Value;
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    Ok(match raw.type_info().name() {
        "INTEGER" => Value::from(row.try_get::<i64, _>(i)?),
        "REAL" => {
            let f = row.try_get::<f64, _>(i)?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string()))
        }
        "TEXT" => match row.try_get::<String, _>(i) {
            Ok(t) => Value::String(t),
            Err(_) => super::blob_json(&row.try_get_unchecked::<Vec<u8>, _>(i)?),
        },
        _ => super::blob_json(&row.try_get_unchecked::<Vec<u8>, _>(i)?),
    })
}

fn catalogue_error(table: &str, source: sqlx::Error) -> CrmError {
    CrmError::Catalogue {
        table: table.to_string(),
        source,
    }
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[async_trait]
impl Crm for SqliteCrm {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<Column>>, CrmError> {
        let (schema, name) = match table.split_once('.') {
            Some((s, t)) => (s, t),
            None => ("main", table),
        };
        let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?1, ?2)")
            .bind(name)
            .bind(schema)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| catalogue_error(table, e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let ty: String = r.try_get(1).unwrap_or_default();
                    Column {
                        name: r.try_get(0).unwrap_or_default(),
                        // SQLite's affinity rule: a declared type containing
                        // INT stores integers.
                        integer: ty.to_ascii_uppercase().contains("INT"),
                        // A column declared UUID stores whatever text was
                        // written: keys stay as typed.
                        uuid: false,
                        // SQLite keys are read as integer or text, as
                        // stored.
                        unkeyed: None,
                    }
                })
                .collect(),
        ))
    }

    async fn tables(&self, _near: &str) -> Result<Vec<String>, CrmError> {
        sqlx::query_scalar(
            "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| catalogue_error("sqlite_schema", e))
    }

    async fn probe_condition(
        &self,
        et: &EntityType,
        condition: &str,
    ) -> Result<Option<String>, CrmError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE 0",
            super::condition_column(condition),
            quote_ident(&et.table)
        );
        match sqlx::query(AssertSqlSafe(sql))
            .fetch_optional(&self.pool)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) => match super::statement_error(&e) {
                Some(m) => Ok(Some(m)),
                None => Err(CrmError::query(et, e)),
            },
        }
    }

    async fn scan(
        &self,
        et: &EntityType,
        sink: &mut (dyn FnMut(EntityRow) + Send),
    ) -> Result<u64, CrmError> {
        match self.scan_pages(et, sink).await? {
            Some(n) => Ok(n),
            None => self.scan_rows(et, sink).await,
        }
    }

    async fn matching(
        &self,
        et: &EntityType,
        condition: &str,
        sink: &mut (dyn FnMut(EntityKey) + Send),
    ) -> Result<(), CrmError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE ({condition})",
            quote_ident(&et.key),
            quote_ident(&et.table)
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(|e| CrmError::query(et, e))? {
            if let Some(k) = key_at(&row, 0) {
                sink(k);
            }
        }
        Ok(())
    }

    async fn column_values(
        &self,
        et: &EntityType,
        column: &str,
        sink: &mut (dyn FnMut(EntityKey, String) + Send),
    ) -> Result<(), CrmError> {
        if self.column_pages(et, column, sink).await? {
            return Ok(());
        }
        self.column_rows(et, column, sink).await
    }

    async fn existing(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<EntityKey>, CrmError> {
        // The keys travel as one JSON array per statement (`json_each`):
        // binding them one by one costs more than the look-ups. Compared
        // as bound values would be (the column's affinity applies).
        let mut out = Vec::new();
        // Callers that cannot tell a key's type ask for both forms of a
        // number (`"7"` and `7`). On an INTEGER column the text form is
        // compared as the number (the column's affinity applies), so one
        // look-up per key is enough.
        let integer = self.columns(&et.table).await?.is_some_and(|cols| {
            cols.iter()
                .any(|c| c.name.eq_ignore_ascii_case(&et.key) && c.integer)
        });
        let deduped: Vec<EntityKey>;
        let keys = if integer {
            let ints: std::collections::HashSet<i64> = keys
                .iter()
                .filter_map(|k| match k {
                    EntityKey::Int(i) => Some(*i),
                    EntityKey::Text(_) => None,
                })
                .collect();
            deduped = keys
                .iter()
                .filter(|k| match k {
                    EntityKey::Text(t) => !t
                        .parse::<i64>()
                        .is_ok_and(|i| ints.contains(&i) && i.to_string() == *t),
                    EntityKey::Int(_) => true,
                })
                .cloned()
                .collect();
            &deduped[..]
        } else {
            keys
        };
        let sql = format!(
            "SELECT {k} FROM {t} WHERE {k} IN (SELECT value FROM json_each(?))",
            k = quote_ident(&et.key),
            t = quote_ident(&et.table)
        );
        for chunk in keys.chunks(20_000) {
            let packed: Vec<serde_json::Value> = chunk
                .iter()
                .map(|k| match k {
                    EntityKey::Int(i) => serde_json::Value::from(*i),
                    EntityKey::Text(t) => serde_json::Value::from(t.as_str()),
                })
                .collect();
            let packed = serde_json::Value::Array(packed).to_string();
            let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(packed)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| CrmError::query(et, e))?;
            out.extend(rows.iter().filter_map(|r| key_at(r, 0)));
        }
        Ok(out)
    }

    async fn identifier_values(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| CrmError::query(et, e))?;
        Txn { conn: &mut conn }.identifier_values(et, keys).await
    }

    async fn delete_cases(
        &self,
        input: &RecheckInput,
        decide: &(dyn for<'c> Fn(&'c CaseNow) -> Decision + Sync),
    ) -> Result<BatchOutcome, CrmError> {
        let mut conn = self.pool.acquire().await.map_err(CrmError::Transaction)?;
        // IMMEDIATE: take the write lock before reading, so nothing changes
        // between the re-check and the delete.
        conn.execute("BEGIN IMMEDIATE")
            .await
            .map_err(CrmError::Transaction)?;
        let mut txn = Txn { conn: &mut conn };
        match recheck::run(&mut txn, input, decide).await {
            Ok(outcome) => {
                conn.execute("COMMIT")
                    .await
                    .map_err(CrmError::Transaction)?;
                Ok(outcome)
            }
            Err(e) => {
                let _ = conn.execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn find_by_identifier(
        &self,
        et: &EntityType,
        column: &str,
        kind: IdentifierKind,
        normalised: &str,
    ) -> Result<Vec<EntityKey>, CrmError> {
        if !super::is_normal(kind, normalised) {
            return Ok(Vec::new());
        }
        let c = quote_ident(column);
        let (condition, binds) = match kind {
            // Written as the expression index is: `lower(trim(col))`.
            IdentifierKind::Email => match super::email_like_pattern(normalised) {
                None => (
                    format!("lower(trim({c})) = ?1"),
                    vec![normalised.to_string()],
                ),
                Some(pattern) => (
                    format!(
                        "(lower(trim({c})) = ?1 OR lower(trim({c})) LIKE ?2 ESCAPE '{}')",
                        super::LIKE_ESCAPE
                    ),
                    vec![normalised.to_string(), pattern],
                ),
            },
            // No regular expressions in SQLite: the digits in order,
            // anything between them; the re-check below decides.
            IdentifierKind::Phone => (
                format!("{c} LIKE ?1"),
                vec![super::digits_like_pattern(normalised)],
            ),
        };
        let sql = format!(
            "SELECT {}, CAST({c} AS TEXT) FROM {} WHERE {condition}",
            quote_ident(&et.key),
            quote_ident(&et.table)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let mut rows = q.fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|e| CrmError::searching(et, column, normalised, e))?
        {
            let value = row.try_get::<Option<String>, _>(1).ok().flatten();
            if let (Some(k), Some(v)) = (key_at(&row, 0), value)
                && super::identifier_matches(kind, &v, normalised)
            {
                out.push(k);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn subtrees(&self, input: &RecheckInput) -> Result<Vec<CaseNow>, CrmError> {
        // A deferred transaction: one snapshot for every statement, no
        // write lock.
        let mut tx = self.pool.begin().await.map_err(CrmError::Transaction)?;
        let cases = recheck::load(&mut Txn { conn: &mut tx }, input).await;
        let _ = tx.rollback().await;
        cases
    }

    async fn component(&self, input: &ComponentInput) -> Result<Vec<EntityNow>, CrmError> {
        // As `subtrees`: one snapshot, no write lock. SQLite columns may
        // store a key as integer or text: each is looked up both ways.
        let mut tx = self.pool.begin().await.map_err(CrmError::Transaction)?;
        let rows = component::load(&mut Txn { conn: &mut tx }, input, true).await;
        let _ = tx.rollback().await;
        rows
    }

    async fn export_rows(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, CrmError> {
        let requested = super::Requested::new(keys);
        let k = quote_ident(&et.key);
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            // The key first, to know the row; then every column.
            let sql = format!(
                "SELECT {k}, * FROM {} WHERE {k} IN ({})",
                quote_ident(&et.table),
                placeholders(chunk.len())
            );
            let rows = bind_keys(sqlx::query(AssertSqlSafe(sql)), chunk)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| CrmError::query(et, e))?;
            for row in &rows {
                let Some(key) = key_at(row, 0).filter(|k| requested.contains(k)) else {
                    continue;
                };
                let mut object = serde_json::Map::new();
                for (i, col) in row.columns().iter().enumerate().skip(1) {
                    let value = json_at(row, i).map_err(|e| CrmError::query(et, e))?;
                    object.insert(col.name().to_string(), value);
                }
                out.push((key, object));
            }
        }
        Ok(super::sorted_rows(out))
    }

    async fn count(&self, et: &EntityType) -> Result<u64, CrmError> {
        let sql = format!("SELECT COUNT(*) FROM {}", quote_ident(&et.table));
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| CrmError::query(et, e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn after_apply(&self) -> Result<Vec<String>, CrmError> {
        let mut conn = self.pool.acquire().await.map_err(CrmError::Transaction)?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(CrmError::Transaction)?;
        let mut notes = vec![format!(
            "sqlite {}: rows deleted with secure_delete=ON (overwritten in the file)",
            self.path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        )];
        if mode.eq_ignore_ascii_case("wal") {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await
                .map_err(CrmError::Transaction)?;
            notes.push("sqlite WAL checkpointed and truncated".into());
        }
        Ok(notes)
    }
}

struct Txn<'c> {
    conn: &'c mut SqliteConnection,
}

#[async_trait]
impl TxnOps for Txn<'_> {
    async fn rows_where_in(
        &mut self,
        et: &EntityType,
        column: &str,
        values: &[EntityKey],
        conditions: &[&str],
    ) -> Result<Vec<(EntityRow, Option<EntityKey>, u32)>, CrmError> {
        let mut out = Vec::new();
        let extra_at = 1 + et.clock.len() + et.parents.len();
        let mut list = select_list(et, Some(column));
        for c in conditions {
            list.push_str(", ");
            list.push_str(&super::condition_column(c));
        }
        for chunk in values.chunks(CHUNK) {
            let sql = format!(
                "SELECT {list} FROM {} WHERE {} IN ({})",
                quote_ident(&et.table),
                quote_ident(column),
                placeholders(chunk.len())
            );
            let rows = bind_keys(sqlx::query(AssertSqlSafe(sql)), chunk)
                .fetch_all(&mut *self.conn)
                .await
                .map_err(|e| CrmError::query(et, e))?;
            for row in &rows {
                let r = entity_row(et, row)?;
                let bits =
                    super::condition_bits(conditions.len(), |j| key_at(row, extra_at + 1 + j));
                out.push((r, key_at(row, extra_at), bits));
            }
        }
        Ok(out)
    }

    async fn identifier_values(
        &mut self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
        let mut cols = vec![quote_ident(&et.key)];
        cols.extend(
            et.identifiers
                .iter()
                .map(|c| format!("CAST({} AS TEXT)", quote_ident(c))),
        );
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "SELECT {} FROM {} WHERE {} IN ({})",
                cols.join(", "),
                quote_ident(&et.table),
                quote_ident(&et.key),
                placeholders(chunk.len())
            );
            let rows = bind_keys(sqlx::query(AssertSqlSafe(sql)), chunk)
                .fetch_all(&mut *self.conn)
                .await
                .map_err(|e| CrmError::query(et, e))?;
            for row in &rows {
                if let Some(k) = key_at(row, 0) {
                    let values = (0..et.identifiers.len())
                        .map(|i| row.try_get::<Option<String>, _>(1 + i).ok().flatten())
                        .collect();
                    out.push((k, values));
                }
            }
        }
        Ok(out)
    }

    async fn delete_keys(&mut self, et: &EntityType, keys: &[EntityKey]) -> Result<u64, CrmError> {
        let mut n = 0;
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM {} WHERE {} IN ({})",
                quote_ident(&et.table),
                quote_ident(&et.key),
                placeholders(chunk.len())
            );
            n += bind_keys(sqlx::query(AssertSqlSafe(sql)), chunk)
                .execute(&mut *self.conn)
                .await
                .map_err(|e| CrmError::query(et, e))?
                .rows_affected();
        }
        Ok(n)
    }

    async fn payload_rows(
        &mut self,
        p: &PayloadInput,
        column: &PayloadColumn,
        values: &[EntityKey],
    ) -> Result<Vec<LockedPayload>, CrmError> {
        // BEGIN IMMEDIATE holds the write lock: nothing changes meanwhile.
        let mut out = Vec::new();
        for chunk in values.chunks(CHUNK) {
            let sql = format!(
                "SELECT {} FROM {} WHERE {} IN ({})",
                column.select,
                p.table,
                quote_ident(&column.column),
                placeholders(chunk.len())
            );
            let rows = bind_keys(sqlx::query(AssertSqlSafe(sql)), chunk)
                .fetch_all(&mut *self.conn)
                .await
                .map_err(|e| recheck::payload_error(p, e))?;
            for row in &rows {
                let text = |i: usize| row.try_get::<Option<String>, _>(i).ok().flatten();
                if let Some(r) =
                    recheck::locked_payload([text(0), text(1), text(2), text(3), text(4)])
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    async fn delete_payloads(
        &mut self,
        p: &PayloadInput,
        column: &PayloadColumn,
        values: &[EntityKey],
    ) -> Result<u64, CrmError> {
        let mut n = 0;
        for chunk in values.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM {} WHERE {} IN ({})",
                p.table,
                quote_ident(&column.column),
                placeholders(chunk.len())
            );
            n += bind_keys(sqlx::query(AssertSqlSafe(sql)), chunk)
                .execute(&mut *self.conn)
                .await
                .map_err(|e| recheck::payload_error(p, e))?
                .rows_affected();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    fn lead_type(table: &str) -> EntityType {
        EntityType {
            name: "lead".into(),
            table: table.into(),
            key: "id".into(),
            clock: vec!["modified".into(), "created".into()],
            parents: vec![("account".into(), "account_id".into())],
            subject: vec![],
            identifiers: vec![],
        }
    }

    async fn both(crm: &SqliteCrm, et: &EntityType) -> (Vec<String>, Option<Vec<String>>) {
        let show = |r: EntityRow| format!("{r:?}");
        let mut rows = Vec::new();
        crm.scan_rows(et, &mut |r| rows.push(show(r)))
            .await
            .unwrap();
        let mut pages = Vec::new();
        let paged = crm
            .scan_pages(et, &mut |r| pages.push(show(r)))
            .await
            .unwrap()
            .map(|_| pages);
        (rows, paged)
    }

    /// The paged scan reads what the row-by-row scan reads, whatever the
    /// row stores: integer, real, text and blob keys, clocks of every
    /// kind (numbers, ISO text, garbage, blobs), missing parents, across
    /// page boundaries.
    #[tokio::test]
    async fn pages_read_what_rows_read() {
        let dir = tempfile::tempdir().unwrap();
        let crm = SqliteCrm::open(&dir.path().join("crm.db"), true)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE leads (id, modified, created, account_id);
             INSERT INTO leads VALUES
               (1, 1700000000, NULL, 7),
               (2.0, NULL, '2024-01-02', NULL),
               (2.5, 1700000000.75, NULL, 'A-1'),
               ('018', '2024-01-02T03:04:05Z', NULL, '018'),
               ('b', X'00', '2024-01-01', 4),
               ('c', 'not a date', '2024-01-01', 5.0),
               (-9223372036854775808, -86400, NULL, 9223372036854775807),
               ('é\"\\\n', ' 2024-06-01 ', NULL, '');
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000)
             INSERT INTO leads SELECT 100 + i, 1700000000 + i, NULL, i % 13 FROM n;
             CREATE VIEW leads_view AS SELECT * FROM leads;
             CREATE TABLE leads_norowid (id TEXT PRIMARY KEY, modified, created, account_id) WITHOUT ROWID;
             INSERT INTO leads_norowid VALUES ('x', 1, NULL, NULL);
             CREATE TABLE leads_shadow (rowid, _rowid_, oid, id, modified, created, account_id);
             INSERT INTO leads_shadow VALUES (1, 1, 1, 'y', 2, NULL, NULL);",
        )
        .execute(&crm.pool)
        .await
        .unwrap();
        let (rows, pages) = both(&crm, &lead_type("leads")).await;
        assert_eq!(rows.len(), 25_008, "every row");
        assert_eq!(pages.as_ref(), Some(&rows));
        // A blob or NULL key, a blob parent: both scans fail, naming the
        // column and what it holds, wherever the row sits among readable
        // ones (first page, last page).
        for (i, (bad, column, what)) in [
            ("(X'0102', 1700000000000, NULL, 3)", "id", "a blob"),
            ("(NULL, 1, 1, 1)", "id", "NULL"),
            ("('d', NULL, NULL, X'01')", "account_id", "a blob"),
        ]
        .into_iter()
        .enumerate()
        {
            for at in [0, 20_000] {
                let table = format!("bad_{i}_{at}");
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "CREATE TABLE {table} (id, modified, created, account_id);
                     INSERT INTO {table} SELECT id, modified, created, account_id FROM leads WHERE rowid <= {at};
                     INSERT INTO {table} VALUES {bad};
                     INSERT INTO {table} SELECT id, modified, created, account_id FROM leads WHERE rowid > {at};"
                )))
                .execute(&crm.pool)
                .await
                .unwrap();
                let et = lead_type(&table);
                let by_rows = crm.scan_rows(&et, &mut |_| {}).await.unwrap_err();
                let by_pages = crm.scan_pages(&et, &mut |_| {}).await.unwrap_err();
                for e in [by_rows, by_pages] {
                    match &e {
                        CrmError::UnreadableKey {
                            column: c, what: w, ..
                        } => assert_eq!((c.as_str(), *w), (column, what), "{table}: {e}"),
                        other => panic!("{table}: {other}"),
                    }
                }
            }
        }
        for table in ["leads_view", "leads_norowid", "leads_shadow"] {
            let (rows, pages) = both(&crm, &lead_type(table)).await;
            assert!(!rows.is_empty(), "{table}");
            assert_eq!(pages, None, "{table}: no rowid to page by, read row by row");
            let mut n = 0;
            crm.scan(&lead_type(table), &mut |_| n += 1).await.unwrap();
            assert_eq!(n, rows.len(), "{table}");
        }
    }
    /// The paged read of a column gives the pairs the row-by-row read
    /// gives, in the same order: keys and values of every type SQLite
    /// stores (a NULL or blob key left out, a NULL value too), a value that
    /// is not UTF-8 (its page read again row by row), across page
    /// boundaries; no rowid to page by, nothing read.
    #[tokio::test]
    async fn column_pages_read_what_rows_read() {
        let dir = tempfile::tempdir().unwrap();
        let crm = SqliteCrm::open(&dir.path().join("crm.db"), true)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE leads (id, modified, created, account_id, email);
             INSERT INTO leads VALUES
               (1, 0, 0, 0, 'a@example.com'),
               (2.0, 0, 0, 0, 7),
               (2.5, 0, 0, 0, 7.25),
               ('018', 0, 0, 0, ' B@Example.COM '),
               (X'01', 0, 0, 0, 'blob key'),
               (NULL, 0, 0, 0, 'null key'),
               ('n', 0, 0, 0, NULL),
               ('bin', 0, 0, 0, X'41'),
               ('é\"', 0, 0, 0, 'é\"
	');
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000)
             INSERT INTO leads SELECT 100 + i, 0, 0, 0, 'x' || i || '@example.com' FROM n;
             INSERT INTO leads VALUES ('bad', 0, 0, 0, CAST(X'FF41' AS TEXT));
             INSERT INTO leads VALUES (999999, 0, 0, 0, '+49 30 1234');
             CREATE VIEW leads_view AS SELECT * FROM leads;",
        )
        .execute(&crm.pool)
        .await
        .unwrap();
        let mut et = lead_type("leads");
        et.identifiers = vec!["email".into()];
        let mut rows = Vec::new();
        crm.column_rows(&et, "email", &mut |k, v| rows.push((k, v)))
            .await
            .unwrap();
        let mut pages = Vec::new();
        assert!(
            crm.column_pages(&et, "email", &mut |k, v| pages.push((k, v)))
                .await
                .unwrap()
        );
        assert_eq!(rows.len(), 25_007, "every row with a key and a value");
        assert_eq!(pages, rows);
        let mut through = Vec::new();
        crm.column_values(&et, "email", &mut |k, v| through.push((k, v)))
            .await
            .unwrap();
        assert_eq!(through, rows);
        let view = lead_type("leads_view");
        let mut none = 0;
        assert!(
            !crm.column_pages(&view, "email", &mut |_, _| none += 1)
                .await
                .unwrap()
        );
        assert_eq!(none, 0);
        let mut by_view = Vec::new();
        crm.column_values(&view, "email", &mut |k, v| by_view.push((k, v)))
            .await
            .unwrap();
        assert_eq!(by_view, rows);
    }
}
