//! The CRM backends behind one trait. A backend knows SQL and its driver;
//! it knows nothing of policies. It streams entities for the graph, answers
//! `keep_if` conditions, and runs the deleting transaction, inside which the
//! engine's pure re-check decides what may still go. For a subject request
//! it finds entities by a normalised identifier, reads current subtrees
//! without locking them, and reads the rows of an access export. `sample` writes the
//! demo's sample CRM: every statement lethe sends a CRM is in this module.
//!
//! Architecture invariant: only `delete_cases` deletes, and only the rows the
//! caller's re-check approved, children-first, in one transaction per batch.

pub mod component;
pub mod dataverse;
pub mod fit;
pub mod payloads;
mod recheck;
pub mod refs;
pub mod sample;
pub mod server;
pub mod sqlite;

use async_trait::async_trait;

use crate::config::{Config, CrmUrl, EntityType};
use crate::model::{EntityKey, Instant};
use crate::verify::residual::{IdentifierKind, normalise};
pub use component::ComponentInput;
pub use recheck::{
    CaseNow, CaseRequest, Decision, EntityNow, ErasedValue, LockedPayload, PAYLOAD_KEPT,
    PayloadColumn, PayloadInput, PlannedPayload, RecheckInput,
};

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
    /// A query on one column of an entity type's table (an `identifiers`
    /// column, searched for a subject). Names the column, never a value.
    #[error(
        "CRM query on column {column} of entity type `{entity}` (table {table}) failed: {source}; check that [crm.entities.{entity}] names an existing column of that table"
    )]
    Column {
        entity: String,
        table: String,
        column: String,
        #[source]
        source: sqlx::Error,
    },
    /// The catalogue does not list the table an entity type names.
    #[error(
        "entity type `{entity}`: the CRM has no table {table}; check `table` in [crm.entities.{entity}] (`lethe check` lists the tables it sees)"
    )]
    NoTable { entity: String, table: String },
    /// The Dataverse Web API failed (`crm::dataverse`): the error names
    /// the entity set and the status, never a key or a value.
    #[error(transparent)]
    Dataverse(#[from] dataverse::client::ClientError),
    /// What the CRM's schema (Dataverse's `$metadata`) says against the
    /// config, or a read that failed on one entity type.
    #[error("entity type `{entity}` (entity set {table}): {message}")]
    Schema {
        entity: String,
        table: String,
        message: String,
    },
    /// A row whose key column holds no key lethe can read (NULL, a blob, a
    /// value of a type it does not know), or whose parent column holds a
    /// value that is not NULL and no key. Such a row cannot be placed in
    /// the graph, and leaving it out could leave out what keeps its
    /// parents (a contract), so nothing is judged: the read fails whole.
    /// Names the column, never a value or a key.
    #[error(
        "entity type `{entity}` (table {table}): a row's {column} holds {what}, which lethe cannot read as a key; a CRM that cannot be read whole is not judged (a row left out could be what keeps its parents). {find}"
    )]
    UnreadableKey {
        entity: String,
        table: String,
        column: String,
        what: &'static str,
        /// How to find the rows (a query for this database).
        find: String,
    },
    /// Something this backend does not do (yet).
    #[error("{0}")]
    Unsupported(String),
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
            | CrmError::Sample { source, .. }
            | CrmError::Column { source, .. } => source,
            CrmError::NoTable { .. }
            | CrmError::Schema { .. }
            | CrmError::UnreadableKey { .. }
            | CrmError::Unsupported(_) => {
                return false;
            }
            CrmError::Dataverse(e) => return e.is_transient(),
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

    /// A row of `et` whose `column` (the key or a parent column) holds
    /// `what`: see [`CrmError::UnreadableKey`].
    pub fn unreadable_key(
        et: &EntityType,
        column: &str,
        what: &'static str,
        find: String,
    ) -> CrmError {
        CrmError::UnreadableKey {
            entity: et.name.clone(),
            table: et.table.clone(),
            column: column.to_string(),
            what,
            find,
        }
    }

    pub fn query(et: &EntityType, source: sqlx::Error) -> CrmError {
        CrmError::Query {
            entity: et.name.clone(),
            table: et.table.clone(),
            source,
        }
    }

    /// A failed search of `column` for `value`: the error names the entity
    /// type, table and column; a database message that quotes the value
    /// is withheld (errors are printed and logged).
    pub(crate) fn searching(
        et: &EntityType,
        column: &str,
        value: &str,
        source: sqlx::Error,
    ) -> CrmError {
        let source = if !value.is_empty() && source.to_string().contains(value) {
            sqlx::Error::Protocol(
                "the database's message quoted the searched value and is withheld".into(),
            )
        } else {
            source
        };
        CrmError::Column {
            entity: et.name.clone(),
            table: et.table.clone(),
            column: column.to_string(),
            source,
        }
    }

    pub(crate) fn no_table(et: &EntityType) -> CrmError {
        CrmError::NoTable {
            entity: et.name.clone(),
            table: et.table.clone(),
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
    /// Payload rows (`[technical.table]`) deleted in the transaction, per
    /// case id: (case id, object key).
    pub payloads: Vec<(u64, String)>,
    /// Cases of which nothing was deleted, with why (a backend without one
    /// transaction for the batch: Dataverse's change set per case). Not in
    /// `cases`.
    pub failed: Vec<(u64, String)>,
    /// Cases whose delete may or may not have happened (an answer lost, and
    /// reading the rows back failed too), with why: left `executing` in the
    /// journal, so that the next apply resumes them and counts the rows it
    /// finds gone as deleted by lethe. Not in `cases`.
    pub unsettled: Vec<(u64, String)>,
}

#[async_trait]
pub trait Crm: Send + Sync {
    /// `sqlite`, `postgres`, `mysql`, `dataverse`.
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

    /// Keys of the entities of `et` whose identifier column `column` holds a
    /// value that normalises ([`normalise`]) to `normalised` as `kind`:
    /// e-mail trimmed and case-folded, phone reduced to its digits. Matched
    /// by SQL on the column (never by reading every row into memory); every
    /// candidate row the SQL returns is checked again in Rust with
    /// `normalise`, so every key returned is a normalised match and every
    /// backend gives the same answer (the one spelling the SQL misses is a
    /// value padded with other whitespace than spaces: below). A
    /// `normalised` that is not itself in normal form matches nothing. Keys
    /// are typed as the key column stores them, sorted, once each.
    ///
    /// - E-mail: `lower(trim(col)) = ?` (PostgreSQL casts the column to text
    ///   first, which keeps its index usable). An expression index on
    ///   `lower(trim(col))` makes this an index lookup: `CREATE INDEX … ON
    ///   leads (lower(trim(email)))` on SQLite and PostgreSQL; on MariaDB
    ///   11.8 and later (and MySQL 8) an indexed generated column of that
    ///   expression. Without one, or on an older MariaDB (which uses such a
    ///   column only where a query names it), the look-up scans the table:
    ///   a few tenths of a second per million rows. SQL's `trim` strips
    ///   spaces only, so a value padded with tabs, line breaks or no-break
    ///   spaces is not found (`normalise` would strip them). An address
    ///   with non-ASCII letters is also matched by `LIKE` with those
    ///   letters as wildcards (SQLite's `lower` folds ASCII only): a scan,
    ///   for such addresses only.
    /// - Phone: the digits of the column, `regexp_replace(col, '[^0-9]', '',
    ///   'g') = $1` on PostgreSQL, `REGEXP_REPLACE(col, '[^0-9]', '') = ?` on
    ///   MariaDB (an expression index on that makes it a lookup, as above;
    ///   without one PostgreSQL takes about a second per million rows);
    ///   SQLite has no regular expressions and scans with `col LIKE
    ///   '%4%9%3%…%'` (the digits in order), which never misses, keeping
    ///   only the rows whose `normalise` is the target.
    ///
    /// [`normalise`]: crate::verify::residual::normalise
    async fn find_by_identifier(
        &self,
        et: &EntityType,
        column: &str,
        kind: IdentifierKind,
        normalised: &str,
    ) -> Result<Vec<EntityKey>, CrmError>;

    /// The current subtree of each root in `input.cases` (root and every
    /// descendant through the configured parent relations, with clocks,
    /// parents and the conditional keep bits of `input.conditions`), read
    /// without deleting or locking anything: what a subject request plans
    /// on. The same loading as the deleting transaction's re-check, in one
    /// read transaction (one snapshot where the backend gives one), no
    /// `FOR UPDATE`. One `CaseNow` per case, in `input.cases` order, its
    /// entities sorted by type and key; a root that is gone has none.
    async fn subtrees(&self, input: &RecheckInput) -> Result<Vec<CaseNow>, CrmError>;

    /// The connected component of one entity in the entity graph (see
    /// [`component`]): every row reached from it through the configured
    /// parent relations, up and down, with clocks, parents and the
    /// conditional keep bits of `input.conditions`; grouped by type in graph
    /// order. Read in one read-only snapshot, nothing locked: what
    /// `explain` judges the entity on. Empty when the entity is not there.
    async fn component(&self, input: &ComponentInput) -> Result<Vec<EntityNow>, CrmError>;

    /// Every column of the rows of `et` with these keys, as JSON objects
    /// (column name → value: integers as numbers, reals as numbers, text as
    /// strings, NULL as null, blobs as base64 strings, dates/timestamps as
    /// the text the database gives), sorted by key, once each; keys with no
    /// row are left out, and so is any row the database matched that is not
    /// one of `keys` (`ABC` for `abc` under a case-insensitive collation,
    /// a text `018` that MariaDB compares equal to the number 18). A
    /// subject's access export (Art. 15/20). This
    /// is the one read of subject data besides identifiers; nothing of it
    /// may be logged. On the servers the catalogue's column type decides:
    /// a boolean (PostgreSQL) is a JSON boolean; decimals (exact), JSON,
    /// UUIDs and every other type that is not an integer, a float or binary
    /// are the text the database gives. SQLite gives what the row stores.
    async fn export_rows(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, CrmError>;

    /// How many rows `et`'s table has.
    async fn count(&self, et: &EntityType) -> Result<u64, CrmError>;

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
        CrmUrl::Dataverse { origin } => Ok(Box::new(
            dataverse::DataverseCrm::from_env(origin, config.crm_max_in_flight).await?,
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

/// The Rust re-check of a row the identifier search's SQL returned: whether
/// its value normalises to exactly `normalised` as `kind`. The SQL only
/// narrows the rows; this decides, the same on every backend.
pub(crate) fn identifier_matches(kind: IdentifierKind, raw: &str, normalised: &str) -> bool {
    normalise(kind, raw).is_some_and(|n| n == normalised)
}

/// Whether `value` is in normal form as `kind`. A value that is not is the
/// normal form of nothing, so a search for it finds nothing.
pub(crate) fn is_normal(kind: IdentifierKind, value: &str) -> bool {
    normalise(kind, value).is_some_and(|n| n == value)
}

/// The escape character of every `LIKE` pattern lethe builds: `!`, the same
/// in every dialect's string literal (a backslash is not).
pub(crate) const LIKE_ESCAPE: char = '!';

/// For a normalised e-mail address with non-ASCII letters, a `LIKE` pattern
/// (escape `!`) that `lower(trim(col))` of every spelling of it matches on
/// every backend: each run of non-ASCII characters is a `%` (SQLite's
/// `lower` leaves `Ö` as it is, `normalise` folds it to `ö`), the rest is
/// literal. `None` for an ASCII address, which `=` finds.
pub(crate) fn email_like_pattern(normalised: &str) -> Option<String> {
    if normalised.is_ascii() {
        return None;
    }
    let mut out = String::with_capacity(normalised.len() + 4);
    let mut in_wild = false;
    for c in normalised.chars() {
        if !c.is_ascii() {
            if !in_wild {
                out.push('%');
                in_wild = true;
            }
            continue;
        }
        in_wild = false;
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
    Some(out)
}

/// A `LIKE` pattern that every value whose digits are `digits` matches:
/// the digits in order, `%` before, between and after (`%4%9%3%`). Digits
/// need no escaping. It also matches values with more digits; the Rust
/// re-check drops those.
pub(crate) fn digits_like_pattern(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() * 2 + 1);
    out.push('%');
    for d in digits.chars().filter(char::is_ascii_digit) {
        out.push(d);
        out.push('%');
    }
    out
}

/// The keys a caller asked for, to keep only the rows the database matched
/// for them: an integer key is asked for by `18` or by a text that reads as
/// 18 (`"018"`: SQLite's affinity and MariaDB compare them as numbers); a
/// text key only by its exact text, so a text `018` is never the answer to
/// `18`, nor `ABC` to `abc` under a case-insensitive collation.
pub(crate) struct Requested {
    texts: std::collections::HashSet<String>,
    ints: std::collections::HashSet<i64>,
}

impl Requested {
    pub(crate) fn new(keys: &[EntityKey]) -> Requested {
        let mut texts = std::collections::HashSet::new();
        let mut ints = std::collections::HashSet::new();
        for k in keys {
            match k {
                EntityKey::Int(i) => {
                    ints.insert(*i);
                    texts.insert(i.to_string());
                }
                EntityKey::Text(t) => {
                    if let Ok(i) = t.parse::<i64>() {
                        ints.insert(i);
                    }
                    texts.insert(t.clone());
                }
            }
        }
        Requested { texts, ints }
    }

    pub(crate) fn contains(&self, row_key: &EntityKey) -> bool {
        match row_key {
            EntityKey::Int(i) => self.ints.contains(i),
            EntityKey::Text(t) => self.texts.contains(t),
        }
    }
}

/// A blob as an export gives it: standard base64.
pub(crate) fn blob_json(bytes: &[u8]) -> serde_json::Value {
    use base64::Engine;
    serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Export rows keyed by their entity key: sorted, each key once.
pub(crate) fn sorted_rows(
    mut rows: Vec<(EntityKey, serde_json::Map<String, serde_json::Value>)>,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.dedup_by(|a, b| a.0 == b.0);
    rows.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod search_tests {
    use super::*;

    #[test]
    fn the_rust_recheck_is_the_normalised_match() {
        use IdentifierKind::{Email, Phone};
        let n = "jane.doe@example.com";
        assert!(identifier_matches(Email, " Jane.Doe@Example.COM ", n));
        assert!(identifier_matches(Email, "jane.doe@example.com\t", n));
        // What the SQL's candidates may hold that is not the address.
        assert!(!identifier_matches(Email, "jane.doe@example.co", n));
        assert!(!identifier_matches(Email, "jane.doe@example.com.au", n));
        assert!(!identifier_matches(Email, "xjane.doe@example.com", n));
        assert!(!identifier_matches(Email, "jané.doe@example.com", n));
        assert!(!identifier_matches(Email, "", n));
        let p = "49301234567";
        assert!(identifier_matches(Phone, "+49 (30) 123-4567", p));
        assert!(identifier_matches(Phone, "49301234567", p));
        // A LIKE candidate with a digit more, in between or at the end.
        assert!(!identifier_matches(Phone, "+49 (30) 123-45670", p));
        assert!(!identifier_matches(Phone, "+49 (30) 1293-4567", p));
        assert!(!identifier_matches(Phone, "+49 (30) 123-4576", p));
        assert!(identifier_matches(
            Email,
            "JÖRG@EXAMPLE.COM",
            "jörg@example.com"
        ));
    }

    #[test]
    fn only_a_normal_form_is_searched() {
        use IdentifierKind::{Email, Phone};
        assert!(is_normal(Email, "jane@example.com"));
        assert!(!is_normal(Email, "Jane@example.com"));
        assert!(!is_normal(Email, " jane@example.com"));
        assert!(!is_normal(Email, "jane"));
        assert!(is_normal(Phone, "49301234567"));
        assert!(!is_normal(Phone, "+49301234567"));
        assert!(!is_normal(Phone, "123456"), "too short to be a phone");
    }

    #[test]
    fn like_patterns() {
        assert_eq!(digits_like_pattern("4930123"), "%4%9%3%0%1%2%3%");
        assert_eq!(digits_like_pattern(""), "%");
        assert_eq!(email_like_pattern("jane@example.com"), None);
        assert_eq!(
            email_like_pattern("jörg_ä%!x@exämple.com").as_deref(),
            Some("j%rg!_%!%!!x@ex%mple.com")
        );
        assert_eq!(
            email_like_pattern("jöä@x.de").as_deref(),
            Some("j%@x.de"),
            "a run of non-ASCII letters is one wildcard"
        );
    }

    #[test]
    fn requested_keys_keep_text_keys_exact() {
        let r = Requested::new(&[EntityKey::Int(18), EntityKey::Text("abc".into())]);
        assert!(r.contains(&EntityKey::Int(18)));
        assert!(r.contains(&EntityKey::Text("18".into())));
        assert!(!r.contains(&EntityKey::Text("018".into())));
        assert!(r.contains(&EntityKey::Text("abc".into())));
        assert!(!r.contains(&EntityKey::Text("ABC".into())));
        assert!(!r.contains(&EntityKey::Int(19)));
        let r = Requested::new(&[EntityKey::Text("018".into())]);
        assert!(r.contains(&EntityKey::Int(18)), "affinity: '018' is 18");
        assert!(r.contains(&EntityKey::Text("018".into())));
        assert!(!r.contains(&EntityKey::Text("18".into())));
    }

    #[test]
    fn a_message_quoting_the_value_is_withheld() {
        let et = EntityType {
            name: "lead".into(),
            table: "leads".into(),
            key: "id".into(),
            clock: vec![],
            parents: vec![],
            subject: vec![],
            identifiers: vec![],
        };
        let e = CrmError::searching(
            &et,
            "email",
            "jane@example.com",
            sqlx::Error::Protocol("invalid input: \"jane@example.com\"".into()),
        )
        .to_string();
        assert!(!e.contains("jane@"), "{e}");
        assert!(
            e.contains("column email") && e.contains("table leads"),
            "{e}"
        );
        let e = CrmError::searching(
            &et,
            "email",
            "jane@example.com",
            sqlx::Error::Protocol("no such column: email".into()),
        )
        .to_string();
        assert!(e.contains("no such column"), "{e}");
    }
}
