//! Property test of the safety rules: random CRM graphs (lead → opportunity
//! → quote → contract, clocks including NULL, holds, files linked to zero or
//! many entities, orphans) are evaluated by lethe and by a reference model
//! written independently here. What lethe deletes must equal what the model
//! deletes: nothing that should stay (safety), nothing due left (liveness).
//!
//! A third property gives shared multi-record files (CSV, JSON, XML) to the
//! plan's redaction decision and the redaction engine: exactly the records
//! of deleted entities go, the kept ones stay byte for byte, held and
//! whole-file-linked files are not touched.
//!
//! A fourth gives random subject requests to the request policies: exactly
//! the subject's entities that no hold or contract keeps go, and nothing of
//! anyone else.
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

/// A subject request on world `w`: the subject's entities are `subject`
/// (indices); the reference erasure of the model — their subtrees, each
/// entity judged on its own subtree with no retention period, kept when
/// something in it is held or is a contract (every policy's keep_if here) —
/// to a fixpoint, as the sweep's model does.
fn request_reference(w: &World, subject: &BTreeSet<usize>) -> (BTreeSet<usize>, BTreeSet<usize>) {
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
    let mut reach = BTreeSet::new();
    for &i in subject {
        subtree(i, &children, &mut reach);
    }
    let contract = TYPES.iter().position(|t| *t == "contract").unwrap();
    let mut deleted: BTreeSet<usize> = BTreeSet::new();
    loop {
        let mut grew = false;
        for &i in &reach {
            if deleted.contains(&i) {
                continue;
            }
            let mut case = BTreeSet::new();
            subtree(i, &children, &mut case);
            let live: Vec<&Entity> = case
                .iter()
                .filter(|j| !deleted.contains(j))
                .map(|j| &w.entities[*j])
                .collect();
            if !live.iter().any(|e| e.held || e.ty == contract) {
                deleted.extend(case);
                grew = true;
            }
        }
        if !grew {
            return (deleted, reach);
        }
    }
}

