//! The part of the CRM one entity's judgement depends on, read without the
//! rest: its connected component in the entity graph. `explain` builds its
//! graph from this instead of the whole CRM, so it answers in the time of a
//! few indexed look-ups whatever the CRM's size.
//!
//! Why the component, and nothing less in general: an entity goes when a
//! case around it (an ancestor's, or its own) is due; that case's clock and
//! keep flags fold over its descendants, less those an earlier round of the
//! evaluation already deleted; and a descendant with a second parent
//! relation can be deleted by a case that is no ancestor of the entity.
//! Following parent links up and down until nothing new turns up covers all
//! of it. With one parent relation per type (lead → opportunity → quote →
//! contract) the component is the tree of the entity's topmost ancestor.
//!
//! The rows read here are a superset of the component (SQL may match a
//! foreign key the graph would not link, MariaDB's case-insensitive text,
//! say); the graph built from them resolves every edge exactly as the
//! whole-graph load does, so whatever else comes along is a separate
//! component and changes nothing of the entity's.

use std::collections::{HashMap, HashSet};

use super::CrmError;
use super::recheck::{EntityNow, TxnOps};
use crate::config::{EntityType, KeepRule};
use crate::model::EntityKey;

/// What to read: the entity types (graph order, parents first), the
/// conditional keep rules (bit `i` of `EntityNow::keep_bits` is rule `i`),
/// and the entity whose component is read.
#[derive(Clone, Debug)]
pub struct ComponentInput {
    pub entities: Vec<EntityType>,
    pub conditions: Vec<KeepRule>,
    pub start_ty: u16,
    pub start_key: EntityKey,
}

/// Which column of a type's table a look-up goes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum By {
    Key,
    /// The foreign key of parent relation `i` (config order).
    Parent(usize),
}

/// Reads the component of `input.start_key`: every row reached from it by
/// parent links in either direction, each (type, exact key) once (the first
/// row read; a later row with the same key adds its keep bits, as the
/// whole-graph load's condition look-up by key would). Grouped by type in
/// graph order, rows in the order they were found. Empty when the entity
/// is not in the CRM. `loose` binds each key also in its other spelling
/// (`18` and `'18'`), for a backend whose columns may store either (SQLite).
pub(super) async fn load<T: TxnOps>(
    txn: &mut T,
    input: &ComponentInput,
    loose: bool,
) -> Result<Vec<EntityNow>, CrmError> {
    let n = input.entities.len();
    let type_of = |name: &str| input.entities.iter().position(|e| e.name == name);
    // Per type: its rules' conditions and their global bits.
    let mut rules: Vec<(Vec<&str>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); n];
    for (bit, rule) in input.conditions.iter().enumerate() {
        if let (Some(ti), Some(cond)) = (type_of(&rule.entity), &rule.condition) {
            rules[ti].0.push(cond.as_str());
            rules[ti].1.push(1 << bit);
        }
    }
    // Per parent type: (child type, relation) pairs naming it.
    let mut children_of: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    let mut parent_ty: Vec<Vec<Option<usize>>> = vec![Vec::new(); n];
    for (ti, et) in input.entities.iter().enumerate() {
        for (ri, (parent, _)) in et.parents.iter().enumerate() {
            let p = type_of(parent);
            if let Some(p) = p {
                children_of[p].push((ti, ri));
            }
            parent_ty[ti].push(p);
        }
    }

    let mut found: Vec<Vec<EntityNow>> = vec![Vec::new(); n];
    let mut index: Vec<HashMap<EntityKey, usize>> = vec![HashMap::new(); n];
    let mut asked: HashMap<(usize, By), HashSet<EntityKey>> = HashMap::new();
    let mut pending: HashMap<(usize, By), Vec<EntityKey>> = HashMap::new();
    let ask = |pending: &mut HashMap<(usize, By), Vec<EntityKey>>,
               asked: &mut HashMap<(usize, By), HashSet<EntityKey>>,
               at: (usize, By),
               key: &EntityKey| {
        let other = if loose { alternate(key) } else { None };
        for k in std::iter::once(key.clone()).chain(other) {
            if asked.entry(at).or_default().insert(k.clone()) {
                pending.entry(at).or_default().push(k);
            }
        }
    };
    ask(
        &mut pending,
        &mut asked,
        (input.start_ty as usize, By::Key),
        &input.start_key,
    );
    while !pending.is_empty() {
        // Parents-first, so that one round reads a chain's types in order.
        let mut round: Vec<((usize, By), Vec<EntityKey>)> = pending.drain().collect();
        round.sort_by_key(|((ti, by), _)| {
            (
                *ti,
                match by {
                    By::Key => 0,
                    By::Parent(i) => 1 + i,
                },
            )
        });
        for ((ti, by), values) in round {
            let et = &input.entities[ti];
            let column = match by {
                By::Key => &et.key,
                By::Parent(i) => &et.parents[i].1,
            };
            let rows = txn.rows_where_in(et, column, &values, &rules[ti].0).await?;
            for (row, _, local) in rows {
                let bits = rules[ti]
                    .1
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| local & (1 << j) != 0)
                    .fold(0u32, |acc, (_, b)| acc | b);
                if let Some(&at) = index[ti].get(&row.key) {
                    found[ti][at].keep_bits |= bits;
                    continue;
                }
                for (ri, fk) in row.parents.iter().enumerate() {
                    if let (Some(p), Some(fk)) = (parent_ty[ti][ri], fk) {
                        ask(&mut pending, &mut asked, (p, By::Key), fk);
                    }
                }
                for &(c, ri) in &children_of[ti] {
                    ask(&mut pending, &mut asked, (c, By::Parent(ri)), &row.key);
                }
                index[ti].insert(row.key.clone(), found[ti].len());
                found[ti].push(EntityNow {
                    ty: ti as u16,
                    key: row.key,
                    clock: row.clock,
                    keep_bits: bits,
                    parents: row.parents,
                });
            }
        }
    }
    Ok(found.into_iter().flatten().collect())
}

