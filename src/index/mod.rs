//! Stage 1, index: lists the technical store and records, per object, the
//! entity refs its link rules find (by path, by content), with the rule and
//! the location of each. Incremental: an object whose size, modification time
//! and etag are unchanged since the last run (under the same rules) is not
//! read again; objects gone from the store leave the index.
//!
//! This module lists, extracts (`extract/`) and keeps the pipeline busy:
//! objects read and parsed a few groups at a time while a writer task
//! stores what the previous groups yielded. The index itself — its tables,
//! its statements, its rows ([`Link`], [`IndexedEntry`]) and the plan's and
//! apply's reads — is the state store's (`state::index`).
//!
//! Architecture invariant: a listing that fails changes nothing in the index
//! (fail closed: an incomplete listing must never make objects look gone).

pub mod extract;
/// Links registered over the API at ingest time (the state store keeps them).
pub use crate::state::registered as register;

/// The streaming JSONPath evaluator, at its former path.
pub use extract::jsonstream;

/// What the index stores, and the plan's and apply's reads of it (the
/// state store keeps the index; these are its types and reads, at their
/// former paths).
pub use crate::state::index::{IndexedEntry, Link, for_each_entry, links_and_metas_of_keys};

use std::time::Instant as Clock;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::config::{Config, ContentKind, LinkRule};
use crate::crm::{Crm, CrmError};
use crate::state::index::{self as db, ObjectRow, RunMarks};
use crate::state::status::IndexStatus;
use crate::state::{StateError, StateStore};
use crate::store::{Listed, ObjectMeta, StoreError, TechnicalStore};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("reading link rule {rule} (crm column) failed, so the index is unchanged: {source}")]
    Crm {
        rule: usize,
        #[source]
        source: CrmError,
    },
    #[error("link rule {0} reads a CRM column, but no CRM connection was given")]
    NoCrm(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What one run did (`objects_read`, `run_*`), and what the index holds
/// after it (`objects_unreadable`, `links_per_rule`: the totals the plan
/// reads, whatever this run read or an apply removed since).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IndexSummary {
    pub objects_seen: u64,
    pub objects_read: u64,
    pub objects_unchanged: u64,
    pub objects_removed: u64,
    /// Objects in the index that a content rule could not read.
    pub objects_unreadable: u64,
    /// Of the objects this run read, those a content rule could not read.
    pub run_objects_unreadable: u64,
    pub entries_skipped: u64,
    /// Links in the index per rule.
    pub links_per_rule: Vec<u64>,
    /// Links per rule found in the objects this run read (a CRM column
    /// rule: every link, re-read each run).
    pub run_links_per_rule: Vec<u64>,
    pub bytes_listed: u64,
    /// Bytes of the objects read (new or changed) and their rate.
    pub bytes_read: u64,
    pub bytes_per_second: f64,
    pub seconds: f64,
    /// Of the objects this run read (new or changed), those that name an
    /// identifier of a person lethe erased (the suppression list): a
    /// re-import, for review; never deleted for it.
    #[serde(default)]
    pub reimported: u64,
    /// Their pseudonyms (at most 1,000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reimported_objects: Vec<String>,
}

/// The content rules' kinds by rule index, shared with the blocking
/// threads that parse (cloned once per run, not per object).
type Kinds = std::sync::Arc<Vec<Option<ContentKind>>>;

fn content_kinds(config: &Config) -> Kinds {
    let mut kinds = vec![None; config.links.len()];
    for rule in &config.links {
        if let LinkRule::Content { index, kind, .. } = rule
            && let Some(k) = kinds.get_mut(*index)
        {
            *k = Some(kind.clone());
        }
    }
    std::sync::Arc::new(kinds)
}

/// A content rule to run over one object, on a blocking thread.
struct ContentJob {
    rule: usize,
    source: extract::Source,
    size: u64,
}

/// One object on its way through the index: the links its path and
/// metadata rules found, the content rules still to run (with the entity
/// type each links), and why it is unreadable (if a rule could not read it).
struct Prepared {
    meta: ObjectMeta,
    links: Vec<Link>,
    unreadable: Option<String>,
    jobs: Vec<ContentJob>,
    /// Per job: its rule and the entity type it links.
    entities: Vec<(usize, String)>,
}

