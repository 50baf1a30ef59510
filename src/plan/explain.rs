//! Why an entity is kept, or when it becomes due, as data: the cases that
//! contain it and each policy's verdict on them. `lethe explain --format
//! json` and the API's `/v1/entities/{ref}/explain` print this document.

use crate::evaluate::{Aggregate, Kept, NodeId, Verdict};
use crate::model::format_instant;
use crate::plan::World;

/// The explanation of `entity` from the cases containing it.
pub fn explain_json(
    entity: &str,
    world: &World,
    cases: &[(usize, NodeId, Aggregate, Verdict)],
    deleted: bool,
) -> serde_json::Value {
    let cases: Vec<serde_json::Value> = cases
        .iter()
        .map(|(pi, _root, agg, verdict)| {
            let p = &world.policies[*pi];
            let (due, reason, due_at) = match verdict {
                Verdict::Due => (true, None, None),
                Verdict::Kept(Kept::Young { due_at }) => (
                    false,
                    Some("retention running".to_string()),
                    Some(format_instant(*due_at)),
                ),
                Verdict::Kept(k) => (false, Some(k.label()), None),
            };
            serde_json::json!({
                "policy": p.name,
                "case_clock": agg.clock.map(format_instant),
                "due": due,
                "kept_because": reason,
                "due_at": due_at,
            })
        })
        .collect();
    serde_json::json!({
        "entity": entity, "exists": true, "deleted_by_next_sweep": deleted, "cases": cases
    })
}
