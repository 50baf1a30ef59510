//! Stage 3, plan: reads the CRM into the entity graph, evaluates the
//! policies, gives every indexed object its fate, applies the mass-delete
//! brake, and persists the result as an immutable plan before anything is
//! deleted. `plan` changes nothing outside the state store.
//!
//! Architecture invariant: `evaluate` and `plan` read the CRM, the index and
//! the holds, and write only the plan; every error while reading fails the
//! whole plan (fail closed: an empty read must never become "everything is an
//! orphan").

pub mod explain;
pub mod fate;
/// `plan show` and `plan prune` read and prune the plan tables, which the
/// state store owns.
pub use crate::state::plans as show;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, KeepRule};
use crate::crm::{Crm, CrmError};
use crate::evaluate::{self, CompiledPolicy, Graph, GraphBuilder};
use crate::index;
use crate::model::{EntityKey, Instant};
use crate::state::plans::{self, NewCase, NewEntity, NewObject, NewPlan, NewReview};
use crate::state::{HoldKind, ObjectHolds, StateError, StateStore, q};
pub use fate::{Fate, LinkTarget, object_fate};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("reading the CRM failed, so nothing was planned: {0}")]
    Crm(#[from] CrmError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("policy `{0}` names an entity type the CRM graph does not have")]
    Policy(String),
    #[error("listing the technical store failed: {0}")]
    Store(String),
    /// A configured table, column or keep condition is not in the CRM.
    #[error("the config does not fit the CRM")]
    Unfit(#[source] crate::config::ConfigError),
}

/// Counts only: a plan summary never holds keys or subject data.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PlanSummary {
    pub id: String,
    pub as_of: String,
    pub created_at: String,
    pub config_hash: String,
    pub digest: String,
    pub entities_read: BTreeMap<String, u64>,
    pub undatable_entities: u64,
    pub unreadable_clocks: u64,
    pub dangling_parents: u64,
    /// The index run the plan read (`index.run` in the state store).
    #[serde(default)]
    pub index_run: Option<i64>,
    /// Foreign keys naming a parent that does not exist, per relation.
    #[serde(default)]
    pub dangling: Vec<DanglingRelation>,
    pub policies: Vec<PolicySummary>,
    pub cases: u64,
    pub cases_absorbed: u64,
    pub entities_to_delete: BTreeMap<String, u64>,
    pub objects: ObjectTally,
    pub holds: HoldTally,
    pub brake: Vec<String>,
    /// Cases (of every policy) becoming due in each of the 12 months after
    /// `as_of`, keyed `YYYY-MM`, all 12 present.
    #[serde(default)]
    pub due_by_month: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Rows of `entity` whose `column` names a `parent` the CRM does not have.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DanglingRelation {
    pub entity: String,
    pub parent: String,
    pub column: String,
    pub count: u64,
    /// Rows of `entity` read.
    pub of: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PolicySummary {
    pub name: String,
    pub root: String,
    pub retain: String,
    pub basis: String,
    /// Entities of the root type read: `due + kept + inside_due_case`.
    #[serde(default)]
    pub read: u64,
    pub due: u64,
    /// Of the due, those inside another due case (deleted as part of it,
    /// so counted under that case's policy in the journal).
    #[serde(default)]
    pub due_inside_other: u64,
    pub kept: BTreeMap<String, u64>,
    /// Never judged due themselves: inside a case another policy found due
    /// first (deleted with it).
    #[serde(default)]
    pub inside_due_case: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ObjectTally {
    pub total: u64,
    pub delete: u64,
    pub delete_bytes: u64,
    pub orphan_delete: u64,
    pub orphan_delete_bytes: u64,
    pub orphan_young: u64,
    pub shared: u64,
    /// Shared objects rewritten without the deleted entities' records.
    #[serde(default)]
    pub redact: u64,
    #[serde(default)]
    pub redact_records: u64,
    #[serde(default)]
    pub redact_bytes: u64,
    pub retained: u64,
    pub unlinked: u64,
    pub unreadable: u64,
    pub held: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HoldTally {
    pub entity_holds: u64,
    pub entity_holds_on_absent: u64,
    pub object_holds: u64,
}

/// The conditional keep rules of all policies, in bit order.
pub fn conditions(config: &Config) -> Vec<KeepRule> {
    let mut out: Vec<KeepRule> = Vec::new();
    for p in &config.policies {
        for k in &p.keep_if {
            if k.condition.is_some() && !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Everything the evaluation needs, read from the CRM and the holds.
pub struct World {
    pub graph: Graph,
    pub policies: Vec<CompiledPolicy>,
    pub conditions: Vec<KeepRule>,
    pub unreadable_clocks: u64,
    pub holds: HoldTally,
    pub object_holds: ObjectHolds,
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
    let mut tally = HoldTally::default();
    for h in &holds {
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
    let policies = evaluate::compile_policies(config, &conditions).map_err(PlanError::Policy)?;
    Ok(World {
        graph,
        policies,
        conditions,
        unreadable_clocks,
        holds: tally,
        object_holds: ObjectHolds::from_holds(&holds),
    })
}

async fn index_run(state: &StateStore) -> Result<Option<i64>, StateError> {
    Ok(state
        .meta_get("index.run")
        .await?
        .and_then(|r| r.parse().ok()))
}

/// Why the link index cannot be trusted for a plan, if it cannot: never
/// built, older than the one the last plan read, or empty while the store
/// holds objects. A plan on such an index would delete entities and keep
/// every payload file that names them. `store` is asked only when the
/// index is empty.
pub async fn stale_index(
    state: &StateStore,
    store: &dyn crate::store::TechnicalStore,
) -> Result<Option<String>, PlanError> {
    let Some(run) = index_run(state).await? else {
        return Ok(Some(
            "the technical store was never indexed: run `lethe index` first (`lethe sweep` indexes by itself)".into(),
        ));
    };
    let last = crate::state::plans::latest_summary(state).await?;
    if let Some(last) = last.and_then(|t| serde_json::from_str::<PlanSummary>(&t).ok())
        && let Some(seen) = last.index_run
        && seen > run
    {
        return Ok(Some(format!(
            "the link index (run {run}) is older than the one the last plan {} read (run {seen}); was the state store restored? run `lethe index` first",
            last.id
        )));
    }
    if state.indexed_count().await? == 0 {
        let mut listed = 0u64;
        store
            .list(&mut |_| listed += 1)
            .await
            .map_err(|e| PlanError::Store(e.to_string()))?;
        if listed > 0 {
            return Ok(Some(format!(
                "the link index is empty but the technical store holds {listed} objects: run `lethe index` first"
            )));
        }
    }
    Ok(None)
}

/// Fails unless every table, column and keep condition of the config is in
/// the CRM: nothing is read, judged or planned on a config that does not fit.
pub async fn require_fit(
    config: &Config,
    crm: &dyn Crm,
) -> Result<crate::crm::fit::Fit, PlanError> {
    let fit = crate::crm::fit::fit(config, crm).await?;
    if fit.problems.is_empty() {
        Ok(fit)
    } else {
        Err(PlanError::Unfit(config.invalid(fit.problems)))
    }
}

fn new_plan_id(now: jiff::Timestamp) -> String {
    let z = now.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    format!(
        "{}-{:04x}",
        z.strftime("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// Builds, brakes and persists a plan. Returns its summary.
pub async fn make_plan(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    as_of: jiff::Timestamp,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<PlanSummary, PlanError> {
    let started = std::time::Instant::now();
    // One planner at a time (PostgreSQL state: across machines).
    let _planner = state.lock_plan(false).await?;
    require_fit(config, crm).await?;
    let world = load_world(config, crm, state, progress).await?;
    let graph = &world.graph;
    let as_of_s = as_of.as_second();
    progress("evaluating", 0);
    let eval = evaluate::evaluate(graph, &world.policies, as_of_s);

    let now = jiff::Timestamp::now();
    let id = new_plan_id(now);
    let mut s = PlanSummary {
        id: id.clone(),
        as_of: as_of.to_string(),
        created_at: jiff::Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
        config_hash: config.hash.clone(),
        unreadable_clocks: world.unreadable_clocks,
        dangling_parents: graph.dangling_parents,
        index_run: index_run(state).await?,
        holds: world.holds.clone(),
        cases: eval.cases.len() as u64,
        cases_absorbed: eval.cases.iter().map(|c| c.absorbed as u64).sum(),
        ..Default::default()
    };
    let counts = graph.counts();
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

    // Persist: plan row, cases, entities, then objects, in one transaction.
    progress("writing plan", 0);
    let mut digest = Sha256::new();
    let mut tx = state.begin_write().await.map_err(q("writing the plan"))?;
    // Each case's clock: the latest clock of the entities inside it.
    let mut case_clock: Vec<Option<Instant>> = vec![None; eval.cases.len()];
    for (n, &c) in eval.case_of.iter().enumerate() {
        if c != evaluate::NOT_DELETED {
            let slot = &mut case_clock[c as usize];
            *slot = (*slot).max(graph.nodes[n].clock);
        }
    }
    let mut cases = Vec::with_capacity(eval.cases.len());
    for (ci, c) in eval.cases.iter().enumerate() {
        let node = graph.node(c.root);
        let case = NewCase {
            case_id: ci as u64,
            policy: world.policies[c.policy].name.as_str(),
            root_type: graph.types[node.ty as usize].as_str(),
            root_key: node.key.canonical(),
            root_kind: node.key.stored_kind(),
            case_clock: case_clock[ci],
        };
        digest.update(
            format!(
                "case\0{ci}\0{}\0{}\0{}\n",
                case.policy, case.root_type, case.root_key
            )
            .as_bytes(),
        );
        cases.push(case);
    }
    plans::write_cases(&mut tx, &id, &cases).await?;
    let deleted_nodes: Vec<usize> = (0..graph.len())
        .filter(|i| eval.case_of[*i] != evaluate::NOT_DELETED)
        .collect();
    for chunk in deleted_nodes.chunks(150) {
        let rows: Vec<NewEntity> = chunk
            .iter()
            .map(|&n| {
                let node = &graph.nodes[n];
                let e = NewEntity {
                    case_id: eval.case_of[n] as u64,
                    entity_type: graph.types[node.ty as usize].as_str(),
                    key: node.key.canonical(),
                    key_kind: node.key.stored_kind(),
                };
                digest.update(
                    format!("entity\0{}\0{}\0{}\n", e.case_id, e.entity_type, e.key).as_bytes(),
                );
                e
            })
            .collect();
        plans::write_entities(&mut tx, &id, &rows).await?;
    }

    // Objects: stream the index, give each its fate.
    let type_of: HashMap<&str, u16> = graph
        .types
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u16))
        .collect();
    let mut to_delete: Vec<NewObject> = Vec::new();
    // What the plan keeps of the objects, for review (not the retained
    // ones: they are the bulk, and the index lists them).
    let mut review: Vec<NewReview> = Vec::new();
    let signatures: HashMap<usize, Option<String>> = config
        .links
        .iter()
        .map(|r| (r.index(), r.record_signature()))
        .collect();
    let tally = &mut s.objects;
    index::for_each_entry(state, &mut |e| {
        tally.total += 1;
        let targets: Vec<LinkTarget> = e
            .links
            .iter()
            .map(|(ty, key)| {
                match type_of
                    .get(ty.as_str())
                    .and_then(|t| graph.resolve(*t, key))
                {
                    None => LinkTarget::Absent,
                    Some(n) if eval.is_deleted(n) => {
                        LinkTarget::Deleted(eval.cases[eval.case_of[n as usize] as usize].policy)
                    }
                    Some(_) => LinkTarget::Retained,
                }
            })
            .collect();
        let fate = object_fate(
            &e.status,
            &targets,
            world.object_holds.holds(&e.key),
            e.modified,
            as_of_s,
            &config.orphans_retain,
        );
        let entities = || links_json(&e.links);
        let mut keep = |fate: &'static str, reason: Option<String>| {
            review.push(NewReview {
                kind: "object",
                entity_type: None,
                key: e.key.clone(),
                size: Some(e.size),
                fate: fate.to_string(),
                reason,
                entities: Some(links_json(&e.links)),
            })
        };
        match fate {
            Fate::Delete { policy } => {
                tally.delete += 1;
                tally.delete_bytes += e.size;
                to_delete.push(NewObject {
                    key: e.key.clone(),
                    size: e.size,
                    fate: "delete",
                    policy: world.policies[policy].name.clone(),
                    links: index::links_digest(&e.links),
                    entities: entities(),
                    records: None,
                });
            }
            Fate::OrphanDue => {
                tally.orphan_delete += 1;
                tally.orphan_delete_bytes += e.size;
                to_delete.push(NewObject {
                    key: e.key.clone(),
                    size: e.size,
                    fate: "orphan",
                    policy: "orphans".into(),
                    links: index::links_digest(&e.links),
                    entities: entities(),
                    records: None,
                });
            }
            Fate::OrphanYoung => {
                tally.orphan_young += 1;
                keep("orphan-young", None);
            }
            Fate::Shared => {
                let links: Vec<fate::RecordLink<'_>> = targets
                    .iter()
                    .zip(&e.records)
                    .map(|(t, (rule, record))| fate::RecordLink {
                        target: *t,
                        record: record.as_deref(),
                        signature: signatures.get(rule).and_then(|s| s.as_deref()),
                        rule: *rule,
                    })
                    .collect();
                let redaction = if config.redact {
                    fate::redaction(&links, e.modified, as_of_s, &config.orphans_retain)
                } else {
                    Err("technical.redact is off")
                };
                match redaction {
                    Ok(r) => {
                        tally.redact += 1;
                        tally.redact_records += r.records.len() as u64;
                        tally.redact_bytes += e.size;
                        to_delete.push(NewObject {
                            key: e.key.clone(),
                            size: e.size,
                            fate: "redact",
                            policy: world.policies[r.policy].name.clone(),
                            links: index::links_digest(&e.links),
                            entities: entities(),
                            records: Some(
                                serde_json::json!({"rule": r.rule, "records": r.records})
                                    .to_string(),
                            ),
                        });
                    }
                    Err(why) => {
                        tally.shared += 1;
                        keep("shared", Some(why.to_string()));
                    }
                }
            }
            Fate::Retained => tally.retained += 1,
            Fate::Unlinked => {
                tally.unlinked += 1;
                keep("unlinked", None);
            }
            Fate::Unreadable => {
                tally.unreadable += 1;
                keep("unreadable", e.error.clone());
            }
            Fate::Held => {
                tally.held += 1;
                keep("held", None);
            }
        }
    })
    .await?;
    for o in &to_delete {
        digest.update(format!("object\0{}\0{}\0{}\n", o.key, o.fate, o.links).as_bytes());
        if let Some(r) = &o.records {
            digest.update(format!("records\0{r}\n").as_bytes());
        }
    }
    plans::write_objects(&mut tx, &id, &to_delete).await?;

    // The undatable entities and the dangling references, for review.
    for n in graph.nodes.iter().filter(|n| n.clock.is_none()) {
        review.push(NewReview {
            kind: "undatable",
            entity_type: Some(graph.types[n.ty as usize].clone()),
            key: n.key.canonical(),
            size: None,
            fate: "undatable".into(),
            reason: None,
            entities: None,
        });
    }
    for (child, key, parent, missing) in &graph.dangling_examples {
        review.push(NewReview {
            kind: "dangling",
            entity_type: Some(graph.types[*child as usize].clone()),
            key: key.canonical(),
            size: None,
            fate: graph.types[*parent as usize].clone(),
            reason: Some(missing.canonical()),
            entities: None,
        });
    }
    plans::write_review(&mut tx, &id, &review).await?;
    s.brake = brake(config, &s, &counts, &graph.types, &mut tx).await?;
    s.digest = hex::encode(digest.finalize());
    s.seconds = started.elapsed().as_secs_f64();
    plans::write_plan(
        &mut tx,
        NewPlan {
            id: &id,
            created_at: &s.created_at,
            as_of: as_of_s,
            config_hash: &s.config_hash,
            digest: &s.digest,
            summary: serde_json::to_string(&s).unwrap_or_default(),
            brake: (!s.brake.is_empty())
                .then(|| serde_json::to_string(&s.brake).unwrap_or_default()),
        },
    )
    .await?;
    tx.commit().await.map_err(q("writing the plan"))?;
    Ok(s)
}

/// An object's links as a JSON array of refs (`["lead:7"]`), for review.
fn links_json(links: &[(String, String)]) -> String {
    serde_json::to_string(
        &links
            .iter()
            .map(|(t, k)| format!("{t}:{k}"))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into())
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

/// The mass-delete brake: reasons this plan must not be applied without
/// `--allow-mass-delete`.
async fn brake(
    config: &Config,
    s: &PlanSummary,
    counts: &[u64],
    types: &[String],
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<Vec<String>, StateError> {
    let mut reasons = Vec::new();
    for d in &s.dangling {
        if d.count > 0 && d.count as f64 > config.safety.max_dangling_fraction * d.of as f64 {
            reasons.push(format!(
                "{} of {} {} entities name a {} that does not exist (column `{}`; {}), more than safety.max_dangling_fraction ({}): check `parent = {{ {} = \"{}\" }}` in [crm.entities.{}] — a wrong parent column makes every {} look childless",
                d.count,
                d.of,
                d.entity,
                d.parent,
                d.column,
                percent(d.count, d.of),
                percent_of(config.safety.max_dangling_fraction),
                d.parent,
                d.column,
                d.entity,
                d.parent
            ));
        }
    }
    for (i, t) in types.iter().enumerate() {
        let deleting = s.entities_to_delete.get(t).copied().unwrap_or(0);
        if counts[i] > 0 && deleting as f64 > config.max_delete_fraction * counts[i] as f64 {
            reasons.push(format!(
                "deletes {deleting} of {} {t} entities ({:.0}%), more than safety.max_delete_fraction ({:.0}%)",
                counts[i],
                100.0 * deleting as f64 / counts[i] as f64,
                100.0 * config.max_delete_fraction
            ));
        }
    }
    let objects_deleting = s.objects.delete + s.objects.orphan_delete;
    if s.objects.total > 0
        && objects_deleting as f64 > config.max_delete_fraction * s.objects.total as f64
    {
        reasons.push(format!(
            "deletes {objects_deleting} of {} technical objects ({:.0}%), more than safety.max_delete_fraction ({:.0}%)",
            s.objects.total,
            100.0 * objects_deleting as f64 / s.objects.total as f64,
            100.0 * config.max_delete_fraction
        ));
    }
    // A type (or the store) the previous plan saw, now empty: a read that
    // returned nothing is far likelier than a CRM that emptied itself.
    let previous = crate::state::plans::baseline_summary(tx).await?;
    if let Some(prev) = previous.and_then(|p| serde_json::from_str::<PlanSummary>(&p).ok()) {
        // What lethe itself deleted since (the previous plan's own apply
        // included) is no drop.
        let deleted_since = crate::state::deleted_since(tx, &prev.id).await?;
        let kept_types: std::collections::BTreeSet<&str> = config
            .policies
            .iter()
            .flat_map(|p| p.keep_if.iter().map(|k| k.entity.as_str()))
            .collect();
        for (t, n) in &prev.entities_read {
            let now = s.entities_read.get(t).copied().unwrap_or(0);
            if *n > 0 && now == 0 {
                reasons.push(format!(
                    "sees no {t} entities, but the previous plan {} saw {n}: check the CRM connection and table before allowing this",
                    prev.id
                ));
                continue;
            }
            let expected = n.saturating_sub(deleted_since.get(t).copied().unwrap_or(0));
            let (bound, key) = if kept_types.contains(t.as_str()) {
                (
                    config.safety.max_keep_drop_fraction,
                    "max_keep_drop_fraction",
                )
            } else {
                (config.safety.max_drop_fraction, "max_drop_fraction")
            };
            if expected > 0 && now < expected && (expected - now) as f64 > bound * expected as f64 {
                reasons.push(format!(
                    "reads {now} {t} entities where {expected} were expected (the previous plan {} saw {n}, lethe deleted {} since): a fall of {}, more than safety.{key} ({}){}; check the CRM connection and table before allowing this",
                    prev.id,
                    n - expected,
                    percent(expected - now, expected),
                    percent_of(bound),
                    if key == "max_keep_drop_fraction" {
                        format!(" — {t} keeps cases (keep_if), so a short read of it makes kept cases due")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        if prev.objects.total > 0 && s.objects.total == 0 {
            reasons.push(format!(
                "sees no technical objects, but the previous plan {} saw {}: check the store and run `lethe index`",
                prev.id, prev.objects.total
            ));
        }
    }
    Ok(reasons)
}

/// `12.5%` of a count.
fn percent(part: u64, whole: u64) -> String {
    percent_of(if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    })
}

/// A share as a percentage, to one decimal where it matters (`0.5%`, `10%`).
fn percent_of(share: f64) -> String {
    let p = 100.0 * share;
    if (p - p.round()).abs() < 0.05 {
        format!("{:.0}%", p)
    } else {
        format!("{:.1}%", p)
    }
}

/// A stored plan's header.
#[derive(Clone, Debug, Serialize)]
pub struct StoredPlan {
    pub id: String,
    pub as_of: Instant,
    pub status: PlanStatus,
    pub summary: PlanSummary,
    pub brake: Vec<String>,
}

/// The plan `id`, or the latest plan.
pub async fn load(state: &StateStore, id: Option<&str>) -> Result<StoredPlan, StateError> {
    let row = crate::state::plans::plan_row(state, id).await?;
    Ok(StoredPlan {
        id: row.id,
        as_of: row.as_of,
        status: row.status,
        summary: serde_json::from_str(&row.summary)
            .map_err(|e| StateError::Corrupt(format!("plan summary unreadable: {e}")))?,
        brake: row
            .brake
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default(),
    })
}

pub use crate::state::plans::{PlanListRow, PlanStatus, list};
