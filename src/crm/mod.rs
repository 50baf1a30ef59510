//! The CRM backends behind one trait. A backend knows SQL and its driver;
//! it knows nothing of policies. It streams entities for the graph, answers
//! `keep_if` conditions, and runs the deleting transaction, inside which the
//! engine's pure re-check decides what may still go. `sample` writes the
//! demo's sample CRM: every statement lethe sends a CRM is in this module.
//!
//! Architecture invariant: only `delete_cases` deletes, and only the rows the
//! caller's re-check approved, children-first, in one transaction per batch.

pub mod fit;
mod recheck;
pub mod refs;
pub mod sample;
pub mod server;
pub mod sqlite;

use async_trait::async_trait;

use crate::config::{Config, CrmUrl, EntityType};
use crate::model::{EntityKey, Instant};
pub use recheck::{CaseNow, CaseRequest, Decision, EntityNow, ErasedValue, RecheckInput};

/// One row of an entity table as the engine needs it: no subject data.
#[derive(Clone, Debug)]
pub struct EntityRow {
    pub key: EntityKey,
    /// The first clock column with a usable value; `None` when none had one.
    pub clock: Option<Instant>,
    /// A clock column held a value that is not a date (counted, undatable).
    pub clock_unreadable: bool,
    /// One per configured parent relation, in config order.
    pub parents: Vec<Option<EntityKey>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrmError {
    #[error("cannot open the CRM database {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "CRM query on entity type `{entity}` (table {table}) failed: {source}; check the table and column names in [crm.entities.{entity}]"
    )]
    Query {
        entity: String,
        table: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("reading the CRM's catalogue for table {table} failed: {source}")]
    Catalogue {
        table: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("CRM transaction failed: {0}")]
    Transaction(#[source] sqlx::Error),
    /// Writing or reading the demo's sample CRM (`sample`).
    #[error("{what}: {source}")]
    Sample {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl CrmError {
    /// Worth retrying: the database was busy or locked, or the connection
    /// failed; anything else (a bad table name, a constraint) is permanent.
    pub fn is_transient(&self) -> bool {
        let source = match self {
            CrmError::Query { source, .. }
            | CrmError::Catalogue { source, .. }
            | CrmError::Transaction(source)
            | CrmError::Connect { source, .. }
            | CrmError::Sample { source, .. } => source,
        };
        match source {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // SQLite BUSY / LOCKED and their extended codes; PostgreSQL
                // serialization failures and deadlocks; MySQL lock timeouts.
                matches!(
                    code.as_str(),
                    "5" | "6" | "261" | "262" | "517" | "40001" | "40P01" | "1205" | "1213"
                )
            }
            _ => false,
        }
    }

    pub fn query(et: &EntityType, source: sqlx::Error) -> CrmError {
        CrmError::Query {
            entity: et.name.clone(),
            table: et.table.clone(),
            source,
        }
    }
}

/// What a deleting transaction did, per case of the batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub cases: Vec<(u64, Decision)>,
    /// Rows actually deleted, per case id: (type index, key).
    pub deleted: Vec<(u64, Vec<(u16, EntityKey)>)>,
    /// The identifier values of the deleted rows (types with `identifiers`).
    pub identifiers: Vec<recheck::ErasedValue>,
}

#[async_trait]
pub trait Crm: Send + Sync {
    /// `sqlite`, `postgres`, `mysql`.
    fn kind(&self) -> &'static str;

    /// The columns of `table` (as the config writes it, `schema.table`
    /// allowed) as the catalogue lists them; `None` when there is no such
    /// table or view.
    async fn columns(&self, table: &str) -> Result<Option<Vec<fit::Column>>, CrmError>;

    /// The tables and views the catalogue lists beside `near` (a table
    /// name as the config writes it: in its schema when it names one), for
    /// suggestions.
    async fn tables(&self, near: &str) -> Result<Vec<String>, CrmError>;

    /// Compiles a keep condition on `et`'s table without reading a row:
    /// `Some(message)` is the database's complaint (syntax, unknown name).
    async fn probe_condition(
        &self,
        et: &EntityType,
        condition: &str,
    ) -> Result<Option<String>, CrmError>;

    /// Streams every entity of a type into `sink`; returns the count.
    async fn scan(
        &self,
        et: &EntityType,
        sink: &mut (dyn FnMut(EntityRow) + Send),
    ) -> Result<u64, CrmError>;

