//! apply's judgements, pure: the re-check of a case on the rows it has now
//! (`Judge::judge_now`, the plan's evaluation run again on them), what the
//! journal says of an entity an object links to (`linked_now`, a fact for
//! `plan::fate::recheck_object`), and what the store's answer to a delete
//! means for the journal (`settle`). No I/O: the callers gather the facts
//! and write what these decide.

use std::collections::HashSet;

use crate::crm::{CaseNow, Decision};
use crate::evaluate::{self, CompiledPolicy, GraphBuilder, Kept, Verdict};
use crate::plan::fate::LinkedNow;
use crate::state::status::EntityStatus;
use crate::store::{DeleteOutcome, StoreError};

/// What a case is judged by: the config's types and relations, the
/// compiled policies and the plan's instant.
pub(super) struct Judge<'a> {
    pub types: &'a [String],
    /// Per type, the graph type of each parent relation (`evaluate::graph`).
    pub parents_of: &'a [Vec<u16>],
    pub policies: &'a [CompiledPolicy],
    pub as_of: i64,
}

impl Judge<'_> {
    /// The apply-time judgement of one case: the same evaluation as the
    /// plan's, run on the case's rows as they are now, inside the deleting
    /// transaction. `planned`: the (type, stored key) of every entity the
    /// plan has in the case; `held`: the entities on hold now.
    pub(super) fn judge_now(
        &self,
        now: &CaseNow,
        planned: &HashSet<(String, String)>,
        held: &HashSet<(String, String)>,
    ) -> Decision {
        if now.entities.is_empty() {
            return Decision::Delete(Vec::new());
        }
        for e in &now.entities {
            if !planned.contains(&(self.types[e.ty as usize].clone(), e.key.canonical())) {
                return Decision::Skip(
                    "changed since plan: the case has an entity the plan does not".into(),
                );
            }
        }
        // Parents first, as the graph needs them.
        let mut entities: Vec<&crate::crm::EntityNow> = now.entities.iter().collect();
        entities.sort_by_key(|e| e.ty);
        let mut builder = GraphBuilder::new(self.types.to_vec());
        for e in &entities {
            let parent_types = &self.parents_of[e.ty as usize];
            if let Some(id) = builder.add_row(
                e.ty,
                e.key.clone(),
                e.clock,
                parent_types,
                e.parents.clone(),
            ) {
                let node = builder.node_mut(id);
                node.keep_bits = e.keep_bits;
                node.held = held.contains(&(self.types[e.ty as usize].clone(), e.key.canonical()));
            }
        }
        let graph = builder.finish();
        let eval = evaluate::evaluate(&graph, self.policies, self.as_of);
        let root = graph.resolve_key(now.root_ty, &now.root_key);
        let all_go = (0..graph.len()).all(|i| eval.is_deleted(i as u32));
        match root {
            Some(r) if eval.is_deleted(r) && all_go => {
                Decision::Delete(now.entities.iter().map(|e| (e.ty, e.key.clone())).collect())
            }
            Some(r) => {
                let why = evaluate::cases_containing(&graph, self.policies, r, self.as_of)
                    .into_iter()
                    .find_map(|(_, n, _, v)| match v {
                        Verdict::Kept(k) if n == r => Some(k),
                        _ => None,
                    });
                match why {
                    Some(Kept::Young { .. }) | None => {
                        Decision::Skip("changed since plan: touched, no longer due".into())
                    }
                    Some(k) => Decision::Skip(format!("changed since plan: {}", k.label())),
                }
            }
            None => Decision::Delete(Vec::new()),
        }
    }
}

/// What an object's re-check learns of one entity it links to: its
/// journal status in this plan (`None`: the plan does not have it) and,
/// for one outside the plan, whether the CRM has it now.
pub(super) fn linked_now(status: Option<EntityStatus>, present: bool) -> LinkedNow {
    match status {
        Some(EntityStatus::Deleted | EntityStatus::Gone) => LinkedNow::Gone,
        Some(EntityStatus::Skipped) => LinkedNow::Kept,
        Some(EntityStatus::Planned) => LinkedNow::Pending,
        None if present => LinkedNow::Present,
        None => LinkedNow::Absent,
    }
}

