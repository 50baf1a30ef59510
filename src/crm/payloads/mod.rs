//! The payload table (`[technical.table]`): a table of the CRM itself that
//! holds payloads, one per row, which `store::table` offers as a technical
//! store. This module owns what a payload table answers — rows without
//! their bodies, bodies, conditional deletes and rewrites, its catalogue
//! and foreign keys, and the deleting transaction's view of it — whatever
//! CRM keeps it; each CRM kind speaks its own language in a submodule:
//!
//! - `sql`: SQLite, PostgreSQL and MariaDB, every statement in the three
//!   dialects.
//! - `dataverse`: a Dataverse entity set over the Web API (notes:
//!   `annotations`), conditional on each row's etag.
//!
//! The store above decodes bodies and judges expectations; nothing here
//! knows a link rule.

mod dataverse;
mod sql;

use crate::config::{CrmUrl, EntityType, TableSettings};
use crate::model::Instant;

use super::{CrmError, PayloadInput};

/// How an SQL payload table's row version begins: `len:<bytes>` or
/// `len:<bytes>;<version column>`, the body's stored length and the
/// version column (`sql`'s `fingerprint_expr`). A row is judged by it and
/// its modified time when deleted or rewritten; an index entry whose
/// version does not begin so (written before lethe kept the stored
/// length) is judged changed: `lethe index` reads the row again.
pub const FINGERPRINT: &str = "len:";

/// Whether an SQL payload row is still what the index read, judged by
/// its [`FINGERPRINT`] and modified time (the decoded size is not read):
/// `None` when the row as read now has no fingerprint (Dataverse, whose
/// rows the caller judges by size, modified time and etag).
pub fn unchanged_by_fingerprint(
    indexed: (Option<Instant>, Option<&str>),
    now: (Option<Instant>, Option<&str>),
) -> Option<bool> {
    let now_version = now.1.filter(|v| v.starts_with(FINGERPRINT))?;
    // An index entry without a fingerprint (an index written before lethe
    // kept one) cannot be compared with it: changed.
    Some(indexed.0 == now.0 && indexed.1 == Some(now_version))
}

/// One row as a listing gives it: never its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadRow {
    pub key: String,
    pub name: Option<String>,
    pub modified: Option<Instant>,
    /// The decoded body's size in bytes (0 where a delete did not read it).
    pub size: u64,
    /// SQL: the row's [`FINGERPRINT`]; Dataverse: its etag.
    pub version: Option<String>,
    /// The direct link columns' values, by `TableSettings::link_name`.
    pub links: Vec<(String, String)>,
}

/// A row's whole-file links from its link columns: each direct link
/// column's value, and the polymorphic pair's id when its type code maps
/// to an entity type; blank values link nothing. `links` are the direct
/// columns' values in `spec.links` order, `poly` the (id, type code).
pub(crate) fn row_links(
    spec: &TableSettings,
    links: impl IntoIterator<Item = Option<String>>,
    poly: Option<(Option<String>, Option<String>)>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ((_, column), v) in spec.links.iter().zip(links) {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            out.push((TableSettings::link_name(column, None), v.trim().to_string()));
        }
    }
    if let (Some(p), Some((Some(id), Some(code)))) = (&spec.polymorphic, poly)
        && let Some((_, entity)) = p.types.iter().find(|(c, _)| *c == code.trim())
        && !id.trim().is_empty()
    {
        out.push((
            TableSettings::link_name(&p.id, Some(entity)),
            id.trim().to_string(),
        ));
    }
    out
}

/// What became of one key a delete was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFate {
    Deleted,
    /// No such row.
    Gone,
    /// The row is there, but the caller's judgement kept it.
    Kept,
}

/// A foreign key from the payload table to another table, as the
/// catalogue lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignKey {
    pub column: String,
    pub references: String,
    /// `CASCADE`, `RESTRICT`, `NO ACTION`, `SET NULL`, `SET DEFAULT`.
    pub on_delete: String,
}

/// The payload table of the configured CRM.
pub struct PayloadTable {
    inner: Inner,
}

enum Inner {
    Sql(sql::SqlTable),
    Dataverse(dataverse::NotesTable),
}

impl PayloadTable {
    /// The payload table in the CRM of `crm`; connected on first use (so
    /// that opening a store stays synchronous).
    ///
    /// `entity_tables` are the configured (entity type, table) pairs: on
    /// Dataverse, which entity sets a note's `objectid` may name.
    pub fn connect(
        crm: &CrmUrl,
        spec: TableSettings,
        entity_tables: &[(String, String)],
    ) -> Result<PayloadTable, CrmError> {
        let inner = match crm {
            CrmUrl::Dataverse { origin } => Inner::Dataverse(dataverse::NotesTable::new(
                origin,
                crate::crm::dataverse::client::DEFAULT_IN_FLIGHT,
                spec,
                entity_tables.to_vec(),
            )?),
            _ => Inner::Sql(sql::SqlTable::connect(crm, spec)?),
        };
        Ok(PayloadTable { inner })
    }

