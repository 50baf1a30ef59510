//! The binary's edge: parses arguments, runs a command, renders its result
//! as text or JSON, and maps the outcome to the documented exit codes.

pub mod args;
mod demo;
pub(crate) mod render;

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::apply::{self, ApplyOptions};
use crate::audit::{self, pseudonym::Pseudonymizer};
use crate::config::{self, Config, ConfigError};
use crate::error::error_chain;
use crate::evaluate;
use crate::model::EntityRef;
use crate::state::{HoldKind, StateStore};
use crate::{crm, holds, index, pipeline, plan, store, verify};
use args::{AuditCommand, Cli, Command, Format, HoldCommand, PlanCommand};

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
        Command::Plan(a) => {
            let config = load_config(&cli.config)?;
            let state = StateStore::open(&config).await?;
            match &a.action {
                Some(PlanCommand::Show(s)) => return plan_show(&config, &state, s, format).await,
                Some(PlanCommand::Prune(p)) => return plan_prune(&state, p, format).await,
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
                if let Some(why) = plan::stale_index(&state, store.as_ref()).await? {
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
        Command::Apply(a) => {
            let config = load_config(&cli.config)?;
            let state = StateStore::open(&config).await?;
            let crm = crm::connect(&config).await?;
            let store = store::open(&config)?;
            let options = ApplyOptions {
                allow_mass_delete: a.allow_mass_delete,
                wait_for_lock: a.wait,
                batch_cases: a.batch_size.map(|n| n as usize),
                stop: Some(stop_on_signal()),
            };
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
        Command::Sweep(a) => {
            let config = load_config(&cli.config)?;
            let state = StateStore::open(&config).await?;
            let crm = crm::connect(&config).await?;
            let store = store::open(&config)?;
            let options = ApplyOptions {
                allow_mass_delete: a.allow_mass_delete,
                wait_for_lock: a.wait,
                batch_cases: a.batch_size.map(|n| n as usize),
                stop: Some(stop_on_signal()),
            };
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
        Command::Explain(a) => explain(&cli.config, &a.entity, a.as_of, format).await,
        Command::Hold(h) => hold(&cli.config, h, format).await,
        Command::Audit(a) => audit_cmd(&cli.config, a, format).await,
        Command::Serve(a) => {
            init_logging(a.log_format);
            let config = load_config(&cli.config)?;
            crate::serve::run(config, a.listen, shutdown_signal()).await?;
            Ok(EXIT_OK)
        }
        Command::Verify(a) => {
            let config = load_config(&cli.config)?;
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
        Command::Report(a) => {
            let config = load_config(&cli.config)?;
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
    }
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
    let (r, _) = parse_entity_ref(&config, &kinds, entity).map_err(|m| usage("ENTITY", m))?;
    let entity = &r.to_string();
    let world = plan::load_world(&config, crm.as_ref(), &state, &|_, _| {}).await?;
    let as_of = as_of.unwrap_or_else(pipeline::now_seconds).as_second();
    let Some(id) = world.graph.resolve_named(&r.entity_type, &r.key) else {
        out(&match format {
            Format::Text => format!(
                "{entity}: not in the CRM{} (nothing to explain; linked objects are orphans)\n",
                erased_note(&config, &state, entity).await?
            ),
            _ => json(&serde_json::json!({
                "entity": entity,
                "exists": false,
                "erased": !erased_note(&config, &state, entity).await?.is_empty(),
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
        _ => json(&render::explain_json(
            entity,
            &world,
            &cases,
            eval.is_deleted(id),
        )),
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

/// The texts of `hold add` / `hold rm` within their bounds and printable
/// (see `holds`), before anything else reads them.
fn check_hold_args(target: &str, reason: Option<&str>) -> Result<()> {
    holds::check_target(target).map_err(|e| usage("TARGET", e.to_string()))?;
    if let Some(reason) = reason {
        holds::check_reason(reason).map_err(|e| usage("--reason", e.to_string()))?;
    }
    Ok(())
}

/// Who puts or lifts a hold: `--author`, else `$USER`; never a made-up name.
fn hold_author(given: Option<String>) -> Result<String> {
    let (author, key) = match given {
        Some(a) => (a, "--author"),
        None => match std::env::var("USER") {
            Ok(u) if !u.trim().is_empty() => (u, "$USER"),
            _ => {
                return Err(usage(
                    "--author",
                    "no author: $USER is not set; say who puts or lifts the hold with --author NAME"
                        .into(),
                ));
            }
        },
    };
    holds::check_author(&author).map_err(|e| usage(key, e.to_string()))?;
    Ok(author)
}

/// The CRM and the key kinds a hold target needs: none for `object:` and
/// `prefix:` targets, so that a file can be held while the CRM is down.
async fn hold_crm(
    config: &Config,
    target: &str,
) -> Result<(Option<Box<dyn crm::Crm>>, crm::refs::KeyKinds)> {
    if target.starts_with("object:") || target.starts_with("prefix:") {
        return Ok((None, crm::refs::KeyKinds::default()));
    }
    let crm = crm::connect(config).await?;
    let kinds = crm::refs::KeyKinds::read(config, crm.as_ref()).await?;
    Ok((Some(crm), kinds))
}

/// A hold's target as the user typed it (see `holds::parse_target`).
fn parse_hold_target(
    config: &Config,
    kinds: &crm::refs::KeyKinds,
    target: &str,
) -> Result<(HoldKind, String, Option<crate::model::EntityKey>)> {
    holds::parse_target(config, kinds, target).map_err(|m| usage("TARGET", m))
}

/// What the audit says of an entity that is not in the CRM: " (lethe
/// deleted it at T under policy P)", or nothing.
async fn erased_note(config: &Config, state: &StateStore, r: &str) -> Result<String> {
    let Ok(r) = EntityRef::parse(r) else {
        return Ok(String::new());
    };
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let records = audit::lookup(&state.clone(), &pseudo.entity(&r.entity_type, &r.key)).await?;
    Ok(records
        .iter()
        .rev()
        .find(|rec| rec.action == "delete-entity")
        .map(|rec| {
            format!(
                "; the audit shows lethe deleted it at {} by plan {} under policy {}",
                rec.at,
                rec.plan_id,
                rec.policy.as_deref().unwrap_or("-")
            )
        })
        .unwrap_or_default())
}

async fn hold(path: &Path, cmd: HoldCommand, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    match cmd {
        HoldCommand::Add {
            target,
            reason,
            author,
            allow_absent,
        } => {
            check_hold_args(&target, Some(&reason))?;
            let author = hold_author(author)?;
            let (crm, kinds) = hold_crm(&config, &target).await?;
            let (kind, t, key) = parse_hold_target(&config, &kinds, &target)?;
            if let (HoldKind::Entity, Some(key), Some(crm)) = (kind, &key, &crm) {
                let ty = t.split_once(':').map(|(ty, _)| ty).unwrap_or_default();
                if !crm::refs::exists(&config, crm.as_ref(), ty, key).await? {
                    let note = erased_note(&config, &state, &t).await?;
                    if !allow_absent {
                        return Err(usage(
                            "TARGET",
                            format!(
                                "{t} is not in the CRM{note}; a hold on it protects nothing. Check the ref, or pass --allow-absent if the hold is meant for an entity not yet created"
                            ),
                        ));
                    }
                    eprintln!(
                        "lethe: warning: {t} is not in the CRM{note}; held as asked (--allow-absent)"
                    );
                }
            }
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            let added = holds::add(&state, &pseudo, kind, &t, &reason, &author).await?;
            out(&match format {
                Format::Text if added => format!("hold added on {}\n", holds::canonical(kind, &t)),
                Format::Text => format!("{} was already on hold\n", holds::canonical(kind, &t)),
                _ => json(
                    &serde_json::json!({ "target": holds::canonical(kind, &t), "added": added }),
                ),
            });
        }
        HoldCommand::Rm { target, author } => {
            check_hold_args(&target, None)?;
            let author = hold_author(author)?;
            let (_crm, kinds) = hold_crm(&config, &target).await?;
            let (kind, t, _) = parse_hold_target(&config, &kinds, &target)?;
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            let mut removed = holds::remove(&state, &pseudo, kind, &t, &author).await?;
            // A hold stored as typed before refs were read canonically
            // (`lead:018`) is lifted by the same text.
            if !removed && kind == HoldKind::Entity && t != target {
                removed = holds::remove(&state, &pseudo, kind, &target, &author).await?;
            }
            if !removed {
                bail!("{target} is not on hold; `lethe hold list` shows the holds");
            }
            out(&match format {
                Format::Text => format!("hold on {target} lifted\n"),
                _ => json(&serde_json::json!({ "target": target, "removed": true })),
            });
        }
        HoldCommand::List => {
            let holds = state.holds().await?;
            out(&match format {
                Format::Text => render::holds(&holds),
                _ => json(
                    &holds
                        .iter()
                        .map(|h| {
                            serde_json::json!({
                                "kind": h.kind.as_str(), "target": holds::canonical(h.kind, &h.target),
                                "reason": h.reason, "author": h.author,
                                "created_at": holds::show_instant(&h.created_at)
                            })
                        })
                        .collect::<Vec<_>>(),
                ),
            });
        }
    }
    Ok(EXIT_OK)
}

async fn audit_cmd(path: &Path, cmd: AuditCommand, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    match cmd {
        AuditCommand::Verify { expect_head } => {
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            let v =
                audit::verify_paged(&state, &pseudo, audit::JOURNAL_PAGE, expect_head.as_deref())
                    .await?;
            out(&match format {
                Format::Text => render::audit_verify(&v),
                _ => json(&v),
            });
            Ok(if v.problems.is_empty() {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        AuditCommand::Export => {
            let mut lines = String::new();
            if format == Format::Csv {
                lines.push_str(
                    "seq,plan_id,policy,basis,action,entity_type,pseudonym,bytes,at,prev,hash,author,reason_chars,detail\n",
                );
            }
            let mut records = Vec::new();
            audit::for_each(&state, &mut |r| records.push(r)).await?;
            match format {
                Format::Csv => {
                    let mut w = csv::Writer::from_writer(Vec::new());
                    for r in &records {
                        let cells = [
                            r.seq.to_string(),
                            r.plan_id.clone(),
                            r.policy.clone().unwrap_or_default(),
                            r.basis.clone().unwrap_or_default(),
                            r.action.clone(),
                            r.entity_type.clone().unwrap_or_default(),
                            r.pseudonym.clone(),
                            r.bytes.map(|b| b.to_string()).unwrap_or_default(),
                            r.at.clone(),
                            r.prev.clone(),
                            r.hash.clone(),
                            r.author.clone().unwrap_or_default(),
                            r.reason_chars.map(|n| n.to_string()).unwrap_or_default(),
                            r.detail.clone().unwrap_or_default(),
                        ];
                        w.write_record(cells.iter().map(|c| audit::csv_cell(c)))?;
                    }
                    lines.push_str(&String::from_utf8_lossy(
                        &w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
                    ));
                }
                Format::Json => lines = json(&records),
                _ => {
                    for r in &records {
                        lines.push_str(&serde_json::to_string(r)?);
                        lines.push('\n');
                    }
                }
            }
            out(&lines);
            Ok(EXIT_OK)
        }
        AuditCommand::Lookup { target } => {
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            let p = if let Some(k) = target.strip_prefix("object:") {
                pseudo.object(k)
            } else {
                // The ref as the key column stores it (`lead:018` is
                // lead 18, as it was audited); an auditor without access to
                // the CRM gets the ref as typed, and is told so.
                let kinds = match crm::connect(&config).await {
                    Ok(c) => crm::refs::KeyKinds::read(&config, c.as_ref()).await.ok(),
                    Err(_) => None,
                };
                let r = match &kinds {
                    Some(kinds) => {
                        parse_entity_ref(&config, kinds, &target)
                            .map_err(|m| usage("TARGET", m))?
                            .0
                    }
                    None => {
                        eprintln!(
                            "lethe: warning: the CRM is out of reach, so {} is looked up as typed (lead:018 and lead:18 differ)",
                            crm::refs::printable(&target)
                        );
                        EntityRef::parse(&target).map_err(|e| usage("TARGET", e.to_string()))?
                    }
                };
                pseudo.entity(&r.entity_type, &r.key)
            };
            let records = audit::lookup(&state, &p).await?;
            out(&match format {
                Format::Text if records.is_empty() => {
                    format!("{target}: no audit record (lethe has not deleted it)\n")
                }
                Format::Text => records
                    .iter()
                    .map(|r| {
                        if let Some(author) = &r.author {
                            return format!(
                                "{target}: {} at {} by {}\n",
                                r.action,
                                r.at,
                                holds::escape(author)
                            );
                        }
                        format!(
                            "{target}: {} at {} by plan {} under policy {} ({})\n",
                            r.action,
                            r.at,
                            r.plan_id,
                            r.policy.as_deref().unwrap_or("-"),
                            r.basis.as_deref().unwrap_or("-")
                        )
                    })
                    .collect(),
                _ => json(
                    &serde_json::json!({ "target": target, "pseudonym": p, "records": records }),
                ),
            });
            Ok(EXIT_OK)
        }
    }
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

/// `lethe plan show`: the header, then (with --items) the cases and objects
/// page by page as they are read, in text or as one JSON document.
async fn plan_show(
    config: &Config,
    state: &StateStore,
    a: &args::PlanShowArgs,
    format: Format,
) -> Result<i32> {
    use plan::show::{self, ItemFilter};
    let stored = plan::load(state, a.plan_id.as_deref()).await?;
    let mut summary = stored.summary.clone();
    summary.brake = stored.brake.clone();
    let json_out = format != Format::Text;
    if json_out {
        let mut head = serde_json::to_value(&summary)?;
        head["status"] = serde_json::Value::from(stored.status.as_str());
        out(&format!("{{\"plan\": {}", serde_json::to_string(&head)?));
    } else {
        out(&render::plan_header(&summary, stored.status.as_str()));
    }
    if !a.items {
        if json_out {
            out(", \"cases\": [], \"objects\": [], \"kept\": []}\n");
        }
        return Ok(EXIT_OK);
    }
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let keys = a.keys;
    let show_entity = |t: &str, k: &str| {
        if keys {
            format!("{t}:{k}")
        } else {
            pseudo.show_entity(t, k)
        }
    };
    // A ref as stored (`type:key`), shown as the operator asked.
    let show_ref = |r: &str| match r.split_once(':') {
        Some((t, k)) => show_entity(t, k),
        None => pseudo.show_object(r),
    };
    let show_object = |k: &str| {
        if keys {
            format!("object:{k}")
        } else {
            pseudo.show_object(k)
        }
    };
    let filter = ItemFilter {
        fate: a.fate.clone(),
        policy: a.policy.clone(),
        entity_type: a.entity_type.clone(),
    };
    let mut first = true;
    let mut n = 0u64;
    out(if json_out {
        ", \"cases\": ["
    } else {
        "cases:\n"
    });
    show::for_each_case(state, &stored.id, &filter, show::PAGE, &mut |cases| {
        let mut text = String::new();
        for c in cases {
            n += 1;
            let root = show_entity(&c.root_type, &c.root_key);
            if json_out {
                let entities: Vec<serde_json::Value> = c
                    .entities
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "type": e.entity_type,
                            "ref": show_entity(&e.entity_type, &e.entity_key),
                            "status": e.status,
                        })
                    })
                    .collect();
                let v = serde_json::json!({
                    "case": c.case_id, "root": root, "policy": c.policy,
                    "case_clock": c.case_clock.map(crate::model::format_instant),
                    "status": c.status, "reason": c.reason, "entities": entities,
                });
                text.push_str(if first { "\n" } else { ",\n" });
                text.push_str(&v.to_string());
                first = false;
            } else {
                text.push_str(&format!(
                    "  case {:>8}  {:<9}  {:<24}  {}  clock {}{}\n",
                    c.case_id,
                    c.status,
                    c.policy,
                    root,
                    c.case_clock
                        .map(crate::model::format_instant)
                        .unwrap_or_else(|| "-".into()),
                    c.reason
                        .as_deref()
                        .map(|r| format!("  ({r})"))
                        .unwrap_or_default()
                ));
                for e in &c.entities {
                    text.push_str(&format!(
                        "      {:<9}  {:<14}  {}\n",
                        e.status,
                        e.entity_type,
                        show_entity(&e.entity_type, &e.entity_key)
                    ));
                }
            }
        }
        out(&text);
    })
    .await?;
    if !json_out && n == 0 {
        out("  none\n");
    }
    let mut first = true;
    let mut n = 0u64;
    out(if json_out {
        "], \"objects\": ["
    } else {
        "objects:\n"
    });
    show::for_each_object(state, &stored.id, &filter, show::PAGE, &mut |objects| {
        let mut text = String::new();
        for o in objects {
            n += 1;
            let key = show_object(&o.key);
            if json_out {
                let linked: Vec<String> = o.entities.iter().map(|r| show_ref(r)).collect();
                let mut v = serde_json::json!({
                    "item": o.item, "object": key, "fate": o.fate, "size": o.size,
                    "policy": o.policy, "status": o.status, "reason": o.reason,
                    "entities": linked,
                });
                if let Some(n) = o.records_to_remove {
                    v["records_to_remove"] = n.into();
                }
                text.push_str(if first { "\n" } else { ",\n" });
                text.push_str(&v.to_string());
                first = false;
            } else {
                text.push_str(&format!(
                    "  {:<6}  {:>12}  {:<9}  {:<24}  {}{}{}\n",
                    o.fate,
                    o.size,
                    o.status,
                    o.policy,
                    key,
                    match (o.records_to_remove, o.reason.as_deref()) {
                        (Some(n), _) => format!("  ({n} records go)"),
                        (None, Some(r)) => format!("  ({r})"),
                        (None, None) => String::new(),
                    },
                    linked_text(&o.entities, &show_ref)
                ));
            }
        }
        out(&text);
    })
    .await?;
    if !json_out && n == 0 {
        out("  none\n");
    }
    // What the plan keeps: objects it does not delete, entities it could
    // not date, parent references to no entity.
    let mut first = true;
    let mut n = 0u64;
    out(if json_out {
        "], \"kept\": ["
    } else {
        "kept (not deleted by this plan):\n"
    });
    show::for_each_review(state, &stored.id, &filter, show::PAGE, &mut |rows| {
        let mut text = String::new();
        for r in rows {
            n += 1;
            let (what, detail) = match r.kind {
                "object" => (
                    show_object(&r.key),
                    format!(
                        "{}{}",
                        r.reason
                            .as_deref()
                            .map(|why| format!("  ({why})"))
                            .unwrap_or_default(),
                        linked_text(&r.entities, &show_ref)
                    ),
                ),
                "dangling" => {
                    let ty = r.entity_type.as_deref().unwrap_or("?");
                    (
                        show_entity(ty, &r.key),
                        format!(
                            "  names {} (no such {})",
                            show_entity(&r.fate, r.reason.as_deref().unwrap_or("?")),
                            r.fate
                        ),
                    )
                }
                _ => (
                    show_entity(r.entity_type.as_deref().unwrap_or("?"), &r.key),
                    "  no clock column has a date; its cases are kept".to_string(),
                ),
            };
            let fate = if r.kind == "dangling" { "dangling" } else { r.fate.as_str() };
            if json_out {
                let v = serde_json::json!({
                    "kind": r.kind, "item": what, "fate": fate, "size": r.size,
                    "reason": if r.kind == "dangling" { None } else { r.reason.clone() },
                    "names": (r.kind == "dangling").then(|| show_entity(&r.fate, r.reason.as_deref().unwrap_or("?"))),
                    "entities": r.entities.iter().map(|e| show_ref(e)).collect::<Vec<_>>(),
                });
                text.push_str(if first { "\n" } else { ",\n" });
                text.push_str(&v.to_string());
                first = false;
            } else {
                text.push_str(&format!(
                    "  {:<12}  {:>12}  {}{}\n",
                    fate,
                    r.size.map(|s| s.to_string()).unwrap_or_default(),
                    what,
                    detail
                ));
            }
        }
        out(&text);
    })
    .await?;
    if json_out {
        out("]}\n");
    } else if n == 0 {
        out("  none\n");
    }
    Ok(EXIT_OK)
}

/// `  → lead:~ab…, quote:~cd…` for an object's linked entities.
fn linked_text(refs: &[String], show: &dyn Fn(&str) -> String) -> String {
    if refs.is_empty() {
        String::new()
    } else {
        // A shared export links hundreds; text shows the first few (JSON all).
        const SHOWN: usize = 6;
        let mut t = format!(
            "  → {}",
            refs.iter()
                .take(SHOWN)
                .map(|r| show(r))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if refs.len() > SHOWN {
            t.push_str(&format!(", … ({} in all)", refs.len()));
        }
        t
    }
}

/// `lethe plan prune`.
async fn plan_prune(state: &StateStore, a: &args::PlanPruneArgs, format: Format) -> Result<i32> {
    use plan::show::PruneBy;
    let by = match (a.keep, &a.older_than) {
        (Some(n), _) => PruneBy::Keep(n),
        (None, Some(text)) => {
            config::Retention::parse(text)
                .map_err(|e| usage("plan prune", format!("--older-than: {e}")))?;
            let span: jiff::Span = text
                .trim()
                .parse()
                .map_err(|e| usage("plan prune", format!("--older-than: {e}")))?;
            let cutoff = jiff::Timestamp::now()
                .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .checked_sub(span)
                .map_err(|e| {
                    usage(
                        "plan prune",
                        format!("--older-than `{text}` reaches too far back: {e}"),
                    )
                })?
                .timestamp();
            PruneBy::Since(cutoff)
        }
        (None, None) => {
            return Err(usage(
                "plan prune",
                "pass --keep N or --older-than DURATION".to_string(),
            ));
        }
    };
    let report = plan::show::prune(state, by).await?;
    out(&match format {
        Format::Text => {
            let mut t = format!(
                "pruned {} plan(s), kept {}\n",
                report.pruned.len(),
                report.kept + report.in_progress.len() as u64
            );
            for id in &report.pruned {
                t.push_str(&format!("  pruned {id}\n"));
            }
            for id in &report.in_progress {
                t.push_str(&format!(
                    "  kept {id}: being applied or not finished; apply it to the end first\n"
                ));
            }
            t
        }
        _ => json(&report),
    });
    Ok(EXIT_OK)
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
