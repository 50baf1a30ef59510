//! The re-check inside the deleting transaction, written once for every
//! backend: load the current subtree of each planned case, hand it to the
//! engine's judgement, delete what it approves children-first. The loading
//! alone (`load`) is also what a subject request plans on (`Crm::subtrees`),
//! read in a transaction that locks nothing.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::{BatchOutcome, CrmError, EntityRow};
use crate::config::{EntityType, KeepRule};
use crate::model::{EntityKey, Instant};

#[derive(Clone, Debug)]
pub struct CaseRequest {
    pub case_id: u64,
    pub root_ty: u16,
    pub root_key: EntityKey,
}

#[derive(Clone, Debug)]
pub struct RecheckInput {
    /// Entity types in graph order (parents first).
    pub entities: Vec<EntityType>,
    /// Conditional keep rules; bit `i` of `EntityNow::keep_bits` is rule `i`.
    pub conditions: Vec<KeepRule>,
    pub cases: Vec<CaseRequest>,
    /// The payload table's rows that reference the cases' entities by a
    /// foreign key: deleted in the same transaction, before the entities.
    pub payloads: Option<PayloadInput>,
}

/// The payload table (`[technical.table]`) as the deleting transaction
/// sees it: its statements (built by `crm::payloads` in the CRM's
/// dialect), its foreign-key columns, and the payload rows the plan
/// deletes that may reference the batch's entities.
#[derive(Clone, Debug)]
pub struct PayloadInput {
    /// The table, quoted.
    pub table: String,
    pub columns: Vec<PayloadColumn>,
    /// Object key → the planned delete of that row.
    pub planned: HashMap<String, PlannedPayload>,
}

/// A foreign-key column of the payload table to an entity type's table.
#[derive(Clone, Debug)]
pub struct PayloadColumn {
    /// The entity type's index.
    pub ty: u16,
    pub column: String,
    /// The select list of a locked row: key, this column, modified, size,
    /// version, each as text (SQL); on Dataverse the `$select` of key,
    /// this column, modified and size (the version is the row's etag).
    pub select: String,
    /// Dataverse: a `$filter` the rows must also meet (the type codes of a
    /// polymorphic reference to this type); `None` on SQL.
    pub filter: Option<String>,
}

/// A payload row the plan deletes, as the index read it, and the entities
/// of this batch it links to: it goes in the transaction only while it is
/// still what the index read and every one of those entities goes too.
#[derive(Clone, Debug)]
pub struct PlannedPayload {
    pub size: u64,
    pub modified: Option<Instant>,
    pub version: Option<String>,
    /// (entity type index, canonical key)
    pub needs: Vec<(u16, String)>,
}

/// A payload row as the deleting transaction locked it.
#[derive(Clone, Debug)]
pub struct LockedPayload {
    pub key: String,
    /// The foreign-key column's value, as text.
    pub references: String,
    pub modified: Option<Instant>,
    pub size: u64,
    pub version: Option<String>,
}

/// Why a case is kept when a payload row lethe does not delete references
/// one of its entities by a foreign key.
pub const PAYLOAD_KEPT: &str = "kept: a payload row the plan does not delete (held, shared, changed or new since the index) references an entity of the case by a foreign key, which would fail or cascade into it; run `lethe index`, then plan again";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityNow {
    pub ty: u16,
    pub key: EntityKey,
    pub clock: Option<Instant>,
    pub keep_bits: u32,
    /// Foreign-key values, one per configured parent relation.
    pub parents: Vec<Option<EntityKey>>,
}

/// A case as the CRM holds it now, inside the transaction.
#[derive(Clone, Debug)]
pub struct CaseNow {
    pub case_id: u64,
    pub root_ty: u16,
    pub root_key: EntityKey,
    /// Empty when the root is gone.
    pub entities: Vec<EntityNow>,
}

/// An identifier of a deleted row, read inside the deleting transaction:
/// the caller turns it into a keyed hash at once and keeps nothing else.
#[derive(Clone, Debug)]
pub struct ErasedValue {
    pub ty: u16,
    pub key: EntityKey,
    /// The `identifiers` column it came from.
    pub column: String,
    pub value: crate::sensitive::Sensitive<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Delete exactly these rows.
    Delete(Vec<(u16, EntityKey)>),
    /// Keep the case; the reason goes into the journal and the report.
    Skip(String),
}

