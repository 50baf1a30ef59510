//! The plan's part on the indexed objects, one at a time as the index
//! streams them: each object's fate (`fate.rs` decides it), made into the
//! rows the plan deletes or redacts and the rows it keeps for review, with
//! the tally of every fate.

use std::collections::HashMap;

use crate::config::Config;
use crate::evaluate::Evaluation;
use crate::index::{self, IndexedEntry};
use crate::model::Instant;
use crate::state::plans::{NewObject, NewReview};

use super::fate::{self, Fate, LinkTarget, object_fate};
use super::{ObjectTally, World};

/// What the plan makes of the indexed objects.
pub(super) struct ObjectPlan<'a> {
    config: &'a Config,
    world: &'a World,
    eval: &'a Evaluation,
    as_of: Instant,
    /// Entity type name → the graph's type index.
    type_of: HashMap<&'a str, u16>,
    /// Link rule → the shape of its records (`None`: no records).
    signatures: HashMap<usize, Option<String>>,
    tally: ObjectTally,
    /// Deleted or redacted.
    to_delete: Vec<NewObject>,
    /// What the plan keeps of the objects, for review (not the retained
    /// ones: they are the bulk, and the index lists them).
    review: Vec<NewReview>,
    /// A subject request's plan reads only the subject's entities: an
    /// entity outside its graph is in this set when the CRM has it
    /// (retained), else absent. `None`: the graph is the whole CRM.
    outside_present: Option<&'a std::collections::HashSet<(String, String)>>,
    /// The links of objects an earlier plan left behind to entities it
    /// erased (`state::journal::erased_left_behind`: object key, type,
    /// key): no orphans' grace for them.
    erased: std::collections::HashSet<(String, String, String)>,
}

