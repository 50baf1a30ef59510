//! The plan's reading of the world: the CRM's entities into the graph
//! (parents-first, as `evaluate::graph` wants them), the keep conditions'
//! matches as bits on the nodes, the legal holds, and the policies compiled
//! against the graph's types.

use crate::config::{Config, KeepRule};
use crate::crm::Crm;
use crate::evaluate::{self, CompiledPolicy, Graph, GraphBuilder};
use crate::model::EntityKey;
use crate::state::{HoldKind, ObjectHolds, StateStore};

use super::{HoldTally, PlanError};

/// The conditional keep rules of all policies, in bit order (compiled at
/// config load).
pub fn conditions(config: &Config) -> Vec<KeepRule> {
    config.keep_conditions.clone()
}

/// Everything the evaluation needs, read from the CRM and the holds.
pub struct World {
    pub graph: Graph,
    pub policies: Vec<CompiledPolicy>,
    pub conditions: Vec<KeepRule>,
    pub unreadable_clocks: u64,
    pub holds: HoldTally,
    pub object_holds: ObjectHolds,
    /// The refs of the entity holds (`type`, key as the hold names it): an
    /// object's link to one that is not in the CRM keeps the object (and
    /// its record), for a hold on an absent entity holds its payloads.
    pub entity_holds: std::collections::HashSet<(String, String)>,
}

/// The refs entity holds name.
pub(super) fn held_refs(
    holds: &[crate::state::Hold],
) -> std::collections::HashSet<(String, String)> {
    holds
        .iter()
        .filter(|h| h.kind == HoldKind::Entity)
        .filter_map(|h| crate::model::EntityRef::parse(&h.target).ok())
        .map(|r| (r.entity_type, r.key))
        .collect()
}

/// Reads the CRM into the graph and marks holds and keep conditions.
pub async fn load_world(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<World, PlanError> {
    let holds = state.holds().await?;
    let types: Vec<String> = config.entities.iter().map(|e| e.name.clone()).collect();
    let mut builder = GraphBuilder::new(types.clone());
    let mut unreadable_clocks = 0u64;
    let parents_of = evaluate::graph::parent_types(config);
    for (ti, et) in config.entities.iter().enumerate() {
        let parent_types = &parents_of[ti];
        let mut n = 0u64;
        crm.scan(et, &mut |row| {
            if row.clock_unreadable {
                unreadable_clocks += 1;
            }
            let parents: Vec<(u16, Option<EntityKey>)> =
                parent_types.iter().copied().zip(row.parents).collect();
            builder.add(ti as u16, row.key, row.clock, &parents);
            n += 1;
            if n.is_multiple_of(100_000) {
                progress(&et.name, n);
            }
        })
        .await?;
        progress(&et.name, n);
    }
    let conditions = conditions(config);
    let mut graph = builder.finish();
    for (bit, rule) in conditions.iter().enumerate() {
        let (Some(et), Some(cond)) = (config.entity(&rule.entity), &rule.condition) else {
            continue;
        };
        let ty = graph.type_index(&et.name).unwrap_or(0);
        let mut hits = Vec::new();
        crm.matching(et, cond, &mut |k| hits.push(k)).await?;
        for k in hits {
            if let Some(id) = graph.resolve_key(ty, &k) {
                graph.node_mut(id).keep_bits |= 1 << bit;
            }
        }
    }
    let tally = mark_holds(&mut graph, &holds);
    let policies = config.compiled_policies.clone();
    Ok(World {
        graph,
        policies,
        conditions,
        unreadable_clocks,
        holds: tally,
        object_holds: ObjectHolds::from_holds(&holds),
        entity_holds: held_refs(&holds),
    })
}

/// Marks the entities on hold; counts the holds by kind.
fn mark_holds(graph: &mut Graph, holds: &[crate::state::Hold]) -> HoldTally {
    let mut tally = HoldTally::default();
    for h in holds {
        match h.kind {
            HoldKind::Entity => {
                tally.entity_holds += 1;
                let r = crate::model::EntityRef::parse(&h.target).ok();
                match r.and_then(|r| graph.resolve_named(&r.entity_type, &r.key)) {
                    Some(id) => graph.node_mut(id).held = true,
                    None => tally.entity_holds_on_absent += 1,
                }
            }
            _ => tally.object_holds += 1,
        }
    }
    tally
}

/// The world of one entity for `explain`: its connected component of the
/// CRM graph (`Crm::component`: a few indexed look-ups, whatever the CRM's
/// size), marked with keep conditions and holds as [`load_world`] marks the
/// whole graph, and the entity's node in it. Every verdict on a case
/// containing the entity, and whether the evaluation deletes it, is the
/// same as on the whole graph: the evaluation never crosses from one
/// component to another. `None` when the entity is not in the CRM.
/// `unreadable_clocks` and the hold tally count this component only.
pub async fn load_component(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    entity_type: &str,
    key: &EntityKey,
) -> Result<Option<(World, evaluate::NodeId)>, PlanError> {
    let Some(ty) = config.entity_index(entity_type) else {
        return Ok(None);
    };
    let holds = state.holds().await?;
    let conditions = conditions(config);
    let input = crate::crm::ComponentInput {
        entities: config.entities.clone(),
        conditions: conditions.clone(),
        start_ty: ty as u16,
        start_key: key.clone(),
    };
    let rows = crm.component(&input).await?;
    let mut graph = component_graph(config, &rows);
    let tally = mark_holds(&mut graph, &holds);
    let Some(id) = graph.resolve_named(entity_type, &key.canonical()) else {
        return Ok(None);
    };
    Ok(Some((
        World {
            graph,
            policies: config.compiled_policies.clone(),
            conditions,
            unreadable_clocks: 0,
            holds: tally,
            object_holds: ObjectHolds::from_holds(&holds),
            entity_holds: held_refs(&holds),
        },
        id,
    )))
}

/// The graph of rows read by `Crm::component` (grouped by type in graph
/// order): added as the whole-graph load adds scanned rows, keep bits on
/// the node each row's key resolves to.
pub fn component_graph(config: &Config, rows: &[crate::crm::EntityNow]) -> Graph {
    let types: Vec<String> = config.entities.iter().map(|e| e.name.clone()).collect();
    let parents_of = evaluate::graph::parent_types(config);
    let mut builder = GraphBuilder::new(types);
    for r in rows {
        builder.add_row(
            r.ty,
            r.key.clone(),
            r.clock,
            &parents_of[r.ty as usize],
            r.parents.iter().cloned(),
        );
    }
    let mut graph = builder.finish();
    for r in rows.iter().filter(|r| r.keep_bits != 0) {
        if let Some(id) = graph.resolve_key(r.ty, &r.key) {
            graph.node_mut(id).keep_bits |= r.keep_bits;
        }
    }
    graph
}
