//! Runs the pipeline for the service: scheduled ticks, runs triggered over
//! the API, approved plans, and a plan left half-applied by a stop. One run
//! at a time in this process (a lock), one apply at a time across processes
//! (the state store's apply lock). Every run is a row in `sweeps`, with
//! counts only: never keys or payload content.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use async_trait::async_trait;
use jiff::Timestamp;

use super::metrics;
use super::schedule::{Job, Mode, Trigger};
use crate::apply::ApplyOptions;
use crate::config::Config;
use crate::plan;
pub use crate::state::runs::SweepRow;
use crate::state::{StateError, StateStore, runs};
use crate::{crm, pipeline, store};

/// What a run does.
#[derive(Clone, Debug)]
pub enum Work {
    /// index + plan (+ apply when `mode` is sweep).
    Sweep {
        mode: Mode,
        as_of: Option<Timestamp>,
    },
    /// Apply a stored plan (an approval, or resuming a stopped apply).
    Apply {
        plan_id: String,
        allow_mass_delete: bool,
    },
}

impl Work {
    fn mode(&self) -> &'static str {
        match self {
            Work::Sweep { mode, .. } => mode.as_str(),
            Work::Apply { .. } => "apply",
        }
    }
}

/// A run is already in progress.
#[derive(Debug, thiserror::Error)]
#[error("a run is in progress; try again when it has finished (GET /v1/sweeps shows it)")]
pub struct Busy;

/// How a run ended.
#[derive(Debug)]
struct Outcome {
    status: &'static str,
    plan_id: Option<String>,
    summary: serde_json::Value,
}

pub struct Runner {
    pub config: Arc<Config>,
    pub state: StateStore,
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Set on shutdown: an apply in progress stops after its batch in flight.
    pub stop: Arc<AtomicBool>,
    next: std::sync::Mutex<Option<Timestamp>>,
    /// Which key columns hold integers, read once from the CRM's catalogue.
    key_kinds: tokio::sync::OnceCell<crm::refs::KeyKinds>,
}

pub fn now_text() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .unwrap_or_else(|_| Timestamp::now())
        .to_string()
}

impl Runner {
    pub fn new(config: Arc<Config>, state: StateStore) -> Arc<Runner> {
        Arc::new(Runner {
            config,
            state,
            busy: Arc::new(tokio::sync::Mutex::new(())),
            stop: Arc::new(AtomicBool::new(false)),
            key_kinds: tokio::sync::OnceCell::new(),
            next: std::sync::Mutex::new(None),
        })
    }

    /// At start: runs cut short by a crash are marked interrupted, and a plan
    /// whose apply was stopped is resumed (its journal knows where it was).
    pub async fn recover(self: &Arc<Self>) -> Result<Option<i64>> {
        runs::interrupt_running(&self.state, &now_text()).await?;
        let applying = crate::state::plans::latest_applying(&self.state).await?;
        match applying {
            Some(plan_id) => {
                tracing::info!(plan = %plan_id, "resuming a plan whose apply was stopped");
                let work = Work::Apply {
                    plan_id,
                    allow_mass_delete: false,
                };
                Ok(self.start(work, "resume").await.ok())
            }
            None => Ok(None),
        }
    }

