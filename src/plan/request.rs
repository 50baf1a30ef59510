//! The plan of a subject request (Art. 17): like a sweep's, but its world
//! is only the subject's entities and their descendants as the CRM holds
//! them now (`Crm::subtrees`), judged by the request policies (one per
//! entity type, no retention period, every `keep_if`: what the law keeps
//! stays, each with its reason), and its objects are those the link index
//! links to these entities, with the other entities they link asked of the
//! CRM (present: retained; missing: absent). Written like any plan, marked
//! as the request's (never the brake's baseline), with what the caller
//! found for review (objects that name the subject but link none of its
//! entities: never deleted automatically).

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::crm::{CaseNow, Crm};
use crate::evaluate::{self, Evaluation, GraphBuilder};
use crate::model::EntityKey;
use crate::state::plans::NewReview;
use crate::state::{HoldKind, ObjectHolds, StateStore, q};

use super::objects::ObjectPlan;
use super::{HoldTally, PlanError, PlanSummary, World, brake, summary, write};

/// A request's plan, judged but not yet written.
pub struct RequestPlan {
    world: World,
    eval: Evaluation,
    as_of: jiff::Timestamp,
    /// The keys of the objects the plan gives a fate to (every object the
    /// index links to the subject's entities).
    pub linked_objects: HashSet<String>,
    entries: Vec<crate::index::IndexedEntry>,
    outside_present: HashSet<(String, String)>,
}

impl RequestPlan {
    /// The subject's entities (and descendants) the plan read: (type, key).
    pub fn entities(&self) -> Vec<(String, String)> {
        let g = &self.world.graph;
        g.nodes
            .iter()
            .map(|n| (g.types[n.ty as usize].clone(), n.key.canonical()))
            .collect()
    }

    /// The entities it reads, typed, per type index (for the identifiers'
    /// read).
    pub fn keys_by_type(&self) -> Vec<Vec<EntityKey>> {
        let g = &self.world.graph;
        let mut out = vec![Vec::new(); g.types.len()];
        for n in &g.nodes {
            out[n.ty as usize].push(n.key.clone());
        }
        out
    }
}

/// Judges the subject's subtrees (`cases`, as `Crm::subtrees` read them)
/// with the request policies at `as_of`, and gathers the objects linked to
/// them from the index and the CRM's answer on the other entities those
/// objects link.
pub async fn judge(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    cases: &[CaseNow],
    as_of: jiff::Timestamp,
) -> Result<RequestPlan, PlanError> {
    let types: Vec<String> = config.entities.iter().map(|e| e.name.clone()).collect();
    let parents_of = evaluate::graph::parent_types(config);
    let mut rows: Vec<&crate::crm::EntityNow> = cases.iter().flat_map(|c| &c.entities).collect();
    // Parents first, as the graph needs them.
    rows.sort_by_key(|e| e.ty);
    let mut builder = GraphBuilder::new(types.clone());
    for e in rows {
        if let Some(id) = builder.add_row(
            e.ty,
            e.key.clone(),
            e.clock,
            &parents_of[e.ty as usize],
            e.parents.clone(),
        ) {
            builder.node_mut(id).keep_bits = e.keep_bits;
        }
        // (None: reached twice, two roots sharing a descendant: one node.)
    }
    let mut graph = builder.finish();
    let holds = state.holds().await?;
    let mut tally = HoldTally::default();
    for h in &holds {
        match h.kind {
            HoldKind::Entity => {
                tally.entity_holds += 1;
                let r = crate::model::EntityRef::parse(&h.target).ok();
                if let Some(id) = r.and_then(|r| graph.resolve_named(&r.entity_type, &r.key)) {
                    graph.node_mut(id).held = true;
                }
            }
            _ => tally.object_holds += 1,
        }
    }
    let policies =
        crate::config::policy::request_policies(&config.type_names(), &config.compiled_policies);
    let eval = evaluate::evaluate(&graph, &policies, as_of.as_second());
    let world = World {
        graph,
        policies,
        conditions: config.keep_conditions.clone(),
        unreadable_clocks: 0,
        holds: tally,
        object_holds: ObjectHolds::from_holds(&holds),
        entity_holds: super::world::held_refs(&holds),
    };

    // The objects linked to the subject's entities, and what else they link.
    let mine: Vec<(String, String)> = {
        let g = &world.graph;
        g.nodes
            .iter()
            .map(|n| (g.types[n.ty as usize].clone(), n.key.canonical()))
            .collect()
    };
    let uuid_types = crate::crm::refs::KeyKinds::read(config, crm)
        .await?
        .uuid_types();
    let entries = crate::state::index::entries_linking(state, &mine, &uuid_types).await?;
    let mine: HashSet<(String, String)> = mine.into_iter().collect();
    let mut others: std::collections::BTreeMap<String, Vec<EntityKey>> = Default::default();
    for e in &entries {
        for (ty, key) in &e.links {
            if mine.contains(&(ty.clone(), key.clone())) {
                continue;
            }
            let list = others.entry(ty.clone()).or_default();
            list.push(EntityKey::Text(key.clone()));
            if let Ok(i) = key.parse::<i64>()
                && i.to_string() == *key
            {
                list.push(EntityKey::Int(i));
            }
        }
    }
    let mut outside_present = HashSet::new();
    for (ty, keys) in &others {
        let Some(et) = config.entity(ty) else {
            continue;
        };
        for k in crm.existing(et, keys).await? {
            outside_present.insert((ty.clone(), k.canonical()));
        }
    }
    Ok(RequestPlan {
        linked_objects: entries.iter().map(|e| e.key.clone()).collect(),
        world,
        eval,
        as_of,
        entries,
        outside_present,
    })
}

