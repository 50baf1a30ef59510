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
}

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
    let mut to_delete: Vec<HashSet<EntityKey>> = vec![HashSet::new(); n_types];
    for now in &cases {
        let decision = decide(now);
        if let Decision::Delete(rows) = &decision {
            for (ty, key) in rows {
                to_delete[*ty as usize].insert(key.clone());
            }
            outcome.deleted.push((now.case_id, rows.clone()));
        }
        outcome.cases.push((now.case_id, decision));
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
