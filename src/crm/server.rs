//! The CRM on a database server: PostgreSQL and MariaDB/MySQL, through
//! sqlx's `Any` driver with a small dialect table (identifier quoting,
//! placeholders, casts). Clocks are read as text (`CAST(… AS TEXT)`), so
//! every common column type works the same way: timestamptz, timestamp,
//! datetime, date, ISO text, epoch seconds. Sessions run in UTC.
//!
//! UUID columns (PostgreSQL's `uuid`, which the `Any` driver neither
//! decodes nor compares with text; MariaDB's `UUID`, which refuses to be
//! compared with an integer) are read as their text (lower case, as the
//! server prints it) wherever a key or a foreign key is read; PostgreSQL
//! matches them against a text array cast to `UUID[]` (so that the
//! column's index serves). A key that is not a UUID in that text names no
//! row there and is never bound.
//!
//! The deleting transaction locks what it re-checks (`SELECT … FOR UPDATE`),
//! so nothing changes between the re-check and the delete; a child inserted
//! meanwhile waits for the lock and then fails its foreign key.
//!
//! (Over 800 lines on purpose: one `impl Crm` for both dialects, each
//! method's statements side by side with their dialect differences.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

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
use crate::model::{EntityKey, is_printed_uuid, parse_clock_text};
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
    /// Per table (quoted as the statements write it): its uuid columns,
    /// from the catalogue on first use.
    uuid_columns: Mutex<HashMap<String, Uuids>>,
}

/// How a key or foreign-key column is read and matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyColumn {
    /// As the driver reads it; matched by an array of its kind (PostgreSQL)
    /// or an IN list (MariaDB).
    Plain,
    /// A UUID column: read as text, matched only by keys in the text the
    /// server prints, on PostgreSQL by `= ANY(CAST($1 AS UUID[]))`.
    Uuid,
}

/// The parts of a name `Dialect::MySql.quote` wrote (`` `a`.`b` ``).
fn unquote_mysql(quoted: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut chars = quoted.chars().peekable();
    while chars.next() == Some('`') {
        let mut part = String::new();
        while let Some(c) = chars.next() {
            if c == '`' {
                if chars.peek() == Some(&'`') {
                    chars.next();
                } else {
                    break;
                }
            }
            part.push(c);
        }
        parts.push(part);
        if chars.next() != Some('.') {
            break;
        }
    }
    parts
}

/// The uuid columns of one table: PostgreSQL's `uuid` (and domains over
/// it), MariaDB's `UUID` (which the driver reads as text, and which
/// refuses to be compared with an integer).
#[derive(Clone, Debug, Default)]
struct Uuids {
    columns: Arc<HashSet<String>>,
    /// The names are in lower case, and so is a name looked up (MariaDB
    /// matches column names without regard to case).
    fold: bool,
}

impl Uuids {
    fn column(&self, column: &str) -> KeyColumn {
        let uuid = if self.fold {
            self.columns.contains(&column.to_ascii_lowercase())
        } else {
            self.columns.contains(column)
        };
        if uuid {
            KeyColumn::Uuid
        } else {
            KeyColumn::Plain
        }
    }