/// What a backend offers inside an open transaction.
#[async_trait]
pub(super) trait TxnOps: Send {
    /// Rows of `et` whose `column` is one of `values`, with that column's
    /// value and, bit `j` set, whether `conditions[j]` holds on the row (one
    /// statement: the conditional keep rules ride on the row read).
    async fn rows_where_in(
        &mut self,
        et: &EntityType,
        column: &str,
        values: &[EntityKey],
        conditions: &[&str],
    ) -> Result<Vec<(EntityRow, Option<EntityKey>, u32)>, CrmError>;

    /// The `identifiers` columns of the rows with these keys, as text
    /// (`None` for NULL), in `et.identifiers` order: read just before the
    /// rows are deleted, in the same transaction.
    async fn identifier_values(
        &mut self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError>;

    /// Deletes rows by key; returns the keys that were present.
    async fn delete_keys(&mut self, et: &EntityType, keys: &[EntityKey]) -> Result<u64, CrmError>;

    /// The payload rows whose foreign-key `column` is one of `values`,
    /// locked (`column.select` read as text).
    async fn payload_rows(
        &mut self,
        p: &PayloadInput,
        column: &PayloadColumn,
        values: &[EntityKey],
    ) -> Result<Vec<LockedPayload>, CrmError>;

    /// Deletes the payload rows whose foreign-key `column` is one of
    /// `values`; returns how many went.
    async fn delete_payloads(
        &mut self,
        p: &PayloadInput,
        column: &PayloadColumn,
        values: &[EntityKey],
    ) -> Result<u64, CrmError>;
}

/// A payload row from its five text columns (`PayloadInput::select`).
pub(super) fn locked_payload(cols: [Option<String>; 5]) -> Option<LockedPayload> {
    let [key, references, modified, size, version] = cols;
    Some(LockedPayload {
        key: key?,
        references: references?.trim().to_string(),
        modified: modified.and_then(|m| crate::model::parse_clock_text(&m)),
        size: size.and_then(|s| s.trim().parse().ok()).unwrap_or(0),
        version,
    })
}

/// An error of the payload step, naming the table (never a row).
pub(super) fn payload_error(p: &PayloadInput, source: sqlx::Error) -> CrmError {
    CrmError::Query {
        entity: "technical.table".into(),
        table: p.table.clone(),
        source,
    }
}

/// The deleting transaction's work: load the cases as they are now, judge
/// each, delete what the judgement approves.
pub(super) async fn run<T: TxnOps>(
    txn: &mut T,
    input: &RecheckInput,
    decide: &(dyn for<'a> Fn(&'a CaseNow) -> Decision + Sync + '_),
) -> Result<BatchOutcome, CrmError> {
    let cases = load(txn, input).await?;
    decide_and_delete(txn, input, cases, decide).await
}

/// The current subtree of each case's root: the root, then every
/// descendant through the configured parent relations, type by type in
/// graph order, with its clock, parents and conditional keep bits. One
/// `CaseNow` per case of `input`, in its order; its entities sorted by type
/// and key. Whether the rows are locked is the backend's `TxnOps`.
pub(super) async fn load<T: TxnOps>(
    txn: &mut T,
    input: &RecheckInput,
) -> Result<Vec<CaseNow>, CrmError> {
    let n_types = input.entities.len();
    // Per type: key → (cases it belongs to, clock)
    type Found = HashMap<EntityKey, (Vec<u64>, Option<Instant>, Vec<Option<EntityKey>>)>;
    let mut found: Vec<Found> = vec![HashMap::new(); n_types];
    // Conditional keep rules, evaluated on the current rows as they are
    // read: per type, its rules' conditions and their global bits.
    let mut rules: Vec<(Vec<&str>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); n_types];
    for (bit, rule) in input.conditions.iter().enumerate() {
        if let (Some(ti), Some(cond)) = (
            input.entities.iter().position(|e| e.name == rule.entity),
            &rule.condition,
        ) {
            rules[ti].0.push(cond.as_str());
            rules[ti].1.push(1 << bit);
        }
    }
    let global = |ti: usize, local: u32| -> u32 {
        rules[ti]
            .1
            .iter()
            .enumerate()
            .filter(|(j, _)| local & (1 << j) != 0)
            .fold(0, |acc, (_, b)| acc | b)
    };
    let mut bits: HashMap<(u16, EntityKey), u32> = HashMap::new();
    for (ti, et) in input.entities.iter().enumerate() {
        let roots: Vec<&CaseRequest> = input
            .cases
            .iter()
            .filter(|c| c.root_ty as usize == ti)
            .collect();
        if !roots.is_empty() {
            let keys: Vec<EntityKey> = roots.iter().map(|c| c.root_key.clone()).collect();
            let mut by_key: HashMap<&EntityKey, Vec<u64>> = HashMap::new();
            for c in &roots {
                by_key.entry(&c.root_key).or_default().push(c.case_id);
            }
            for (row, matched, local) in txn.rows_where_in(et, &et.key, &keys, &rules[ti].0).await?
            {
                if local != 0 {
                    *bits.entry((ti as u16, row.key.clone())).or_default() |= global(ti, local);
                }
                let cases = matched
                    .as_ref()
                    .and_then(|m| by_key.get(m).cloned())
                    .or_else(|| by_key.get(&row.key).cloned())
                    .unwrap_or_default();
                let entry = found[ti].entry(row.key.clone()).or_insert((
                    Vec::new(),
                    row.clock,
                    row.parents.clone(),
                ));
                entry.0.extend(cases);
            }
        }
        for (parent, column) in &et.parents {
            let Some(pi) = input.entities.iter().position(|e| &e.name == parent) else {
                continue;
            };
            if pi >= ti || found[pi].is_empty() {
                continue;
            }
            let parent_keys: Vec<EntityKey> = found[pi].keys().cloned().collect();
            let rows = txn
                .rows_where_in(et, column, &parent_keys, &rules[ti].0)
                .await?;
            for (row, fk, local) in rows {
                if local != 0 {
                    *bits.entry((ti as u16, row.key.clone())).or_default() |= global(ti, local);
                }
                let Some(fk) = fk else { continue };
                let cases = lookup_loose(&found[pi], &fk)
                    .map(|(c, _, _)| c.clone())
                    .unwrap_or_default();
                let entry = found[ti].entry(row.key.clone()).or_insert((
                    Vec::new(),
                    row.clock,
                    row.parents.clone(),
                ));
                for c in cases {
                    if !entry.0.contains(&c) {
                        entry.0.push(c);
                    }
                }
            }
        }
    }
    let mut per_case: HashMap<u64, Vec<EntityNow>> = HashMap::new();
    for (ti, map) in found.iter().enumerate() {
        for (key, (cases, clock, parents)) in map {
            for c in cases {
                per_case.entry(*c).or_default().push(EntityNow {
                    ty: ti as u16,
                    key: key.clone(),
                    clock: *clock,
                    keep_bits: bits.get(&(ti as u16, key.clone())).copied().unwrap_or(0),
                    parents: parents.clone(),
                });
            }
        }
    }
    Ok(input
        .cases
        .iter()
        .map(|c| {
            let mut entities = per_case.remove(&c.case_id).unwrap_or_default();
            entities.sort_by(|a, b| (a.ty, &a.key).cmp(&(b.ty, &b.key)));
            CaseNow {
                case_id: c.case_id,
                root_ty: c.root_ty,
                root_key: c.root_key.clone(),
                entities,
            }
        })
        .collect())
}

