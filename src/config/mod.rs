//! Configuration: reads `lethe.toml`, expands `${ENV}`, resolves relative
//! paths against the file's folder and validates everything into a typed
//! [`Config`]. Validation is pure (no store is reached here) and collects
//! *every* problem before reporting, each with file:line:column and key.
//!
//! Architecture invariant: durations, globs and path patterns are parsed once,
//! here; the rest of the engine never sees their strings again.

pub mod policy;
mod raw;
pub mod rules;
pub mod schedule;

use std::fmt;
use std::path::{Path, PathBuf};

pub use policy::{CompiledPolicy, KeepMatch};
pub use rules::{ContentKind, LinkRule, PathPattern};

use crate::sensitive::Sensitive;
use raw::RawConfig;

/// A calendar-aware retention period ("24 months" is not 730 days).
#[derive(Clone, Debug)]
pub struct Retention {
    span: jiff::Span,
    text: String,
}

impl Retention {
    pub fn parse(text: &str) -> Result<Retention, String> {
        // jiff's own message quotes its parser's state ("parsed value
        // 'P24M'"); the user needs the forms that work.
        let span: jiff::Span = text.trim().parse().map_err(|_| {
            format!(
                "`{text}` is not a duration; write e.g. \"24 months\", \"30 days\", \"1 year 6 months\" or \"P2Y\""
            )
        })?;
        if span.is_negative() {
            return Err(format!(
                "`{text}` is negative; a retention period must not be"
            ));
        }
        Ok(Retention {
            span,
            text: text.trim().to_string(),
        })
    }

    /// No time at all (a subject request's "retention").
    pub fn zero() -> Retention {
        Retention {
            span: jiff::Span::new(),
            text: "0 days".to_string(),
        }
    }

    /// `at + self`, in UTC calendar arithmetic; saturates far in the future.
    pub fn add_to(&self, at: crate::model::Instant) -> crate::model::Instant {
        let Ok(ts) = jiff::Timestamp::from_second(at) else {
            return i64::MAX;
        };
        match ts
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .checked_add(self.span)
        {
            Ok(z) => z.timestamp().as_second(),
            Err(_) => i64::MAX,
        }
    }

