//! The fate of one technical object, from what its links point at. Pure.

use crate::config::Retention;
use crate::model::Instant;

/// What one link of an object points at, in this plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// Deleted by this plan, by the policy with this index.
    Deleted(usize),
    /// Exists and stays.
    Retained,
    /// Not in the CRM.
    Absent,
    /// Not in the CRM, and erased by an earlier plan of this state, which
    /// left this object behind (skipped or failed): absent, with no grace
    /// to wait (the grace waits for an entity to appear).
    Erased,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Every link points at a deleted or absent entity, at least one deleted.
    Delete { policy: usize },
    /// Links to a deleted entity and to a retained one: kept (redacted later).
    Shared,
    /// Links only to retained (or absent) entities: kept.
    Retained,
    /// Links only to absent entities, and older than `orphans.retain`.
    OrphanDue,
    /// Links only to absent entities, not old enough (or undatable).
    OrphanYoung,
    /// No rule found a link: reported, never deleted.
    Unlinked,
    /// Could not be read (content rule failed, symlink…) and has no link
    /// left to judge it by: reported, never deleted.
    Unreadable,
    /// On legal hold (key or prefix).
    Held,
}

pub fn object_fate(
    status: &str,
    links: &[LinkTarget],
    held: bool,
    modified: Option<Instant>,
    as_of: Instant,
    orphans_retain: &Retention,
) -> Fate {
    if held {
        return Fate::Held;
    }
    if status == "skipped" {
        return Fate::Unreadable;
    }
    if links.is_empty() {
        return if status == "ok" {
            Fate::Unlinked
        } else {
            Fate::Unreadable
        };
    }
    let retained = links.contains(&LinkTarget::Retained);
    let deleted = links.iter().find_map(|l| match l {
        LinkTarget::Deleted(p) => Some(*p),
        _ => None,
    });
    match (retained, deleted) {
        (true, Some(_)) => Fate::Shared,
        (true, None) => Fate::Retained,
        (false, Some(policy)) => Fate::Delete { policy },
        // Erased by an earlier plan that left the object behind: no grace
        // for those links; any other absent entity keeps its own.
        (false, None) if !links.contains(&LinkTarget::Absent) => Fate::OrphanDue,
        (false, None) => match modified {
            Some(m) if as_of >= orphans_retain.add_to(m) => Fate::OrphanDue,
            _ => Fate::OrphanYoung,
        },
    }
}

/// One link of a shared object, as the redaction decision sees it: what it
/// points at, the record it sits in (`None`: the whole file) and its rule's
/// record signature (`config::ContentKind::record_signature`) and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLink<'a> {
    pub target: LinkTarget,
    pub record: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub rule: usize,
}

/// What a redaction of a shared object removes: the records (by the ids
/// the extractor gave them), read with `rule`'s kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redaction {
    /// The policy of the first deleted entity whose records go; `None`:
    /// only records of entities long absent from the CRM go (the orphans'
    /// rule, `technical.orphans.retain`).
    pub policy: Option<usize>,
    pub rule: usize,
    pub records: Vec<String>,
    /// How many of `records` hold an entity absent from the CRM, and of
    /// those, how many an earlier plan erased (exactly as linked: they are
    /// no sign of a key spelled otherwise, which the brake looks for).
    pub absent_records: u64,
    pub erased_records: u64,
}

