//! Apply's redaction of one shared object: spool it, write it again without
//! the planned records (`apply::redact`, the format engines), prove the
//! result (it parses with the same rules and yields exactly the links of
//! the records that stayed), journal the intent with the new content's
//! digest, and hand the rewrite to the store (atomic, conditional on the
//! indexed version). A resumed apply recognises its own rewrite by that
//! digest and finishes the journal step instead of redacting twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{Read, Seek, Write};

use sha2::{Digest, Sha256};

use crate::config::{Config, LinkRule};
use crate::crm::Crm;
use crate::index::{Link, extract};
use crate::plan::fate::Recheck;
use crate::state::ObjectHolds;
use crate::state::journal::{self, PlannedObject};
use crate::state::redacted::InPlace;
use crate::state::status::ObjectStatus;
use crate::state::workers::Items;
use crate::store::{Expected, ObjectMeta, RewriteOutcome, StoreError, TechnicalStore};

/// A planned redaction, as the plan stored it.
#[derive(Clone, Debug)]
pub struct PlannedRedaction {
    pub item: u64,
    pub key: String,
    /// The content rule whose records go.
    pub rule: usize,
    pub records: HashSet<String>,
    /// Which entity each record of the object linked when planned
    /// ([`crate::index::records_digest_of`]); `None` in a plan made before
    /// the plan kept it.
    pub map: Option<String>,
    /// Only records of entities long absent from the CRM go (the orphans'
    /// rule): the audit's basis is `technical.orphans.retain`.
    pub orphans: bool,
}