/// Runs the rules that need no parsing (path, metadata) and opens the
/// object for its content rules, which [`extract_group`] runs.
async fn prepare(
    config: &Config,
    store: &dyn TechnicalStore,
    meta: ObjectMeta,
    body: Option<Vec<u8>>,
) -> Prepared {
    // Read with its group (`read_batch`), shared by its content rules.
    // (Shared as it was read: no copy.)
    let body: Option<std::sync::Arc<Vec<u8>>> = body.map(std::sync::Arc::new);
    let mut links = Vec::new();
    let mut unreadable = None;
    let mut jobs = Vec::new();
    let mut entities = Vec::new();
    let mut fetched_metadata: Option<Vec<(String, String)>> = None;
    for rule in &config.links {
        match rule {
            LinkRule::Path { index, pattern } => {
                for (ty, key) in pattern.matches(meta.rule_name()) {
                    links.push(Link {
                        entity_type: ty,
                        entity_key: key,
                        rule: *index,
                        location: None,
                        record: None,
                    });
                }
            }
            LinkRule::Content {
                index,
                glob,
                kind,
                entity,
                ..
            } => {
                if !glob.is_match(meta.rule_name()) {
                    continue;
                }
                let whole_json = matches!(kind, ContentKind::Json { steps: None, .. });
                if whole_json && meta.size > config.max_content_bytes {
                    unreadable = Some(format!(
                        "{} bytes, larger than technical.max_content_bytes ({}) for a JSONPath that cannot stream",
                        meta.size, config.max_content_bytes
                    ));
                    continue;
                }
                let read = match &body {
                    Some(b) => Ok(extract::Source::Bytes(b.clone())),
                    None => store.read(&meta.key).await.map(extract::Source::Reader),
                };
                match read {
                    Ok(source) => {
                        jobs.push(ContentJob {
                            rule: *index,
                            source,
                            size: meta.size,
                        });
                        entities.push((*index, entity.clone()));
                    }
                    Err(e) => unreadable = Some(format!("cannot open: {e}")),
                }
            }
            LinkRule::Metadata {
                index,
                glob,
                name,
                entity,
                ..
            } => {
                if !glob.is_match(meta.rule_name()) {
                    continue;
                }
                // Listings seldom carry user metadata: ask the store once.
                if fetched_metadata.is_none() {
                    fetched_metadata = Some(if meta.metadata.is_empty() {
                        match store.metadata(&meta.key).await {
                            Ok(m) => m,
                            Err(e) => {
                                unreadable = Some(format!("cannot read its metadata: {e}"));
                                Vec::new()
                            }
                        }
                    } else {
                        meta.metadata.clone()
                    });
                }
                for (k, v) in fetched_metadata.as_deref().unwrap_or_default() {
                    if k == name && !v.trim().is_empty() {
                        links.push(Link {
                            entity_type: entity.clone(),
                            entity_key: v.trim().to_string(),
                            rule: *index,
                            location: Some(format!("metadata {name}")),
                            record: None,
                        });
                    }
                }
            }
            // Applied to the whole index after listing (`crm_column_links`).
            LinkRule::CrmColumn { .. } => {}
        }
    }
    Prepared {
        meta,
        links,
        unreadable,
        jobs,
        entities,
    }
}

/// Parses a group of prepared objects on one blocking thread (one hand-over
/// per group, not per object: most payloads are small, and a thread switch
/// per object cost as much as parsing it), then keeps only the path links
/// of any object a content rule could not read: nothing is ever deleted on
/// the strength of a content rule that failed.
async fn extract_group(
    config: &Config,
    kinds: &Kinds,
    group: Vec<Prepared>,
) -> Result<Vec<(ObjectMeta, Found)>, String> {
    let (max_whole, max_line) = (config.max_content_bytes, config.max_line_bytes);
    let kinds = kinds.clone();
    // Everything per link (the parse, the links' strings) happens on the
    // blocking thread; the async side only hands the group over.
    tokio::task::spawn_blocking(move || {
        group
            .into_iter()
            .map(|p| finish(p, &kinds, max_whole, max_line))
            .collect()
    })
    .await
    .map_err(|e| format!("the extractor stopped: {e}"))
}