/// Judges each loaded case with `decide` and deletes the approved rows
/// children-first, reading the identifiers of each type's rows just before
/// they go.
async fn decide_and_delete<T: TxnOps>(
    txn: &mut T,
    input: &RecheckInput,
    cases: Vec<CaseNow>,
    decide: &(dyn for<'a> Fn(&'a CaseNow) -> Decision + Sync + '_),
) -> Result<BatchOutcome, CrmError> {
    let n_types = input.entities.len();
    let mut outcome = BatchOutcome::default();
    let mut decisions: Vec<(u64, Decision)> =
        cases.iter().map(|now| (now.case_id, decide(now))).collect();
    // Payload rows that reference these entities by a foreign key go
    // first, in this transaction; a case one of them would keep is kept.
    if let Some(p) = &input.payloads {
        outcome.payloads = delete_payloads(txn, p, &mut decisions).await?;
    }
    let mut to_delete: Vec<HashSet<EntityKey>> = vec![HashSet::new(); n_types];
    for (case_id, decision) in decisions {
        if let Decision::Delete(rows) = &decision {
            for (ty, key) in rows {
                to_delete[*ty as usize].insert(key.clone());
            }
            outcome.deleted.push((case_id, rows.clone()));
        }
        outcome.cases.push((case_id, decision));
    }
    // Children first: graph order is parents first.
    for ti in (0..n_types).rev() {
        if to_delete[ti].is_empty() {
            continue;
        }
        let et = &input.entities[ti];
        let keys: Vec<EntityKey> = to_delete[ti].iter().cloned().collect();
        if !et.identifiers.is_empty() {
            for (key, values) in txn.identifier_values(et, &keys).await? {
                for (column, value) in et.identifiers.iter().zip(values) {
                    if let Some(v) = value {
                        outcome.identifiers.push(ErasedValue {
                            ty: ti as u16,
                            key: key.clone(),
                            column: column.clone(),
                            value: crate::sensitive::Sensitive::new(v),
                        });
                    }
                }
            }
        }
        txn.delete_keys(et, &keys).await?;
    }
    Ok(outcome)
}