impl PlannedRedaction {
    /// From the plan's `records` column (`{"rule": N, "records": [...]}`).
    pub fn parse(item: u64, key: String, records: &str) -> Option<PlannedRedaction> {
        #[derive(serde::Deserialize)]
        struct Stored {
            rule: usize,
            records: Vec<String>,
            #[serde(default)]
            map: Option<String>,
            #[serde(default)]
            orphans: bool,
        }
        let s: Stored = serde_json::from_str(records).ok()?;
        Some(PlannedRedaction {
            item,
            key,
            rule: s.rule,
            records: s.records.into_iter().collect(),
            map: s.map,
            orphans: s.orphans,
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
        /// How the index rows of the old links become `links`, when known.
        in_place: Option<Box<InPlace>>,
        records_removed: u64,
        bytes_before: u64,
        bytes_after: u64,
        /// The pseudonyms of the entities whose records went.
        pseudonyms: Vec<String>,
    },
    /// Changed since the index read it: skipped, never overwritten.
    Changed,
    /// Not there any more.
    Gone,
    /// Not rewritten: the reason (never content); the next apply tries
    /// again.
    Refused(String),
    /// Kept by the re-check (held, its links changed, a linked case kept):
    /// the reason.
    Skipped(String),
    /// Not judged now (a linked case pending, the CRM not answering): the
    /// reason; the next apply tries again.
    Failed(String),
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
pub(crate) fn links_of_file(
    limits: (u64, u64),
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
        let found = extract::content(kind, Box::new(f), size, limits.0, limits.1)
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
pub(crate) fn tally(links: &[Link]) -> BTreeMap<(usize, &str, &str), u64> {
    let mut m = BTreeMap::new();
    for l in links {
        *m.entry((l.rule, l.entity_type.as_str(), l.entity_key.as_str()))
            .or_default() += 1;
    }
    m
}

/// Which kept link's index row each new link takes over (see
/// [`InPlace`]): within each (rule, type, key), in order. `None` unless
/// they pair up one to one (the proof's tally makes them).
fn pair_rows(kept: &[Link], kept_rows: &[i64], new: &[Link]) -> Option<Vec<i64>> {
    if kept.len() != kept_rows.len() || kept.len() != new.len() {
        return None;
    }
    let mut rows: HashMap<(usize, &str, &str), VecDeque<i64>> = HashMap::new();
    for (l, &row) in kept.iter().zip(kept_rows) {
        rows.entry((l.rule, l.entity_type.as_str(), l.entity_key.as_str()))
            .or_default()
            .push_back(row);
    }
    let paired = new
        .iter()
        .map(|l| {
            rows.get_mut(&(l.rule, l.entity_type.as_str(), l.entity_key.as_str()))?
                .pop_front()
        })
        .collect::<Option<Vec<i64>>>()?;
    rows.values().all(VecDeque::is_empty).then_some(paired)
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
/// A spool is a file in the system's temporary folder with no name
/// (`O_TMPFILE` where the system has it, else removed as soon as it is
/// created): it holds the records that go, and a process killed
/// mid-redaction must leave no copy of them behind.
async fn spool(store: &dyn TechnicalStore, key: &str) -> Result<std::fs::File, RedactionError> {
    let mut reader = store.read(key).await?;
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let mut f = tempfile::tempfile()?;
        std::io::copy(&mut reader, &mut f)?;
        f.flush()?;
        Ok(f)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(file)
}

/// A redaction made ready, before the store is asked to change anything.
enum Prepared {
    /// The redacted content, staged in a local file and proven; its digest
    /// goes into the intent before the store is asked to rewrite.
    Staged {
        staged: tempfile::NamedTempFile,
        digest: String,
        done: super::redact::Redacted,
        links: Vec<Link>,
        content_rules: Vec<usize>,
        in_place: Option<Box<InPlace>>,
        pseudonyms: Vec<String>,
    },
    /// Settled without a rewrite (ours from an earlier run, changed, gone,
    /// refused).
    Settled(Redacted),
}

/// Which links belong to a record that the planned redaction removes: a
/// link whose record is one of the planned ones, read by a rule of the same
/// record shape as the planned rule (so that the record names the same
/// bytes).
struct Goes<'p> {
    records: &'p HashSet<String>,
    rules: HashSet<usize>,
}

impl<'p> Goes<'p> {
    fn new(
        config: &Config,
        planned: &'p PlannedRedaction,
        kind: &crate::config::ContentKind,
    ) -> Self {
        let signature = kind.record_signature();
        Goes {
            records: &planned.records,
            rules: config
                .links
                .iter()
                .filter(|r| signature.is_some() && r.record_signature() == signature)
                .map(LinkRule::index)
                .collect(),
        }
    }

    fn goes(&self, l: &Link) -> bool {
        self.rules.contains(&l.rule) && l.record.as_ref().is_some_and(|r| self.records.contains(r))
    }
}

/// The record shape of the planned rule, or why the plan no longer fits the
/// config.
fn planned_kind<'c>(
    config: &'c Config,
    planned: &PlannedRedaction,
) -> Result<&'c crate::config::ContentKind, String> {
    match config.links.iter().find(|r| r.index() == planned.rule) {
        Some(LinkRule::Content { kind, .. }) => Ok(kind),
        _ => Err(format!(
            "link rule {} is no longer a content rule; re-plan",
            planned.rule
        )),
    }
}

/// The entities (type, key) whose records the planned redaction removes,
/// as the index links them now: the re-check judges the redaction by them
/// (the other links are of kept entities, which stay).
pub fn going_entities(
    config: &Config,
    planned: &PlannedRedaction,
    indexed: &[Link],
) -> Vec<(String, String)> {
    let Ok(kind) = planned_kind(config, planned) else {
        return Vec::new();
    };
    let goes = Goes::new(config, planned, kind);
    let mut out: Vec<(String, String)> = indexed
        .iter()
        .filter(|l| goes.goes(l))
        .map(|l| (l.entity_type.clone(), l.entity_key.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Makes one redaction ready: `indexed` is the object's index entry (every
/// link, with rule and record; `rows`, when known, the index row of each)
/// and `expected` what the index read of it. Nothing in the store or the
/// state store changes here.
async fn prepare(
    config: &Config,
    pseudo: &crate::audit::pseudonym::Pseudonymizer,
    store: &dyn TechnicalStore,
    planned: &PlannedRedaction,
    indexed: Vec<Link>,
    rows: Option<Vec<i64>>,
    expected: &Expected,
) -> Result<Prepared, RedactionError> {
    let Some(now) = store.head(&planned.key).await? else {
        return Ok(Prepared::Settled(Redacted::Gone));
    };
    // By the name the index matched (a payload table's name column).
    let rules = content_rules(config, now.rule_name());
    let rule_ids: Vec<usize> = rules.iter().map(|r| r.index()).collect();
    let kind = match planned_kind(config, planned) {
        Ok(k) => k.clone(),
        Err(why) => return Ok(Prepared::Settled(Redacted::Refused(why))),
    };
    let entities = going_entities(config, planned, &indexed);
    let goes = Goes::new(config, planned, &kind);
    // What must stay: the content-rule links of the records that are kept
    // (and, when known, their index rows and those of the links that go).
    let mut kept_content: Vec<Link> = Vec::new();
    let (mut kept_rows, mut gone_rows) = (Vec::new(), Vec::new());
    for (i, l) in indexed.into_iter().enumerate() {
        if !rule_ids.contains(&l.rule) {
            continue;
        }
        let row = rows.as_ref().and_then(|r| r.get(i).copied());
        if goes.goes(&l) {
            gone_rows.extend(row);
        } else {
            kept_rows.extend(row);
            kept_content.push(l);
        }
    }
    // A record that stays must not be one of an entity whose records go
    // (the plan took every record of each; the re-check compared the
    // records with the plan's): else the file would keep what the audit
    // says went.
    let going: HashSet<(&str, &str)> = entities
        .iter()
        .map(|(t, k)| (t.as_str(), k.as_str()))
        .collect();
    if kept_content
        .iter()
        .any(|l| going.contains(&(l.entity_type.as_str(), l.entity_key.as_str())))
    {
        return Ok(Prepared::Settled(Redacted::Refused(
            "a record that stays belongs to an entity whose records go; re-plan".into(),
        )));
    }
    let known_rows = rows.is_some();
    if !expected.matches(&now) {
        // (Ours, from a run that stopped after the rewrite and before its
        // journal step, was recognised before the re-check: `own_rewrite`.)
        return Ok(Prepared::Settled(Redacted::Changed));
    }

    let input = spool(store, &planned.key).await?;
    fail::fail_point!("apply::redact-spooled", |_| { std::process::abort() });
    let records = planned.records.clone();
    let rules: Vec<LinkRule> = rules.into_iter().cloned().collect();
    let limits = (config.max_content_bytes, config.max_line_bytes);
    let pseudo = pseudo.clone();
    // The engine, the proof, the digest and the audit's pseudonyms: one
    // blocking task (CPU and
    // local files), so that the next object's can run beside this one's
    // journal step.
    let staged = tokio::task::spawn_blocking(move || -> std::io::Result<Result<Prepared, String>> {
        let mut staged = tempfile::NamedTempFile::new()?;
        let out = {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, staged.as_file_mut());
            let r = super::redact::redact(&kind, &input, &mut w, &records);
            w.flush()?;
            r
        };
        drop(input);
        let done = match out {
            Ok(d) => d,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let size_after = staged.as_file().metadata()?.len();
        // The proof before the rewrite: the same rules read the new
        // content, and find exactly the links of the records that stayed.
        let rules: Vec<&LinkRule> = rules.iter().collect();
        let links = match links_of_file(limits, &rules, staged.as_file(), size_after) {
            Ok(l) => l,
            Err(why) => return Ok(Err(format!("the redacted file {why}"))),
        };
        if tally(&links) != tally(&kept_content) {
            return Ok(Err(
                "the redacted file would not link exactly the records that stay (a whole-file rule reads inside the removed records?)".into(),
            ));
        }
        let in_place = known_rows
            .then(|| pair_rows(&kept_content, &kept_rows, &links))
            .flatten()
            .map(|kept| {
                Box::new(InPlace {
                    gone: gone_rows,
                    kept,
                })
            });
        drop(kept_content);
        let digest = digest_of(staged.as_file_mut())?;
        Ok(Ok(Prepared::Staged {
            staged,
            digest,
            done,
            links,
            content_rules: rule_ids,
            in_place,
            pseudonyms: pseudonyms_of(&pseudo, &entities),
        }))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(staged.unwrap_or_else(|why| Prepared::Settled(Redacted::Refused(why))))
}

/// A redaction staged and proven, waiting for its intent and rewrite.
struct StagedRewrite {
    planned: PlannedRedaction,
    expected: Expected,
    staged: tempfile::NamedTempFile,
    digest: String,
    done: super::redact::Redacted,
    links: Vec<Link>,
    content_rules: Vec<usize>,
    in_place: Option<Box<InPlace>>,
    pseudonyms: Vec<String>,
}

/// The audit's pseudonyms of entities (type, key).
fn pseudonyms_of(
    pseudo: &crate::audit::pseudonym::Pseudonymizer,
    entities: &[(String, String)],
) -> Vec<String> {
    entities.iter().map(|(t, k)| pseudo.entity(t, k)).collect()
}

/// A redaction made ready: settled already (skipped, failed, ours from an
/// earlier run, gone, refused), or staged, or an error to journal.
enum Ready {
    Settled(Redacted),
    Staged(Box<StagedRewrite>),
    Error(RedactionError),
}

/// A redaction's step before the store is asked: the re-check's verdict.
enum Judged {
    Go {
        planned: PlannedRedaction,
        links: Vec<Link>,
        rows: Option<Vec<i64>>,
        expected: Expected,
    },
    Skip(String),
    Retry(String),
}

/// Redactions carried out (rewritten, or settled without a rewrite) and
/// not yet journaled: their journal steps go into one state transaction
/// (see [`Unjournaled::full`]).
#[derive(Default)]
struct Unjournaled<'o> {
    done: Vec<(&'o PlannedObject, Result<Redacted, RedactionError>)>,
    /// The links of their new index entries.
    links: usize,
}

impl<'o> Unjournaled<'o> {
    /// At most this many objects, or this many links of their new index
    /// entries (memory), wait for one journal transaction. One transaction
    /// for several: each link deleted or changed in the index writes a
    /// page of the entity index, and the objects of a sweep share most of
    /// those pages; written (and checkpointed) once per transaction rather
    /// than once per object.
    const OBJECTS: usize = 32;
    const LINKS: usize = 200_000;

    fn push(&mut self, o: &'o PlannedObject, result: Result<Redacted, RedactionError>) {
        if let Ok(Redacted::Done { links, .. }) = &result {
            self.links += links.len();
        }
        self.done.push((o, result));
    }

    fn full(&self) -> bool {
        self.done.len() >= Self::OBJECTS || self.links >= Self::LINKS
    }
}

impl super::Ctx<'_> {
    /// The redactions among a claimed batch, one object at a time (memory:
    /// the links of one object, and the new index entries of those not
    /// journaled yet): re-checked on the object's index entry (read once),
    /// made ready (spooled, redacted, proven), the intent journaled with
    /// the new content's digest, rewritten by the store; then journaled,
    /// with its audit record and new index entry, in a state transaction
    /// that journals the objects before it too (a few at a time: see
    /// [`Unjournaled`]). A run that stops between a rewrite and its journal
    /// step leaves the item `executing` with the digest of the new
    /// content, which the next run recognises (as after a crash).
    pub(super) async fn redact_objects(
        &self,
        crm: &dyn Crm,
        store: &dyn TechnicalStore,
        objects: &[&PlannedObject],
        report: &mut super::ApplyReport,
    ) -> Result<(), super::ApplyError> {
        let mut unjournaled = Unjournaled::default();
        let carried = self
            .carry_out_all(crm, store, objects, &mut unjournaled, report)
            .await;
        // What was carried out is journaled even when a later object
        // failed the run.
        let journaled = self.journal_redactions(&mut unjournaled, report).await;
        carried.and(journaled)
    }

    /// [`Self::redact_objects`] up to the last journal transaction.
    async fn carry_out_all<'o>(
        &self,
        crm: &dyn Crm,
        store: &dyn TechnicalStore,
        objects: &[&'o PlannedObject],
        unjournaled: &mut Unjournaled<'o>,
        report: &mut super::ApplyReport,
    ) -> Result<(), super::ApplyError> {
        let holds = ObjectHolds::from_holds(&self.state.holds().await?);
        let unsettled = journal::unsettled_entities(self.state, self.plan_id).await?;
        let mut objects = objects.iter();
        let Some(&first) = objects.next() else {
            return Ok(());
        };
        // Two at a time: the next object is re-checked and made ready
        // (reads, and the engine on a blocking thread) while this one is
        // rewritten and journaled. Only the ready steps overlap; what
        // changes the store and the journal goes one object at a time.
        let mut current = (
            first,
            self.ready(crm, store, &holds, &unsettled, first).await?,
        );
        loop {
            let finish = self.carry_out(store, current.0, current.1, unjournaled, report);
            let Some(&next) = objects.next() else {
                return finish.await;
            };
            let (finished, next_ready) =
                tokio::join!(finish, self.ready(crm, store, &holds, &unsettled, next));
            finished?;
            current = (next, next_ready?);
        }
    }

    /// One planned redaction up to the point where the store is asked:
    /// re-checked, then spooled, redacted and proven.
    async fn ready(
        &self,
        crm: &dyn Crm,
        store: &dyn TechnicalStore,
        holds: &ObjectHolds,
        unsettled: &std::collections::HashMap<(String, String), crate::state::status::EntityStatus>,
        o: &PlannedObject,
    ) -> Result<Ready, super::ApplyError> {
        if o.resumed {
            match self.own_rewrite(store, o).await {
                Ok(Some(done)) => return Ok(Ready::Settled(done)),
                Ok(None) => {}
                Err(e) => return Ok(Ready::Error(e)),
            }
        }
        Ok(
            match self.recheck_redaction(crm, holds, unsettled, o).await? {
                Judged::Skip(reason) => Ready::Settled(Redacted::Skipped(reason)),
                Judged::Retry(reason) => Ready::Settled(Redacted::Failed(reason)),
                Judged::Go {
                    planned,
                    links,
                    rows,
                    expected,
                } => match prepare(
                    self.config,
                    self.pseudo,
                    store,
                    &planned,
                    links,
                    rows,
                    &expected,
                )
                .await
                {
                    Ok(Prepared::Settled(r)) => Ready::Settled(r),
                    Ok(Prepared::Staged {
                        staged,
                        digest,
                        done,
                        links,
                        content_rules,
                        in_place,
                        pseudonyms,
                    }) => Ready::Staged(Box::new(StagedRewrite {
                        planned,
                        expected,
                        staged,
                        digest,
                        done,
                        links,
                        content_rules,
                        in_place,
                        pseudonyms,
                    })),
                    Err(e) => Ready::Error(e),
                },
            },
        )
    }

    /// A ready redaction carried through: the intent journaled (with the
    /// new content's digest), the store's conditional rewrite; its journal
    /// step waits in `unjournaled`, journaled with the others' when they
    /// are enough.
    async fn carry_out<'o>(
        &self,
        store: &dyn TechnicalStore,
        o: &'o PlannedObject,
        ready: Ready,
        unjournaled: &mut Unjournaled<'o>,
        report: &mut super::ApplyReport,
    ) -> Result<(), super::ApplyError> {
        let result = match ready {
            Ready::Settled(r) => Ok(Some(r)),
            Ready::Error(e) => Err(e),
            Ready::Staged(staged) => self.rewrite(store, o, *staged).await,
        };
        let Some(result) = result.transpose() else {
            // Taken over before its intent: its new holder journals it.
            return Ok(());
        };
        unjournaled.push(o, result);
        if unjournaled.full() {
            self.journal_redactions(unjournaled, report).await?;
        }
        Ok(())
    }

    /// A redaction an earlier run rewrote and did not journal (killed
    /// between the two), recognised by the digest of the new content its
    /// intent holds — before any judgement: a hold placed, or an index run
    /// (a sweep's next plan) since the rewrite, must not hide what was
    /// done, or it would be journaled skipped with no audit record.
    /// `None`: not (or no longer) ours; the re-check judges it.
    async fn own_rewrite(
        &self,
        store: &dyn TechnicalStore,
        o: &PlannedObject,
    ) -> Result<Option<Redacted>, RedactionError> {
        let Some(intended) =
            crate::state::redacted::intended(self.state, self.plan_id, o.item as u64).await?
        else {
            return Ok(None);
        };
        let Some(planned) = o
            .records
            .as_deref()
            .and_then(|r| PlannedRedaction::parse(o.item as u64, o.key.clone(), r))
        else {
            return Ok(None);
        };
        let Some(now) = store.head(&o.key).await? else {
            return Ok(None);
        };
        let mut file = spool(store, &o.key).await?;
        if digest_of(&mut file)? != intended {
            return Ok(None);
        }
        let rules = content_rules(self.config, now.rule_name());
        let rule_ids: Vec<usize> = rules.iter().map(|r| r.index()).collect();
        let limits = (self.config.max_content_bytes, self.config.max_line_bytes);
        let links = match links_of_file(limits, &rules, &file, now.size) {
            Ok(l) => l,
            Err(why) => return Ok(Some(Redacted::Refused(why))),
        };
        // The entities whose records went: linked when planned, and linked
        // now neither by the new content nor otherwise (a path, metadata
        // or registered link of the index entry stays as it was). Each had
        // every record removed and nothing else; every other keeps a link.
        let other_links = crate::state::redacted::entry_of(self.state, &o.key)
            .await?
            .map(|e| e.links)
            .unwrap_or_default();
        // (UUID keys compared as printed: a request's plan reads them so.)
        let printed = |k: &str| crate::model::uuid_respelled(k).unwrap_or_else(|| k.to_string());
        let linked_now: HashSet<(String, String)> = links
            .iter()
            .chain(other_links.iter().filter(|l| !rule_ids.contains(&l.rule)))
            .map(|l| (l.entity_type.clone(), printed(&l.entity_key)))
            .collect();
        let mut gone: Vec<(String, String)> =
            crate::state::redacted::planned_entities(self.state, self.plan_id, o.item as u64)
                .await?
                .into_iter()
                .filter(|(t, k)| !linked_now.contains(&(t.clone(), printed(k))))
                .collect();
        gone.sort();
        gone.dedup();
        Ok(Some(Redacted::Done {
            records_removed: planned.records.len() as u64,
            bytes_before: u64::try_from(o.size).unwrap_or(0),
            bytes_after: now.size,
            meta: now,
            links,
            content_rules: rule_ids,
            in_place: None,
            pseudonyms: pseudonyms_of(self.pseudo, &gone),
        }))
    }

    /// The re-check of one planned redaction, on its index entry now: held?
    /// its links as planned? every entity whose records go gone (or still
    /// absent)? The judgement is `plan::fate::recheck_object`'s.
    async fn recheck_redaction(
        &self,
        crm: &dyn Crm,
        holds: &ObjectHolds,
        unsettled: &std::collections::HashMap<(String, String), crate::state::status::EntityStatus>,
        o: &PlannedObject,
    ) -> Result<Judged, super::ApplyError> {
        let Some(planned) = o
            .records
            .as_deref()
            .and_then(|r| PlannedRedaction::parse(o.item as u64, o.key.clone(), r))
        else {
            return Ok(Judged::Retry(
                "not redacted: the plan does not say which records go".into(),
            ));
        };
        let Some(crate::state::redacted::Entry {
            expected,
            links,
            rows,
        }) = crate::state::redacted::entry_of(self.state, &o.key).await?
        else {
            return Ok(Judged::Skip(NOT_IN_INDEX.into()));
        };
        // The planned records are positions: they must still hold the
        // entities they held when planned, or the plan is stale (never cut
        // what sits there now).
        let Some(map) = planned.map.as_deref() else {
            return Ok(Judged::Skip(NO_RECORDS_MAP.into()));
        };
        let map_now = crate::index::records_digest_of(links.iter().map(|l| {
            (
                l.rule,
                l.record.as_deref(),
                l.entity_type.as_str(),
                l.entity_key.as_str(),
            )
        }));
        if map_now != map {
            return Ok(Judged::Skip(RECORDS_MOVED.into()));
        }
        let going = going_entities(self.config, &planned, &links);
        if going.is_empty() {
            return Ok(Judged::Skip(NOT_IN_INDEX.into()));
        }
        let unchanged = crate::index::links_digest_of(
            links
                .iter()
                .map(|l| (l.entity_type.as_str(), l.entity_key.as_str())),
        ) == o.links;
        // An entity whose records go is either unsettled in this plan (its
        // status decides) or was deleted by it or never in it: then the CRM
        // must not have it now (deleted, or still absent).
        let (present, crm_error) = self.present_outside(crm, &going, unsettled).await;
        let verdict = crate::plan::fate::recheck_object(
            holds.holds(&o.key),
            Some(&going),
            unchanged,
            crm_error.as_deref(),
            |t| super::judge::linked_now(unsettled.get(t).copied(), present.contains(t)),
        );
        Ok(match verdict {
            Recheck::Go => Judged::Go {
                planned,
                links,
                rows,
                expected,
            },
            Recheck::Skip(r) => Judged::Skip(r.to_string()),
            Recheck::Retry(r) => Judged::Retry(r),
        })
    }

    /// Journals the intent (`executing`, with the new content's digest) in
    /// one state transaction, and hands the rewrite to the store. `None`:
    /// the item was taken over by another worker (PostgreSQL) before its
    /// intent.
    async fn rewrite(
        &self,
        store: &dyn TechnicalStore,
        o: &PlannedObject,
        staged: StagedRewrite,
    ) -> Result<Option<Redacted>, RedactionError> {
        let StagedRewrite {
            planned,
            expected,
            staged,
            digest,
            done,
            links,
            content_rules,
            in_place,
            pseudonyms,
        } = staged;
        if !self.journal_intent_of_rewrite(o.item, &digest).await? {
            return Ok(None);
        }
        fail::fail_point!("apply::redact-before-rewrite", |_| {
            std::process::abort()
        });
        let outcome = store
            .rewrite(&planned.key, &expected, staged.path())
            .await?;
        fail::fail_point!("apply::redact-rewritten", |_| { std::process::abort() });
        Ok(Some(match outcome {
            RewriteOutcome::Rewritten(meta) => Redacted::Done {
                records_removed: done.records_removed,
                bytes_before: done.bytes_in,
                bytes_after: done.bytes_out,
                meta,
                links,
                content_rules,
                in_place,
                pseudonyms,
            },
            RewriteOutcome::Changed => Redacted::Changed,
            RewriteOutcome::AlreadyGone => Redacted::Gone,
        }))
    }

    /// The intent of a rewrite, committed before the store is asked: the
    /// item `executing`, with the digest of the content about to replace
    /// the object. False when the item is no longer this worker's.
    async fn journal_intent_of_rewrite(
        &self,
        item: i64,
        digest: &str,
    ) -> Result<bool, crate::state::StateError> {
        let mut tx = self
            .state
            .begin_write()
            .await
            .map_err(crate::state::q("journaling"))?;
        if self
            .worker
            .still_mine(&mut tx, Items::Objects, &[item])
            .await?
            .is_empty()
        {
            return Ok(false);
        }
        journal::objects_executing(&mut tx, self.plan_id, &[item]).await?;
        crate::state::redacted::intend(&mut tx, self.plan_id, item as u64, digest).await?;
        tx.commit().await.map_err(crate::state::q("journaling"))?;
        Ok(true)
    }

    /// Journals what became of the redactions in `unjournaled` (and
    /// empties it), each with its audit record and (when rewritten) the
    /// object's new index entry, in one state transaction. Only the items
    /// still this worker's.
    async fn journal_redactions(
        &self,
        unjournaled: &mut Unjournaled<'_>,
        report: &mut super::ApplyReport,
    ) -> Result<(), super::ApplyError> {
        let done = std::mem::take(unjournaled).done;
        if done.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .state
            .begin_write()
            .await
            .map_err(crate::state::q("journaling"))?;
        let items: Vec<i64> = done.iter().map(|(o, _)| o.item).collect();
        let mine = self
            .worker
            .still_mine(&mut tx, Items::Objects, &items)
            .await?;
        let mut records = Vec::new();
        for (o, result) in done {
            if !mine.contains(&o.item) {
                // Taken over while it ran: its new holder journals it.
                continue;
            }
            self.journal_redaction(&mut tx, o, result, &mut records, report)
                .await?;
        }
        crate::audit::append(&mut tx, records).await?;
        tx.commit().await.map_err(crate::state::q("journaling"))?;
        Ok(())
    }

    /// The audit's basis of a redaction: its policy's, or the orphans'
    /// period when only records of entities long absent from the CRM went.
    fn redaction_basis(&self, o: &PlannedObject) -> Option<String> {
        let orphans = o
            .records
            .as_deref()
            .and_then(|r| PlannedRedaction::parse(o.item as u64, String::new(), r))
            .is_some_and(|p| p.orphans);
        if orphans {
            return Some(super::objects::orphans_basis(
                self.config,
                o.records.as_deref(),
            ));
        }
        self.policies
            .iter()
            .find(|p| p.name == o.policy)
            .map(|p| p.basis.clone())
    }

    /// What became of one redaction, in the journal's transaction: its
    /// status, and when rewritten the object's new index entry and its audit
    /// record (into `records`).
    async fn journal_redaction(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        o: &PlannedObject,
        result: Result<Redacted, RedactionError>,
        records: &mut Vec<crate::audit::NewRecord>,
        report: &mut super::ApplyReport,
    ) -> Result<(), super::ApplyError> {
        match result {
            Ok(Redacted::Done {
                meta,
                links,
                content_rules,
                in_place,
                records_removed,
                bytes_before,
                bytes_after,
                pseudonyms,
            }) => {
                journal::objects_settled(tx, self.plan_id, ObjectStatus::Redacted, &[o.item])
                    .await?;
                crate::state::redacted::replace_entry(
                    tx,
                    &meta,
                    &content_rules,
                    links,
                    in_place.map(|b| *b),
                )
                .await?;

                records.push(crate::audit::NewRecord {
                    plan_id: self.plan_id.to_string(),
                    policy: Some(o.policy.clone()),
                    basis: self.redaction_basis(o),
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
                self.skip_one(tx, o, CHANGED, report).await?;
            }
            Ok(Redacted::Skipped(reason)) => {
                self.skip_one(tx, o, &reason, report).await?;
            }
            Ok(Redacted::Gone) => {
                journal::objects_settled(tx, self.plan_id, ObjectStatus::Gone, &[o.item]).await?;
                journal::unindex_objects(tx, std::slice::from_ref(&o.key)).await?;
                report.objects_already_gone += 1;
            }
            Ok(Redacted::Refused(why)) => {
                self.fail_one(tx, o, format!("not redacted: {why}"), report)
                    .await?;
            }
            Ok(Redacted::Failed(reason)) => {
                self.fail_one(tx, o, reason, report).await?;
            }
            Err(e) => {
                self.fail_one(tx, o, format!("redaction failed: {e}"), report)
                    .await?;
            }
        }
        Ok(())
    }

    async fn skip_one(
        &self,
        tx: &mut sqlx::AnyConnection,
        o: &PlannedObject,
        reason: &str,
        report: &mut super::ApplyReport,
    ) -> Result<(), crate::state::StateError> {
        journal::objects_skipped(tx, self.plan_id, reason, &[o.item]).await?;
        report.objects_skipped += 1;
        *report
            .skipped_reasons
            .entry(reason.to_string())
            .or_default() += 1;
        Ok(())
    }

    async fn fail_one(
        &self,
        tx: &mut sqlx::AnyConnection,
        o: &PlannedObject,
        reason: String,
        report: &mut super::ApplyReport,
    ) -> Result<(), crate::state::StateError> {
        journal::object_failed(tx, self.plan_id, o.item, &reason).await?;
        report.objects_failed += 1;
        report
            .failures
            .push((self.pseudo.show_object(&o.key), reason));
        Ok(())
    }
}

const RECORDS_MOVED: &str = "changed since plan: its records hold other entities now (the file changed and was indexed again; plan again)";
const NO_RECORDS_MAP: &str = "changed since plan: the plan does not say which entity each record held (made by an older lethe; plan again)";
const NOT_IN_INDEX: &str = "changed since plan: its records are no longer in the index (run `lethe index`, then plan again)";
const CHANGED: &str =
    "changed since plan: rewritten since the index read it (run `lethe index`, then plan again)";
