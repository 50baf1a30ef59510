//! The CRM on a database server: PostgreSQL and MariaDB/MySQL, through
//! sqlx's `Any` driver with a small dialect table (identifier quoting,
//! placeholders, casts). Clocks are read as text (`CAST(… AS TEXT)`), so
//! every common column type works the same way: timestamptz, timestamp,
//! datetime, date, ISO text, epoch seconds. Sessions run in UTC.
//!
//! The deleting transaction locks what it re-checks (`SELECT … FOR UPDATE`),
//! so nothing changes between the re-check and the delete; a child inserted
//! meanwhile waits for the lock and then fails its foreign key.
//!
//! (Over 800 lines on purpose: one `impl Crm` for both dialects, each
//! method's statements side by side with their dialect differences.)

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row, TypeInfo, ValueRef};

use super::component::{self, ComponentInput};
use super::fit::Column;
use super::recheck::{self, EntityNow, TxnOps};
use super::{
    BatchOutcome, CaseNow, Crm, CrmError, Decision, EntityRow, LockedPayload, PayloadColumn,
    PayloadInput, RecheckInput, bind_keys,
};
use crate::config::EntityType;
use crate::model::{EntityKey, parse_clock_text};
use crate::verify::residual::IdentifierKind;

const CHUNK: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    fn quote(self, name: &str) -> String {
        name.split('.')
            .map(|p| match self {
                Dialect::Postgres => format!("\"{}\"", p.replace('"', "\"\"")),
                Dialect::MySql => format!("`{}`", p.replace('`', "``")),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Quotes one name as it is, dots and all (a column name the catalogue
    /// gave, not one the config wrote).
    fn quote_name(self, name: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
        }
    }

    fn text(self, expr: &str) -> String {
        match self {
            Dialect::Postgres => format!("CAST({expr} AS TEXT)"),
            Dialect::MySql => format!("CAST({expr} AS CHAR)"),
        }
    }

    /// Placeholders for `n` values starting at parameter `first` (1-based).
    fn params(self, first: usize, n: usize) -> String {
        (first..first + n)
            .map(|i| match self {
                Dialect::Postgres => format!("${i}"),
                Dialect::MySql => "?".to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }
}

pub struct ServerCrm {
    pool: AnyPool,
    dialect: Dialect,
    vacuum: bool,
}

impl ServerCrm {
    /// A read-only transaction on one snapshot that locks nothing: what
    /// `subtrees` and `component` read in.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, CrmError> {
        let begin = match self.dialect {
            Dialect::Postgres => "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            Dialect::MySql => "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        };
        self.pool
            .begin_with(begin)
            .await
            .map_err(CrmError::Transaction)
    }

    /// Connects; `url` is postgres://… or mysql://… (mariadb:// is taken as mysql://).
    pub async fn connect(url: &str, vacuum: bool) -> Result<ServerCrm, CrmError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if url.starts_with("postgres") {
            (Dialect::Postgres, url.to_string())
        } else {
            (Dialect::MySql, url.replacen("mariadb://", "mysql://", 1))
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let sql = match dialect {
                        Dialect::Postgres => "SET TIME ZONE 'UTC'",
                        Dialect::MySql => "SET time_zone = '+00:00'",
                    };
                    conn.execute(sql).await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| CrmError::Connect {
                target: format!("{} server (URL in [crm] url)", dialect.name()),
                source,
            })?;
        Ok(ServerCrm {
            pool,
            dialect,
            vacuum,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The columns of `table` as the catalogue lists them, in order: name
    /// and type in lower case (`integer`, `character varying(200)`,
    /// `datetime`); `None` when there is no such table or view.
    async fn catalogue(&self, table: &str) -> Result<Option<Vec<(String, String)>>, CrmError> {
        let d = self.dialect;
        let rows = match d {
            // to_regclass resolves the quoted name exactly as lethe's own
            // statements will (search_path, case), or gives NULL.
            Dialect::Postgres => sqlx::query(
                "SELECT CAST(a.attname AS TEXT), CAST(format_type(a.atttypid, a.atttypmod) AS TEXT)
                 FROM pg_attribute a
                 WHERE a.attrelid = to_regclass(CAST($1 AS TEXT)) AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
            )
            .bind(d.quote(table))
            .fetch_all(&self.pool)
            .await,
            Dialect::MySql => {
                let (schema, name) = match table.split_once('.') {
                    Some((s, t)) => (Some(s.to_string()), t.to_string()),
                    None => (None, table.to_string()),
                };
                sqlx::query(
                    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS
                     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
                     ORDER BY ORDINAL_POSITION",
                )
                .bind(schema)
                .bind(name)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|source| CrmError::Catalogue {
            table: table.to_string(),
            source,
        })?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .map(|r| {
                    (
                        r.try_get::<String, _>(0).unwrap_or_default(),
                        r.try_get::<String, _>(1)
                            .unwrap_or_default()
                            .to_ascii_lowercase(),
                    )
                })
                .collect(),
        ))
    }

    fn select_list(&self, et: &EntityType, extra: Option<&str>) -> String {
        let d = self.dialect;
        let mut cols = vec![d.quote(&et.key)];
        cols.extend(et.clock.iter().map(|c| d.text(&d.quote(c))));
        cols.extend(et.parents.iter().map(|(_, c)| d.quote(c)));
        if let Some(e) = extra {
            cols.push(d.quote(e));
        }
        cols.join(", ")
    }
}

fn key_at(row: &AnyRow, i: usize) -> Option<EntityKey> {
    let raw = row.try_get_raw(i).ok()?;
    if raw.is_null() {
        return None;
    }
    let kind = raw.type_info().name().to_ascii_uppercase();
    match kind.as_str() {
        "SMALLINT" | "INTEGER" | "BIGINT" | "INT2" | "INT4" | "INT8" => row
            .try_get::<i64, _>(i)
            .ok()
            .or_else(|| row.try_get::<i32, _>(i).ok().map(i64::from))
            .or_else(|| row.try_get::<i16, _>(i).ok().map(i64::from))
            .map(EntityKey::Int),
        "TEXT" => row.try_get::<String, _>(i).ok().map(EntityKey::Text),
        _ => row
            .try_get::<i64, _>(i)
            .ok()
            .map(EntityKey::Int)
            .or_else(|| row.try_get::<String, _>(i).ok().map(EntityKey::Text)),
    }
}

fn entity_row(et: &EntityType, row: &AnyRow) -> Option<EntityRow> {
    let key = key_at(row, 0)?;
    let mut clock = None;
    let mut clock_unreadable = false;
    for i in 1..=et.clock.len() {
        match row.try_get::<Option<String>, _>(i) {
            Ok(None) => continue,
            Ok(Some(text)) => {
                clock = parse_clock_text(&text);
                clock_unreadable = clock.is_none();
                break;
            }
            Err(_) => {
                clock_unreadable = true;
                break;
            }
        }
    }
    let base = 1 + et.clock.len();
    let parents = (0..et.parents.len())
        .map(|i| key_at(row, base + i))
        .collect();
    Some(EntityRow {
        key,
        clock,
        clock_unreadable,
        parents,
    })
}

#[async_trait]
impl Crm for ServerCrm {
    fn kind(&self) -> &'static str {
        self.dialect.name()
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<Column>>, CrmError> {
        Ok(self.catalogue(table).await?.map(|cols| {
            cols.into_iter()
                .map(|(name, ty)| Column {
                    integer: matches!(
                        ty.as_str(),
                        "smallint" | "integer" | "bigint" | "tinyint" | "mediumint" | "int"
                    ),
                    name,
                })
                .collect()
        }))
    }

    async fn tables(&self, near: &str) -> Result<Vec<String>, CrmError> {
        // In the schema the config names, spelt as it must write them.
        let schema = near.split_once('.').map(|(s, _)| s.to_string());
        let q = match self.dialect {
            Dialect::Postgres => sqlx::query_scalar(
                "SELECT CAST(CASE WHEN $1 IS NULL THEN table_name ELSE table_schema || '.' || table_name END AS TEXT)
                 FROM information_schema.tables
                 WHERE table_schema = COALESCE($1, current_schema()) ORDER BY 1",
            ),
            Dialect::MySql => sqlx::query_scalar(
                "SELECT CAST(CASE WHEN ? IS NULL THEN TABLE_NAME ELSE CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) END AS CHAR)
                 FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) ORDER BY 1",
            )
            .bind(schema.clone()),
        };
        q.bind(schema)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| CrmError::Catalogue {
                table: "information_schema.tables".into(),
                source,
            })
    }

    async fn probe_condition(
        &self,
        et: &EntityType,
        condition: &str,
    ) -> Result<Option<String>, CrmError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE 1 = 0",
            super::condition_column(condition),
            self.dialect.quote(&et.table)
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
        let sql = format!(
            "SELECT {} FROM {}",
            self.select_list(et, None),
            self.dialect.quote(&et.table)
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await.map_err(|e| CrmError::query(et, e))? {
            if let Some(r) = entity_row(et, &row) {
                sink(r);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn matching(
        &self,
        et: &EntityType,
        condition: &str,
        sink: &mut (dyn FnMut(EntityKey) + Send),
    ) -> Result<(), CrmError> {
        let d = self.dialect;
        let sql = format!(
            "SELECT {} FROM {} WHERE ({condition})",
            d.quote(&et.key),
            d.quote(&et.table)
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
        let d = self.dialect;
        let c = d.quote(column);
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {c} IS NOT NULL",
            d.quote(&et.key),
            d.text(&c),
            d.quote(&et.table)
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(|e| CrmError::query(et, e))? {
            if let (Some(k), Ok(v)) = (key_at(&row, 0), row.try_get::<String, _>(1)) {
                sink(k, v);
            }
        }
        Ok(())
    }

    async fn existing(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<EntityKey>, CrmError> {
        let d = self.dialect;
        let mut out = Vec::new();
        // One kind of key per statement, and statements that differ by
        // kind: PostgreSQL takes the keys as one array cast to BIGINT[] or
        // TEXT[]. (An IN list of N integers and one of N texts would be the
        // same SQL text, and the connection's prepared statement for one
        // would be sent the other's values.)
        for chunk in key_chunks(d, keys) {
            let (cond, list) = key_condition(d, &et.key, &chunk);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}",
                d.quote(&et.key),
                d.quote(&et.table)
            );
            match bind_list(sqlx::query(AssertSqlSafe(sql)), list)
                .fetch_all(&self.pool)
                .await
            {
                Ok(rows) => out.extend(rows.iter().filter_map(|r| key_at(r, 0))),
                // Text probes of an integer column: PostgreSQL refuses
                // the comparison; such keys cannot exist there.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42883") => {}
                Err(e) => return Err(CrmError::query(et, e)),
            }
        }
        Ok(out)
    }

    async fn identifier_values(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| CrmError::query(et, e))?;
        let out = Txn {
            conn: &mut tx,
            dialect: self.dialect,
            lock: false,
        }
        .identifier_values(et, keys)
        .await;
        // Read only: nothing to keep.
        let _ = tx.rollback().await;
        out
    }

    async fn delete_cases(
        &self,
        input: &RecheckInput,
        decide: &(dyn for<'c> Fn(&'c CaseNow) -> Decision + Sync),
    ) -> Result<BatchOutcome, CrmError> {
        let mut tx = self.pool.begin().await.map_err(CrmError::Transaction)?;
        let mut ops = Txn {
            conn: &mut tx,
            dialect: self.dialect,
            lock: true,
        };
        let outcome = recheck::run(&mut ops, input, decide).await?;
        tx.commit().await.map_err(CrmError::Transaction)?;
        Ok(outcome)
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
        let d = self.dialect;
        let c = d.quote(column);
        // PostgreSQL has no lower() or regexp_replace() of a number: the
        // column is cast to text (a no-op on a text column, so an index on
        // `lower(trim(col))` still serves). MariaDB converts by itself.
        let (condition, binds) = match kind {
            IdentifierKind::Email => {
                let folded = match d {
                    Dialect::Postgres => format!("lower(trim({}))", d.text(&c)),
                    Dialect::MySql => format!("LOWER(TRIM({c}))"),
                };
                match super::email_like_pattern(normalised) {
                    None => (
                        format!("{folded} = {}", d.params(1, 1)),
                        vec![normalised.to_string()],
                    ),
                    Some(pattern) => (
                        format!(
                            "({folded} = {} OR {folded} LIKE {} ESCAPE '{}')",
                            d.params(1, 1),
                            d.params(2, 1),
                            super::LIKE_ESCAPE
                        ),
                        vec![normalised.to_string(), pattern],
                    ),
                }
            }
            IdentifierKind::Phone => (
                match d {
                    Dialect::Postgres => {
                        format!("regexp_replace({}, '[^0-9]', '', 'g') = $1", d.text(&c))
                    }
                    Dialect::MySql => format!("REGEXP_REPLACE({c}, '[^0-9]', '') = ?"),
                },
                vec![normalised.to_string()],
            ),
        };
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {condition}",
            d.quote(&et.key),
            d.text(&c),
            d.quote(&et.table)
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
        // One snapshot for every statement, read only, nothing locked.
        let mut tx = self.snapshot().await?;
        let cases = recheck::load(
            &mut Txn {
                conn: &mut tx,
                dialect: self.dialect,
                lock: false,
            },
            input,
        )
        .await;
        let _ = tx.rollback().await;
        cases
    }

    async fn component(&self, input: &ComponentInput) -> Result<Vec<EntityNow>, CrmError> {
        // As `subtrees`: one snapshot, read only, nothing locked. A column
        // stores one type here, so each key is looked up as read.
        let mut tx = self.snapshot().await?;
        let rows = component::load(
            &mut Txn {
                conn: &mut tx,
                dialect: self.dialect,
                lock: false,
            },
            input,
            false,
        )
        .await;
        let _ = tx.rollback().await;
        rows
    }

    async fn export_rows(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, CrmError> {
        let d = self.dialect;
        let columns = self
            .catalogue(&et.table)
            .await?
            .ok_or_else(|| CrmError::no_table(et))?;
        let kinds: Vec<ValueKind> = columns.iter().map(|(_, ty)| ValueKind::of(ty)).collect();
        // The key first, to know the row; then every column, as text
        // unless it is binary (sqlx's Any driver reads no dates, decimals
        // or JSON; their text is what the database gives).
        let mut list = vec![d.quote(&et.key)];
        for ((name, _), kind) in columns.iter().zip(&kinds) {
            let c = d.quote_name(name);
            list.push(match kind {
                ValueKind::Binary => c,
                _ => d.text(&c),
            });
        }
        let requested = super::Requested::new(keys);
        let mut out = Vec::new();
        for chunk in key_chunks(d, keys) {
            let (cond, binds) = key_condition(d, &et.key, &chunk);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}",
                list.join(", "),
                d.quote(&et.table)
            );
            let rows = match bind_list(sqlx::query(AssertSqlSafe(sql)), binds)
                .fetch_all(&self.pool)
                .await
            {
                Ok(rows) => rows,
                // Text keys of an integer column (as in `existing`):
                // PostgreSQL refuses the comparison; no such row exists.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42883") => {
                    continue;
                }
                Err(e) => return Err(CrmError::query(et, e)),
            };
            for row in &rows {
                let Some(key) = key_at(row, 0).filter(|k| requested.contains(k)) else {
                    continue;
                };
                let mut object = serde_json::Map::new();
                for (i, ((name, _), kind)) in columns.iter().zip(&kinds).enumerate() {
                    let value = kind.json(row, i + 1).map_err(|e| CrmError::query(et, e))?;
                    object.insert(name.clone(), value);
                }
                out.push((key, object));
            }
        }
        Ok(super::sorted_rows(out))
    }

    async fn count(&self, et: &EntityType) -> Result<u64, CrmError> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.dialect.quote(&et.table));
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| CrmError::query(et, e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn after_apply(&self) -> Result<Vec<String>, CrmError> {
        match self.dialect {
            Dialect::Postgres => {
                let rows = sqlx::query(
                    "SELECT CAST(relname AS TEXT), CAST(n_dead_tup AS BIGINT) FROM pg_stat_user_tables WHERE n_dead_tup > 0 ORDER BY relname",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(CrmError::Transaction)?;
                let dead: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{} ({} dead rows)", r.get::<String, _>(0), r.get::<i64, _>(1)))
                    .collect();
                let mut notes = Vec::new();
                if dead.is_empty() {
                    notes.push("postgres: no table holds dead rows".to_string());
                } else if self.vacuum {
                    for r in &rows {
                        let table: String = r.get(0);
                        sqlx::query(AssertSqlSafe(format!("VACUUM {}", self.dialect.quote(&table))))
                            .execute(&self.pool)
                            .await
                            .map_err(CrmError::Transaction)?;
                    }
                    notes.push(format!("postgres: VACUUM run on {}", dead.join(", ")));
                } else {
                    notes.push(format!(
                        "postgres: deleted rows stay on disk until VACUUM: {}; set [crm] vacuum = true to run it after apply",
                        dead.join(", ")
                    ));
                }
                Ok(notes)
            }
            Dialect::MySql => Ok(vec![
                "mysql: InnoDB purges deleted rows in the background; OPTIMIZE TABLE reclaims their pages".into(),
            ]),
        }
    }
}

/// How an export reads a column of a given catalogue type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    /// Read as text, given as a JSON number.
    Integer,
    /// Read as text, given as a JSON number (its text when JSON has none:
    /// `NaN`, `Infinity`).
    Real,
    /// PostgreSQL's boolean: read as text, given as a JSON boolean.
    Boolean,
    /// Read as bytes, given as base64.
    Binary,
    /// Read as text, given as a string: text, dates and timestamps,
    /// decimals (exact), JSON, UUIDs, arrays, anything else.
    Text,
}

impl ValueKind {
    /// By the catalogue's type name in lower case (PostgreSQL's
    /// `format_type`, MariaDB's `DATA_TYPE`), without its modifiers.
    fn of(ty: &str) -> ValueKind {
        let base = ty.split('(').next().unwrap_or(ty).trim();
        match base {
            "smallint" | "integer" | "bigint" | "int" | "tinyint" | "mediumint" => {
                ValueKind::Integer
            }
            "real" | "double precision" | "double" | "float" => ValueKind::Real,
            "boolean" => ValueKind::Boolean,
            "bytea" | "blob" | "tinyblob" | "mediumblob" | "longblob" | "binary" | "varbinary" => {
                ValueKind::Binary
            }
            _ => ValueKind::Text,
        }
    }

    fn json(self, row: &AnyRow, i: usize) -> Result<serde_json::Value, sqlx::Error> {
        use serde_json::Value;
        if self == ValueKind::Binary {
            return Ok(row
                .try_get::<Option<Vec<u8>>, _>(i)?
                .map_or(Value::Null, |b| super::blob_json(&b)));
        }
        let Some(text) = row.try_get::<Option<String>, _>(i)? else {
            return Ok(Value::Null);
        };
        Ok(self.typed(text))
    }

    /// A value read as text, typed for JSON; text that does not read as
    /// its type stays text.
    fn typed(self, text: String) -> serde_json::Value {
        use serde_json::Value;
        match self {
            ValueKind::Integer => text
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| text.parse::<u64>().map(Value::from))
                .unwrap_or(Value::String(text)),
            ValueKind::Real => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::String(text), Value::Number),
            ValueKind::Boolean => match text.as_str() {
                "true" | "t" => Value::Bool(true),
                "false" | "f" => Value::Bool(false),
                _ => Value::String(text),
            },
            ValueKind::Binary | ValueKind::Text => Value::String(text),
        }
    }
}

