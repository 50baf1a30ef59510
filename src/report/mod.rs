//! The report for the data protection officer: what a plan deleted and kept
//! and why, per policy and reason, bytes freed, failures (by pseudonym), the
//! audit chain head, and an outlook of cases becoming due per month. Built
//! from the plan and its journal; rendered as JSON, text, or one
//! self-contained HTML page (inline CSS and SVG, nothing fetched).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::{self, pseudonym::Pseudonymizer};
use crate::config::Config;
use crate::plan::{self, PlanSummary};
use crate::state::{StateError, StateStore};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What the plan keeps and could not judge, for review: (fate, item by
    /// pseudonym, size, detail); the first [`REVIEW_SHOWN`].
    pub kept_items: Vec<Vec<String>>,
    pub plan: PlanSummary,
    /// How the plan was chosen when none was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    pub status: String,
    pub generated_at: String,
    /// Case journal: status → count.
    pub cases: BTreeMap<String, u64>,
    /// policy → entity type → deleted by lethe.
    pub deleted: BTreeMap<String, BTreeMap<String, u64>>,
    pub entities_already_gone: u64,
    /// Object journal: status → count.
    pub objects: BTreeMap<String, u64>,
    pub bytes_freed: u64,
    /// reason → count (cases and objects).
    pub skipped: BTreeMap<String, u64>,
    /// (pseudonym, reason)
    pub failures: Vec<(String, String)>,
    pub audit_records: u64,
    pub audit_head: Option<String>,
    pub audit_intact: bool,
    /// The plan's last verify (`None`: never verified), with the objects
    /// that still name a deleted entity.
    pub verify: Option<crate::verify::VerifyReport>,
}

pub async fn build(
    config: &Config,
    state: &StateStore,
    plan_id: Option<&str>,
) -> Result<Report, StateError> {
    // Without an id: the latest plan that was applied (a later dry run is
    // not what a data protection officer asks a report of), else the latest.
    let (plan_id, chosen) = match plan_id {
        Some(id) => (Some(id.to_string()), None),
        None => {
            let applied = crate::state::plans::latest_applied(state).await?;
            match applied {
                Some(id) => (Some(id), Some("the latest applied plan")),
                None => (None, Some("the latest plan; none was applied yet")),
            }
        }
    };
    let stored = plan::load(state, plan_id.as_deref()).await?;
    let id = stored.id.as_str();
    let t = crate::state::journal::tally(state, id).await?;
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let mut failures = Vec::new();
    for (ty, key, reason) in &t.failed_cases {
        failures.push((pseudo.show_entity(ty, key), reason.clone()));
    }
    for (key, reason) in &t.failed_objects {
        failures.push((pseudo.show_object(key), reason.clone()));
    }
    let (cases, objects, skipped, deleted) = (t.cases, t.objects, t.skipped, t.deleted);
    let (gone, bytes) = (t.entities_gone, t.bytes_deleted);
    // The detail a reviewer asks for: what the plan keeps and cannot judge
    // (the first REVIEW_SHOWN; `lethe plan show --items` lists all).
    let mut kept_items = Vec::new();
    crate::plan::show::for_each_review_up_to(
        state,
        id,
        &crate::plan::show::ItemFilter::default(),
        REVIEW_SHOWN as i64,
        REVIEW_SHOWN as u64,
        &mut |rows| {
            for r in rows {
                if kept_items.len() >= REVIEW_SHOWN {
                    return;
                }
                let ty = r.entity_type.as_deref().unwrap_or("?");
                let (fate, item, detail) = match r.kind {
                    "object" => (
                        r.fate.clone(),
                        pseudo.show_object(&r.key),
                        match (&r.reason, r.entities.len()) {
                            (Some(why), _) => why.clone(),
                            (None, 0) => String::new(),
                            (None, n) => format!("links {n} entities"),
                        },
                    ),
                    "dangling" => (
                        "dangling".into(),
                        pseudo.show_entity(ty, &r.key),
                        format!(
                            "names {} (no such {})",
                            pseudo.show_entity(&r.fate, r.reason.as_deref().unwrap_or("?")),
                            r.fate
                        ),
                    ),
                    _ => (
                        "undatable".into(),
                        pseudo.show_entity(ty, &r.key),
                        "no clock column has a date; its cases are kept".into(),
                    ),
                };
                kept_items.push(vec![
                    fate,
                    item,
                    r.size.map(self::bytes).unwrap_or_default(),
                    detail,
                ]);
            }
        },
    )
    .await?;
    let audit_records = crate::state::journal::audit_records(state, id).await?;
    let verification = audit::verify(state, &pseudo).await?;
    Ok(Report {
        kept_items,
        plan: stored.summary.clone(),
        chosen: chosen.map(str::to_string),
        status: stored.status.to_string(),
        generated_at: jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .map(|t| t.to_string())
            .unwrap_or_default(),
        cases,
        deleted,
        entities_already_gone: gone,
        objects,
        bytes_freed: bytes,
        skipped,
        failures,
        audit_records,
        audit_head: verification.head.clone(),
        audit_intact: verification.problems.is_empty(),
        verify: crate::state::plans::verified(state, id)
            .await?
            .and_then(|j| serde_json::from_str(&j).ok()),
    })
}

