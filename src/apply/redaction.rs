//! Apply's redaction of one shared object: spool it, write it again without
//! the planned records (`apply::redact`, the format engines), prove the
//! result (it parses with the same rules and yields exactly the links of
//! the records that stayed), journal the intent with the new content's
//! digest, and hand the rewrite to the store (atomic, conditional on the
//! indexed version). A resumed apply recognises its own rewrite by that
//! digest and finishes the journal step instead of redacting twice.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, Write};

use sha2::{Digest, Sha256};

use crate::config::{Config, LinkRule};
use crate::index::{Link, extract};
use crate::state::StateStore;
use crate::store::{Expected, ObjectMeta, RewriteOutcome, StoreError, TechnicalStore};

/// A planned redaction, as the plan stored it.
#[derive(Clone, Debug)]
pub struct PlannedRedaction {
    pub item: u64,
    pub key: String,
    /// The content rule whose records go.
    pub rule: usize,
    pub records: HashSet<String>,
}

impl PlannedRedaction {
    /// From the plan's `records` column (`{"rule": N, "records": [...]}`).
    pub fn parse(item: u64, key: String, records: &str) -> Option<PlannedRedaction> {
        #[derive(serde::Deserialize)]
        struct Stored {
            rule: usize,
            records: Vec<String>,
        }
        let s: Stored = serde_json::from_str(records).ok()?;
        Some(PlannedRedaction {
            item,
            key,
            rule: s.rule,
            records: s.records.into_iter().collect(),
        })
    }
}

/// What became of one redaction.
#[derive(Debug)]
pub enum Redacted {
    /// Rewritten (now, or by an earlier run that stopped before its
    /// journal step): the new index entry and what went.
    Done {
        meta: ObjectMeta,
        links: Vec<Link>,
        content_rules: Vec<usize>,
        records_removed: u64,
        bytes_before: u64,
        bytes_after: u64,
        /// The entities whose records went: (type, key).
        entities: Vec<(String, String)>,
    },
    /// Changed since the index read it: skipped, never overwritten.
    Changed,
    /// Not there any more.
    Gone,
    /// Not rewritten: the reason (never content).
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RedactionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("redaction spool: {0}")]
    Spool(#[from] std::io::Error),
}

impl RedactionError {
    /// Worth another try (a store hiccup), as for deletes.
    pub fn is_transient(&self) -> bool {
        match self {
            RedactionError::Store(e) => e.kind() == crate::store::StoreErrorKind::Transient,
            RedactionError::State(_) => false,
            RedactionError::Spool(_) => true,
        }
    }
}

/// The content rules that read `key` (their links depend on its content).
fn content_rules<'c>(config: &'c Config, key: &str) -> Vec<&'c LinkRule> {
    config
        .links
        .iter()
        .filter(|r| matches!(r, LinkRule::Content { glob, .. } if glob.is_match(key)))
        .collect()
}

/// The content-rule links of a file on local disk, as the index would
/// find them.
fn links_of_file(
    config: &Config,
    rules: &[&LinkRule],
    file: &std::fs::File,
    size: u64,
) -> Result<Vec<Link>, String> {
    let mut out = Vec::new();
    for rule in rules {
        let LinkRule::Content {
            index,
            kind,
            entity,
            ..
        } = rule
        else {
            continue;
        };
        let mut f = file.try_clone().map_err(|e| e.to_string())?;
        f.rewind().map_err(|e| e.to_string())?;
        let found = extract::content(
            kind,
            Box::new(f),
            size,
            config.max_content_bytes,
            config.max_line_bytes,
        )
        .map_err(|e| format!("rule {index}: {e}"))?;
        out.extend(found.into_iter().map(|f| Link {
            entity_type: entity.clone(),
            entity_key: f.key,
            rule: *index,
            location: Some(f.location),
            record: f.record,
        }));
    }
    Ok(out)
}

/// (rule, type, key) → how many links: what a redaction must keep exactly.
fn tally(links: &[Link]) -> BTreeMap<(usize, &str, &str), u64> {
    let mut m = BTreeMap::new();
    for l in links {
        *m.entry((l.rule, l.entity_type.as_str(), l.entity_key.as_str()))
            .or_default() += 1;
    }
    m
}