/// Keys split by kind (integer, text), then into statement-sized chunks:
/// `CHUNK` for an IN list; far more for PostgreSQL's single array.
fn key_chunks(d: Dialect, keys: &[EntityKey]) -> Vec<Vec<EntityKey>> {
    let size = match d {
        Dialect::Postgres => 20_000,
        Dialect::MySql => CHUNK,
    };
    let (ints, texts): (Vec<EntityKey>, Vec<EntityKey>) = keys
        .iter()
        .cloned()
        .partition(|k| matches!(k, EntityKey::Int(_)));
    [ints, texts]
        .iter()
        .flat_map(|part| part.chunks(size).map(<[EntityKey]>::to_vec))
        .collect()
}

/// How a chunk of keys (all of one kind) is bound.
enum KeyList {
    /// PostgreSQL: one array literal, cast in the statement.
    Array(String),
    /// MySQL: one parameter per key.
    Keys(Vec<EntityKey>),
}

/// `column` matching a chunk of keys of one kind. PostgreSQL gets one
/// array parameter (`= ANY`), so that every batch reuses one prepared
/// statement whatever its length, instead of preparing an IN list of each
/// new length; MySQL gets an IN list.
fn key_condition(d: Dialect, column: &str, chunk: &[EntityKey]) -> (String, KeyList) {
    match d {
        Dialect::Postgres => {
            let ints = matches!(chunk.first(), Some(EntityKey::Int(_)));
            let mut array = String::from("{");
            for (i, k) in chunk.iter().enumerate() {
                if i > 0 {
                    array.push(',');
                }
                match k {
                    EntityKey::Int(n) => array.push_str(&n.to_string()),
                    EntityKey::Text(t) => {
                        // Every element quoted (so that a key spelled NULL
                        // stays a string), backslash and quote escaped.
                        array.push('"');
                        for c in t.chars() {
                            if c == '"' || c == '\\' {
                                array.push('\\');
                            }
                            array.push(c);
                        }
                        array.push('"');
                    }
                }
            }
            array.push('}');
            let ty = if ints { "BIGINT" } else { "TEXT" };
            (
                format!("{} = ANY(CAST($1 AS {ty}[]))", d.quote(column)),
                KeyList::Array(array),
            )
        }
        Dialect::MySql => (
            format!("{} IN ({})", d.quote(column), d.params(1, chunk.len())),
            KeyList::Keys(chunk.to_vec()),
        ),
    }
}