/// The payload step of the deleting transaction: locks every payload row
/// that references an approved entity by a foreign key; a case with such a
/// row that may not go (not planned, changed since the index read it, or
/// linked to an entity of this batch that stays) is kept, until no kept
/// case leaves such a row behind; then the rest are deleted, before the
/// entities they reference. Returns (case id, payload key) of each row
/// deleted.
async fn delete_payloads<T: TxnOps>(
    txn: &mut T,
    p: &PayloadInput,
    decisions: &mut [(u64, Decision)],
) -> Result<Vec<(u64, String)>, CrmError> {
    // (type, canonical key) → (case, the key as read) of every approved entity.
    let mut approved: HashMap<(u16, String), (u64, EntityKey)> = HashMap::new();
    for (case_id, d) in decisions.iter() {
        if let Decision::Delete(rows) = d {
            for (ty, key) in rows {
                approved.insert((*ty, key.canonical()), (*case_id, key.clone()));
            }
        }
    }
    // Every row that references one of them: (type, column, row).
    let mut refs: Vec<(u16, usize, LockedPayload)> = Vec::new();
    for (ci, column) in p.columns.iter().enumerate() {
        let ty = &column.ty;
        let keys: Vec<EntityKey> = approved
            .iter()
            .filter(|((t, _), _)| t == ty)
            .map(|(_, (_, k))| k.clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        for row in txn.payload_rows(p, column, &keys).await? {
            refs.push((*ty, ci, row));
        }
    }
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let may_go = |row: &LockedPayload, approved: &HashMap<(u16, String), (u64, EntityKey)>| {
        p.planned.get(&row.key).is_some_and(|pp| {
            let indexed = (pp.modified, pp.version.as_deref());
            let now = (row.modified, row.version.as_deref());
            let unchanged = match super::payloads::unchanged_by_fingerprint(indexed, now) {
                Some(unchanged) => unchanged,
                None => {
                    pp.size == row.size
                        && pp.modified == row.modified
                        && match (&pp.version, &row.version) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        }
                }
            };
            unchanged && pp.needs.iter().all(|n| approved.contains_key(n))
        })
    };
    // A kept case keeps its entities, which may keep another case's row.
    loop {
        let mut kept: HashSet<u64> = HashSet::new();
        for (ty, _, row) in &refs {
            if let Some((case_id, _)) = approved.get(&(*ty, row.references.clone()))
                && !may_go(row, &approved)
            {
                kept.insert(*case_id);
            }
        }
        if kept.is_empty() {
            break;
        }
        approved.retain(|_, (c, _)| !kept.contains(c));
        for (case_id, d) in decisions.iter_mut() {
            if kept.contains(case_id) {
                *d = Decision::Skip(PAYLOAD_KEPT.into());
            }
        }
    }
    // What goes: every row referencing a still-approved entity, each once,
    // counted for the first case that reaches it.
    let mut going: Vec<(u64, String)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut by_column: Vec<HashSet<EntityKey>> = vec![HashSet::new(); p.columns.len()];
    for (ty, ci, row) in &refs {
        if let Some((case_id, key)) = approved.get(&(*ty, row.references.clone())) {
            by_column[*ci].insert(key.clone());
            if seen.insert(row.key.as_str()) {
                going.push((*case_id, row.key.clone()));
            }
        }
    }
    let mut n = 0;
    for (ci, keys) in by_column.iter().enumerate() {
        if keys.is_empty() {
            continue;
        }
        let keys: Vec<EntityKey> = keys.iter().cloned().collect();
        n += txn.delete_payloads(p, &p.columns[ci], &keys).await?;
    }
    // The rows are locked (and the entities they reference): the deletes
    // take exactly the rows judged. Anything else rolls the batch back.
    if n != going.len() as u64 {
        return Err(payload_error(
            p,
            sqlx::Error::Protocol(format!(
                "deleted {n} payload rows where {} were judged; nothing of the batch was deleted",
                going.len()
            )),
        ));
    }
    Ok(going)
}

/// Finds a key whether the foreign key column stores it as text or integer.
fn lookup_loose<'a, V>(map: &'a HashMap<EntityKey, V>, key: &EntityKey) -> Option<&'a V> {
    map.get(key).or_else(|| match key {
        EntityKey::Int(i) => map.get(&EntityKey::Text(i.to_string())),
        EntityKey::Text(s) => s
            .parse::<i64>()
            .ok()
            .and_then(|i| map.get(&EntityKey::Int(i))),
    })
}
