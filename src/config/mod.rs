//! Configuration: reads `lethe.toml`, expands `${ENV}`, resolves relative
//! paths against the file's folder and validates everything into a typed
//! [`Config`]. Validation is pure (no store is reached here) and collects
//! *every* problem before reporting, each with file:line:column and key.
//!
//! Architecture invariant: durations, globs and path patterns are parsed once,
//! here; the rest of the engine never sees their strings again.

mod raw;
pub mod rules;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use rules::{ContentKind, LinkRule, PathPattern};

use crate::sensitive::Sensitive;
use raw::{RawConfig, RawKeep};

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Folder(PathBuf),
    Memory,
    S3(String),
    Azure(String),
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
    /// In dependency order: every parent type comes before its children.
    pub entities: Vec<EntityType>,
    pub store: StoreUrl,
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
        ["crm"] => &["url", "vacuum", "entities"],
        ["crm", "entities", _] => &["table", "key", "clock", "parent", "subject", "identifiers"],
        ["technical"] => &[
            "url",
            "link",
            "orphans",
            "max_content_bytes",
            "max_line_bytes",
            "batch_deletes",
            "redact",
        ],
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

/// Expands `${NAME}` from the environment.
fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => {
                return Err(format!(
                    "environment variable {name} is not set (referenced as ${{{name}}})"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
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

    let config = validate(raw, text, dir, &mut problems);
    if problems.found.is_empty()
        && let Some(c) = config
    {
        return Ok(c);
    }
    problems.found.sort_by_key(|p| (p.line, p.column));
    Err(invalid(problems.found))
}

fn required<T: Clone>(value: &Option<T>, path: Vec<Seg>, problems: &mut Problems) -> Option<T> {
    if value.is_none() {
        problems.add(path, "missing; this key is required");
    }
    value.clone()
}

fn validate(raw: RawConfig, text: &str, dir: &Path, pr: &mut Problems) -> Option<Config> {
    // [crm]
    let raw_crm = raw.crm.unwrap_or_default();
    let crm = match required(&raw_crm.url, p!["crm", "url"], pr) {
        Some(url) => match expand_env(&url) {
            Ok(url) => parse_crm_url(&url, dir)
                .map_err(|m| pr.add(p!["crm", "url"], m))
                .ok(),
            Err(m) => {
                pr.add(p!["crm", "url"], m);
                None
            }
        },
        None => None,
    };

    let names: BTreeSet<String> = raw_crm.entities.keys().cloned().collect();
    if names.is_empty() {
        pr.add(
            p!["crm", "entities"],
            "no entity types; declare at least one [crm.entities.NAME] table",
        );
    }
    let mut entities = Vec::new();
    for (name, e) in &raw_crm.entities {
        let at = |k: &str| p!["crm", "entities", name, k];
        if !is_identifier(name) {
            pr.add(
                p!["crm", "entities", name],
                "entity type names are letters, digits, `_` and `-`",
            );
        }
        let table = required(&e.table, at("table"), pr).unwrap_or_default();
        let key = required(&e.key, at("key"), pr).unwrap_or_default();
        let clock = e.clock.clone().map(|c| c.into_vec()).unwrap_or_default();
        if clock.is_empty() {
            pr.add(
                at("clock"),
                "missing; name the column(s) holding the last activity, e.g. clock = [\"modified_at\", \"created_at\"]",
            );
        }
        for column in clock.iter().chain([&table, &key]) {
            if !column.is_empty() && !is_sql_name(column) {
                pr.add(
                    at("clock"),
                    format!("`{column}` is not a plain SQL identifier (letters, digits, `_`, optionally schema.table)"),
                );
            }
        }
        let mut parents = Vec::new();
        for (parent, column) in &e.parent {
            if !names.contains(parent) {
                pr.add(
                    p!["crm", "entities", name, "parent", parent],
                    format!(
                        "unknown entity type `{parent}`; declared types: {}",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if !is_sql_name(column) {
                pr.add(
                    p!["crm", "entities", name, "parent", parent],
                    format!("`{column}` is not a plain SQL identifier"),
                );
            }
            parents.push((parent.clone(), column.clone()));
        }
        let subject = e.subject.clone().map(|s| s.into_vec()).unwrap_or_default();
        let identifiers = e
            .identifiers
            .clone()
            .map(|s| s.into_vec())
            .unwrap_or_default();
        for column in &identifiers {
            if !subject.contains(column) {
                pr.add(
                    p!["crm", "entities", name, "identifiers"],
                    format!(
                        "`{column}` is not one of this type's subject columns ({}); identifiers are the subject columns that identify a person, so add it to `subject` too",
                        if subject.is_empty() {
                            "none declared".to_string()
                        } else {
                            subject.join(", ")
                        }
                    ),
                );
            } else if !is_sql_name(column) {
                pr.add(
                    p!["crm", "entities", name, "identifiers"],
                    format!("`{column}` is not a plain SQL identifier"),
                );
            }
        }
        entities.push(EntityType {
            name: name.clone(),
            table,
            key,
            clock,
            parents,
            subject,
            identifiers,
        });
    }
    let entities = match topo_order(&entities) {
        Ok(order) => order,
        Err(cycle) => {
            pr.add(
                p!["crm", "entities", &cycle[0], "parent"],
                format!(
                    "the parent relations form a cycle ({}); a case must be a tree of descendants",
                    cycle.join(" → ")
                ),
            );
            entities
        }
    };

    // [technical]
    let raw_tech = raw.technical.unwrap_or_default();
    let store = match required(&raw_tech.url, p!["technical", "url"], pr) {
        Some(url) => match expand_env(&url) {
            Ok(url) => Some(parse_store_url(&url, dir)),
            Err(m) => {
                pr.add(p!["technical", "url"], m);
                None
            }
        },
        None => None,
    };
    let mut links = Vec::new();
    for (i, rule) in raw_tech.link.iter().enumerate() {
        match rules::compile(i, rule, &names) {
            Ok(r) => links.push(r),
            Err(errs) => {
                for (key, m) in errs {
                    pr.add(p!["technical", "link", i, key], m);
                }
            }
        }
    }
    let orphans_text = raw_tech
        .orphans
        .and_then(|o| o.retain)
        .unwrap_or_else(|| "30 days".into());
    let orphans_retain = Retention::parse(&orphans_text)
        .map_err(|m| pr.add(p!["technical", "orphans", "retain"], m))
        .ok();

    // [safety]
    let raw_safety = raw.safety.unwrap_or_default();
    let defaults = SafetySettings::default();
    let mut share = |value: Option<f64>, key: &str, default: f64| -> Option<f64> {
        let v = value.unwrap_or(default);
        // `-0.0` is inside 0..=1 for the comparison, and prints as "-0%".
        if v.is_nan() || v.is_sign_negative() || v > 1.0 {
            pr.add(
                p!["safety", key],
                format!("{v} is not a share between 0 and 1 (write e.g. 0.5 for 50%)"),
            );
            return None;
        }
        Some(v)
    };
    let max_delete_fraction = share(raw_safety.max_delete_fraction, "max_delete_fraction", 0.5);
    let safety = (|| {
        Some(SafetySettings {
            max_dangling_fraction: share(
                raw_safety.max_dangling_fraction,
                "max_dangling_fraction",
                defaults.max_dangling_fraction,
            )?,
            max_drop_fraction: share(
                raw_safety.max_drop_fraction,
                "max_drop_fraction",
                defaults.max_drop_fraction,
            )?,
            max_keep_drop_fraction: share(
                raw_safety.max_keep_drop_fraction,
                "max_keep_drop_fraction",
                defaults.max_keep_drop_fraction,
            )?,
        })
    })();
    let max_delete_fraction = max_delete_fraction.unwrap_or(0.5);

    // [[policy]]
    if raw.policy.is_empty() {
        pr.add(
            p!["policy"],
            "no [[policy]]; without one nothing is ever due",
        );
    }
    let mut policies = Vec::new();
    let mut policy_names = BTreeSet::new();
    let mut conditional = BTreeSet::new();
    for (i, rp) in raw.policy.iter().enumerate() {
        let name = required(&rp.name, p!["policy", i, "name"], pr).unwrap_or_default();
        if !name.is_empty() && !policy_names.insert(name.clone()) {
            pr.add(
                p!["policy", i, "name"],
                format!("policy `{name}` is declared twice"),
            );
        }
        let root = required(&rp.root, p!["policy", i, "root"], pr).unwrap_or_default();
        if !root.is_empty() && !names.contains(&root) {
            pr.add(
                p!["policy", i, "root"],
                format!(
                    "unknown entity type `{root}`{}; declared types: {}",
                    did_you_mean(&root, names.iter().map(String::as_str)),
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        let retain = required(&rp.retain, p!["policy", i, "retain"], pr).and_then(|t| {
            Retention::parse(&t)
                .map_err(|m| pr.add(p!["policy", i, "retain"], m))
                .ok()
        });
        let mut keep_if = Vec::new();
        for (j, k) in rp.keep_if.iter().enumerate() {
            let rule = match k {
                RawKeep::Type(t) => KeepRule {
                    entity: t.clone(),
                    condition: None,
                },
                RawKeep::Where { entity, condition } => KeepRule {
                    entity: entity.clone(),
                    condition: condition.clone().filter(|c| !c.trim().is_empty()),
                },
            };
            if !names.contains(&rule.entity) {
                pr.add(
                    p!["policy", i, "keep_if", j],
                    format!(
                        "unknown entity type `{}`{}; declared types: {}",
                        rule.entity,
                        did_you_mean(&rule.entity, names.iter().map(String::as_str)),
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if let Some(c) = &rule.condition {
                if c.contains(';') {
                    pr.add(
                        p!["policy", i, "keep_if", j],
                        "a keep_if condition is one SQL expression; `;` is not allowed",
                    );
                }
                conditional.insert(rule.clone());
            }
            keep_if.push(rule);
        }
        let basis = required(&rp.basis, p!["policy", i, "basis"], pr).unwrap_or_default();
        if let Some(retain) = retain {
            policies.push(Policy {
                name,
                root,
                retain,
                keep_if,
                basis,
            });
        }
    }
    if conditional.len() > 32 {
        pr.add(p!["policy"], "more than 32 distinct keep_if conditions");
    }

    // [state]
    let raw_state = raw.state.unwrap_or_default();
    let plan_retention = raw_state.plan_retention.as_deref().and_then(|t| {
        Retention::parse(t)
            .map_err(|m| pr.add(p!["state", "plan_retention"], m))
            .ok()
    });
    let state_text = raw_state
        .url
        .unwrap_or_else(|| "sqlite://lethe-state.db".into());
    let state = match expand_env(&state_text) {
        Ok(u) => parse_state_url(&u, dir)
            .map_err(|m| pr.add(p!["state", "url"], m))
            .ok(),
        Err(m) => {
            pr.add(p!["state", "url"], m);
            None
        }
    };

    // [audit]
    let audit_key = match raw.audit.and_then(|a| a.key) {
        None => {
            pr.add(
                p!["audit", "key"],
                "missing; the audit key pseudonymizes every record: set [audit] key = \"${LETHE_AUDIT_KEY}\" and export a secret of 16 characters or more",
            );
            None
        }
        Some(k) => match expand_env(&k) {
            Ok(k) if k.len() >= 16 => Some(Sensitive::new(k.into_bytes())),
            Ok(_) => {
                pr.add(p!["audit", "key"], "too short; use 16 characters or more");
                None
            }
            Err(m) => {
                pr.add(p!["audit", "key"], m);
                None
            }
        },
    };

    // [apply]
    let mut apply = ApplySettings::default();
    if let Some(a) = raw.apply {
        let positive = |v: Option<usize>, key: &str, default: usize, pr: &mut Problems| match v {
            Some(0) => {
                pr.add(p!["apply", key], "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        };
        apply.max_attempts = positive(a.max_attempts, "max_attempts", apply.max_attempts, pr);
        apply.batch_cases = positive(a.batch_cases, "batch_cases", apply.batch_cases, pr);
        apply.batch_objects = positive(a.batch_objects, "batch_objects", apply.batch_objects, pr);
        apply.parallel_deletes = positive(
            a.parallel_deletes,
            "parallel_deletes",
            apply.parallel_deletes,
            pr,
        );
        if let Some(b) = &a.backoff {
            match parse_delay(b) {
                Ok(d) => apply.backoff = d,
                Err(m) => pr.add(p!["apply", "backoff"], m),
            }
        }
        if let Some(b) = &a.max_backoff {
            match parse_delay(b) {
                Ok(d) => apply.max_backoff = d,
                Err(m) => pr.add(p!["apply", "max_backoff"], m),
            }
        }
        if let Some(b) = &a.worker_timeout {
            match parse_delay(b) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => apply.worker_timeout = d,
                Ok(_) => pr.add(p!["apply", "worker_timeout"], "must be at least 1s"),
                Err(m) => pr.add(p!["apply", "worker_timeout"], m),
            }
        }
    }

    // [schedule]
    let schedule = raw.schedule.and_then(|s| {
        use schedule::{Mode, Schedule};
        let mode = match s.mode.as_deref() {
            None | Some("sweep") => Mode::Sweep,
            Some("plan") => Mode::Plan,
            Some(other) => {
                pr.add(
                    p!["schedule", "mode"],
                    format!("`{other}` is not a mode; write \"sweep\" (plan and apply) or \"plan\" (each plan waits for approval)"),
                );
                Mode::Sweep
            }
        };
        let Some(cron) = s.cron else {
            pr.add(
                p!["schedule", "cron"],
                "missing; write e.g. cron = \"0 3 * * *\" (03:00 daily)",
            );
            return None;
        };
        let tz = s.timezone.unwrap_or_else(|| "UTC".into());
        Schedule::parse(&cron, &tz, mode)
            .map_err(|m| {
                let key = if m.contains("time zone") { "timezone" } else { "cron" };
                pr.add(p!["schedule", key], m)
            })
            .ok()
    });

    // [serve]
    let mut serve = ServeSettings::default();
    if let Some(s) = raw.serve {
        if let Some(l) = s.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                pr.add(
                    p!["serve", "listen"],
                    format!("`{l}` is not an address; write e.g. \"127.0.0.1:8080\""),
                );
            }
            serve.listen = l;
        }
        match s.body_limit {
            Some(0) => pr.add(p!["serve", "body_limit"], "must be at least 1 (bytes)"),
            Some(n) => serve.body_limit = n,
            None => {}
        }
        if let Some(t) = &s.request_timeout {
            match parse_delay(t) {
                Ok(d) if !d.is_zero() => serve.request_timeout = d,
                Ok(_) => pr.add(p!["serve", "request_timeout"], "must be more than 0"),
                Err(m) => pr.add(p!["serve", "request_timeout"], m),
            }
        }
        for (i, t) in s.token.into_iter().enumerate() {
            let name = t.name.unwrap_or_else(|| format!("token {}", i + 1));
            let scope = match t.scope.as_deref().map(|s| (s, Scope::parse(s))) {
                Some((_, Some(s))) => Some(s),
                Some((other, None)) => {
                    pr.add(
                        p!["serve", "token", i, "scope"],
                        format!(
                            "`{other}` is not a scope; write \"read\", \"operate\" or \"admin\""
                        ),
                    );
                    None
                }
                None => {
                    pr.add(
                        p!["serve", "token", i, "scope"],
                        format!("missing for {name}"),
                    );
                    None
                }
            };
            let hash = match t.sha256.as_deref().map(expand_env) {
                Some(Ok(h)) => match hex::decode(h.trim()) {
                    Ok(b) if b.len() == 32 => b.try_into().ok(),
                    _ => {
                        pr.add(
                            p!["serve", "token", i, "sha256"],
                            format!("for {name}: not 64 hex digits; write the SHA-256 of the token, e.g. `printf %s \"$TOKEN\" | sha256sum`"),
                        );
                        None
                    }
                },
                Some(Err(m)) => {
                    pr.add(p!["serve", "token", i, "sha256"], m);
                    None
                }
                None => {
                    pr.add(
                        p!["serve", "token", i, "sha256"],
                        format!("missing for {name}"),
                    );
                    None
                }
            };
            if let (Some(scope), Some(sha256)) = (scope, hash) {
                serve.tokens.push(ApiToken {
                    name,
                    sha256,
                    scope,
                });
            }
        }
    }

    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    Some(Config {
        file: PathBuf::new(),
        crm: crm?,
        crm_vacuum: raw_crm.vacuum.unwrap_or(false),
        entities,
        store: store?,
        links,
        orphans_retain: orphans_retain?,
        max_content_bytes: raw_tech.max_content_bytes.unwrap_or(64 << 20),
        max_line_bytes: raw_tech.max_line_bytes.unwrap_or(16 << 20),
        batch_deletes: raw_tech.batch_deletes.unwrap_or(true),
        redact: raw_tech.redact.unwrap_or(true),
        max_delete_fraction,
        policies,
        state: state?,
        plan_retention,
        audit_key: audit_key?,
        apply,
        schedule,
        serve,
        hash,
        source: text.to_string(),
        safety: safety?,
    })
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

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_sql_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        })
}

/// Orders types parents-first; on a cycle returns the types on it.
fn topo_order(entities: &[EntityType]) -> Result<Vec<EntityType>, Vec<String>> {
    let by_name: BTreeMap<&str, &EntityType> =
        entities.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut order = Vec::new();
    let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 1 visiting, 2 done
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a EntityType>,
        state: &mut BTreeMap<&'a str, u8>,
        order: &mut Vec<EntityType>,
        stack: &mut Vec<String>,
    ) -> Result<(), Vec<String>> {
        match state.get(name) {
            Some(2) => return Ok(()),
            Some(1) => {
                let start = stack.iter().position(|s| s == name).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(name.to_string());
                return Err(cycle);
            }
            _ => {}
        }
        let Some(e) = by_name.get(name) else {
            return Ok(()); // unknown parent: reported elsewhere
        };
        state.insert(name, 1);
        stack.push(name.to_string());
        for (parent, _) in &e.parents {
            if let Some((k, _)) = by_name.get_key_value(parent.as_str()) {
                visit(k, by_name, state, order, stack)?;
            }
        }
        stack.pop();
        state.insert(name, 2);
        order.push((*e).clone());
        Ok(())
    }
    for e in entities {
        visit(&e.name, &by_name, &mut state, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

fn strip_scheme<'a>(url: &'a str, schemes: &[&str]) -> Option<&'a str> {
    schemes.iter().find_map(|s| url.strip_prefix(s))
}

fn parse_crm_url(url: &str, dir: &Path) -> Result<CrmUrl, String> {
    if let Some(rest) = strip_scheme(url, &["sqlite://", "sqlite:"]) {
        let rest = rest.split('?').next().unwrap_or(rest);
        if rest.is_empty() {
            return Err("sqlite URL without a file: write sqlite://crm.db".into());
        }
        return Ok(CrmUrl::Sqlite(resolve_path(dir, rest)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(CrmUrl::Postgres(Sensitive::new(url.to_string())));
    }
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        return Ok(CrmUrl::Mysql(Sensitive::new(url.to_string())));
    }
    Err("unsupported CRM URL; use sqlite://FILE, postgres://… or mysql://…".into())
}

fn parse_state_url(url: &str, dir: &Path) -> Result<StateUrl, String> {
    if let Some(rest) = strip_scheme(url, &["sqlite://", "sqlite:"]) {
        let rest = rest.split('?').next().unwrap_or(rest);
        if rest.is_empty() {
            return Err("sqlite URL without a file: write sqlite://lethe-state.db".into());
        }
        return Ok(StateUrl::Sqlite(resolve_path(dir, rest)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StateUrl::Postgres(Sensitive::new(url.to_string())));
    }
    Err("unsupported state URL; use sqlite://FILE or postgres://…".into())
}

fn parse_store_url(url: &str, dir: &Path) -> StoreUrl {
    if url == "memory://" || url == "memory:" {
        StoreUrl::Memory
    } else if let Some(rest) = url.strip_prefix("s3://") {
        StoreUrl::S3(rest.to_string())
    } else if let Some(rest) = url.strip_prefix("az://") {
        StoreUrl::Azure(rest.to_string())
    } else if let Some(rest) = url.strip_prefix("file://") {
        StoreUrl::Folder(resolve_path(dir, rest))
    } else {
        StoreUrl::Folder(resolve_path(dir, url))
    }
}

#[cfg(test)]
mod tests;