/// Writes the request's plan in one transaction, with `review` (what the
/// caller found for review besides the plan's own kept objects). The
/// mass-delete brake measures against the CRM's whole tables (`totals`,
/// per type in config order); a request's plan reads only the subject's
/// entities, so the brake's other measures (dangling references, a type
/// read shorter than before) do not apply to it.
pub async fn write(
    config: &Config,
    state: &StateStore,
    plan: RequestPlan,
    request_id: &str,
    totals: &[u64],
    review: Vec<NewReview>,
    started: std::time::Instant,
) -> Result<PlanSummary, PlanError> {
    let _planner = state.lock_plan(false).await?;
    let RequestPlan {
        world,
        eval,
        as_of,
        entries,
        outside_present,
        ..
    } = plan;
    let as_of_s = as_of.as_second();
    let now = jiff::Timestamp::now();
    let counts = world.graph.counts();
    let mut s = PlanSummary {
        id: super::new_plan_id(now),
        as_of: as_of.to_string(),
        created_at: jiff::Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
        config_hash: config.hash.clone(),
        index_run: super::index_run(state).await?,
        request: Some(request_id.to_string()),
        ..summary::of_evaluation(config, &world, &eval, &counts, as_of)
    };
    // Parents outside the subject's subtrees are not missing.
    s.dangling.clear();
    s.dangling_parents = 0;
    s.due_by_month.clear();
    for p in &mut s.policies {
        p.due_by_month.clear();
    }

    let mut digest = Sha256::new();
    let mut tx = state.begin_write().await.map_err(q("writing the plan"))?;
    write::cases(&mut tx, &s.id, &world, &eval, &mut digest).await?;
    let mut objects =
        ObjectPlan::new(config, &world, &eval, as_of_s).with_outside(&outside_present);
    for e in entries {
        objects.add(e);
    }
    let (tally, to_delete, mut all_review) = objects.finish();
    s.objects = tally;
    write::objects(&mut tx, &s.id, &to_delete, &mut digest).await?;
    all_review.extend(
        write::entity_review(&world.graph)
            .into_iter()
            .filter(|r| r.kind != "dangling"),
    );
    all_review.extend(review);
    crate::state::plans::write_review(&mut tx, &s.id, &all_review).await?;
    let indexed = state.indexed_count().await?;
    s.brake = brake::mass_delete(config, &s, totals, indexed, &world.graph.types);
    s.digest = hex::encode(digest.finalize());
    s.seconds = started.elapsed().as_secs_f64();
    write::plan(&mut tx, as_of_s, &s).await?;
    tx.commit().await.map_err(q("writing the plan"))?;
    Ok(s)
}
