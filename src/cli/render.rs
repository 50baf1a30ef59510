//! Human-facing text for each command's result. Counts and pseudonyms only:
//! a key appears here only as the user typed it.

use crate::apply::ApplyReport;
use crate::audit::Verification;
use crate::evaluate::{Aggregate, Kept, NodeId, Verdict};
use crate::index::IndexSummary;
use crate::model::format_instant;
use crate::plan::{PlanSummary, World};
use crate::state::Hold;
use crate::verify::VerifyReport;

pub use crate::report::{bytes, count};

pub fn index(s: &IndexSummary) -> String {
    let mut out = format!(
        "index: {} ({}) — {} read ({}, {}/s; {} unreadable), {} unchanged, {} removed, {} skipped entries — {:.1}s\n",
        count(s.objects_seen, "object", "objects"),
        bytes(s.bytes_listed),
        s.objects_read,
        bytes(s.bytes_read),
        bytes(s.bytes_per_second as u64),
        s.run_objects_unreadable,
        s.objects_unchanged,
        s.objects_removed,
        s.entries_skipped,
        s.seconds
    );
    out.push_str(&format!(
        "  in the index: {} unreadable\n",
        s.objects_unreadable
    ));
    for (i, n) in s.links_per_rule.iter().enumerate() {
        let run = s.run_links_per_rule.get(i).copied().unwrap_or(0);
        out.push_str(&format!(
            "  rule {i}: {n} links in the index ({run} from this run's reads)\n"
        ));
    }
    out
}

pub fn plan(s: &PlanSummary, standalone: bool) -> String {
    let mut out = format!("plan {} as of {}\n", s.id, s.as_of);
    let read: Vec<String> = s
        .entities_read
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    out.push_str(&format!(
        "  read: {} ({} undatable, {} with an unreadable clock, {} dangling parent refs)\n",
        read.join(", "),
        s.undatable_entities,
        s.unreadable_clocks,
        s.dangling_parents
    ));
    for p in &s.policies {
        out.push_str(&format!(
            "  policy {} ({}, retain {}; {})\n",
            p.name, p.root, p.retain, p.basis
        ));
        out.push_str(&format!("    {}\n", policy_counts(p)));
        if !p.kept.is_empty() {
            let kept: Vec<String> = p.kept.iter().map(|(r, n)| format!("{n} {r}")).collect();
            out.push_str(&format!("    kept: {}\n", kept.join(" · ")));
        }
    }
    let del: Vec<String> = s
        .entities_to_delete
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    out.push_str(&format!(
        "  to delete: {}{} → {}\n",
        count(s.cases, "case", "cases"),
        if s.cases_absorbed > 0 {
            format!(
                " (each a due root with all its descendants; {} more due {} inside them and go with them)",
                s.cases_absorbed,
                if s.cases_absorbed == 1 { "root lies" } else { "roots lie" }
            )
        } else {
            String::new()
        },
        if del.is_empty() {
            "nothing".into()
        } else {
            del.join(", ")
        }
    ));
    let o = &s.objects;
    out.push_str(&format!(
        "  objects: {} indexed — delete {} ({}) · orphan delete {} ({}) · orphan young {} · redact {} ({} records of {}{}) · shared {} · retained {} · unlinked {} · unreadable {} · held {}\n",
        o.total,
        o.delete,
        bytes(o.delete_bytes),
        o.orphan_delete,
        bytes(o.orphan_delete_bytes),
        o.orphan_young,
        o.redact,
        o.redact_records,
        bytes(o.redact_bytes),
        if o.redact_absent_records > 0 {
            format!(
                "; {} of them of entities absent from the CRM",
                o.redact_absent_records
            )
        } else {
            String::new()
        },
        o.shared,
        o.retained,
        o.unlinked,
        o.unreadable,
        o.held
    ));
    if s.holds.entity_holds + s.holds.object_holds > 0 {
        out.push_str(&format!(
            "  holds: {} on entities ({} on entities not in the CRM), {} on objects\n",
            s.holds.entity_holds, s.holds.entity_holds_on_absent, s.holds.object_holds
        ));
    }
    if s.brake.is_empty() {
        out.push_str("  brake: clear\n");
    } else {
        out.push_str("  BRAKE: this plan needs --allow-mass-delete:\n");
        for b in &s.brake {
            out.push_str(&format!("    - {b}\n"));
        }
    }
    if standalone {
        out.push_str(&format!(
            "  planned in {:.1}s; nothing was deleted. Apply with: lethe apply {}\n",
            s.seconds, s.id
        ));
    }
    out
}

