//! The case phase of apply: claiming a batch of planned cases (the claim
//! journals the intent), one CRM transaction that re-checks each case on
//! its current rows and deletes the approved ones, then the journal and the
//! audit records of the batch in one state transaction. Three batches are
//! in flight: one in the CRM, the one before it journaling, the one after
//! it claimed and read.

use std::collections::{HashMap, HashSet};

use backon::Retryable;

use super::delete::backoff;
use super::{ApplyError, ApplyOptions, ApplyReport, Ctx, POLL, Progress};
use crate::audit::{self, NewRecord};
use crate::crm::payloads::PayloadTable;
use crate::crm::{
    CaseNow, CaseRequest, Crm, CrmError, Decision, PayloadInput, PlannedPayload, RecheckInput,
};
use crate::evaluate::CompiledPolicy;
use crate::model::{EntityKey, EntityRef};
use crate::state::journal::{self, PlannedObject};
use crate::state::status::EntityStatus;
use crate::state::status::ObjectStatus;
use crate::state::workers::{ClaimedCase, Items, Worker};
use crate::state::{HoldKind, q};

/// A batch claimed (with intent) and read, not yet sent to the CRM.
struct ClaimedCases {
    cases: Vec<ClaimedCase>,
    planned: HashMap<u64, HashSet<(String, String)>>,
}

impl ClaimedCases {
    /// Gives the batch back untouched (see `Worker::release`).
    async fn release(self, worker: &Worker) -> Result<(), ApplyError> {
        let (resumed, fresh): (Vec<&ClaimedCase>, Vec<&ClaimedCase>) =
            self.cases.iter().partition(|c| c.resumed);
        let ids = |v: Vec<&ClaimedCase>| v.iter().map(|c| c.case_id as i64).collect::<Vec<_>>();
        worker
            .release(Items::Cases, &ids(fresh), &ids(resumed))
            .await?;
        Ok(())
    }
}

/// A batch the CRM has been asked to delete, waiting for its journal.
struct CaseBatch {
    cases: Vec<ClaimedCase>,
    planned: HashMap<u64, HashSet<(String, String)>>,
    outcome: Result<crate::crm::BatchOutcome, CrmError>,
    payloads: BatchPayloads,
}

/// The payload table under a `crm://` store, with the foreign-key columns
/// from it to entity tables.
pub(super) struct PayloadFks<'a> {
    pub(super) table: &'a PayloadTable,
    /// Its statements and columns; `planned` empty (each batch fills its own).
    pub(super) input: PayloadInput,
}

/// The planned payload rows a case batch's transaction may delete.
#[derive(Default)]
struct BatchPayloads {
    /// Object key → its planned delete.
    objects: HashMap<String, PlannedObject>,
    /// Per resumed case: its planned payload rows found gone before the
    /// transaction, deleted by the transaction of the run that died.
    gone: HashMap<u64, Vec<String>>,
}

