//! Stage 2, evaluate: policies over the entity graph. Pure: no I/O at all.
//!
//! A case is an entity of a policy's root type plus all its descendants. Its
//! clock is the latest clock anywhere in it. It is due when `as_of >=
//! case_clock + retain` and nothing in it is on hold, matches the policy's
//! `keep_if`, or cannot be dated. Each policy judges every entity of its own
//! root type on that entity's subtree; the deletion set is the union of the
//! due cases. Because hold, undatable and `keep_if` aggregate over whole
//! subtrees, an entity that is held, undatable or kept is never inside a due
//! case of a policy that keeps it.
//!
//! Cases are made maximal: a due root inside another due case is absorbed by
//! the outermost one, so that applying a case never leaves a child behind.

pub mod graph;

pub use crate::config::{CompiledPolicy, KeepMatch};
use crate::model::Instant;
pub use graph::{Graph, GraphBuilder, Node, NodeId};

/// What a subtree contains, folded bottom-up. Max and OR are idempotent, so an
/// entity reached twice (two parents) is harmless.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// Latest clock in the subtree; `None` when the subtree has no dated entity.
    pub clock: Option<Instant>,
    pub undatable: bool,
    pub held: bool,
    pub types: u64,
    pub conditions: u32,
}

impl Aggregate {
    fn of(node: &Node) -> Aggregate {
        Aggregate {
            clock: node.clock,
            undatable: node.clock.is_none(),
            held: node.held,
            types: 1u64 << (node.ty as u64 % 64),
            conditions: node.keep_bits,
        }
    }

    fn merge(&mut self, other: &Aggregate) {
        self.clock = match (self.clock, other.clock) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.undatable |= other.undatable;
        self.held |= other.held;
        self.types |= other.types;
        self.conditions |= other.conditions;
    }
}

/// Folds every subtree, leaving out the nodes marked `excluded` (already
/// deleted by an earlier round). Nodes are stored parents-first by type, so
/// walking them backwards visits children before parents.
pub fn aggregates(graph: &Graph, excluded: &[bool]) -> Vec<Aggregate> {
    let mut agg: Vec<Aggregate> = graph.nodes.iter().map(Aggregate::of).collect();
    for id in (0..graph.len()).rev() {
        let mut a = agg[id];
        for &c in graph.children(id as NodeId) {
            if !excluded.get(c as usize).copied().unwrap_or(false) {
                a.merge(&agg[c as usize]);
            }
        }
        agg[id] = a;
    }
    agg
}

/// Why a case is kept. The order is the order of precedence in reports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kept {
    /// Something in the case is on legal hold.
    Hold,
    /// Something in the case matches this `keep_if` rule.
    KeepIf(String),
    /// Something in the case has no clock value.
    Undatable,
    /// Not old enough: due at this instant.
    Young { due_at: Instant },
}

