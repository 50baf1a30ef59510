//! `lethe plan show` and `lethe plan prune`: a stored plan read back page
//! by page and printed as it is read (text, or one JSON document written
//! in pieces), and old plans pruned.

use anyhow::Result;

use super::args::{self, Format};
use super::{EXIT_OK, json, out, render, usage};
use crate::audit::pseudonym::Pseudonymizer;
use crate::config::{self, Config};
use crate::plan::{self, show::ItemFilter};
use crate::state::StateStore;

/// `lethe plan show`: the header, then (with --items) the cases and objects
/// page by page as they are read, in text or as one JSON document.
pub(super) async fn plan_show(
    config: &Config,
    state: &StateStore,
    a: &args::PlanShowArgs,
    format: Format,
) -> Result<i32> {
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
    let shown = Shown {
        pseudo: &pseudo,
        keys: a.keys,
    };
    let filter = ItemFilter {
        fate: a.fate.clone(),
        policy: a.policy.clone(),
        entity_type: a.entity_type.clone(),
    };
    out(if json_out {
        ", \"cases\": ["
    } else {
        "cases:\n"
    });
    let n = cases(state, &stored.id, &filter, json_out, &shown).await?;
    if !json_out && n == 0 {
        out("  none\n");
    }
    out(if json_out {
        "], \"objects\": ["
    } else {
        "objects:\n"
    });
    let n = objects(state, &stored.id, &filter, json_out, &shown).await?;
    if !json_out && n == 0 {
        out("  none\n");
    }
    // What the plan keeps: objects it does not delete, entities it could
    // not date, parent references to no entity.
    out(if json_out {
        "], \"kept\": ["
    } else {
        "kept (not deleted by this plan):\n"
    });
    let n = kept(state, &stored.id, &filter, json_out, &shown).await?;
    if json_out {
        out("]}\n");
    } else if n == 0 {
        out("  none\n");
    }
    Ok(EXIT_OK)
}

/// How `plan show` names entities and objects: by pseudonym, or with
/// --keys by their keys.
struct Shown<'a> {
    pseudo: &'a Pseudonymizer,
    keys: bool,
}

impl Shown<'_> {
    fn entity(&self, t: &str, k: &str) -> String {
        if self.keys {
            format!("{t}:{k}")
        } else {
            self.pseudo.show_entity(t, k)
        }
    }

    /// A ref as stored (`type:key`), shown as the operator asked.
    fn reference(&self, r: &str) -> String {
        match r.split_once(':') {
            Some((t, k)) => self.entity(t, k),
            None => self.pseudo.show_object(r),
        }
    }

    fn object(&self, k: &str) -> String {
        if self.keys {
            format!("object:{k}")
        } else {
            self.pseudo.show_object(k)
        }
    }
}

/// The plan's cases with their entities, printed page by page; how many.
async fn cases(
    state: &StateStore,
    id: &str,
    filter: &ItemFilter,
    json_out: bool,
    shown: &Shown<'_>,
) -> Result<u64> {
    use plan::show;
    let mut first = true;
    let mut n = 0u64;
    show::for_each_case(state, id, filter, show::PAGE, &mut |cases| {
        let mut text = String::new();
        for c in cases {
            n += 1;
            let root = shown.entity(&c.root_type, &c.root_key);
            if json_out {
                let entities: Vec<serde_json::Value> = c
                    .entities
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "type": e.entity_type,
                            "ref": shown.entity(&e.entity_type, &e.entity_key),
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
                        shown.entity(&e.entity_type, &e.entity_key)
                    ));
                }
            }
        }
        out(&text);
    })
    .await?;
    Ok(n)
}

/// The plan's objects and their fates, printed page by page; how many.
async fn objects(
    state: &StateStore,
    id: &str,
    filter: &ItemFilter,
    json_out: bool,
    shown: &Shown<'_>,
) -> Result<u64> {
    use plan::show;
    let mut first = true;
    let mut n = 0u64;
    show::for_each_object(state, id, filter, show::PAGE, &mut |objects| {
        let mut text = String::new();
        for o in objects {
            n += 1;
            let key = shown.object(&o.key);
            if json_out {
                let linked: Vec<String> = o.entities.iter().map(|r| shown.reference(r)).collect();
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
                    linked_text(&o.entities, &|r| shown.reference(r))
                ));
            }
        }
        out(&text);
    })
    .await?;
    Ok(n)
}

/// What the plan keeps (`plan_review`), printed page by page; how many.
async fn kept(
    state: &StateStore,
    id: &str,
    filter: &ItemFilter,
    json_out: bool,
    shown: &Shown<'_>,
) -> Result<u64> {
    use plan::show;
    let mut first = true;
    let mut n = 0u64;
    show::for_each_review(state, id, filter, show::PAGE, &mut |rows| {
        let mut text = String::new();
        for r in rows {
            n += 1;
            let (what, detail) = match r.kind {
                "object" => (
                    shown.object(&r.key),
                    format!(
                        "{}{}",
                        r.reason
                            .as_deref()
                            .map(|why| format!("  ({why})"))
                            .unwrap_or_default(),
                        linked_text(&r.entities, &|r| shown.reference(r))
                    ),
                ),
                "dangling" => {
                    let ty = r.entity_type.as_deref().unwrap_or("?");
                    (
                        shown.entity(ty, &r.key),
                        format!(
                            "  names {} (no such {})",
                            shown.entity(&r.fate, r.reason.as_deref().unwrap_or("?")),
                            r.fate
                        ),
                    )
                }
                "reimported" => (
                    shown.entity(r.entity_type.as_deref().unwrap_or("?"), &r.key),
                    "  carries an identifier of a person lethe erased (re-imported?)".to_string(),
                ),
                _ => (
                    shown.entity(r.entity_type.as_deref().unwrap_or("?"), &r.key),
                    "  no clock column has a date; its cases are kept".to_string(),
                ),
            };
            let fate = if r.kind == "dangling" { "dangling" } else { r.fate.as_str() };
            if json_out {
                let v = serde_json::json!({
                    "kind": r.kind, "item": what, "fate": fate, "size": r.size,
                    "reason": if r.kind == "dangling" { None } else { r.reason.clone() },
                    "names": (r.kind == "dangling").then(|| shown.entity(&r.fate, r.reason.as_deref().unwrap_or("?"))),
                    "entities": r.entities.iter().map(|e| shown.reference(e)).collect::<Vec<_>>(),
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
    Ok(n)
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
pub(super) async fn plan_prune(
    state: &StateStore,
    a: &args::PlanPruneArgs,
    format: Format,
) -> Result<i32> {
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