/// One policy's counts that add up: of N read, due (own cases and inside
/// others), kept, and inside a case another policy found due first.
pub(crate) fn policy_counts(p: &crate::plan::PolicySummary) -> String {
    let kept: u64 = p.kept.values().sum();
    let mut due = format!("{} due", p.due);
    if p.due_inside_other > 0 {
        due.push_str(&format!(
            " ({} as {}, {} inside another due case)",
            p.due - p.due_inside_other,
            if p.due - p.due_inside_other == 1 {
                "a case of its own"
            } else {
                "cases of their own"
            },
            p.due_inside_other
        ));
    }
    let mut line = format!("of {} {} read: {due}, {kept} kept", p.read, p.root);
    if p.inside_due_case > 0 {
        line.push_str(&format!(
            ", {} inside a case another policy found due first (deleted with it)",
            p.inside_due_case
        ));
    }
    line
}

pub fn plan_list(plans: &[crate::plan::PlanListRow]) -> String {
    if plans.is_empty() {
        return "no plans stored\n".into();
    }
    plans
        .iter()
        .map(|p| {
            format!(
                "{}  created {}  as of {}  {}\n",
                p.id, p.created_at, p.as_of, p.status
            )
        })
        .collect()
}

pub fn apply(r: &ApplyReport, v: Option<&VerifyReport>) -> String {
    if r.already_applied {
        return format!("plan {}: already applied; nothing to do\n", r.plan_id);
    }
    let mut deleted: Vec<String> = r
        .entities_deleted
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    deleted.sort();
    let mut out = format!(
        "apply {}: {} deleted, {} skipped, {} failed — {} ({}), {} already gone\n",
        r.plan_id,
        count(r.cases_done, "case", "cases"),
        r.cases_skipped,
        r.cases_failed,
        count(
            r.entities_deleted.values().sum::<u64>(),
            "entity",
            "entities"
        ),
        if deleted.is_empty() {
            "none".into()
        } else {
            deleted.join(", ")
        },
        r.entities_already_gone
    );
    if r.all_skipped {
        out.push_str(
            "  NOTHING DELETED: every case was skipped at the re-check (the reasons follow); the CRM changed since the plan\n",
        );
    }
    if let Some(note) = &r.store_note {
        out.push_str(&format!("  NOTE {note}\n"));
    }
    if r.interrupted {
        out.push_str(
            "  STOPPED on request after the batch in flight; `lethe apply` resumes the plan\n",
        );
    }
    out.push_str(&format!(
        "  objects: {} deleted ({} freed), {} redacted ({} records of deleted entities removed, {}), {} already gone, {} skipped, {} failed\n",
        r.objects_deleted,
        bytes(r.bytes_freed),
        r.objects_redacted,
        r.records_removed,
        bytes(r.bytes_redacted),
        r.objects_already_gone,
        r.objects_skipped,
        r.objects_failed
    ));
    if r.identifiers_unsearchable > 0 {
        out.push_str(&format!(
            "  NOTE {} identifier values of deleted rows were neither an e-mail address nor a phone number of 7+ digits: not searched for\n",
            r.identifiers_unsearchable
        ));
    }
    let mut reasons: Vec<_> = r.skipped_reasons.iter().collect();
    reasons.sort();
    for (reason, n) in reasons {
        out.push_str(&format!("  skipped {n}: {reason}\n"));
    }
    for (item, reason) in &r.failures {
        out.push_str(&format!("  FAILED {item}: {reason}\n"));
    }
    for note in &r.crm_notes {
        out.push_str(&format!("  {note}\n"));
    }
    if let Some(v) = v {
        out.push_str(&verify_lines(v));
    }
    if let Some(h) = &r.audit_head {
        out.push_str(&format!("  audit chain head: {h}\n"));
    }
    out.push_str(&format!(
        "  took {:.1}s ({:.1}s CRM, {:.1}s objects)\n",
        r.seconds, r.seconds_cases, r.seconds_objects
    ));
    out
}

