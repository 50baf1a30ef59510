//! The report for the data protection officer: what a plan deleted and kept
//! and why, per policy and reason, bytes freed, failures (by pseudonym), the
//! audit chain head, and an outlook of cases becoming due per month. Built
//! from the plan and its journal; rendered as JSON, text, or one
//! self-contained HTML page (inline CSS and SVG, nothing fetched; `page.rs`).

use std::collections::BTreeMap;

use serde::Serialize;

mod page;

pub use page::{escape, html};

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
    /// Subject requests not done, and those past their due date.
    pub requests: RequestsDue,
}

/// The subject requests a data protection officer must answer: how many
/// are open, and the overdue ones (id, reference, due date).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestsDue {
    pub open: u64,
    pub overdue: Vec<(String, String, String)>,
}

async fn requests_due(state: &StateStore) -> Result<RequestsDue, StateError> {
    let today = crate::request::today().to_string();
    let mut out = RequestsDue::default();
    for r in crate::state::requests::list(state, 10_000).await? {
        if r.status.is_done() {
            continue;
        }
        out.open += 1;
        if r.due < today {
            out.overdue.push((r.id, r.reference, r.due));
        }
    }
    Ok(out)
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
        requests: requests_due(state).await?,
    })
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

/// Review rows shown in a report (`plan show --items` lists all).
pub const REVIEW_SHOWN: usize = 500;

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
    if r.requests.open > 0 || r.plan.reimported > 0 {
        out.push_str(&format!(
            "  subject requests: {} open, {} OVERDUE{}; re-imported subjects in this plan: {}\n",
            r.requests.open,
            r.requests.overdue.len(),
            r.requests
                .overdue
                .iter()
                .map(|(id, reference, due)| format!(" {id} ({reference}, due {due})"))
                .collect::<Vec<_>>()
                .join(","),
            r.plan.reimported
        ));
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
