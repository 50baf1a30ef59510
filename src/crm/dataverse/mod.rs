//! Microsoft Dataverse as a CRM: the Web API (OData v4 over HTTPS).
//!
//! - `client.rs`: the HTTP client (token, retries, the cap on requests in
//!   flight, the request counter), usable by any module that talks to the
//!   environment.
//! - `batch.rs`: `$batch` bodies written and answers read, one result per
//!   change set.
//! - `metadata.rs`: `$metadata`: entity sets, properties, Edm types, and
//!   the literal a value is written as.
//! - this file: `DataverseCrm`, the `Crm` trait over them.
//!
//! The config names entity sets as `table` and attributes as columns,
//! spelt as the Web API spells them (`leads`, `leadid`, `modifiedon`,
//! `_parentaccountid_value`). Reads select only the key, clock and parent
//! columns (`$select`), page by `@odata.nextLink` with `Prefer:
//! odata.maxpagesize`, and look keys up in chunks (`k eq a or k eq b …`,
//! the URL bounded). Subject columns are read only where the trait says so:
//! identifiers at erasure and for a subject search, every column for an
//! access export. Keep conditions are OData `$filter` expressions here.
//!
//! The deleting step has no transaction to lock rows in; etags stand in
//! for the locks. The re-check (`recheck::run`) reads each case's current
//! rows with their `@odata.etag`; the rows it approves are deleted
//! children-first in one `$batch` change set per case (cases that share a
//! row share a change set), each `DELETE` with `If-Match` on the etag that
//! was judged. A change set is atomic: a row changed since (`412`) or gone
//! since (`404`) rolls its case back, and the case is re-checked again on
//! its new rows (three rounds, then skipped as changed). A batch whose
//! answer was lost is settled by reading whether its rows are still there.
//! What is still possible, and only in the moment between the re-check's
//! read and the batch: a child row created under a parent the change set
//! deletes (an etag does not change when a child points at the row); what
//! happens to it then is the relationship's cascade rule in the
//! environment.

pub mod batch;
pub mod client;
pub mod metadata;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};

use self::batch::{BatchMethod, BatchOp, ChangeSetResult};
use self::client::{Client, ClientError, ClientOptions, Credentials, MAX_BATCH_OPERATIONS};
use self::metadata::Metadata;
use super::component::{self, ComponentInput};
use super::fit::Column;
use super::recheck::{self, EntityNow, TxnOps};
use super::{
    BatchOutcome, CaseNow, CaseRequest, Crm, CrmError, Decision, EntityRow, LockedPayload,
    PayloadColumn, PayloadInput, RecheckInput,
};
use crate::config::EntityType;
use crate::model::{EntityKey, Instant, parse_clock_text};
use crate::verify::residual::IdentifierKind;

/// Rows per page (Dataverse's largest).
const PAGE: usize = 5000;
/// The longest `$filter` of a key look-up, percent-encoded (Dataverse takes
/// URLs of up to 32 KB; proxies on the way may take less).
const MAX_FILTER: usize = 7000;
/// Rounds of re-check and delete for cases whose rows changed meanwhile.
const ROUNDS: usize = 3;

/// Why a case is kept when its rows kept changing while lethe deleted it.
pub const CHANGED_WHILE_DELETING: &str = "kept: its rows changed (or went) between the re-check and the delete, three times; nothing of it was deleted; the next plan judges it again";

/// The clients of the environments this process talks to, by origin: the
/// CRM and the notes store (`crm://` on Dataverse) of one environment
/// share one client, and so one cap on requests in flight.
static CLIENTS: std::sync::Mutex<Vec<(String, std::sync::Weak<Client>)>> =
    std::sync::Mutex::new(Vec::new());

fn register(origin: &str, client: &Arc<Client>) {
    let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    clients.retain(|(o, c)| o != origin && c.strong_count() > 0);
    clients.push((origin.to_string(), Arc::downgrade(client)));
}

/// The client of the environment at `origin` this process already has (the
/// CRM's), or a new one with the credentials of the `AZURE_*` environment.
pub async fn shared_client(origin: &str, max_in_flight: usize) -> Result<Arc<Client>, CrmError> {
    let known = CLIENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(o, _)| o == origin)
        .and_then(|(_, c)| c.upgrade());
    if let Some(c) = known {
        return Ok(c);
    }
    let client = Arc::new(
        Client::connect(
            origin,
            client::SERVICE_ROOT,
            Credentials::from_env()?,
            ClientOptions {
                max_in_flight,
                ..ClientOptions::default()
            },
        )
        .await?,
    );
    register(origin, &client);
    Ok(client)
}

/// The service's `$metadata`, read and parsed.
pub async fn read_metadata(client: &Client) -> Result<Metadata, CrmError> {
    let xml = client.get_bytes("$metadata", "application/xml").await?;
    Metadata::parse(&xml).map_err(|reason| {
        CrmError::Dataverse(ClientError::Protocol {
            target: "$metadata".into(),
            reason,
        })
    })
}

/// The Web API of one Dataverse environment as a CRM.
pub struct DataverseCrm {
    client: Arc<Client>,
    metadata: tokio::sync::OnceCell<Arc<Metadata>>,
    /// Whether the server takes `tolower` in a `$filter`: 0 not known yet,
    /// 1 yes (OData's standard function), 2 no (Dataverse, which compares
    /// without regard to case anyway).
    tolower: std::sync::atomic::AtomicU8,
}

