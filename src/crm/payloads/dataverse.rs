//! The payload table in a Dataverse environment: notes (`annotations`,
//! the body in `documentbody` as Base64, attached to a lead, opportunity or
//! quote by `_objectid_value` + `objecttypecode`), or any entity set laid
//! out the same way, over the Web API.
//!
//! A listing never asks for a body: it pages through the set with
//! `$select` of the key, name, modified time, size column (`filesize`:
//! the Web API cannot compute a size) and link columns, and takes each
//! row's `@odata.etag` as its version. Deletes and rewrites are
//! conditional on the etag the judgement read (`If-Match`): a row changed
//! since is never deleted or overwritten. Each delete is its own change
//! set in one `$batch`, so a row that changed keeps only itself.
//!
//! Dataverse deletes a note with the row it is attached to (the parental
//! cascade of `objectid`): the deleting change set of a case takes the
//! notes of its rows first (see `crm::dataverse`), and [`foreign_keys`]
//! says so to `check`.
//!
//! [`foreign_keys`]: NotesTable::foreign_keys

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Map, Value};

use super::{ForeignKey, PayloadRow, RowFate};
use crate::config::{BodyEncoding, EntityType, TableSettings};
use crate::crm::dataverse::batch::{BatchMethod, BatchOp, ChangeSetResult};
use crate::crm::dataverse::client::{Client, ClientError};
use crate::crm::dataverse::metadata::{self, Metadata};
use crate::crm::dataverse::{in_filters, key_of, key_path, query};
use crate::crm::{CrmError, PayloadColumn, PayloadInput};
use crate::model::{EntityKey, parse_clock_text};

/// Rows per page of a listing.
const PAGE: usize = 5000;
/// Keys per `$filter` of a read by key (the URL stays a few kilobytes).
const KEYS_PER_READ: usize = 50;
/// Keys per batch read of bodies (a few requests of bounded URLs).
const KEYS_PER_BATCH: usize = 500;
/// Deletes per `$batch` (Dataverse takes 1000 operations).
const DELETES_PER_BATCH: usize = 500;

pub(super) struct NotesTable {
    spec: TableSettings,
    origin: String,
    max_in_flight: usize,
    client: tokio::sync::OnceCell<Arc<Client>>,
    metadata: tokio::sync::OnceCell<Metadata>,
    label: String,
    /// (entity type, entity set) of the configured types.
    entity_tables: Vec<(String, String)>,
}

fn error(e: ClientError) -> CrmError {
    CrmError::Dataverse(e)
}

/// A JSON value as the text a column holds; `None` for null.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

