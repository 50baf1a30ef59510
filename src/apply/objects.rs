//! The object phase of apply, after every case: per claimed batch, each
//! object is re-checked against the holds and its current links
//! (`plan::fate::recheck_object`), the ones going ahead are journaled
//! `executing` (the intent), deleted each only if it is still what the
//! index read, and journaled with their audit records in one state
//! transaction, which also drops them from the index.

use std::collections::{HashMap, HashSet};

use super::delete::delete_objects;
use super::judge::{Settled, linked_now, settle};
use super::{ApplyError, ApplyOptions, ApplyReport, Ctx, POLL, Progress};
use crate::audit::{self, NewRecord};
use crate::crm::Crm;
use crate::index;
use crate::model::EntityKey;
use crate::plan::fate::Recheck;
use crate::state::journal::{self, PlannedObject};
use crate::state::status::{ObjectFate, ObjectStatus};
use crate::state::workers::Items;
use crate::state::{ObjectHolds, q};
use crate::store::{DeleteOutcome, Expected, StoreError, TechnicalStore};

/// A batch judged by the re-check, before anything is journaled.
pub(super) struct Judged<'o> {
    pub(super) go: Vec<&'o PlannedObject>,
    /// reason → items
    skips: HashMap<String, Vec<i64>>,
    retries: Vec<(&'o PlannedObject, String)>,
    /// What the index read of each object (the deletes' expectation).
    pub(super) indexed: HashMap<String, Expected>,
}