/// The residual verification, for the HTML report.
fn residual_html(v: Option<&crate::verify::VerifyReport>) -> String {
    let Some(v) = v else {
        return "<p class=\"warn\">Not verified yet: run <code>lethe verify</code>.</p>".into();
    };
    let mut out = format!("<pre>{}</pre>", escape(&verify_text(v)));
    if !v.residual.is_empty() {
        out.push_str("<table><tr><th>object (pseudonym)</th><th>deleted entities it names</th><th>why it was left</th></tr>");
        for r in &v.residual {
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td{}>{}</td></tr>",
                escape(&r.object),
                r.entities,
                if r.why == "held" {
                    ""
                } else {
                    " class=\"warn\""
                },
                escape(&r.why)
            ));
        }
        out.push_str("</table>");
    }
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What verify proved, and what it did not: the lines apply, sweep,
/// `lethe verify` and `lethe report` print.
pub fn verify_text(v: &crate::verify::VerifyReport) -> String {
    let mut out = String::new();
    let failing = v.residual_failing();
    out.push_str(&format!(
        "  verify: {} and {} checked, {} entities and {} objects still present{}\n",
        count(v.entities_checked, "entity", "entities"),
        count(v.objects_checked, "object", "objects"),
        v.entities_remaining,
        v.objects_remaining,
        if v.entities_remaining + v.objects_remaining > 0 {
            " — NOT ALL GONE"
        } else if v.identifiers == 0 || failing > 0 || v.scan_failed > 0 || v.scan_skipped > 0 {
            " — every deleted item is gone"
        } else {
            " — all gone"
        }
    ));
    if v.identifiers == 0 {
        out.push_str(
            "  NOT PROVEN for the whole store: no identifiers of the deleted entities to search for (declare `identifiers` on the entity types)",
        );
        if v.shared_kept_whole > 0 {
            out.push_str(&format!(
                "; {} kept whole although {} deleted entities",
                count(
                    v.shared_kept_whole,
                    "shared object was",
                    "shared objects were"
                ),
                if v.shared_kept_whole == 1 {
                    "it links"
                } else {
                    "they link"
                }
            ));
        }
        out.push('\n');
        return out;
    }
    out.push_str(&format!(
        "  residual: {} of {} ({}) searched for {}: {}\n",
        count(v.objects_scanned, "object", "objects"),
        "the store",
        bytes(v.bytes_scanned),
        count(v.identifiers, "identifier", "identifiers"),
        if v.residual.is_empty() && v.scan_failed == 0 && v.scan_skipped == 0 {
            "none left — no identifier of a deleted entity is in the store".to_string()
        } else if v.residual.is_empty() {
            "none found in the objects it could read".to_string()
        } else {
            format!(
                "{} still {} a deleted entity{}",
                count(v.residual.len() as u64, "object", "objects"),
                if v.residual.len() == 1 {
                    "names"
                } else {
                    "name"
                },
                if failing < v.residual.len() as u64 {
                    format!(" ({} held)", v.residual.len() as u64 - failing)
                } else {
                    String::new()
                }
            )
        }
    ));
    if v.scan_skipped > 0 {
        out.push_str(&format!(
            "  NOT PROVEN: {} of the listing (symlinks, names that are not UTF-8, a rewrite's leftover temporary file) could not be read and were not searched\n",
            count(v.scan_skipped, "entry", "entries")
        ));
    }
    if v.scan_failed > 0 {
        out.push_str(&format!(
            "  NOT PROVEN: {} could not be read for the scan\n",
            count(v.scan_failed, "object", "objects")
        ));
    }
    let mut why: std::collections::BTreeMap<&str, u64> = Default::default();
    for r in &v.residual {
        *why.entry(r.why.as_str()).or_default() += 1;
    }
    for (w, n) in why {
        out.push_str(&format!(
            "  RESIDUAL {}: {w} ({})\n",
            count(n, "object", "objects"),
            match w {
                "held" => "on hold: reported, not failed",
                "shared" =>
                    "shared and not redactable, or the value sits outside the records that went",
                "unlinked" => "names a deleted entity without a link to it",
                "unreadable" => "no rule could read it",
                "changed" => "changed since indexed: skipped; re-plan",
                _ => "its delete or redaction failed; apply again",
            }
        ));
    }
    for r in v.residual.iter().take(20) {
        out.push_str(&format!(
            "    {} names {} ({})\n",
            r.object,
            count(r.entities, "deleted entity", "deleted entities"),
            r.why
        ));
    }
    if v.residual.len() > 20 {
        out.push_str(&format!(
            "    … and {} more (--format json lists every one)\n",
            v.residual.len() - 20
        ));
    }
    out
}