/// lethe's request evaluation: the graph of the subject's subtrees only (a
/// parent outside them is missing, as `Crm::subtrees` reads them), judged by
/// `request_policies`.
fn request_engine(w: &World, reach: &BTreeSet<usize>) -> BTreeSet<usize> {
    let types: Vec<String> = TYPES.iter().map(|s| s.to_string()).collect();
    let mut b = GraphBuilder::new(types.clone());
    let mut ids = BTreeMap::new();
    for ty in 0..4 {
        for (i, e) in w
            .entities
            .iter()
            .enumerate()
            .filter(|(i, e)| e.ty == ty && reach.contains(i))
        {
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
    let compiled: Vec<CompiledPolicy> = policies(w)
        .iter()
        .map(|p| CompiledPolicy::compile(p, &types, &[]).unwrap())
        .collect();
    let request = config::policy::request_policies(&types, &compiled);
    let eval = evaluate::evaluate(&graph, &request, AS_OF);
    (0..graph.len() as u32)
        .filter(|id| eval.is_deleted(*id))
        .map(|id| ids[&id])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// A random subject (some entities of any type) in a random world: the
    /// request deletes exactly what the model deletes; nothing of another
    /// subject (outside the subject's subtrees) goes; everything of the
    /// subject that stays is in a subtree with a hold or a contract.
    #[test]
    fn a_request_erases_exactly_the_subjects_unkept_entities(
        w in world(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let subject: BTreeSet<usize> = picks.iter().map(|p| p.index(w.entities.len())).collect();
        let (expected, reach) = request_reference(&w, &subject);
        let deleted = request_engine(&w, &reach);
        prop_assert_eq!(&deleted, &expected);
        prop_assert!(deleted.is_subset(&reach), "an entity of another subject was deleted");
        for (i, e) in w.entities.iter().enumerate() {
            if deleted.contains(&i) {
                prop_assert!(!e.held, "a held entity was deleted");
                prop_assert!(TYPES[e.ty] != "contract", "a contract was deleted");
            }
        }
        let contract = TYPES.iter().position(|t| *t == "contract").unwrap();
        for &i in reach.difference(&deleted) {
            // Kept: its own subtree (what is left of it) holds a hold or a contract.
            let mut stack = vec![i];
            let mut kept_for_a_reason = false;
            while let Some(x) = stack.pop() {
                let e = &w.entities[x];
                if e.held || e.ty == contract {
                    kept_for_a_reason = true;
                    break;
                }
                stack.extend(
                    w.entities
                        .iter()
                        .enumerate()
                        .filter(|(j, c)| c.parent == Some(x) && !deleted.contains(j))
                        .map(|(j, _)| j),
                );
            }
            prop_assert!(kept_for_a_reason, "entity {} of the subject stays without a reason", i);
        }
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

/// A multi-record file: its format (0 CSV, 1 JSON, 2 XML), its records
/// (each links one lead key: an existing lead's, or above 10_000 an absent
/// one), whether a whole-file link also names the first record's lead, its
/// age in days, whether it is held.
type SharedFile = (u8, Vec<(prop::sample::Index, bool)>, bool, i64, bool);

fn shared_files() -> impl Strategy<Value = Vec<SharedFile>> {
    prop::collection::vec(
        (
            0u8..3,
            prop::collection::vec(
                (any::<prop::sample::Index>(), prop::bool::weighted(0.1)),
                1..10,
            ),
            prop::bool::weighted(0.15),
            0i64..90,
            prop::bool::weighted(0.1),
        ),
        1..6,
    )
}

/// The file's bytes, each record carrying a marker `R<n>` and, in CSV, a
/// quoted field with the delimiter and a line break; and the kind its rule
/// reads it with.
fn shared_file(format: u8, keys: &[i64]) -> (String, Vec<String>, config::ContentKind) {
    let mut records = Vec::new();
    match format {
        0 => {
            for (n, k) in keys.iter().enumerate() {
                records.push(if n % 3 == 1 {
                    format!("{k};\"R{n}; two\nlines\"\r\n")
                } else if n % 3 == 2 {
                    format!("{k};R{n}\n")
                } else {
                    format!("{k};R{n}\r\n")
                });
            }
            let text = format!("\u{feff}LeadId;Note\r\n{}", records.concat());
            let kind = config::ContentKind::Csv {
                column: "LeadId".into(),
                delimiter: Some(b';'),
            };
            (text, records, kind)
        }
        1 => {
            for (n, k) in keys.iter().enumerate() {
                records.push(format!(
                    "{{\"lead\": {{\"id\": {k}}}, \"m\": \"R{n} \\\"q\\\"\"}}"
                ));
            }
            let text = format!(
                "{{\"batch\": 1, \"records\": [\n  {}\n]}}\n",
                records.join(",\n  ")
            );
            let kind = config::ContentKind::json("$.records[*].lead.id", Some("$.records[*]"))
                .expect("a JSON rule");
            (text, records, kind)
        }
        _ => {
            for (n, k) in keys.iter().enumerate() {
                records.push(format!(
                    "<x:Lead><x:Id>{k}</x:Id><x:M><![CDATA[R{n} <&>]]></x:M></x:Lead>"
                ));
            }
            let text = format!(
                "<?xml version=\"1.0\"?>\n<!-- c -->\n<x:Batch xmlns:x=\"urn:b\">\n  {}\n</x:Batch>\n",
                records.join("\n  ")
            );
            let kind = config::ContentKind::xml("/Batch/Lead/Id", Some("/Batch/Lead"))
                .expect("an XML rule");
            (text, records, kind)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases() / 4))]

    /// Safety rule 1 for shared files: a redaction removes exactly the
    /// records of deleted entities (and of absent ones once the file is
    /// older than the orphan grace, in a file that serves no deleted entity
    /// too); every record of a kept entity stays
    /// byte for byte; a held file, or one whose deleted entity is linked by
    /// the whole file, is not touched.
    #[test]
    fn redaction_removes_exactly_the_records_of_deleted_entities(w in world(), files in shared_files()) {
        use lethe::plan::fate::{RecordLink, redaction};
        let expected = reference(&w);
        let leads: Vec<(usize, &Entity)> = w.entities.iter().enumerate().filter(|(_, e)| e.ty == 0).collect();
        let retain = Retention::parse("30 days").unwrap();
        for (format, picks, whole, age, held) in files {
            let keys: Vec<i64> = picks.iter().map(|(p, absent)| {
                if *absent || leads.is_empty() { 10_001 + p.index(50) as i64 } else { leads[p.index(leads.len())].1.key }
            }).collect();
            let modified = AS_OF - age * DAY;
            let old = AS_OF >= retain.add_to(modified);
            // The model: what each key is.
            // Absent keys up to 10_025 were erased by an earlier plan that
            // left the file behind: no grace for them.
            let state = |k: i64| match leads.iter().find(|(_, e)| e.key == k) {
                None if k <= 10_025 => LinkTarget::Erased,
                None => LinkTarget::Absent,
                Some((i, _)) if expected.contains(i) => LinkTarget::Deleted(0),
                Some(_) => LinkTarget::Retained,
            };
            let goes = |k: i64| match state(k) {
                LinkTarget::Deleted(_) | LinkTarget::Erased => true,
                LinkTarget::Absent => old,
                LinkTarget::Retained => false,
            };
            let (text, records, kind) = shared_file(format, &keys);
            let tmp = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(tmp.path(), &text).unwrap();
            let found = lethe::index::extract::content(&kind, Box::new(std::fs::File::open(tmp.path()).unwrap()), text.len() as u64, 1 << 30, 1 << 20)
                .map_err(|e| TestCaseError::fail(format!("extract: {e}")))?;
            prop_assert_eq!(found.len(), keys.len());
            let signature = kind.record_signature();
            let mut links: Vec<RecordLink> = found.iter().map(|f| RecordLink {
                target: state(f.key.parse().unwrap()),
                record: f.record.as_deref(),
                signature: signature.as_deref(),
                rule: 0,
            }).collect();
            if whole {
                links.push(RecordLink { target: state(keys[0]), record: None, signature: None, rule: 1 });
            }
            let targets: Vec<LinkTarget> = links.iter().map(|l| l.target).collect();
            let fate = object_fate("ok", &targets, held, Some(modified), AS_OF, &retain);
            let any_deleted = keys.iter().any(|k| matches!(state(*k), LinkTarget::Deleted(_)));
            let any_kept = keys.iter().any(|k| state(*k) == LinkTarget::Retained);
            if held {
                prop_assert_eq!(fate, Fate::Held);
                continue;
            }
            // A kept file with records of long absent leads loses them too
            // (the orphans' rule, record by record).
            let absent_go = keys.iter().any(|k| match state(*k) {
                LinkTarget::Absent => old,
                LinkTarget::Erased => true,
                _ => false,
            });
            if fate != Fate::Shared && !(fate == Fate::Retained && absent_go) {
                prop_assert!(!(any_deleted && any_kept), "a file of deleted and kept leads is {:?}", fate);
                continue;
            }
            let decided = redaction(&links, Some(modified), AS_OF, &retain);
            let whole_goes = whole && goes(keys[0]);
            if whole_goes {
                prop_assert!(decided.is_err(), "a whole-file link to a deleted lead must keep it whole");
                continue;
            }
            let r = decided.map_err(|e| TestCaseError::fail(format!("not redacted: {e}")))?;
            prop_assert_eq!(r.policy.is_none(), !any_deleted, "the orphans' rule only without a deleted lead");
            let remove: std::collections::HashSet<String> = r.records.iter().cloned().collect();
            let mut out = Vec::new();
            let done = lethe::apply::redact::redact(&kind, tmp.as_file(), &mut out, &remove)
                .map_err(|e| TestCaseError::fail(format!("redact: {e}")))?;
            prop_assert_eq!(done.records_removed, keys.iter().filter(|k| goes(**k)).count() as u64);
            let out = String::from_utf8(out).unwrap();
            for (n, k) in keys.iter().enumerate() {
                let marker = format!("R{n}");
                let present = out.contains(&records[n]);
                if goes(*k) {
                    prop_assert!(!present && !out.contains(&format!("{marker};")) && !out.contains(&format!("{marker} ")) , "record {} of a deleted lead is left", n);
                } else {
                    prop_assert!(present, "record {} of a kept lead changed or went", n);
                }
            }
            // The rest parses with the same rule into exactly the kept keys.
            std::fs::write(tmp.path(), &out).unwrap();
            let again = lethe::index::extract::content(&kind, Box::new(std::fs::File::open(tmp.path()).unwrap()), out.len() as u64, 1 << 30, 1 << 20)
                .map_err(|e| TestCaseError::fail(format!("the redacted file: {e}")))?;
            let kept: Vec<String> = keys.iter().filter(|k| !goes(**k)).map(|k| k.to_string()).collect();
            prop_assert_eq!(again.into_iter().map(|f| f.key).collect::<Vec<_>>(), kept);
        }
    }
}