impl Ctx<'_> {
    /// The case phase: batches claimed, re-checked and deleted by the CRM,
    /// and journaled, until none is open (or a stop is asked for).
    pub(super) async fn run_cases(
        &self,
        crm: &dyn Crm,
        options: &ApplyOptions,
        progress: Progress<'_>,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let total_cases = journal::case_count(self.state, self.plan_id).await?;
        let mut done_cases = 0u64;
        let batch_cases = options.batch_cases.unwrap_or(self.config.apply.batch_cases);
        // Three batches in flight: while the CRM deletes one, the state store
        // journals and audits the one before and claims (with intent) and reads
        // the one after. A crash leaves the later two `executing`, which a
        // resume settles like any other; a stop gives the claimed-ahead batch
        // back (`Worker::release`).
        let mut pending: Option<CaseBatch> = None;
        let mut ahead: Option<ClaimedCases> = None;
        loop {
            if options.stopping() {
                report.interrupted = true;
            }
            if report.interrupted
                && let Some(a) = ahead.take()
            {
                a.release(self.worker).await?;
            }
            let current = match ahead.take() {
                Some(a) => Some(a),
                None if report.interrupted => None,
                None => self.claim_cases(batch_cases).await?,
            };
            let Some(current) = current else {
                if let Some(p) = pending.take() {
                    done_cases += p.cases.len() as u64;
                    self.case_journal(p, report).await?;
                    progress("cases", done_cases, total_cases);
                }
                // Nothing to claim now. Cases other workers hold must finish
                // (or be taken over) before any object is judged by them.
                if !report.interrupted && self.worker.open_elsewhere(Items::Cases).await? > 0 {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                break;
            };
            let previous = pending.take();
            let claim_ahead = !report.interrupted && !options.stopping();
            let journal = async {
                match previous {
                    Some(p) => {
                        let n = p.cases.len() as u64;
                        self.case_journal(p, report).await.map(|()| n)
                    }
                    None => Ok(0),
                }
            };
            let next = async {
                if claim_ahead {
                    self.claim_cases(batch_cases).await
                } else {
                    Ok(None)
                }
            };
            let (deleted, journaled, next) =
                tokio::join!(self.case_delete(crm, current), journal, next);
            let next = match (next, &deleted, &journaled) {
                // Something failed: what was claimed ahead goes back untouched.
                (Ok(Some(a)), Err(_), _) | (Ok(Some(a)), _, Err(_)) => {
                    a.release(self.worker).await?;
                    None
                }
                (next, _, _) => next?,
            };
            done_cases += journaled?;
            pending = Some(deleted?);
            ahead = next;
            progress("cases", done_cases, total_cases);
        }
        Ok(())
    }

    /// Claims the next batch of cases (the claim journals the intent) and
    /// reads their planned entities. `None` when nothing is open to claim.
    async fn claim_cases(&self, limit: usize) -> Result<Option<ClaimedCases>, ApplyError> {
        let cases = self.worker.claim_cases(limit).await?;
        if cases.is_empty() {
            return Ok(None);
        }
        // The planned entities of these cases.
        let ids: Vec<u64> = cases.iter().map(|c| c.case_id).collect();
        let rows = match journal::case_entities(self.state, self.plan_id, &ids).await {
            Ok(rows) => rows,
            Err(e) => {
                // Not started: the claim goes back before the error does.
                let untouched = ClaimedCases {
                    cases,
                    planned: HashMap::new(),
                };
                untouched.release(self.worker).await?;
                return Err(e.into());
            }
        };
        let mut planned: HashMap<u64, HashSet<(String, String)>> = HashMap::new();
        for (case, ty, key) in rows {
            planned.entry(case).or_default().insert((ty, key));
        }
        Ok(Some(ClaimedCases { cases, planned }))
    }

    /// Re-checks and deletes a claimed batch in one CRM transaction (the
    /// claim journaled the intent). The journal is `case_journal`'s.
    async fn case_delete(
        &self,
        crm: &dyn Crm,
        claimed: ClaimedCases,
    ) -> Result<CaseBatch, ApplyError> {
        let ClaimedCases { cases, planned } = claimed;
        // The planned rows' identifiers, kept (pending) before the CRM
        // deletes them: a crash after its commit loses none. A CRM that
        // cannot answer fails the batch as its delete would.
        if let Err(e) = self.record_pending_identifiers(crm, &cases).await? {
            return Ok(CaseBatch {
                cases,
                planned,
                outcome: Err(e),
                payloads: BatchPayloads::default(),
            });
        }
        let holds = self.state.holds().await?;
        let held: HashSet<(String, String)> = holds
            .iter()
            .filter(|h| h.kind == HoldKind::Entity)
            .filter_map(|h| EntityRef::parse(&h.target).ok())
            .map(|r| (r.entity_type, r.key))
            .collect();
        let mut requests = Vec::new();
        for c in &cases {
            let Some(ty) = self.type_index(&c.root_type) else {
                continue;
            };
            requests.push(CaseRequest {
                case_id: c.case_id,
                root_ty: ty,
                root_key: c.root_key.clone(),
            });
        }
        let (payload_input, payloads) = match &self.payloads {
            Some(fks) => match self.batch_payloads(crm, fks, &cases, &planned).await? {
                Ok((input, payloads)) => (Some(input), payloads),
                // The CRM could not answer: the batch fails as its delete would.
                Err(e) => {
                    return Ok(CaseBatch {
                        cases,
                        planned,
                        outcome: Err(e),
                        payloads: BatchPayloads::default(),
                    });
                }
            },
            None => (None, BatchPayloads::default()),
        };
        let input = RecheckInput {
            entities: self.config.entities.clone(),
            conditions: self.conditions.to_vec(),
            cases: requests,
            payloads: payload_input,
        };
        let decide = |now: &CaseNow| -> Decision {
            let empty = HashSet::new();
            let mine = planned.get(&now.case_id).unwrap_or(&empty);
            self.judge().judge_now(now, mine, &held)
        };
        fail::fail_point!("apply::case-intent", |_| { std::process::abort() });
        let settings = &self.config.apply;
        let outcome = (|| crm.delete_cases(&input, &decide))
            .retry(backoff(settings))
            .when(|e: &CrmError| e.is_transient())
            .await;
        fail::fail_point!("apply::case-deleted", |_| { std::process::abort() });
        Ok(CaseBatch {
            cases,
            planned,
            outcome,
            payloads,
        })
    }

    /// The planned payload rows this batch's transaction may delete: the
    /// objects the index links to the batch's entities of a type a
    /// foreign-key column references, that the plan deletes and that the
    /// object phase's re-check would let go once the batch's entities are
    /// gone; each with what the index read of it and the batch's entities
    /// it links to. A resumed case's rows found gone were deleted by the
    /// transaction of the run that died (its journal step never ran).
    async fn batch_payloads(
        &self,
        crm: &dyn Crm,
        fks: &PayloadFks<'_>,
        cases: &[ClaimedCase],
        planned: &HashMap<u64, HashSet<(String, String)>>,
    ) -> Result<Result<(PayloadInput, BatchPayloads), CrmError>, ApplyError> {
        let mut input = fks.input.clone();
        let mut out = BatchPayloads::default();
        let referenced: HashSet<&str> = input
            .columns
            .iter()
            .map(|c| self.types[c.ty as usize].as_str())
            .collect();
        let going: HashSet<(String, String)> = planned.values().flatten().cloned().collect();
        let linked: Vec<(String, String)> = going
            .iter()
            .filter(|(t, _)| referenced.contains(t.as_str()))
            .cloned()
            .collect();
        if linked.is_empty() {
            return Ok(Ok((input, out)));
        }
        let entries =
            crate::state::index::entries_linking(self.state, &linked, &Default::default()).await?;
        let links: HashMap<&str, &Vec<(String, String)>> =
            entries.iter().map(|e| (e.key.as_str(), &e.links)).collect();
        let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
        let objects = journal::pending_deletes_by_key(self.state, self.plan_id, &keys).await?;
        let refs: Vec<&PlannedObject> = objects.iter().collect();
        let judged = self.recheck_objects(crm, &refs, &going).await?;
        let resumed: Vec<&ClaimedCase> = cases.iter().filter(|c| c.resumed).collect();
        for o in judged.go {
            let Some(expected) = judged.indexed.get(&o.key) else {
                continue;
            };
            let mine: Vec<&(String, String)> = links
                .get(o.key.as_str())
                .map(|l| l.iter().filter(|t| going.contains(*t)).collect())
                .unwrap_or_default();
            for c in &resumed {
                let Some(entities) = planned.get(&c.case_id) else {
                    continue;
                };
                if !mine.iter().any(|t| entities.contains(*t)) {
                    continue;
                }
                match fks.table.head(&o.key).await {
                    Ok(None) => {
                        out.gone.entry(c.case_id).or_default().push(o.key.clone());
                    }
                    Ok(Some(_)) => {}
                    Err(e) => return Ok(Err(e)),
                }
                break;
            }
            let needs = mine
                .iter()
                .filter_map(|(t, k)| self.type_index(t).map(|ti| (ti, k.clone())))
                .collect();
            input.planned.insert(
                o.key.clone(),
                PlannedPayload {
                    size: expected.size,
                    modified: expected.modified,
                    version: expected.etag.clone(),
                    needs,
                },
            );
            out.objects.insert(o.key.clone(), o.clone());
        }
        Ok(Ok((input, out)))
    }

    /// Journals a deleted batch and audits what went.
    async fn case_journal(
        &self,
        batch: CaseBatch,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let CaseBatch {
            cases,
            planned,
            outcome,
            payloads,
        } = batch;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.fail_cases(&cases, &e.to_string(), report).await?;
                return Ok(());
            }
        };
        // Cases of which the CRM deleted nothing (Dataverse: a change set
        // refused), failed one by one; cases whose delete is unknown stay
        // `executing` for the next apply to settle (it counts the rows it
        // finds gone as deleted by lethe), named as failures of this run.
        for (case_id, reason) in &outcome.failed {
            if let Some(c) = cases.iter().find(|c| c.case_id == *case_id) {
                self.fail_cases(std::slice::from_ref(c), reason, report)
                    .await?;
            }
        }
        for (case_id, reason) in &outcome.unsettled {
            if let Some(c) = cases.iter().find(|c| c.case_id == *case_id) {
                report.cases_failed += 1;
                report.failures.push((
                    self.pseudo
                        .show_entity(&c.root_type, &c.root_key.canonical()),
                    reason.clone(),
                ));
            }
        }
        let ids: Vec<i64> = cases.iter().map(|c| c.case_id as i64).collect();
        let by_id: HashMap<u64, &ClaimedCase> = cases.iter().map(|c| (c.case_id, c)).collect();
        let policy_of = |case_id: &u64| -> &CompiledPolicy {
            let name = by_id.get(case_id).map(|c| c.policy.as_str());
            self.policies
                .iter()
                .find(|p| Some(p.name.as_str()) == name)
                .unwrap_or(&self.policies[0])
        };

        // Journal + audit in one state transaction, set-based: one statement
        // per group of cases, not one per entity. Only for the cases still
        // held: one taken over while the CRM deleted is journaled (and
        // audited) by its new holder, which finds its rows gone.
        let mut tx = self.state.begin_write().await.map_err(q("journaling"))?;
        let mine = self.worker.still_mine(&mut tx, Items::Cases, &ids).await?;
        let mut records = Vec::new();
        let deleted: HashMap<u64, &Vec<(u16, EntityKey)>> =
            outcome.deleted.iter().map(|(c, r)| (*c, r)).collect();
        let mut all_deleted: Vec<i64> = Vec::new();
        let mut done: Vec<i64> = Vec::new();
        let mut skipped: HashMap<&str, Vec<i64>> = HashMap::new();
        for (case_id, decision) in &outcome.cases {
            if !mine.contains(&(*case_id as i64)) {
                continue;
            }
            let resumed = by_id.get(case_id).is_some_and(|c| c.resumed);
            let policy = policy_of(case_id);
            match decision {
                Decision::Delete(_) => {
                    let rows: HashSet<(String, String)> = deleted
                        .get(case_id)
                        .map(|v| {
                            v.iter()
                                .map(|(t, k)| (self.types[*t as usize].clone(), k.canonical()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let empty = HashSet::new();
                    let mine = planned.get(case_id).unwrap_or(&empty);
                    // Found gone: deleted by us if the journal showed our
                    // intent (a resumed batch), else by someone else.
                    let by_us = |ty: &String, key: &String| {
                        resumed || rows.contains(&(ty.clone(), key.clone()))
                    };
                    let every_one = mine.iter().all(|(t, k)| by_us(t, k));
                    for (ty, key) in mine {
                        if by_us(ty, key) {
                            *report.entities_deleted.entry(ty.clone()).or_default() += 1;
                            records.push(NewRecord {
                                plan_id: self.plan_id.to_string(),
                                policy: Some(policy.name.clone()),
                                basis: Some(policy.basis.clone()),
                                action: "delete-entity",
                                entity_type: Some(ty.clone()),
                                pseudonym: self.pseudo.entity(ty, key),
                                bytes: None,
                                author: None,
                                reason_chars: None,
                                detail: None,
                            });
                        } else {
                            report.entities_already_gone += 1;
                        }
                        if !every_one {
                            let status = if by_us(ty, key) {
                                EntityStatus::Deleted
                            } else {
                                EntityStatus::Gone
                            };
                            journal::set_entity_status(&mut tx, self.plan_id, ty, key, status)
                                .await?;
                        }
                    }
                    if every_one {
                        all_deleted.push(*case_id as i64);
                    }
                    done.push(*case_id as i64);
                    report.cases_done += 1;
                }
                Decision::Skip(reason) => {
                    skipped
                        .entry(reason.as_str())
                        .or_default()
                        .push(*case_id as i64);
                    report.cases_skipped += 1;
                    *report.skipped_reasons.entry(reason.clone()).or_default() += 1;
                }
            }
        }
        // The payload rows the transaction deleted (or, for a resumed case,
        // the one that died), journaled and audited as objects: the object
        // phase finds them settled.
        let done_set: HashSet<u64> = done.iter().map(|c| *c as u64).collect();
        let mut gone_payloads: Vec<(u64, &String)> =
            outcome.payloads.iter().map(|(c, k)| (*c, k)).collect();
        for (c, keys) in &payloads.gone {
            gone_payloads.extend(keys.iter().map(|k| (*c, k)));
        }
        let mut settled: Vec<i64> = Vec::new();
        let mut off_index: Vec<String> = Vec::new();
        for (case_id, key) in gone_payloads {
            if !done_set.contains(&case_id) {
                continue;
            }
            let Some(o) = payloads.objects.get(key) else {
                continue;
            };
            if settled.contains(&o.item) {
                continue;
            }
            settled.push(o.item);
            off_index.push(o.key.clone());
            report.objects_deleted += 1;
            report.bytes_freed += o.size as u64;
            records.push(self.object_record(o));
        }
        if !settled.is_empty() {
            journal::objects_settled(&mut tx, self.plan_id, ObjectStatus::Deleted, &settled)
                .await?;
            journal::unindex_objects(&mut tx, &off_index).await?;
        }
        // The identifiers of the rows this batch deleted, as keyed hashes,
        // in the transaction that journals their deletion.
        let ours: HashSet<(u16, &EntityKey)> = outcome
            .deleted
            .iter()
            .filter(|(c, _)| mine.contains(&(*c as i64)))
            .flat_map(|(_, rows)| rows.iter().map(|(t, k)| (*t, k)))
            .collect();
        let values: Vec<_> = outcome
            .identifiers
            .iter()
            .filter(|v| ours.contains(&(v.ty, &v.key)))
            .cloned()
            .collect();
        if !values.is_empty() {
            let (rows, unsearchable) = super::erasure::fingerprints(
                &self.config.entities,
                self.pseudo,
                &self.fingerprint,
                &values,
            );
            report.identifiers_recorded += rows.len() as u64;
            report.identifiers_unsearchable += unsearchable;
            crate::state::erased::record(
                &mut tx,
                self.plan_id,
                &jiff::Timestamp::now().to_string(),
                &rows,
            )
            .await?;
        }
        crate::state::erased::confirm(&mut tx, self.plan_id, &done).await?;
        journal::case_entities_deleted(&mut tx, self.plan_id, &all_deleted).await?;
        journal::cases_done(&mut tx, self.plan_id, &done).await?;
        for (reason, ids) in &skipped {
            crate::state::erased::drop_pending(&mut tx, self.plan_id, ids).await?;
            journal::cases_skipped(&mut tx, self.plan_id, reason, ids).await?;
        }
        audit::append(&mut tx, records).await?;
        tx.commit().await.map_err(q("journaling"))?;
        Ok(())
    }

    /// Reads the `identifiers` of the claimed cases' planned rows and
    /// records their keyed hashes as pending (`state::erased`).
    async fn record_pending_identifiers(
        &self,
        crm: &dyn Crm,
        cases: &[ClaimedCase],
    ) -> Result<Result<(), CrmError>, ApplyError> {
        let types: Vec<&str> = self
            .config
            .entities
            .iter()
            .filter(|e| !e.identifiers.is_empty())
            .map(|e| e.name.as_str())
            .collect();
        let ids: Vec<u64> = cases.iter().map(|c| c.case_id).collect();
        let keys =
            crate::state::erased::planned_keys(self.state, self.plan_id, &ids, &types).await?;
        let mut rows = Vec::new();
        for (ti, et) in self.config.entities.iter().enumerate() {
            let mine: Vec<&(u64, String, EntityKey)> =
                keys.iter().filter(|(_, t, _)| *t == et.name).collect();
            if mine.is_empty() {
                continue;
            }
            let case_of: HashMap<String, u64> =
                mine.iter().map(|(c, _, k)| (k.canonical(), *c)).collect();
            let wanted: Vec<EntityKey> = mine.iter().map(|(_, _, k)| k.clone()).collect();
            let found = match (|| crm.identifier_values(et, &wanted))
                .retry(backoff(&self.config.apply))
                .when(|e: &CrmError| e.is_transient())
                .await
            {
                Ok(f) => f,
                Err(e) => return Ok(Err(e)),
            };
            let mut values = Vec::new();
            for (key, vals) in found {
                let Some(case) = case_of.get(&key.canonical()) else {
                    continue;
                };
                for (column, value) in et.identifiers.iter().zip(vals) {
                    if let Some(v) = value {
                        values.push((
                            *case,
                            crate::crm::ErasedValue {
                                ty: ti as u16,
                                key: key.clone(),
                                column: column.clone(),
                                value: crate::sensitive::Sensitive::new(v),
                            },
                        ));
                    }
                }
            }
            for (case, v) in &values {
                if let Some(h) = super::erasure::fingerprint_one(
                    &self.config.entities,
                    self.pseudo,
                    &self.fingerprint,
                    v,
                ) {
                    rows.push((*case, h));
                }
            }
        }
        if !rows.is_empty() {
            crate::state::erased::record_pending(
                self.state,
                self.plan_id,
                &jiff::Timestamp::now().to_string(),
                &rows,
            )
            .await?;
        }
        Ok(Ok(()))
    }

    async fn fail_cases(
        &self,
        cases: &[ClaimedCase],
        reason: &str,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let reason = reason.to_string();
        let ids: Vec<i64> = cases.iter().map(|c| c.case_id as i64).collect();
        let mut tx = self.state.begin_write().await.map_err(q("journaling"))?;
        crate::state::erased::drop_pending(&mut tx, self.plan_id, &ids).await?;
        tx.commit().await.map_err(q("journaling"))?;
        for c in cases {
            journal::case_failed(self.state, self.plan_id, c.case_id, &reason).await?;
            report.cases_failed += 1;
            report.failures.push((
                self.pseudo
                    .show_entity(&c.root_type, &c.root_key.canonical()),
                reason.clone(),
            ));
        }
        Ok(())
    }
}