    /// Starts a run in the background; `Busy` when one is in progress.
    pub async fn start(self: &Arc<Self>, work: Work, trigger: &'static str) -> Result<i64> {
        let guard = self.busy.clone().try_lock_owned().map_err(|_| Busy)?;
        let id = self.record_start(&work, trigger, None).await?;
        let me = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _ = me.run_recorded(id, &work).await;
        });
        Ok(id)
    }

    /// Runs to the end, waiting for a run in progress first.
    pub async fn run_now(
        &self,
        work: Work,
        trigger: &'static str,
        tick: Option<Timestamp>,
    ) -> Result<(), String> {
        let _guard = self.busy.lock().await;
        let id = self
            .record_start(&work, trigger, tick)
            .await
            .map_err(|e| format!("{e:#}"))?;
        self.run_recorded(id, &work).await
    }

    /// Waits until no run is in progress (for shutdown).
    pub async fn idle(&self) {
        let _guard = self.busy.lock().await;
    }

    pub fn busy(&self) -> bool {
        self.busy.try_lock().is_err()
    }

    pub fn next_run(&self) -> Option<Timestamp> {
        self.next.lock().map(|n| *n).unwrap_or(None)
    }

    async fn record_start(
        &self,
        work: &Work,
        trigger: &'static str,
        tick: Option<Timestamp>,
    ) -> Result<i64, StateError> {
        let plan_id = match work {
            Work::Apply { plan_id, .. } => Some(plan_id.clone()),
            Work::Sweep { .. } => None,
        };
        runs::start(
            &self.state,
            trigger,
            work.mode(),
            tick.map(|t| t.to_string()),
            &now_text(),
            plan_id,
        )
        .await
    }

    /// Runs `work` as run `id` and records how it ended.
    async fn run_recorded(&self, id: i64, work: &Work) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mode = work.mode();
        tracing::info!(run = id, mode, "run started");
        let result = self.pipeline(work).await;
        let seconds = started.elapsed().as_secs_f64();
        let (status, plan_id, error, summary) = match &result {
            Ok(o) => (
                o.status,
                o.plan_id.clone(),
                None,
                Some(o.summary.to_string()),
            ),
            Err(e) => ("failed", None, Some(format!("{e:#}")), None),
        };
        metrics::run_finished(mode, status, seconds);
        match &error {
            None => tracing::info!(run = id, mode, status, seconds, "run finished"),
            Some(e) => tracing::error!(run = id, mode, error = %e, seconds, "run failed"),
        }
        let recorded = runs::finish(
            &self.state,
            id,
            status,
            &now_text(),
            plan_id,
            error.as_deref(),
            summary,
        )
        .await;
        if let Err(e) = recorded {
            tracing::error!(run = id, error = %e, "could not record the end of the run");
        }
        self.prune_plans().await;
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn pipeline(&self, work: &Work) -> Result<Outcome> {
        let config = self.config.as_ref();
        let crm = crm::connect(config).await?;
        let store = store::open(config)?;
        let (plan_id, allow_mass_delete, mut summary) = match work {
            Work::Sweep { mode, as_of } => {
                let indexed = pipeline::index(
                    config,
                    store.as_ref(),
                    &self.state,
                    Some(crm.as_ref()),
                    &pipeline::quiet,
                )
                .await?;
                metrics::index(&indexed);
                let as_of = as_of.unwrap_or_else(|| {
                    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::now())
                });
                let planned =
                    pipeline::plan(config, crm.as_ref(), &self.state, as_of, &pipeline::quiet)
                        .await?;
                metrics::plan(&planned);
                let summary = serde_json::json!({ "index": indexed, "plan": planned });
                if *mode == Mode::Plan {
                    return Ok(Outcome {
                        status: "awaiting-approval",
                        plan_id: Some(planned.id),
                        summary,
                    });
                }
                (planned.id, false, summary)
            }
            Work::Apply {
                plan_id,
                allow_mass_delete,
            } => (plan_id.clone(), *allow_mass_delete, serde_json::json!({})),
        };
        let options = ApplyOptions {
            allow_mass_delete,
            wait_for_lock: false,
            batch_cases: None,
            stop: Some(self.stop.clone()),
        };
        let (report, verified) = pipeline::apply_and_verify(
            config,
            crm.as_ref(),
            store.as_ref(),
            &self.state,
            Some(&plan_id),
            &options,
            &pipeline::quiet,
        )
        .await?;
        metrics::apply(&report);
        if let Some(v) = &verified {
            metrics::verify(v);
        }
        let status = if report.interrupted {
            "interrupted"
        } else if report.failed() || verified.as_ref().is_some_and(|v| !v.ok()) {
            "partial"
        } else {
            "done"
        };
        summary["apply"] = serde_json::to_value(&report)?;
        summary["verify"] = serde_json::to_value(&verified)?;
        Ok(Outcome {
            status,
            plan_id: Some(plan_id),
            summary,
        })
    }

    /// `[state] plan_retention`: plans older than it go after each run (a
    /// failure is logged; the run's own outcome stands).
    pub async fn prune_plans(&self) {
        let Some(retention) = &self.config.plan_retention else {
            return;
        };
        let cutoff = Timestamp::from_second(retention.subtract_from(Timestamp::now().as_second()))
            .unwrap_or(Timestamp::MIN);
        match plan::show::prune(&self.state, plan::show::PruneBy::Since(cutoff)).await {
            Ok(r) if !r.pruned.is_empty() || !r.in_progress.is_empty() => tracing::info!(
                pruned = r.pruned.len(),
                kept_in_progress = r.in_progress.len(),
                retention = retention.text(),
                "old plans pruned"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "pruning old plans failed"),
        }
    }

    /// How refs of each type are read (see `crm::refs`).
    pub async fn key_kinds(&self) -> Result<crm::refs::KeyKinds> {
        let kinds = self
            .key_kinds
            .get_or_try_init(|| async {
                let crm = crm::connect(&self.config).await?;
                crm::refs::KeyKinds::read(&self.config, crm.as_ref())
                    .await
                    .context("reading the key columns' types")
            })
            .await?;
        Ok(kinds.clone())
    }

    /// The runs, newest first.
    pub async fn sweeps(&self, limit: i64) -> Result<Vec<SweepRow>, StateError> {
        runs::list(&self.state, limit).await
    }

    pub async fn sweep(&self, id: i64) -> Result<Option<SweepRow>, StateError> {
        runs::get(&self.state, id).await
    }
}

/// The scheduler's job is the configured sweep.
#[async_trait]
impl Job for Runner {
    async fn run(&self, tick: Timestamp, trigger: Trigger) -> Result<(), String> {
        let mode = self
            .config
            .schedule
            .as_ref()
            .map(|s| s.mode)
            .unwrap_or(Mode::Sweep);
        self.run_now(
            Work::Sweep { mode, as_of: None },
            trigger.as_str(),
            Some(tick),
        )
        .await
    }

    async fn last_tick(&self) -> Option<Timestamp> {
        let v = self.state.meta_get("schedule.last_tick").await.ok()??;
        v.parse().ok()
    }

    async fn set_last_tick(&self, tick: Timestamp) {
        if let Err(e) = self
            .state
            .meta_set("schedule.last_tick", &tick.to_string())
            .await
        {
            tracing::error!(error = %e, "could not record the schedule's last tick");
        }
    }

    fn set_next(&self, next: Option<Timestamp>) {
        if let Ok(mut n) = self.next.lock() {
            *n = next;
        }
        metrics::next_run(next);
    }
}

impl Runner {
    /// Whether the stop flag is set.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
