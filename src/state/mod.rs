//! lethe's own state: the link index, plans and their journal, legal holds
//! and the audit log, in one SQLite or PostgreSQL database, behind the same
//! functions. Each concern has its module and its statements (`index`: the
//! link index; `plans`, `journal`, `audit_log`, `registered`, `runs`,
//! `workers`, `erased`, `redacted`); this file opens the store, holds the
//! locks, the `meta` and `holds` tables, the readiness ping, and the
//! statement builders they share. Entity and object keys live here and
//! nowhere else; no SQL is written outside this module and `crm`.
//!
//! Architecture invariant: a plan's items are written once, before anything
//! is deleted; afterwards only their journal columns (status, reason) change.

pub mod audit_log;
pub mod erased;
pub mod index;
pub mod journal;
mod plan_prune;
mod plan_show;
pub mod plans;
pub mod redacted;
pub mod registered;
pub mod requests;
pub mod runs;
pub mod schema;
pub mod status;
pub mod workers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};

use crate::config::{Config, StateUrl};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("cannot open the state store {target}: {source}")]
    Open {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state store: {what} failed: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("another lethe process holds the state lock {} (apply and sweep run one at a time); wait for it, or pass --wait", path.display())]
    Locked { path: PathBuf },
    #[error(
        "another lethe process is {what} on this PostgreSQL state store (advisory lock {key}); wait for it, or pass --wait"
    )]
    Busy { what: &'static str, key: i64 },
    #[error("cannot take the state lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plan {0} not found; `lethe plan --list` lists the stored plans")]
    NoSuchPlan(String),
    #[error("no plan stored yet; run `lethe plan` first")]
    NoPlan,
    #[error("state store data is inconsistent: {0}")]
    Corrupt(String),
}

pub(crate) fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
    move |source| StateError::Query { what, source }
}

/// Which SQL the state store speaks. Queries are written once, with `$N`
/// placeholders (SQLite reads them too); only the schema, the locks and the
/// batch claims differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// PostgreSQL advisory lock keys (an arbitrary, fixed namespace: "lethe" in
/// ASCII, then a number per lock).
pub(crate) const LOCK_MIGRATE: i64 = 0x6c65_7468_6500_0001;
pub(crate) const LOCK_PLAN: i64 = 0x6c65_7468_6500_0002;
pub(crate) const LOCK_AUDIT: i64 = 0x6c65_7468_6500_0003;

#[derive(Clone)]
pub struct StateStore {
    pub(crate) pool: AnyPool,
    /// SQLite: one connection for the write transactions (`begin_write`),
    /// so that writers of this process queue for it in order instead of
    /// meeting in SQLite's busy handler, which sleeps up to 100 ms between
    /// tries. None on PostgreSQL.
    writer: Option<AnyPool>,
    dialect: Dialect,
    /// The SQLite file (for the apply lock beside it); None on PostgreSQL.
    path: Option<PathBuf>,
}

/// Held while a process applies (SQLite: an OS file lock, released when
/// dropped or when the process dies) or plans (PostgreSQL: a session
/// advisory lock on a connection of its own, released when dropped or when
/// the connection dies). No lock outlives a killed process.
pub struct ApplyLock {
    _inner: LockInner,
}

enum LockInner {
    File(#[allow(dead_code)] std::fs::File),
    Session(#[allow(dead_code)] sqlx::AnyConnection),
    None,
}

/// `sqlite://` + the path, percent-encoded where a URL would misread it.
fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' | b'~' => {
                url.push(*b as char)
            }
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    url.push_str("?mode=rwc");
    url
}

impl StateStore {
    pub async fn open(config: &Config) -> Result<StateStore, StateError> {
        match &config.state {
            StateUrl::Sqlite(path) => Self::open_sqlite(path).await,
            StateUrl::Postgres(url) => Self::open_postgres(url.expose()).await,
        }
    }

