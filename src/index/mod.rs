//! Stage 1, index: lists the technical store and records, per object, the
//! entity refs its link rules find (by path, by content), with the rule and
//! the location of each. Incremental: an object whose size, modification time
//! and etag are unchanged since the last run (under the same rules) is not
//! read again; objects gone from the store leave the index.
//!
//! Architecture invariant: a listing that fails changes nothing in the index
//! (fail closed: an incomplete listing must never make objects look gone).

pub mod extract;
pub mod jsonstream;
pub mod register;

use std::time::Instant as Clock;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::config::{Config, ContentKind, LinkRule};
use crate::crm::{Crm, CrmError};
use crate::state::{StateError, StateStore, q};
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

/// One link found in one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub entity_type: String,
    pub entity_key: String,
    pub rule: usize,
    pub location: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IndexSummary {
    pub objects_seen: u64,
    pub objects_read: u64,
    pub objects_unchanged: u64,
    pub objects_removed: u64,
    pub objects_unreadable: u64,
    pub entries_skipped: u64,
    pub links_per_rule: Vec<u64>,
    pub bytes_listed: u64,
    /// Bytes of the objects read (new or changed) and their rate.
    pub bytes_read: u64,
    pub bytes_per_second: f64,
    pub seconds: f64,
}

/// What the rules find in one object. `Err` = a content rule could not read
/// it (the path links found so far still count).
pub async fn links_of(
    config: &Config,
    store: &dyn TechnicalStore,
    meta: &ObjectMeta,
) -> (Vec<Link>, Option<String>) {
    let mut links = Vec::new();
    let mut unreadable = None;
    let mut fetched_metadata: Option<Vec<(String, String)>> = None;
    for rule in &config.links {
        match rule {
            LinkRule::Path { index, pattern } => {
                for (ty, key) in pattern.matches(&meta.key) {
                    links.push(Link {
                        entity_type: ty,
                        entity_key: key,
                        rule: *index,
                        location: None,
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
                if !glob.is_match(&meta.key) {
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
                let reader = match store.read(&meta.key).await {
                    Ok(r) => r,
                    Err(e) => {
                        unreadable = Some(format!("cannot open: {e}"));
                        continue;
                    }
                };
                let (max_whole, max_line) = (config.max_content_bytes, config.max_line_bytes);
                // Parsing runs on a blocking thread, so that several objects
                // are parsed at once (see `run`).
                let kind = kind.clone();
                let size = meta.size;
                let found = tokio::task::spawn_blocking(move || {
                    extract::content(&kind, reader, size, max_whole, max_line)
                })
                .await
                .unwrap_or_else(|e| Err(extract::Unreadable(format!("extractor stopped: {e}"))));
                match found {
                    Ok(found) => links.extend(found.into_iter().map(|f| Link {
                        entity_type: entity.clone(),
                        entity_key: f.key,
                        rule: *index,
                        location: Some(f.location),
                    })),
                    Err(e) => unreadable = Some(format!("rule {index}: {e}")),
                }
            }
            LinkRule::Metadata {
                index,
                glob,
                name,
                entity,
                ..
            } => {
                if !glob.is_match(&meta.key) {
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
                        });
                    }
                }
            }
            // Applied to the whole index after listing (`crm_column_links`).
            LinkRule::CrmColumn { .. } => {}
        }
    }
    if unreadable.is_some() {
        // Never delete on the strength of a content rule that failed: keep
        // only the path links.
        links.retain(|l| {
            config
                .links
                .iter()
                .any(|r| r.index() == l.rule && !matches!(r, LinkRule::Content { .. }))
        });
    }
    (links, unreadable)
}

/// The links found in one object, and why it was unreadable (if it was).
type Found = (Vec<Link>, Option<String>);

/// How many objects are read and parsed at once: both cores busy, and the
/// memory bound stays `READ_AHEAD ×` (a line of `max_line_bytes`, or a whole
/// document of `max_content_bytes` for JSONPaths that cannot stream).
const READ_AHEAD: usize = 4;

fn rules_hash(config: &Config) -> String {
    let mut h = Sha256::new();
    for r in &config.links {
        h.update(r.describe().as_bytes());
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
    let mut pending: Vec<Pending> = Vec::new();
    let mut done = 0u64;
    let mut to_read: Vec<ObjectMeta> = Vec::new();
    let mut entries = listed.into_iter().peekable();
    while entries.peek().is_some() {
        // A window of entries: the ones to read are read several at a time.
        for entry in entries.by_ref().take(1000) {
            done += 1;
            match entry {
                Listed::Skipped { key, reason } => {
                    summary.entries_skipped += 1;
                    known.remove(&key);
                    let meta = ObjectMeta {
                        key,
                        size: 0,
                        modified: None,
                        etag: None,
                        metadata: Vec::new(),
                    };
                    pending.push((meta, "skipped", Some(reason), Vec::new()));
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
                    match unchanged {
                        true => summary.objects_unchanged += 1,
                        false => to_read.push(meta),
                    }
                }
            }
        }
        let read: Vec<(ObjectMeta, Found)> =
            futures::stream::iter(to_read.drain(..).map(|meta| async move {
                let found = links_of(config, store, &meta).await;
                (meta, found)
            }))
            .buffer_unordered(READ_AHEAD)
            .collect()
            .await;
        for (meta, (links, unreadable)) in read {
            summary.objects_read += 1;
            summary.bytes_read += meta.size;
            for l in &links {
                if let Some(c) = summary.links_per_rule.get_mut(l.rule) {
                    *c += 1;
                }
            }
            let status = if unreadable.is_some() {
                summary.objects_unreadable += 1;
                "unreadable"
            } else {
                "ok"
            };
            pending.push((meta, status, unreadable, links));
        }
        if pending.len() >= 2000 {
            write_batch(state, run, &mut pending).await?;
        }
        progress(done, total);
    }
    write_batch(state, run, &mut pending).await?;
    progress(total, total);

    // Unchanged objects cost nothing here; objects gone from the store
    // leave the index (their links go with them: ON DELETE CASCADE).
    let gone: Vec<i64> = known.values().map(|k| k.id).collect();
    let mut tx = state
        .begin_write()
        .await
        .map_err(q("removing objects gone from the store"))?;
    summary.objects_removed = crate::state::exec_in(
        &mut tx,
        "DELETE FROM objects WHERE id IN ({in})",
        &[],
        &gone,
    )
    .await?;
    tx.commit()
        .await
        .map_err(q("removing objects gone from the store"))?;
    // Unchanged objects keep their links; count them for the summary. When
    // nothing changed, the counts of the last run stand (no scan of links).
    let stored: Option<Vec<u64>> = state
        .meta_get("index.link_counts")
        .await?
        .and_then(|c| serde_json::from_str(&c).ok());
    let changed =
        summary.objects_read > 0 || summary.objects_removed > 0 || summary.entries_skipped > 0;
    match stored {
        Some(counts) if same_rules && !changed && counts.len() == summary.links_per_rule.len() => {
            summary.links_per_rule = counts;
        }
        _ if summary.objects_unchanged > 0 => {
            let rows = sqlx::query("SELECT rule, count(*) FROM links GROUP BY rule")
                .fetch_all(state.pool())
                .await
                .map_err(q("counting links"))?;
            for r in rows {
                let rule: i64 = r.get(0);
                if let Some(c) = summary.links_per_rule.get_mut(rule as usize) {
                    *c = r.get::<i64, _>(1) as u64;
                }
            }
        }
        _ => {}
    }
    crm_column_links(config, store, state, crm, &mut summary).await?;
    // One transaction for the run's bookkeeping.
    let counts = serde_json::to_string(&summary.links_per_rule).unwrap_or_default();
    let completed = jiff::Timestamp::now().to_string();
    let mut tx = state.begin_write().await.map_err(q("writing the index"))?;
    for (k, v) in [
        ("index.link_counts", counts.as_str()),
        ("index.run", &run.to_string()),
        ("index.rules", rules.as_str()),
        ("index.store", store_id.as_str()),
        ("index.completed_at", completed.as_str()),
    ] {
        sqlx::query(
            "INSERT INTO meta(k, v) VALUES ($1, $2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        )
        .bind(k)
        .bind(v)
        .execute(&mut *tx)
        .await
        .map_err(q("writing the index"))?;
    }
    tx.commit().await.map_err(q("writing the index"))?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.bytes_per_second = summary.bytes_read as f64 / summary.seconds.max(1e-9);
    Ok(summary)
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
        let mut tx = state.begin_write().await.map_err(q("writing the index"))?;
        sqlx::query("DELETE FROM links WHERE rule = $1")
            .bind(*index as i64)
            .execute(&mut *tx)
            .await
            .map_err(q("writing the index"))?;
        let location = format!("crm column {entity}.{column}");
        let mut linked = 0;
        for chunk in pairs.chunks(300) {
            let sql = format!(
                "INSERT INTO links(object_id, entity_type, entity_key, rule, location)
                 SELECT o.id, $1, v.column2, $2, $3 FROM (VALUES {}) AS v JOIN objects o ON o.key = v.column1",
                crate::state::params(chunk.len(), "(?, ?)", 4)
            );
            let mut query = sqlx::query(crate::state::sql(state.is_sqlite(), sql))
                .bind(entity.clone())
                .bind(*index as i64)
                .bind(location.clone());
            for (object, key) in chunk {
                query = query.bind(object.clone()).bind(key.clone());
            }
            linked += query
                .execute(&mut *tx)
                .await
                .map_err(q("writing the index"))?
                .rows_affected();
        }
        tx.commit().await.map_err(q("writing the index"))?;
        if let Some(c) = summary.links_per_rule.get_mut(*index) {
            *c = linked;
        }
    }
    Ok(())
}

type Pending = (ObjectMeta, &'static str, Option<String>, Vec<Link>);

async fn write_batch(
    state: &StateStore,
    run: i64,
    pending: &mut Vec<Pending>,
) -> Result<(), StateError> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut tx = state.begin_write().await.map_err(q("writing the index"))?;
    let batch: Vec<Pending> = std::mem::take(pending);
    // Objects, many rows per statement.
    for chunk in batch.chunks(100) {
        let sql = format!(
            "INSERT INTO objects(key, size, modified, etag, status, error, seen_run) VALUES {}
             ON CONFLICT(key) DO UPDATE SET size = excluded.size, modified = excluded.modified, etag = excluded.etag,
               status = excluded.status, error = excluded.error, seen_run = excluded.seen_run",
            crate::state::params(chunk.len(), "(?, ?, ?, ?, ?, ?, ?)", 1)
        );
        let mut query = sqlx::query(crate::state::sql(state.is_sqlite(), sql));
        for (meta, status, error, _) in chunk {
            query = query
                .bind(meta.key.clone())
                .bind(meta.size as i64)
                .bind(meta.modified)
                .bind(meta.etag.clone())
                .bind(*status)
                .bind(error.clone())
                .bind(run);
        }
        query
            .execute(&mut *tx)
            .await
            .map_err(q("writing the index"))?;
    }
    // Their ids, then their links replaced.
    let mut ids = std::collections::HashMap::new();
    for chunk in batch.chunks(400) {
        let sql = format!(
            "SELECT id, key FROM objects WHERE key IN ({})",
            crate::state::params(chunk.len(), "?", 1)
        );
        let mut query = sqlx::query(crate::state::sql(state.is_sqlite(), sql));
        for (meta, ..) in chunk {
            query = query.bind(meta.key.clone());
        }
        for r in query
            .fetch_all(&mut *tx)
            .await
            .map_err(q("writing the index"))?
        {
            ids.insert(r.get::<String, _>(1), r.get::<i64, _>(0));
        }
    }
    let id_list: Vec<i64> = ids.values().copied().collect();
    crate::state::exec_in(
        &mut tx,
        "DELETE FROM links WHERE object_id IN ({in})",
        &[],
        &id_list,
    )
    .await?;
    let links: Vec<(i64, &Link)> = batch
        .iter()
        .filter_map(|(meta, _, _, links)| ids.get(&meta.key).map(|id| (*id, links)))
        .flat_map(|(id, links)| links.iter().map(move |l| (id, l)))
        .collect();
    for chunk in links.chunks(150) {
        let sql = format!(
            "INSERT INTO links(object_id, entity_type, entity_key, rule, location) VALUES {}",
            crate::state::params(chunk.len(), "(?, ?, ?, ?, ?)", 1)
        );
        let mut query = sqlx::query(crate::state::sql(state.is_sqlite(), sql));
        for (id, l) in chunk {
            query = query
                .bind(*id)
                .bind(l.entity_type.clone())
                .bind(l.entity_key.clone())
                .bind(l.rule as i64)
                .bind(l.location.clone());
        }
        query
            .execute(&mut *tx)
            .await
            .map_err(q("writing the index"))?;
    }
    // Links registered through the API for these objects (before the index
    // first saw them, or kept across a change of content).
    for chunk in id_list.chunks(400) {
        register::materialize(&mut tx, "o.id", chunk).await?;
    }
    tx.commit().await.map_err(q("writing the index"))?;
    Ok(())
}

/// The index as the plan reads it: one entry per object, with its links.
#[derive(Clone, Debug)]
pub struct IndexedEntry {
    pub key: String,
    pub size: u64,
    pub modified: Option<i64>,
    pub status: String,
    pub links: Vec<(String, String)>,
}

/// Streams the index, object by object, in key order.
pub async fn for_each_entry(
    state: &StateStore,
    sink: &mut (dyn FnMut(IndexedEntry) + Send),
) -> Result<u64, StateError> {
    use futures::TryStreamExt;
    let mut rows = sqlx::query(
        "SELECT o.id, o.key, o.size, o.modified, o.status, l.entity_type, l.entity_key
         FROM objects o LEFT JOIN links l ON l.object_id = o.id ORDER BY o.id",
    )
    .fetch(state.pool());
    let mut current: Option<(i64, IndexedEntry)> = None;
    let mut n = 0;
    while let Some(r) = rows.try_next().await.map_err(q("reading the index"))? {
        let id: i64 = r.get(0);
        if current.as_ref().map(|c| c.0) != Some(id) {
            if let Some((_, e)) = current.take() {
                sink(e);
                n += 1;
            }
            current = Some((
                id,
                IndexedEntry {
                    key: r.get(1),
                    size: r.get::<i64, _>(2) as u64,
                    modified: r.get(3),
                    status: r.get(4),
                    links: Vec::new(),
                },
            ));
        }
        let ty: Option<String> = r.get(5);
        let key: Option<String> = r.get(6);
        if let (Some(ty), Some(key), Some((_, e))) = (ty, key, current.as_mut()) {
            e.links.push((ty, key));
        }
    }
    if let Some((_, e)) = current.take() {
        sink(e);
        n += 1;
    }
    Ok(n)
}

/// What the index holds for each of `keys` that it knows (an object missing
/// from the maps has left the index): its current links, for the apply
/// re-check, and what the last index run saw of it (size, last-modified,
/// etag), which apply's deletes expect the store still to show.
#[allow(clippy::type_complexity)]
pub async fn links_and_metas_of_keys(
    state: &StateStore,
    keys: &[String],
) -> Result<
    (
        std::collections::HashMap<String, Vec<(String, String)>>,
        std::collections::HashMap<String, crate::store::Expected>,
    ),
    StateError,
> {
    let mut links: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    let mut metas = std::collections::HashMap::new();
    let mut rows = Vec::new();
    for chunk in keys.chunks(400) {
        let sql = format!(
            "SELECT o.key, l.entity_type, l.entity_key, o.size, o.modified, o.etag
             FROM objects o LEFT JOIN links l ON l.object_id = o.id WHERE o.key IN ({})",
            crate::state::params(chunk.len(), "?", 1)
        );
        let mut query = sqlx::query(crate::state::sql(state.is_sqlite(), sql));
        for k in chunk {
            query = query.bind(k.clone());
        }
        rows.extend(
            query
                .fetch_all(state.pool())
                .await
                .map_err(q("reading the index"))?,
        );
    }
    for r in rows {
        let key: String = r.get(0);
        let (ty, entity): (Option<String>, Option<String>) = (r.get(1), r.get(2));
        if !metas.contains_key(&key) {
            metas.insert(
                key.clone(),
                crate::store::Expected {
                    size: r.get::<i64, _>(3) as u64,
                    modified: r.get(4),
                    etag: r.get(5),
                },
            );
        }
        let entry = links.entry(key).or_default();
        if let (Some(ty), Some(entity)) = (ty, entity) {
            entry.push((ty, entity));
        }
    }
    Ok((links, metas))
}

/// A digest of a link set, order-independent.
pub fn links_digest(links: &[(String, String)]) -> String {
    let mut sorted: Vec<String> = links.iter().map(|(t, k)| format!("{t}:{k}")).collect();
    sorted.sort();
    sorted.dedup();
    let mut h = Sha256::new();
    for s in sorted {
        h.update(s.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}
