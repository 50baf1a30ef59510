//! The binary's edge: parses arguments, runs a command, renders its result
//! as text or JSON, and maps the outcome to the documented exit codes.

pub mod args;
mod audit;
mod demo;
mod hold;
mod plan_show;
pub(crate) mod render;
mod request;
mod request_export;

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::Parser;

use crate::apply::{self, ApplyOptions};
use crate::audit::pseudonym::Pseudonymizer;
use crate::config::{self, Config, ConfigError};
use crate::error::error_chain;
use crate::evaluate;
use crate::model::EntityRef;
use crate::state::StateStore;
use crate::{crm, index, pipeline, plan, store, verify};
use args::{AuditCommand, Cli, Command, Format, PlanCommand};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_PARTIAL: i32 = 3;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    // Failpoints (cargo feature `failpoints`) read FAILPOINTS from the
    // environment; without the feature this does nothing.
    let _failpoints = fail::FailScenario::setup();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lethe: cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let format = cli.format;
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let code = if e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some()) {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            };
            let message = error_chain(&e);
            eprintln!("lethe: {message}");
            // A script that asked for JSON gets one JSON document on stdout
            // even when the command failed.
            if format == Format::Json && !WROTE.load(std::sync::atomic::Ordering::Relaxed) {
                out(&json(
                    &serde_json::json!({ "error": message, "exit": code }),
                ));
            }
            code
        }
    }
}

/// Set once anything was written to stdout (a JSON error document then
/// would break the document already begun).
static WROTE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes to stdout; a closed pipe (`lethe … | head`) is not an error.
pub(crate) fn out(text: &str) {
    WROTE.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(EXIT_OK);
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
}