impl Ctx<'_> {
    /// The object phase: batches claimed and done until none is open (or a
    /// stop is asked for).
    pub(super) async fn run_objects(
        &self,
        crm: &dyn Crm,
        store: &dyn TechnicalStore,
        options: &ApplyOptions,
        progress: Progress<'_>,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let total_objects = journal::object_count(self.state, self.plan_id).await?;
        let mut done_objects = 0u64;
        while !report.interrupted {
            if options.stopping() {
                report.interrupted = true;
                break;
            }
            let ids = self
                .worker
                .claim(Items::Objects, self.config.apply.batch_objects)
                .await?;
            if ids.is_empty() {
                if self.worker.open_elsewhere(Items::Objects).await? > 0 {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                break;
            }
            let objects = journal::planned_objects(self.state, self.plan_id, &ids).await?;
            self.object_batch(crm, store, &objects, report).await?;
            done_objects += objects.len() as u64;
            progress("objects", done_objects, total_objects);
        }
        Ok(())
    }

    async fn object_batch(
        &self,
        crm: &dyn Crm,
        store: &dyn TechnicalStore,
        objects: &[PlannedObject],
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        // Redactions go one object at a time, each re-checked on its own
        // index entry (`redaction.rs`); the deletes as a batch.
        let (redactions, deletes): (Vec<&PlannedObject>, Vec<&PlannedObject>) =
            objects.iter().partition(|o| o.fate == ObjectFate::Redact);
        if !redactions.is_empty() {
            self.redact_objects(crm, store, &redactions, report).await?;
        }
        if deletes.is_empty() {
            return Ok(());
        }
        let mut judged = self.recheck_objects(crm, &deletes, &HashSet::new()).await?;
        let indexed = std::mem::take(&mut judged.indexed);
        let go = self.journal_intent(&deletes, judged, report).await?;
        if go.is_empty() {
            return Ok(());
        }

        // The deletes themselves, several at a time; each only if the object
        // is still the one the index read (objects that left the index
        // carry no expectation: the delete finds them gone).
        let expected: HashMap<String, Expected> = go
            .iter()
            .filter_map(|o| indexed.get(&o.key).map(|e| (o.key.clone(), e.clone())))
            .collect();
        fail::fail_point!("apply::object-intent", |_| { std::process::abort() });
        let results = delete_objects(store, &go, &expected, &self.config.apply).await;
        fail::fail_point!("apply::object-deleted", |_| { std::process::abort() });
        let going: Vec<i64> = go.iter().map(|o| o.item).collect();
        self.journal_deletes(results, &going, report).await
    }

    /// Gathers what each object's re-check needs (holds, its links in the
    /// index now, the journal of the entities they point at, and whether
    /// the CRM has those outside the plan) and judges each. `going`: the
    /// entities of a case batch being deleted with them (the payload rows
    /// its transaction deletes), judged as gone.
    pub(super) async fn recheck_objects<'o>(
        &self,
        crm: &dyn Crm,
        objects: &[&'o PlannedObject],
        going: &HashSet<(String, String)>,
    ) -> Result<Judged<'o>, ApplyError> {
        let holds = ObjectHolds::from_holds(&self.state.holds().await?);
        let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
        // The links are the index's: an object rewritten since the index
        // read it may link to something else now. Each delete carries what
        // the index saw, and the store deletes only that object.
        let (links, indexed) = index::links_and_metas_of_keys(self.state, &keys).await?;
        // Every entity these objects link to: its journal status in this plan.
        let mut targets: Vec<(String, String)> = links.values().flatten().cloned().collect();
        targets.sort();
        targets.dedup();
        let statuses = journal::entity_statuses(self.state, self.plan_id, &targets).await?;
        let (present, recheck_error) = self.present_outside(crm, &targets, &statuses).await;

        let mut judged = Judged {
            go: Vec::new(),
            skips: HashMap::new(),
            retries: Vec::new(),
            indexed,
        };
        for &o in objects {
            // The facts, gathered above; the judgement is plan::fate's.
            let now = links.get(&o.key).map(Vec::as_slice);
            let verdict = crate::plan::fate::recheck_object(
                holds.holds(&o.key),
                now,
                now.is_some_and(|l| index::links_digest(l) == o.links),
                recheck_error.as_deref(),
                |t| {
                    if going.contains(t) {
                        crate::plan::fate::LinkedNow::Gone
                    } else {
                        linked_now(statuses.get(t).copied(), present.contains(t))
                    }
                },
            );
            match verdict {
                Recheck::Skip(r) => judged.skips.entry(r.to_string()).or_default().push(o.item),
                Recheck::Retry(r) => judged.retries.push((o, r)),
                Recheck::Go => judged.go.push(o),
            }
        }
        Ok(judged)
    }

    /// Journals the re-check in one state transaction: skips and retries
    /// with their reasons, and the intent (`executing`) of the objects
    /// going ahead, which it returns. Only what this worker still holds: a
    /// batch taken over meanwhile is its new holder's to judge and delete.
    async fn journal_intent<'o>(
        &self,
        objects: &[&'o PlannedObject],
        judged: Judged<'o>,
        report: &mut ApplyReport,
    ) -> Result<Vec<&'o PlannedObject>, ApplyError> {
        let Judged {
            mut go,
            mut skips,
            mut retries,
            ..
        } = judged;
        let mut tx = self.state.begin_write().await.map_err(q("journaling"))?;
        let all: Vec<i64> = objects.iter().map(|o| o.item).collect();
        let mine = self
            .worker
            .still_mine(&mut tx, Items::Objects, &all)
            .await?;
        for items in skips.values_mut() {
            items.retain(|i| mine.contains(i));
        }
        retries.retain(|(o, _)| mine.contains(&o.item));
        go.retain(|o| mine.contains(&o.item));
        for (reason, items) in &skips {
            journal::objects_skipped(&mut tx, self.plan_id, reason, items).await?;
            report.objects_skipped += items.len() as u64;
            *report.skipped_reasons.entry(reason.clone()).or_default() += items.len() as u64;
        }
        for (o, reason) in &retries {
            journal::object_failed(&mut tx, self.plan_id, o.item, reason).await?;
            report.objects_failed += 1;
            report
                .failures
                .push((self.pseudo.show_object(&o.key), reason.clone()));
        }
        let going: Vec<i64> = go.iter().map(|o| o.item).collect();
        journal::objects_executing(&mut tx, self.plan_id, &going).await?;
        tx.commit().await.map_err(q("journaling"))?;
        Ok(go)
    }

    /// Journals the deletes' answers and audits what went, in one state
    /// transaction; what left the store leaves the index in it too. Only
    /// what is still ours: an object taken over while its delete was in
    /// flight is journaled (and audited) by its new holder.
    async fn journal_deletes(
        &self,
        results: Vec<(&PlannedObject, Result<DeleteOutcome, StoreError>)>,
        going: &[i64],
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let mut tx = self.state.begin_write().await.map_err(q("journaling"))?;
        let mine = self
            .worker
            .still_mine(&mut tx, Items::Objects, going)
            .await?;
        let mut records = Vec::new();
        let (mut deleted, mut gone, mut off_index) = (Vec::new(), Vec::new(), Vec::new());
        let mut rewritten = Vec::new();
        for (o, result) in results.into_iter().filter(|(o, _)| mine.contains(&o.item)) {
            match settle(result, o.resumed) {
                Settled::Deleted => {
                    deleted.push(o.item);
                    off_index.push(o.key.clone());
                    report.objects_deleted += 1;
                    report.bytes_freed += o.size as u64;
                    records.push(self.object_record(o));
                }
                Settled::Gone => {
                    gone.push(o.item);
                    off_index.push(o.key.clone());
                    report.objects_already_gone += 1;
                }
                Settled::Rewritten => rewritten.push(o.item),
                Settled::Failed(reason) => {
                    journal::object_failed(&mut tx, self.plan_id, o.item, &reason).await?;
                    report.objects_failed += 1;
                    report
                        .failures
                        .push((self.pseudo.show_object(&o.key), reason));
                }
            }
        }
        if !rewritten.is_empty() {
            let reason = "changed since plan: rewritten since the index read it (run `lethe index`, then plan again)";
            journal::objects_skipped(&mut tx, self.plan_id, reason, &rewritten).await?;
            report.objects_skipped += rewritten.len() as u64;
            *report
                .skipped_reasons
                .entry(reason.to_string())
                .or_default() += rewritten.len() as u64;
        }
        for (status, items) in [
            (ObjectStatus::Deleted, &deleted),
            (ObjectStatus::Gone, &gone),
        ] {
            journal::objects_settled(&mut tx, self.plan_id, status, items).await?;
        }
        // Gone from the store, so gone from the index.
        journal::unindex_objects(&mut tx, &off_index).await?;
        audit::append(&mut tx, records).await?;
        tx.commit().await.map_err(q("journaling"))?;
        Ok(())
    }

    /// Of the linked entities `targets`, those outside the plan (no journal
    /// status) were absent from the CRM at plan time: the ones the CRM has
    /// now, and a CRM error if it could not be asked.
    pub(super) async fn present_outside(
        &self,
        crm: &dyn Crm,
        targets: &[(String, String)],
        statuses: &HashMap<(String, String), crate::state::status::EntityStatus>,
    ) -> (HashSet<(String, String)>, Option<String>) {
        let outside: Vec<&(String, String)> = targets
            .iter()
            .filter(|t| !statuses.contains_key(*t))
            .collect();
        let mut asked: HashMap<&str, Vec<EntityKey>> = HashMap::new();
        for (ty, key) in &outside {
            asked.entry(ty.as_str()).or_default().extend(probes(key));
        }
        let mut found: HashSet<(String, String)> = HashSet::new();
        let mut error = None;
        for (ty, ks) in &asked {
            let Some(et) = self.config.entity(ty) else {
                continue;
            };
            match crm.existing(et, ks).await {
                Ok(keys) => found.extend(keys.into_iter().map(|k| (ty.to_string(), k.canonical()))),
                Err(e) => error = Some(e.to_string()),
            }
        }
        let present = outside
            .into_iter()
            .filter(|t| named_by(t, &found))
            .cloned()
            .collect();
        (present, error)
    }

    /// The audit record of an object this plan deleted.
    pub(super) fn object_record(&self, o: &PlannedObject) -> NewRecord {
        let basis = if o.fate == ObjectFate::Orphan {
            orphans_basis(self.config, o.records.as_deref())
        } else {
            self.policies
                .iter()
                .find(|p| p.name == o.policy)
                .map(|p| p.basis.clone())
                .unwrap_or_default()
        };
        NewRecord {
            plan_id: self.plan_id.to_string(),
            policy: Some(o.policy.clone()),
            basis: Some(basis),
            action: "delete-object",
            entity_type: None,
            pseudonym: self.pseudo.object(&o.key),
            bytes: Some(o.size),
            author: None,
            reason_chars: None,
            detail: None,
        }
    }
}