fn bind_list<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    list: KeyList,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    match list {
        KeyList::Array(a) => q.bind(a),
        KeyList::Keys(keys) => bind_keys(q, &keys),
    }
}

struct Txn<'c> {
    conn: &'c mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    /// Lock the rows read (`FOR UPDATE`): the deleting transaction does, a
    /// subject request's read (`subtrees`) does not.
    lock: bool,
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
        let d = self.dialect;
        let extra_at = 1 + et.clock.len() + et.parents.len();
        let mut out = Vec::new();
        for chunk in key_chunks(d, values) {
            let (cond, list) = key_condition(d, column, &chunk);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}{}",
                // The select list quotes; the column is selected again
                // to know which value matched, then each condition.
                {
                    let mut cols = vec![d.quote(&et.key)];
                    cols.extend(et.clock.iter().map(|c| d.text(&d.quote(c))));
                    cols.extend(et.parents.iter().map(|(_, c)| d.quote(c)));
                    cols.push(d.quote(column));
                    cols.extend(conditions.iter().map(|c| super::condition_column(c)));
                    cols.join(", ")
                },
                d.quote(&et.table),
                if self.lock { " FOR UPDATE" } else { "" },
            );
            let rows = bind_list(sqlx::query(AssertSqlSafe(sql)), list)
                .fetch_all(&mut **self.conn)
                .await
                .map_err(|e| CrmError::query(et, e))?;
            for row in &rows {
                if let Some(r) = entity_row(et, row) {
                    let bits =
                        super::condition_bits(conditions.len(), |j| key_at(row, extra_at + 1 + j));
                    out.push((r, key_at(row, extra_at), bits));
                }
            }
        }
        Ok(out)
    }

    async fn identifier_values(
        &mut self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
        let d = self.dialect;
        let mut cols = vec![d.quote(&et.key)];
        cols.extend(et.identifiers.iter().map(|c| d.text(&d.quote(c))));
        let mut out = Vec::new();
        for chunk in key_chunks(d, keys) {
            let (cond, list) = key_condition(d, &et.key, &chunk);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}",
                cols.join(", "),
                d.quote(&et.table)
            );
            let rows = bind_list(sqlx::query(AssertSqlSafe(sql)), list)
                .fetch_all(&mut **self.conn)
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
        let d = self.dialect;
        let mut n = 0;
        for chunk in key_chunks(d, keys) {
            let (cond, list) = key_condition(d, &et.key, &chunk);
            let sql = format!("DELETE FROM {} WHERE {cond}", d.quote(&et.table));
            n += bind_list(sqlx::query(AssertSqlSafe(sql)), list)
                .execute(&mut **self.conn)
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
        let d = self.dialect;
        let mut out = Vec::new();
        for chunk in key_chunks(d, values) {
            let (cond, list) = key_condition(d, &column.column, &chunk);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}{}",
                column.select,
                p.table,
                if self.lock { " FOR UPDATE" } else { "" },
            );
            let rows = bind_list(sqlx::query(AssertSqlSafe(sql)), list)
                .fetch_all(&mut **self.conn)
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
        let d = self.dialect;
        let mut n = 0;
        for chunk in key_chunks(d, values) {
            let (cond, list) = key_condition(d, &column.column, &chunk);
            let sql = format!("DELETE FROM {} WHERE {cond}", p.table);
            n += bind_list(sqlx::query(AssertSqlSafe(sql)), list)
                .execute(&mut **self.conn)
                .await
                .map_err(|e| recheck::payload_error(p, e))?
                .rows_affected();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod key_list_tests {
    use super::*;

    #[test]
    fn postgres_key_arrays_quote_every_text_key() {
        let keys = [
            EntityKey::Text("a\"b".into()),
            EntityKey::Text("c\\d".into()),
            EntityKey::Text("NULL".into()),
            EntityKey::Text("x,y}".into()),
        ];
        let (cond, list) = key_condition(Dialect::Postgres, "id", &keys);
        assert_eq!(cond, "\"id\" = ANY(CAST($1 AS TEXT[]))");
        match list {
            KeyList::Array(a) => assert_eq!(a, r#"{"a\"b","c\\d","NULL","x,y}"}"#),
            KeyList::Keys(_) => panic!("PostgreSQL binds one array"),
        }
        let (cond, list) = key_condition(
            Dialect::Postgres,
            "id",
            &[EntityKey::Int(-3), EntityKey::Int(7)],
        );
        assert!(cond.contains("BIGINT[]"));
        assert!(matches!(list, KeyList::Array(a) if a == "{-3,7}"));
        // Kinds never mix in one chunk; MySQL keeps its IN list.
        let mixed = [EntityKey::Int(1), EntityKey::Text("1".into())];
        assert_eq!(key_chunks(Dialect::Postgres, &mixed).len(), 2);
        let (cond, _) = key_condition(
            Dialect::MySql,
            "id",
            &[EntityKey::Int(1), EntityKey::Int(2)],
        );
        assert_eq!(cond, "`id` IN (?, ?)");
    }

    #[test]
    fn export_types_by_catalogue_name() {
        use serde_json::json;
        assert_eq!(ValueKind::of("integer"), ValueKind::Integer);
        assert_eq!(ValueKind::of("bigint"), ValueKind::Integer);
        assert_eq!(ValueKind::of("int"), ValueKind::Integer);
        assert_eq!(ValueKind::of("double precision"), ValueKind::Real);
        assert_eq!(ValueKind::of("real"), ValueKind::Real);
        assert_eq!(ValueKind::of("boolean"), ValueKind::Boolean);
        assert_eq!(ValueKind::of("bytea"), ValueKind::Binary);
        assert_eq!(ValueKind::of("varbinary"), ValueKind::Binary);
        for text in [
            "character varying(200)",
            "numeric(10,2)",
            "decimal",
            "timestamp with time zone",
            "datetime",
            "integer[]",
            "jsonb",
        ] {
            assert_eq!(ValueKind::of(text), ValueKind::Text, "{text}");
        }
        assert_eq!(ValueKind::Integer.typed("-42".into()), json!(-42));
        assert_eq!(
            ValueKind::Integer.typed("18446744073709551615".into()),
            json!(18446744073709551615u64)
        );
        assert_eq!(ValueKind::Real.typed("0.1".into()), json!(0.1));
        assert_eq!(ValueKind::Real.typed("1e+20".into()), json!(1e20));
        assert_eq!(ValueKind::Real.typed("NaN".into()), json!("NaN"));
        assert_eq!(ValueKind::Boolean.typed("true".into()), json!(true));
        assert_eq!(ValueKind::Text.typed("012".into()), json!("012"));
    }
}