    /// `at - self`, in UTC calendar arithmetic; saturates far in the past.
    pub fn subtract_from(&self, at: crate::model::Instant) -> crate::model::Instant {
        let Ok(ts) = jiff::Timestamp::from_second(at) else {
            return i64::MIN;
        };
        match ts
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .checked_sub(self.span)
        {
            Ok(z) => z.timestamp().as_second(),
            Err(_) => i64::MIN,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

#[derive(Clone, Debug)]
pub struct EntityType {
    pub name: String,
    pub table: String,
    pub key: String,
    /// First non-null wins.
    pub clock: Vec<String>,
    /// (parent type, foreign-key column)
    pub parents: Vec<(String, String)>,
    /// Columns that identify the person; never read, never printed.
    pub subject: Vec<String>,
    /// The subject columns whose values identify a person (e-mail, phone):
    /// read once, at erasure, into keyed hashes for the residual scan and
    /// the suppression list; a subset of `subject`.
    pub identifiers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeepRule {
    pub entity: String,
    /// An SQL condition on the entity's table; `None` = any entity of the type.
    pub condition: Option<String>,
}

impl fmt::Display for KeepRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.condition {
            None => f.write_str(&self.entity),
            Some(c) => write!(f, "{} where {}", self.entity, c),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub root: String,
    pub retain: Retention,
    pub keep_if: Vec<KeepRule>,
    pub basis: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrmUrl {
    Sqlite(PathBuf),
    Postgres(Sensitive<String>),
    Mysql(Sensitive<String>),
    /// `dataverse://HOST` (https) or `dataverse+http://127.0.0.1:PORT`
    /// (plain http, loopback only: tests): the Web API of a Dataverse
    /// environment, credentials from the `AZURE_*` environment.
    Dataverse {
        /// `https://HOST` or `http://127.0.0.1:PORT`.
        origin: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Folder(PathBuf),
    Memory,
    S3(String),
    Azure(String),
    /// `crm://`: a table of the CRM's own database (`[technical.table]`).
    CrmTable,
}

/// How a payload table stores its bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// The bytes themselves (`bytea`, `BLOB`, `LONGBLOB`).
    Raw,
    /// Standard Base64 text (Dataverse's `documentbody`); line breaks are
    /// allowed and ignored.
    Base64,
}

/// `[technical.table]`: the CRM table that holds payloads, one per row.
/// Every name is a column of `table`; the object key is the row's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSettings {
    /// May be `schema.table`.
    pub table: String,
    pub key: String,
    pub body: String,
    pub encoding: BodyEncoding,
    /// The payload's file name, which the link rules' globs and path
    /// patterns match (the key when there is none).
    pub name: Option<String>,
    pub modified: String,
    /// A column the writer changes on every update (a row version).
    pub version: Option<String>,
    /// A column that holds the decoded body's size in bytes, kept by the
    /// CRM itself (Dataverse's `filesize`): a listing reads it instead of
    /// asking for a body's size. Required on Dataverse, whose Web API
    /// cannot compute one; an SQL CRM computes the size and refuses it.
    pub size: Option<String>,
    /// Direct links: (entity type, foreign-key column).
    pub links: Vec<(String, String)>,
    pub polymorphic: Option<Polymorphic>,
}

/// A polymorphic reference: `id` holds the key of an entity whose type
/// the code in `type_column` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Polymorphic {
    pub id: String,
    pub type_column: String,
    /// (type code, entity type)
    pub types: Vec<(String, String)>,
}

impl TableSettings {
    /// The metadata name under which a table store reports a direct link
    /// column's value, and which the link rule made for it matches: the
    /// column (lower case), or `id@type` for a polymorphic reference.
    pub fn link_name(column: &str, entity: Option<&str>) -> String {
        match entity {
            None => column.to_ascii_lowercase(),
            Some(e) => format!("{}@{e}", column.to_ascii_lowercase()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateUrl {
    Sqlite(PathBuf),
    Postgres(Sensitive<String>),
}

/// `[safety]` beyond `max_delete_fraction`: brakes for what looks like a
/// read error rather than a CRM that changed.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetySettings {
    /// A plan in which more than this share of a type's entities name a
    /// parent that does not exist (per relation) is braked: a wrong parent
    /// column makes every parent look childless.
    pub max_dangling_fraction: f64,
    /// A plan is braked when a type's count fell by more than this share
    /// since the previous plan (after what lethe itself deleted since).
    pub max_drop_fraction: f64,
    /// The same for the types named in a `keep_if`: a contract table that
    /// reads short makes kept cases due, so its bound is tighter.
    pub max_keep_drop_fraction: f64,
}

impl Default for SafetySettings {
    fn default() -> Self {
        SafetySettings {
            max_dangling_fraction: 0.01,
            max_drop_fraction: 0.5,
            max_keep_drop_fraction: 0.1,
        }
    }
}

/// How `apply` works through a plan: batches, parallelism, retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplySettings {
    /// Attempts per item for transient faults (1 = no retry).
    pub max_attempts: usize,
    /// First retry delay; doubles per attempt (with jitter) up to `max_backoff`.
    pub backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
    /// Cases per CRM transaction.
    pub batch_cases: usize,
    /// Objects per journal step.
    pub batch_objects: usize,
    /// Object deletes in flight at once.
    pub parallel_deletes: usize,
    /// A worker silent (no heartbeat) this long is taken for dead, and its
    /// claimed batches are taken over (PostgreSQL state, several workers).
    pub worker_timeout: std::time::Duration,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            max_attempts: 5,
            backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(10),
            batch_cases: 1000,
            batch_objects: 500,
            parallel_deletes: 8,
            worker_timeout: std::time::Duration::from_secs(60),
        }
    }
}

fn parse_delay(text: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = text.trim().parse().map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. \"200ms\" or \"10s\"")
    })?;
    std::time::Duration::try_from(d).map_err(|_| format!("`{text}` is negative"))
}

