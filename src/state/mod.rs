//! lethe's own state: the link index, plans and their journal, legal holds
//! and the audit log, in one SQLite database (PostgreSQL later, behind the
//! same functions). Entity and object keys live here and nowhere else.
//!
//! Architecture invariant: a plan's items are written once, before anything
//! is deleted; afterwards only their journal columns (status, reason) change.

pub mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

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
    #[error("cannot take the state lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the PostgreSQL state store is not available in this build yet; use sqlite:// for now")]
    Unsupported,
    #[error("plan {0} not found; `lethe plan` lists what it stores")]
    NoSuchPlan(String),
    #[error("no plan stored yet; run `lethe plan` first")]
    NoPlan,
    #[error("state store data is inconsistent: {0}")]
    Corrupt(String),
}

pub(crate) fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
    move |source| StateError::Query { what, source }
}

#[derive(Clone)]
pub struct StateStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

/// Held while a process applies; released when dropped or when the process
/// dies (an OS file lock), so no lock outlives a killed process.
pub struct ApplyLock {
    _file: std::fs::File,
}

impl StateStore {
    pub async fn open(config: &Config) -> Result<StateStore, StateError> {
        match &config.state {
            StateUrl::Sqlite(path) => Self::open_sqlite(path).await,
            StateUrl::Postgres(_) => Err(StateError::Unsupported),
        }
    }

    pub async fn open_sqlite(path: &Path) -> Result<StateStore, StateError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StateError::Open {
                target: format!("sqlite://{}", path.display()),
                source,
            })?;
        schema::migrate(&pool).await?;
        Ok(StateStore {
            pool,
            path: path.to_path_buf(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Takes the apply lock; with `wait`, blocks until it is free.
    pub fn lock_apply(&self, wait: bool) -> Result<ApplyLock, StateError> {
        let mut name = self.path.as_os_str().to_owned();
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
        Ok(ApplyLock { _file: file })
    }

    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StateError> {
        sqlx::query_scalar("SELECT v FROM meta WHERE k = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading meta"))
    }

    pub async fn meta_set(&self, key: &str, value: &str) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO meta(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
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
        let r = sqlx::query(
            "INSERT INTO holds(kind, target, reason, author, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(kind, target) DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(target)
        .bind(reason)
        .bind(author)
        .bind(jiff::Timestamp::now().to_string())
        .execute(&self.pool)
        .await
        .map_err(q("adding a hold"))?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn remove_hold(&self, kind: HoldKind, target: &str) -> Result<bool, StateError> {
        let r = sqlx::query("DELETE FROM holds WHERE kind = ? AND target = ?")
            .bind(kind.as_str())
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(q("removing a hold"))?;
        Ok(r.rows_affected() > 0)
    }

    // ---- link index ---------------------------------------------------

    /// Every indexed object: key → (id, size, modified, etag).
    pub async fn indexed_objects(
        &self,
    ) -> Result<std::collections::HashMap<String, IndexedObject>, StateError> {
        let mut rows =
            sqlx::query("SELECT id, key, size, modified, etag FROM objects").fetch(&self.pool);
        let mut out = std::collections::HashMap::new();
        while let Some(r) = rows.try_next().await.map_err(q("reading the index"))? {
            out.insert(
                r.get::<String, _>(1),
                IndexedObject {
                    id: r.get(0),
                    size: r.get::<i64, _>(2) as u64,
                    modified: r.get(3),
                    etag: r.get(4),
                },
            );
        }
        Ok(out)
    }
}

#[derive(Clone, Debug)]
pub struct IndexedObject {
    pub id: i64,
    pub size: u64,
    pub modified: Option<i64>,
    pub etag: Option<String>,
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

/// Runs `sql` once per chunk of `values`, with `{in}` replaced by the
/// chunk's placeholders and `leading` bound before the chunk. One statement
/// per few hundred items instead of one per item: the journal's hot path.
pub(crate) async fn exec_in<T>(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    leading: &[&str],
    values: &[T],
) -> Result<u64, StateError>
where
    T: Clone
        + Send
        + Sync
        + for<'q> sqlx::Encode<'q, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + 'static,
{
    let mut n = 0;
    for chunk in values.chunks(400) {
        let text = sql.replace("{in}", &vec!["?"; chunk.len()].join(","));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(text));
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