/// The other spelling of a key the graph treats as the same: an integer as
/// its decimal text, a text that is an integer's decimal form as that
/// integer (`018` is no integer's form).
fn alternate(key: &EntityKey) -> Option<EntityKey> {
    match key {
        EntityKey::Int(i) => Some(EntityKey::Text(i.to_string())),
        EntityKey::Text(s) => s
            .parse::<i64>()
            .ok()
            .filter(|i| i.to_string() == *s)
            .map(EntityKey::Int),
    }
}

#[cfg(test)]
mod tests {
    //! The component's judgement against the whole graph's, on random
    //! CRMs with a second parent relation (a quote's lead beside its
    //! opportunity's), dangling and text-spelled foreign keys, undatable
    //! rows, conditional keep rules and holds.

    use std::collections::BTreeMap;

    use async_trait::async_trait;

    use super::*;
    use crate::config::Config;
    use crate::crm::EntityRow;
    use crate::evaluate::{self, Aggregate, GraphBuilder, NodeId, Verdict};
    use crate::model::Instant;

    const CONFIG: &str = r#"
[crm]
url = "sqlite://crm.db"
[crm.entities.account]
table = "accounts"
key = "id"
clock = "modified_at"
[crm.entities.lead]
table = "leads"
key = "id"
clock = "modified_at"
parent = { account = "account_id" }
[crm.entities.opportunity]
table = "opportunities"
key = "id"
clock = "modified_at"
parent = { lead = "lead_id" }
[crm.entities.quote]
table = "quotes"
key = "id"
clock = "modified_at"
parent = { opportunity = "opportunity_id", lead = "lead_id" }
[crm.entities.contract]
table = "contracts"
key = "id"
clock = "modified_at"
parent = { quote = "quote_id" }
[technical]
url = "technical"
[[policy]]
name = "accounts"
root = "account"
retain = "36 months"
keep_if = [{ entity = "lead", where = "vip" }]
basis = "test"
[[policy]]
name = "leads"
root = "lead"
retain = "24 months"
keep_if = ["contract"]
basis = "test"
[[policy]]
name = "opportunities"
root = "opportunity"
retain = "12 months"
keep_if = ["contract", { entity = "opportunity", where = "open" }]
basis = "test"
[[policy]]
name = "quotes"
root = "quote"
retain = "6 months"
basis = "test"
[audit]
key = "component-test-key-0123"
"#;

    const DAY: i64 = 86_400;
    const AS_OF: i64 = 1_780_000_000;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    /// A row of a fake table: key, clock, foreign keys, conditions it meets.
    #[derive(Clone, Debug)]
    struct Row {
        key: EntityKey,
        clock: Option<Instant>,
        parents: Vec<Option<EntityKey>>,
        meets: Vec<&'static str>,
    }

    /// Tables in memory, matched as SQL's `IN` on SQLite would: exact
    /// values only (the loader adds the other spelling itself).
    struct Fake {
        tables: Vec<Vec<Row>>,
        entities: Vec<EntityType>,
        reads: usize,
    }