    /// A key or foreign-key column in a select list.
    fn read(&self, d: Dialect, column: &str) -> String {
        match self.column(column) {
            KeyColumn::Uuid => d.text(&d.quote(column)),
            KeyColumn::Plain => d.quote(column),
        }
    }
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
            uuid_columns: Mutex::new(HashMap::new()),
        })
    }

    /// The uuid columns of the table `quoted` (a name as `Dialect::quote`
    /// writes it), read from the catalogue once; none when there is no
    /// such table (its statements then fail on their own).
    async fn uuids(&self, quoted: &str) -> Result<Uuids, CrmError> {
        let cached = self
            .uuid_columns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(quoted)
            .cloned();
        if let Some(u) = cached {
            return Ok(u);
        }
        let names: Result<Vec<String>, sqlx::Error> = match self.dialect {
            // A domain over uuid is matched as a uuid.
            Dialect::Postgres => sqlx::query_scalar(
                "SELECT CAST(a.attname AS TEXT) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                 WHERE a.attrelid = to_regclass(CAST($1 AS TEXT)) AND a.attnum > 0 AND NOT a.attisdropped
                   AND (t.oid = CAST('uuid' AS regtype) OR t.typbasetype = CAST('uuid' AS regtype))",
            )
            .bind(quoted.to_string())
            .fetch_all(&self.pool)
            .await,
            Dialect::MySql => {
                let mut parts = unquote_mysql(quoted);
                let name = parts.pop().unwrap_or_default();
                sqlx::query_scalar(
                    "SELECT LOWER(CAST(COLUMN_NAME AS CHAR)) FROM information_schema.COLUMNS
                     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND LOWER(DATA_TYPE) = 'uuid'",
                )
                .bind(parts.pop())
                .bind(name)
                .fetch_all(&self.pool)
                .await
            }
        };
        let names = names.map_err(|source| CrmError::Catalogue {
            table: quoted.to_string(),
            source,
        })?;
        let u = Uuids {
            columns: Arc::new(names.into_iter().collect()),
            fold: self.dialect == Dialect::MySql,
        };
        self.uuid_columns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(quoted.to_string(), u.clone());
        Ok(u)
    }

    /// The uuid columns of an entity type's table.
    async fn uuids_of(&self, et: &EntityType) -> Result<Uuids, CrmError> {
        self.uuids(&self.dialect.quote(&et.table)).await
    }

    /// The uuid columns of every table a transaction over `entities` (and
    /// the payload table) may read, by quoted name: read before the
    /// transaction begins.
    async fn uuids_all(
        &self,
        entities: &[EntityType],
        payloads: Option<&PayloadInput>,
    ) -> Result<HashMap<String, Uuids>, CrmError> {
        let mut out = HashMap::new();
        let tables = entities
            .iter()
            .map(|et| self.dialect.quote(&et.table))
            .chain(payloads.map(|p| p.table.clone()));
        for t in tables {
            if let std::collections::hash_map::Entry::Vacant(e) = out.entry(t) {
                let u = self.uuids(e.key()).await?;
                e.insert(u);
            }
        }
        Ok(out)
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
}

