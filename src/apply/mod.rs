//! Stage 4, apply: executes a stored plan. Cases first, in batches: each
//! batch is journaled `executing`, then one CRM transaction re-checks every
//! case on its current rows and deletes the approved ones children-first,
//! then the journal and the audit records are written in one state
//! transaction. Then the objects whose every linked case was deleted.
//!
//! Architecture invariant: only `apply` deletes, and only items of a
//! persisted plan. A crash anywhere is resumed from the journal: an item
//! journaled `executing` and found gone was deleted by us and is audited.

use std::collections::{HashMap, HashSet};

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use serde::Serialize;

use crate::audit::{self, NewRecord, pseudonym::Pseudonymizer};
use crate::config::Config;
use crate::crm::{CaseNow, CaseRequest, Crm, CrmError, Decision, RecheckInput};
use crate::evaluate::{self, CompiledPolicy, GraphBuilder, Kept, Verdict};
use crate::index;
use crate::model::{EntityKey, EntityRef};
use crate::plan::fate::{LinkedNow, Recheck};
use crate::plan::{self, PlanError};
use crate::state::journal::{self, EntityStatus, ObjectFate, ObjectStatus, PlannedObject};
use crate::state::plans::{self, PlanStatus};
use crate::state::workers::{ClaimedCase, Items, Worker};
use crate::state::{HoldKind, ObjectHolds, StateError, StateStore, q};
use crate::store::{DeleteOutcome, StoreError, StoreErrorKind, TechnicalStore};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("plan {id} trips the mass-delete brake, so nothing was deleted:\n  - {}\nreview it with `lethe plan`; if it is right, run again with --allow-mass-delete", reasons.join("\n  - "))]
    MassDelete { id: String, reasons: Vec<String> },
    #[error(
        "plan {id} is as of {as_of}, in the future: a future plan is a preview and cannot be applied"
    )]
    FuturePlan { id: String, as_of: String },
    #[error(
        "plan {id} was made with a different config (hash {planned}…, now {now}…); make a new plan"
    )]
    ConfigChanged {
        id: String,
        planned: String,
        now: String,
    },
}

/// Per-run choices; the rest comes from `[apply]` in the config.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    pub allow_mass_delete: bool,
    pub wait_for_lock: bool,
    /// Overrides `apply.batch_cases`.
    pub batch_cases: Option<usize>,
    /// Set (by a signal handler) to stop after the batch in flight: the
    /// journal holds the rest, and the next apply of the plan resumes it.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl ApplyOptions {
    fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Bounded exponential backoff with jitter, as `[apply]` configures it.
fn backoff(s: &crate::config::ApplySettings) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(s.backoff)
        .with_max_delay(s.max_backoff)
        .with_max_times(s.max_attempts.saturating_sub(1))
        .with_jitter()
}

/// Deletes one object, retrying transient faults. A delete whose answer was
/// lost (a timeout after the store acted) is retried, finds the object gone,
/// and counts as deleted by us: the journal shows it existed.
async fn delete_with_retry(
    store: &dyn TechnicalStore,
    key: &str,
    expected: Option<&crate::store::Expected>,
    settings: &crate::config::ApplySettings,
) -> Result<DeleteOutcome, StoreError> {
    let faulted = std::sync::atomic::AtomicBool::new(false);
    let result = (|| store.delete_expecting(key, expected))
        .retry(backoff(settings))
        .when(|e: &StoreError| e.kind() == StoreErrorKind::Transient)
        .notify(|_, _| faulted.store(true, std::sync::atomic::Ordering::Relaxed))
        .await;
    match result {
        Ok(DeleteOutcome::AlreadyGone) if faulted.load(std::sync::atomic::Ordering::Relaxed) => {
            Ok(DeleteOutcome::Deleted)
        }
        other => other,
    }
}