    #[async_trait]
    impl TxnOps for Fake {
        async fn rows_where_in(
            &mut self,
            et: &EntityType,
            column: &str,
            values: &[EntityKey],
            conditions: &[&str],
        ) -> Result<Vec<(EntityRow, Option<EntityKey>, u32)>, CrmError> {
            self.reads += 1;
            let ti = self
                .entities
                .iter()
                .position(|e| e.name == et.name)
                .unwrap();
            let by = if column == et.key {
                None
            } else {
                Some(et.parents.iter().position(|(_, c)| c == column).unwrap())
            };
            let mut out = Vec::new();
            for r in &self.tables[ti] {
                let value = match by {
                    None => Some(r.key.clone()),
                    Some(i) => r.parents[i].clone(),
                };
                let Some(value) = value.filter(|v| values.contains(v)) else {
                    continue;
                };
                let bits = conditions
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| r.meets.contains(c))
                    .fold(0, |acc, (j, _)| acc | 1 << j);
                let row = EntityRow {
                    key: r.key.clone(),
                    clock: r.clock,
                    clock_unreadable: false,
                    parents: r.parents.clone(),
                };
                out.push((row, Some(value), bits));
            }
            Ok(out)
        }

        async fn identifier_values(
            &mut self,
            _: &EntityType,
            _: &[EntityKey],
        ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
            Ok(Vec::new())
        }

        async fn delete_keys(&mut self, _: &EntityType, _: &[EntityKey]) -> Result<u64, CrmError> {
            Ok(0)
        }

        // (The component read never reaches the payload step.)
        async fn payload_rows(
            &mut self,
            _: &crate::crm::PayloadInput,
            _: &crate::crm::PayloadColumn,
            _: &[EntityKey],
        ) -> Result<Vec<crate::crm::LockedPayload>, CrmError> {
            Ok(Vec::new())
        }

