//! `lethe request erase|export|list|show` and `lethe suppression
//! check|rm`: the subject as typed (read by `request::Subject`, never
//! echoed), the request's answer rendered for a person or a script.

use std::path::Path;

use anyhow::Result;

use super::args::{Format, RequestArgs, RequestCommand, SuppressionCommand};
use super::{EXIT_OK, EXIT_PARTIAL, Progress, json, load_config, out, render, usage};
use crate::audit::pseudonym::Pseudonymizer;
use crate::config::Config;
use crate::request::{self, RequestError, Subject};
use crate::state::StateStore;
use crate::state::requests::{Request, RequestStatus};
use crate::{crm, store};

/// A request error as the CLI reports it: what the user typed wrong is a
/// usage error (exit 2).
fn from_request(e: RequestError) -> anyhow::Error {
    match e {
        RequestError::Usage(m) => usage("--subject", m),
        other => anyhow::Error::new(other),
    }
}

fn subject_of(args: &[String]) -> Result<Subject> {
    Subject::parse(args).map_err(from_request)
}

pub(super) async fn request_cmd(path: &Path, c: RequestCommand, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    match c {
        RequestCommand::Erase(a) => erase(&config, &state, a, format).await,
        RequestCommand::Export(a) => {
            super::request_export::export(&config, &state, a, format).await
        }
        RequestCommand::List => {
            let list = crate::state::requests::list(&state, 1000).await?;
            out(&match format {
                Format::Text => list_text(&config, &list, request::today()),
                _ => json(&serde_json::json!({
                    "requests": list.iter().map(|r| tracked(r, request::today())).collect::<Vec<_>>()
                })),
            });
            Ok(EXIT_OK)
        }
        RequestCommand::Show { id } => {
            let Some(r) = crate::state::requests::get(&state, &id).await? else {
                return Err(usage(
                    "ID",
                    "no such request; `lethe request list` lists them".into(),
                ));
            };
            let audit = match &r.plan_id {
                Some(p) => crate::state::audit_log::count_of_plan(&state, p).await?,
                None => 0,
            };
            let mut t = tracked(&r, request::today());
            t["audit_records"] = serde_json::json!(audit);
            out(&match format {
                Format::Text => show_text(&config, &r, audit),
                _ => json(&t),
            });
            Ok(EXIT_OK)
        }
    }
}

async fn erase(config: &Config, state: &StateStore, a: RequestArgs, format: Format) -> Result<i32> {
    let subject = subject_of(&a.subject)?;
    request::check_reference(&a.reference).map_err(from_request)?;
    let crm = crm::connect(config).await?;
    let store = store::open(config)?;
    let progress = Progress::new(format);
    let outcome = request::erase(
        config,
        crm.as_ref(),
        store.as_ref(),
        state,
        request::Asked {
            subject: &subject,
            reference: &a.reference,
            received: a.received.unwrap_or_else(request::today),
        },
        &|p, d, t| progress.set(p, d, t),
    )
    .await
    .map_err(from_request)?;
    progress.finish();
    out(&match format {
        Format::Text => erase_text(config, &outcome),
        _ => json(&outcome),
    });
    Ok(if outcome.not_searched > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    })
}

/// A request with its deadline as of `today`: days left, overdue.
fn tracked(r: &Request, today: jiff::civil::Date) -> serde_json::Value {
    let (left, overdue) = request::days_left(r, today);
    let mut v = serde_json::to_value(r).unwrap_or_default();
    // The entities resolved: pseudonyms only, as everywhere outside the
    // state store.
    v["entities"] = serde_json::json!(r.entities.len());
    v["days_left"] = serde_json::json!(left);
    v["overdue"] = serde_json::json!(overdue);
    v
}

fn list_text(_config: &Config, list: &[Request], today: jiff::civil::Date) -> String {
    if list.is_empty() {
        return "no requests\n".into();
    }
    let mut s = String::from(
        "id                        kind    received    due         left  status          reference\n",
    );
    for r in list {
        let (left, overdue) = request::days_left(r, today);
        s.push_str(&format!(
            "{:<25} {:<7} {:<11} {:<11} {:>4}  {:<15} {}{}\n",
            r.id,
            r.kind.as_str(),
            r.received,
            r.due,
            if r.status.is_done() {
                "-".to_string()
            } else {
                left.to_string()
            },
            r.status.as_str(),
            r.reference,
            if overdue { "  OVERDUE" } else { "" }
        ));
    }
    s
}

fn show_text(config: &Config, r: &Request, audit: u64) -> String {
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let (left, overdue) = request::days_left(r, request::today());
    let mut s = format!(
        "request {} ({})\n  reference: {}\n  received {}, due {} ({}), status {}\n",
        r.id,
        r.kind.as_str(),
        r.reference,
        r.received,
        r.due,
        if r.status.is_done() {
            format!("answered {}", r.done_at.as_deref().unwrap_or("-"))
        } else if overdue {
            format!("OVERDUE by {} days", -left)
        } else {
            format!("{left} days left")
        },
        r.status.as_str()
    );
    let kinds: Vec<&str> = r
        .subject
        .identifiers
        .iter()
        .map(|h| h.kind.as_str())
        .collect();
    s.push_str(&format!(
        "  subject: {}{}\n",
        if kinds.is_empty() {
            "by entity ref".to_string()
        } else {
            format!("by {}", kinds.join(", "))
        },
        if r.subject.refs.is_empty() {
            String::new()
        } else {
            format!(" and {} ref(s)", r.subject.refs.len())
        }
    ));
    s.push_str(&format!("  entities: {}\n", r.entities.len()));
    for e in &r.entities {
        if let Some((t, k)) = e.split_once(':') {
            s.push_str(&format!("    {}\n", pseudo.show_entity(t, k)));
        }
    }
    if let Some(p) = &r.plan_id {
        s.push_str(&format!(
            "  plan: {p} ({audit} audit records) — `lethe plan show {p} --items`\n"
        ));
    }
    if let Some(sum) = &r.summary {
        s.push_str(&format!("  summary: {sum}\n"));
    }
    s
}

