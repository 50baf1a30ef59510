//! The pipeline, composed once: index → plan → apply → verify, and the
//! sweep that runs them in turn. The command line, the service and the demo
//! all call these; each stage's failure carries the one sentence a user
//! needs (what was left unchanged). Progress has one shape everywhere:
//! `(phase, done, total)`.
//!
//! Invariant: nothing here decides anything; it only orders the stages.

use anyhow::{Context, Result};

use crate::apply::{self, ApplyOptions, ApplyReport};
use crate::config::{Config, LinkRule};
use crate::crm::{self, Crm};
use crate::index::{self, IndexSummary};
use crate::plan::{self, PlanSummary};
use crate::state::StateStore;
use crate::store::TechnicalStore;
use crate::verify::{self, VerifyReport};

/// Told `(phase, done, total)` as a stage goes.
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// A progress sink that ignores everything (the service, tests).
pub fn quiet(_: &str, _: u64, _: u64) {}

/// Whether indexing needs the CRM: only when a link rule reads a CRM column.
pub fn index_needs_crm(config: &Config) -> bool {
    config
        .links
        .iter()
        .any(|r| matches!(r, LinkRule::CrmColumn { .. }))
}

/// Stage 1: (re)builds the link index.
pub async fn index(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    crm: Option<&dyn Crm>,
    progress: Progress<'_>,
) -> Result<IndexSummary> {
    index::run(config, store, state, crm, &|d, t| progress("index", d, t))
        .await
        .context("index failed; the link index is unchanged")
}

/// Stage 1 on its own: opens the store, and the CRM only when a rule
/// reads a CRM column.
pub async fn index_alone(
    config: &Config,
    state: &StateStore,
    progress: Progress<'_>,
) -> Result<IndexSummary> {
    let store = crate::store::open(config)?;
    let crm = if index_needs_crm(config) {
        Some(crm::connect(config).await?)
    } else {
        None
    };
    index(config, store.as_ref(), state, crm.as_deref(), progress).await
}

/// Stages 2 and 3: evaluates the policies and stores the plan.
pub async fn plan(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    as_of: jiff::Timestamp,
    progress: Progress<'_>,
) -> Result<PlanSummary> {
    plan::make_plan(config, crm, state, as_of, &|phase, n| progress(phase, n, n))
        .await
        .context("plan failed; nothing was stored or deleted")
}

/// Stages 4 and 5: applies a stored plan, then verifies what it deleted
/// (not after an interrupted apply, nor when the plan was applied before).
pub async fn apply_and_verify(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: Option<&str>,
    options: &ApplyOptions,
    progress: Progress<'_>,
) -> Result<(ApplyReport, Option<VerifyReport>)> {
    let report = apply::apply(config, crm, store, state, plan_id, options, progress).await?;
    let verified = if report.already_applied || report.interrupted {
        None
    } else {
        Some(
            verify::verify(config, crm, store, state, &report.plan_id)
                .await
                .context("verify after apply failed")?,
        )
    };
    // A subject request's plan, applied in full and verified clean: the
    // request is done (or done with what the law keeps).
    if let Some(v) = &verified {
        let stored = plan::load(state, Some(&report.plan_id)).await?;
        if stored.summary.request.is_some() {
            let clean = !report.failed()
                && !report.interrupted
                && v.residual.iter().all(|r| r.why == "held");
            let kept = report.cases_skipped > 0 || report.objects_skipped > 0;
            crate::request::settle_after_apply(state, &stored.summary, clean, kept)
                .await
                .context("recording the request as done")?;
        }
    }
    Ok((report, verified))
}

/// Stage 5 on its own (`lethe verify`): proves an applied plan again.
pub async fn verify(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
    progress: Progress<'_>,
) -> Result<VerifyReport> {
    verify::verify_with(config, crm, store, state, plan_id, &|d, t| {
        progress("verify", d, t)
    })
    .await
    .context("verify failed; nothing was changed")
}

/// What a sweep did, stage by stage.
#[derive(Debug, serde::Serialize)]
pub struct Swept {
    pub index: IndexSummary,
    pub plan: PlanSummary,
    pub apply: ApplyReport,
    pub verify: Option<VerifyReport>,
}

/// index + plan + apply + verify: the scheduled job.
pub async fn sweep(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    as_of: jiff::Timestamp,
    options: &ApplyOptions,
    progress: Progress<'_>,
) -> Result<Swept> {
    let indexed = index(config, store, state, Some(crm), progress).await?;
    let planned = plan(config, crm, state, as_of, progress).await?;
    let (applied, verified) = apply_and_verify(
        config,
        crm,
        store,
        state,
        Some(&planned.id),
        options,
        progress,
    )
    .await?;
    Ok(Swept {
        index: indexed,
        plan: planned,
        apply: applied,
        verify: verified,
    })
}

/// Now, to the second: plans and reports show instants without fractions.
pub fn now_seconds() -> jiff::Timestamp {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or_else(|_| jiff::Timestamp::now())
}
