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