/// The audit's basis of what goes by the orphans' rules: the grace, or,
/// when the plan marked it (`"erased": true` in `records`), the erasure of
/// an entity it served by an earlier plan that left it behind.
pub(super) fn orphans_basis(config: &crate::config::Config, records: Option<&str>) -> String {
    let erased = records
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .is_some_and(|v| v["erased"] == serde_json::Value::Bool(true));
    if erased {
        format!(
            "an entity it served was erased by an earlier plan that left it behind (technical.orphans.retain = {} waived)",
            config.orphans_retain.text()
        )
    } else {
        format!(
            "technical.orphans.retain = {}",
            config.orphans_retain.text()
        )
    }
}

/// The keys the CRM is asked for a link's key: as written, as an integer
/// when it is one, and as a UUID's printed text when it is a UUID spelled
/// otherwise (the plan's graph matches a link so: `Graph::resolve`).
///
/// An integer spelled loosely (`0042`, `+42`) is asked as the integer too,
/// and the answer counts: an entity found so is present, for what goes
/// because its entity is absent must not go when the CRM may have it.
fn probes(key: &str) -> Vec<EntityKey> {
    let mut out = vec![EntityKey::Text(key.to_string())];
    if let Some(i) = crate::evaluate::graph::loose_int(key) {
        out.push(EntityKey::Int(i));
        if i.to_string() != key {
            out.push(EntityKey::Text(i.to_string()));
        }
    }
    out.extend(crate::model::uuid_respelled(key).map(EntityKey::Text));
    out
}

