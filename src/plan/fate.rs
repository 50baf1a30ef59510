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
        (false, None) => match modified {
            Some(m) if as_of >= orphans_retain.add_to(m) => Fate::OrphanDue,
            _ => Fate::OrphanYoung,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinkTarget::*;

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
