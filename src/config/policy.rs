//! Policies compiled once, at config load: each policy's root and keep
//! types resolved to the entity types' indices (the config's order, which is
//! the entity graph's), and the conditional keep rules numbered as the bits
//! the CRM reads for them. The plan and apply's re-check judge with these.

use super::{EntityType, KeepRule, Policy, Retention};

/// A policy resolved against the graph's type indices.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub name: String,
    pub root: u16,
    pub retain: Retention,
    /// (label, what matches)
    pub keep: Vec<(String, KeepMatch)>,
    pub basis: String,
    /// A subject request's policy: no retention period and no clock; a
    /// case is due unless held or kept by a `keep_if` (undatable entities
    /// are no reason to keep what a person asked to erase).
    pub ignore_age: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepMatch {
    /// Any entity of this type in the case.
    Type(u16),
    /// Any entity whose conditional keep bit is set.
    Condition(u8),
}

impl CompiledPolicy {
    /// `conditions` lists the distinct conditional keep rules; bit `i` of
    /// `evaluate::Node::keep_bits` means rule `i` matches.
    pub fn compile(
        policy: &Policy,
        graph_types: &[String],
        conditions: &[KeepRule],
    ) -> Option<CompiledPolicy> {
        let ty = |name: &str| graph_types.iter().position(|t| t == name).map(|i| i as u16);
        let mut keep = Vec::new();
        for rule in &policy.keep_if {
            let m = match &rule.condition {
                None => KeepMatch::Type(ty(&rule.entity)?),
                Some(_) => KeepMatch::Condition(conditions.iter().position(|c| c == rule)? as u8),
            };
            keep.push((rule.to_string(), m));
        }
        Some(CompiledPolicy {
            name: policy.name.clone(),
            root: ty(&policy.root)?,
            retain: policy.retain.clone(),
            keep,
            basis: policy.basis.clone(),
            ignore_age: false,
        })
    }
}

/// The conditional keep rules of all policies, distinct, in bit order.
pub fn keep_conditions(policies: &[Policy]) -> Vec<KeepRule> {
    let mut out: Vec<KeepRule> = Vec::new();
    for p in policies {
        for k in &p.keep_if {
            if k.condition.is_some() && !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Every policy compiled against `entities` (in their order); `Err` names a
/// policy whose root or keep type is not among them.
pub fn compile_all(
    policies: &[Policy],
    entities: &[EntityType],
    conditions: &[KeepRule],
) -> Result<Vec<CompiledPolicy>, String> {
    let types: Vec<String> = entities.iter().map(|e| e.name.clone()).collect();
    policies
        .iter()
        .map(|p| CompiledPolicy::compile(p, &types, conditions).ok_or_else(|| p.name.clone()))
        .collect()
}

/// The basis of a subject request's erasure, in its plan and audit records.
pub const REQUEST_BASIS: &str = "GDPR Art. 17(1): erasure on the data subject's request";

/// The policies of a subject request's plan: one per entity type (so that
/// each of the subject's entities is judged on its own subtree, as a sweep
/// judges its roots), named `request:TYPE`, with no retention period
/// (`ignore_age`) and every `keep_if` of every configured policy: what the
/// law requires to keep (a contract's commercial retention, Art. 17(3)(b))
/// is kept from an erasure request as from a sweep.
pub fn request_policies(types: &[String], compiled: &[CompiledPolicy]) -> Vec<CompiledPolicy> {
    let mut keep: Vec<(String, KeepMatch)> = Vec::new();
    for p in compiled {
        for k in &p.keep {
            if !keep.contains(k) {
                keep.push(k.clone());
            }
        }
    }
    types
        .iter()
        .enumerate()
        .map(|(i, t)| CompiledPolicy {
            name: format!("request:{t}"),
            root: i as u16,
            retain: Retention::zero(),
            keep: keep.clone(),
            basis: REQUEST_BASIS.to_string(),
            ignore_age: true,
        })
        .collect()
}