fn digest_of(file: &mut std::fs::File) -> std::io::Result<String> {
    file.rewind()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies an object into a local spool (bounded memory: a stream copy).
/// Spools live in the system's temporary folder for the length of one
/// redaction and are removed when dropped.
async fn spool(
    store: &dyn TechnicalStore,
    key: &str,
) -> Result<tempfile::NamedTempFile, RedactionError> {
    let mut reader = store.read(key).await?;
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::NamedTempFile> {
        let mut f = tempfile::NamedTempFile::new()?;
        std::io::copy(&mut reader, f.as_file_mut())?;
        f.as_file_mut().flush()?;
        Ok(f)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(file)
}

/// Redacts one object; `indexed` is its index entry's content-rule links
/// (with records) and `expected` what the index read of it.
pub async fn redact_one(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
    planned: &PlannedRedaction,
    indexed: &[Link],
    expected: &Expected,
) -> Result<Redacted, RedactionError> {
    let rules = content_rules(config, &planned.key);
    let rule_ids: Vec<usize> = rules.iter().map(|r| r.index()).collect();
    let Some(LinkRule::Content { kind, .. }) =
        config.links.iter().find(|r| r.index() == planned.rule)
    else {
        return Ok(Redacted::Refused(format!(
            "link rule {} is no longer a content rule; re-plan",
            planned.rule
        )));
    };
    let signature = kind.record_signature();
    let goes = |l: &Link| {
        l.record
            .as_ref()
            .is_some_and(|r| planned.records.contains(r))
            && config
                .links
                .iter()
                .find(|r| r.index() == l.rule)
                .and_then(LinkRule::record_signature)
                == signature
    };
    let mut entities: Vec<(String, String)> = indexed
        .iter()
        .filter(|l| goes(l))
        .map(|l| (l.entity_type.clone(), l.entity_key.clone()))
        .collect();
    entities.sort();
    entities.dedup();
    let kept: Vec<Link> = indexed.iter().filter(|l| !goes(l)).cloned().collect();

    let Some(now) = store.head(&planned.key).await? else {
        return Ok(Redacted::Gone);
    };
    if !expected.matches(&now) {
        // Ours, from a run that stopped after the rewrite and before its
        // journal step? The intent holds the digest of what it wrote.
        let Some(intended) = crate::state::redacted::intended(state, plan_id, planned.item).await?
        else {
            return Ok(Redacted::Changed);
        };
        let mut file = spool(store, &planned.key).await?;
        if digest_of(file.as_file_mut())? != intended {
            return Ok(Redacted::Changed);
        }
        let links = match links_of_file(config, &rules, file.as_file(), now.size) {
            Ok(l) => l,
            Err(why) => return Ok(Redacted::Refused(why)),
        };
        return Ok(Redacted::Done {
            records_removed: planned.records.len() as u64,
            bytes_before: expected.size,
            bytes_after: now.size,
            meta: now,
            links,
            content_rules: rule_ids,
            entities,
        });
    }

    let input = spool(store, &planned.key).await?;
    let kind = kind.clone();
    let records = planned.records.clone();
    type Staged = (tempfile::NamedTempFile, super::redact::Redacted);
    let engine = tokio::task::spawn_blocking(move || -> std::io::Result<Result<Staged, String>> {
        let mut staged = tempfile::NamedTempFile::new()?;
        let out = {
            let mut w = std::io::BufWriter::new(staged.as_file_mut());
            let r = super::redact::redact(&kind, input.path(), &mut w, &records);
            w.flush()?;
            r
        };
        drop(input);
        Ok(out.map(|r| (staged, r)).map_err(|e| e.to_string()))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let (mut staged, done) = match engine {
        Ok(x) => x,
        Err(why) => return Ok(Redacted::Refused(why)),
    };
    let size_after = staged.as_file().metadata()?.len();
    // The proof before the rewrite: the same rules read the new content,
    // and find exactly the links of the records that stayed.
    let links = match links_of_file(config, &rules, staged.as_file(), size_after) {
        Ok(l) => l,
        Err(why) => return Ok(Redacted::Refused(format!("the redacted file {why}"))),
    };
    let kept_content: Vec<Link> = kept
        .iter()
        .filter(|l| rule_ids.contains(&l.rule))
        .cloned()
        .collect();
    if tally(&links) != tally(&kept_content) {
        return Ok(Redacted::Refused(
            "the redacted file would not link exactly the records that stay (a whole-file rule reads inside the removed records?)".into(),
        ));
    }
    let digest = digest_of(staged.as_file_mut())?;
    crate::state::redacted::intend(state, plan_id, planned.item, &digest).await?;
    fail::fail_point!("apply::redact-before-rewrite", |_| {
        std::process::abort()
    });
    let outcome = store.rewrite(&planned.key, expected, staged.path()).await?;
    fail::fail_point!("apply::redact-rewritten", |_| { std::process::abort() });
    Ok(match outcome {
        RewriteOutcome::Rewritten(meta) => Redacted::Done {
            records_removed: done.records_removed,
            bytes_before: done.bytes_in,
            bytes_after: done.bytes_out,
            meta,
            links,
            content_rules: rule_ids,
            entities,
        },
        RewriteOutcome::Changed => Redacted::Changed,
        RewriteOutcome::AlreadyGone => Redacted::Gone,
    })
}

impl super::Ctx<'_> {
    /// For each planned redaction among `objects`: the entities of the
    /// records that go, as the index holds them now (the re-check judges
    /// the redaction by them).
    pub(super) async fn redaction_links(
        &self,
        objects: &[crate::state::journal::PlannedObject],
    ) -> Result<std::collections::HashMap<String, Vec<(String, String)>>, super::ApplyError> {
        let mut out = std::collections::HashMap::new();
        for o in objects
            .iter()
            .filter(|o| o.fate == crate::state::status::ObjectFate::Redact)
        {
            let Some(planned) = o
                .records
                .as_deref()
                .and_then(|r| PlannedRedaction::parse(o.item as u64, o.key.clone(), r))
            else {
                continue;
            };
            let links = crate::state::redacted::links_of(self.state, &o.key).await?;
            out.insert(
                o.key.clone(),
                links
                    .into_iter()
                    .filter(|l| {
                        l.record
                            .as_ref()
                            .is_some_and(|r| planned.records.contains(r))
                    })
                    .map(|l| (l.entity_type, l.entity_key))
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Redacts the objects the re-check let through (journaled `executing`),
    /// one at a time, each journaled with its audit record and its new index
    /// entry in one state transaction.
    pub(super) async fn redact_objects(
        &self,
        store: &dyn TechnicalStore,
        objects: &[&crate::state::journal::PlannedObject],
        indexed: &std::collections::HashMap<String, Expected>,
        report: &mut super::ApplyReport,
    ) -> Result<(), super::ApplyError> {
        use crate::state::journal;
        use crate::state::status::ObjectStatus;
        use crate::state::workers::Items;
        for o in objects {
            let planned = o
                .records
                .as_deref()
                .and_then(|r| PlannedRedaction::parse(o.item as u64, o.key.clone(), r));
            let expected = indexed.get(&o.key);
            let result = match (planned, expected) {
                (Some(planned), Some(expected)) => {
                    let links = crate::state::redacted::links_of(self.state, &o.key).await?;
                    redact_one(
                        self.config,
                        store,
                        self.state,
                        self.plan_id,
                        &planned,
                        &links,
                        expected,
                    )
                    .await
                }
                (None, _) => Ok(Redacted::Refused(
                    "the plan does not say which records go".into(),
                )),
                (_, None) => Ok(Redacted::Gone),
            };
            let mut tx = self
                .state
                .begin_write()
                .await
                .map_err(crate::state::q("journaling"))?;
            if self
                .worker
                .still_mine(&mut tx, Items::Objects, &[o.item])
                .await?
                .is_empty()
            {
                // Taken over while it ran: its new holder journals it.
                continue;
            }
            let mut records = Vec::new();
            match result {
                Ok(Redacted::Done {
                    meta,
                    links,
                    content_rules,
                    records_removed,
                    bytes_before,
                    bytes_after,
                    entities,
                }) => {
                    journal::objects_settled(
                        &mut tx,
                        self.plan_id,
                        ObjectStatus::Redacted,
                        &[o.item],
                    )
                    .await?;
                    crate::state::redacted::replace_entry(&mut tx, &meta, &content_rules, &links)
                        .await?;
                    let pseudonyms: Vec<String> = entities
                        .iter()
                        .map(|(t, k)| self.pseudo.entity(t, k))
                        .collect();
                    records.push(crate::audit::NewRecord {
                        plan_id: self.plan_id.to_string(),
                        policy: Some(o.policy.clone()),
                        basis: self
                            .policies
                            .iter()
                            .find(|p| p.name == o.policy)
                            .map(|p| p.basis.clone()),
                        action: crate::state::audit_log::REDACT_OBJECT,
                        entity_type: None,
                        pseudonym: self.pseudo.object(&o.key),
                        bytes: Some(bytes_before.saturating_sub(bytes_after) as i64),
                        author: None,
                        reason_chars: None,
                        detail: Some(
                            serde_json::json!({
                                "records_removed": records_removed,
                                "bytes_before": bytes_before,
                                "bytes_after": bytes_after,
                                "entities": pseudonyms,
                            })
                            .to_string(),
                        ),
                    });
                    report.objects_redacted += 1;
                    report.records_removed += records_removed;
                    report.bytes_redacted += bytes_before.saturating_sub(bytes_after);
                }
                Ok(Redacted::Changed) => {
                    let reason = "changed since plan: rewritten since the index read it (run `lethe index`, then plan again)";
                    journal::objects_skipped(&mut tx, self.plan_id, reason, &[o.item]).await?;
                    report.objects_skipped += 1;
                    *report
                        .skipped_reasons
                        .entry(reason.to_string())
                        .or_default() += 1;
                }
                Ok(Redacted::Gone) => {
                    journal::objects_settled(&mut tx, self.plan_id, ObjectStatus::Gone, &[o.item])
                        .await?;
                    journal::unindex_objects(&mut tx, std::slice::from_ref(&o.key)).await?;
                    report.objects_already_gone += 1;
                }
                Ok(Redacted::Refused(why)) => {
                    let reason = format!("not redacted: {why}");
                    journal::object_failed(&mut tx, self.plan_id, o.item, &reason).await?;
                    report.objects_failed += 1;
                    report
                        .failures
                        .push((self.pseudo.show_object(&o.key), reason));
                }
                Err(e) => {
                    let reason = format!("redaction failed: {e}");
                    journal::object_failed(&mut tx, self.plan_id, o.item, &reason).await?;
                    report.objects_failed += 1;
                    report
                        .failures
                        .push((self.pseudo.show_object(&o.key), reason));
                }
            }
            crate::audit::append(&mut tx, records).await?;
            tx.commit().await.map_err(crate::state::q("journaling"))?;
        }
        Ok(())
    }
}
