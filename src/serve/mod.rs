//! Service mode (`lethe serve`): the scheduler, the HTTP API and the
//! metrics. It runs the same pipeline as the command line, one run at a
//! time, and records every run in the state store's `sweeps` table.
//!
//! Shutdown (SIGTERM, SIGINT): the listener stops taking connections, an
//! apply in progress finishes its batch in flight and stops, and the next
//! start resumes that plan from its journal.

pub mod api;
pub mod metrics;
pub mod runner;
pub mod schedule;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::state::StateStore;
use runner::Runner;

/// Serves until `shutdown` resolves; returns when the run in progress (if
/// any) has stopped.
pub async fn run(
    config: Config,
    listen: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    metrics::handle();
    let config = Arc::new(config);
    let state = StateStore::open(&config).await?;
    let store = crate::store::open(&config)?;
    if config.serve.tokens.is_empty() {
        tracing::warn!(
            "no [[serve.token]] in the config: every endpoint but /healthz and /readyz answers 401"
        );
    }
    if let Ok(p) = crate::plan::load(&state, None).await {
        metrics::plan(&p.summary);
    }
    let runner = Runner::new(config.clone(), state);
    let addr = listen.unwrap_or_else(|| config.serve.listen.clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    // On stdout, so that a supervisor or a test can read the port.
    println!("lethe serve: listening on http://{local}");
    tracing::info!(address = %local, "listening");

    runner.recover().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = config.schedule.clone().map(|s| {
        let runner = runner.clone();
        tracing::info!(cron = %s.pattern, timezone = %s.timezone, mode = s.mode.as_str(), "schedule on");
        tokio::spawn(async move {
            schedule::run(&s, &schedule::SystemClock, runner.as_ref(), stop_rx, None).await
        })
    });

    let app = Arc::new(api::App {
        runner: runner.clone(),
        store,
        tokens: config.serve.tokens.clone(),
        ui: Default::default(),
    });
    let router = api::router(app, config.serve.body_limit, config.serve.request_timeout);
    let stopping = runner.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: a run in progress stops after its batch in flight");
            stopping.stop.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        })
        .await
        .context("serving HTTP")?;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    runner.idle().await;
    tracing::info!("stopped");
    Ok(())
}