/// `[serve]`: the HTTP API of `lethe serve`.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    /// Default address for `lethe serve` (`--listen` overrides).
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    pub request_timeout: std::time::Duration,
    pub tokens: Vec<ApiToken>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: "127.0.0.1:8080".into(),
            body_limit: 8 << 20,
            request_timeout: std::time::Duration::from_secs(30),
            tokens: Vec::new(),
        }
    }
}

/// What a bearer token may do; each scope includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read: explain, plans, sweeps, holds, audit, metrics.
    Read,
    /// Operate: register links, add and lift holds, trigger a sweep.
    Operate,
    /// Admin: approve and apply a plan.
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "operate" => Some(Scope::Operate),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }
}

/// A bearer token, known only by the SHA-256 of its text.
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scope: Scope,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub crm: CrmUrl,
    /// PostgreSQL: VACUUM the tables lethe deleted from, after apply.
    pub crm_vacuum: bool,
    /// Dataverse: Web API requests in flight at most (default 16, at most 51).
    pub crm_max_in_flight: usize,
    /// In dependency order: every parent type comes before its children.
    pub entities: Vec<EntityType>,
    pub store: StoreUrl,
    /// `[technical.table]`, with `url = "crm://"`.
    pub table: Option<TableSettings>,
    pub links: Vec<LinkRule>,
    pub orphans_retain: Retention,
    pub max_content_bytes: u64,
    pub max_line_bytes: u64,
    /// Object stores: delete in batches (S3 DeleteObjects; Azure Blob Batch,
    /// 256 blobs per request), or one request per object,
    /// `apply.parallel_deletes` at a time (for gateways without
    /// DeleteObjects).
    pub batch_deletes: bool,
    /// Redact shared objects whose deleted entities are all linked by
    /// records (default); `false` keeps them whole (they count as residual).
    pub redact: bool,
    pub max_delete_fraction: f64,
    /// The rest of `[safety]`: the dangling-parent and count-drop brakes.
    pub safety: SafetySettings,
    pub policies: Vec<Policy>,
    /// The policies compiled against the entity types (their order), once.
    pub compiled_policies: Vec<CompiledPolicy>,
    /// The conditional keep rules of all policies, distinct, in the bit
    /// order of `evaluate::Node::keep_bits`.
    pub keep_conditions: Vec<KeepRule>,
    pub state: StateUrl,
    /// `[state] plan_retention`: `lethe serve` prunes plans older than this
    /// after each run (never one in progress, the latest, or the brake's
    /// baseline); none: plans are kept until `lethe plan prune`.
    pub plan_retention: Option<Retention>,
    pub audit_key: Sensitive<Vec<u8>>,
    pub apply: ApplySettings,
    /// `[schedule]`: what `lethe serve` runs, and when (none: no schedule).
    pub schedule: Option<schedule::Schedule>,
    pub serve: ServeSettings,
    /// SHA-256 of the file's bytes: plans record which config made them.
    pub hash: String,
    /// The file's text (small by construction), so that checks made after
    /// loading — against the CRM's catalogue — can name the file:line of
    /// the key they found wrong.
    pub source: String,
}

impl Config {
    pub fn entity(&self, name: &str) -> Option<&EntityType> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// The entity types' names, in the config's (the graph's) order.
    pub fn type_names(&self) -> Vec<String> {
        self.entities.iter().map(|e| e.name.clone()).collect()
    }

    pub fn entity_index(&self, name: &str) -> Option<usize> {
        self.entities.iter().position(|e| e.name == name)
    }

    /// A problem with the key at `path`, located in the file (line and
    /// column of the deepest key of `path` that the file has).
    pub fn problem(&self, path: Vec<Seg>, message: impl Into<String>) -> Problem {
        let mut problems = Problems {
            text: &self.source,
            root: toml::de::DeTable::parse(&self.source)
                .ok()
                .map(|t| t.into_inner()),
            found: Vec::new(),
        };
        problems.add(path, message);
        problems.found.remove(0)
    }