impl Kept {
    /// The reason's name in reports and metrics (bounded set).
    pub fn label(&self) -> String {
        match self {
            Kept::Hold => "hold".into(),
            Kept::KeepIf(rule) => format!("keep_if {rule}"),
            Kept::Undatable => "undatable".into(),
            Kept::Young { .. } => "retention running".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Due,
    Kept(Kept),
}

/// Judges one case from its aggregate.
pub fn judge(policy: &CompiledPolicy, agg: &Aggregate, as_of: Instant) -> Verdict {
    if agg.held {
        return Verdict::Kept(Kept::Hold);
    }
    for (label, m) in &policy.keep {
        let hit = match m {
            KeepMatch::Type(t) => agg.types & (1u64 << (*t as u64 % 64)) != 0,
            KeepMatch::Condition(bit) => agg.conditions & (1u32 << bit) != 0,
        };
        if hit {
            return Verdict::Kept(Kept::KeepIf(label.clone()));
        }
    }
    if policy.ignore_age {
        return Verdict::Due;
    }
    if agg.undatable {
        return Verdict::Kept(Kept::Undatable);
    }
    let Some(clock) = agg.clock else {
        return Verdict::Kept(Kept::Undatable);
    };
    let due_at = policy.retain.add_to(clock);
    if as_of >= due_at {
        Verdict::Due
    } else {
        Verdict::Kept(Kept::Young { due_at })
    }
}

/// A due case in the plan: the root, the policy that found it due, and how
/// many other due roots (of any policy) it absorbed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub policy: usize,
    pub root: NodeId,
    pub absorbed: u32,
}

/// Per policy: how many cases were due and how many kept, by reason. Every
/// entity of the root type is counted once: `roots = due + kept +
/// inside_due_case`.
#[derive(Clone, Debug, Default)]
pub struct PolicyTally {
    /// Entities of the policy's root type.
    pub roots: u64,
    pub due: u64,
    /// Of the due roots, those that lie inside another due case (an outer
    /// root's, of this policy or another) and go with it.
    pub due_inside_other: u64,
    /// Roots never judged due themselves: another policy found a case
    /// around them due first, and they go with it.
    pub inside_due_case: u64,
    pub kept: std::collections::BTreeMap<String, u64>,
    /// When the cases kept only because their retention still runs become
    /// due: the instants, for the "due per month" outlook.
    pub due_later: Vec<Instant>,
}

#[derive(Debug)]
pub struct Evaluation {
    pub cases: Vec<Case>,
    /// Per node: index of the case deleting it, or `u32::MAX`.
    pub case_of: Vec<u32>,
    pub tallies: Vec<PolicyTally>,
}

pub const NOT_DELETED: u32 = u32::MAX;

impl Evaluation {
    pub fn is_deleted(&self, id: NodeId) -> bool {
        self.case_of[id as usize] != NOT_DELETED
    }
}

/// Evaluates every policy over the graph at `as_of`, to a fixpoint: when a
/// due case goes, the case around it may lose its youngest clock and become
/// due too. Iterating here means a second sweep at the same instant finds
/// nothing new to delete.
pub fn evaluate(graph: &Graph, policies: &[CompiledPolicy], as_of: Instant) -> Evaluation {
    let n = graph.len();
    let mut excluded = vec![false; n];
    // Per node: the first policy that found it a due root, in any round.
    let mut due_root: Vec<u32> = vec![u32::MAX; n];
    let mut tallies = vec![PolicyTally::default(); policies.len()];
    let mut due_under: Vec<Vec<NodeId>> = vec![Vec::new(); policies.len()];
    let mut stack = Vec::new();
    loop {
        let agg = aggregates(graph, &excluded);
        let mut kept = vec![std::collections::BTreeMap::<String, u64>::new(); policies.len()];
        let mut later: Vec<Vec<Instant>> = vec![Vec::new(); policies.len()];
        let mut new_roots = Vec::new();
        for (pi, policy) in policies.iter().enumerate() {
            for (id, node) in graph.nodes.iter().enumerate() {
                if node.ty != policy.root || excluded[id] {
                    continue;
                }
                match judge(policy, &agg[id], as_of) {
                    Verdict::Due => {
                        tallies[pi].due += 1;
                        due_under[pi].push(id as NodeId);
                        if due_root[id] == u32::MAX {
                            due_root[id] = pi as u32;
                            new_roots.push(id);
                        }
                    }
                    Verdict::Kept(k) => {
                        if let Kept::Young { due_at } = k {
                            later[pi].push(due_at);
                        }
                        *kept[pi].entry(k.label()).or_default() += 1
                    }
                }
            }
        }
        if new_roots.is_empty() {
            for (pi, (k, l)) in kept.into_iter().zip(later).enumerate() {
                tallies[pi].kept = k;
                tallies[pi].due_later = l;
            }
            break;
        }
        for root in new_roots {
            stack.clear();
            stack.push(root as NodeId);
            while let Some(x) = stack.pop() {
                if !excluded[x as usize] {
                    excluded[x as usize] = true;
                    stack.extend_from_slice(graph.children(x));
                }
            }
        }
    }
    // Maximal cases: ascending ids visit ancestors before descendants, so a
    // due root inside another due case is absorbed by the outermost one.
    let mut case_of = vec![NOT_DELETED; n];
    let mut cases: Vec<Case> = Vec::new();
    for id in 0..n {
        let pi = due_root[id];
        if pi == u32::MAX {
            continue;
        }
        if case_of[id] != NOT_DELETED {
            cases[case_of[id] as usize].absorbed += 1;
            continue;
        }
        let case = cases.len() as u32;
        cases.push(Case {
            policy: pi as usize,
            root: id as NodeId,
            absorbed: 0,
        });
        stack.clear();
        stack.push(id as NodeId);
        while let Some(x) = stack.pop() {
            if case_of[x as usize] != NOT_DELETED {
                continue;
            }
            case_of[x as usize] = case;
            stack.extend_from_slice(graph.children(x));
        }
    }
    for (pi, policy) in policies.iter().enumerate() {
        let t = &mut tallies[pi];
        t.roots = graph.nodes.iter().filter(|n| n.ty == policy.root).count() as u64;
        t.due_inside_other = due_under[pi]
            .iter()
            .filter(|&&id| {
                let c = &cases[case_of[id as usize] as usize];
                c.root != id || c.policy != pi
            })
            .count() as u64;
        t.inside_due_case = t.roots.saturating_sub(t.due + t.kept.values().sum::<u64>());
    }
    Evaluation {
        cases,
        case_of,
        tallies,
    }
}

/// For `explain`: every case containing `id` (its own, if its type is a
/// policy root, and each ancestor's), with the verdict of each policy.
pub fn cases_containing(
    graph: &Graph,
    policies: &[CompiledPolicy],
    id: NodeId,
    as_of: Instant,
) -> Vec<(usize, NodeId, Aggregate, Verdict)> {
    let agg = aggregates(graph, &[]);
    let mut ancestors = vec![id];
    let mut seen = std::collections::HashSet::from([id]);
    let mut i = 0;
    while i < ancestors.len() {
        for &p in graph.parents(ancestors[i]) {
            if seen.insert(p) {
                ancestors.push(p);
            }
        }
        i += 1;
    }
    let mut out = Vec::new();
    for (pi, policy) in policies.iter().enumerate() {
        for &a in &ancestors {
            if graph.node(a).ty == policy.root {
                out.push((
                    pi,
                    a,
                    agg[a as usize],
                    judge(policy, &agg[a as usize], as_of),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