/// What the store's answer to one delete means for the journal.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Settled {
    /// Deleted by this plan: journaled `deleted`, audited, off the index.
    Deleted,
    /// Gone before this plan asked: journaled `gone`, not audited, off the
    /// index.
    Gone,
    /// Rewritten since the index read it: kept, journaled skipped (index
    /// and plan again).
    Rewritten,
    /// The delete failed: journaled failed with why; the next apply tries
    /// again.
    Failed(String),
}

/// The journal's reading of a delete's answer. An object found gone was
/// deleted by us when the journal showed our intent before this run
/// (`resumed`: a crashed run deleted it and died before its journal
/// commit), else by someone else. (A lost answer found gone on retry is
/// already `Deleted`: `delete::delete_with_retry`.)
pub(super) fn settle(answer: Result<DeleteOutcome, StoreError>, resumed: bool) -> Settled {
    match answer {
        Ok(DeleteOutcome::Deleted) => Settled::Deleted,
        Ok(DeleteOutcome::AlreadyGone) if resumed => Settled::Deleted,
        Ok(DeleteOutcome::AlreadyGone) => Settled::Gone,
        Ok(DeleteOutcome::Changed) => Settled::Rewritten,
        Err(e) => Settled::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Retention;
    use crate::crm::EntityNow;
    use crate::evaluate::KeepMatch;
    use crate::model::EntityKey;
    use crate::store::StoreErrorKind;

    const DAY: i64 = 86_400;
    /// 2025-01-01T00:00:00Z.
    const AS_OF: i64 = 1_735_689_600;
    const OLD: i64 = AS_OF - 3 * 365 * DAY;
    const RECENT: i64 = AS_OF - 30 * DAY;

    struct World {
        types: Vec<String>,
        parents_of: Vec<Vec<u16>>,
        policies: Vec<CompiledPolicy>,
    }

    /// Leads (type 0) with their deals (type 1, parent a lead), deleted two
    /// years after their last activity unless keep rule 0 matches.
    fn world() -> World {
        World {
            types: vec!["lead".into(), "deal".into()],
            parents_of: vec![vec![], vec![0]],
            policies: vec![CompiledPolicy {
                ignore_age: false,
                name: "leads".into(),
                root: 0,
                retain: Retention::parse("2 years").expect("a retention"),
                keep: vec![("customer".into(), KeepMatch::Condition(0))],
                basis: "test".into(),
            }],
        }
    }

    fn judge(w: &World) -> Judge<'_> {
        Judge {
            types: &w.types,
            parents_of: &w.parents_of,
            policies: &w.policies,
            as_of: AS_OF,
        }
    }

    fn lead(key: i64, clock: i64) -> EntityNow {
        EntityNow {
            ty: 0,
            key: EntityKey::Int(key),
            clock: Some(clock),
            keep_bits: 0,
            parents: vec![],
        }
    }

    fn deal(key: i64, lead: i64, clock: i64) -> EntityNow {
        EntityNow {
            ty: 1,
            key: EntityKey::Int(key),
            clock: Some(clock),
            keep_bits: 0,
            parents: vec![Some(EntityKey::Int(lead))],
        }
    }

    /// The rows the CRM holds now, children listed first (as a backend may
    /// read them): the judgement orders them itself.
    fn case(entities: Vec<EntityNow>) -> CaseNow {
        CaseNow {
            case_id: 7,
            root_ty: 0,
            root_key: EntityKey::Int(1),
            entities,
        }
    }

    fn planned(refs: &[(&str, &str)]) -> HashSet<(String, String)> {
        refs.iter()
            .map(|(t, k)| (t.to_string(), k.to_string()))
            .collect()
    }

    fn skip(reason: &str) -> Decision {
        Decision::Skip(reason.into())
    }

    #[test]
    fn a_case_still_due_deletes_exactly_its_current_rows() {
        let w = world();
        let now = case(vec![deal(10, 1, OLD), lead(1, OLD)]);
        let decision = judge(&w).judge_now(
            &now,
            &planned(&[("lead", "1"), ("deal", "10")]),
            &HashSet::new(),
        );
        assert_eq!(
            decision,
            Decision::Delete(vec![(1, EntityKey::Int(10)), (0, EntityKey::Int(1))])
        );
    }

    #[test]
    fn a_root_gone_since_the_plan_deletes_nothing() {
        let w = world();
        let decision =
            judge(&w).judge_now(&case(vec![]), &planned(&[("lead", "1")]), &HashSet::new());
        assert_eq!(decision, Decision::Delete(Vec::new()));
    }

    #[test]
    fn an_entity_the_plan_does_not_have_skips_the_case() {
        let w = world();
        let now = case(vec![lead(1, OLD), deal(11, 1, OLD)]);
        let decision = judge(&w).judge_now(&now, &planned(&[("lead", "1")]), &HashSet::new());
        assert_eq!(
            decision,
            skip("changed since plan: the case has an entity the plan does not")
        );
    }

    #[test]
    fn recent_activity_anywhere_in_the_case_keeps_it() {
        let w = world();
        let both = planned(&[("lead", "1"), ("deal", "10")]);
        for now in [
            case(vec![lead(1, RECENT), deal(10, 1, OLD)]),
            case(vec![lead(1, OLD), deal(10, 1, RECENT)]),
        ] {
            assert_eq!(
                judge(&w).judge_now(&now, &both, &HashSet::new()),
                skip("changed since plan: touched, no longer due")
            );
        }
    }

    #[test]
    fn a_hold_or_a_keep_rule_now_keeps_the_case_and_says_which() {
        let w = world();
        let both = planned(&[("lead", "1"), ("deal", "10")]);
        let now = case(vec![lead(1, OLD), deal(10, 1, OLD)]);
        assert_eq!(
            judge(&w).judge_now(&now, &both, &planned(&[("deal", "10")])),
            skip("changed since plan: hold")
        );
        let mut customer = deal(10, 1, OLD);
        customer.keep_bits = 1;
        let now = case(vec![lead(1, OLD), customer]);
        assert_eq!(
            judge(&w).judge_now(&now, &both, &HashSet::new()),
            skip("changed since plan: keep_if customer")
        );
    }

    #[test]
    fn the_journal_status_of_a_linked_entity_says_what_it_is_now() {
        use EntityStatus::*;
        for present in [false, true] {
            // The journal wins: the CRM is asked only of entities outside
            // the plan.
            assert_eq!(linked_now(Some(Deleted), present), LinkedNow::Gone);
            assert_eq!(linked_now(Some(Gone), present), LinkedNow::Gone);
            assert_eq!(linked_now(Some(Skipped), present), LinkedNow::Kept);
            assert_eq!(linked_now(Some(Planned), present), LinkedNow::Pending);
        }
        assert_eq!(linked_now(None, true), LinkedNow::Present);
        assert_eq!(linked_now(None, false), LinkedNow::Absent);
    }

    #[test]
    fn an_object_found_gone_is_ours_only_after_our_journaled_intent() {
        for resumed in [false, true] {
            assert_eq!(
                settle(Ok(DeleteOutcome::Deleted), resumed),
                Settled::Deleted
            );
            assert_eq!(
                settle(Ok(DeleteOutcome::Changed), resumed),
                Settled::Rewritten
            );
        }
        assert_eq!(
            settle(Ok(DeleteOutcome::AlreadyGone), true),
            Settled::Deleted
        );
        assert_eq!(settle(Ok(DeleteOutcome::AlreadyGone), false), Settled::Gone);
        let refused = StoreError::failed("delete", StoreErrorKind::Permanent, "access denied");
        let text = refused.to_string();
        assert_eq!(settle(Err(refused), true), Settled::Failed(text));
    }
}