        async fn delete_payloads(
            &mut self,
            _: &crate::crm::PayloadInput,
            _: &crate::crm::PayloadColumn,
            _: &[EntityKey],
        ) -> Result<u64, CrmError> {
            Ok(0)
        }
    }

    fn config() -> Config {
        crate::config::parse(CONFIG, "t.toml".as_ref(), ".".as_ref()).unwrap()
    }

    /// A foreign key to one of `n` rows (keys 1..=n), sometimes missing,
    /// dangling, or spelled as text.
    fn fk(rng: &mut Lcg, n: u64) -> Option<EntityKey> {
        match rng.next(12) {
            0 => None,
            1 => Some(EntityKey::Int(10_000 + rng.next(5) as i64)),
            2 if n > 0 => Some(EntityKey::Text((1 + rng.next(n)).to_string())),
            _ if n > 0 => Some(EntityKey::Int(1 + rng.next(n) as i64)),
            _ => None,
        }
    }

    fn tables(seed: u64, config: &Config) -> Vec<Vec<Row>> {
        let mut rng = Lcg(seed);
        let sizes = [
            1 + rng.next(4),
            2 + rng.next(12),
            rng.next(20),
            rng.next(20),
            rng.next(8),
        ];
        let mut tables = Vec::new();
        for (ti, et) in config.entities.iter().enumerate() {
            let mut rows = Vec::new();
            for k in 1..=sizes[ti] {
                let clock = (rng.next(25) != 0)
                    .then(|| AS_OF - rng.next(1500) as i64 * DAY + rng.next(DAY as u64) as i64);
                let parents = et
                    .parents
                    .iter()
                    .map(|(p, _)| fk(&mut rng, sizes[config.entity_index(p).unwrap()]))
                    .collect();
                let mut meets = Vec::new();
                if et.name == "lead" && rng.next(6) == 0 {
                    meets.push("vip");
                }
                if et.name == "opportunity" && rng.next(4) == 0 {
                    meets.push("open");
                }
                rows.push(Row {
                    key: EntityKey::Int(k as i64),
                    clock,
                    parents,
                    meets,
                });
            }
            tables.push(rows);
        }
        tables
    }

    /// What `explain` shows of one entity: each case containing it (policy,
    /// root by type and key, aggregate, verdict), and whether it goes.
    type Judgement = (Vec<(usize, (u16, EntityKey), Aggregate, Verdict)>, bool);

    fn judgement(graph: &evaluate::Graph, config: &Config, id: NodeId, as_of: i64) -> Judgement {
        let eval = evaluate::evaluate(graph, &config.compiled_policies, as_of);
        let cases = evaluate::cases_containing(graph, &config.compiled_policies, id, as_of)
            .into_iter()
            .map(|(pi, root, agg, v)| {
                let n = graph.node(root);
                (pi, (n.ty, n.key.clone()), agg, v)
            })
            .collect();
        (cases, eval.is_deleted(id))
    }

    fn hold(graph: &mut evaluate::Graph, held: &[(u16, EntityKey)]) {
        for (ty, key) in held {
            if let Some(id) = graph.resolve_key(*ty, key) {
                graph.node_mut(id).held = true;
            }
        }
    }

    #[tokio::test]
    async fn the_component_judges_every_entity_as_the_whole_graph_does() {
        let config = config();
        let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
        let mut deleted = 0;
        let mut checked = 0;
        for seed in 0..300u64 {
            let tables = tables(seed, &config);
            let mut rng = Lcg(seed ^ 0x9e37);
            // The whole graph, as `load_world` builds it from full scans.
            let parents_of = evaluate::graph::parent_types(&config);
            let mut builder =
                GraphBuilder::new(config.entities.iter().map(|e| e.name.clone()).collect());
            for (ti, rows) in tables.iter().enumerate() {
                for r in rows {
                    builder.add_row(
                        ti as u16,
                        r.key.clone(),
                        r.clock,
                        &parents_of[ti],
                        r.parents.iter().cloned(),
                    );
                }
            }
            let mut whole = builder.finish();
            for (bit, rule) in config.keep_conditions.iter().enumerate() {
                let ti = config.entity_index(&rule.entity).unwrap();
                let cond = rule.condition.as_deref().unwrap();
                for r in tables[ti].iter().filter(|r| r.meets.contains(&cond)) {
                    let id = whole.resolve_key(ti as u16, &r.key).unwrap();
                    whole.node_mut(id).keep_bits |= 1 << bit;
                }
            }
            let held: Vec<(u16, EntityKey)> = (0..rng.next(3))
                .map(|_| {
                    let ti = rng.next(5) as usize;
                    (ti as u16, EntityKey::Int(1 + rng.next(8) as i64))
                })
                .collect();
            hold(&mut whole, &held);
            let as_of = AS_OF - rng.next(400) as i64 * DAY;

            for (ti, rows) in tables.iter().enumerate() {
                for r in rows {
                    let whole_id = whole.resolve_key(ti as u16, &r.key).unwrap();
                    let expected = judgement(&whole, &config, whole_id, as_of);

                    let mut fake = Fake {
                        tables: tables.clone(),
                        entities: config.entities.clone(),
                        reads: 0,
                    };
                    let input = ComponentInput {
                        entities: config.entities.clone(),
                        conditions: config.keep_conditions.clone(),
                        start_ty: ti as u16,
                        start_key: r.key.clone(),
                    };
                    let rows = load(&mut fake, &input, true).await.unwrap();
                    let mut part = crate::plan::component_graph(&config, &rows);
                    hold(&mut part, &held);
                    let id = part.resolve_key(ti as u16, &r.key).unwrap();
                    let got = judgement(&part, &config, id, as_of);
                    assert_eq!(
                        got, expected,
                        "seed {seed}: {}:{:?}",
                        config.entities[ti].name, r.key
                    );
                    checked += 1;
                    deleted += u64::from(got.1);
                    for (_, _, _, v) in &got.0 {
                        let label = match v {
                            Verdict::Due => "due".to_string(),
                            Verdict::Kept(k) => k.label(),
                        };
                        *verdicts.entry(label).or_default() += 1;
                    }
                }
            }
        }
        // The random CRMs reach every verdict.
        for label in [
            "due",
            "hold",
            "undatable",
            "retention running",
            "keep_if contract",
            "keep_if lead where vip",
            "keep_if opportunity where open",
        ] {
            assert!(verdicts.contains_key(label), "{label}: {verdicts:?}");
        }
        assert!(deleted > 0 && deleted < checked, "{deleted} of {checked}");
    }

    #[tokio::test]
    async fn an_absent_entity_has_no_component() {
        let config = config();
        let mut fake = Fake {
            tables: tables(1, &config),
            entities: config.entities.clone(),
            reads: 0,
        };
        let input = ComponentInput {
            entities: config.entities.clone(),
            conditions: config.keep_conditions.clone(),
            start_ty: 1,
            start_key: EntityKey::Int(99_999),
        };
        assert!(load(&mut fake, &input, true).await.unwrap().is_empty());
        assert_eq!(fake.reads, 1, "one look-up of the missing key");
    }

    #[test]
    fn the_other_spelling_of_a_key() {
        assert_eq!(
            alternate(&EntityKey::Int(18)),
            Some(EntityKey::Text("18".into()))
        );
        assert_eq!(
            alternate(&EntityKey::Text("18".into())),
            Some(EntityKey::Int(18))
        );
        assert_eq!(alternate(&EntityKey::Text("018".into())), None);
        assert_eq!(alternate(&EntityKey::Text("abc".into())), None);
    }
}