    /// Keys of the entities of `et` for which `condition` holds.
    async fn matching(
        &self,
        et: &EntityType,
        condition: &str,
        sink: &mut (dyn FnMut(EntityKey) + Send),
    ) -> Result<(), CrmError>;

    /// Every (key, value) of `column` where the value is not null, as text.
    async fn column_values(
        &self,
        et: &EntityType,
        column: &str,
        sink: &mut (dyn FnMut(EntityKey, String) + Send),
    ) -> Result<(), CrmError>;

    /// Which of `keys` still exist.
    async fn existing(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<EntityKey>, CrmError>;

    /// The `identifiers` columns of the rows with these keys, as text, in
    /// `et.identifiers` order (read before a batch is deleted, so that its
    /// keyed hashes are in the state store whatever happens to the apply).
    async fn identifier_values(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError>;

    /// The deleting transaction: reads the current subtree of every case in
    /// `input`, lets `decide` judge each case on it, deletes the approved rows
    /// children-first and commits. Nothing is deleted if anything fails.
    async fn delete_cases(
        &self,
        input: &RecheckInput,
        decide: &(dyn for<'c> Fn(&'c CaseNow) -> Decision + Sync),
    ) -> Result<BatchOutcome, CrmError>;

    /// After deletes: make deleted content unrecoverable where the backend
    /// allows (SQLite: WAL checkpoint; secure_delete is on for every write).
    async fn after_apply(&self) -> Result<Vec<String>, CrmError>;
}

pub async fn connect(config: &Config) -> Result<Box<dyn Crm>, CrmError> {
    match &config.crm {
        CrmUrl::Sqlite(path) => Ok(Box::new(sqlite::SqliteCrm::open(path, false).await?)),
        CrmUrl::Postgres(url) | CrmUrl::Mysql(url) => Ok(Box::new(
            server::ServerCrm::connect(url.expose(), config.crm_vacuum).await?,
        )),
    }
}

/// Reads a clock value stored as epoch seconds (or milliseconds, when it is
/// too large to be seconds).
pub fn clock_from_number(n: f64) -> Option<Instant> {
    if !n.is_finite() {
        return None;
    }
    let n = if n.abs() > 1e11 { n / 1000.0 } else { n };
    Some(n as i64)
}

/// Binds entity keys as the column stores them (integers as integers), on
/// any backend's query.
pub(crate) fn bind_keys<'q, DB: sqlx::Database>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    keys: &[EntityKey],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    for k in keys {
        q = match k {
            EntityKey::Int(i) => q.bind(*i),
            EntityKey::Text(s) => q.bind(s.clone()),
        };
    }
    q
}

/// Quotes an SQLite identifier (`schema.table` quoted per part) with
/// backquotes: SQLite reads a double-quoted name that matches no column as
/// a string literal, so `"leadid"` on a table without that column would
/// give every row the text `leadid`; a backquoted one is always a name, and
/// an unknown one is an error.
pub fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("`{}`", p.replace('`', "``")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether a database's complaint is about the statement (a name, the
/// syntax) rather than about reaching the database.
pub(crate) fn statement_error(e: &sqlx::Error) -> Option<String> {
    match e {
        // PostgreSQL and MySQL: SQLSTATE class 42 (syntax error or access
        // rule: unknown column, table, function); SQLite: its generic
        // SQLITE_ERROR (1), which is what a bad name or syntax gives. A busy
        // database, a timeout or a lost connection is no config problem.
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let statement = code.starts_with("42") || code == "1";
            statement.then(|| db.message().to_string())
        }
        sqlx::Error::ColumnNotFound(c) => Some(format!("no column {c}")),
        _ => None,
    }
}

/// A select-list column that is 1 where a keep rule's `condition` (SQL of
/// the config, over the entity's own table) holds on the row, else 0.
pub(crate) fn condition_column(condition: &str) -> String {
    format!("CASE WHEN ({condition}) THEN 1 ELSE 0 END")
}

/// The bits of a row's `n` condition columns (bit `j`: column `j` holds),
/// each read by `value(j)`. An integer column reads as a key of either
/// kind, whatever the driver makes of it.
pub(crate) fn condition_bits(n: usize, value: impl Fn(usize) -> Option<EntityKey>) -> u32 {
    (0..n)
        .filter(|&j| match value(j) {
            Some(EntityKey::Int(v)) => v != 0,
            Some(EntityKey::Text(t)) => t.trim() == "1",
            None => false,
        })
        .fold(0, |acc, j| acc | 1 << j)
}