/// Deletes objects through the store's batch call (`delete_batch_size` at a
/// time), retrying the keys that failed transiently, with the same backoff
/// as single deletes. One result per object; a key whose answer was lost
/// and is then found gone counts as deleted by us, as with single deletes.
async fn delete_batched<'o>(
    store: &dyn TechnicalStore,
    objects: &[&'o PlannedObject],
    expected: &HashMap<String, crate::store::Expected>,
    settings: &crate::config::ApplySettings,
) -> Vec<(&'o PlannedObject, Result<DeleteOutcome, StoreError>)> {
    use backon::BackoffBuilder;
    let mut out = Vec::with_capacity(objects.len());
    // All of them in one call: the store splits them into its batches and
    // sends several at once.
    for chunk in [objects] {
        let mut results: Vec<Option<Result<DeleteOutcome, StoreError>>> =
            (0..chunk.len()).map(|_| None).collect();
        let mut faulted = vec![false; chunk.len()];
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let mut delays = backoff(settings).build();
        loop {
            let keys: Vec<String> = pending.iter().map(|&i| chunk[i].key.clone()).collect();
            let expect: Vec<Option<crate::store::Expected>> =
                keys.iter().map(|k| expected.get(k).cloned()).collect();
            let answers = store.delete_many_expecting(&keys, &expect).await;
            let mut again = Vec::new();
            for (&i, answer) in pending.iter().zip(answers) {
                results[i] = Some(match answer {
                    Err(e) if e.kind() == StoreErrorKind::Transient => {
                        faulted[i] = true;
                        again.push(i);
                        Err(e)
                    }
                    Ok(DeleteOutcome::AlreadyGone) if faulted[i] => Ok(DeleteOutcome::Deleted),
                    other => other,
                });
            }
            if again.is_empty() {
                break;
            }
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => break,
            }
            pending = again;
        }
        for (o, r) in chunk.iter().zip(results) {
            out.push((
                *o,
                r.unwrap_or_else(|| {
                    Err(StoreError::failed(
                        "batch delete",
                        StoreErrorKind::Transient,
                        "no answer for this key",
                    ))
                }),
            ));
        }
    }
    out
}

/// What an apply did; items are named only by pseudonym.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApplyReport {
    pub plan_id: String,
    pub already_applied: bool,
    /// Stopped early on request (shutdown): the plan stays `applying` and
    /// the next apply resumes it.
    pub interrupted: bool,
    pub cases_done: u64,
    pub cases_skipped: u64,
    pub cases_failed: u64,
    /// Every case was skipped at the re-check and nothing was deleted: the
    /// exit code is 0 (nothing failed), but nothing was done either.
    #[serde(default)]
    pub all_skipped: bool,
    pub entities_deleted: HashMap<String, u64>,
    pub entities_already_gone: u64,
    pub objects_deleted: u64,
    pub objects_already_gone: u64,
    pub objects_skipped: u64,
    pub objects_failed: u64,
    pub bytes_freed: u64,
    /// reason → count
    pub skipped_reasons: HashMap<String, u64>,
    /// (pseudonymous item, reason)
    pub failures: Vec<(String, String)>,
    pub crm_notes: Vec<String>,
    /// What the deletes left behind in the store (versions, snapshots,
    /// soft-deleted copies), when it keeps such things; set when objects
    /// were deleted. lethe never claims more erasure than it did.
    pub store_note: Option<String>,
    pub audit_head: Option<String>,
    pub seconds: f64,
    /// Of which deleting CRM rows, and deleting objects.
    pub seconds_cases: f64,
    pub seconds_objects: f64,
}

impl ApplyReport {
    pub fn failed(&self) -> bool {
        self.cases_failed > 0 || self.objects_failed > 0
    }
}

/// Progress callback: (phase, done, total).
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

