//! The entity graph: every entity of every configured type, with its clock,
//! hold and keep flags, and parent → child edges. Compact (a few dozen bytes
//! per entity) so that millions fit in memory; built once per plan from a
//! streaming read of the CRM.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::model::{EntityKey, Instant};

pub type NodeId = u32;

/// A key as the look-up compares it, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyRef<'a> {
    Int(i64),
    Text(&'a str),
}

impl<'a> KeyRef<'a> {
    fn of(key: &'a EntityKey) -> KeyRef<'a> {
        match key {
            EntityKey::Int(i) => KeyRef::Int(*i),
            EntityKey::Text(t) => KeyRef::Text(t),
        }
    }
}

fn key_hash(hasher: &hashbrown::DefaultHashBuilder, ty: u16, key: KeyRef<'_>) -> u64 {
    let mut h = hasher.build_hasher();
    ty.hash(&mut h);
    match key {
        KeyRef::Int(i) => {
            h.write_u8(0);
            i.hash(&mut h);
        }
        KeyRef::Text(t) => {
            h.write_u8(1);
            t.hash(&mut h);
        }
    }
    h.finish()
}

/// The integer a key spells the way an integer prints (`18`, `-3`), so
/// that it names an integer key; `None` for anything else (`018`, `+18`,
/// `-0`, `18.0`, text).
fn canonical_int(key: &str) -> Option<i64> {
    let i = key.parse::<i64>().ok()?;
    let digits = key.strip_prefix('-').unwrap_or(key);
    let canonical = !key.starts_with('+')
        && !digits.is_empty()
        && (digits.len() == 1 || !digits.starts_with('0'))
        && key != "-0";
    canonical.then_some(i)
}

/// An integer however it is written: leading zeros, a `+`, blanks around.
pub fn loose_int(key: &str) -> Option<i64> {
    key.trim().parse::<i64>().ok()
}

#[derive(Clone, Debug)]
pub struct Node {
    pub ty: u16,
    pub key: EntityKey,
    /// `None`: no clock column had a usable value (the case cannot be dated).
    pub clock: Option<Instant>,
    pub held: bool,
    /// Bit `i` set: conditional keep rule `i` (an SQL condition) matches.
    pub keep_bits: u32,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub types: Vec<String>,
    pub nodes: Vec<Node>,
    /// (type, key) → node, holding only node ids: each key lives once, in
    /// its node, and a look-up allocates nothing.
    lookup: hashbrown::HashTable<NodeId>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Per type: its integer keys as an array index while they are dense
    /// (the usual identity column), which then holds every integer key of
    /// the type and `lookup` none of them.
    dense: Vec<Dense>,
    child_start: Vec<u32>,
    children: Vec<NodeId>,
    parent_start: Vec<u32>,
    parents: Vec<NodeId>,
    /// Foreign keys that named a parent the CRM does not have.
    pub dangling_parents: u64,
    /// The same per relation: (child type, parent type) → count.
    pub dangling: std::collections::BTreeMap<(u16, u16), u64>,
    /// Examples for review, at most [`DANGLING_EXAMPLES`] per relation:
    /// (child type, child key, parent type, the missing parent key).
    pub dangling_examples: Vec<(u16, EntityKey, u16, EntityKey)>,
}

/// A type's integer keys `0..ids.len()` as node ids ([`ABSENT`] where
/// there is none), while `on`.
#[derive(Debug, Default)]
struct Dense {
    off: bool,
    ids: Vec<NodeId>,
    /// Nodes of the type so far.
    count: usize,
}

const ABSENT: NodeId = NodeId::MAX;

impl Dense {
    /// Whether key `k` may go into the array: the array stays within four
    /// times the type's entities (plus a few thousand slots), so a sparse
    /// or hostile key turns it off instead of growing it, and a small graph
    /// of large keys (apply's re-check of a batch of cases) never zeroes an
    /// array sized by its keys.
    fn fits(&self, k: i64) -> bool {
        !self.off && k >= 0 && (k as u64) < 4 * (self.count as u64 + 1) + (1 << 12)
    }
}

/// How many dangling references per relation a plan lists by key (the
/// counts are exact; a wrong parent column can make every row dangle).
pub const DANGLING_EXAMPLES: u64 = 1000;

/// For each configured entity type (config order, which is the graph's),
/// the type index of each of its parent relations, in relation order: how
/// a row's parent columns map onto graph edges, for the plan's read of the
/// CRM and apply's re-check alike.
pub fn parent_types(config: &crate::config::Config) -> Vec<Vec<u16>> {
    config
        .entities
        .iter()
        .map(|et| {
            et.parents
                .iter()
                .map(|(p, _)| config.entity_index(p).unwrap_or(0) as u16)
                .collect()
        })
        .collect()
}

/// Builds a [`Graph`]; types must be added parents-first.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: Graph,
    edges: Vec<(NodeId, NodeId)>,
}