impl NotesTable {
    /// Connected on first use; `origin` is the environment
    /// (`https://HOST`), `max_in_flight` the CRM's cap, which the store's
    /// requests share with the CRM's.
    pub(super) fn new(
        origin: &str,
        max_in_flight: usize,
        spec: TableSettings,
        entity_tables: Vec<(String, String)>,
    ) -> Result<NotesTable, CrmError> {
        if spec.encoding != BodyEncoding::Base64 {
            return Err(CrmError::Unsupported(format!(
                "[technical.table] encoding: the Dataverse Web API gives a body as Base64 text ({}.{}); write encoding = \"base64\"",
                spec.table, spec.body
            )));
        }
        if spec.size.is_none() {
            return Err(CrmError::Unsupported(format!(
                "[technical.table] size: the Dataverse Web API cannot compute a body's size; name the column that keeps it (size = \"filesize\" for notes) of {}",
                spec.table
            )));
        }
        Ok(NotesTable {
            label: format!("dataverse table {}", spec.table),
            origin: origin.to_string(),
            max_in_flight,
            spec,
            entity_tables,
            client: tokio::sync::OnceCell::new(),
            metadata: tokio::sync::OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&Arc<Client>, CrmError> {
        self.client
            .get_or_try_init(|| {
                crate::crm::dataverse::shared_client(&self.origin, self.max_in_flight)
            })
            .await
    }

    async fn metadata(&self) -> Result<&Metadata, CrmError> {
        self.metadata
            .get_or_try_init(|| async {
                crate::crm::dataverse::read_metadata(self.client().await?).await
            })
            .await
    }

    pub(super) fn settings(&self) -> &TableSettings {
        &self.spec
    }

    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// The key column's Edm type (`Edm.Guid` for notes).
    async fn key_type(&self) -> Result<String, CrmError> {
        Ok(self
            .metadata()
            .await?
            .property_type(&self.spec.table, &self.spec.key)
            .unwrap_or_else(|| "Edm.Guid".into()))
    }

    /// The path of the row `key` (`annotations(…)`); `None` when no row
    /// can have that key (a key that is not a GUID in a GUID column never
    /// reaches a URL).
    async fn row_path(&self, key: &str) -> Result<Option<String>, CrmError> {
        let edm = self.key_type().await?;
        Ok(key_path(&self.spec.table, &edm, &EntityKey::Text(key.to_string())).ok())
    }

    /// The `$select` of a row without its body.
    fn head_select(&self) -> String {
        let s = &self.spec;
        let mut cols = vec![s.key.clone(), s.modified.clone()];
        cols.extend(s.name.iter().cloned());
        cols.extend(s.size.iter().cloned());
        cols.extend(s.version.iter().cloned());
        cols.extend(s.links.iter().map(|(_, c)| c.clone()));
        if let Some(p) = &s.polymorphic {
            cols.push(p.id.clone());
            cols.push(p.type_column.clone());
        }
        cols.dedup();
        cols.join(",")
    }

    /// A row as the Web API gives it; `key_ty` the key's Edm type (a GUID
    /// in lower case, as the CRM's reads give keys).
    fn row(&self, o: &Map<String, Value>, key_ty: &str) -> Option<PayloadRow> {
        let s = &self.spec;
        let key = key_of(o.get(&s.key)?, key_ty)?.canonical();
        let links = super::row_links(
            s,
            s.links.iter().map(|(_, c)| text(o.get(c))),
            s.polymorphic
                .as_ref()
                .map(|p| (text(o.get(&p.id)), text(o.get(&p.type_column)))),
        );
        Some(PayloadRow {
            key,
            name: s.name.as_ref().and_then(|n| text(o.get(n))),
            modified: text(o.get(&s.modified)).and_then(|t| parse_clock_text(&t)),
            size: s
                .size
                .as_ref()
                .and_then(|c| text(o.get(c)))
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0),
            // The etag: Dataverse's row version, new with every change.
            version: text(o.get("@odata.etag"))
                .or_else(|| s.version.as_ref().and_then(|v| text(o.get(v)))),
            links,
        })
    }

    /// The entity set's properties (name, Edm type) from `$metadata`;
    /// `None` when there is no such set.
    pub(super) async fn catalogue(&self) -> Result<Option<Vec<(String, String)>>, CrmError> {
        Ok(self.metadata().await?.properties(&self.spec.table))
    }

    /// Dataverse deletes a note with the row its `objectid` names (a
    /// parental relationship): the polymorphic pair reads as a cascading
    /// foreign key to every type it maps. A direct link column is a
    /// lookup whose behaviour the relationship's definition decides; lethe
    /// treats it as cascading too (its rows go in the case's change set).
    pub(super) async fn foreign_keys(&self) -> Result<Vec<ForeignKey>, CrmError> {
        let s = &self.spec;
        let table_of = |entity: &str| {
            self.entity_tables
                .iter()
                .find(|(e, _)| e == entity)
                .map(|(_, t)| t.clone())
        };
        let mut out = Vec::new();
        for (entity, column) in &s.links {
            if let Some(t) = table_of(entity) {
                out.push(ForeignKey {
                    column: column.clone(),
                    references: t,
                    on_delete: "CASCADE".into(),
                });
            }
        }
        if let Some(p) = &s.polymorphic {
            let mut seen = Vec::new();
            for (_, entity) in &p.types {
                if let Some(t) = table_of(entity)
                    && !seen.contains(&t)
                {
                    seen.push(t.clone());
                    out.push(ForeignKey {
                        column: p.id.clone(),
                        references: t,
                        on_delete: "CASCADE".into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every link column to an entity type, as (type index, column): on
    /// Dataverse each is a cascade, so each goes in the case's change set.
    pub(super) fn foreign_key_columns(&self, entities: &[EntityType]) -> Vec<(u16, String)> {
        let s = &self.spec;
        let mut out = Vec::new();
        let index = |entity: &str| entities.iter().position(|e| e.name == entity);
        for (entity, column) in &s.links {
            if let Some(ti) = index(entity) {
                out.push((ti as u16, column.clone()));
            }
        }
        if let Some(p) = &s.polymorphic {
            for (_, entity) in &p.types {
                if let Some(ti) = index(entity)
                    && !out.contains(&(ti as u16, p.id.clone()))
                {
                    out.push((ti as u16, p.id.clone()));
                }
            }
        }
        out
    }

    /// The deleting change set's view: per column, the `$select` of a
    /// locked row (key, the column, modified, size; the version is the
    /// etag) and, for the polymorphic id, the type codes of its entity
    /// type as a `$filter`.
    pub(super) fn payload_input(
        &self,
        columns: &[(u16, String)],
        entities: &[EntityType],
    ) -> PayloadInput {
        let s = &self.spec;
        PayloadInput {
            table: s.table.clone(),
            columns: columns
                .iter()
                .map(|(ty, column)| {
                    let filter = s.polymorphic.as_ref().filter(|p| &p.id == column).map(|p| {
                        p.types
                            .iter()
                            .filter(|(_, e)| {
                                entities.get(*ty as usize).is_some_and(|t| &t.name == e)
                            })
                            .map(|(code, _)| {
                                format!("{} eq {}", p.type_column, metadata::string_literal(code))
                            })
                            .collect::<Vec<_>>()
                            .join(" or ")
                    });
                    PayloadColumn {
                        ty: *ty,
                        column: column.clone(),
                        select: [
                            s.key.as_str(),
                            column.as_str(),
                            s.modified.as_str(),
                            s.size.as_deref().unwrap_or(&s.key),
                        ]
                        .join(","),
                        filter: filter.filter(|f| !f.is_empty()),
                    }
                })
                .collect(),
            planned: HashMap::new(),
        }
    }

    /// Streams every row (never a body), a page at a time.
    pub(super) async fn list(
        &self,
        sink: &mut (dyn FnMut(PayloadRow) + Send),
    ) -> Result<u64, CrmError> {
        let key_ty = self.key_type().await?;
        let client = self.client().await?;
        let path = query(&self.spec.table, &[("$select", &self.head_select())]);
        let mut n = 0u64;
        client
            .get_pages(&path, PAGE, &mut |o| {
                if let Some(row) = self.row(&o, &key_ty) {
                    n += 1;
                    sink(row);
                }
            })
            .await
            .map_err(error)?;
        Ok(n)
    }

    pub(super) async fn head(&self, key: &str) -> Result<Option<PayloadRow>, CrmError> {
        let Some(row) = self.row_path(key).await? else {
            return Ok(None);
        };
        let key_ty = self.key_type().await?;
        let path = query(&row, &[("$select", &self.head_select())]);
        match self.client().await?.get_json(&path).await {
            Ok(Value::Object(o)) => Ok(self.row(&o, &key_ty)),
            Ok(_) => Ok(None),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(error(e)),
        }
    }

    /// The Base64 text of the body as its bytes; `None` when there is no
    /// such row, empty for null.
    pub(super) async fn body(&self, key: &str) -> Result<Option<Vec<u8>>, CrmError> {
        let Some(row) = self.row_path(key).await? else {
            return Ok(None);
        };
        let path = query(&row, &[("$select", &self.spec.body)]);
        match self.client().await?.get_json(&path).await {
            Ok(Value::Object(o)) => Ok(Some(
                text(o.get(&self.spec.body))
                    .unwrap_or_default()
                    .into_bytes(),
            )),
            Ok(_) => Ok(None),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(error(e)),
        }
    }

    /// The bodies of the first [`KEYS_PER_READ`] rows of `keys` whose size
    /// column says at most `max_row` bytes, in one request, taken until
    /// `max_total` bytes of Base64 text.
    pub(super) async fn bodies(
        &self,
        keys: &[&str],
        max_row: u64,
        max_total: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, CrmError> {
        let wanted: Vec<EntityKey> = keys
            .iter()
            .take(KEYS_PER_BATCH)
            .map(|k| EntityKey::Text(k.to_string()))
            .collect();
        let key_ty = self.key_type().await?;
        let s = &self.spec;
        let size = s.size.as_deref().unwrap_or(&s.key);
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut full = false;
        for filter in in_filters(&s.key, &key_ty, &wanted) {
            if full {
                break;
            }
            let path = query(
                &s.table,
                &[
                    ("$select", &format!("{},{}", s.key, s.body)),
                    ("$filter", &format!("{filter} and {size} le {max_row}")),
                ],
            );
            self.client()
                .await?
                .get_pages(&path, PAGE, &mut |o| {
                    if full {
                        return;
                    }
                    let (Some(key), body) = (
                        o.get(&s.key).and_then(|k| key_of(k, &key_ty)),
                        text(o.get(&s.body)),
                    ) else {
                        return;
                    };
                    let body = body.unwrap_or_default().into_bytes();
                    total += body.len();
                    if total > max_total {
                        full = true;
                        return;
                    }
                    out.push((key.canonical(), body));
                })
                .await
                .map_err(error)?;
        }
        Ok(out)
    }

    /// The rows of `keys` (any that exist), each with its etag.
    async fn rows(&self, keys: &[&str]) -> Result<HashMap<String, PayloadRow>, CrmError> {
        let key_ty = self.key_type().await?;
        let wanted: Vec<EntityKey> = keys
            .iter()
            .map(|k| EntityKey::Text(k.to_string()))
            .collect();
        let mut found = HashMap::new();
        for chunk in wanted.chunks(KEYS_PER_READ) {
            for filter in in_filters(&self.spec.key, &key_ty, chunk) {
                let path = query(
                    &self.spec.table,
                    &[("$select", &self.head_select()), ("$filter", &filter)],
                );
                self.client()
                    .await?
                    .get_pages(&path, PAGE, &mut |o| {
                        if let Some(row) = self.row(&o, &key_ty) {
                            found.insert(row.key.clone(), row);
                        }
                    })
                    .await
                    .map_err(error)?;
            }
        }
        Ok(found)
    }

    /// Deletes the rows of `keys` that `keep` does not keep, each
    /// conditional on the etag it was judged on (a row changed since is
    /// kept: 412). One fate per key, in order.
    pub(super) async fn delete_where(
        &self,
        keys: &[String],
        keep: &(dyn Fn(usize, &PayloadRow) -> bool + Sync),
    ) -> Result<Vec<RowFate>, CrmError> {
        let mut out = vec![RowFate::Gone; keys.len()];
        let client = self.client().await?;
        let key_ty = self.key_type().await?;
        for (c, chunk) in keys.chunks(DELETES_PER_BATCH).enumerate() {
            let base = c * DELETES_PER_BATCH;
            let refs: Vec<&str> = chunk.iter().map(|k| k.as_str()).collect();
            let found = self.rows(&refs).await?;
            let mut ops = Vec::new();
            let mut at = Vec::new();
            for (j, key) in chunk.iter().enumerate() {
                let i = base + j;
                let Some(row) = found.get(key.as_str()) else {
                    out[i] = RowFate::Gone;
                    continue;
                };
                if keep(i, row) {
                    out[i] = RowFate::Kept;
                    continue;
                }
                let (Some(etag), Ok(path)) = (
                    row.version.clone(),
                    key_path(&self.spec.table, &key_ty, &EntityKey::Text(key.clone())),
                ) else {
                    // No etag: a delete could not be conditional.
                    out[i] = RowFate::Kept;
                    continue;
                };
                ops.push(vec![BatchOp {
                    method: BatchMethod::Delete,
                    path,
                    if_match: Some(etag),
                    body: None,
                }]);
                at.push(i);
            }
            if ops.is_empty() {
                continue;
            }
            let results = client.batch(&ops).await.map_err(error)?;
            for (&i, result) in at.iter().zip(results) {
                out[i] = match result {
                    ChangeSetResult::Done => RowFate::Deleted,
                    ChangeSetResult::Failed { status: 404, .. } => RowFate::Gone,
                    ChangeSetResult::Failed { status: 412, .. } => RowFate::Kept,
                    ChangeSetResult::Failed { status, code } => {
                        return Err(error(ClientError::Status {
                            method: "DELETE",
                            target: self.spec.table.clone(),
                            status,
                            code,
                            message: None,
                        }));
                    }
                    ChangeSetResult::NotAttempted => {
                        return Err(error(ClientError::Protocol {
                            target: "$batch".into(),
                            reason: "the server left a delete unanswered".into(),
                        }));
                    }
                };
            }
        }
        Ok(out)
    }

    /// Replaces the body of `key` with `body` (Base64 text's bytes) if
    /// `matches` accepts the row as it is, conditional on its etag.
    pub(super) async fn rewrite(
        &self,
        key: &str,
        matches: &(dyn Fn(&PayloadRow) -> bool + Sync),
        body: Vec<u8>,
    ) -> Result<Result<PayloadRow, Option<PayloadRow>>, CrmError> {
        let Some(row_path) = self.row_path(key).await? else {
            return Ok(Err(None));
        };
        let key_ty = self.key_type().await?;
        let Some(row) = self.head(key).await? else {
            return Ok(Err(None));
        };
        if !matches(&row) {
            return Ok(Err(Some(row)));
        }
        let Some(etag) = row.version.clone() else {
            return Ok(Err(Some(row)));
        };
        let s = &self.spec;
        let mut patch = Map::new();
        patch.insert(
            s.body.clone(),
            Value::String(String::from_utf8_lossy(&body).into_owned()),
        );
        let path = query(&row_path, &[("$select", &self.head_select())]);
        let answer = self
            .client()
            .await?
            .send(
                Method::PATCH,
                &path,
                &[
                    ("If-Match", etag),
                    ("Prefer", "return=representation".into()),
                ],
                Some((
                    Value::Object(patch).to_string().into_bytes(),
                    "application/json".into(),
                )),
                true,
            )
            .await;
        match answer {
            Ok(a) => {
                if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&a.body)
                    && let Some(row) = self.row(&o, &key_ty)
                {
                    return Ok(Ok(row));
                }
                Ok(self.head(key).await?.ok_or(None))
            }
            Err(e) if e.status() == Some(412) => Ok(Err(self.head(key).await?)),
            Err(e) if e.status() == Some(404) => Ok(Err(None)),
            Err(e) => Err(error(e)),
        }
    }
}
