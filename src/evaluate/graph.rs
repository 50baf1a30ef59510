//! The entity graph: every entity of every configured type, with its clock,
//! hold and keep flags, and parent → child edges. Compact (a few dozen bytes
//! per entity) so that millions fit in memory; built once per plan from a
//! streaming read of the CRM.

use std::collections::HashMap;

use crate::model::{EntityKey, Instant};

pub type NodeId = u32;

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
    lookup: HashMap<(u16, EntityKey), NodeId>,
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
        if self.graph.lookup.contains_key(&(ty, key.clone())) {
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
        self.graph.lookup.insert((ty, key.clone()), id);
        self.graph.nodes.push(Node {
            ty,
            key,
            clock,
            held: false,
            keep_bits: 0,
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

    /// Finds an entity by a key as typed or as found in a file: a key that
    /// looks like an integer also matches an integer key column.
    pub fn resolve(&self, ty: u16, key: &str) -> Option<NodeId> {
        if let Ok(i) = key.parse::<i64>()
            && i.to_string() == key
            && let Some(id) = self.lookup.get(&(ty, EntityKey::Int(i)))
        {
            return Some(*id);
        }
        self.lookup
            .get(&(ty, EntityKey::Text(key.to_string())))
            .copied()
    }

    pub fn resolve_key(&self, ty: u16, key: &EntityKey) -> Option<NodeId> {
        if let Some(id) = self.lookup.get(&(ty, key.clone())) {
            return Some(*id);
        }
        match key {
            EntityKey::Text(s) => self.resolve(ty, s),
            EntityKey::Int(i) => self
                .lookup
                .get(&(ty, EntityKey::Text(i.to_string())))
                .copied(),
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