pub async fn apply(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: Option<&str>,
    options: &ApplyOptions,
    progress: Progress<'_>,
) -> Result<ApplyReport, ApplyError> {
    let started = std::time::Instant::now();
    let _lock = state.lock_apply(options.wait_for_lock)?;
    let stored = plan::load(state, plan_id).await?;
    let mut report = ApplyReport {
        plan_id: stored.id.clone(),
        ..Default::default()
    };
    if stored.status == plan::PlanStatus::Applied {
        report.already_applied = true;
        return Ok(report);
    }
    if stored.as_of > jiff::Timestamp::now().as_second() + 60 {
        return Err(ApplyError::FuturePlan {
            id: stored.id,
            as_of: stored.summary.as_of,
        });
    }
    if stored.summary.config_hash != config.hash {
        return Err(ApplyError::ConfigChanged {
            id: stored.id,
            planned: stored.summary.config_hash[..12.min(stored.summary.config_hash.len())]
                .to_string(),
            now: config.hash[..12].to_string(),
        });
    }
    if !stored.brake.is_empty() && !options.allow_mass_delete {
        return Err(ApplyError::MassDelete {
            id: stored.id,
            reasons: stored.brake,
        });
    }
    // This process is a worker on the plan: it claims batches, and on
    // PostgreSQL other workers may share the plan with it.
    let worker = state
        .start_worker(&stored.id, config.apply.worker_timeout)
        .await?;
    let result = work(
        config, crm, store, state, &stored, &worker, options, progress, started,
    )
    .await;
    let finished = worker.finish().await;
    let report = result?;
    finished?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn work(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    stored: &plan::StoredPlan,
    worker: &Worker,
    options: &ApplyOptions,
    progress: Progress<'_>,
    started: std::time::Instant,
) -> Result<ApplyReport, ApplyError> {
    let mut report = ApplyReport {
        plan_id: stored.id.clone(),
        ..Default::default()
    };
    // Items that failed in an earlier run are tried again, once per run:
    // by the first worker of the run, not by each one that joins.
    if worker.live_workers().await? <= 1 {
        journal::reopen_failed(state, &stored.id).await?;
    }
    // A `plan prune` that won the race removed the plan before it was
    // marked: nothing of it may be applied without its journal.
    if !plans::mark_applying(state, &stored.id).await? {
        return Err(StateError::NoSuchPlan(stored.id.clone()).into());
    }

    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let types: Vec<String> = config.entities.iter().map(|e| e.name.clone()).collect();
    let conditions = plan::conditions(config);
    let policies: Vec<CompiledPolicy> =
        evaluate::compile_policies(config, &conditions).map_err(PlanError::Policy)?;
    let parents_of = evaluate::graph::parent_types(config);
    let ctx = Ctx {
        config,
        state,
        worker,
        pseudo: &pseudo,
        types: &types,
        policies: &policies,
        parents_of: &parents_of,
        conditions: &conditions,
        plan_id: &stored.id,
        as_of: stored.as_of,
    };

    let total_cases = journal::case_count(state, &stored.id).await?;
    let mut done_cases = 0u64;
    let batch_cases = options.batch_cases.unwrap_or(config.apply.batch_cases);
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
            a.release(worker).await?;
        }
        let current = match ahead.take() {
            Some(a) => Some(a),
            None if report.interrupted => None,
            None => ctx.claim_cases(batch_cases).await?,
        };
        let Some(current) = current else {
            if let Some(p) = pending.take() {
                done_cases += p.cases.len() as u64;
                ctx.case_journal(p, &mut report).await?;
                progress("cases", done_cases, total_cases);
            }
            // Nothing to claim now. Cases other workers hold must finish
            // (or be taken over) before any object is judged by them.
            if !report.interrupted && worker.open_elsewhere(Items::Cases).await? > 0 {
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
                    ctx.case_journal(p, &mut report).await.map(|()| n)
                }
                None => Ok(0),
            }
        };
        let next = async {
            if claim_ahead {
                ctx.claim_cases(batch_cases).await
            } else {
                Ok(None)
            }
        };
        let (deleted, journaled, next) = tokio::join!(ctx.case_delete(crm, current), journal, next);
        let next = match (next, &deleted, &journaled) {
            // Something failed: what was claimed ahead goes back untouched.
            (Ok(Some(a)), Err(_), _) | (Ok(Some(a)), _, Err(_)) => {
                a.release(worker).await?;
                None
            }
            (next, _, _) => next?,
        };
        done_cases += journaled?;
        pending = Some(deleted?);
        ahead = next;
        progress("cases", done_cases, total_cases);
    }

    report.seconds_cases = started.elapsed().as_secs_f64();
    let total_objects = journal::object_count(state, &stored.id).await?;
    let mut done_objects = 0u64;
    while !report.interrupted {
        if options.stopping() {
            report.interrupted = true;
            break;
        }
        let ids = worker
            .claim(Items::Objects, config.apply.batch_objects)
            .await?;
        if ids.is_empty() {
            if worker.open_elsewhere(Items::Objects).await? > 0 {
                tokio::time::sleep(POLL).await;
                continue;
            }
            break;
        }
        let objects = journal::planned_objects(state, &stored.id, &ids).await?;
        ctx.object_batch(crm, store, &objects, &mut report).await?;
        done_objects += objects.len() as u64;
        progress("objects", done_objects, total_objects);
    }

    report.seconds_objects = started.elapsed().as_secs_f64() - report.seconds_cases;
    if report.interrupted {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if report.objects_deleted > 0 {
        report.store_note = store.erasure_note();
    }
    let head = state.meta_get("audit.head").await?;
    report.audit_head = head
        .as_ref()
        .and_then(|h| h.split(':').nth(1))
        .map(str::to_string);
    // The CRM's after-apply step (a checkpoint, VACUUM or its report) runs
    // before the plan is marked done, by each worker that gets here: doing
    // it twice is harmless, and a plan marked applied is finished.
    let notes = crm
        .after_apply()
        .await
        .unwrap_or_else(|e| vec![format!("after apply: {e}")]);
    // The step runs whatever this run deleted (a crashed run before it may
    // have deleted rows); its notes speak of deleted rows, so they are
    // printed only when there were some.
    if report.entities_deleted.values().sum::<u64>() > 0 {
        report.crm_notes = notes;
    }
    report.all_skipped = report.cases_done == 0
        && report.cases_failed == 0
        && report.cases_skipped > 0
        && report.objects_deleted == 0;
    // The plan's outcome is its journal's, whichever workers wrote it.
    let failed = journal::failed_count(state, &stored.id).await?;
    let status = if failed > 0 || report.failed() {
        PlanStatus::Partial
    } else {
        PlanStatus::Applied
    };
    plans::mark_applied(state, &stored.id, status, report.audit_head.as_deref()).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// How often a worker with nothing to claim looks again while other
/// workers hold the rest.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

type PlannedCase = ClaimedCase;

/// A batch claimed (with intent) and read, not yet sent to the CRM.
struct ClaimedCases {
    cases: Vec<PlannedCase>,
    planned: HashMap<u64, HashSet<(String, String)>>,
}

impl ClaimedCases {
    /// Gives the batch back untouched (see `Worker::release`).
    async fn release(self, worker: &Worker) -> Result<(), ApplyError> {
        let (resumed, fresh): (Vec<&PlannedCase>, Vec<&PlannedCase>) =
            self.cases.iter().partition(|c| c.resumed);
        let ids = |v: Vec<&PlannedCase>| v.iter().map(|c| c.case_id as i64).collect::<Vec<_>>();
        worker
            .release(Items::Cases, &ids(fresh), &ids(resumed))
            .await?;
        Ok(())
    }
}

/// A batch the CRM has been asked to delete, waiting for its journal.
struct CaseBatch {
    cases: Vec<PlannedCase>,
    planned: HashMap<u64, HashSet<(String, String)>>,
    outcome: Result<crate::crm::BatchOutcome, CrmError>,
}

struct Ctx<'a> {
    config: &'a Config,
    state: &'a StateStore,
    worker: &'a Worker,
    pseudo: &'a Pseudonymizer,
    types: &'a [String],
    policies: &'a [CompiledPolicy],
    /// Per type, the graph type of each parent relation (`evaluate::graph`).
    parents_of: &'a [Vec<u16>],
    conditions: &'a [crate::config::KeepRule],
    plan_id: &'a str,
    as_of: i64,
}