    /// The CRM's kind as `Crm::kind` names it (`sqlite`, `postgres`,
    /// `mysql`): how its catalogue spells names.
    pub fn kind(&self) -> &'static str {
        match &self.inner {
            Inner::Sql(t) => t.dialect().name(),
            Inner::Dataverse(_) => "dataverse",
        }
    }

    pub fn settings(&self) -> &TableSettings {
        match &self.inner {
            Inner::Sql(t) => t.settings(),
            Inner::Dataverse(t) => t.settings(),
        }
    }

    /// `postgres server table payloads`: no key, no name.
    pub fn label(&self) -> &str {
        match &self.inner {
            Inner::Sql(t) => t.label(),
            Inner::Dataverse(t) => t.label(),
        }
    }

    /// The table's columns (name, type in lower case) as the catalogue
    /// lists them; `None` when there is no such table.
    pub async fn catalogue(&self) -> Result<Option<Vec<(String, String)>>, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.catalogue().await,
            Inner::Dataverse(t) => t.catalogue().await,
        }
    }

    /// The foreign keys from the payload table to other tables, with what
    /// a delete of the referenced row does to the payload row.
    pub async fn foreign_keys(&self) -> Result<Vec<ForeignKey>, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.foreign_keys().await,
            Inner::Dataverse(t) => t.foreign_keys().await,
        }
    }

    /// The direct link columns whose rows the deleting transaction must
    /// take before their entities, as (entity type index in `entities`,
    /// column).
    pub async fn foreign_key_columns(&self, entities: &[EntityType]) -> Vec<(u16, String)> {
        match &self.inner {
            Inner::Sql(t) => t.foreign_key_columns(entities).await,
            Inner::Dataverse(t) => t.foreign_key_columns(entities),
        }
    }

    /// The deleting transaction's view of the payload table, for these
    /// foreign-key columns; its planned rows are the caller's.
    pub fn payload_input(
        &self,
        columns: &[(u16, String)],
        entities: &[EntityType],
    ) -> PayloadInput {
        match &self.inner {
            Inner::Sql(t) => t.payload_input(columns),
            Inner::Dataverse(t) => t.payload_input(columns, entities),
        }
    }

    /// Streams every row (never a body), a page at a time.
    pub async fn list(&self, sink: &mut (dyn FnMut(PayloadRow) + Send)) -> Result<u64, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.list(sink).await,
            Inner::Dataverse(t) => t.list(sink).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<PayloadRow>, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.head(key).await,
            Inner::Dataverse(t) => t.head(key).await,
        }
    }

    /// The body as stored (Base64 text as its bytes); `None` when there is
    /// no such row, empty for NULL.
    pub async fn body(&self, key: &str) -> Result<Option<Vec<u8>>, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.body(key).await,
            Inner::Dataverse(t) => t.body(key).await,
        }
    }

    /// The bodies as stored of the rows of `keys` whose decoded size is at
    /// most `max_row` bytes, in one request, taken until `max_total` stored
    /// bytes: `(key, body)` for each row read. A row not answered is gone,
    /// larger, or past the total; the caller reads it alone.
    pub async fn bodies(
        &self,
        keys: &[&str],
        max_row: u64,
        max_total: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.bodies(keys, max_row, max_total).await,
            Inner::Dataverse(t) => t.bodies(keys, max_row, max_total).await,
        }
    }

    /// Deletes the rows of `keys` that `keep` does not keep, judged on the
    /// rows as they are when deleted (locked, or deleted only if still the
    /// same version). One fate per key, in order.
    pub async fn delete_where(
        &self,
        keys: &[String],
        keep: &(dyn Fn(usize, &PayloadRow) -> bool + Sync),
    ) -> Result<Vec<RowFate>, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.delete_where(keys, keep).await,
            Inner::Dataverse(t) => t.delete_where(keys, keep).await,
        }
    }

    /// Replaces the body of `key` with `body` (as stored: Base64 text's
    /// bytes) if `matches` accepts the row as it is. `Ok(Err(row))`: the
    /// row is not what `matches` wanted (`None`: there is no row).
    pub async fn rewrite(
        &self,
        key: &str,
        matches: &(dyn Fn(&PayloadRow) -> bool + Sync),
        body: Vec<u8>,
    ) -> Result<Result<PayloadRow, Option<PayloadRow>>, CrmError> {
        match &self.inner {
            Inner::Sql(t) => t.rewrite(key, matches, body).await,
            Inner::Dataverse(t) => t.rewrite(key, matches, body).await,
        }
    }
}
