//! The plan's summary of what it read and judged: entities read per type,
//! undatable entities and dangling references, each policy's due and kept
//! cases, what is due in the next 12 months, and what the plan deletes per
//! type. Counts only: a summary never holds keys or subject data.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::evaluate::{self, Evaluation};
use crate::model::Instant;

use super::{DanglingRelation, PlanSummary, PolicySummary, World};

/// The summary of an evaluation of `world` as of `as_of`; `counts` are the
/// graph's entities per type. The plan's own fields (id, times, config
/// hash, index run, objects, brake, digest) are the caller's.
pub(super) fn of_evaluation(
    config: &Config,
    world: &World,
    eval: &Evaluation,
    counts: &[u64],
    as_of: jiff::Timestamp,
) -> PlanSummary {
    let graph = &world.graph;
    let mut s = PlanSummary {
        unreadable_clocks: world.unreadable_clocks,
        dangling_parents: graph.dangling_parents,
        holds: world.holds.clone(),
        cases: eval.cases.len() as u64,
        cases_absorbed: eval.cases.iter().map(|c| c.absorbed as u64).sum(),
        ..Default::default()
    };
    for (i, t) in graph.types.iter().enumerate() {
        s.entities_read.insert(t.clone(), counts[i]);
    }
    for (&(child, parent), &count) in &graph.dangling {
        let (child_name, parent_name) =
            (&graph.types[child as usize], &graph.types[parent as usize]);
        let column = config
            .entity(child_name)
            .and_then(|e| e.parents.iter().find(|(p, _)| p == parent_name))
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        s.dangling.push(DanglingRelation {
            entity: child_name.clone(),
            parent: parent_name.clone(),
            column,
            count,
            of: counts[child as usize],
        });
    }
    s.undatable_entities = graph.nodes.iter().filter(|n| n.clock.is_none()).count() as u64;
    for (pi, p) in world.policies.iter().enumerate() {
        s.policies.push(PolicySummary {
            name: p.name.clone(),
            root: graph.types[p.root as usize].clone(),
            retain: p.retain.text().to_string(),
            basis: p.basis.clone(),
            read: eval.tallies[pi].roots,
            due: eval.tallies[pi].due,
            due_inside_other: eval.tallies[pi].due_inside_other,
            kept: eval.tallies[pi].kept.clone(),
            inside_due_case: eval.tallies[pi].inside_due_case,
            due_by_month: due_by_month(as_of, eval.tallies[pi].due_later.iter().copied()),
        });
    }
    s.due_by_month = due_by_month(
        as_of,
        eval.tallies
            .iter()
            .flat_map(|t| t.due_later.iter().copied()),
    );
    let mut deleting = vec![0u64; graph.types.len()];
    for (id, c) in eval.case_of.iter().enumerate() {
        if *c != evaluate::NOT_DELETED {
            deleting[graph.nodes[id].ty as usize] += 1;
        }
    }
    for (i, t) in graph.types.iter().enumerate() {
        if deleting[i] > 0 {
            s.entities_to_delete.insert(t.clone(), deleting[i]);
        }
    }
    s
}

/// Buckets due instants into the 12 calendar months (UTC) after `as_of`.
pub fn due_by_month(
    as_of: jiff::Timestamp,
    due: impl Iterator<Item = Instant>,
) -> BTreeMap<String, u64> {
    let start = as_of
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .first_of_month();
    let mut months = BTreeMap::new();
    for i in 0..12 {
        if let Ok(m) = start.checked_add(jiff::Span::new().months(i)) {
            months.insert(m.strftime("%Y-%m").to_string(), 0u64);
        }
    }
    for at in due {
        if let Ok(ts) = jiff::Timestamp::from_second(at) {
            let key = ts
                .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .strftime("%Y-%m")
                .to_string();
            if let Some(n) = months.get_mut(&key) {
                *n += 1;
            }
        }
    }
    months
}