impl Ctx<'_> {
    fn type_index(&self, name: &str) -> Option<u16> {
        self.types.iter().position(|t| t == name).map(|i| i as u16)
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
        let input = RecheckInput {
            entities: self.config.entities.clone(),
            conditions: self.conditions.to_vec(),
            cases: requests,
        };
        let decide = |now: &CaseNow| -> Decision {
            let empty = HashSet::new();
            let mine = planned.get(&now.case_id).unwrap_or(&empty);
            self.judge_now(now, mine, &held)
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
        })
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
        } = batch;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.fail_cases(&cases, &e, report).await?;
                return Ok(());
            }
        };
        let ids: Vec<i64> = cases.iter().map(|c| c.case_id as i64).collect();
        let by_id: HashMap<u64, &PlannedCase> = cases.iter().map(|c| (c.case_id, c)).collect();
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
        journal::case_entities_deleted(&mut tx, self.plan_id, &all_deleted).await?;
        journal::cases_done(&mut tx, self.plan_id, &done).await?;
        for (reason, ids) in &skipped {
            journal::cases_skipped(&mut tx, self.plan_id, reason, ids).await?;
        }
        audit::append(&mut tx, records).await?;
        tx.commit().await.map_err(q("journaling"))?;
        Ok(())
    }

    /// The apply-time judgement of one case: the same evaluation as the
    /// plan's, run on the case's rows as they are now, inside the deleting
    /// transaction.
    fn judge_now(
        &self,
        now: &CaseNow,
        planned: &HashSet<(String, String)>,
        held: &HashSet<(String, String)>,
    ) -> Decision {
        if now.entities.is_empty() {
            return Decision::Delete(Vec::new());
        }
        for e in &now.entities {
            if !planned.contains(&(self.types[e.ty as usize].clone(), e.key.canonical())) {
                return Decision::Skip(
                    "changed since plan: the case has an entity the plan does not".into(),
                );
            }
        }
        let mut entities: Vec<&crate::crm::EntityNow> = now.entities.iter().collect();
        entities.sort_by_key(|e| e.ty);
        let mut builder = GraphBuilder::new(self.types.to_vec());
        for e in &entities {
            let parents: Vec<(u16, Option<EntityKey>)> = self.parents_of[e.ty as usize]
                .iter()
                .copied()
                .zip(e.parents.iter().cloned())
                .collect();
            if let Some(id) = builder.add(e.ty, e.key.clone(), e.clock, &parents) {
                let node = builder.node_mut(id);
                node.keep_bits = e.keep_bits;
                node.held = held.contains(&(self.types[e.ty as usize].clone(), e.key.canonical()));
            }
        }
        let graph = builder.finish();
        let eval = evaluate::evaluate(&graph, self.policies, self.as_of);
        let root = graph.resolve_key(now.root_ty, &now.root_key);
        let all_go = (0..graph.len()).all(|i| eval.is_deleted(i as u32));
        match root {
            Some(r) if eval.is_deleted(r) && all_go => {
                Decision::Delete(now.entities.iter().map(|e| (e.ty, e.key.clone())).collect())
            }
            Some(r) => {
                let why = evaluate::cases_containing(&graph, self.policies, r, self.as_of)
                    .into_iter()
                    .find_map(|(_, n, _, v)| match v {
                        Verdict::Kept(k) if n == r => Some(k),
                        _ => None,
                    });
                match why {
                    Some(Kept::Young { .. }) | None => {
                        Decision::Skip("changed since plan: touched, no longer due".into())
                    }
                    Some(k) => Decision::Skip(format!("changed since plan: {}", k.label())),
                }
            }
            None => Decision::Delete(Vec::new()),
        }
    }

    async fn fail_cases(
        &self,
        cases: &[PlannedCase],
        e: &CrmError,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let reason = e.to_string();
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

    async fn object_batch(
        &self,
        crm: &dyn Crm,
        store: &dyn TechnicalStore,
        objects: &[PlannedObject],
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let holds = ObjectHolds::from_holds(&self.state.holds().await?);
        let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
        // The links are the index's: an object rewritten since the index
        // read it may link to something else now. Each delete carries what
        // the index saw, and the store deletes only that object.
        let (links, indexed) = index::links_and_metas_of_keys(self.state, &keys).await?;
        // Every entity these objects link to: its journal status in this plan.
        let mut targets: Vec<(String, String)> = links.values().flatten().cloned().collect();
        targets.sort();
        targets.dedup();
        let statuses = journal::entity_statuses(self.state, self.plan_id, &targets).await?;
        // Linked entities outside the plan were absent at plan time: still?
        let mut outside: HashMap<String, Vec<EntityKey>> = HashMap::new();
        for (ty, key) in targets.iter().filter(|t| !statuses.contains_key(*t)) {
            let entry = outside.entry(ty.clone()).or_default();
            entry.push(EntityKey::Text(key.clone()));
            if let Ok(i) = key.parse::<i64>()
                && i.to_string() == *key
            {
                entry.push(EntityKey::Int(i));
            }
        }
        let mut present: HashSet<(String, String)> = HashSet::new();
        let mut recheck_error = None;
        for (ty, ks) in &outside {
            let Some(et) = self.config.entity(ty) else {
                continue;
            };
            match crm.existing(et, ks).await {
                Ok(found) => present.extend(found.into_iter().map(|k| (ty.clone(), k.canonical()))),
                Err(e) => recheck_error = Some(e.to_string()),
            }
        }

        // Decide per object, then journal intent for the ones going ahead.
        let mut go = Vec::new();
        let mut skips: HashMap<String, Vec<i64>> = HashMap::new();
        let mut retries: Vec<(&PlannedObject, String)> = Vec::new();
        for o in objects {
            // The facts, gathered above; the judgement is plan::fate's.
            let now = links.get(&o.key).map(Vec::as_slice);
            let verdict = crate::plan::fate::recheck_object(
                holds.holds(&o.key),
                now,
                now.is_some_and(|l| index::links_digest(l) == o.links),
                recheck_error.as_deref(),
                |t| match statuses.get(t) {
                    Some(EntityStatus::Deleted | EntityStatus::Gone) => LinkedNow::Gone,
                    Some(EntityStatus::Skipped) => LinkedNow::Kept,
                    Some(EntityStatus::Planned) => LinkedNow::Pending,
                    None if present.contains(t) => LinkedNow::Present,
                    None => LinkedNow::Absent,
                },
            );
            match verdict {
                Recheck::Skip(r) => skips.entry(r.to_string()).or_default().push(o.item),
                Recheck::Retry(r) => retries.push((o, r)),
                Recheck::Go => go.push(o),
            }
        }
        let mut tx = self.state.begin_write().await.map_err(q("journaling"))?;
        // Only what this worker still holds: a batch taken over meanwhile
        // is its new holder's to judge and delete.
        let all: Vec<i64> = objects.iter().map(|o| o.item).collect();
        let mine = self
            .worker
            .still_mine(&mut tx, Items::Objects, &all)
            .await?;
        for items in skips.values_mut() {
            items.retain(|i| mine.contains(i));
        }
        retries.retain(|(o, _)| mine.contains(&o.item));
        go.retain(|o| mine.contains(&o.item));
        for (reason, items) in &skips {
            journal::objects_skipped(&mut tx, self.plan_id, reason, items).await?;
            report.objects_skipped += items.len() as u64;
            *report.skipped_reasons.entry(reason.clone()).or_default() += items.len() as u64;
        }
        for (o, reason) in &retries {
            journal::object_failed(&mut tx, self.plan_id, o.item, reason).await?;
            report.objects_failed += 1;
            report
                .failures
                .push((self.pseudo.show_object(&o.key), reason.clone()));
        }
        let going: Vec<i64> = go.iter().map(|o| o.item).collect();
        journal::objects_executing(&mut tx, self.plan_id, &going).await?;
        tx.commit().await.map_err(q("journaling"))?;

        // The deletes themselves, several at a time; each only if the object
        // is still the one the index read (objects that left the index
        // carry no expectation: the delete finds them gone).
        let expected: HashMap<String, crate::store::Expected> = go
            .iter()
            .filter_map(|o| indexed.get(&o.key).map(|e| (o.key.clone(), e.clone())))
            .collect();
        fail::fail_point!("apply::object-intent", |_| { std::process::abort() });
        let settings = &self.config.apply;
        let results: Vec<(&PlannedObject, Result<DeleteOutcome, StoreError>)> =
            if store.delete_batch_size() > 1 {
                // S3 DeleteObjects; Azure blobs many at a time.
                delete_batched(store, &go, &expected, settings).await
            } else {
                // Boxed as `Send` futures: spelled out, so that an apply can run
                // on a spawned task (the service) without a higher-ranked
                // lifetime tripping the compiler's Send inference.
                type Delete<'f> = std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                                Output = (&'f PlannedObject, Result<DeleteOutcome, StoreError>),
                            > + Send
                            + 'f,
                    >,
                >;
                let deletes: Vec<Delete<'_>> = go
                    .iter()
                    .map(|o| {
                        let o: &PlannedObject = o;
                        let e = expected.get(&o.key);
                        Box::pin(
                            async move { (o, delete_with_retry(store, &o.key, e, settings).await) },
                        ) as Delete<'_>
                    })
                    .collect();
                futures::stream::iter(deletes)
                    .buffer_unordered(settings.parallel_deletes)
                    .collect()
                    .await
            };
        fail::fail_point!("apply::object-deleted", |_| { std::process::abort() });
        let mut tx = self.state.begin_write().await.map_err(q("journaling"))?;
        // Journal what is still ours; an object taken over while its delete
        // was in flight is journaled (and audited) by its new holder.
        let mine = self
            .worker
            .still_mine(&mut tx, Items::Objects, &going)
            .await?;
        let mut records = Vec::new();
        let (mut deleted, mut gone, mut off_index) = (Vec::new(), Vec::new(), Vec::new());
        let mut rewritten = Vec::new();
        for (o, result) in results.into_iter().filter(|(o, _)| mine.contains(&o.item)) {
            let outcome = match result {
                Ok(DeleteOutcome::Deleted) => Ok(true),
                Ok(DeleteOutcome::AlreadyGone) => Ok(o.resumed),
                Ok(DeleteOutcome::Changed) => {
                    rewritten.push(o.item);
                    continue;
                }
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(true) => {
                    deleted.push(o.item);
                    off_index.push(o.key.clone());
                    report.objects_deleted += 1;
                    report.bytes_freed += o.size as u64;
                    let basis = if o.fate == ObjectFate::Orphan {
                        format!(
                            "technical.orphans.retain = {}",
                            self.config.orphans_retain.text()
                        )
                    } else {
                        self.policies
                            .iter()
                            .find(|p| p.name == o.policy)
                            .map(|p| p.basis.clone())
                            .unwrap_or_default()
                    };
                    records.push(NewRecord {
                        plan_id: self.plan_id.to_string(),
                        policy: Some(o.policy.clone()),
                        basis: Some(basis),
                        action: "delete-object",
                        entity_type: None,
                        pseudonym: self.pseudo.object(&o.key),
                        bytes: Some(o.size),
                        author: None,
                        reason_chars: None,
                    });
                }
                Ok(false) => {
                    gone.push(o.item);
                    off_index.push(o.key.clone());
                    report.objects_already_gone += 1;
                }
                Err(reason) => {
                    journal::object_failed(&mut tx, self.plan_id, o.item, &reason).await?;
                    report.objects_failed += 1;
                    report
                        .failures
                        .push((self.pseudo.show_object(&o.key), reason));
                }
            }
        }
        if !rewritten.is_empty() {
            let reason = "changed since plan: rewritten since the index read it (run `lethe index`, then plan again)";
            journal::objects_skipped(&mut tx, self.plan_id, reason, &rewritten).await?;
            report.objects_skipped += rewritten.len() as u64;
            *report
                .skipped_reasons
                .entry(reason.to_string())
                .or_default() += rewritten.len() as u64;
        }
        for (status, items) in [
            (ObjectStatus::Deleted, &deleted),
            (ObjectStatus::Gone, &gone),
        ] {
            journal::objects_settled(&mut tx, self.plan_id, status, items).await?;
        }
        // Gone from the store, so gone from the index.
        journal::unindex_objects(&mut tx, &off_index).await?;
        audit::append(&mut tx, records).await?;
        tx.commit().await.map_err(q("journaling"))?;
        Ok(())
    }
}