fn erase_text(config: &Config, o: &request::EraseOutcome) -> String {
    let r = &o.request;
    let (left, _) = request::days_left(r, request::today());
    let mut s = format!(
        "request {} (erase), reference {}, received {}, due {} ({} days left)\n",
        r.id, r.reference, r.received, r.due, left
    );
    for sup in &o.suppressed {
        if sup.suppressed {
            s.push_str(&format!(
                "  the {} given is on the suppression list: lethe erased this person before\n",
                sup.kind
            ));
        }
    }
    if o.nothing_held {
        s.push_str(&format!(
            "  nothing held: no entity in the CRM matches, and none of the {} objects searched names the subject\n",
            o.scanned_objects
        ));
        s.push_str(&format!("  request status: {}\n", r.status.as_str()));
        return s;
    }
    s.push_str(&format!(
        "  found: {} entities of the subject (with their descendants)\n",
        o.entities_found
    ));
    s.push_str(&render::plan(&o.plan, false));
    let kept = kept_lines(config, &o.plan);
    if !kept.is_empty() {
        s.push_str("  kept, and why:\n");
        for k in kept {
            s.push_str(&format!("    - {k}\n"));
        }
    }
    s.push_str(&format!(
        "  store searched: {} objects, {}; {} name the subject without a link to its entities{}\n",
        o.scanned_objects,
        render::bytes(o.scanned_bytes),
        o.names_subject,
        if o.names_subject > 0 {
            format!(
                " (listed for review, never deleted by lethe: `lethe plan show {} --items --fate names-subject`)",
                o.plan.id
            )
        } else {
            String::new()
        }
    ));
    if o.not_searched > 0 {
        s.push_str(&format!(
            "  NOT SEARCHED: {} entries of the store could not be read (symlinks, failures)\n",
            o.not_searched
        ));
    }
    s.push_str(&format!(
        "  planned in {:.2}s (the store's search {:.2}s); nothing was deleted.\n",
        o.seconds, o.seconds_scan
    ));
    match r.status {
        RequestStatus::Planned => s.push_str(&format!(
            "  review with `lethe plan show {p} --items`, then erase with `lethe apply {p}`\n",
            p = o.plan.id
        )),
        st => s.push_str(&format!("  request status: {}\n", st.as_str())),
    }
    s
}

/// What a request's plan keeps, each with the rule that keeps it and the
/// policies that declare that rule (their basis).
fn kept_lines(config: &Config, plan: &crate::plan::PlanSummary) -> Vec<String> {
    let mut out = Vec::new();
    for p in &plan.policies {
        for (reason, n) in &p.kept {
            if *n == 0 {
                continue;
            }
            let rule = reason.strip_prefix("keep_if ").unwrap_or(reason);
            let declared: Vec<String> = config
                .policies
                .iter()
                .filter(|cp| cp.keep_if.iter().any(|k| k.to_string() == rule))
                .map(|cp| format!("policy {}", cp.name))
                .collect();
            out.push(format!(
                "{n} {}: {reason}{}",
                p.root,
                if declared.is_empty() {
                    String::new()
                } else {
                    format!(" (kept from erasure as by {})", declared.join(", "))
                }
            ));
        }
    }
    if plan.objects.shared > 0 {
        out.push(format!(
            "{} objects kept whole: shared with entities that stay and not redactable (see `lethe plan show {} --items --fate shared`)",
            plan.objects.shared, plan.id
        ));
    }
    if plan.objects.held > 0 {
        out.push(format!("{} objects on legal hold", plan.objects.held));
    }
    out
}

pub(super) async fn suppression_cmd(
    path: &Path,
    c: SuppressionCommand,
    format: Format,
) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    match c {
        SuppressionCommand::Check { subject } => {
            let subject = subject_of(&subject)?;
            let results = request::suppression_check(&config, &state, &subject)
                .await
                .map_err(from_request)?;
            out(&match format {
                Format::Text => results
                    .iter()
                    .map(|r| {
                        format!(
                            "{}: {}\n",
                            r.kind,
                            if r.suppressed {
                                "suppressed (lethe erased this person)"
                            } else {
                                "not suppressed"
                            }
                        )
                    })
                    .collect(),
                _ => json(&serde_json::json!({ "results": results })),
            });
            Ok(EXIT_OK)
        }
        SuppressionCommand::Rm {
            subject,
            reason,
            author,
        } => {
            let subject = subject_of(&subject)?;
            crate::holds::check_reason(&reason).map_err(|e| usage("--reason", e.to_string()))?;
            let author = super::hold::hold_author(author)?;
            let lifted = request::lift_suppression(&config, &state, &subject, &reason, &author)
                .await
                .map_err(from_request)?;
            out(&match format {
                Format::Text => lifted
                    .iter()
                    .map(|l| {
                        format!(
                            "{}: {}\n",
                            l.kind,
                            if l.lifted {
                                "lifted from the suppression list (audited)"
                            } else {
                                "was not on the suppression list"
                            }
                        )
                    })
                    .collect(),
                _ => json(&serde_json::json!({ "results": lifted })),
            });
            Ok(EXIT_OK)
        }
    }
}
