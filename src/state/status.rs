//! The words the plan tables store for where each planned item is in
//! apply (`plan_cases`, `plan_entities`, `plan_objects` status) and why an
//! object is planned (`plan_objects.fate`), and what the index knows of an
//! object (`objects.status`), as enums: what `schema.rs` documents per
//! column, and nothing else, is written or read back.

macro_rules! stored_words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The word stored in the journal.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)*
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_words! {
    /// Where a planned case is in apply (`plan_cases.status`).
    CaseStatus {
        /// Not started.
        Planned = "planned",
        /// Claimed with intent: the CRM may have deleted its rows.
        Executing = "executing",
        /// Re-checked and deleted.
        Done = "done",
        /// Kept at the re-check; the reason says why.
        Skipped = "skipped",
        /// The CRM failed; the next apply tries again.
        Failed = "failed",
    }
}

stored_words! {
    /// What became of a planned entity (`plan_entities.status`).
    EntityStatus {
        /// Its case has not been deleted (yet).
        Planned = "planned",
        /// Deleted by this plan.
        Deleted = "deleted",
        /// Found gone, deleted by someone else.
        Gone = "gone",
        /// Its case was kept at the re-check.
        Skipped = "skipped",
    }
}

stored_words! {
    /// Where a planned object is in apply (`plan_objects.status`).
    ObjectStatus {
        /// Not started.
        Planned = "planned",
        /// Journaled with intent: the store may have deleted it.
        Executing = "executing",
        /// Deleted by this plan.
        Deleted = "deleted",
        /// Rewritten by this plan without the deleted entities' records.
        Redacted = "redacted",
        /// Found gone, deleted by someone else.
        Gone = "gone",
        /// Kept at the re-check; the reason says why.
        Skipped = "skipped",
        /// Could not be judged or deleted; the next apply tries again.
        Failed = "failed",
    }
}

stored_words! {
    /// What a plan does with an object (`plan_objects.fate`).
    ObjectFate {
        /// Every entity it links to is deleted by the plan or absent.
        Delete = "delete",
        /// It links to nothing, and is older than `technical.orphans.retain`.
        Orphan = "orphan",
        /// Shared with kept entities: the records of its deleted entities
        /// go (`plan_objects.records` says which), the rest stays.
        Redact = "redact",
    }
}

stored_words! {
    /// What the index could make of an object (`objects.status`).
    IndexStatus {
        /// Its rules read it.
        Ok = "ok",
        /// A content rule could not read it (`objects.error` says why); only
        /// its path links are kept.
        Unreadable = "unreadable",
        /// The listing skipped it (a symlink, say); never read.
        Skipped = "skipped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are the schema's (`schema.rs` documents them per column):
    /// a renamed variant must not change what is stored.
    #[test]
    fn statuses_are_stored_as_the_schema_words() {
        let words = |all: &[&'static str]| all.join(" | ");
        assert_eq!(
            words(
                &CaseStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            "planned | executing | done | skipped | failed"
        );
        assert_eq!(
            words(
                &EntityStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            "planned | deleted | gone | skipped"
        );
        assert_eq!(
            words(
                &ObjectStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            "planned | executing | deleted | redacted | gone | skipped | failed"
        );
        assert_eq!(
            words(
                &ObjectFate::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            "delete | orphan | redact"
        );
        assert_eq!(
            words(
                &IndexStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            ),
            "ok | unreadable | skipped"
        );
        let schema = super::super::schema::STEPS.concat();
        for line in [
            "-- planned | executing | done | skipped | failed",
            "-- planned | deleted | gone | skipped",
            "-- planned | executing | deleted | gone | skipped | failed",
            "-- and redacted",
        ] {
            assert!(schema.contains(line), "schema lacks `{line}`");
        }
    }

    #[test]
    fn every_word_parses_back_and_no_other() {
        for s in ObjectStatus::ALL {
            assert_eq!(ObjectStatus::parse(s.as_str()), Some(*s));
        }
        for s in CaseStatus::ALL {
            assert_eq!(CaseStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(EntityStatus::parse("Deleted"), None);
        assert_eq!(ObjectFate::parse("shared"), None);
    }
}
