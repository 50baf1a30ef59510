//! A technical store over a CRM table (`url = "crm://"`,
//! `[technical.table]`): one payload per row, as Dynamics 365 keeps notes
//! (`annotation.documentbody`, Base64) and SQL CRMs keep import payloads
//! (a `bytea`/`BLOB` column). The object key is the row's key; the name
//! column is what link rules' globs match; the direct link columns come
//! with the listing as metadata, which the metadata rules the config made
//! for them read (whole-file links, no parsing). Names and bodies are never
//! printed.
//!
//! Every statement is `crm::payloads`'; here bodies are decoded and
//! encoded, and expectations judged: a delete or a rewrite changes a row
//! only while it is what the index read (an SQL row: its stored length
//! and version, `crm::payloads::FINGERPRINT`, and modified time; a
//! Dataverse row: size, modified time and etag), judged on the row locked
//! in the changing transaction.

use std::io::Read;

use async_trait::async_trait;
use base64::Engine;

use super::{
    DeleteOutcome, Expected, Listed, ObjectMeta, RewriteOutcome, StoreError, StoreErrorKind,
    TechnicalStore, validate_key,
};
use crate::config::{BodyEncoding, CrmUrl, TableSettings};
use crate::crm::CrmError;
use crate::crm::payloads::{PayloadRow, PayloadTable, RowFate};

/// A body read with others ([`TechnicalStore::read_batch`]) is at most
/// this large, decoded; a larger one is read alone.
pub const BATCH_ROW_BYTES: u64 = 1 << 20;
/// The stored bytes one batch read keeps, at most.
const BATCH_BYTES: usize = 4 << 20;

pub struct TableStore {
    table: PayloadTable,
    /// (entity type, table) of the CRM's entity types, for `check`'s
    /// account of foreign keys.
    entity_tables: Vec<(String, String)>,
}

/// A CRM error as a store error: transient where the CRM would retry.
fn store_error(op: &'static str, e: CrmError) -> StoreError {
    let kind = if e.is_transient() {
        StoreErrorKind::Transient
    } else {
        StoreErrorKind::Permanent
    };
    StoreError::failed(op, kind, e.to_string())
}

fn meta(row: PayloadRow) -> ObjectMeta {
    ObjectMeta {
        key: row.key,
        size: row.size,
        modified: row.modified,
        etag: row.version,
        metadata: row.links,
        name: row.name,
    }
}

/// Whether `row`, as a delete or rewrite locked it, is what the index
/// read: an SQL row by its fingerprint and modified time, and its decoded
/// size where it was read (`sized`: a rewrite's one row; a delete's rows
/// are not decoded), a Dataverse row by size, modified time and etag.
fn still_indexed(expected: &Expected, row: &PayloadRow, sized: bool) -> bool {
    match crate::crm::payloads::unchanged_by_fingerprint(
        (expected.modified, expected.etag.as_deref()),
        (row.modified, row.version.as_deref()),
    ) {
        Some(unchanged) => unchanged && (!sized || expected.size == row.size),
        None => expected.matches(&meta(row.clone())),
    }
}