impl<'a> ObjectPlan<'a> {
    pub(super) fn new(
        config: &'a Config,
        world: &'a World,
        eval: &'a Evaluation,
        as_of: Instant,
    ) -> Self {
        let type_of = world
            .graph
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u16))
            .collect();
        let signatures = config
            .links
            .iter()
            .map(|r| (r.index(), r.record_signature()))
            .collect();
        ObjectPlan {
            config,
            world,
            eval,
            as_of,
            type_of,
            signatures,
            tally: ObjectTally::default(),
            to_delete: Vec::new(),
            review: Vec::new(),
            outside_present: None,
            erased: std::collections::HashSet::new(),
        }
    }

    /// For a sweep's plan: the entities an earlier plan erased whose
    /// objects it left behind.
    pub(super) fn with_erased(
        mut self,
        erased: std::collections::HashSet<(String, String, String)>,
    ) -> Self {
        self.erased = erased;
        self
    }

    /// For a plan whose graph is part of the CRM: the entities outside it
    /// that the CRM has.
    pub(super) fn with_outside(
        mut self,
        present: &'a std::collections::HashSet<(String, String)>,
    ) -> Self {
        self.outside_present = Some(present);
        self
    }

    /// The tally, the objects to delete or redact in key order, and those
    /// kept for review. The index holds its objects in the order its
    /// parallel reads finished, which changes from run to run; in key
    /// order the same store and CRM give the same plan (its digest too),
    /// and apply meets a folder's files together.
    pub(super) fn finish(mut self) -> (ObjectTally, Vec<NewObject>, Vec<NewReview>) {
        self.to_delete.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        (self.tally, self.to_delete, self.review)
    }

    /// Gives one indexed object its fate.
    pub(super) fn add(&mut self, e: IndexedEntry) {
        self.tally.total += 1;
        self.tally.record_links += e.records.iter().filter(|(_, r)| r.is_some()).count() as u64;
        let targets = self.targets(&e);
        let fate = object_fate(
            &e.status,
            &targets,
            self.world.object_holds.holds(&e.key),
            e.modified,
            self.as_of,
            &self.config.orphans_retain,
        );
        match fate {
            Fate::Delete { policy } => {
                self.tally.delete += 1;
                self.tally.delete_bytes += e.size;
                let policy = self.world.policies[policy].name.clone();
                self.to_delete.push(object(&e, "delete", policy, None));
            }
            Fate::OrphanDue => {
                self.tally.orphan_delete += 1;
                self.tally.orphan_delete_bytes += e.size;
                // Marked when an erased entity waived the grace (the
                // audit's basis says so).
                let erased = targets
                    .contains(&LinkTarget::Erased)
                    .then(|| serde_json::json!({"erased": true}).to_string());
                self.to_delete
                    .push(object(&e, "orphan", "orphans".into(), erased));
            }
            Fate::OrphanYoung => {
                self.tally.orphan_young += 1;
                self.keep(&e, "orphan-young", None);
            }
            Fate::Shared => self.shared(&e, &targets),
            Fate::Retained => self.retained(&e, &targets),
            Fate::Unlinked => {
                self.tally.unlinked += 1;
                self.keep(&e, "unlinked", None);
            }
            Fate::Unreadable => {
                self.tally.unreadable += 1;
                self.keep(&e, "unreadable", e.error.clone());
            }
            Fate::Held => {
                self.tally.held += 1;
                self.keep(&e, "held", None);
            }
        }
    }

    /// What each link of the object names: an entity this plan deletes
    /// (with the policy of its case), one it keeps, or none in the CRM.
    fn targets(&self, e: &IndexedEntry) -> Vec<LinkTarget> {
        let (graph, eval) = (&self.world.graph, self.eval);
        e.links
            .iter()
            .map(|(ty, key)| {
                match self
                    .type_of
                    .get(ty.as_str())
                    .and_then(|t| graph.resolve(*t, key))
                {
                    None => self.unresolved(&e.key, ty, key),
                    Some(n) if eval.is_deleted(n) => {
                        LinkTarget::Deleted(eval.cases[eval.case_of[n as usize] as usize].policy)
                    }
                    Some(_) => LinkTarget::Retained,
                }
            })
            .collect()
    }

    /// What a link names that the graph does not resolve: kept when the CRM
    /// has it outside a request's graph, when an entity hold names it (the
    /// hold holds its payloads), or when its key names a kept entity spelled
    /// loosely (`0042`: not lead 42 to the plan, nor proof that lead 42 is
    /// absent); erased when an earlier plan deleted it and left this object
    /// behind; else absent.
    fn unresolved(&self, object: &str, ty: &str, key: &str) -> LinkTarget {
        let r = (ty.to_string(), key.to_string());
        let loose = crate::evaluate::graph::loose_int(key);
        let held = self.world.entity_holds.contains(&r)
            || loose.is_some_and(|i| {
                self.world
                    .entity_holds
                    .contains(&(r.0.clone(), i.to_string()))
            });
        let kept_loosely = || {
            self.type_of
                .get(ty)
                .and_then(|t| self.world.graph.resolve_loosely(*t, key))
                .is_some()
        };
        if self.outside_present.is_some_and(|p| p.contains(&r)) || held || kept_loosely() {
            LinkTarget::Retained
        } else if self.erased.contains(&(object.to_string(), r.0, r.1)) {
            LinkTarget::Erased
        } else {
            LinkTarget::Absent
        }
    }

    /// A shared object: redacted (its deleted entities' records removed)
    /// where `fate::redaction` allows it, else kept whole, for review.
    fn shared(&mut self, e: &IndexedEntry, targets: &[LinkTarget]) {
        match self.redaction(e, targets) {
            Ok(r) => self.redact(e, r, targets.contains(&LinkTarget::Erased)),
            Err(why) => {
                self.tally.shared += 1;
                self.keep(e, "shared", Some(why.to_string()));
            }
        }
    }

    /// An object that serves a kept entity and no deleted one. When it also
    /// holds records of entities absent from the CRM and is older than
    /// `orphans.retain`, those records go (as a file of absent entities
    /// alone would): a sweep's plan only, for a request's plan reads only
    /// the subject's world. Else it stays whole, as retained.
    fn retained(&mut self, e: &IndexedEntry, targets: &[LinkTarget]) {
        if self.outside_present.is_none()
            && targets
                .iter()
                .any(|t| matches!(t, LinkTarget::Absent | LinkTarget::Erased))
            && let Ok(r) = self.redaction(e, targets)
        {
            return self.redact(e, r, targets.contains(&LinkTarget::Erased));
        }
        self.tally.retained += 1;
    }

    /// What `fate::redaction` makes of the object's record links.
    fn redaction(
        &self,
        e: &IndexedEntry,
        targets: &[LinkTarget],
    ) -> Result<fate::Redaction, &'static str> {
        if !self.config.redact {
            return Err("technical.redact is off");
        }
        let links: Vec<fate::RecordLink<'_>> = targets
            .iter()
            .zip(&e.records)
            .map(|(t, (rule, record))| fate::RecordLink {
                target: *t,
                record: record.as_deref(),
                signature: self.signatures.get(rule).and_then(|s| s.as_deref()),
                rule: *rule,
            })
            .collect();
        fate::redaction(&links, e.modified, self.as_of, &self.config.orphans_retain)
    }

    /// A redaction into the plan: the records that go, and which entity
    /// each record linked as the plan saw it (apply's re-check compares it
    /// with the index then).
    fn redact(&mut self, e: &IndexedEntry, r: fate::Redaction, erased: bool) {
        self.tally.redact += 1;
        self.tally.redact_records += r.records.len() as u64;
        self.tally.redact_bytes += e.size;
        self.tally.redact_absent_records += r.absent_records;
        // The brake weighs the absent entities no plan of this state
        // erased: a key spelled otherwise than the CRM's looks so.
        self.tally.redact_absent_suspect += r.absent_records - r.erased_records;
        let map =
            index::records_digest_of(e.records.iter().zip(&e.links).map(
                |((rule, record), (t, k))| (*rule, record.as_deref(), t.as_str(), k.as_str()),
            ));
        let mut records = serde_json::json!({"rule": r.rule, "records": r.records, "map": map});
        let policy = match r.policy {
            Some(p) => self.world.policies[p].name.clone(),
            None => {
                records["orphans"] = serde_json::Value::Bool(true);
                if erased {
                    records["erased"] = serde_json::Value::Bool(true);
                }
                "orphans".to_string()
            }
        };
        self.to_delete
            .push(object(e, "redact", policy, Some(records.to_string())));
    }

    /// An object the plan keeps, for review.
    fn keep(&mut self, e: &IndexedEntry, fate: &'static str, reason: Option<String>) {
        self.review.push(NewReview {
            kind: "object",
            entity_type: None,
            key: e.key.clone(),
            size: Some(e.size),
            fate: fate.to_string(),
            reason,
            entities: Some(links_json(&e.links)),
        })
    }
}

/// An object the plan deletes or redacts.
fn object(
    e: &IndexedEntry,
    fate: &'static str,
    policy: String,
    records: Option<String>,
) -> NewObject {
    NewObject {
        key: e.key.clone(),
        size: e.size,
        fate,
        policy,
        links: index::links_digest(&e.links),
        entities: links_json(&e.links),
        records,
    }
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