/// Runs one object's content rules and merges what they find with its
/// other links.
fn finish(mut p: Prepared, kinds: &Kinds, max_whole: u64, max_line: u64) -> (ObjectMeta, Found) {
    // The bytes read for the object, given back to the store's pool once
    // its rules are done with them.
    let mut read = Vec::new();
    for (job, (rule, entity)) in std::mem::take(&mut p.jobs).into_iter().zip(&p.entities) {
        if let extract::Source::Bytes(b) = &job.source {
            read.push(b.clone());
        }
        let result = match kinds.get(job.rule).and_then(Option::as_ref) {
            Some(kind) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                extract::content_of(kind, job.source, job.size, max_whole, max_line)
            }))
            .unwrap_or_else(|_| Err(extract::Unreadable("the extractor failed".into()))),
            None => Err(extract::Unreadable("no such content rule".into())),
        };
        match result {
            Ok(found) => p.links.extend(found.into_iter().map(|f| Link {
                entity_type: entity.clone(),
                entity_key: f.key,
                rule: *rule,
                location: Some(f.location),
                record: f.record,
            })),
            Err(e) => p.unreadable = Some(format!("rule {rule}: {e}")),
        }
    }
    for b in read {
        if let Ok(b) = std::sync::Arc::try_unwrap(b) {
            crate::store::pool::give(b);
        }
    }
    if p.unreadable.is_some() {
        // Content rules are the ones with a kind.
        p.links
            .retain(|l| !kinds.get(l.rule).is_some_and(Option::is_some));
    }
    // In rule order, as the rules are listed.
    p.links.sort_by_key(|l| l.rule);
    (p.meta, (p.links, p.unreadable))
}

/// The links found in one object, and why it was unreadable (if it was).
type Found = (Vec<Link>, Option<String>);

/// Small objects go to the parser in groups of up to this many bytes (or
/// [`GROUP_OBJECTS`] objects); a larger object goes alone.
const GROUP_BYTES: u64 = 1 << 20;
const GROUP_OBJECTS: usize = 64;

/// The groups, in the order they are read: the small objects in listing
/// order, up to [`GROUP_OBJECTS`] objects or [`GROUP_BYTES`] each, with the
/// large objects (alone) spread evenly among them. Lazy: each group is
/// moved out of `objects` when it is taken, so the listing is never held
/// twice (at a million objects, a second copy is hundreds of MB).
/// Whether an object of `size` bytes joins a group of small objects that
/// holds `objects` objects and `bytes` bytes (else it starts the next
/// group; one over [`GROUP_BYTES`] is always alone). The residual scan
/// groups by the same rule.
pub(crate) fn joins_group(objects: usize, bytes: u64, size: u64) -> bool {
    objects < GROUP_OBJECTS && bytes.saturating_add(size) <= GROUP_BYTES
}

fn groups_of(mut objects: Vec<ObjectMeta>) -> impl Iterator<Item = Vec<ObjectMeta>> {
    // The few large objects out (in order); the small ones stay in place.
    let large: Vec<ObjectMeta> = objects.extract_if(.., |m| m.size > GROUP_BYTES).collect();
    let mut small = std::collections::VecDeque::from(objects);
    // The small groups' lengths, from the sizes alone.
    let mut lengths: Vec<u32> = Vec::new();
    let mut bytes = 0u64;
    for m in &small {
        match lengths.last_mut() {
            Some(n) if joins_group(*n as usize, bytes, m.size) => {
                *n += 1;
                bytes += m.size;
            }
            _ => {
                lengths.push(1);
                bytes = m.size;
            }
        }
    }
    // Large objects spread evenly among the small groups: a large object
    // (a CSV export) may yield many links, and while the writer stores
    // them, the parsers go on with small groups instead of waiting.
    let every = lengths.len().div_ceil(large.len().max(1)).max(1);
    let mut large = large.into_iter();
    let mut lengths = lengths.into_iter().enumerate();
    let mut held: Option<Vec<ObjectMeta>> = None;
    std::iter::from_fn(move || {
        if let Some(g) = held.take() {
            return Some(g);
        }
        match lengths.next() {
            Some((i, n)) => {
                let g: Vec<ObjectMeta> = small.drain(..n as usize).collect();
                if i % every == 0
                    && let Some(l) = large.next()
                {
                    held = Some(g);
                    return Some(vec![l]);
                }
                Some(g)
            }
            None => large.next().map(|l| vec![l]),
        }
    })
}

/// How many parsed links may wait for the writer (about 100 bytes each).
const LINK_BUDGET: usize = 200_000;

/// How many groups of objects are read and parsed at once: both cores busy,
/// and the memory bound stays `READ_AHEAD ×` (a group's [`GROUP_BYTES`], a
/// line of `max_line_bytes`, or a whole document of `max_content_bytes` for
/// JSONPaths that cannot stream), plus as many parsed groups waiting for the
/// writer.
const READ_AHEAD: usize = 4;