impl TableStore {
    /// Connects on first use.
    pub fn open(
        crm: &CrmUrl,
        settings: TableSettings,
        entity_tables: Vec<(String, String)>,
    ) -> Result<TableStore, StoreError> {
        let table =
            PayloadTable::connect(crm, settings, &entity_tables).map_err(|e| StoreError::Open {
                store: "crm://".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(TableStore {
            table,
            entity_tables,
        })
    }

    pub fn payloads(&self) -> &PayloadTable {
        &self.table
    }

    /// The body, decoded.
    async fn decoded(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(stored) = self
            .table
            .body(key)
            .await
            .map_err(|e| store_error("read", e))?
        else {
            return Ok(None);
        };
        match self.table.settings().encoding {
            BodyEncoding::Raw => Ok(Some(stored)),
            BodyEncoding::Base64 => decode_base64(&stored).map(Some),
        }
    }
}

/// Standard Base64, line breaks (CR, LF) ignored. A body that is not
/// Base64 fails the read (permanently), naming no byte of it.
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, StoreError> {
    let clean: Vec<u8>;
    let text = if text.iter().any(|b| *b == b'\n' || *b == b'\r') {
        clean = text
            .iter()
            .copied()
            .filter(|b| *b != b'\n' && *b != b'\r')
            .collect();
        &clean[..]
    } else {
        text
    };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(text).map_err(|e| {
        StoreError::failed(
            "read",
            StoreErrorKind::Permanent,
            format!("the body is not Base64 ({e})"),
        )
    })
}

#[async_trait]
impl TechnicalStore for TableStore {
    fn describe(&self) -> String {
        self.table.label().to_string()
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        let s = self.table.settings();
        let Some(columns) = self
            .table
            .catalogue()
            .await
            .map_err(|e| store_error("check", e))?
        else {
            return Err(StoreError::failed(
                "check",
                StoreErrorKind::Permanent,
                format!(
                    "the CRM has no table {}; check [technical.table] table",
                    s.table
                ),
            ));
        };
        let kind = self.table.kind();
        let has = |c: &str| {
            columns
                .iter()
                .any(|(n, _)| crate::crm::fit::same(kind, n, c))
        };
        let mut named: Vec<(&str, &str)> = vec![
            ("key", &s.key),
            ("body", &s.body),
            ("modified", &s.modified),
        ];
        if let Some(n) = &s.name {
            named.push(("name", n));
        }
        if let Some(v) = &s.version {
            named.push(("version", v));
        }
        for (_, c) in &s.links {
            named.push(("links", c));
        }
        if let Some(p) = &s.polymorphic {
            named.push(("polymorphic.id", &p.id));
            named.push(("polymorphic.type", &p.type_column));
        }
        let missing: Vec<String> = named
            .iter()
            .filter(|(_, c)| !has(c))
            .map(|(k, c)| format!("{c} ([technical.table] {k})"))
            .collect();
        if !missing.is_empty() {
            let real: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            return Err(StoreError::failed(
                "check",
                StoreErrorKind::Permanent,
                format!(
                    "table {} has no column {}; its columns are {}",
                    s.table,
                    missing.join(", "),
                    real.join(", ")
                ),
            ));
        }
        let mut notes = vec![format!(
            "{}: bodies {}, keyed by {}{}",
            self.describe(),
            match s.encoding {
                BodyEncoding::Raw => "as bytes",
                BodyEncoding::Base64 => "as Base64 text",
            },
            s.key,
            match (&s.version, kind) {
                (_, "dataverse") => {
                    ", versioned by each row's @odata.etag (deletes and rewrites are conditional on it)"
                        .to_string()
                }
                (Some(v), _) => format!(", versioned by {v} and the stored length"),
                (None, _) =>
                    ", no version column: a change is seen by its stored length and modified time"
                        .to_string(),
            }
        )];
        notes.extend(foreign_key_notes(
            &self
                .table
                .foreign_keys()
                .await
                .map_err(|e| store_error("check", e))?,
            s,
            &self.entity_tables,
            kind,
        ));
        notes.extend(self.erasure_note());
        Ok(notes)
    }

    async fn list(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError> {
        self.table
            .list(&mut |row| {
                let listed = match validate_key(&row.key) {
                    Ok(()) => Listed::Object(meta(row)),
                    Err(e) => Listed::Skipped {
                        key: row.key,
                        reason: e.to_string(),
                    },
                };
                sink(listed)
            })
            .await
            .map_err(|e| StoreError::List {
                store: self.describe(),
                at: "a page of rows".into(),
                kind: if e.is_transient() {
                    StoreErrorKind::Transient
                } else {
                    StoreErrorKind::Permanent
                },
                source: std::io::Error::other(e.to_string()),
            })
    }

    async fn read(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        validate_key(key)?;
        match self.decoded(key).await? {
            Some(body) => Ok(Box::new(std::io::Cursor::new(body))),
            None => Err(StoreError::io("open", std::io::ErrorKind::NotFound.into())),
        }
    }

    /// One statement for the group's bodies of at most [`BATCH_ROW_BYTES`]
    /// (decoded, as the listing computes it), up to [`BATCH_BYTES`] stored;
    /// a larger body, a row the statement did not answer, a body that is
    /// not Base64 or a failed statement leave their keys to `read`.
    async fn read_batch(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let mut out = vec![None; keys.len()];
        let wanted: Vec<&str> = keys
            .iter()
            .filter(|k| validate_key(k).is_ok())
            .map(String::as_str)
            .collect();
        if wanted.len() < 2 {
            return out;
        }
        let Ok(rows) = self
            .table
            .bodies(&wanted, BATCH_ROW_BYTES, BATCH_BYTES)
            .await
        else {
            return out;
        };
        let mut at: std::collections::HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        for (key, stored) in rows {
            let Some(i) = at.remove(key.as_str()) else {
                continue;
            };
            out[i] = match self.table.settings().encoding {
                BodyEncoding::Raw => Some(stored),
                BodyEncoding::Base64 => decode_base64(&stored).ok(),
            };
        }
        out
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        validate_key(key)?;
        Ok(self
            .table
            .head(key)
            .await
            .map_err(|e| store_error("head", e))?
            .map(meta))
    }

    async fn metadata(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .head(key)
            .await?
            .map(|m| m.metadata)
            .unwrap_or_default())
    }

    fn key_of(&self, reference: &str) -> Option<String> {
        let r = reference.trim();
        validate_key(r).ok().map(|_| r.to_string())
    }

    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError> {
        self.delete_expecting(key, None).await
    }

    async fn delete_expecting(
        &self,
        key: &str,
        expected: Option<&Expected>,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut out = self
            .delete_many_expecting(&[key.to_string()], &[expected.cloned()])
            .await;
        out.pop().unwrap_or_else(|| Err(super::unanswered()))
    }

    fn delete_batch_size(&self) -> usize {
        500
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<Result<DeleteOutcome, StoreError>> {
        let none = vec![None; keys.len()];
        self.delete_many_expecting(keys, &none).await
    }

    async fn delete_many_expecting(
        &self,
        keys: &[String],
        expected: &[Option<Expected>],
    ) -> Vec<Result<DeleteOutcome, StoreError>> {
        let mut out: Vec<Option<Result<DeleteOutcome, StoreError>>> =
            (0..keys.len()).map(|_| None).collect();
        let mut ask = Vec::new();
        let mut at = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match validate_key(k) {
                Ok(()) => {
                    ask.push(k.clone());
                    at.push(i);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let keep = |j: usize, row: &PayloadRow| {
            expected
                .get(at[j])
                .and_then(Option::as_ref)
                .is_some_and(|e| !still_indexed(e, row, false))
        };
        match self.table.delete_where(&ask, &keep).await {
            Ok(fates) => {
                for (j, fate) in fates.into_iter().enumerate() {
                    out[at[j]] = Some(Ok(match fate {
                        RowFate::Deleted => DeleteOutcome::Deleted,
                        RowFate::Gone => DeleteOutcome::AlreadyGone,
                        RowFate::Kept => DeleteOutcome::Changed,
                    }));
                }
            }
            Err(e) => {
                let e = store_error("delete", e);
                for &i in &at {
                    out[i] = Some(Err(e.again("delete")));
                }
            }
        }
        super::answered(out)
    }

    async fn rewrite(
        &self,
        key: &str,
        expected: &Expected,
        content: &std::path::Path,
    ) -> Result<RewriteOutcome, StoreError> {
        validate_key(key)?;
        let new = std::fs::read(content).map_err(|source| StoreError::io("read spool", source))?;
        let stored = match self.table.settings().encoding {
            BodyEncoding::Raw => new.clone(),
            BodyEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .encode(&new)
                .into_bytes(),
        };
        let matches = |row: &PayloadRow| still_indexed(expected, row, true);
        match self
            .table
            .rewrite(key, &matches, stored)
            .await
            .map_err(|e| store_error("rewrite", e))?
        {
            Ok(row) => Ok(RewriteOutcome::Rewritten(meta(row))),
            Err(None) => Ok(RewriteOutcome::AlreadyGone),
            // Already the new content: an earlier rewrite whose answer was
            // lost, or a resumed apply.
            Err(Some(row)) => match self.decoded(key).await? {
                Some(body) if body == new => Ok(RewriteOutcome::Rewritten(meta(row))),
                Some(_) => Ok(RewriteOutcome::Changed),
                None => Ok(RewriteOutcome::AlreadyGone),
            },
        }
    }

    fn payload_table(&self) -> Option<&PayloadTable> {
        Some(&self.table)
    }

    fn erasure_note(&self) -> Option<String> {
        match self.table.kind() {
            // secure_delete on every connection; the CRM's after-apply
            // checkpoints the WAL (the same file).
            "postgres" => Some(format!(
                "{}: deleted rows (their TOAST with them) stay on disk until VACUUM; apply reports the tables holding dead rows and vacuums them with [crm] vacuum = true",
                self.describe()
            )),
            "mysql" => Some(format!(
                "{}: InnoDB purges deleted rows in the background; OPTIMIZE TABLE reclaims their pages",
                self.describe()
            )),
            "dataverse" => Some(format!(
                "{}: a deleted note is gone from the Web API; where the environment keeps a recycle bin or audit history of notes, it may still hold the note until that bin's retention ends (the environment's settings, which lethe cannot purge)",
                self.describe()
            )),
            _ => None,
        }
    }
}

/// What `check` says of each foreign key from the payload table: which
/// entity type it references, and what a delete of that entity does to
/// the payload row, and whether lethe deletes the rows first.
fn foreign_key_notes(
    fks: &[crate::crm::payloads::ForeignKey],
    s: &TableSettings,
    entity_tables: &[(String, String)],
    kind: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for fk in fks {
        let referenced = fk
            .references
            .rsplit('.')
            .next()
            .unwrap_or(&fk.references)
            .trim_matches('"');
        let entity = entity_tables.iter().find(|(_, t)| {
            let t = t.rsplit('.').next().unwrap_or(t);
            crate::crm::fit::same(kind, t, referenced)
        });
        let Some((entity, _)) = entity else {
            out.push(format!(
                "{}: foreign key {} references {} (no entity type's table): lethe never deletes its rows",
                s.table, fk.column, fk.references
            ));
            continue;
        };
        let action = fk.on_delete.to_ascii_uppercase();
        let what = match action.as_str() {
            "CASCADE" => format!(
                "deleting a {entity} deletes the payload rows that reference it (ON DELETE CASCADE), whether lethe planned them or not, and unaudited"
            ),
            "SET NULL" | "SET DEFAULT" => format!(
                "deleting a {entity} changes the payload rows that reference it (ON DELETE {action})"
            ),
            _ => format!(
                "a {entity} cannot be deleted while a payload row references it (ON DELETE {action}): its case batch fails"
            ),
        };
        // A link column to that type: its rows go in the case's
        // transaction, before the entity, so the constraint never acts on
        // lethe's deletes.
        let linked = s
            .links
            .iter()
            .any(|(t, c)| t == entity && crate::crm::fit::same(kind, c, &fk.column))
            || s.polymorphic.as_ref().is_some_and(|p| {
                crate::crm::fit::same(kind, &p.id, &fk.column)
                    && p.types.iter().any(|(_, t)| t == entity)
            });
        if linked {
            out.push(format!(
                "{}.{} → {entity} (ON DELETE {action}): lethe deletes the payload rows that reference a {entity} in its case's transaction, before it; a case with one lethe does not delete (held, shared, changed) is skipped, so the constraint never acts on lethe's deletes",
                s.table, fk.column
            ));
        } else {
            out.push(format!(
                "warning: {}.{} → {entity}: {what}; the column is not in [technical.table] links, so lethe does not delete these rows with their {entity}",
                s.table, fk.column
            ));
        }
    }
    out
}