/// Whether a shared object can be redacted, and what goes: every link to a
/// deleted entity (and, once the object is older than `orphans.retain`, to
/// an absent one) must sit in a record of one record shape, and no record
/// that goes may link an entity that stays. `Err` says why it is kept whole.
/// An object that links no deleted entity is redacted when it is old enough
/// and records of absent entities sit beside kept ones: as a file that
/// links only absent entities is deleted, the records of absent entities
/// in a file that also serves kept ones are removed (`policy` is `None`).
pub fn redaction(
    links: &[RecordLink<'_>],
    modified: Option<Instant>,
    as_of: Instant,
    orphans_retain: &Retention,
) -> Result<Redaction, &'static str> {
    let absent_goes = matches!(modified, Some(m) if as_of >= orphans_retain.add_to(m));
    let goes = |t: LinkTarget| match t {
        LinkTarget::Deleted(_) | LinkTarget::Erased => true,
        LinkTarget::Absent => absent_goes,
        LinkTarget::Retained => false,
    };
    let mut policy = None;
    let mut shape: Option<(&str, usize)> = None;
    let mut records = std::collections::BTreeSet::new();
    let mut absent = std::collections::BTreeSet::new();
    let mut erased = std::collections::BTreeSet::new();
    for l in links.iter().filter(|l| goes(l.target)) {
        if let LinkTarget::Deleted(p) = l.target {
            policy.get_or_insert(p);
        }
        let (Some(record), Some(signature)) = (l.record, l.signature) else {
            return Err("a deleted entity is linked by the whole file");
        };
        match shape {
            None => shape = Some((signature, l.rule)),
            Some((s, _)) if s != signature => {
                return Err("deleted entities are linked by records of two different shapes");
            }
            Some(_) => {}
        }
        records.insert(record);
        if matches!(l.target, LinkTarget::Absent | LinkTarget::Erased) {
            absent.insert(record);
        }
        if l.target == LinkTarget::Erased {
            erased.insert(record);
        }
    }
    let Some((signature, rule)) = shape else {
        return Err("no deleted entity is linked");
    };
    // A record that goes must not hold a kept entity too.
    let mixed = links.iter().any(|l| {
        !goes(l.target)
            && l.signature == Some(signature)
            && l.record.is_some_and(|r| records.contains(r))
    });
    if mixed {
        return Err("a record of a deleted entity also links a kept one");
    }
    Ok(Redaction {
        policy,
        rule,
        records: records.into_iter().map(str::to_string).collect(),
        absent_records: absent.len() as u64,
        erased_records: erased.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinkTarget::*;

    fn rl(target: LinkTarget, record: Option<&'static str>) -> RecordLink<'static> {
        RecordLink {
            target,
            record,
            signature: record.map(|_| "csv"),
            rule: 0,
        }
    }

    #[test]
    fn redaction_takes_exactly_the_records_of_what_goes() {
        let r = Retention::parse("30 days").unwrap();
        let day = 86_400;
        let links = [
            rl(Deleted(2), Some("row 2")),
            rl(Retained, Some("row 3")),
            rl(Deleted(2), Some("row 4")),
            rl(Absent, Some("row 5")),
        ];
        // Young: the absent entity's record stays.
        assert_eq!(
            redaction(&links, Some(0), 10 * day, &r).unwrap().records,
            vec!["row 2", "row 4"]
        );
        // Old: it goes along.
        let old = redaction(&links, Some(0), 40 * day, &r).unwrap();
        assert_eq!(old.records, vec!["row 2", "row 4", "row 5"]);
        assert_eq!((old.policy, old.absent_records), (Some(2), 1));
        // No deleted entity, only a long absent one beside a kept one: its
        // record goes under the orphans' rule; while young, nothing goes.
        let orphan = [rl(Retained, Some("row 2")), rl(Absent, Some("row 3"))];
        let o = redaction(&orphan, Some(0), 40 * day, &r).unwrap();
        assert_eq!(
            (o.policy, o.records, o.absent_records),
            (None, vec!["row 3".to_string()], 1)
        );
        assert!(redaction(&orphan, Some(0), 10 * day, &r).is_err());
        assert!(
            redaction(&orphan, None, 40 * day, &r).is_err(),
            "undatable: stays"
        );
        // Erased by an earlier plan that left the file behind: no grace.
        let erased = [rl(Retained, Some("row 2")), rl(Erased, Some("row 3"))];
        let e = redaction(&erased, Some(0), day, &r).unwrap();
        assert_eq!(
            (e.policy, e.records, e.absent_records, e.erased_records),
            (None, vec!["row 3".to_string()], 1, 1)
        );
        assert!(
            redaction(&erased, None, day, &r).is_ok(),
            "undatable, but erased"
        );
        // Nothing absent or deleted: nothing to redact.
        assert!(redaction(&[rl(Retained, Some("row 2"))], Some(0), 40 * day, &r).is_err());
        // A whole-file link to a deleted entity: unredactable.
        let whole = [
            rl(Deleted(0), Some("row 2")),
            rl(Deleted(0), None),
            rl(Retained, Some("row 3")),
        ];
        assert!(redaction(&whole, Some(0), day, &r).is_err());
        // A record holding a deleted and a kept entity: unredactable.
        let mixed = [rl(Deleted(0), Some("row 2")), rl(Retained, Some("row 2"))];
        assert!(redaction(&mixed, Some(0), day, &r).is_err());
        // Two record shapes: unredactable.
        let mut other = rl(Deleted(0), Some("/records/0"));
        other.signature = Some("json $.records[*]");
        let shapes = [
            rl(Deleted(0), Some("row 2")),
            other,
            rl(Retained, Some("row 3")),
        ];
        assert!(redaction(&shapes, Some(0), day, &r).is_err());
        // A kept entity linked by the whole file does not stop it.
        let kept_whole = [rl(Deleted(0), Some("row 2")), rl(Retained, None)];
        assert_eq!(
            redaction(&kept_whole, Some(0), day, &r).unwrap().records,
            vec!["row 2"]
        );
    }

    fn fate(links: &[LinkTarget]) -> Fate {
        let r = Retention::parse("30 days").unwrap();
        object_fate("ok", links, false, Some(0), 100 * 86_400, &r)
    }

    #[test]
    fn fates() {
        assert_eq!(fate(&[Deleted(0)]), Fate::Delete { policy: 0 });
        assert_eq!(fate(&[Deleted(1), Absent]), Fate::Delete { policy: 1 });
        assert_eq!(fate(&[Deleted(0), Retained]), Fate::Shared);
        assert_eq!(fate(&[Retained, Absent]), Fate::Retained);
        assert_eq!(fate(&[Absent]), Fate::OrphanDue);
        assert_eq!(fate(&[Retained, Erased]), Fate::Retained);
        let r30 = Retention::parse("30 days").unwrap();
        assert_eq!(
            object_fate("ok", &[Erased, Erased], false, None, 0, &r30),
            Fate::OrphanDue,
            "erased by an earlier plan: no grace, even undatable"
        );
        assert_eq!(
            object_fate("ok", &[Erased, Absent], false, Some(0), 29 * 86_400, &r30),
            Fate::OrphanYoung,
            "an absent entity beside an erased one keeps its grace"
        );
        assert_eq!(
            object_fate("ok", &[Erased, Absent], false, Some(0), 31 * 86_400, &r30),
            Fate::OrphanDue
        );
        assert_eq!(fate(&[]), Fate::Unlinked);
        let r = Retention::parse("30 days").unwrap();
        assert_eq!(
            object_fate("ok", &[Absent], false, Some(0), 29 * 86_400, &r),
            Fate::OrphanYoung
        );
        assert_eq!(
            object_fate("ok", &[Absent], false, None, 1 << 40, &r),
            Fate::OrphanYoung,
            "undatable orphans stay"
        );
        assert_eq!(
            object_fate("ok", &[Deleted(0)], true, Some(0), 0, &r),
            Fate::Held
        );
        assert_eq!(
            object_fate("unreadable", &[], false, Some(0), 0, &r),
            Fate::Unreadable
        );
        assert_eq!(
            object_fate("skipped", &[Deleted(0)], false, Some(0), 0, &r),
            Fate::Unreadable
        );
    }
}

/// What apply's journal says of one entity an object links to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkedNow {
    /// Deleted by this plan, or found already gone.
    Gone,
    /// Its case was skipped at the re-check (kept).
    Kept,
    /// In the plan but not (yet) deleted: its case failed or did not run.
    Pending,
    /// Outside the plan, and the CRM has it now.
    Present,
    /// Outside the plan, and the CRM does not have it (still absent).
    Absent,
}

/// Apply's judgement of one planned object just before it is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recheck {
    /// Delete it.
    Go,
    /// The world changed: the object stays (reported as skipped).
    Skip(&'static str),
    /// It cannot be judged now: marked failed, the next apply tries again.
    Retry(String),
}

/// The re-check of a planned object: `held` now; `links_now` its links in
/// the index now (`None`: it left the index, gone from the store at the last
/// run); whether they are the planned ones; a CRM error while asking about
/// linked entities outside the plan; and what each link points at now.
/// Pure: apply gathers the facts, this decides.
pub fn recheck_object(
    held: bool,
    links_now: Option<&[(String, String)]>,
    links_unchanged: bool,
    crm_error: Option<&str>,
    linked: impl Fn(&(String, String)) -> LinkedNow,
) -> Recheck {
    if held {
        return Recheck::Skip("changed since plan: on hold");
    }
    let Some(now) = links_now else {
        return Recheck::Go;
    };
    if !links_unchanged {
        return Recheck::Skip("changed since plan: its links changed");
    }
    if let Some(e) = crm_error {
        return Recheck::Retry(format!("could not re-check its links: {e}"));
    }
    for t in now {
        match linked(t) {
            LinkedNow::Gone | LinkedNow::Absent => {}
            LinkedNow::Kept => return Recheck::Skip("changed since plan: a linked case was kept"),
            LinkedNow::Pending => {
                return Recheck::Retry(
                    "a linked case was not deleted in this run (it failed); retried by the next apply"
                        .into(),
                );
            }
            LinkedNow::Present => {
                return Recheck::Skip("changed since plan: a linked entity exists in the CRM");
            }
        }
    }
    Recheck::Go
}

#[cfg(test)]
mod recheck_tests {
    use super::*;
    use proptest::prelude::*;

    fn linked_state() -> impl Strategy<Value = LinkedNow> {
        prop_oneof![
            Just(LinkedNow::Gone),
            Just(LinkedNow::Kept),
            Just(LinkedNow::Pending),
            Just(LinkedNow::Present),
            Just(LinkedNow::Absent),
        ]
    }

    proptest! {
        /// Safety of the object phase: an object goes only when it is not
        /// held, its links are the planned ones and were re-checked, and
        /// every entity it links to is gone or still absent. Whatever else
        /// holds, it stays (skipped) or waits (retried).
        #[test]
        fn an_object_goes_only_when_nothing_it_serves_remains(
            held in any::<bool>(),
            indexed in any::<bool>(),
            unchanged in any::<bool>(),
            crm_error in any::<bool>(),
            states in proptest::collection::vec(linked_state(), 0..5),
        ) {
            let links: Vec<(String, String)> =
                (0..states.len()).map(|i| ("lead".to_string(), i.to_string())).collect();
            let verdict = recheck_object(
                held,
                indexed.then_some(links.as_slice()),
                unchanged,
                crm_error.then_some("timeout"),
                |t| states[t.1.parse::<usize>().unwrap()],
            );
            let all_gone = states.iter().all(|s| matches!(s, LinkedNow::Gone | LinkedNow::Absent));
            let may_go = !held && (!indexed || (unchanged && !crm_error && all_gone));
            prop_assert_eq!(verdict == Recheck::Go, may_go, "{:?}", verdict);
            if held {
                prop_assert!(matches!(verdict, Recheck::Skip(_)));
            }
            // A linked entity that exists now, or a kept case, never makes
            // the object wait for a retry that would then delete it.
            if indexed && unchanged && !crm_error && !held
                && states.iter().any(|s| matches!(s, LinkedNow::Kept | LinkedNow::Present))
                && !states.iter().take_while(|s| !matches!(s, LinkedNow::Kept | LinkedNow::Present)).any(|s| *s == LinkedNow::Pending)
            {
                prop_assert!(matches!(verdict, Recheck::Skip(_)), "{:?}", verdict);
            }
        }
    }
}
