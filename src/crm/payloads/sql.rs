//! The payload table in an SQL CRM (SQLite, PostgreSQL, MariaDB). Every
//! statement lethe sends that table is here,
//! in the three dialects (SQLite, PostgreSQL, MariaDB), over sqlx's `Any`
//! driver; the store decodes bodies and judges expectations.
//!
//! A listing never reads a body: it pages by key (keyset, `ORDER BY key`)
//! and asks the database for each body's decoded size (Base64: the text's
//! length without line breaks and padding, times 3/4). Deletes and
//! rewrites lock the rows they judge (`FOR UPDATE`; SQLite `BEGIN
//! IMMEDIATE`) and change only the rows the caller approved, in one
//! transaction. Sessions run in UTC; SQLite connections with
//! `secure_delete=ON`, as the CRM's own.

use std::collections::HashMap;

use futures::TryStreamExt;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Executor, Row};

use super::{ForeignKey, PayloadRow, RowFate};
use crate::config::{BodyEncoding, CrmUrl, EntityType, TableSettings};
use crate::crm::{CrmError, PayloadColumn, PayloadInput};
use crate::model::parse_clock_text;

/// Rows per page of a listing, and keys per delete statement.
const PAGE: usize = 2000;
const CHUNK: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    fn quote(self, name: &str) -> String {
        name.split('.')
            .map(|p| match self {
                Dialect::Postgres => format!("\"{}\"", p.replace('"', "\"\"")),
                Dialect::Sqlite | Dialect::MySql => format!("`{}`", p.replace('`', "``")),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn text(self, expr: &str) -> String {
        match self {
            Dialect::MySql => format!("CAST({expr} AS CHAR)"),
            _ => format!("CAST({expr} AS TEXT)"),
        }
    }

    fn param(self, i: usize) -> String {
        match self {
            Dialect::Postgres => format!("${i}"),
            _ => "?".into(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }
}

pub struct SqlTable {
    pool: AnyPool,
    dialect: Dialect,
    spec: TableSettings,
    /// The key column's type, read from the catalogue on first use.
    key: tokio::sync::OnceCell<KeyType>,
    label: String,
}

/// The key column's type: integer (bound as one), or, on PostgreSQL, the
/// type a text parameter is cast to (`text`, `uuid`, ...).
#[derive(Clone, Debug)]
struct KeyType {
    int: bool,
    /// The server's UUID type (not SQLite, where a column declared UUID
    /// holds any text): only a key in the text the server prints names a
    /// row.
    uuid: bool,
    name: String,
}

fn query_error(spec: &TableSettings, source: sqlx::Error) -> CrmError {
    CrmError::Query {
        entity: "technical.table".into(),
        table: spec.table.clone(),
        source,
    }
}

impl SqlTable {
    /// A pool on the CRM's database, connected on first use (so that
    /// opening a store stays synchronous).
    pub fn connect(crm: &CrmUrl, spec: TableSettings) -> Result<SqlTable, CrmError> {
        sqlx::any::install_default_drivers();
        let (dialect, options, label) = match crm {
            CrmUrl::Sqlite(path) => {
                let url = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .to_url_lossy();
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (Dialect::Sqlite, AnyConnectOptions::from_url(&url), file)
            }
            CrmUrl::Postgres(url) => (
                Dialect::Postgres,
                url.expose().parse::<AnyConnectOptions>(),
                "server".into(),
            ),
            CrmUrl::Mysql(url) => (
                Dialect::MySql,
                url.expose()
                    .replacen("mariadb://", "mysql://", 1)
                    .parse::<AnyConnectOptions>(),
                "server".into(),
            ),
            CrmUrl::Dataverse { .. } => {
                return Err(CrmError::Unsupported(
                    "the payload table of a Dataverse CRM is not an SQL table".into(),
                ));
            }
        };
        let options = options.map_err(|source| CrmError::Connect {
            target: format!(
                "{} (the payload table's database: [crm] url)",
                dialect.name()
            ),
            source,
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let sql = match dialect {
                        Dialect::Sqlite => "PRAGMA secure_delete = ON; PRAGMA busy_timeout = 30000",
                        Dialect::Postgres => "SET TIME ZONE 'UTC'",
                        Dialect::MySql => "SET time_zone = '+00:00'",
                    };
                    conn.execute(sql).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(SqlTable {
            pool,
            dialect,
            label: format!("{} {label} table {}", dialect.name(), spec.table),
            spec,
            key: tokio::sync::OnceCell::new(),
        })
    }

    /// The key column's type, from the catalogue (text when the table or
    /// column is not there: every statement then fails on its own).
    async fn key_type(&self) -> Result<&KeyType, CrmError> {
        self.key
            .get_or_try_init(|| async {
                let cols = self.catalogue().await?.unwrap_or_default();
                let ty = cols
                    .iter()
                    .find(|(n, _)| crate::crm::fit::same(self.dialect.name(), n, &self.spec.key))
                    .map(|(_, ty)| ty.split('(').next().unwrap_or(ty).trim().to_string())
                    .unwrap_or_else(|| "text".into());
                Ok(KeyType {
                    int: ty.contains("int"),
                    uuid: ty == "uuid" && self.dialect != Dialect::Sqlite,
                    name: ty,
                })
            })
            .await
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn settings(&self) -> &TableSettings {
        &self.spec
    }

    /// `postgres server table payloads`: no key, no name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The table's columns (name, type in lower case) as the catalogue
    /// lists them; `None` when there is no such table.
    pub async fn catalogue(&self) -> Result<Option<Vec<(String, String)>>, CrmError> {
        let table = &self.spec.table;
        let rows = match self.dialect {
            Dialect::Sqlite => {
                let (schema, name) = table.split_once('.').unwrap_or(("main", table));
                sqlx::query(
                    "SELECT name, lower(type) FROM pragma_table_info(?, ?) ORDER BY cid",
                )
                .bind(name.to_string())
                .bind(schema.to_string())
                .fetch_all(&self.pool)
                .await
            }
            Dialect::Postgres => sqlx::query(
                "SELECT CAST(a.attname AS TEXT), CAST(format_type(a.atttypid, a.atttypmod) AS TEXT)
                 FROM pg_attribute a
                 WHERE a.attrelid = to_regclass(CAST($1 AS TEXT)) AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
            )
            .bind(self.dialect.quote(table))
            .fetch_all(&self.pool)
            .await,
            Dialect::MySql => {
                let (schema, name) = match table.split_once('.') {
                    Some((s, t)) => (Some(s.to_string()), t.to_string()),
                    None => (None, table.clone()),
                };
                sqlx::query(
                    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR) FROM information_schema.COLUMNS
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
            table: table.clone(),
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
                        r.try_get::<String, _>(1).unwrap_or_default(),
                    )
                })
                .collect(),
        ))
    }

    /// The foreign keys from the payload table to other tables, with what
    /// a delete of the referenced row does to the payload row.
    pub async fn foreign_keys(&self) -> Result<Vec<ForeignKey>, CrmError> {
        let table = &self.spec.table;
        let rows = match self.dialect {
            Dialect::Sqlite => {
                let (schema, name) = table.split_once('.').unwrap_or(("main", table));
                sqlx::query(
                    "SELECT \"from\", \"table\", upper(on_delete) FROM pragma_foreign_key_list(?, ?)",
                )
                .bind(name.to_string())
                .bind(schema.to_string())
                .fetch_all(&self.pool)
                .await
            }
            Dialect::Postgres => sqlx::query(
                "SELECT CAST(a.attname AS TEXT), CAST(CAST(c.confrelid AS regclass) AS TEXT),
                        CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'r' THEN 'RESTRICT'
                          WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT' ELSE 'NO ACTION' END
                 FROM pg_constraint c
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
                 WHERE c.contype = 'f' AND c.conrelid = to_regclass(CAST($1 AS TEXT))",
            )
            .bind(self.dialect.quote(table))
            .fetch_all(&self.pool)
            .await,
            Dialect::MySql => {
                let (schema, name) = match table.split_once('.') {
                    Some((s, t)) => (Some(s.to_string()), t.to_string()),
                    None => (None, table.clone()),
                };
                sqlx::query(
                    "SELECT CAST(k.COLUMN_NAME AS CHAR), CAST(k.REFERENCED_TABLE_NAME AS CHAR), CAST(r.DELETE_RULE AS CHAR)
                     FROM information_schema.KEY_COLUMN_USAGE k
                     JOIN information_schema.REFERENTIAL_CONSTRAINTS r
                       ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
                     WHERE k.TABLE_SCHEMA = COALESCE(?, DATABASE()) AND k.TABLE_NAME = ?
                       AND k.REFERENCED_TABLE_NAME IS NOT NULL",
                )
                .bind(schema)
                .bind(name)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|source| CrmError::Catalogue {
            table: table.clone(),
            source,
        })?;
        Ok(rows
            .iter()
            .map(|r| ForeignKey {
                column: r.try_get::<String, _>(0).unwrap_or_default(),
                references: r.try_get::<String, _>(1).unwrap_or_default(),
                on_delete: r.try_get::<String, _>(2).unwrap_or_default(),
            })
            .collect())
    }

    /// The direct link columns that are foreign keys to their entity
    /// type's table, as (entity type index in `entities`, column): the
    /// rows the deleting transaction must take before their entities. A
    /// catalogue that cannot be read counts every link column as one (the
    /// transaction's way is safe either way).
    pub async fn foreign_key_columns(&self, entities: &[EntityType]) -> Vec<(u16, String)> {
        let fks = self.foreign_keys().await.ok();
        let kind = self.dialect.name();
        let last = |t: &str| {
            t.rsplit('.')
                .next()
                .unwrap_or(t)
                .trim_matches('"')
                .to_string()
        };
        let mut out = Vec::new();
        for (entity, column) in &self.spec.links {
            let Some(ti) = entities.iter().position(|e| &e.name == entity) else {
                continue;
            };
            let table = last(&entities[ti].table);
            let is_fk = match &fks {
                None => true,
                Some(fks) => fks.iter().any(|fk| {
                    crate::crm::fit::same(kind, &fk.column, column)
                        && crate::crm::fit::same(kind, &last(&fk.references), &table)
                }),
            };
            if is_fk {
                out.push((ti as u16, column.clone()));
            }
        }
        out
    }

    /// The deleting transaction's view of the payload table, for these
    /// foreign-key columns; its planned rows are the caller's.
    pub fn payload_input(&self, columns: &[(u16, String)]) -> PayloadInput {
        let d = self.dialect;
        let s = &self.spec;
        PayloadInput {
            table: d.quote(&s.table),
            columns: columns
                .iter()
                .map(|(ty, column)| PayloadColumn {
                    ty: *ty,
                    column: column.clone(),
                    select: [
                        d.text(&d.quote(&s.key)),
                        d.text(&d.quote(column)),
                        d.text(&d.quote(&s.modified)),
                        // Not the decoded size: the fingerprint below
                        // (stored length and version) is what the rows are
                        // judged by, and it costs no read of the body.
                        "NULL".into(),
                        self.fingerprint_expr(),
                    ]
                    .join(", "),
                    filter: None,
                })
                .collect(),
            planned: HashMap::new(),
        }
    }

    /// What a row is judged by when it is deleted or rewritten, as text:
    /// the body's stored length in bytes and the version column, as
    /// `len:<bytes>` or `len:<bytes>;<version>` ([`super::FINGERPRINT`]).
    /// The stored length is known to the database without reading the
    /// body (PostgreSQL keeps it in the value's header, TOASTed or not);
    /// the decoded size of Base64 text is not (every character read: on
    /// 500 rows of 10 KB in `psql`, 5.7–13 ms against 0.2–0.8 ms).
    fn fingerprint_expr(&self) -> String {
        let d = self.dialect;
        let b = d.quote(&self.spec.body);
        let stored = match d {
            Dialect::Sqlite | Dialect::Postgres => format!("COALESCE(octet_length({b}), 0)"),
            Dialect::MySql => format!("COALESCE(LENGTH({b}), 0)"),
        };
        let version = self.spec.version.as_ref().map(|v| d.text(&d.quote(v)));
        match (d, version) {
            (Dialect::MySql, Some(v)) => format!(
                "CONCAT('{p}', CAST({stored} AS CHAR), COALESCE(CONCAT(';', {v}), ''))",
                p = super::FINGERPRINT
            ),
            (Dialect::MySql, None) => {
                format!(
                    "CONCAT('{p}', CAST({stored} AS CHAR))",
                    p = super::FINGERPRINT
                )
            }
            (_, Some(v)) => format!(
                "'{p}' || {} || COALESCE(';' || {v}, '')",
                d.text(&stored),
                p = super::FINGERPRINT
            ),
            (_, None) => format!("'{p}' || {}", d.text(&stored), p = super::FINGERPRINT),
        }
    }

    /// The decoded body's size, computed by the database without sending
    /// the body.
    fn size_expr(&self) -> String {
        let d = self.dialect;
        let b = d.quote(&self.spec.body);
        let e = match (self.spec.encoding, d) {
            (BodyEncoding::Raw, Dialect::Sqlite) => format!("length(CAST({b} AS BLOB))"),
            (BodyEncoding::Raw, Dialect::Postgres) => format!("octet_length({b})"),
            (BodyEncoding::Raw, Dialect::MySql) => format!("LENGTH({b})"),
            // Base64: the characters that carry data (not CR, LF or the
            // padding), three bytes per four of them. `=` is only ever the
            // padding of valid Base64, so every one is removed (a body with
            // one elsewhere does not decode): `rtrim` of the padding costs
            // PostgreSQL three times as much on UTF-8 text.
            (BodyEncoding::Base64, Dialect::Sqlite) => format!(
                "length(replace(replace(replace({b}, char(13), ''), char(10), ''), '=', '')) * 3 / 4"
            ),
            (BodyEncoding::Base64, Dialect::Postgres) => format!(
                "octet_length(replace(replace(replace({b}, chr(13), ''), chr(10), ''), '=', '')) * 3 / 4"
            ),
            (BodyEncoding::Base64, Dialect::MySql) => format!(
                "LENGTH(REPLACE(REPLACE(REPLACE({b}, '\\r', ''), '\\n', ''), '=', '')) * 3 DIV 4"
            ),
        };
        match d {
            Dialect::Postgres => format!("CAST(COALESCE({e}, 0) AS BIGINT)"),
            Dialect::MySql => format!("CAST(COALESCE({e}, 0) AS SIGNED)"),
            Dialect::Sqlite => format!("COALESCE({e}, 0)"),
        }
    }

    /// The select list of a row without its body: key, name, modified,
    /// size, fingerprint (the row's version as lethe judges it), then the
    /// direct link columns (and the polymorphic pair).
    fn head_list(&self, kt: &KeyType) -> String {
        self.head_list_sized(kt, true)
    }

    /// [`Self::head_list`]; without `decoded_size`, the size is 0: a
    /// delete judges rows by the fingerprint alone.
    fn head_list_sized(&self, kt: &KeyType, decoded_size: bool) -> String {
        let d = self.dialect;
        let s = &self.spec;
        let opt = |c: &Option<String>| match c {
            Some(c) => d.text(&d.quote(c)),
            None => "NULL".into(),
        };
        let mut cols = vec![
            self.key_select(kt),
            opt(&s.name),
            d.text(&d.quote(&s.modified)),
            if decoded_size {
                self.size_expr()
            } else if d == Dialect::MySql {
                "CAST(0 AS SIGNED)".into()
            } else {
                "CAST(0 AS BIGINT)".into()
            },
            self.fingerprint_expr(),
        ];
        cols.extend(s.links.iter().map(|(_, c)| d.text(&d.quote(c))));
        if let Some(p) = &s.polymorphic {
            cols.push(d.text(&d.quote(&p.id)));
            cols.push(d.text(&d.quote(&p.type_column)));
        }
        cols.join(", ")
    }

    fn key_select(&self, kt: &KeyType) -> String {
        let k = self.dialect.quote(&self.spec.key);
        if kt.int {
            match self.dialect {
                Dialect::Postgres => format!("CAST({k} AS BIGINT)"),
                _ => k,
            }
        } else {
            self.dialect.text(&k)
        }
    }

    /// `key = <parameter i>`, the parameter cast to the key's type where
    /// PostgreSQL needs it (uuid).
    fn key_is(&self, kt: &KeyType, op: &str, i: usize) -> String {
        let k = self.dialect.quote(&self.spec.key);
        let p = self.dialect.param(i);
        match self.dialect {
            Dialect::Postgres if !kt.int => format!("{k} {op} CAST({p} AS {})", kt.name),
            _ => format!("{k} {op} {p}"),
        }
    }

    /// `key IN (…)` for a chunk of keys, and what to bind: PostgreSQL one
    /// array (one prepared statement whatever the chunk's length).
    fn keys_in(&self, kt: &KeyType, keys: &[&str]) -> (String, Vec<Bound>) {
        let k = self.dialect.quote(&self.spec.key);
        match self.dialect {
            Dialect::Postgres => {
                let mut array = String::from("{");
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        array.push(',');
                    }
                    array.push('"');
                    for c in key.chars() {
                        if c == '"' || c == '\\' {
                            array.push('\\');
                        }
                        array.push(c);
                    }
                    array.push('"');
                }
                array.push('}');
                let ty = if kt.int { "BIGINT" } else { &kt.name };
                (
                    format!("{k} = ANY(CAST($1 AS {ty}[]))"),
                    vec![Bound::Text(array)],
                )
            }
            _ => (
                format!("{k} IN ({})", vec!["?"; keys.len()].join(", ")),
                keys.iter().map(|key| Bound::of(kt, key)).collect(),
            ),
        }
    }

    fn row(&self, kt: &KeyType, r: &AnyRow) -> Option<PayloadRow> {
        let key = if kt.int {
            r.try_get::<i64, _>(0).ok()?.to_string()
        } else {
            r.try_get::<String, _>(0).ok()?
        };
        let text = |i: usize| r.try_get::<Option<String>, _>(i).ok().flatten();
        let size = r.try_get::<i64, _>(3).unwrap_or(0);
        let at = 5 + self.spec.links.len();
        let links = super::row_links(
            &self.spec,
            (5..at).map(text),
            Some((text(at), text(at + 1))),
        );
        Some(PayloadRow {
            key,
            name: text(1),
            modified: text(2).and_then(|t| parse_clock_text(&t)),
            size: u64::try_from(size).unwrap_or(0),
            version: text(4),
            links,
        })
    }

    /// Streams every row (never a body) in key order, a page at a time.
    pub async fn list(&self, sink: &mut (dyn FnMut(PayloadRow) + Send)) -> Result<u64, CrmError> {
        let d = self.dialect;
        let kt = self.key_type().await?;
        let mut after: Option<String> = None;
        let mut n = 0u64;
        loop {
            let sql = format!(
                "SELECT {} FROM {}{} ORDER BY {} LIMIT {PAGE}",
                self.head_list(kt),
                d.quote(&self.spec.table),
                if after.is_some() {
                    format!(" WHERE {}", self.key_is(kt, ">", 1))
                } else {
                    String::new()
                },
                d.quote(&self.spec.key),
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(a) = &after {
                q = Bound::of(kt, a).bind(q);
            }
            let mut rows = q.fetch(&self.pool);
            let mut got = 0usize;
            let mut last = None;
            while let Some(r) = rows
                .try_next()
                .await
                .map_err(|e| query_error(&self.spec, e))?
            {
                got += 1;
                if let Some(row) = self.row(kt, &r) {
                    last = Some(row.key.clone());
                    n += 1;
                    sink(row);
                }
            }
            if got < PAGE {
                return Ok(n);
            }
            match last {
                Some(l) => after = Some(l),
                // A full page of rows whose keys could not be read.
                None => return Ok(n),
            }
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<PayloadRow>, CrmError> {
        let kt = self.key_type().await?;
        if !can_exist(kt, key) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            self.head_list(kt),
            self.dialect.quote(&self.spec.table),
            self.key_is(kt, "=", 1)
        );
        let r = Bound::of(kt, key)
            .bind(sqlx::query(AssertSqlSafe(sql)))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| query_error(&self.spec, e))?;
        Ok(r.as_ref().and_then(|r| self.row(kt, r)))
    }

    /// The body as stored (Base64 text as its bytes); `None` when there is
    /// no such row, empty for NULL.
    pub async fn body(&self, key: &str) -> Result<Option<Vec<u8>>, CrmError> {
        let kt = self.key_type().await?;
        if !can_exist(kt, key) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            self.dialect.quote(&self.spec.body),
            self.dialect.quote(&self.spec.table),
            self.key_is(kt, "=", 1)
        );
        let r = Bound::of(kt, key)
            .bind(sqlx::query(AssertSqlSafe(sql)))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| query_error(&self.spec, e))?;
        let Some(r) = r else { return Ok(None) };
        Ok(Some(match self.spec.encoding {
            BodyEncoding::Raw => r
                .try_get::<Option<Vec<u8>>, _>(0)
                .map_err(|e| query_error(&self.spec, e))?
                .unwrap_or_default(),
            BodyEncoding::Base64 => r
                .try_get::<Option<String>, _>(0)
                .map_err(|e| query_error(&self.spec, e))?
                .unwrap_or_default()
                .into_bytes(),
        }))
    }

    /// The bodies as stored (as [`body`](Self::body)) of the rows of
    /// `keys` whose decoded size, computed by the database as the listing
    /// does, is at most `max_row` bytes, in one statement (the first
    /// [`CHUNK`] keys), taken until `max_total` stored bytes: `(key,
    /// body)` for each row read. A row not answered is gone, larger, or
    /// past the total; the caller reads it alone.
    pub async fn bodies(
        &self,
        keys: &[&str],
        max_row: u64,
        max_total: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, CrmError> {
        let kt = self.key_type().await?;
        let wanted: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| can_exist(kt, k))
            .take(CHUNK)
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.dialect;
        let (cond, binds) = self.keys_in(kt, &wanted);
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {cond} AND {} <= {max_row}",
            self.key_select(kt),
            d.quote(&self.spec.body),
            d.quote(&self.spec.table),
            self.size_expr(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in &binds {
            q = b.bind(q);
        }
        let mut rows = q.fetch(&self.pool);
        let mut out = Vec::with_capacity(wanted.len());
        let mut total = 0usize;
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(|e| query_error(&self.spec, e))?
        {
            let key = if kt.int {
                r.try_get::<i64, _>(0).map(|k| k.to_string())
            } else {
                r.try_get::<String, _>(0)
            };
            let Ok(key) = key else { continue };
            let body = match self.spec.encoding {
                BodyEncoding::Raw => r.try_get::<Option<Vec<u8>>, _>(1),
                BodyEncoding::Base64 => r
                    .try_get::<Option<String>, _>(1)
                    .map(|t| t.map(String::into_bytes)),
            };
            let Ok(body) = body else { continue };
            let body = body.unwrap_or_default();
            total += body.len();
            if total > max_total {
                break;
            }
            out.push((key, body));
        }
        Ok(out)
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, CrmError> {
        match self.dialect {
            // Take the write lock before reading: nothing changes between
            // the judgement and the delete.
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            _ => self.pool.begin().await,
        }
        .map_err(CrmError::Transaction)
    }

    fn lock(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            _ => " FOR UPDATE",
        }
    }

    /// Deletes the rows of `keys` that `keep` does not keep, judged on the
    /// rows as they are, locked, in one transaction per chunk. One fate per
    /// key, in order.
    pub async fn delete_where(
        &self,
        keys: &[String],
        keep: &(dyn Fn(usize, &PayloadRow) -> bool + Sync),
    ) -> Result<Vec<RowFate>, CrmError> {
        let kt = self.key_type().await?;
        let mut out = vec![RowFate::Gone; keys.len()];
        let possible: Vec<usize> = (0..keys.len())
            .filter(|&i| can_exist(kt, &keys[i]))
            .collect();
        for chunk in possible.chunks(CHUNK) {
            let mut tx = self.begin().await?;
            let wanted: Vec<&str> = chunk.iter().map(|&i| keys[i].as_str()).collect();
            let (cond, binds) = self.keys_in(kt, &wanted);
            let sql = format!(
                "SELECT {} FROM {} WHERE {cond}{}",
                self.head_list_sized(kt, false),
                self.dialect.quote(&self.spec.table),
                self.lock()
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for b in &binds {
                q = b.bind(q);
            }
            let rows = q
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| query_error(&self.spec, e))?;
            let found: HashMap<String, PayloadRow> = rows
                .iter()
                .filter_map(|r| self.row(kt, r))
                .map(|r| (r.key.clone(), r))
                .collect();
            let mut go = Vec::new();
            for &i in chunk {
                match found.get(&keys[i]) {
                    None => out[i] = RowFate::Gone,
                    Some(row) if keep(i, row) => out[i] = RowFate::Kept,
                    Some(_) => {
                        out[i] = RowFate::Deleted;
                        go.push(keys[i].as_str());
                    }
                }
            }
            if !go.is_empty() {
                let (cond, binds) = self.keys_in(kt, &go);
                let sql = format!(
                    "DELETE FROM {} WHERE {cond}",
                    self.dialect.quote(&self.spec.table)
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for b in &binds {
                    q = b.bind(q);
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| query_error(&self.spec, e))?;
            }
            tx.commit().await.map_err(CrmError::Transaction)?;
        }
        Ok(out)
    }

    /// Replaces the body of `key` with `body` (as stored: Base64 text's
    /// bytes) if `matches` accepts the row as it is, locked; bumps the
    /// version column by one where there is one. `Ok(Err(row))`: the row
    /// is not what `matches` wanted (`None`: there is no row).
    pub async fn rewrite(
        &self,
        key: &str,
        matches: &(dyn Fn(&PayloadRow) -> bool + Sync),
        body: Vec<u8>,
    ) -> Result<Result<PayloadRow, Option<PayloadRow>>, CrmError> {
        let kt = self.key_type().await?;
        if !can_exist(kt, key) {
            return Ok(Err(None));
        }
        let d = self.dialect;
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {}{}",
            self.head_list(kt),
            d.quote(&self.spec.table),
            self.key_is(kt, "=", 1),
            self.lock()
        );
        let row = Bound::of(kt, key)
            .bind(sqlx::query(AssertSqlSafe(sql.clone())))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| query_error(&self.spec, e))?
            .and_then(|r| self.row(kt, &r));
        let Some(row) = row else {
            return Ok(Err(None));
        };
        if !matches(&row) {
            return Ok(Err(Some(row)));
        }
        let version = match &self.spec.version {
            Some(v) => format!(", {0} = {0} + 1", d.quote(v)),
            None => String::new(),
        };
        let update = format!(
            "UPDATE {} SET {} = {}{version} WHERE {}",
            d.quote(&self.spec.table),
            d.quote(&self.spec.body),
            d.param(1),
            self.key_is(kt, "=", 2)
        );
        let q = sqlx::query(AssertSqlSafe(update));
        let q = match self.spec.encoding {
            BodyEncoding::Raw => q.bind(body),
            BodyEncoding::Base64 => q.bind(String::from_utf8_lossy(&body).into_owned()),
        };
        Bound::of(kt, key)
            .bind(q)
            .execute(&mut *tx)
            .await
            .map_err(|e| query_error(&self.spec, e))?;
        let now = Bound::of(kt, key)
            .bind(sqlx::query(AssertSqlSafe(sql)))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| query_error(&self.spec, e))?
            .and_then(|r| self.row(kt, &r));
        tx.commit().await.map_err(CrmError::Transaction)?;
        Ok(now.ok_or(None))
    }
}

/// Whether `key` can name a row at all (an integer key column holds no
/// `abc`, nor `018`; a UUID column nothing but UUIDs as it prints them,
/// and PostgreSQL's cast of anything else would fail the statement).
fn can_exist(kt: &KeyType, key: &str) -> bool {
    if kt.uuid {
        return crate::model::is_printed_uuid(key);
    }
    !kt.int || key.parse::<i64>().is_ok_and(|i| i.to_string() == key)
}

/// A value bound as the key column stores it.
enum Bound {
    Int(i64),
    Text(String),
}

impl Bound {
    fn of(kt: &KeyType, key: &str) -> Bound {
        match (kt.int, key.parse::<i64>()) {
            (true, Ok(i)) => Bound::Int(i),
            _ => Bound::Text(key.to_string()),
        }
    }

    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        match self {
            Bound::Int(i) => q.bind(*i),
            Bound::Text(t) => q.bind(t.clone()),
        }
    }
}