/// `lethe verify`: the verdict on one plan.
pub fn verify(plan_id: &str, v: &VerifyReport) -> String {
    format!("verify {plan_id}\n{}", verify_lines(v))
}

/// What verify proved, and what it did not (the report's words).
fn verify_lines(v: &VerifyReport) -> String {
    crate::report::verify_text(v)
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Due => "DUE: deleted by the next sweep".into(),
        Verdict::Kept(Kept::Young { due_at }) => format!(
            "kept: retention running, due at {}",
            format_instant(*due_at)
        ),
        Verdict::Kept(k) => format!("kept: {}", k.label()),
    }
}

pub fn explain(
    entity: &str,
    pseudo: &crate::audit::pseudonym::Pseudonymizer,
    world: &World,
    id: NodeId,
    cases: &[(usize, NodeId, Aggregate, Verdict)],
    deleted: bool,
    as_of: i64,
) -> String {
    let mut out = format!("{entity} as of {}\n", format_instant(as_of));
    if cases.is_empty() {
        out.push_str("  in no case of any policy (no policy's root type is this type or an ancestor of it): kept\n");
    }
    let pseudo_of = |id: NodeId| {
        let n = world.graph.node(id);
        pseudo.show_entity(&world.graph.types[n.ty as usize], &n.key.canonical())
    };
    for (pi, root, agg, verdict) in cases {
        let p = &world.policies[*pi];
        let case = if *root == id {
            "its own case".to_string()
        } else {
            format!("the case of {}", pseudo_of(*root))
        };
        out.push_str(&format!(
            "  policy {} ({}, retain {}): {case}; case clock {}\n    {}\n",
            p.name,
            world.graph.types[p.root as usize],
            p.retain.text(),
            agg.clock
                .map(format_instant)
                .unwrap_or_else(|| "none (undatable)".into()),
            verdict_text(verdict)
        ));
    }
    out.push_str(if deleted {
        "  → the next sweep at this instant deletes it\n"
    } else {
        "  → it stays\n"
    });
    out
}

pub use crate::plan::explain::explain_json;

pub fn holds(holds: &[Hold]) -> String {
    use crate::holds::escape;
    if holds.is_empty() {
        return "no holds\n".into();
    }
    holds
        .iter()
        .map(|h| {
            // Stored holds may predate the checks on what a hold may say.
            format!(
                "{}  reason: {}  by {} at {}\n",
                escape(&crate::holds::canonical(h.kind, &h.target)),
                escape(&h.reason),
                escape(&h.author),
                crate::holds::show_instant(&h.created_at)
            )
        })
        .collect()
}

pub fn audit_verify(v: &Verification) -> String {
    if v.problems.is_empty() {
        format!(
            "audit chain intact: {} records; head {}\n  journal and audit agree: {} deleted items, one record each\n",
            v.records,
            v.head.as_deref().unwrap_or("(empty)"),
            v.journal_deleted
        ) + &if v.of_pruned_plans > 0 {
            format!(
                "  {} delete records of pruned plans: chained, no journal left to compare\n",
                v.of_pruned_plans
            )
        } else {
            String::new()
        }
    } else {
        let mut out = format!("AUDIT CHAIN BROKEN ({} records):\n", v.records);
        for p in &v.problems {
            out.push_str(&format!("  - {p}\n"));
        }
        out
    }
}

/// `plan show`: the stored summary with its status, digest and the
/// dangling relations one by one.
pub fn plan_header(s: &PlanSummary, status: &str) -> String {
    let body = plan(s, false);
    let (first, rest) = body.split_once('\n').unwrap_or((body.as_str(), ""));
    let mut out = format!(
        "{first}\n  status: {status}\n  digest: {}\n  created: {}\n{rest}",
        s.digest, s.created_at
    );
    for d in &s.dangling {
        out.push_str(&format!(
            "  dangling: {} of {} {} name a {} that does not exist ({})\n",
            d.count, d.of, d.entity, d.parent, d.column
        ));
    }
    out
}