/// A byte count for people: `595.5 KB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `1 case`, `2 cases`: a count with its noun in the right number.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The outlook chart: one bar per month, inline SVG.
fn chart(months: &BTreeMap<String, u64>) -> String {
    let (w, h, pad) = (760.0f64, 260.0f64, 36.0f64);
    let max = months.values().copied().max().unwrap_or(0).max(1) as f64;
    let n = months.len().max(1) as f64;
    let slot = (w - 2.0 * pad) / n;
    let mut bars = String::new();
    for (i, (month, count)) in months.iter().enumerate() {
        let bh = (h - 2.0 * pad) * (*count as f64) / max;
        let x = pad + slot * i as f64 + slot * 0.15;
        let y = h - pad - bh;
        bars.push_str(&format!(
            r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="#3b6ea8"><title>{}: {count}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{count}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"##,
            slot * 0.7,
            escape(month),
            x + slot * 0.35,
            y - 4.0,
            x + slot * 0.35,
            h - pad + 14.0,
            escape(month),
        ));
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="cases becoming due per month" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#555"/>{bars}</svg>"##,
        y0 = h - pad,
        x1 = w - pad,
    )
}

/// Review rows shown in a report (`plan show --items` lists all).
pub const REVIEW_SHOWN: usize = 500;

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return "<p class=\"none\">none</p>".into();
    }
    let mut t = String::from("<table><thead><tr>");
    for h in head {
        t.push_str(&format!("<th>{}</th>", escape(h)));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            t.push_str(&format!("<td>{}</td>", escape(&c)));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

pub fn html(r: &Report) -> String {
    let p = &r.plan;
    let deleted_entities: u64 = r.deleted.values().flat_map(|m| m.values()).sum();
    let objects_deleted = r.objects.get("deleted").copied().unwrap_or(0);
    let failed = r.failures.len();
    let card = |label: &str, value: String| {
        format!(
            "<div class=\"card\"><div class=\"v\">{}</div><div class=\"l\">{}</div></div>",
            escape(&value),
            escape(label)
        )
    };
    let mut policies = Vec::new();
    for pol in &p.policies {
        let kept: Vec<String> = pol.kept.iter().map(|(k, n)| format!("{n} {k}")).collect();
        policies.push(vec![
            pol.name.clone(),
            pol.root.clone(),
            pol.retain.clone(),
            pol.basis.clone(),
            pol.read.to_string(),
            if pol.due_inside_other > 0 {
                format!(
                    "{} ({} inside another due case, deleted under its policy)",
                    pol.due, pol.due_inside_other
                )
            } else {
                pol.due.to_string()
            },
            pol.inside_due_case.to_string(),
            if kept.is_empty() {
                "—".into()
            } else {
                kept.join(" · ")
            },
        ]);
    }
    let mut deleted = Vec::new();
    for (policy, types) in &r.deleted {
        for (ty, n) in types {
            deleted.push(vec![policy.clone(), ty.clone(), n.to_string()]);
        }
    }
    let o = &p.objects;
    let fates = vec![
        vec![
            "deleted (linked only to deleted entities)".into(),
            o.delete.to_string(),
            bytes(o.delete_bytes),
        ],
        vec![
            "deleted as orphans (linked only to absent entities)".into(),
            o.orphan_delete.to_string(),
            bytes(o.orphan_delete_bytes),
        ],
        vec![
            "orphans still within technical.orphans.retain".into(),
            o.orphan_young.to_string(),
            String::new(),
        ],
        vec![
            format!(
                "redacted: shared with a kept entity, the deleted entities' {} records removed",
                o.redact_records
            ),
            o.redact.to_string(),
            bytes(o.redact_bytes),
        ],
        vec![
            "shared with a kept entity and not redactable (kept whole; residual)".into(),
            o.shared.to_string(),
            String::new(),
        ],
        vec![
            "linked to kept entities".into(),
            o.retained.to_string(),
            String::new(),
        ],
        vec![
            "unlinked (no rule matched; never deleted)".into(),
            o.unlinked.to_string(),
            String::new(),
        ],
        vec![
            "unreadable (never deleted on a content rule)".into(),
            o.unreadable.to_string(),
            String::new(),
        ],
        vec!["on legal hold".into(), o.held.to_string(), String::new()],
    ];
    let skipped: Vec<Vec<String>> = r
        .skipped
        .iter()
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    let failures: Vec<Vec<String>> = r
        .failures
        .iter()
        .map(|(w, why)| vec![w.clone(), why.clone()])
        .collect();
    let brake = if p.brake.is_empty() {
        "<p>Mass-delete brake: clear.</p>".to_string()
    } else {
        format!(
            "<p class=\"warn\">Mass-delete brake tripped:</p><ul>{}</ul>",
            p.brake
                .iter()
                .map(|b| format!("<li>{}</li>", escape(b)))
                .collect::<String>()
        )
    };
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lethe erasure report {id}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 62rem; color: #1d2330; padding: 0 1rem; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ccd; padding-bottom: .2rem; }}
.meta {{ color: #556; }} .cards {{ display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; }}
.card {{ border: 1px solid #ccd; border-radius: 6px; padding: .7rem 1rem; min-width: 9rem; }}
.card .v {{ font-size: 1.5rem; font-weight: 600; }} .card .l {{ color: #556; font-size: .85rem; }}
table {{ border-collapse: collapse; width: 100%; font-size: .92rem; }} th, td {{ border-bottom: 1px solid #e3e6ee; padding: .35rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f5f9; }} .warn {{ color: #a40000; font-weight: 600; }} .none {{ color: #778; }} code {{ font-size: .85rem; word-break: break-all; }}
</style></head>
<body>
<h1>Erasure report</h1>
<p class="meta">Plan <code>{id}</code> · as of {as_of} · status <b>{status}</b> · generated {generated} · config <code>{config}</code></p>
<div class="cards">{c1}{c2}{c3}{c4}{c5}</div>
<h2>Policies: what was due and what was kept, and why</h2>
{policies}
<h2>Deleted entities, per policy</h2>
{deleted}
<p>{gone} planned entities were already gone from the CRM when applied (reported, not audited as deleted by lethe).</p>
<h2>Technical objects</h2>
{fates}
<h2>Kept by the plan, and what it could not judge</h2>
<p>Objects not deleted (shared with a retained entity, orphans still within their grace, unlinked, unreadable, held), entities without a date, and parent references to no entity; at most {review_shown} rows here, every one with <code>lethe plan show {id} --items</code>.</p>
{kept_items}
<h2>Skipped at apply (changed since the plan)</h2>
{skipped}
<h2>Failures</h2>
{failures}
<h2>Cases becoming due in the next 12 months</h2>
{chart}
<h2>Proof</h2>
{residual}
<p>{records} audit records for this plan; the audit chain is <b>{intact}</b>. Chain head: <code>{head}</code></p>
<p>Entities and objects are named in this report only by pseudonym (HMAC-SHA256 with the audit key): <code>lethe audit lookup lead:4711</code> answers for one entity.</p>
{brake}
</body></html>
"##,
        residual = residual_html(r.verify.as_ref()),
        id = escape(&p.id),
        as_of = escape(&p.as_of),
        status = escape(&r.status),
        generated = escape(&r.generated_at),
        config = escape(&p.config_hash[..12.min(p.config_hash.len())]),
        c1 = card(
            "cases deleted",
            r.cases.get("done").copied().unwrap_or(0).to_string()
        ),
        c2 = card("entities deleted", deleted_entities.to_string()),
        c3 = card("objects deleted", objects_deleted.to_string()),
        c4 = card("bytes freed", bytes(r.bytes_freed)),
        c5 = card("failures", failed.to_string()),
        policies = table(
            &[
                "policy",
                "root",
                "retain",
                "legal basis",
                "read",
                "due cases",
                "inside a case due first under another policy",
                "kept cases, by reason"
            ],
            policies
        ),
        deleted = table(&["policy", "entity type", "deleted"], deleted),
        gone = r.entities_already_gone,
        fates = table(&["fate", "objects", "bytes"], fates),
        skipped = table(&["reason", "items"], skipped),
        review_shown = REVIEW_SHOWN,
        kept_items = table(
            &["fate", "item (pseudonym)", "size", "detail"],
            r.kept_items.clone()
        ),
        failures = table(&["item (pseudonym)", "reason"], failures),
        chart = chart(&p.due_by_month),
        records = r.audit_records,
        intact = if r.audit_intact { "intact" } else { "BROKEN" },
        head = escape(r.audit_head.as_deref().unwrap_or("(empty)")),
        brake = brake,
    )
}

/// A short text form for the terminal.
pub fn text(r: &Report) -> String {
    let deleted: u64 = r.deleted.values().flat_map(|m| m.values()).sum();
    let mut out = format!(
        "report for plan {}{} (as of {}, {}): {} deleted, {} entities, {} objects ({}), {} skipped, {} failed\n",
        r.plan.id,
        r.chosen
            .as_deref()
            .map(|c| format!(", {c}"))
            .unwrap_or_default(),
        r.plan.as_of,
        r.status,
        count(r.cases.get("done").copied().unwrap_or(0), "case", "cases"),
        deleted,
        r.objects.get("deleted").copied().unwrap_or(0),
        bytes(r.bytes_freed),
        r.skipped.values().sum::<u64>(),
        r.failures.len()
    );
    match &r.verify {
        Some(v) => out.push_str(&verify_text(v)),
        None => out.push_str("  verify: not run for this plan yet (`lethe verify`)\n"),
    }
    out.push_str(&format!(
        "  audit: {} records for this plan, chain {}, head {}\n",
        r.audit_records,
        if r.audit_intact { "intact" } else { "BROKEN" },
        r.audit_head.as_deref().unwrap_or("(empty)")
    ));
    let outlook: Vec<String> = r
        .plan
        .due_by_month
        .iter()
        .map(|(m, n)| format!("{m}: {n}"))
        .collect();
    out.push_str(&format!(
        "  due in the next 12 months: {}\n",
        outlook.join(", ")
    ));
    out
}
