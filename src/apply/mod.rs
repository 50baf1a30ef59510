//! Stage 4, apply: executes a stored plan. Cases first, in batches: each
//! batch is journaled `executing`, then one CRM transaction re-checks every
//! case on its current rows and deletes the approved ones children-first,
//! then the journal and the audit records are written in one state
//! transaction (`cases.rs`). Then the objects whose every linked case was
//! deleted, re-checked and deleted the same way (`objects.rs`, the store's
//! calls and their retries in `delete.rs`). The judgements are pure
//! (`judge.rs`); every statement on the state store is `state::journal`'s.
//! This file: the checks before a plan may run, the run's report, and the
//! plan's outcome.
//!
//! Architecture invariant: only `apply` deletes, and only items of a
//! persisted plan. A crash anywhere is resumed from the journal: an item
//! journaled `executing` and found gone was deleted by us and is audited.

mod cases;
mod delete;
pub mod erasure;
mod judge;
mod objects;
pub mod redact;
pub mod redaction;

use std::collections::HashMap;

use serde::Serialize;

use crate::audit::pseudonym::Pseudonymizer;
use crate::config::Config;
use crate::crm::Crm;
use crate::evaluate::{self, CompiledPolicy};
use crate::plan::{self, PlanError};
use crate::state::journal;
use crate::state::plans::{self, PlanStatus};
use crate::state::workers::Worker;
use crate::state::{StateError, StateStore};
use crate::store::TechnicalStore;

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
    /// Shared objects rewritten without the deleted entities' records,
    /// the records removed, and the bytes that went with them.
    #[serde(default)]
    pub objects_redacted: u64,
    #[serde(default)]
    pub records_removed: u64,
    #[serde(default)]
    pub bytes_redacted: u64,
    /// Identifiers of deleted rows kept as keyed hashes for verify, and
    /// values of `identifiers` columns that were neither an e-mail address
    /// nor a phone number (not searchable).
    #[serde(default)]
    pub identifiers_recorded: u64,
    #[serde(default)]
    pub identifiers_unsearchable: u64,
    /// Identifiers of deleted rows that an entity still in the CRM carries
    /// (the same person kept under a contract, a shared phone): not erased,
    /// so not on the suppression list and not searched for by verify.
    #[serde(default)]
    pub identifiers_still_held: u64,
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
    state.widen_writer_cache().await?;
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
    // A subject request's plan is re-checked with the request policies it
    // was made with (no retention period; every keep_if).
    let request_policies;
    let policies: &[CompiledPolicy] = if stored.summary.request.is_some() {
        request_policies = crate::config::policy::request_policies(
            &config.type_names(),
            &config.compiled_policies,
        );
        &request_policies
    } else {
        &config.compiled_policies
    };
    let parents_of = evaluate::graph::parent_types(config);
    // Payload rows in a CRM table that reference entities by a foreign
    // key go in the case's transaction, before those entities.
    let payloads = match store.payload_table() {
        Some(table) => {
            let columns = table.foreign_key_columns(&config.entities).await;
            (!columns.is_empty()).then(|| cases::PayloadFks {
                table,
                input: table.payload_input(&columns, &config.entities),
            })
        }
        None => None,
    };
    let ctx = Ctx {
        config,
        state,
        worker,
        pseudo: &pseudo,
        types: &types,
        policies,
        parents_of: &parents_of,
        conditions: &conditions,
        plan_id: &stored.id,
        as_of: stored.as_of,
        fingerprint: crate::verify::residual::Fingerprint::new(&config.audit_key),
        payloads,
    };

    ctx.run_cases(crm, options, progress, &mut report).await?;
    // The identifiers the journal steps staged go where verify and the
    // suppression list read them, sorted by hash (`state::erased`).
    crate::state::erased::flush(state, Some(&stored.id)).await?;
    report.seconds_cases = started.elapsed().as_secs_f64();
    ctx.run_objects(crm, store, options, progress, &mut report)
        .await?;

    report.seconds_objects = started.elapsed().as_secs_f64() - report.seconds_cases;
    if report.interrupted {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    ctx.finish(crm, store, &mut report).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

impl Ctx<'_> {
    /// After the last batch: the audit head, the CRM's after-apply step,
    /// and the plan marked with its outcome.
    async fn finish(
        &self,
        crm: &dyn Crm,
        store: &dyn TechnicalStore,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        if report.objects_deleted > 0 {
            report.store_note = store.erasure_note();
        }
        let head = self.state.meta_get("audit.head").await?;
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
        // An identifier that an entity still in the CRM carries was not
        // erased: off the suppression list and out of verify's search.
        report.identifiers_still_held =
            crate::suppression::release_retained(self.config, crm, self.state, self.plan_id)
                .await
                .map_err(PlanError::from)?;
        // The plan's outcome is its journal's, whichever workers wrote it.
        let failed = journal::failed_count(self.state, self.plan_id).await?;
        let status = if failed > 0 || report.failed() {
            PlanStatus::Partial
        } else {
            PlanStatus::Applied
        };
        plans::mark_applied(
            self.state,
            self.plan_id,
            status,
            report.audit_head.as_deref(),
        )
        .await?;
        Ok(())
    }
}

/// How often a worker with nothing to claim looks again while other
/// workers hold the rest.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

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
    /// Keyed hashes of the identifiers of deleted rows.
    fingerprint: crate::verify::residual::Fingerprint,
    /// The payload table's foreign keys to entity tables, when the store
    /// is a CRM table that has any.
    payloads: Option<cases::PayloadFks<'a>>,
}

impl Ctx<'_> {
    fn type_index(&self, name: &str) -> Option<u16> {
        self.types.iter().position(|t| t == name).map(|i| i as u16)
    }

    /// What a case is judged by at the re-check.
    fn judge(&self) -> judge::Judge<'_> {
        judge::Judge {
            types: self.types,
            parents_of: self.parents_of,
            policies: self.policies,
            as_of: self.as_of,
        }
    }
}