impl GraphBuilder {
    pub fn new(types: Vec<String>) -> Self {
        GraphBuilder {
            graph: Graph {
                types,
                ..Graph::default()
            },
            edges: Vec::new(),
        }
    }

    /// Adds an entity; `parents` are (parent type, foreign-key value) pairs.
    /// Returns `None` when the same (type, key) was already added.
    pub fn add(
        &mut self,
        ty: u16,
        key: EntityKey,
        clock: Option<Instant>,
        parents: &[(u16, Option<EntityKey>)],
    ) -> Option<NodeId> {
        let id = self.graph.nodes.len() as NodeId;
        if self.graph.find(ty, KeyRef::of(&key)).is_some() {
            return None;
        }
        for (pty, pkey) in parents {
            if let Some(pkey) = pkey {
                match self.graph.resolve_key(*pty, pkey) {
                    Some(p) => self.edges.push((p, id)),
                    None => {
                        self.graph.dangling_parents += 1;
                        let n = self.graph.dangling.entry((ty, *pty)).or_default();
                        *n += 1;
                        if *n <= DANGLING_EXAMPLES {
                            self.graph.dangling_examples.push((
                                ty,
                                key.clone(),
                                *pty,
                                pkey.clone(),
                            ));
                        }
                    }
                }
            }
        }
        let dense_key = match &key {
            EntityKey::Int(k) => Some(*k),
            EntityKey::Text(_) => None,
        };
        let hash = self.graph.hash(ty, KeyRef::of(&key));
        self.graph.nodes.push(Node {
            ty,
            key,
            clock,
            held: false,
            keep_bits: 0,
        });
        let g = &mut self.graph;
        if g.dense.len() <= ty as usize {
            g.dense.resize_with(ty as usize + 1, Dense::default);
        }
        g.dense[ty as usize].count += 1;
        if let Some(k) = dense_key {
            if g.dense[ty as usize].fits(k) {
                let d = &mut g.dense[ty as usize];
                if d.ids.len() <= k as usize {
                    d.ids.resize(k as usize + 1, ABSENT);
                }
                d.ids[k as usize] = id;
                return Some(id);
            }
            // Too sparse for an array: its integer keys go to the table.
            g.dense_off(ty);
        }
        let Graph {
            lookup,
            nodes,
            hasher,
            ..
        } = &mut self.graph;
        lookup.insert_unique(hash, id, |&other| {
            let n = &nodes[other as usize];
            key_hash(hasher, n.ty, KeyRef::of(&n.key))
        });
        Some(id)
    }

    /// Adds an entity as a row of its table gives it: `parent_keys` are its
    /// foreign-key values, one per parent relation, and `parent_types` the
    /// graph type of each relation (its type's entry of [`parent_types`]).
    pub fn add_row(
        &mut self,
        ty: u16,
        key: EntityKey,
        clock: Option<Instant>,
        parent_types: &[u16],
        parent_keys: impl IntoIterator<Item = Option<EntityKey>>,
    ) -> Option<NodeId> {
        let parents: Vec<(u16, Option<EntityKey>)> =
            parent_types.iter().copied().zip(parent_keys).collect();
        self.add(ty, key, clock, &parents)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.graph.nodes[id as usize]
    }