    /// The problems as one error, sorted by their place in the file.
    pub fn invalid(&self, mut problems: Vec<Problem>) -> ConfigError {
        problems.sort_by_key(|p| (p.line, p.column));
        ConfigError::Invalid {
            file: self.file.clone(),
            problems,
        }
    }
}

/// One thing wrong with the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config {}: {source}; pass -c/--config or create ./lethe.toml (`lethe demo` writes an example)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
    /// A bad argument (the command line has no file, line or column).
    #[error("{key}: {message}")]
    Usage { key: String, message: String },
}

fn render_problems(file: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "{} problem{} in {}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        file.display()
    );
    for p in problems {
        out.push_str(&format!(
            "\n  {}:{}:{}: {}: {}",
            file.display(),
            p.line,
            p.column,
            p.key,
            p.message
        ));
    }
    out
}

/// One step of a key path in the file (`crm.entities.lead.key`,
/// `policy[0].keep_if[1]`), for locating a problem found after loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

fn key_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() { "(file)".into() } else { s }
}

macro_rules! p {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

mod validate;

impl From<&str> for Seg {
    fn from(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }
}
impl From<&String> for Seg {
    fn from(s: &String) -> Seg {
        Seg::Key(s.clone())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// The keys lethe reads in the table at `parent` (for "did you mean").
/// `every_documented_key_is_known` holds this against lethe.reference.toml.
fn known_keys(parent: &[Seg]) -> &'static [&'static str] {
    let keys: Vec<&str> = parent
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.as_str(),
            Seg::Index(_) => "[]",
        })
        .collect();
    match keys.as_slice() {
        [] => &[
            "crm",
            "technical",
            "safety",
            "policy",
            "state",
            "audit",
            "apply",
            "schedule",
            "serve",
        ],
        ["crm"] => &["url", "vacuum", "max_in_flight", "entities"],
        ["crm", "entities", _] => &["table", "key", "clock", "parent", "subject", "identifiers"],
        ["technical"] => &[
            "url",
            "link",
            "orphans",
            "max_content_bytes",
            "max_line_bytes",
            "batch_deletes",
            "redact",
            "table",
        ],
        ["technical", "table"] => &[
            "table",
            "key",
            "body",
            "encoding",
            "name",
            "modified",
            "version",
            "size",
            "links",
            "polymorphic",
        ],
        ["technical", "table", "polymorphic"] => &["id", "type", "types"],
        ["technical", "link", "[]"] => &[
            "path",
            "glob",
            "json",
            "xml",
            "csv",
            "delimiter",
            "record",
            "metadata",
            "crm",
            "entity",
        ],
        ["technical", "orphans"] => &["retain"],
        ["safety"] => &[
            "max_delete_fraction",
            "max_dangling_fraction",
            "max_drop_fraction",
            "max_keep_drop_fraction",
        ],
        ["policy", "[]"] => &["name", "root", "retain", "keep_if", "basis"],
        ["policy", "[]", "keep_if", "[]"] => &["entity", "where"],
        ["state"] => &["url", "plan_retention"],
        ["audit"] => &["key"],
        ["apply"] => &[
            "max_attempts",
            "backoff",
            "max_backoff",
            "batch_cases",
            "batch_objects",
            "parallel_deletes",
            "worker_timeout",
        ],
        ["schedule"] => &["cron", "timezone", "mode"],
        ["serve"] => &["listen", "body_limit", "request_timeout", "token"],
        ["serve", "token", "[]"] => &["name", "sha256", "scope"],
        _ => &[],
    }
}