/// Whether the keys the CRM answered (`found`, canonical) name the link
/// target `t` in any spelling it was asked in.
fn named_by(t: &(String, String), found: &HashSet<(String, String)>) -> bool {
    probes(&t.1)
        .into_iter()
        .any(|k| found.contains(&(t.0.clone(), k.canonical())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link spelled in capitals (or braces) is present when the CRM
    /// answers its UUID column's printed text; integers and plain text are
    /// asked as before, and nothing else is respelled.
    #[test]
    fn a_link_is_present_in_any_spelling_the_crm_answers() {
        let printed = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let found: HashSet<(String, String)> = [
            ("lead".to_string(), printed.to_string()),
            ("lead".to_string(), "7".to_string()),
            ("lead".to_string(), "abc".to_string()),
        ]
        .into_iter()
        .collect();
        let t = |k: &str| ("lead".to_string(), k.to_string());
        assert!(named_by(&t(&printed.to_uppercase()), &found));
        assert!(named_by(&t(&format!("{{{printed}}}")), &found));
        assert!(named_by(&t(printed), &found));
        assert!(named_by(&t("7"), &found));
        assert!(named_by(&t("abc"), &found));
        assert!(!named_by(&t("ABC"), &found), "text is not respelled");
        assert!(
            named_by(&t("07"), &found) && named_by(&t(" +7"), &found),
            "07 may be 7: present, never absent"
        );
        assert!(!named_by(&t("70"), &found));
        assert!(!named_by(&("quote".to_string(), "7".to_string()), &found));
        assert_eq!(
            probes(&printed.to_uppercase()),
            vec![
                EntityKey::Text(printed.to_uppercase()),
                EntityKey::Text(printed.to_string())
            ]
        );
        assert_eq!(
            probes("7"),
            vec![EntityKey::Text("7".into()), EntityKey::Int(7)]
        );
    }
}
