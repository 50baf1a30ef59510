//! Why an entity is kept, or when it becomes due, as data: the cases that
//! contain it and each policy's verdict on them. `lethe explain --format
//! json` and the API's `/v1/entities/{ref}/explain` print this document.

use crate::audit::pseudonym::Pseudonymizer;
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

/// At most this many linked objects are listed (all are counted).
pub const OBJECTS_LISTED: usize = 100;

/// The objects the index links to `entity` (type, key), by pseudonym: for
/// each, whether the entity is linked by a record of it only (the object
/// can be redacted of it) and whether other entities share it. Adds
/// `objects` (at most [`OBJECTS_LISTED`]) and `objects_linked` to `doc`.
pub fn add_objects(
    doc: &mut serde_json::Value,
    entity: &(String, String),
    entries: &[crate::state::index::IndexedEntry],
    pseudo: &Pseudonymizer,
) {
    let listed: Vec<serde_json::Value> = entries
        .iter()
        .take(OBJECTS_LISTED)
        .map(|e| {
            let mine: Vec<bool> = e.links.iter().map(|l| l == entity).collect();
            let by_record = e
                .records
                .iter()
                .zip(&mine)
                .filter(|(_, m)| **m)
                .all(|((_, record), _)| record.is_some());
            serde_json::json!({
                "object": pseudo.show_object(&e.key),
                "links": mine.iter().filter(|m| **m).count(),
                "by_record": by_record,
                "shared": mine.iter().any(|m| !m),
            })
        })
        .collect();
    doc["objects_linked"] = serde_json::json!(entries.len());
    doc["objects"] = serde_json::Value::Array(listed);
}