/// Collects problems, locating each key in the source text.
struct Problems<'a> {
    text: &'a str,
    root: Option<toml::de::DeTable<'a>>,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    fn add(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        let offset = self.locate(&path).unwrap_or(0);
        let (line, column) = line_col(self.text, offset);
        self.found.push(Problem {
            line,
            column,
            key: key_path(&path),
            message: message.into(),
        });
    }

    /// The byte offset of the deepest existing key along `path`.
    fn locate(&self, path: &[Seg]) -> Option<usize> {
        use toml::de::DeValue;
        let mut table = self.root.as_ref()?;
        let mut best = None;
        let mut value: Option<&toml::Spanned<DeValue>> = None;
        for seg in path {
            match (seg, value) {
                (Seg::Key(k), None) => {
                    let (key, v) = table.get_key_value(k.as_str())?;
                    best = Some(key.span().start);
                    value = Some(v);
                }
                (Seg::Key(k), Some(v)) => match v.get_ref() {
                    DeValue::Table(t) => {
                        table = t;
                        let Some((key, v)) = t.get_key_value(k.as_str()) else {
                            return best;
                        };
                        best = Some(key.span().start);
                        value = Some(v);
                    }
                    _ => return best,
                },
                (Seg::Index(i), Some(v)) => match v.get_ref() {
                    DeValue::Array(a) => {
                        let Some(item) = a.get(*i) else { return best };
                        best = Some(item.span().start);
                        value = Some(item);
                    }
                    _ => return best,
                },
                (Seg::Index(_), None) => return best,
            }
        }
        best
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

fn ignored_path(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            ignored_path(parent, out);
            out.push(Seg::Index(*index));
        }
        P::Map { parent, key } => {
            ignored_path(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent, out)
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, path, &dir)
}

/// Validates config text; `dir` is where relative paths resolve.
pub fn parse(text: &str, file: &Path, dir: &Path) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_path_buf(),
        problems,
    };
    let root = match toml::de::DeTable::parse(text) {
        Ok(t) => t.into_inner(),
        Err(e) => {
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            return Err(invalid(vec![Problem {
                line,
                column,
                key: "(syntax)".into(),
                message: e.message().trim().to_string(),
            }]));
        }
    };
    let mut problems = Problems {
        text,
        root: Some(root),
        found: Vec::new(),
    };

    let mut unknown = Vec::new();
    let de = match toml::de::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => {
            problems.add(vec![], e.message().trim().to_string());
            return Err(invalid(problems.found));
        }
    };
    let raw: Result<RawConfig, _> = serde_ignored::deserialize(de, |path| {
        let mut segs = Vec::new();
        ignored_path(&path, &mut segs);
        unknown.push(segs);
    });
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            problems.found.push(Problem {
                line,
                column,
                key: "(type)".into(),
                message: e.message().trim().to_string(),
            });
            return Err(invalid(problems.found));
        }
    };
    for segs in unknown {
        let hint = match segs.split_last() {
            Some((Seg::Key(k), parent)) => did_you_mean(k, known_keys(parent).iter().copied()),
            _ => String::new(),
        };
        problems.add(
            segs,
            format!("unknown key{hint}; see lethe.reference.toml for every key lethe reads"),
        );
    }

    let config = validate::validate(raw, text, dir, &mut problems);
    if problems.found.is_empty()
        && let Some(c) = config
    {
        return Ok(c);
    }
    problems.found.sort_by_key(|p| (p.line, p.column));
    Err(invalid(problems.found))
}

/// `; did you mean `x`?` when one of `candidates` is close to `name`
/// (a typo, a case slip, a missing prefix), else nothing.
pub fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// The candidate most like `name`, if any is close enough to be a typo of it.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .filter(|c| *c != name)
        .map(|c| {
            let cl = c.to_ascii_lowercase();
            // Case slips and names that contain each other (`leadid` in
            // `originatingleadid`) are likely; otherwise an edit distance
            // within a third of the name.
            let score = if cl == lower {
                0.0
            } else if lower.len() >= 3 && (cl.contains(&lower) || lower.contains(&cl)) {
                1.0
            } else {
                strsim::levenshtein(&lower, &cl) as f64 + 1.0
            };
            (score, c)
        })
        .filter(|(score, c)| *score <= 1.0 + (name.len().max(c.len()) as f64 / 3.0).floor())
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests;