/// What an object's stored links depend on: the rules that read objects
/// (path, metadata, content), each at its position (links carry it), and
/// the byte bounds. Nothing else of the config: CRM column rules are
/// re-applied on every run, and serve, policies or CRM settings change no
/// link an object yields.
pub(crate) fn rules_hash(config: &Config) -> String {
    let mut h = Sha256::new();
    for r in &config.links {
        if matches!(r, LinkRule::CrmColumn { .. }) {
            continue;
        }
        h.update(format!("{} {}", r.index(), r.describe()).as_bytes());
        h.update(b"\n");
    }
    h.update(format!("{} {}", config.max_content_bytes, config.max_line_bytes).as_bytes());
    hex::encode(h.finalize())
}

/// Runs the index stage; `progress` is told each object processed.
pub async fn run(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    crm: Option<&dyn Crm>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<IndexSummary, IndexError> {
    let started = Clock::now();
    let mut summary = IndexSummary {
        links_per_rule: vec![0; config.links.len()],
        run_links_per_rule: vec![0; config.links.len()],
        ..Default::default()
    };
    // What the index holds, read on another thread while the store is
    // listed: on an unchanged store these two are the whole run.
    let known = tokio::spawn({
        let state = state.clone();
        async move { state.indexed_objects().await }
    });
    // List everything first: a listing that fails midway changes nothing.
    let mut listed = Vec::new();
    store.list(&mut |l| listed.push(l)).await?;

    let rules = rules_hash(config);
    let store_id = store.describe();
    let same_rules = state.meta_get("index.rules").await?.as_deref() == Some(rules.as_str())
        && state.meta_get("index.store").await?.as_deref() == Some(store_id.as_str());
    // What the index holds; what is left after the listing has left the store.
    let mut known = known
        .await
        .map_err(|e| StateError::Corrupt(format!("reading the index stopped: {e}")))??;
    let run: i64 = state
        .meta_get("index.run")
        .await?
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
        + 1;

    let total = listed.len() as u64;
    let (skipped, to_read) = sort_listing(listed, &mut known, same_rules, &mut summary);
    let done = total - to_read.len() as u64;
    progress(done, total);
    // The objects this run reads are searched for the identifiers of
    // erased persons afterwards; their keys are kept only when the
    // suppression list holds any.
    let suppressed = crate::suppression::scanner(config, state).await?;
    let read_keys: Vec<String> = match suppressed {
        Some(_) => to_read.iter().map(|m| m.key.clone()).collect(),
        None => Vec::new(),
    };
    let bulk = bulk_run(
        (to_read.len() as u64, to_read.iter().map(|m| m.size).sum()),
        (total, summary.bytes_listed),
    );
    // A run that reads most of the store (the first, or one after the rules
    // changed) writes most of the links: the index of links by entity is
    // built once at its end instead of link by link.
    if bulk {
        db::suspend_entity_index(state).await?;
    }
    let written = read_and_write(
        config,
        store,
        state,
        run,
        (skipped, to_read),
        &mut summary,
        (done, total, progress),
    )
    .await;
    // Unchanged objects cost nothing here; objects gone from the store
    // leave the index (their links go with them: ON DELETE CASCADE). Both
    // writes go before the index of links by entity is built again (fewer
    // entries to keep up).
    let settled = async {
        written?;
        let gone: Vec<i64> = known.values().map(|k| k.id).collect();
        summary.objects_removed = db::remove_objects(state, &gone).await?;
        crm_column_links(config, store, state, crm, &mut summary).await
    }
    .await;
    // The totals describe the index as the plan will read it: an apply
    // since the last run removed objects and their links without a run.
    // Counted on a reader while the writer builds the index by entity
    // (the count is a scan of every link, the build a sort of them: one
    // core each).
    let totals = async {
        settled?;
        Ok::<_, IndexError>((
            db::links_per_rule(state).await?,
            db::unreadable_count(state).await?,
        ))
    };
    let (restored, totals) = if bulk {
        tokio::join!(db::restore_entity_index(state), totals)
    } else {
        (Ok(()), totals.await)
    };
    let (per_rule, unreadable) = totals?;
    restored?;
    for (rule, n) in per_rule {
        if let Some(c) = usize::try_from(rule)
            .ok()
            .and_then(|rule| summary.links_per_rule.get_mut(rule))
        {
            *c = n;
        }
    }
    summary.objects_unreadable = unreadable;
    progress(total, total);
    // What this run read, searched for the identifiers of erased persons.
    if !read_keys.is_empty()
        && let Some(scanner) = suppressed
    {
        let (hits, _) = crate::suppression::objects_naming(store, scanner, read_keys).await;
        let pseudo = crate::audit::pseudonym::Pseudonymizer::new(config.audit_key.clone());
        summary.reimported = hits.len() as u64;
        summary.reimported_objects = hits
            .iter()
            .take(1000)
            .map(|k| pseudo.show_object(k))
            .collect();
    }
    // One transaction for the run's bookkeeping.
    let completed = jiff::Timestamp::now().to_string();
    db::record_run(
        state,
        RunMarks {
            run,
            rules: &rules,
            store: &store_id,
            completed_at: &completed,
        },
    )
    .await?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.bytes_per_second = summary.bytes_read as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// Whether a run reading `to_read` of the `listed` objects (each a count
/// and bytes) is a bulk run: half of the store by count or by bytes, and
/// at least 1,000 objects or [`BULK_BYTES`] (a few large exports yield
/// hundreds of thousands of links: a link per row).
fn bulk_run(to_read: (u64, u64), listed: (u64, u64)) -> bool {
    let (objects, bytes) = to_read;
    let (all_objects, all_bytes) = listed;
    let half = objects * 2 >= all_objects || bytes.saturating_mul(2) >= all_bytes;
    half && (objects >= 1_000 || bytes >= BULK_BYTES)
}

/// The bytes to read that make a run of few objects a bulk run.
const BULK_BYTES: u64 = 64 << 20;

/// Sorts the listing into the skipped entries (to be written as such) and
/// the objects to read (new or changed); what is left in `known` has left
/// the store.
fn sort_listing(
    listed: Vec<Listed>,
    known: &mut std::collections::HashMap<String, crate::state::IndexedObject>,
    same_rules: bool,
    summary: &mut IndexSummary,
) -> (Vec<ObjectRow>, Vec<ObjectMeta>) {
    let mut skipped: Vec<ObjectRow> = Vec::new();
    // Collected in place (the listing's own allocation): the listing is
    // not held twice.
    let to_read: Vec<ObjectMeta> = listed
        .into_iter()
        .filter_map(|entry| match entry {
            Listed::Skipped { key, reason } => {
                summary.entries_skipped += 1;
                known.remove(&key);
                let meta = ObjectMeta {
                    key,
                    size: 0,
                    modified: None,
                    etag: None,
                    metadata: Vec::new(),
                    name: None,
                };
                skipped.push(ObjectRow {
                    meta,
                    status: IndexStatus::Skipped,
                    error: Some(reason),
                    links: Vec::new(),
                });
                None
            }
            Listed::Object(meta) => {
                summary.objects_seen += 1;
                summary.bytes_listed += meta.size;
                let unchanged = known.remove(&meta.key).is_some_and(|k| {
                    same_rules
                        && k.size == meta.size
                        && k.modified == meta.modified
                        && k.etag == meta.etag
                });
                if unchanged {
                    summary.objects_unchanged += 1;
                    None
                } else {
                    Some(meta)
                }
            }
        })
        .collect();
    (skipped, to_read)
}

/// A parsed group on its way to the writer, with its share of the link
/// budget (none for the skipped entries).
type ToWrite = (Vec<ObjectRow>, Option<tokio::sync::OwnedSemaphorePermit>);

/// Whether [`prepare`] opens the object for a content rule.
fn needs_content(config: &Config, meta: &ObjectMeta) -> bool {
    config.links.iter().any(|rule| match rule {
        LinkRule::Content { glob, kind, .. } => {
            glob.is_match(meta.rule_name())
                && !(matches!(kind, ContentKind::Json { steps: None, .. })
                    && meta.size > config.max_content_bytes)
        }
        _ => false,
    })
}

/// The contents of a group's small objects that content rules read, in
/// one request where the store can (`read_batch`: a payload table answers
/// a group with one statement instead of one per row); `None` for the
/// others, which [`prepare`] opens alone. A group is at most
/// [`GROUP_BYTES`] of small objects, so this holds no more than a group.
async fn read_group(
    config: &Config,
    store: &dyn TechnicalStore,
    group: &[ObjectMeta],
) -> Vec<Option<Vec<u8>>> {
    let mut out = vec![None; group.len()];
    let (at, keys): (Vec<usize>, Vec<String>) = group
        .iter()
        .enumerate()
        .filter(|(_, m)| m.size <= GROUP_BYTES && needs_content(config, m))
        .map(|(i, m)| (i, m.key.clone()))
        .unzip();
    if keys.len() < 2 {
        return out;
    }
    for (i, body) in at.into_iter().zip(store.read_batch(&keys).await) {
        out[i] = body;
    }
    out
}

/// Writes the skipped entries, then reads the objects to read, in groups
/// of small ones (one blocking hand-over per group), READ_AHEAD groups
/// parsed at once; what they yield is written to the state store while the
/// next groups are parsed. `progress` is `(done, total, tell)`.
async fn read_and_write(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    run: i64,
    (skipped, to_read): (Vec<ObjectRow>, Vec<ObjectMeta>),
    summary: &mut IndexSummary,
    (mut done, total, progress): (u64, u64, &(dyn Fn(u64, u64) + Sync)),
) -> Result<(), IndexError> {
    let kinds = content_kinds(config);
    let groups = groups_of(to_read);
    // Parsed groups wait for the writer within a budget of links (memory),
    // so that the parsers go on while the writer stores a large object's.
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(LINK_BUDGET));
    let (tx, writer) = spawn_writer(state, run);
    // The skipped entries first.
    if !skipped.is_empty() && tx.send((skipped, None)).await.is_err() {
        return Err(writer_error(writer).await);
    }
    let kinds = &kinds;
    let mut parsed = futures::stream::iter(groups.into_iter().map(|group| async move {
        let bodies = read_group(config, store, &group).await;
        // (A cloud store reads a group's objects 16 at a time.)
        let prepared: Vec<Prepared> = futures::stream::iter(
            group
                .into_iter()
                .zip(bodies)
                .map(|(meta, body)| prepare(config, store, meta, body)),
        )
        .buffered(16)
        .collect()
        .await;
        extract_group(config, kinds, prepared).await
    }))
    .buffer_unordered(READ_AHEAD);
    while let Some(group) = parsed.next().await {
        let group = group.map_err(|why| StateError::Corrupt(format!("indexing stopped: {why}")))?;
        let mut out: Vec<ObjectRow> = Vec::with_capacity(group.len());
        for (meta, (links, unreadable)) in group {
            done += 1;
            summary.objects_read += 1;
            summary.bytes_read += meta.size;
            for l in &links {
                if let Some(c) = summary.run_links_per_rule.get_mut(l.rule) {
                    *c += 1;
                }
            }
            let status = if unreadable.is_some() {
                summary.run_objects_unreadable += 1;
                IndexStatus::Unreadable
            } else {
                IndexStatus::Ok
            };
            out.push(ObjectRow {
                meta,
                status,
                error: unreadable,
                links,
            });
        }
        let links: usize = out.iter().map(|o| o.links.len()).sum();
        let permit = budget
            .clone()
            .acquire_many_owned(links.clamp(1, LINK_BUDGET) as u32)
            .await
            .ok();
        if tx.send((out, permit)).await.is_err() {
            // The writer stopped on an error.
            return Err(writer_error(writer).await);
        }
        progress(done, total);
    }
    drop(tx);
    writer
        .await
        .map_err(|e| StateError::Corrupt(format!("writing the index stopped: {e}")))??;
    Ok(())
}

/// The index writer, a task of its own (another thread than the one that
/// opens objects and counts what they yield): it writes what it is sent in
/// batches of about 2,000 objects or 50,000 links, one transaction each.
fn spawn_writer(
    state: &StateStore,
    run: i64,
) -> (
    tokio::sync::mpsc::Sender<ToWrite>,
    tokio::task::JoinHandle<Result<(), StateError>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ToWrite>(256);
    let writer = tokio::spawn({
        let state = state.clone();
        async move {
            let mut pending: Vec<ObjectRow> = Vec::new();
            let mut pending_links = 0usize;
            // Released once their links are written.
            let mut permits = Vec::new();
            while let Some((group, permit)) = rx.recv().await {
                pending_links += group.iter().map(|o| o.links.len()).sum::<usize>();
                pending.extend(group);
                permits.extend(permit);
                if pending.len() >= 2000 || pending_links >= 50_000 {
                    db::write_objects(&state, run, std::mem::take(&mut pending)).await?;
                    pending_links = 0;
                    permits.clear();
                }
            }
            db::write_objects(&state, run, std::mem::take(&mut pending)).await?;
            Ok::<_, StateError>(())
        }
    });
    (tx, writer)
}

/// CRM column rules: the column's values name objects. Re-read on every
/// run (the CRM changes without the objects changing); the old links of the
/// rule are replaced in one transaction, so the index never lacks them.
async fn crm_column_links(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    crm: Option<&dyn Crm>,
    summary: &mut IndexSummary,
) -> Result<(), IndexError> {
    for rule in &config.links {
        let LinkRule::CrmColumn {
            index,
            entity,
            column,
        } = rule
        else {
            continue;
        };
        let crm = crm.ok_or(IndexError::NoCrm(*index))?;
        let Some(et) = config.entity(entity) else {
            continue;
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        crm.column_values(et, column, &mut |key, value| {
            if let Some(object) = store.key_of(&value) {
                pairs.push((object, key.canonical()));
            }
        })
        .await
        .map_err(|source| IndexError::Crm {
            rule: *index,
            source,
        })?;
        let location = format!("crm column {entity}.{column}");
        let linked = db::replace_rule_links(state, *index, entity, &location, &pairs).await?;
        if let Some(c) = summary.run_links_per_rule.get_mut(*index) {
            *c = linked;
        }
    }
    Ok(())
}

/// Why the index writer stopped (it stops only on an error).
async fn writer_error(writer: tokio::task::JoinHandle<Result<(), StateError>>) -> IndexError {
    match writer.await {
        Ok(Err(e)) => e.into(),
        Ok(Ok(())) => StateError::Corrupt("the index writer stopped early".into()).into(),
        Err(e) => StateError::Corrupt(format!("writing the index stopped: {e}")).into(),
    }
}

/// A digest of a link set, order-independent.
pub fn links_digest(links: &[(String, String)]) -> String {
    links_digest_of(links.iter().map(|(t, k)| (t.as_str(), k.as_str())))
}

/// [`links_digest`] of (type, key) pairs however they are held.
pub fn links_digest_of<'a>(links: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<String> = links
        .map(|(t, k)| {
            let mut s = String::with_capacity(t.len() + 1 + k.len());
            s.push_str(t);
            s.push(':');
            s.push_str(k);
            s
        })
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    for s in sorted {
        h.update(s.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// A digest of which entity each record of an object links: its links
/// that have a record, as (rule, record, type, key), order-independent. A
/// redaction's planned records are positions (`row 3`, `record 2`); this
/// ties them to the entities the plan saw there, so that an apply after the
/// file changed and was indexed again (a row inserted above: every row
/// below moves) does not cut whatever sits at those positions now.
///
/// A key that is a UUID counts in its canonical spelling: a subject
/// request's plan reads UUID keys as the CRM prints them, the apply reads
/// them as stored.
pub fn records_digest_of<'a>(
    links: impl Iterator<Item = (usize, Option<&'a str>, &'a str, &'a str)>,
) -> String {
    let mut sorted: Vec<(usize, &str, &str, std::borrow::Cow<'a, str>)> = links
        .filter_map(|(rule, record, t, k)| {
            let k =
                crate::model::uuid_respelled(k).map_or(std::borrow::Cow::Borrowed(k), Into::into);
            record.map(|r| (rule, r, t, k))
        })
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    for (rule, record, t, k) in sorted {
        h.update(rule.to_le_bytes());
        for part in [record, t, &k] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            modified: None,
            etag: None,
            metadata: Vec::new(),
            name: None,
        }
    }

    #[test]
    fn the_records_digest_ties_each_record_to_its_entity() {
        let d =
            |links: &[(usize, Option<&str>, &str, &str)]| records_digest_of(links.iter().copied());
        let planned = [
            (0, Some("row 2"), "lead", "2"),
            (0, Some("row 3"), "lead", "1"),
            (1, None, "lead", "1"),
        ];
        // Any order; links without a record do not count.
        assert_eq!(
            d(&planned),
            d(&[
                (0, Some("row 3"), "lead", "1"),
                (0, Some("row 2"), "lead", "2")
            ])
        );
        // The same entities at other rows, or another rule: not the same.
        assert_ne!(
            d(&planned),
            d(&[
                (0, Some("row 3"), "lead", "2"),
                (0, Some("row 4"), "lead", "1")
            ])
        );
        assert_ne!(
            d(&planned),
            d(&[
                (1, Some("row 2"), "lead", "2"),
                (0, Some("row 3"), "lead", "1")
            ])
        );
        // No part runs into the next ("row 2"+"lead" vs "row 2l"+"ead").
        assert_ne!(
            d(&[(0, Some("row 2"), "lead", "x")]),
            d(&[(0, Some("row 2l"), "ead", "x")])
        );
        // A UUID key in any spelling is the same key.
        let uuid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
        assert_eq!(
            d(&[(0, Some("record 0"), "contact", uuid)]),
            d(&[(
                0,
                Some("record 0"),
                "contact",
                "{3F2504E0-4F89-11D3-9A0C-0305E82C3301}"
            )])
        );
    }

    /// Many objects, or few large ones, make a bulk run when they are half
    /// of the store by count or by bytes; a few small changes never do.
    #[test]
    fn a_bulk_run_is_half_the_store_by_count_or_bytes_and_not_tiny() {
        const MB: u64 = 1 << 20;
        // The first run over 40 exports of 5 MB: few objects, many bytes.
        assert!(bulk_run((40, 200 * MB), (40, 200 * MB)));
        // The first run over 2,000 small files.
        assert!(bulk_run((2_000, 20 * MB), (2_000, 20 * MB)));
        // Two changed exports that hold most of the bytes of a store of
        // many small files.
        assert!(bulk_run((2, 900 * MB), (100_000, 1_000 * MB)));
        // A few small changes: never.
        assert!(!bulk_run((10, MB), (10, MB)));
        assert!(!bulk_run((999, 63 * MB), (1_000, 64 * MB)));
        // Many objects, but a small part of the store by count and bytes.
        assert!(!bulk_run((5_000, 50 * MB), (100_000, 1_000 * MB)));
    }

    /// A CRM column rule appended, or serve tokens added, leave the links
    /// read from objects as they are: no re-read.
    #[test]
    fn rules_hash_covers_only_what_objects_yield() {
        let dir = std::path::Path::new("/tmp");
        let load = |text: &str| {
            crate::config::parse(text, &dir.join("lethe.toml"), dir)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let base = crate::demo::config_text("0123456789abcdef0123");
        let with_crm = format!("{base}\n[[technical.link]]\ncrm = \"lead.source_file\"\n");
        let with_token = format!(
            "{base}\n[[serve.token]]\nname = \"ops\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        );
        let h = rules_hash(&load(&base));
        assert_eq!(rules_hash(&load(&with_crm)), h);
        assert_eq!(rules_hash(&load(&with_token)), h);
        let other = base.replace("exports/*.csv", "exports/**/*.csv");
        assert_ne!(rules_hash(&load(&other)), h, "a changed glob re-reads");
    }

    #[test]
    fn groups_keep_every_object_within_their_bounds_and_spread_large_ones() {
        let mut objects = Vec::new();
        for i in 0..300u64 {
            // Mostly small, some near and above the group's byte bound.
            // (The large ones next to each other in the listing.)
            let size = match i {
                100..106 => GROUP_BYTES + 1,
                _ if i % 50 == 13 => GROUP_BYTES / 2 + 3,
                _ => 1000 + i,
            };
            objects.push(meta(&format!("k{i:04}"), size));
        }
        let small_keys: Vec<String> = objects
            .iter()
            .filter(|m| m.size <= GROUP_BYTES)
            .map(|m| m.key.clone())
            .collect();
        let mut all_keys: Vec<String> = objects.iter().map(|m| m.key.clone()).collect();
        let groups: Vec<Vec<ObjectMeta>> = groups_of(objects).collect();
        let mut flat: Vec<String> = groups.iter().flatten().map(|m| m.key.clone()).collect();
        // Small objects keep their order.
        let small_flat: Vec<String> = groups
            .iter()
            .flatten()
            .filter(|m| m.size <= GROUP_BYTES)
            .map(|m| m.key.clone())
            .collect();
        assert_eq!(small_flat, small_keys);
        // Every object exactly once.
        flat.sort();
        all_keys.sort();
        assert_eq!(flat, all_keys);
        for g in &groups {
            let bytes: u64 = g.iter().map(|m| m.size).sum();
            assert!(g.len() <= GROUP_OBJECTS);
            assert!(
                g.len() == 1 || bytes <= GROUP_BYTES,
                "{} objects, {bytes} bytes",
                g.len()
            );
        }
        // Large objects are spread among the small groups.
        let large: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g[0].size > GROUP_BYTES)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(large.len(), 6);
        assert!(large.windows(2).all(|w| w[1] > w[0] + 1), "{large:?}");
        assert!(groups.iter().any(|g| g.len() > 30));
    }
}