    pub async fn open_sqlite(path: &Path) -> Result<StateStore, StateError> {
        sqlx::any::install_default_drivers();
        let url = sqlite_url(path);
        let open = |connections: u32| {
            AnyPoolOptions::new()
                .max_connections(connections)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 30000; PRAGMA secure_delete = ON; \
                             PRAGMA foreign_keys = ON",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(&url)
        };
        let failed = |source| StateError::Open {
            target: format!("sqlite://{}", path.display()),
            source,
        };
        let pool = open(4).await.map_err(failed)?;
        let writer = open(1).await.map_err(failed)?;
        let store = StateStore {
            pool,
            writer: Some(writer),
            dialect: Dialect::Sqlite,
            path: Some(path.to_path_buf()),
        };
        schema::migrate(&store).await?;
        Ok(store)
    }

    /// PostgreSQL: the URL comes from the config and is never printed.
    pub async fn open_postgres(url: &str) -> Result<StateStore, StateError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(6)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET TIME ZONE 'UTC'").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|source| StateError::Open {
                target: "on PostgreSQL (URL in [state] url)".to_string(),
                source,
            })?;
        let store = StateStore {
            pool,
            writer: None,
            dialect: Dialect::Postgres,
            path: None,
        };
        schema::migrate(&store).await?;
        Ok(store)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers (`/readyz`): one `SELECT 1`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(|_| ())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }

    /// An aggregate that folds the selected rows into one JSON text (an
    /// array of arrays of `columns`; `[]` for none). Many rows as one:
    /// row by row, the hand-over from sqlx's SQLite thread costs several
    /// microseconds per row, more than the query.
    pub(crate) fn json_rows(&self, columns: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("json_group_array(json_array({columns}))"),
            Dialect::Postgres => {
                format!("coalesce(json_agg(json_build_array({columns}))::text, '[]')")
            }
        }
    }

    /// Gives the SQLite writer a larger page cache and fewer checkpoints,
    /// for an apply (a no-op on PostgreSQL). Its journal steps inserted the
    /// keyed hashes of erased identifiers (`erased_identifiers`) into
    /// indexes by hash, a random page each (staged since, `state::erased`;
    /// the journal's own indexes still gain from it): with SQLite's 2 MB cache a
    /// batch's inserts spilled dirty pages before its commit, and a
    /// checkpoint after every commit of a thousand pages wrote the same hot
    /// pages again and again. 64 MB (allocated as used) and a checkpoint
    /// every 20,000 pages (80 MB of WAL): the CRM phase of a 100,000-lead
    /// sweep 4.6–5.2 s → 3.7–4.1 s. Not for every command: a plan at 1M
    /// leads keeps its peak under 600 MB with little room to spare. Only
    /// speed depends on it (a writer connection opened again meanwhile
    /// has SQLite's defaults).
    pub async fn widen_writer_cache(&self) -> Result<(), StateError> {
        if let Some(writer) = &self.writer {
            sqlx::raw_sql("PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 20000")
                .execute(writer)
                .await
                .map_err(q("setting the writer's cache"))?;
        }
        Ok(())
    }

    /// A transaction that will write. SQLite: on the one writer
    /// connection (writers of this process wait for it in turn), with
    /// `BEGIN IMMEDIATE`, so that it takes the write lock up front (another
    /// process: busy timeout) instead of failing when a read in it would
    /// have to become a write after another writer committed.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match &self.writer {
            Some(writer) => writer.begin_with("BEGIN IMMEDIATE").await,
            None => self.pool.begin().await,
        }
    }

    /// Takes the apply lock; with `wait`, blocks until it is free.
    ///
    /// SQLite: one applier at a time, by an OS file lock beside the
    /// database. PostgreSQL: several workers may apply one plan together
    /// (they claim batches, see `workers`), so there is nothing to take.
    pub fn lock_apply(&self, wait: bool) -> Result<ApplyLock, StateError> {
        let Some(db) = &self.path else {
            return Ok(ApplyLock {
                _inner: LockInner::None,
            });
        };
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StateError::Lock {
                path: path.clone(),
                source,
            })?;
        if wait {
            file.lock().map_err(|source| StateError::Lock {
                path: path.clone(),
                source,
            })?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(StateError::Locked { path }),
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(StateError::Lock { path, source });
                }
            }
        }
        Ok(ApplyLock {
            _inner: LockInner::File(file),
        })
    }

    /// Only one planner at a time. PostgreSQL: a session advisory lock on a
    /// connection of its own (several machines may share the store).
    /// SQLite: plans are written in one transaction, which is enough.
    pub async fn lock_plan(&self, wait: bool) -> Result<ApplyLock, StateError> {
        if self.dialect == Dialect::Sqlite {
            return Ok(ApplyLock {
                _inner: LockInner::None,
            });
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(q("taking the planner lock"))?
            .detach();
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_PLAN)
                .fetch_one(&mut conn)
                .await
                .map_err(q("taking the planner lock"))?;
            if got {
                return Ok(ApplyLock {
                    _inner: LockInner::Session(conn),
                });
            }
            if !wait {
                return Err(StateError::Busy {
                    what: "planning",
                    key: LOCK_PLAN,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StateError> {
        sqlx::query_scalar("SELECT v FROM meta WHERE k = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading meta"))
    }

    pub async fn meta_set(&self, key: &str, value: &str) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO meta(k, v) VALUES ($1, $2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(q("writing meta"))?;
        Ok(())
    }

    // ---- holds --------------------------------------------------------

    pub async fn holds(&self) -> Result<Vec<Hold>, StateError> {
        let rows = sqlx::query(
            "SELECT id, kind, target, reason, author, created_at FROM holds ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading holds"))?;
        Ok(rows
            .iter()
            .map(|r| Hold {
                id: r.get(0),
                kind: HoldKind::parse(r.get::<String, _>(1).as_str()).unwrap_or(HoldKind::Entity),
                target: r.get(2),
                reason: r.get(3),
                author: r.get(4),
                created_at: r.get(5),
            })
            .collect())
    }

    /// Adds a hold; returns false when the same target is already held.
    pub async fn add_hold(
        &self,
        kind: HoldKind,
        target: &str,
        reason: &str,
        author: &str,
    ) -> Result<bool, StateError> {
        self.add_hold_audited(kind, target, reason, author, None)
            .await
    }

    /// Adds a hold and, when it is new, appends `record` to the audit log in
    /// the same transaction.
    pub async fn add_hold_audited(
        &self,
        kind: HoldKind,
        target: &str,
        reason: &str,
        author: &str,
        record: Option<audit_log::NewRecord>,
    ) -> Result<bool, StateError> {
        let mut tx = self.begin_write().await.map_err(q("adding a hold"))?;
        // To the second: holds are shown and compared by people.
        let now = jiff::Timestamp::now();
        let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
        let r = sqlx::query(
            "INSERT INTO holds(kind, target, reason, author, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT(kind, target) DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(target)
        .bind(reason)
        .bind(author)
        .bind(now.to_string())
        .execute(&mut *tx)
        .await
        .map_err(q("adding a hold"))?;
        let added = r.rows_affected() == 1;
        if added {
            audit_log::append(&mut tx, record.into_iter().collect()).await?;
        }
        tx.commit().await.map_err(q("adding a hold"))?;
        Ok(added)
    }

    pub async fn remove_hold(&self, kind: HoldKind, target: &str) -> Result<bool, StateError> {
        self.remove_hold_audited(kind, target, None).await
    }

    /// Lifts a hold and, when there was one, appends `record` to the audit
    /// log in the same transaction.
    pub async fn remove_hold_audited(
        &self,
        kind: HoldKind,
        target: &str,
        record: Option<audit_log::NewRecord>,
    ) -> Result<bool, StateError> {
        let mut tx = self.begin_write().await.map_err(q("removing a hold"))?;
        let r = sqlx::query("DELETE FROM holds WHERE kind = $1 AND target = $2")
            .bind(kind.as_str())
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(q("removing a hold"))?;
        let removed = r.rows_affected() > 0;
        if removed {
            audit_log::append(&mut tx, record.into_iter().collect()).await?;
        }
        tx.commit().await.map_err(q("removing a hold"))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_row_errors_never_quote_the_value() {
        let err = super::parse_json_rows::<(i64, String)>(
            r#"[[1, "a"], ["jane.doe@example.com", "b"]]"#,
            "reading the index",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("reading the index"), "{err}");
        assert!(!err.contains("jane"), "{err}");
        let ok = super::parse_json_rows::<(i64, String)>(r#"[[1, "a"], [2, "b"]]"#, "x").unwrap();
        assert_eq!(ok, vec![(1, "a".to_string()), (2, "b".to_string())]);
    }

    #[test]
    fn sqlite_statements_get_anonymous_placeholders_when_in_order() {
        let s = |t: &str| super::sql(true, t.to_string()).0;
        assert_eq!(
            s("SELECT $1, $2 WHERE x IN ($3,$4)"),
            "SELECT ?, ? WHERE x IN (?,?)"
        );
        // Reused or out of order: numbered placeholders stay.
        assert_eq!(s("WHERE a = $1 OR b = $1"), "WHERE a = $1 OR b = $1");
        assert_eq!(s("VALUES ($2, $1)"), "VALUES ($2, $1)");
        assert_eq!(s("SELECT $10"), "SELECT $10");
        assert_eq!(s("SELECT 1"), "SELECT 1");
        assert_eq!(super::sql(false, "SELECT $1".into()).0, "SELECT $1");
        assert_eq!(super::params(2, "(?, 'x')", 3), "($3, 'x'),($4, 'x')");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// An entity ref: keeps every case containing the entity.
    Entity,
    /// One object key.
    Object,
    /// Every object whose key starts with the target.
    Prefix,
}

impl HoldKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            HoldKind::Entity => "entity",
            HoldKind::Object => "object",
            HoldKind::Prefix => "prefix",
        }
    }

    pub fn parse(s: &str) -> Option<HoldKind> {
        match s {
            "entity" => Some(HoldKind::Entity),
            "object" => Some(HoldKind::Object),
            "prefix" => Some(HoldKind::Prefix),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Hold {
    pub id: i64,
    pub kind: HoldKind,
    pub target: String,
    pub reason: String,
    pub author: String,
    pub created_at: String,
}

/// Object holds, checked per key.
#[derive(Clone, Debug, Default)]
pub struct ObjectHolds {
    exact: std::collections::HashSet<String>,
    prefixes: Vec<String>,
}

impl ObjectHolds {
    pub fn from_holds(holds: &[Hold]) -> ObjectHolds {
        let mut h = ObjectHolds::default();
        for hold in holds {
            match hold.kind {
                HoldKind::Object => {
                    h.exact.insert(hold.target.clone());
                }
                HoldKind::Prefix => h.prefixes.push(hold.target.clone()),
                HoldKind::Entity => {}
            }
        }
        h
    }

    pub fn holds(&self, key: &str) -> bool {
        self.exact.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// `rows` copies of `row` (a template such as `(?, ?, 'planned')`), each
/// `?` numbered `$start`, `$start+1`, …: the placeholders both SQLite and
/// PostgreSQL read.
pub(crate) fn params(rows: usize, row: &str, start: usize) -> String {
    let mut out = String::with_capacity(rows * (row.len() + 8));
    let mut n = start;
    for i in 0..rows {
        if i > 0 {
            out.push(',');
        }
        for c in row.chars() {
            if c == '?' {
                out.push('$');
                out.push_str(&n.to_string());
                n += 1;
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Rows folded by [`StateStore::json_rows`], parsed. A parse error names
/// its kind and column, never the value it met (a key can be personal data).
pub(crate) fn parse_json_rows<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<Vec<T>, StateError> {
    serde_json::from_str(text).map_err(|e| {
        StateError::Corrupt(format!(
            "{what}: rows not as expected ({:?} at column {})",
            e.classify(),
            e.column()
        ))
    })
}

/// A many-row statement: `head`, then `rows` copies of `row` (its `?`
/// numbered from `start`), then `tail`, for its backend. Most chunks are
/// full, so the text for `full_rows` rows is built once.
pub(crate) struct RowsSql {
    sqlite: bool,
    head: String,
    row: &'static str,
    start: usize,
    tail: String,
    full_rows: usize,
    full: String,
}

impl RowsSql {
    pub(crate) fn new(
        sqlite: bool,
        head: &str,
        row: &'static str,
        start: usize,
        tail: &str,
        full_rows: usize,
    ) -> RowsSql {
        let mut me = RowsSql {
            sqlite,
            head: head.to_string(),
            row,
            start,
            tail: tail.to_string(),
            full_rows,
            full: String::new(),
        };
        me.full = me.build(full_rows).0;
        me
    }

    fn build(&self, rows: usize) -> sqlx::AssertSqlSafe<String> {
        sql(
            self.sqlite,
            format!(
                "{}{}{}",
                self.head,
                params(rows, self.row, self.start),
                self.tail
            ),
        )
    }

    /// The statement for `rows` rows.
    pub(crate) fn rows(&self, rows: usize) -> sqlx::AssertSqlSafe<String> {
        if rows == self.full_rows {
            sqlx::AssertSqlSafe(self.full.clone())
        } else {
            self.build(rows)
        }
    }
}

pub(crate) fn is_sqlite(conn: &sqlx::AnyConnection) -> bool {
    conn.backend_name() == "SQLite"
}

/// The statement for its backend. Queries are written with `$1, $2, …`;
/// for SQLite, a statement whose placeholders run `$1, $2, …, $n` in order
/// gets anonymous `?` instead: SQLite looks a named parameter up by a
/// linear scan, so binding n named parameters costs O(n²), which the
/// many-row statements of the index and the journal would pay in full.
pub(crate) fn sql(sqlite: bool, text: String) -> sqlx::AssertSqlSafe<String> {
    if !sqlite {
        return sqlx::AssertSqlSafe(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut expect = 1usize;
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end > start {
                if text[start..end].parse::<usize>().ok() != Some(expect) {
                    // Reused or out of order: keep the numbers.
                    return sqlx::AssertSqlSafe(text);
                }
                expect += 1;
                out.push_str(&text[last..i]);
                out.push('?');
                last = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[last..]);
    sqlx::AssertSqlSafe(out)
}

/// Serializes audit appends across processes: several workers may append
/// to one chain. PostgreSQL: a transaction advisory lock, released at
/// commit. SQLite: the write transaction already does it.
pub(crate) async fn serialize_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<(), StateError> {
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_AUDIT)
            .execute(&mut **tx)
            .await
            .map_err(q("locking the audit chain"))?;
    }
    Ok(())
}

/// Runs `sql` once per chunk of `values`, with `{in}` replaced by the
/// chunk's placeholders and `leading` bound before the chunk. One statement
/// per few hundred items instead of one per item: the journal's hot path.
pub(crate) async fn exec_in<T>(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    leading: &[&str],
    values: &[T],
) -> Result<u64, StateError>
where
    T: Clone + Send + Sync + for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + 'static,
{
    let mut n = 0;
    for chunk in values.chunks(400) {
        let text = sql.replace("{in}", &params(chunk.len(), "?", leading.len() + 1));
        let mut query = sqlx::query(self::sql(is_sqlite(conn), text));
        for l in leading {
            query = query.bind(l.to_string());
        }
        for v in chunk {
            query = query.bind(v.clone());
        }
        n += query
            .execute(&mut *conn)
            .await
            .map_err(q("journaling"))?
            .rows_affected();
    }
    Ok(n)
}

pub use index::IndexedObject;
pub use journal::deleted_since;