    pub fn finish(mut self) -> Graph {
        let n = self.graph.nodes.len();
        let (cs, c) = csr(n, self.edges.iter().map(|(p, c)| (*p, *c)));
        let (ps, p) = csr(n, self.edges.iter().map(|(p, c)| (*c, *p)));
        self.graph.child_start = cs;
        self.graph.children = c;
        self.graph.parent_start = ps;
        self.graph.parents = p;
        self.edges = Vec::new();
        self.graph
    }
}

fn csr(n: usize, edges: impl Iterator<Item = (NodeId, NodeId)> + Clone) -> (Vec<u32>, Vec<NodeId>) {
    let mut start = vec![0u32; n + 1];
    for (from, _) in edges.clone() {
        start[from as usize + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut out = vec![0; start[n] as usize];
    for (from, to) in edges {
        let slot = &mut fill[from as usize];
        out[*slot as usize] = to;
        *slot += 1;
    }
    (start, out)
}

impl Graph {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn type_index(&self, name: &str) -> Option<u16> {
        self.types.iter().position(|t| t == name).map(|i| i as u16)
    }

    pub fn children(&self, id: NodeId) -> &[NodeId] {
        let i = id as usize;
        &self.children[self.child_start[i] as usize..self.child_start[i + 1] as usize]
    }

    pub fn parents(&self, id: NodeId) -> &[NodeId] {
        let i = id as usize;
        &self.parents[self.parent_start[i] as usize..self.parent_start[i + 1] as usize]
    }

    fn hash(&self, ty: u16, key: KeyRef<'_>) -> u64 {
        key_hash(&self.hasher, ty, key)
    }

    /// Moves a type's integer keys from its array into the table.
    fn dense_off(&mut self, ty: u16) {
        let Some(d) = self.dense.get_mut(ty as usize) else {
            return;
        };
        if d.off {
            return;
        }
        d.off = true;
        let ids = std::mem::take(&mut d.ids);
        for id in ids.into_iter().filter(|&id| id != ABSENT) {
            let n = &self.nodes[id as usize];
            let hash = key_hash(&self.hasher, n.ty, KeyRef::of(&n.key));
            let (nodes, hasher) = (&self.nodes, &self.hasher);
            self.lookup.insert_unique(hash, id, |&other| {
                let n = &nodes[other as usize];
                key_hash(hasher, n.ty, KeyRef::of(&n.key))
            });
        }
    }

    fn find(&self, ty: u16, key: KeyRef<'_>) -> Option<NodeId> {
        if let KeyRef::Int(k) = key
            && let Some(d) = self.dense.get(ty as usize)
            && !d.off
        {
            // While on, the array holds every integer key of the type.
            return usize::try_from(k)
                .ok()
                .and_then(|k| d.ids.get(k))
                .copied()
                .filter(|&id| id != ABSENT);
        }
        self.lookup
            .find(self.hash(ty, key), |&id| {
                let n = &self.nodes[id as usize];
                n.ty == ty && key == KeyRef::of(&n.key)
            })
            .copied()
    }

    /// Finds an entity by a key as typed or as found in a file: a key that
    /// looks like an integer also matches an integer key column, and a UUID
    /// in another spelling (capitals, braces) the printed text of a UUID
    /// column when the key as written names nothing.
    pub fn resolve(&self, ty: u16, key: &str) -> Option<NodeId> {
        if let Some(i) = canonical_int(key)
            && let Some(id) = self.find(ty, KeyRef::Int(i))
        {
            return Some(id);
        }
        self.find(ty, KeyRef::Text(key)).or_else(|| {
            crate::model::uuid_respelled(key).and_then(|c| self.find(ty, KeyRef::Text(&c)))
        })
    }

    /// An entity a key names only when read loosely: an integer written
    /// with leading zeros, a sign or blanks around it (`0042`, `+42`,
    /// ` 42`). `resolve` does not take these as the integer (a link is not
    /// vouched for by a spelling the CRM does not use); they are still no
    /// proof that the entity is absent, and what is removed because an
    /// entity is absent must not be removed for these.
    pub fn resolve_loosely(&self, ty: u16, key: &str) -> Option<NodeId> {
        let i = loose_int(key)?;
        self.find(ty, KeyRef::Int(i))
            .or_else(|| self.find(ty, KeyRef::Text(&i.to_string())))
    }

    pub fn resolve_key(&self, ty: u16, key: &EntityKey) -> Option<NodeId> {
        if let Some(id) = self.find(ty, KeyRef::of(key)) {
            return Some(id);
        }
        match key {
            EntityKey::Text(s) => self.resolve(ty, s),
            EntityKey::Int(i) => self.find(ty, KeyRef::Text(&i.to_string())),
        }
    }

    pub fn resolve_named(&self, ty: &str, key: &str) -> Option<NodeId> {
        self.type_index(ty).and_then(|t| self.resolve(t, key))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// Counts of entities per type index.
    pub fn counts(&self) -> Vec<u64> {
        let mut c = vec![0u64; self.types.len()];
        for n in &self.nodes {
            c[n.ty as usize] += 1;
        }
        c
    }

    /// Every node reachable from `root` (itself included), each once.
    pub fn subtree(&self, root: NodeId) -> Vec<NodeId> {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![root];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                out.push(n);
                stack.extend_from_slice(self.children(n));
            }
        }
        out
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn a_key_names_an_integer_only_as_an_integer_prints() {
        for s in [
            "0",
            "7",
            "18",
            "-3",
            "-0",
            "018",
            "+18",
            "00",
            "-",
            "",
            " 1",
            "1 ",
            "18.0",
            "1e3",
            "abc",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
        ] {
            let by_print = s.parse::<i64>().ok().filter(|i| i.to_string() == s);
            assert_eq!(canonical_int(s), by_print, "{s:?}");
        }
    }

    /// Integer keys in an array while dense; a sparse, negative or huge
    /// key moves them all to the table, and every key stays found.
    #[test]
    fn dense_integer_keys_and_the_fall_back_to_the_table() {
        for odd in [-5i64, 1 << 40, i64::MAX, i64::MIN] {
            let mut b = GraphBuilder::new(vec!["lead".into(), "opportunity".into()]);
            let mut ids = Vec::new();
            for k in 0..5_000i64 {
                ids.push((k, b.add(0, EntityKey::Int(k * 3), None, &[]).unwrap()));
            }
            let t = b.add(0, EntityKey::Text("0".into()), None, &[]).unwrap();
            let o = b.add(0, EntityKey::Int(odd), None, &[]).unwrap();
            assert_eq!(
                b.add(0, EntityKey::Int(odd), None, &[]),
                None,
                "{odd}: once"
            );
            assert_eq!(b.add(0, EntityKey::Int(3), None, &[]), None, "{odd}: once");
            let c = b
                .add(1, EntityKey::Int(7), None, &[(0, Some(EntityKey::Int(9)))])
                .unwrap();
            let g = b.finish();
            for (k, id) in &ids {
                assert_eq!(
                    g.resolve_key(0, &EntityKey::Int(k * 3)),
                    Some(*id),
                    "{odd}: {k}"
                );
                assert_eq!(g.resolve(0, &(k * 3).to_string()), Some(*id), "{odd}: {k}");
            }
            assert_eq!(g.resolve_key(0, &EntityKey::Int(1)), None, "{odd}");
            assert_eq!(g.resolve_key(0, &EntityKey::Int(odd)), Some(o), "{odd}");
            assert_eq!(
                g.resolve_key(0, &EntityKey::Int(odd.wrapping_sub(1))),
                None,
                "{odd}"
            );
            assert_eq!(g.resolve_key(0, &EntityKey::Text("0".into())), Some(t));
            assert_eq!(g.resolve_key(1, &EntityKey::Int(7)), Some(c));
            assert_eq!(g.resolve_key(1, &EntityKey::Int(9)), None, "types apart");
            assert_eq!(g.parents(c), &[ids[3].1], "{odd}: the parent 9 was found");
        }
    }

    /// A small graph of large integer keys (the re-check of a batch of
    /// cases deep in a big CRM) keeps them in the table: no array sized by
    /// the keys is allocated, and each is found.
    #[test]
    fn a_few_large_keys_allocate_no_array() {
        let mut b = GraphBuilder::new(vec!["lead".into()]);
        let keys = [900_000i64, 900_001, 1_000_000, 5];
        let ids: Vec<NodeId> = keys
            .iter()
            .map(|&k| b.add(0, EntityKey::Int(k), None, &[]).unwrap())
            .collect();
        let g = b.finish();
        assert!(g.dense[0].ids.len() <= 1 << 13, "{}", g.dense[0].ids.len());
        for (k, id) in keys.iter().zip(ids) {
            assert_eq!(g.resolve_key(0, &EntityKey::Int(*k)), Some(id));
        }
    }

    /// A link's key spelled as a payload may spell a UUID (capitals,
    /// braces, no hyphens) finds the UUID column's printed text; a text key
    /// of capitals is found as written first, and text that is no UUID is
    /// never respelled.
    #[test]
    fn uuid_keys_are_found_in_any_spelling_after_the_key_as_written() {
        let printed = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let mut b = GraphBuilder::new(vec!["lead".into(), "note".into()]);
        let lead = b
            .add(0, EntityKey::Text(printed.into()), None, &[])
            .unwrap();
        let upper = b
            .add(1, EntityKey::Text(printed.to_uppercase()), None, &[])
            .unwrap();
        let lower = b
            .add(1, EntityKey::Text(printed.into()), None, &[])
            .unwrap();
        b.add(1, EntityKey::Text("abc".into()), None, &[]).unwrap();
        let g = b.finish();
        for spelling in [
            printed.to_uppercase(),
            format!("{{{printed}}}"),
            printed.replace('-', ""),
            printed.replace('-', "").to_uppercase(),
        ] {
            assert_eq!(g.resolve(0, &spelling), Some(lead), "{spelling}");
        }
        assert_eq!(g.resolve(1, &printed.to_uppercase()), Some(upper));
        assert_eq!(g.resolve(1, printed), Some(lower));
        assert_eq!(g.resolve(1, "ABC"), None, "no UUID: as written only");
        assert_eq!(g.resolve(0, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12"), None);
    }

    #[test]
    fn look_ups_find_integer_and_text_keys_both_ways() {
        let mut b = GraphBuilder::new(vec!["lead".into(), "note".into()]);
        let a = b.add(0, EntityKey::Int(18), None, &[]).unwrap();
        let t = b.add(0, EntityKey::Text("018".into()), None, &[]).unwrap();
        let x = b.add(1, EntityKey::Text("abc".into()), None, &[]).unwrap();
        assert_eq!(b.add(0, EntityKey::Int(18), None, &[]), None, "added once");
        for i in 0..10_000 {
            b.add(1, EntityKey::Int(i), None, &[(0, Some(EntityKey::Int(18)))]);
        }
        let g = b.finish();
        assert_eq!(g.resolve(0, "18"), Some(a));
        assert_eq!(g.resolve(0, "018"), Some(t));
        assert_eq!(g.resolve(1, "abc"), Some(x));
        assert_eq!(g.resolve(0, "abc"), None, "types are apart");
        assert_eq!(g.resolve_key(0, &EntityKey::Text("18".into())), Some(a));
        assert_eq!(
            g.resolve_key(1, &EntityKey::Int(9_999))
                .map(|n| g.node(n).key.clone()),
            Some(EntityKey::Int(9_999))
        );
        assert_eq!(g.children(a).len(), 10_000);
    }
}
