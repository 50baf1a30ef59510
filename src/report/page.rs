//! The report as one self-contained HTML page: a function a section
//! (headline cards, policies, deleted entities, objects by fate, the brake,
//! the outlook chart, the residual scan), each table escaped cell by cell.

use std::collections::BTreeMap;

use super::{REVIEW_SHOWN, Report, bytes, verify_text};
use crate::plan::{ObjectTally, PlanSummary};

/// The report as one self-contained HTML page (inline CSS and SVG).
pub fn html(r: &Report) -> String {
    let p = &r.plan;
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
<div class="cards">{cards}</div>
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
<h2>Subject requests</h2>
{requests}
<h2>Proof</h2>
{residual}
<p>{records} audit records for this plan; the audit chain is <b>{intact}</b>. Chain head: <code>{head}</code></p>
<p>Entities and objects are named in this report only by pseudonym (HMAC-SHA256 with the audit key): <code>lethe audit lookup lead:4711</code> answers for one entity.</p>
{brake}
</body></html>
"##,
        residual = residual_html(r.verify.as_ref()),
        requests = requests_html(r),
        id = escape(&p.id),
        as_of = escape(&p.as_of),
        status = escape(&r.status),
        generated = escape(&r.generated_at),
        config = escape(&p.config_hash[..12.min(p.config_hash.len())]),
        cards = cards(r),
        policies = policies(p),
        deleted = deleted(r),
        gone = r.entities_already_gone,
        fates = fates(&p.objects),
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
        brake = brake(p),
    )
}

/// The headline figures.
fn cards(r: &Report) -> String {
    let deleted_entities: u64 = r.deleted.values().flat_map(|m| m.values()).sum();
    let objects_deleted = r.objects.get("deleted").copied().unwrap_or(0);
    let card = |label: &str, value: String| {
        format!(
            "<div class=\"card\"><div class=\"v\">{}</div><div class=\"l\">{}</div></div>",
            escape(&value),
            escape(label)
        )
    };
    [
        card(
            "cases deleted",
            r.cases.get("done").copied().unwrap_or(0).to_string(),
        ),
        card("entities deleted", deleted_entities.to_string()),
        card("objects deleted", objects_deleted.to_string()),
        card("bytes freed", bytes(r.bytes_freed)),
        card("failures", r.failures.len().to_string()),
    ]
    .concat()
}

/// Each policy: what it read, found due and kept, and why.
fn policies(p: &PlanSummary) -> String {
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
    table(
        &[
            "policy",
            "root",
            "retain",
            "legal basis",
            "read",
            "due cases",
            "inside a case due first under another policy",
            "kept cases, by reason",
        ],
        policies,
    )
}

/// The entities deleted, per policy and type.
fn deleted(r: &Report) -> String {
    let mut deleted = Vec::new();
    for (policy, types) in &r.deleted {
        for (ty, n) in types {
            deleted.push(vec![policy.clone(), ty.clone(), n.to_string()]);
        }
    }
    table(&["policy", "entity type", "deleted"], deleted)
}

/// The technical objects, by fate.
fn fates(o: &ObjectTally) -> String {
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
                "redacted: kept for other entities, {} records removed ({} of them of entities long absent from the CRM, the rest of deleted ones)",
                o.redact_records, o.redact_absent_records
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
    table(&["fate", "objects", "bytes"], fates)
}

/// The mass-delete brake: clear, or its reasons.
fn brake(p: &PlanSummary) -> String {
    if p.brake.is_empty() {
        "<p>Mass-delete brake: clear.</p>".to_string()
    } else {
        format!(
            "<p class=\"warn\">Mass-delete brake tripped:</p><ul>{}</ul>",
            p.brake
                .iter()
                .map(|b| format!("<li>{}</li>", escape(b)))
                .collect::<String>()
        )
    }
}

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

/// The subject requests still to answer, the overdue ones named, and the
/// re-imported subjects the plan found.
fn requests_html(r: &Report) -> String {
    let q = &r.requests;
    let mut out = format!(
        "<p>{} open request{}; {}. Entities carrying an identifier of a person lethe erased (re-imported): {}.</p>",
        q.open,
        if q.open == 1 { "" } else { "s" },
        if q.overdue.is_empty() {
            "none overdue".to_string()
        } else {
            format!("<span class=\"warn\">{} overdue</span>", q.overdue.len())
        },
        r.plan.reimported
    );
    if !q.overdue.is_empty() {
        out.push_str("<table><tr><th>Request</th><th>Reference</th><th>Due</th></tr>");
        for (id, reference, due) in &q.overdue {
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"warn\">{}</td></tr>",
                escape(id),
                escape(reference),
                escape(due)
            ));
        }
        out.push_str("</table>");
    }
    out
}