impl DataverseCrm {
    /// Connects to the environment at `origin` (`https://HOST`, or
    /// `http://127.0.0.1:PORT` for a test server) with `credentials`.
    pub async fn connect(
        origin: &str,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<DataverseCrm, CrmError> {
        let client =
            Arc::new(Client::connect(origin, client::SERVICE_ROOT, credentials, options).await?);
        register(origin, &client);
        Ok(DataverseCrm {
            client,
            metadata: tokio::sync::OnceCell::new(),
            tolower: std::sync::atomic::AtomicU8::new(0),
        })
    }

    /// Connects with the credentials of the `AZURE_*` environment.
    pub async fn from_env(origin: &str, max_in_flight: usize) -> Result<DataverseCrm, CrmError> {
        let credentials = Credentials::from_env()?;
        DataverseCrm::connect(
            origin,
            credentials,
            ClientOptions {
                max_in_flight,
                ..ClientOptions::default()
            },
        )
        .await
    }

    /// The client, for other modules on the same environment.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// `$metadata`, read once.
    pub async fn metadata(&self) -> Result<Arc<Metadata>, CrmError> {
        self.metadata
            .get_or_try_init(|| async { read_metadata(&self.client).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The Edm type of `column` of `et`'s entity set.
    async fn column_type(&self, et: &EntityType, column: &str) -> Result<String, CrmError> {
        let meta = self.metadata().await?;
        column_type(&meta, et, column)
    }

    /// Every row of a query, through `get_pages`.
    async fn rows(&self, path: &str) -> Result<Vec<Map<String, Value>>, CrmError> {
        let mut out = Vec::new();
        self.client
            .get_pages(path, PAGE, &mut |row| out.push(row))
            .await?;
        Ok(out)
    }

    /// The rows of `et` whose `column` is one of `values`, `select`ed,
    /// optionally also meeting `condition`: one query per chunk of values,
    /// several at a time.
    async fn rows_in(
        &self,
        et: &EntityType,
        column: &str,
        values: &[EntityKey],
        select: &str,
        condition: Option<&str>,
    ) -> Result<Vec<Map<String, Value>>, CrmError> {
        let ty = self.column_type(et, column).await?;
        let chunks = in_filters(column, &ty, values);
        let paths: Vec<String> = chunks
            .iter()
            .map(|f| {
                let filter = match condition {
                    Some(c) => format!("{f} and ({c})"),
                    None => f.clone(),
                };
                query(&et.table, &[("$select", select), ("$filter", &filter)])
            })
            .collect();
        let parallel = self.client.max_in_flight();
        let pages: Vec<Vec<Map<String, Value>>> = futures::stream::iter(paths)
            .map(|p| async move { self.rows(&p).await })
            .buffer_unordered(parallel)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Which of `keys` of `et` exist.
    async fn existing_keys(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<EntityKey>, CrmError> {
        let meta = self.metadata().await?;
        let key_ty = column_type(&meta, et, &et.key)?;
        let rows = self.rows_in(et, &et.key, keys, &et.key, None).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get(&et.key).and_then(|v| key_of(v, &key_ty)))
            .collect())
    }

    /// Sends the change sets in `$batch` requests of at most 1000
    /// operations, several at a time: what became of each, in order.
    async fn send_change_sets(&self, sets: &[Vec<BatchOp>]) -> Vec<Sent> {
        // Requests: consecutive runs of change sets.
        let mut requests: Vec<std::ops::Range<usize>> = Vec::new();
        let (mut start, mut ops) = (0usize, 0usize);
        for (i, set) in sets.iter().enumerate() {
            if ops + set.len() > MAX_BATCH_OPERATIONS && i > start {
                requests.push(start..i);
                start = i;
                ops = 0;
            }
            ops += set.len();
        }
        if start < sets.len() {
            requests.push(start..sets.len());
        }
        let parallel = self.client.max_in_flight();
        let answers: Vec<Answered> = futures::stream::iter(requests)
            .map(|range| async move {
                let answer = self.client.batch(&sets[range.clone()]).await;
                (range, answer)
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut out: Vec<Sent> = (0..sets.len())
            .map(|_| Sent::Answered(ChangeSetResult::NotAttempted))
            .collect();
        for (range, answer) in answers {
            match answer {
                Ok(results) => {
                    for (i, r) in range.zip(results) {
                        out[i] = Sent::Answered(r);
                    }
                }
                // Shared by every change set of the request.
                Err(e) => {
                    let text = e.to_string();
                    for i in range {
                        out[i] = if e.may_have_run() {
                            Sent::Unknown(text.clone())
                        } else if e.is_transient() {
                            Sent::Answered(ChangeSetResult::NotAttempted)
                        } else {
                            Sent::Refused(text.clone())
                        };
                    }
                }
            }
        }
        out
    }
}

/// A `$batch` request's change sets and its answer.
type Answered = (
    std::ops::Range<usize>,
    Result<Vec<ChangeSetResult>, ClientError>,
);

/// What became of a change set sent.
enum Sent {
    /// The server answered for it.
    Answered(ChangeSetResult),
    /// The request was refused whole: nothing of it ran.
    Refused(String),
    /// The answer was lost: it may or may not have run.
    Unknown(String),
}

/// The Edm type of `column` of `et`'s entity set, or an error naming both.
fn column_type(meta: &Metadata, et: &EntityType, column: &str) -> Result<String, CrmError> {
    meta.property_type(&et.table, column)
        .ok_or_else(|| match meta.properties(&et.table) {
            None => CrmError::no_table(et),
            Some(_) => CrmError::Schema {
                entity: et.name.clone(),
                table: et.table.clone(),
                message: format!(
                    "$metadata has no property `{column}`; check the column names in [crm.entities.{}]",
                    et.name
                ),
            },
        })
}

/// Percent-encodes a query option's value.
fn enc(value: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b',')
        .remove(b'(')
        .remove(b')');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

/// `set?name=value&…`, values percent-encoded.
pub(crate) fn query(set: &str, options: &[(&str, &str)]) -> String {
    let mut out = set.to_string();
    for (i, (name, value)) in options.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(&enc(value));
    }
    out
}

/// `(col eq a or col eq b …)` filters over `values`, each short enough for a
/// URL once encoded; values that cannot be of the column's type (a text
/// that is no Guid) are left out: they match nothing.
pub(crate) fn in_filters(column: &str, edm: &str, values: &[EntityKey]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut seen = HashSet::new();
    for v in values {
        let Ok(lit) = metadata::literal(edm, v) else {
            continue;
        };
        if !seen.insert(lit.clone()) {
            continue;
        }
        let term = format!("{column} eq {lit}");
        if !current.is_empty() && enc(&current).len() + enc(&term).len() + 8 > MAX_FILTER {
            out.push(format!("({current})"));
            current.clear();
        }
        if !current.is_empty() {
            current.push_str(" or ");
        }
        current.push_str(&term);
    }
    if !current.is_empty() {
        out.push(format!("({current})"));
    }
    out
}

/// The path of one row: `set(key)`.
pub(crate) fn key_path(set: &str, edm: &str, key: &EntityKey) -> Result<String, String> {
    let lit = metadata::literal(edm, key)?;
    Ok(format!("{set}({})", enc(&lit)))
}

/// The `$select` of an entity row: key, clocks, parents, then `extra`.
fn select(et: &EntityType, extra: &[&str]) -> String {
    let mut cols: Vec<&str> = vec![et.key.as_str()];
    cols.extend(et.clock.iter().map(String::as_str));
    cols.extend(et.parents.iter().map(|(_, c)| c.as_str()));
    cols.extend(extra.iter().copied());
    let mut seen = HashSet::new();
    cols.retain(|c| seen.insert(*c));
    cols.join(",")
}

/// A key as the Web API gives it: a Guid in lower case, a string as it is,
/// an integer as an integer.
pub(crate) fn key_of(v: &Value, edm: &str) -> Option<EntityKey> {
    match v {
        Value::String(s) if edm == "Edm.Guid" => Some(EntityKey::Text(s.to_ascii_lowercase())),
        Value::String(s) => Some(EntityKey::Text(s.clone())),
        Value::Number(n) => n
            .as_i64()
            .map(EntityKey::Int)
            .or_else(|| Some(EntityKey::Text(n.to_string()))),
        _ => None,
    }
}

/// A value as text (identifiers, `column_values`): strings as they are,
/// numbers and booleans written out, null and structures as nothing.
pub(crate) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The Edm types of a row's key and parent columns, in `select` order.
struct RowTypes {
    key: String,
    parents: Vec<String>,
}

async fn row_types(crm: &DataverseCrm, et: &EntityType) -> Result<RowTypes, CrmError> {
    let meta = crm.metadata().await?;
    Ok(RowTypes {
        key: column_type(&meta, et, &et.key)?,
        parents: et
            .parents
            .iter()
            .map(|(_, c)| column_type(&meta, et, c))
            .collect::<Result<_, _>>()?,
    })
}

/// An entity row from a JSON row: key, first usable clock, parents.
/// A row without a key lethe can read, or with a parent that is not null
/// and no key, fails the read ([`CrmError::UnreadableKey`]).
fn entity_row(
    et: &EntityType,
    types: &RowTypes,
    row: &Map<String, Value>,
) -> Result<EntityRow, CrmError> {
    let unreadable = |column: &str, v: Option<&Value>| {
        CrmError::unreadable_key(
            et,
            column,
            match v {
                None | Some(Value::Null) => "no value",
                Some(_) => "a value that is neither text nor a number",
            },
            format!(
                "Look the rows up with `$filter={column} eq null` on entity set {} or check the column's type in $metadata.",
                et.table
            ),
        )
    };
    let key = row
        .get(&et.key)
        .and_then(|v| key_of(v, &types.key))
        .ok_or_else(|| unreadable(&et.key, row.get(&et.key)))?;
    let mut clock: Option<Instant> = None;
    let mut clock_unreadable = false;
    for c in &et.clock {
        match row.get(c) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => {
                clock = parse_clock_text(s);
                clock_unreadable = clock.is_none();
            }
            Some(Value::Number(n)) => {
                clock = n.as_f64().and_then(super::clock_from_number);
                clock_unreadable = clock.is_none();
            }
            Some(_) => clock_unreadable = true,
        }
        break;
    }
    let mut parents = Vec::with_capacity(et.parents.len());
    for ((_, c), ty) in et.parents.iter().zip(&types.parents) {
        parents.push(match row.get(c) {
            None | Some(Value::Null) => None,
            Some(v) => Some(key_of(v, ty).ok_or_else(|| unreadable(c, Some(v)))?),
        });
    }
    Ok(EntityRow {
        key,
        clock,
        clock_unreadable,
        parents,
    })
}

/// A row without its annotations (`@odata.etag`, `…@OData.Community…`).
fn without_annotations(mut row: Map<String, Value>) -> Map<String, Value> {
    row.retain(|k, _| !k.contains('@'));
    row
}

/// The re-check's view of the Web API: rows read with their etags; a
/// delete is only recorded here (the caller sends the batch).
struct Txn<'a> {
    crm: &'a DataverseCrm,
    /// (entity set, key) → the etag of the row as read.
    etags: HashMap<(String, EntityKey), String>,
    /// Payload rows (notes) read by `payload_rows`: key → (the `DELETE`
    /// path, the etag read, the link column, what it references).
    payloads: HashMap<String, (String, String, String, String)>,
    /// Payload rows `delete_payloads` took, each once.
    payloads_going: HashSet<String>,
}

impl<'a> Txn<'a> {
    fn new(crm: &'a DataverseCrm) -> Txn<'a> {
        Txn {
            crm,
            etags: HashMap::new(),
            payloads: HashMap::new(),
            payloads_going: HashSet::new(),
        }
    }
}

/// The payload table as an entity type, for the look-ups by column.
fn payload_type(p: &PayloadInput, key: &str) -> EntityType {
    EntityType {
        name: "technical.table".into(),
        table: p.table.clone(),
        key: key.to_string(),
        clock: Vec::new(),
        parents: Vec::new(),
        subject: Vec::new(),
        identifiers: Vec::new(),
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
        let types = row_types(self.crm, et).await?;
        let column_ty = self.crm.column_type(et, column).await?;
        let rows = self
            .crm
            .rows_in(et, column, values, &select(et, &[column]), None)
            .await?;
        // Each condition: the keys of the same rows that meet it.
        let mut meets: Vec<HashSet<EntityKey>> = Vec::with_capacity(conditions.len());
        for condition in conditions {
            let hits = self
                .crm
                .rows_in(et, column, values, &et.key, Some(condition))
                .await?;
            meets.push(
                hits.iter()
                    .filter_map(|r| r.get(&et.key).and_then(|v| key_of(v, &types.key)))
                    .collect(),
            );
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let entity = entity_row(et, &types, row)?;
            if let Some(Value::String(etag)) = row.get("@odata.etag") {
                self.etags
                    .insert((et.table.clone(), entity.key.clone()), etag.clone());
            }
            let matched = row.get(column).and_then(|v| key_of(v, &column_ty));
            let bits = meets
                .iter()
                .enumerate()
                .filter(|(_, m)| m.contains(&entity.key))
                .fold(0u32, |acc, (j, _)| acc | 1 << j);
            out.push((entity, matched, bits));
        }
        Ok(out)
    }

    async fn identifier_values(
        &mut self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
        self.crm.identifier_values(et, keys).await
    }

    async fn delete_keys(&mut self, et: &EntityType, keys: &[EntityKey]) -> Result<u64, CrmError> {
        // Recorded by the caller from the outcome; every key judged was read.
        let known = keys
            .iter()
            .filter(|k| self.etags.contains_key(&(et.table.clone(), (*k).clone())))
            .count();
        if known != keys.len() {
            return Err(CrmError::Schema {
                entity: et.name.clone(),
                table: et.table.clone(),
                message: format!(
                    "{} rows to delete came without an @odata.etag; nothing was deleted",
                    keys.len() - known
                ),
            });
        }
        Ok(known as u64)
    }

    /// The payload rows (notes) whose link column names one of `values`
    /// (and, for a polymorphic column, whose type code is this type's),
    /// with their etags: a row changed after this read is not deleted.
    async fn payload_rows(
        &mut self,
        p: &PayloadInput,
        column: &PayloadColumn,
        values: &[EntityKey],
    ) -> Result<Vec<LockedPayload>, CrmError> {
        let cols: Vec<&str> = column.select.split(',').collect();
        let [key_col, link_col, modified_col, size_col] = cols[..] else {
            return Err(CrmError::Unsupported(format!(
                "the payload table's select list `{}` is not key, link, modified, size",
                column.select
            )));
        };
        let pt = payload_type(p, key_col);
        let key_ty = self.crm.column_type(&pt, key_col).await?;
        let rows = self
            .crm
            .rows_in(
                &pt,
                link_col,
                values,
                &column.select,
                column.filter.as_deref(),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(key) = row.get(key_col).and_then(|v| key_of(v, &key_ty)) else {
                continue;
            };
            let (Some(references), Some(Value::String(etag))) = (
                row.get(link_col).and_then(|v| key_of(v, "Edm.Guid")),
                row.get("@odata.etag"),
            ) else {
                continue;
            };
            let path = key_path(&p.table, &key_ty, &key).map_err(|e| {
                CrmError::Unsupported(format!("a payload key that cannot be written: {e}"))
            })?;
            let key = key.canonical();
            let references = references.canonical();
            self.payloads.insert(
                key.clone(),
                (path, etag.clone(), link_col.to_string(), references.clone()),
            );
            out.push(LockedPayload {
                key,
                references,
                modified: row
                    .get(modified_col)
                    .and_then(text_of)
                    .and_then(|t| parse_clock_text(&t)),
                size: row
                    .get(size_col)
                    .and_then(text_of)
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0),
                version: Some(etag.clone()),
            });
        }
        Ok(out)
    }

    /// Takes the payload rows read for `column` that reference `values`;
    /// they are deleted first in their case's change set.
    async fn delete_payloads(
        &mut self,
        _p: &PayloadInput,
        column: &PayloadColumn,
        values: &[EntityKey],
    ) -> Result<u64, CrmError> {
        let wanted: HashSet<String> = values.iter().map(EntityKey::canonical).collect();
        let mut n = 0;
        for (key, (_, _, col, references)) in &self.payloads {
            if *col == column.column
                && wanted.contains(references)
                && self.payloads_going.insert(key.clone())
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// One change set to send: the cases it deletes and their rows.
struct ChangeSet {
    cases: Vec<u64>,
    /// (type, key) of each row, children first.
    rows: Vec<(u16, EntityKey)>,
    ops: Vec<BatchOp>,
}

/// Groups the approved cases into change sets: cases that share a row go
/// together (a row is deleted once); rows children-first.
fn change_sets(
    input: &RecheckInput,
    key_types: &[String],
    approved: &[(u64, Vec<(u16, EntityKey)>)],
    etags: &HashMap<(String, EntityKey), String>,
    payload_ops: &HashMap<u64, Vec<BatchOp>>,
) -> Result<Vec<ChangeSet>, (u64, String)> {
    let n = approved.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut owner: HashMap<(u16, &EntityKey), usize> = HashMap::new();
    for (i, (_, rows)) in approved.iter().enumerate() {
        for (ty, key) in rows {
            if let Some(&j) = owner.get(&(*ty, key)) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a] = b;
            } else {
                owner.insert((*ty, key), i);
            }
        }
    }
    type Group = (Vec<u64>, Vec<(u16, EntityKey)>);
    let mut groups: HashMap<usize, Group> = HashMap::new();
    let mut order = Vec::new();
    for (i, (case_id, rows)) in approved.iter().enumerate() {
        let root = find(&mut parent, i);
        let g = groups.entry(root).or_insert_with(|| {
            order.push(root);
            (Vec::new(), Vec::new())
        });
        g.0.push(*case_id);
        for r in rows {
            if !g.1.contains(r) {
                g.1.push(r.clone());
            }
        }
    }
    let mut out = Vec::new();
    for root in order {
        let Some((cases, mut rows)) = groups.remove(&root) else {
            continue;
        };
        // Children first: types are in parents-first order.
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut ops = Vec::with_capacity(rows.len());
        // The payload rows (notes) that reference the cases' rows first:
        // Dataverse would delete them with their row, unjournaled.
        for case_id in &cases {
            ops.extend(payload_ops.get(case_id).into_iter().flatten().cloned());
        }
        for (ty, key) in &rows {
            let et = &input.entities[*ty as usize];
            let first = cases.first().copied().unwrap_or_default();
            let etag = etags.get(&(et.table.clone(), key.clone())).ok_or((
                first,
                format!(
                    "a row of entity type `{}` was judged without its etag",
                    et.name
                ),
            ))?;
            let path = key_path(&et.table, &key_types[*ty as usize], key).map_err(|e| {
                (
                    first,
                    format!(
                        "entity type `{}`: a key that cannot be written: {e}",
                        et.name
                    ),
                )
            })?;
            ops.push(BatchOp {
                method: BatchMethod::Delete,
                path,
                if_match: Some(etag.clone()),
                body: None,
            });
        }
        out.push(ChangeSet { cases, rows, ops });
    }
    Ok(out)
}

#[async_trait]
impl Crm for DataverseCrm {
    fn kind(&self) -> &'static str {
        "dataverse"
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<Column>>, CrmError> {
        let meta = self.metadata().await?;
        Ok(meta.properties(table).map(|props| {
            props
                .into_iter()
                .map(|(name, ty)| Column {
                    integer: metadata::is_integer(&ty),
                    // Edm.Guid keys stay as typed (the Web API's own
                    // spelling is what links and holds carry).
                    uuid: false,
                    unkeyed: None,
                    name,
                })
                .collect()
        }))
    }

    async fn tables(&self, _near: &str) -> Result<Vec<String>, CrmError> {
        Ok(self.metadata().await?.set_names())
    }

    async fn probe_condition(
        &self,
        et: &EntityType,
        condition: &str,
    ) -> Result<Option<String>, CrmError> {
        let path = query(
            &et.table,
            &[("$select", &et.key), ("$filter", condition), ("$top", "1")],
        );
        match self.client.get_json(&path).await {
            Ok(_) => Ok(None),
            Err(ClientError::Status {
                status: 400,
                code,
                message,
                ..
            }) => {
                Ok(Some(message.or(code).unwrap_or_else(|| {
                    "the server refused the $filter".into()
                })))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn scan(
        &self,
        et: &EntityType,
        sink: &mut (dyn FnMut(EntityRow) + Send),
    ) -> Result<u64, CrmError> {
        let types = row_types(self, et).await?;
        let path = query(&et.table, &[("$select", &select(et, &[]))]);
        let mut n = 0u64;
        let mut unreadable = None;
        self.client
            .get_pages(&path, PAGE, &mut |row| match entity_row(et, &types, &row) {
                Ok(r) => {
                    n += 1;
                    sink(r);
                }
                Err(e) => {
                    unreadable.get_or_insert(e);
                }
            })
            .await?;
        match unreadable {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    async fn matching(
        &self,
        et: &EntityType,
        condition: &str,
        sink: &mut (dyn FnMut(EntityKey) + Send),
    ) -> Result<(), CrmError> {
        let key_ty = self.column_type(et, &et.key).await?;
        let path = query(
            &et.table,
            &[("$select", &et.key), ("$filter", &format!("({condition})"))],
        );
        self.client
            .get_pages(&path, PAGE, &mut |row| {
                if let Some(k) = row.get(&et.key).and_then(|v| key_of(v, &key_ty)) {
                    sink(k);
                }
            })
            .await?;
        Ok(())
    }

    async fn column_values(
        &self,
        et: &EntityType,
        column: &str,
        sink: &mut (dyn FnMut(EntityKey, String) + Send),
    ) -> Result<(), CrmError> {
        let key_ty = self.column_type(et, &et.key).await?;
        self.column_type(et, column).await?;
        let path = query(
            &et.table,
            &[
                ("$select", &format!("{},{column}", et.key)),
                ("$filter", &format!("{column} ne null")),
            ],
        );
        self.client
            .get_pages(&path, PAGE, &mut |row| {
                let key = row.get(&et.key).and_then(|v| key_of(v, &key_ty));
                let value = row.get(column).and_then(text_of);
                if let (Some(k), Some(v)) = (key, value) {
                    sink(k, v);
                }
            })
            .await?;
        Ok(())
    }

    async fn existing(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<EntityKey>, CrmError> {
        self.existing_keys(et, keys).await
    }

    async fn identifier_values(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
        if et.identifiers.is_empty() || keys.is_empty() {
            return Ok(Vec::new());
        }
        let key_ty = self.column_type(et, &et.key).await?;
        for c in &et.identifiers {
            self.column_type(et, c).await?;
        }
        let mut cols = vec![et.key.as_str()];
        cols.extend(et.identifiers.iter().map(String::as_str));
        let rows = self
            .rows_in(et, &et.key, keys, &cols.join(","), None)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(k) = row.get(&et.key).and_then(|v| key_of(v, &key_ty)) {
                let values = et
                    .identifiers
                    .iter()
                    .map(|c| row.get(c).and_then(text_of))
                    .collect();
                out.push((k, values));
            }
        }
        Ok(out)
    }

    async fn delete_cases(
        &self,
        input: &RecheckInput,
        decide: &(dyn for<'c> Fn(&'c CaseNow) -> Decision + Sync),
    ) -> Result<BatchOutcome, CrmError> {
        let meta = self.metadata().await?;
        let key_types: Vec<String> = input
            .entities
            .iter()
            .map(|et| column_type(&meta, et, &et.key))
            .collect::<Result<_, _>>()?;
        let mut result = BatchOutcome::default();
        let mut pending: Vec<CaseRequest> = input.cases.clone();
        for round in 0..ROUNDS {
            if pending.is_empty() {
                break;
            }
            let round_input = RecheckInput {
                cases: std::mem::take(&mut pending),
                ..input.clone()
            };
            let mut txn = Txn::new(self);
            let outcome = match recheck::run(&mut txn, &round_input, decide).await {
                Ok(o) => o,
                // Nothing was deleted yet: the whole batch fails, to be
                // tried again.
                Err(e) if round == 0 => return Err(e),
                // Earlier rounds deleted what they report; the cases of
                // this round are untouched (their change sets rolled back).
                Err(e) => {
                    let reason = e.to_string();
                    result.failed.extend(
                        round_input
                            .cases
                            .iter()
                            .map(|c| (c.case_id, reason.clone())),
                    );
                    return Ok(result);
                }
            };
            let rows_of: HashMap<u64, Vec<(u16, EntityKey)>> =
                outcome.deleted.into_iter().collect();
            let mut approved: Vec<(u64, Vec<(u16, EntityKey)>)> = Vec::new();
            let mut decisions: HashMap<u64, Decision> = HashMap::new();
            for (case_id, decision) in outcome.cases {
                match &decision {
                    Decision::Delete(rows) if rows.is_empty() => {
                        // Everything was already gone: nothing to send.
                        result.cases.push((case_id, decision.clone()));
                        result.deleted.push((case_id, Vec::new()));
                    }
                    Decision::Delete(_) => {
                        let rows = rows_of.get(&case_id).cloned().unwrap_or_default();
                        approved.push((case_id, rows));
                        decisions.insert(case_id, decision);
                    }
                    Decision::Skip(_) => result.cases.push((case_id, decision)),
                }
            }
            // The payload rows each case takes with it (the re-check's).
            let mut payload_ops: HashMap<u64, Vec<BatchOp>> = HashMap::new();
            let mut payload_keys: HashMap<u64, Vec<String>> = HashMap::new();
            for (case_id, key) in &outcome.payloads {
                if let Some((path, etag, _, _)) = txn.payloads.get(key) {
                    payload_ops.entry(*case_id).or_default().push(BatchOp {
                        method: BatchMethod::Delete,
                        path: path.clone(),
                        if_match: Some(etag.clone()),
                        body: None,
                    });
                    payload_keys.entry(*case_id).or_default().push(key.clone());
                }
            }
            let sets = match change_sets(
                &round_input,
                &key_types,
                &approved,
                &txn.etags,
                &payload_ops,
            ) {
                Ok(s) => s,
                Err((_, reason)) => {
                    // A bug, not data: no change set is sent.
                    if round == 0 {
                        return Err(CrmError::Unsupported(reason));
                    }
                    result
                        .failed
                        .extend(approved.iter().map(|(c, _)| (*c, reason.clone())));
                    return Ok(result);
                }
            };
            // A case too large for one $batch cannot be deleted atomically.
            let (sendable, too_large): (Vec<ChangeSet>, Vec<ChangeSet>) = sets
                .into_iter()
                .partition(|s| s.ops.len() <= MAX_BATCH_OPERATIONS);
            for s in too_large {
                let reason = format!(
                    "a case of {} rows: more than one Dataverse $batch takes ({MAX_BATCH_OPERATIONS}), so it cannot be deleted atomically; nothing of it was deleted",
                    s.rows.len()
                );
                result
                    .failed
                    .extend(s.cases.iter().map(|c| (*c, reason.clone())));
            }
            let ops: Vec<Vec<BatchOp>> = sendable.iter().map(|s| s.ops.clone()).collect();
            let answers = self.send_change_sets(&ops).await;
            let mut deleted_rows: HashSet<(u16, EntityKey)> = HashSet::new();
            for (set, answer) in sendable.iter().zip(answers) {
                let done = match answer {
                    Sent::Answered(ChangeSetResult::Done) => Ok(true),
                    // Stale etag or a row gone: rolled back; judged again.
                    Sent::Answered(ChangeSetResult::Failed {
                        status: 412 | 404, ..
                    })
                    | Sent::Answered(ChangeSetResult::NotAttempted) => Ok(false),
                    Sent::Answered(ChangeSetResult::Failed { status, code }) => Err(format!(
                        "Dataverse refused to delete the case's rows ({status}{}); nothing of it was deleted",
                        code.map(|c| format!(" {c}")).unwrap_or_default()
                    )),
                    Sent::Refused(e) => Err(format!("{e}; nothing of the case was deleted")),
                    // The answer was lost: are the rows still there?
                    Sent::Unknown(e) => match self.settle(input, set).await {
                        Ok(done) => Ok(done),
                        Err(settle) => {
                            let reason = format!(
                                "whether Dataverse deleted the case is unknown ({e}; reading it back failed: {settle}); it stays in the journal as executing, and the next `lethe apply` settles it"
                            );
                            result
                                .unsettled
                                .extend(set.cases.iter().map(|c| (*c, reason.clone())));
                            continue;
                        }
                    },
                };
                match done {
                    Ok(true) => {
                        for case_id in &set.cases {
                            if let Some(d) = decisions.remove(case_id) {
                                result.cases.push((*case_id, d));
                            }
                            let rows = approved
                                .iter()
                                .find(|(c, _)| c == case_id)
                                .map(|(_, r)| r.clone())
                                .unwrap_or_default();
                            result.deleted.push((*case_id, rows));
                            result.payloads.extend(
                                payload_keys
                                    .get(case_id)
                                    .into_iter()
                                    .flatten()
                                    .map(|k| (*case_id, k.clone())),
                            );
                        }
                        deleted_rows.extend(set.rows.iter().cloned());
                    }
                    Ok(false) => {
                        pending.extend(
                            round_input
                                .cases
                                .iter()
                                .filter(|c| set.cases.contains(&c.case_id))
                                .cloned(),
                        );
                    }
                    Err(reason) => {
                        result
                            .failed
                            .extend(set.cases.iter().map(|c| (*c, reason.clone())));
                    }
                }
            }
            result.identifiers.extend(
                outcome
                    .identifiers
                    .into_iter()
                    .filter(|v| deleted_rows.contains(&(v.ty, v.key.clone()))),
            );
        }
        for c in pending {
            result
                .cases
                .push((c.case_id, Decision::Skip(CHANGED_WHILE_DELETING.into())));
        }
        Ok(result)
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
        let key_ty = self.column_type(et, &et.key).await?;
        let column_ty = self.column_type(et, column).await?;
        if column_ty != "Edm.String" {
            // A number or a date never holds an address; a phone in a
            // number column is compared as its digits.
            if kind == IdentifierKind::Email {
                return Ok(Vec::new());
            }
        }
        use std::sync::atomic::Ordering;
        let mut lower = self.tolower.load(Ordering::Relaxed) != 2;
        loop {
            let filter = match kind {
                IdentifierKind::Email => email_filter(column, normalised, lower),
                // Phones: no regular expressions in OData; every value is
                // compared in Rust (as SQLite's LIKE scan does).
                IdentifierKind::Phone => format!("{column} ne null"),
            };
            let path = query(
                &et.table,
                &[
                    ("$select", &format!("{},{column}", et.key)),
                    ("$filter", &filter),
                ],
            );
            let mut out = Vec::new();
            let result = self
                .client
                .get_pages(&path, PAGE, &mut |row| {
                    let key = row.get(&et.key).and_then(|v| key_of(v, &key_ty));
                    let value = row.get(column).and_then(text_of);
                    if let (Some(k), Some(v)) = (key, value)
                        && super::identifier_matches(kind, &v, normalised)
                    {
                        out.push(k);
                    }
                })
                .await;
            match result {
                Ok(_) => {
                    if kind == IdentifierKind::Email && lower {
                        self.tolower.store(1, Ordering::Relaxed);
                    }
                    out.sort();
                    out.dedup();
                    return Ok(out);
                }
                // Dataverse knows no `tolower` (and needs none): once
                // refused, never asked again.
                Err(ClientError::Status {
                    status: 400 | 501, ..
                }) if kind == IdentifierKind::Email
                    && lower
                    && self.tolower.load(Ordering::Relaxed) == 0 =>
                {
                    self.tolower.store(2, Ordering::Relaxed);
                    lower = false;
                }
                // The error names the set and the status; its message is
                // scrubbed of quoted text, where the value would be.
                Err(e) => {
                    return Err(CrmError::Schema {
                        entity: et.name.clone(),
                        table: et.table.clone(),
                        message: format!("searching column {column} failed: {e}"),
                    });
                }
            }
        }
    }

    async fn subtrees(&self, input: &RecheckInput) -> Result<Vec<CaseNow>, CrmError> {
        let mut txn = Txn::new(self);
        recheck::load(&mut txn, input).await
    }

    async fn component(&self, input: &ComponentInput) -> Result<Vec<EntityNow>, CrmError> {
        let mut txn = Txn::new(self);
        component::load(&mut txn, input, false).await
    }

    async fn export_rows(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<Map<String, Value>>, CrmError> {
        let key_ty = self.column_type(et, &et.key).await?;
        // Guids compare in lower case, as lethe keeps them.
        let guid = key_ty == "Edm.Guid";
        let fold = |k: &EntityKey| match k {
            EntityKey::Text(t) if guid => EntityKey::Text(t.to_ascii_lowercase()),
            other => other.clone(),
        };
        let asked: Vec<EntityKey> = keys.iter().map(fold).collect();
        let requested = super::Requested::new(&asked);
        let filters = in_filters(&et.key, &key_ty, keys);
        let mut out = Vec::new();
        for f in filters {
            // Every column: no $select.
            let rows = self.rows(&query(&et.table, &[("$filter", &f)])).await?;
            for row in rows {
                let Some(key) = row.get(&et.key).and_then(|v| key_of(v, &key_ty)) else {
                    continue;
                };
                if requested.contains(&key) {
                    out.push((key, without_annotations(row)));
                }
            }
        }
        Ok(super::sorted_rows(out))
    }

    async fn count(&self, et: &EntityType) -> Result<u64, CrmError> {
        // Every key, paged: Dataverse's $count stops at 5,000.
        let path = query(&et.table, &[("$select", &et.key)]);
        Ok(self.client.get_pages(&path, PAGE, &mut |_| {}).await?)
    }

    async fn after_apply(&self) -> Result<Vec<String>, CrmError> {
        Ok(vec![
            "dataverse: nothing to do after apply; a deleted row is gone from the Web API at once. What the environment may still hold is its own: auditing (the audit history of a deleted row) and, where the environment turned it on, the recycle bin of deleted records".into(),
        ])
    }
}

impl DataverseCrm {
    /// After a `$batch` whose answer was lost: whether the change set ran.
    /// It is atomic, so either every row of it is gone (it ran, taken as
    /// lethe's delete, as a resumed apply takes a row it found gone) or
    /// the rows that are left say it did not.
    async fn settle(&self, input: &RecheckInput, set: &ChangeSet) -> Result<bool, CrmError> {
        let mut by_type: HashMap<u16, Vec<EntityKey>> = HashMap::new();
        for (ty, key) in &set.rows {
            by_type.entry(*ty).or_default().push(key.clone());
        }
        for (ty, keys) in by_type {
            let et = &input.entities[ty as usize];
            if !self.existing_keys(et, &keys).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Candidates of a search on an e-mail column: `contains(col,'run') and
/// …` for each run of ASCII characters of the address (non-ASCII letters
/// are left to the Rust check). Dataverse compares without regard to case;
/// a server that takes `tolower` (`lower`) is asked on the lowered column.
fn email_filter(column: &str, normalised: &str, lower: bool) -> String {
    let subject = if lower {
        format!("tolower({column})")
    } else {
        column.to_string()
    };
    let runs: Vec<String> = normalised
        .split(|c: char| !c.is_ascii())
        .filter(|r| !r.is_empty())
        .map(|r| format!("contains({subject},{})", metadata::string_literal(r)))
        .collect();
    if runs.is_empty() {
        format!("{column} ne null")
    } else {
        runs.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_filters_are_chunked_below_the_url_limit() {
        let keys: Vec<EntityKey> = (0..1000)
            .map(|i| EntityKey::Text(format!("00000000-0000-0000-0001-{i:012}")))
            .collect();
        let chunks = in_filters("leadid", "Edm.Guid", &keys);
        assert!(chunks.len() > 5, "{}", chunks.len());
        let mut n = 0;
        for c in &chunks {
            assert!(enc(c).len() <= MAX_FILTER, "{}", enc(c).len());
            assert!(c.starts_with("(leadid eq 00000000-") && c.ends_with(')'));
            n += c.matches(" eq ").count();
        }
        assert_eq!(n, 1000);
        // A text that is no Guid is left out (it matches nothing), and
        // a key asked twice is asked once.
        let odd = [
            EntityKey::Text("x') or (1 eq 1".into()),
            EntityKey::Text("00000000-0000-0000-0001-000000000001".into()),
            EntityKey::Text("00000000-0000-0000-0001-000000000001".into()),
        ];
        assert_eq!(
            in_filters("leadid", "Edm.Guid", &odd),
            vec!["(leadid eq 00000000-0000-0000-0001-000000000001)"]
        );
        assert_eq!(
            in_filters("code", "Edm.String", &[EntityKey::Text("O'B".into())]),
            vec!["(code eq 'O''B')"]
        );
    }

    #[test]
    fn queries_encode_their_values() {
        assert_eq!(
            query(
                "leads",
                &[
                    ("$select", "leadid,modifiedon"),
                    ("$filter", "name eq 'a&b #1'")
                ]
            ),
            "leads?$select=leadid,modifiedon&$filter=name%20eq%20%27a%26b%20%231%27"
        );
        assert_eq!(
            key_path("codes", "Edm.String", &EntityKey::Text("a b'".into())).unwrap(),
            "codes(%27a%20b%27%27%27)"
        );
    }

    #[test]
    fn email_candidates_are_contains_of_each_ascii_run() {
        assert_eq!(
            email_filter("emailaddress1", "jane.doe@example.com", false),
            "contains(emailaddress1,'jane.doe@example.com')"
        );
        assert_eq!(
            email_filter("emailaddress1", "jörg@exämple.de", false),
            "contains(emailaddress1,'j') and contains(emailaddress1,'rg@ex') and contains(emailaddress1,'mple.de')"
        );
        assert_eq!(
            email_filter("e", "o'neil@example.com", true),
            "contains(tolower(e),'o''neil@example.com')"
        );
    }

    #[test]
    fn rows_read_keys_clocks_and_parents_by_their_types() {
        let et = EntityType {
            name: "opportunity".into(),
            table: "opportunities".into(),
            key: "opportunityid".into(),
            clock: vec!["modifiedon".into(), "createdon".into()],
            parents: vec![("lead".into(), "_originatingleadid_value".into())],
            subject: vec![],
            identifiers: vec![],
        };
        let types = RowTypes {
            key: "Edm.Guid".into(),
            parents: vec!["Edm.Guid".into()],
        };
        let row: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "@odata.etag": "W/\"1\"",
            "opportunityid": "6F1C5B0E-3B8A-4C1E-9D55-0A1B2C3D4E5F",
            "modifiedon": null,
            "createdon": "2024-01-02T03:04:05Z",
            "_originatingleadid_value": null
        }))
        .unwrap();
        let r = entity_row(&et, &types, &row).unwrap();
        assert_eq!(
            r.key,
            EntityKey::Text("6f1c5b0e-3b8a-4c1e-9d55-0a1b2c3d4e5f".into())
        );
        assert_eq!(r.clock, Some(1_704_164_645));
        assert!(!r.clock_unreadable);
        assert_eq!(r.parents, vec![None]);
        let bad: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "opportunityid": "6f1c5b0e-3b8a-4c1e-9d55-0a1b2c3d4e5f",
            "modifiedon": "yesterday",
            "_originatingleadid_value": "00000000-0000-0000-0001-000000000001"
        }))
        .unwrap();
        let r = entity_row(&et, &types, &bad).unwrap();
        assert!(r.clock.is_none() && r.clock_unreadable);
        assert_eq!(
            r.parents,
            vec![Some(EntityKey::Text(
                "00000000-0000-0000-0001-000000000001".into()
            ))]
        );
        // A row without a key, or with a parent that is no key, fails the
        // read instead of being left out (or read as parentless).
        for row in [
            serde_json::json!({ "modifiedon": null, "_originatingleadid_value": null }),
            serde_json::json!({ "opportunityid": true, "_originatingleadid_value": null }),
            serde_json::json!({ "opportunityid": "6f1c5b0e-3b8a-4c1e-9d55-0a1b2c3d4e5f",
                                "_originatingleadid_value": { "id": 1 } }),
        ] {
            let row: Map<String, Value> = serde_json::from_value(row).unwrap();
            let e = entity_row(&et, &types, &row).unwrap_err();
            assert!(matches!(e, CrmError::UnreadableKey { .. }), "{e}");
        }
        let annotated: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "@odata.etag": "W/\"1\"", "name": "x", "statecode@OData.Community.Display.V1.FormattedValue": "Open", "statecode": 0
        }))
        .unwrap();
        assert_eq!(
            Value::Object(without_annotations(annotated)),
            serde_json::json!({"name": "x", "statecode": 0})
        );
    }

    #[test]
    fn cases_sharing_a_row_share_a_change_set_children_first() {
        let et = |name: &str, table: &str, key: &str| EntityType {
            name: name.into(),
            table: table.into(),
            key: key.into(),
            clock: vec![],
            parents: vec![],
            subject: vec![],
            identifiers: vec![],
        };
        let input = RecheckInput {
            entities: vec![
                et("lead", "leads", "leadid"),
                et("quote", "quotes", "quoteid"),
            ],
            conditions: vec![],
            cases: vec![],
            payloads: None,
        };
        let g = |n: u64| EntityKey::Text(format!("00000000-0000-0000-0000-{n:012}"));
        let approved = vec![
            (1, vec![(0, g(1)), (1, g(10))]),
            (2, vec![(0, g(2))]),
            (3, vec![(0, g(3)), (1, g(10))]),
        ];
        let mut etags = HashMap::new();
        for (t, k) in [("leads", 1), ("leads", 2), ("leads", 3), ("quotes", 10)] {
            etags.insert((t.to_string(), g(k)), format!("W/\"{k}\""));
        }
        let types = vec!["Edm.Guid".to_string(), "Edm.Guid".to_string()];
        let sets = change_sets(&input, &types, &approved, &etags, &HashMap::new()).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].cases, vec![1, 3]);
        assert_eq!(sets[0].rows[0], (1, g(10)), "the child first");
        assert_eq!(sets[0].ops.len(), 3, "the shared quote once");
        assert_eq!(sets[0].ops[0].if_match.as_deref(), Some("W/\"10\""));
        assert_eq!(
            sets[0].ops[0].path,
            "quotes(00000000-0000-0000-0000-000000000010)"
        );
        assert_eq!(sets[1].cases, vec![2]);
        // A row without its etag is never sent unconditionally.
        etags.remove(&("leads".to_string(), g(2)));
        assert!(change_sets(&input, &types, &approved, &etags, &HashMap::new()).is_err());
    }
}