/// A progress bar on a terminal in text mode; nothing otherwise.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(crate) fn new(format: Format) -> Progress {
        let on = format == Format::Text && std::io::stderr().is_terminal();
        Progress {
            bar: on.then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {prefix:>10} {pos}/{len} {wide_bar} {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
                bar
            }),
        }
    }

    pub(crate) fn set(&self, phase: &str, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_prefix(phase.to_string());
            b.set_length(total.max(done));
            b.set_position(done);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn load_config(path: &Path) -> Result<Config> {
    let mut c = config::load(path)?;
    c.file = path.to_path_buf();
    Ok(c)
}

async fn run(cli: Cli) -> Result<i32> {
    let format = cli.format;
    if matches!(format, Format::Jsonl | Format::Csv)
        && !matches!(cli.command, Command::Audit(AuditCommand::Export))
    {
        return Err(usage(
            "--format",
            "jsonl and csv are for `audit export`; use text or json".into(),
        ));
    }
    match cli.command {
        Command::Demo(a) => demo::run(&a, format).await,
        Command::Check(a) => check(&cli.config, a.no_environment, format).await,
        Command::Index => {
            let config = load_config(&cli.config)?;
            let summary = run_index(&config, format).await?;
            out(&match format {
                Format::Text => render::index(&summary),
                _ => json(&summary),
            });
            Ok(EXIT_OK)
        }
        Command::Plan(a) => plan_cmd(&cli.config, a, format).await,
        Command::Apply(a) => apply_cmd(&cli.config, a, format).await,
        Command::Sweep(a) => sweep_cmd(&cli.config, a, format).await,
        Command::Explain(a) => explain(&cli.config, &a.entity, a.as_of, format).await,
        Command::Hold(h) => hold::hold(&cli.config, h, format).await,
        Command::Audit(a) => audit::audit_cmd(&cli.config, a, format).await,
        Command::Serve(a) => {
            init_logging(a.log_format);
            let config = load_config(&cli.config)?;
            crate::serve::run(config, a.listen, shutdown_signal()).await?;
            Ok(EXIT_OK)
        }
        Command::Request(c) => request::request_cmd(&cli.config, c, format).await,
        Command::Suppression(c) => request::suppression_cmd(&cli.config, c, format).await,
        Command::Verify(a) => verify_cmd(&cli.config, a, format).await,
        Command::Report(a) => report_cmd(&cli.config, a, format).await,
    }
}

/// `lethe plan` (and `plan --list`, `plan show`, `plan prune`).
async fn plan_cmd(path: &Path, a: args::PlanArgs, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    match &a.action {
        Some(PlanCommand::Show(s)) => {
            return plan_show::plan_show(&config, &state, s, format).await;
        }
        Some(PlanCommand::Prune(p)) => return plan_show::plan_prune(&state, p, format).await,
        None => {}
    }
    if a.list {
        let plans = plan::list(&state).await?;
        out(&match format {
            Format::Text => render::plan_list(&plans),
            _ => json(&plans),
        });
        return Ok(EXIT_OK);
    }
    let crm = crm::connect(&config).await?;
    // A config that does not fit the CRM is the first thing to say.
    plan::require_fit(&config, crm.as_ref())
        .await
        .context("plan failed; nothing was stored or deleted")?;
    if !a.allow_unindexed {
        let store = store::open(&config)?;
        if let Some(why) = plan::stale_index(&config, &state, store.as_ref()).await? {
            return Err(usage(
                "plan",
                format!("{why}; or pass --allow-unindexed to plan on it anyway"),
            ));
        }
    }
    let summary = make_plan(&config, crm.as_ref(), &state, a.as_of, format).await?;
    out(&match format {
        Format::Text => render::plan(&summary, true),
        _ => json(&summary),
    });
    Ok(EXIT_OK)
}

/// What `apply` and `sweep` take from their flags; both stop on a signal.
fn apply_options(allow_mass_delete: bool, wait: bool, batch_size: Option<u64>) -> ApplyOptions {
    ApplyOptions {
        allow_mass_delete,
        wait_for_lock: wait,
        batch_cases: batch_size.map(|n| n as usize),
        stop: Some(stop_on_signal()),
    }
}

/// `lethe apply`: the plan, then verify.
async fn apply_cmd(path: &Path, a: args::ApplyArgs, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    let crm = crm::connect(&config).await?;
    let store = store::open(&config)?;
    let options = apply_options(a.allow_mass_delete, a.wait, a.batch_size);
    let (report, verified) = run_apply(
        &config,
        crm.as_ref(),
        store.as_ref(),
        &state,
        a.plan_id.as_deref(),
        &options,
        format,
    )
    .await?;
    out(&match format {
        Format::Text => render::apply(&report, verified.as_ref()),
        _ => json(&serde_json::json!({ "apply": report, "verify": verified })),
    });
    Ok(apply_exit(&report, verified.as_ref()))
}

/// `lethe sweep`: index, plan, apply and verify in one go.
async fn sweep_cmd(path: &Path, a: args::SweepArgs, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    let crm = crm::connect(&config).await?;
    let store = store::open(&config)?;
    let options = apply_options(a.allow_mass_delete, a.wait, a.batch_size);
    let progress = Progress::new(format);
    let swept = pipeline::sweep(
        &config,
        crm.as_ref(),
        store.as_ref(),
        &state,
        a.as_of.unwrap_or_else(pipeline::now_seconds),
        &options,
        &|p, d, t| progress.set(p, d, t),
    )
    .await?;
    progress.finish();
    out(&match format {
        Format::Text => format!(
            "{}\n{}\n{}",
            render::index(&swept.index),
            render::plan(&swept.plan, false),
            render::apply(&swept.apply, swept.verify.as_ref())
        ),
        _ => json(&swept),
    });
    Ok(apply_exit(&swept.apply, swept.verify.as_ref()))
}

/// `lethe verify`.
async fn verify_cmd(path: &Path, a: args::VerifyArgs, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    let crm = crm::connect(&config).await?;
    let store = store::open(&config)?;
    let id = match a.plan_id {
        Some(id) => id,
        None => plan::load(&state, None).await?.id,
    };
    let progress = Progress::new(format);
    let v = pipeline::verify(
        &config,
        crm.as_ref(),
        store.as_ref(),
        &state,
        &id,
        &|p, d, t| progress.set(p, d, t),
    )
    .await?;
    progress.finish();
    out(&match format {
        Format::Text => render::verify(&id, &v),
        _ => json(&serde_json::json!({ "plan": id, "verify": v })),
    });
    Ok(if v.ok() { EXIT_OK } else { EXIT_PARTIAL })
}

/// `lethe report`, and with --html the page.
async fn report_cmd(path: &Path, a: args::ReportArgs, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    let r = crate::report::build(&config, &state, a.plan_id.as_deref()).await?;
    if let Some(path) = &a.html {
        std::fs::write(path, crate::report::html(&r))
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    out(&match format {
        Format::Text => {
            let mut t = crate::report::text(&r);
            if let Some(path) = &a.html {
                t.push_str(&format!("  HTML report written to {}\n", path.display()));
            }
            t
        }
        _ => json(&r),
    });
    Ok(EXIT_OK)
}

fn apply_exit(report: &apply::ApplyReport, verified: Option<&verify::VerifyReport>) -> i32 {
    if report.interrupted {
        EXIT_FAILED
    } else if report.failed() || verified.is_some_and(|v| !v.ok()) {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    }
}

/// The stages through the library pipeline, with a progress bar on a
/// terminal (text mode) and nothing otherwise.
pub(crate) async fn run_index(config: &Config, format: Format) -> Result<index::IndexSummary> {
    let state = StateStore::open(config).await?;
    let progress = Progress::new(format);
    let r = pipeline::index_alone(config, &state, &|p, d, t| progress.set(p, d, t)).await?;
    progress.finish();
    Ok(r)
}

pub(crate) async fn make_plan(
    config: &Config,
    crm: &dyn crm::Crm,
    state: &StateStore,
    as_of: Option<jiff::Timestamp>,
    format: Format,
) -> Result<plan::PlanSummary> {
    let progress = Progress::new(format);
    let as_of = as_of.unwrap_or_else(pipeline::now_seconds);
    let s = pipeline::plan(config, crm, state, as_of, &|p, d, t| progress.set(p, d, t)).await?;
    progress.finish();
    Ok(s)
}

pub(crate) async fn run_apply(
    config: &Config,
    crm: &dyn crm::Crm,
    store: &dyn store::TechnicalStore,
    state: &StateStore,
    plan_id: Option<&str>,
    options: &ApplyOptions,
    format: Format,
) -> Result<(apply::ApplyReport, Option<verify::VerifyReport>)> {
    let progress = Progress::new(format);
    let r = pipeline::apply_and_verify(config, crm, store, state, plan_id, options, &|p, d, t| {
        progress.set(p, d, t)
    })
    .await?;
    progress.finish();
    Ok(r)
}

async fn check(path: &Path, no_environment: bool, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let mut lines = vec![format!(
        "config {}: well-formed ({}, {}, {})",
        path.display(),
        render::count(config.entities.len() as u64, "entity type", "entity types"),
        render::count(config.links.len() as u64, "link rule", "link rules"),
        render::count(config.policies.len() as u64, "policy", "policies"),
    )];
    // A JSON or XML rule without `record` cannot redact a shared file.
    lines.extend(config.links.iter().filter_map(|l| l.whole_file_note()));
    let mut ok = true;
    let mut unfit = None;
    if !no_environment {
        match crm::connect(&config).await {
            Ok(c) => match crm::fit::fit(&config, c.as_ref()).await {
                Ok(fit) if fit.problems.is_empty() => {
                    let columns: usize = config
                        .entities
                        .iter()
                        .map(|e| 1 + e.clock.len() + e.parents.len() + e.subject.len())
                        .sum();
                    let conditions = plan::conditions(&config).len();
                    lines.push(format!(
                        "crm ({}): every configured table and column is in the catalogue ({}, {}), {} compile{}",
                        c.kind(),
                        render::count(config.entities.len() as u64, "table", "tables"),
                        render::count(columns as u64, "column", "columns"),
                        render::count(conditions as u64, "keep condition", "keep conditions"),
                        if conditions == 1 { "s" } else { "" }
                    ));
                }
                Ok(fit) => {
                    lines.push(format!(
                        "crm ({}): the config does not fit the CRM ({})",
                        c.kind(),
                        render::count(fit.problems.len() as u64, "problem", "problems")
                    ));
                    unfit = Some(config.invalid(fit.problems));
                }
                Err(e) => {
                    ok = false;
                    lines.push(format!("crm: {e}"));
                }
            },
            Err(e) => {
                ok = false;
                lines.push(format!("crm: {e}"));
            }
        }
        match store::open(&config) {
            Ok(s) => match s.check().await {
                Ok(notes) => lines.extend(notes),
                Err(e) => {
                    ok = false;
                    lines.push(format!("technical store: {e}"));
                }
            },
            Err(e) => {
                ok = false;
                lines.push(format!("technical store: {e}"));
            }
        }
        match StateStore::open(&config).await {
            Ok(s) => {
                let holds = s.holds().await?.len();
                let kind = match s.dialect() {
                    crate::state::Dialect::Sqlite => "sqlite; one apply at a time",
                    crate::state::Dialect::Postgres => {
                        "postgres; several apply workers may share a plan"
                    }
                };
                let workers = s.live_workers(config.apply.worker_timeout).await?;
                lines.push(format!(
                    "state store ({kind}): reachable, {holds} holds, {workers} apply workers running"
                ));
            }
            Err(e) => {
                ok = false;
                lines.push(format!("state store: {e}"));
            }
        }
    }
    if let Some(e) = unfit {
        // Every mismatch at once, as a config error (exit 2), after what
        // the other checks found.
        if format == Format::Text {
            out(&(lines.join("\n") + "\n"));
        }
        return Err(e.into());
    }
    out(&match format {
        Format::Text => lines.join("\n") + "\n",
        _ => json(&serde_json::json!({ "ok": ok, "checks": lines })),
    });
    Ok(if ok { EXIT_OK } else { EXIT_FAILED })
}

async fn explain(
    path: &Path,
    entity: &str,
    as_of: Option<jiff::Timestamp>,
    format: Format,
) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    let crm = crm::connect(&config).await?;
    let kinds = crm::refs::KeyKinds::read(&config, crm.as_ref()).await?;
    let (r, key) = parse_entity_ref(&config, &kinds, entity).map_err(|m| usage("ENTITY", m))?;
    let entity = &r.to_string();
    // Only the entity's component of the CRM graph: the same answer as the
    // whole graph, in the time of a few indexed look-ups.
    let found = plan::load_component(&config, crm.as_ref(), &state, &r.entity_type, &key).await?;
    let as_of = as_of.unwrap_or_else(pipeline::now_seconds).as_second();
    let Some((world, id)) = found else {
        out(&match format {
            Format::Text => format!(
                "{entity}: not in the CRM{} (nothing to explain; linked objects are orphans)\n",
                hold::erased_note(&config, &state, entity).await?
            ),
            _ => json(&serde_json::json!({
                "entity": entity,
                "exists": false,
                "erased": !hold::erased_note(&config, &state, entity).await?.is_empty(),
            })),
        });
        return Ok(EXIT_OK);
    };
    let cases = evaluate::cases_containing(&world.graph, &world.policies, id, as_of);
    let eval = evaluate::evaluate(&world.graph, &world.policies, as_of);
    out(&match format {
        Format::Text => render::explain(
            entity,
            &Pseudonymizer::new(config.audit_key.clone()),
            &world,
            id,
            &cases,
            eval.is_deleted(id),
            as_of,
        ),
        _ => {
            let mut doc = render::explain_json(entity, &world, &cases, eval.is_deleted(id));
            let pair = (r.entity_type.clone(), r.key.clone());
            let entries = crate::state::index::entries_linking(
                &state,
                std::slice::from_ref(&pair),
                &kinds.uuid_types(),
            )
            .await?;
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            plan::explain::add_objects(&mut doc, &pair, &entries, &pseudo);
            json(&doc)
        }
    });
    Ok(EXIT_OK)
}

/// An entity ref whose type the config knows; the message says what to write.
/// Reads a ref as the user typed it (see `crm::refs`): a canonical ref and
/// its typed key, or a message saying why it names no row.
pub fn parse_entity_ref(
    config: &Config,
    kinds: &crm::refs::KeyKinds,
    text: &str,
) -> std::result::Result<(EntityRef, crate::model::EntityKey), String> {
    kinds.parse(config, text)
}

fn usage(key: &str, message: String) -> anyhow::Error {
    anyhow::Error::new(ConfigError::Usage {
        key: key.into(),
        message,
    })
}

/// A flag set by the first SIGINT or SIGTERM: apply finishes the batch in
/// flight and stops, and the journal resumes the plan at the next apply. A
/// second signal ends the process at once (which is crash-safe too).
pub(crate) fn stop_on_signal() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("lethe: stopping after the batch in flight (a second signal stops at once)");
        set.store(true, std::sync::atomic::Ordering::SeqCst);
        shutdown_signal().await;
        std::process::exit(130);
    });
    flag
}

/// Resolves at the next SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Log lines on stderr, filtered by RUST_LOG (default: info).
fn init_logging(format: args::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(log_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        args::LogFormat::Json => builder.json().try_init(),
        args::LogFormat::Text => builder.try_init(),
    };
}

/// Colour in log lines only on a terminal, and never when NO_COLOR is set
/// to anything but the empty string (no-color.org).
fn log_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod log_tests {
    use super::log_colour;

    #[test]
    fn log_lines_are_coloured_only_on_a_terminal_without_no_color() {
        // Regression: `lethe serve 2>log` wrote ANSI escapes into the file.
        assert!(!log_colour(false, None));
        assert!(log_colour(true, None));
        assert!(!log_colour(true, Some("1".as_ref())));
        assert!(log_colour(true, Some("".as_ref())));
    }
}