/// An entity row's select list: key, clocks (as text), parents; what
/// `entity_row` reads.
fn entity_list(d: Dialect, et: &EntityType, u: &Uuids) -> Vec<String> {
    let mut cols = vec![u.read(d, &et.key)];
    cols.extend(et.clock.iter().map(|c| d.text(&d.quote(c))));
    cols.extend(et.parents.iter().map(|(_, c)| u.read(d, c)));
    cols
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

fn entity_row(et: &EntityType, row: &AnyRow) -> Result<EntityRow, CrmError> {
    let key = key_at(row, 0).ok_or_else(|| unreadable_key(et, &et.key, row, 0))?;
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
    let mut parents = Vec::with_capacity(et.parents.len());
    for (i, (_, column)) in et.parents.iter().enumerate() {
        let parent = key_at(row, base + i);
        if parent.is_none() && !row.try_get_raw(base + i).is_ok_and(|v| v.is_null()) {
            return Err(unreadable_key(et, column, row, base + i));
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

/// [`CrmError::UnreadableKey`] of the value at `i` (the key when `i` is
/// 0, else a parent). `lethe check` refuses key and parent columns of
/// types lethe cannot read; what is left is a NULL key, or a value the
/// driver would not give as an integer or text.
fn unreadable_key(et: &EntityType, column: &str, row: &AnyRow, i: usize) -> CrmError {
    let null = row.try_get_raw(i).is_ok_and(|v| v.is_null());
    let (what, find) = if null {
        (
            "NULL",
            format!(
                "Find such rows with `SELECT * FROM {} WHERE {} IS NULL` and give each a key.",
                et.table, column
            ),
        )
    } else {
        (
            "a value of a type lethe does not read",
            "Run `lethe check`: it names the key and parent columns whose types lethe refuses."
                .to_string(),
        )
    };
    CrmError::unreadable_key(et, column, what, find)
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
                    // PostgreSQL's format_type and MariaDB's DATA_TYPE.
                    uuid: ty == "uuid",
                    unkeyed: matches!(ValueKind::of(&ty), ValueKind::Binary)
                        .then(|| ty.clone())
                        .or_else(|| {
                            let base = ty.split('(').next().unwrap_or(&ty).trim();
                            matches!(base, "numeric" | "decimal").then(|| ty.clone())
                        }),
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
        let u = self.uuids_of(et).await?;
        let sql = format!(
            "SELECT {} FROM {}",
            entity_list(self.dialect, et, &u).join(", "),
            self.dialect.quote(&et.table)
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await.map_err(|e| CrmError::query(et, e))? {
            sink(entity_row(et, &row)?);
            n += 1;
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
        let u = self.uuids_of(et).await?;
        let sql = format!(
            "SELECT {} FROM {} WHERE ({condition})",
            u.read(d, &et.key),
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
        let u = self.uuids_of(et).await?;
        let c = d.quote(column);
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {c} IS NOT NULL",
            u.read(d, &et.key),
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
        let u = self.uuids_of(et).await?;
        let kc = u.column(&et.key);
        let mut out = Vec::new();
        // One kind of key per statement, and statements that differ by
        // kind: PostgreSQL takes the keys as one array cast to BIGINT[],
        // TEXT[] or UUID[]. (An IN list of N integers and one of N texts
        // would be the same SQL text, and the connection's prepared
        // statement for one would be sent the other's values.)
        for chunk in key_chunks(d, keys, kc) {
            let (cond, list) = key_condition(d, &et.key, &chunk, kc);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}",
                u.read(d, &et.key),
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
        let uuids = self.uuids_all(std::slice::from_ref(et), None).await?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| CrmError::query(et, e))?;
        let out = Txn {
            conn: &mut tx,
            dialect: self.dialect,
            lock: false,
            uuids,
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
        let uuids = self
            .uuids_all(&input.entities, input.payloads.as_ref())
            .await?;
        let mut tx = self.pool.begin().await.map_err(CrmError::Transaction)?;
        let mut ops = Txn {
            conn: &mut tx,
            dialect: self.dialect,
            lock: true,
            uuids,
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
        let u = self.uuids_of(et).await?;
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {condition}",
            u.read(d, &et.key),
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
        let uuids = self.uuids_all(&input.entities, None).await?;
        let mut tx = self.snapshot().await?;
        let cases = recheck::load(
            &mut Txn {
                conn: &mut tx,
                dialect: self.dialect,
                lock: false,
                uuids,
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
        let uuids = self.uuids_all(&input.entities, None).await?;
        let mut tx = self.snapshot().await?;
        let rows = component::load(
            &mut Txn {
                conn: &mut tx,
                dialect: self.dialect,
                lock: false,
                uuids,
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
        let u = self.uuids_of(et).await?;
        let kc = u.column(&et.key);
        let mut list = vec![u.read(d, &et.key)];
        for ((name, _), kind) in columns.iter().zip(&kinds) {
            let c = d.quote_name(name);
            list.push(match kind {
                ValueKind::Binary => c,
                _ => d.text(&c),
            });
        }
        let requested = super::Requested::new(keys);
        let mut out = Vec::new();
        for chunk in key_chunks(d, keys, kc) {
            let (cond, binds) = key_condition(d, &et.key, &chunk, kc);
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
/// `CHUNK` for an IN list; far more for PostgreSQL's single array. A uuid
/// column keeps only the keys in the text it prints: any other key names
/// no row there (an integer, a text that is no UUID, a UUID in capitals),
/// and would fail the statement's cast.
fn key_chunks(d: Dialect, keys: &[EntityKey], column: KeyColumn) -> Vec<Vec<EntityKey>> {
    let size = match d {
        Dialect::Postgres => 20_000,
        Dialect::MySql => CHUNK,
    };
    let (ints, texts): (Vec<EntityKey>, Vec<EntityKey>) = keys
        .iter()
        .filter(|k| match column {
            KeyColumn::Plain => true,
            KeyColumn::Uuid => matches!(k, EntityKey::Text(t) if is_printed_uuid(t)),
        })
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
/// new length; cast to the uuid column's own type, so that its index
/// serves. MySQL gets an IN list.
fn key_condition(
    d: Dialect,
    column: &str,
    chunk: &[EntityKey],
    kind: KeyColumn,
) -> (String, KeyList) {
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
            let ty = match (kind, ints) {
                (KeyColumn::Uuid, _) => "UUID",
                (KeyColumn::Plain, true) => "BIGINT",
                (KeyColumn::Plain, false) => "TEXT",
            };
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
    /// The uuid columns of every table the transaction reads, by quoted
    /// name (`ServerCrm::uuids_all`).
    uuids: HashMap<String, Uuids>,
}

impl Txn<'_> {
    fn uuids(&self, quoted: &str) -> Uuids {
        self.uuids.get(quoted).cloned().unwrap_or_default()
    }
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
        let u = self.uuids(&d.quote(&et.table));
        let kc = u.column(column);
        let extra_at = 1 + et.clock.len() + et.parents.len();
        let mut out = Vec::new();
        for chunk in key_chunks(d, values, kc) {
            let (cond, list) = key_condition(d, column, &chunk, kc);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}{}",
                // The select list quotes; the column is selected again
                // to know which value matched, then each condition.
                {
                    let mut cols = entity_list(d, et, &u);
                    cols.push(u.read(d, column));
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
        let d = self.dialect;
        let u = self.uuids(&d.quote(&et.table));
        let kc = u.column(&et.key);
        let mut cols = vec![u.read(d, &et.key)];
        cols.extend(et.identifiers.iter().map(|c| d.text(&d.quote(c))));
        let mut out = Vec::new();
        for chunk in key_chunks(d, keys, kc) {
            let (cond, list) = key_condition(d, &et.key, &chunk, kc);
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
        let kc = self.uuids(&d.quote(&et.table)).column(&et.key);
        let mut n = 0;
        for chunk in key_chunks(d, keys, kc) {
            let (cond, list) = key_condition(d, &et.key, &chunk, kc);
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
        let kc = self.uuids(&p.table).column(&column.column);
        let mut out = Vec::new();
        for chunk in key_chunks(d, values, kc) {
            let (cond, list) = key_condition(d, &column.column, &chunk, kc);
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
        let kc = self.uuids(&p.table).column(&column.column);
        let mut n = 0;
        for chunk in key_chunks(d, values, kc) {
            let (cond, list) = key_condition(d, &column.column, &chunk, kc);
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
        let (cond, list) = key_condition(Dialect::Postgres, "id", &keys, KeyColumn::Plain);
        assert_eq!(cond, "\"id\" = ANY(CAST($1 AS TEXT[]))");
        match list {
            KeyList::Array(a) => assert_eq!(a, r#"{"a\"b","c\\d","NULL","x,y}"}"#),
            KeyList::Keys(_) => panic!("PostgreSQL binds one array"),
        }
        let (cond, list) = key_condition(
            Dialect::Postgres,
            "id",
            &[EntityKey::Int(-3), EntityKey::Int(7)],
            KeyColumn::Plain,
        );
        assert!(cond.contains("BIGINT[]"));
        assert!(matches!(list, KeyList::Array(a) if a == "{-3,7}"));
        // Kinds never mix in one chunk; MySQL keeps its IN list.
        let mixed = [EntityKey::Int(1), EntityKey::Text("1".into())];
        assert_eq!(
            key_chunks(Dialect::Postgres, &mixed, KeyColumn::Plain).len(),
            2
        );
        let (cond, _) = key_condition(
            Dialect::MySql,
            "id",
            &[EntityKey::Int(1), EntityKey::Int(2)],
            KeyColumn::Plain,
        );
        assert_eq!(cond, "`id` IN (?, ?)");
    }

    #[test]
    fn a_uuid_column_is_matched_by_a_uuid_array_of_printed_uuids_only() {
        let printed = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let keys = [
            EntityKey::Text(printed.into()),
            // Never bound: no row of a uuid column prints as these, and
            // the cast would fail the statement.
            EntityKey::Text("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into()),
            EntityKey::Text("not-a-uuid".into()),
            EntityKey::Text("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}".into()),
            EntityKey::Int(18),
        ];
        let chunks = key_chunks(Dialect::Postgres, &keys, KeyColumn::Uuid);
        assert_eq!(chunks, vec![vec![EntityKey::Text(printed.into())]]);
        let (cond, list) = key_condition(Dialect::Postgres, "lead_id", &chunks[0], KeyColumn::Uuid);
        assert_eq!(cond, "\"lead_id\" = ANY(CAST($1 AS UUID[]))");
        assert!(matches!(list, KeyList::Array(a) if a == format!("{{\"{printed}\"}}")));
        assert!(
            key_chunks(Dialect::Postgres, &keys[1..], KeyColumn::Uuid).is_empty(),
            "nothing to ask"
        );
        let u = Uuids {
            columns: Arc::new(["id".to_string()].into_iter().collect()),
            fold: false,
        };
        assert_eq!(u.read(Dialect::Postgres, "id"), "CAST(\"id\" AS TEXT)");
        assert_eq!(u.read(Dialect::Postgres, "lead_id"), "\"lead_id\"");
        assert_eq!(
            u.column("ID"),
            KeyColumn::Plain,
            "PostgreSQL: another column"
        );
        let u = Uuids { fold: true, ..u };
        assert_eq!(u.column("ID"), KeyColumn::Uuid, "MariaDB: the same column");
        // MariaDB: the IN list keeps its form, printed UUIDs only.
        let chunks = key_chunks(Dialect::MySql, &keys, KeyColumn::Uuid);
        assert_eq!(chunks, vec![vec![EntityKey::Text(printed.into())]]);
        let (cond, _) = key_condition(Dialect::MySql, "id", &chunks[0], KeyColumn::Uuid);
        assert_eq!(cond, "`id` IN (?)");
    }

    #[test]
    fn mysql_names_unquoted() {
        assert_eq!(unquote_mysql("`payloads`"), vec!["payloads"]);
        assert_eq!(
            unquote_mysql("`crm`.`pay``loads`"),
            vec!["crm", "pay`loads"]
        );
        assert_eq!(
            unquote_mysql(&Dialect::MySql.quote("a.b")),
            vec!["a".to_string(), "b".to_string()]
        );
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
