//! Stage 1, index: lists the technical store and records, per object, the
//! entity refs its link rules find (by path, by content), with the rule and
//! the location of each. Incremental: an object whose size, modification time
//! and etag are unchanged since the last run (under the same rules) is not
//! read again; objects gone from the store leave the index.
//!
//! Architecture invariant: a listing that fails changes nothing in the index
//! (fail closed: an incomplete listing must never make objects look gone).

pub mod extract;

use std::time::Instant as Clock;

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::config::{Config, ContentKind, LinkRule};
use crate::state::{StateError, StateStore, q};
use crate::store::{Listed, ObjectMeta, StoreError, TechnicalStore};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
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
                if meta.size > config.max_content_bytes {
                    unreadable = Some(format!(
                        "{} bytes, larger than technical.max_content_bytes ({})",
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
                let max = config.max_content_bytes;
                let found = tokio::task::block_in_place(|| match kind {
                    ContentKind::Json(p) => extract::json(reader, p, max),
                    ContentKind::Xml(p) => extract::xml(reader, p, max),
                    ContentKind::Csv { column, delimiter } => {
                        extract::csv(reader, column, *delimiter, max)
                    }
                });
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
        }
    }
    if unreadable.is_some() {
        // Never delete on the strength of a content rule that failed: keep
        // only the path links.
        links.retain(|l| {
            config
                .links
                .iter()
                .any(|r| r.index() == l.rule && matches!(r, LinkRule::Path { .. }))
        });
    }
    (links, unreadable)
}

fn rules_hash(config: &Config) -> String {
    let mut h = Sha256::new();
    for r in &config.links {
        h.update(r.describe().as_bytes());
        h.update(b"\n");
    }
    h.update(config.max_content_bytes.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Runs the index stage; `progress` is told each object processed.
pub async fn run(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<IndexSummary, IndexError> {
    let started = Clock::now();
    let mut summary = IndexSummary {
        links_per_rule: vec![0; config.links.len()],
        ..Default::default()
    };
    // List everything first: a listing that fails midway changes nothing.
    let mut listed = Vec::new();
    store.list(&mut |l| listed.push(l)).await?;

    let rules = rules_hash(config);
    let store_id = store.describe();
    let same_rules = state.meta_get("index.rules").await?.as_deref() == Some(rules.as_str())
        && state.meta_get("index.store").await?.as_deref() == Some(store_id.as_str());
    let known = state.indexed_objects().await?;
    let run: i64 = state
        .meta_get("index.run")
        .await?
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
        + 1;

    let total = listed.len() as u64;
    let mut unchanged_ids: Vec<i64> = Vec::new();
    let mut pending: Vec<(ObjectMeta, &'static str, Option<String>, Vec<Link>)> = Vec::new();
    let mut done = 0u64;
    for entry in listed {
        done += 1;
        match entry {
            Listed::Skipped { key, reason } => {
                summary.entries_skipped += 1;
                let meta = ObjectMeta {
                    key,
                    size: 0,
                    modified: None,
                    etag: None,
                };
                pending.push((meta, "skipped", Some(reason), Vec::new()));
            }
            Listed::Object(meta) => {
                summary.objects_seen += 1;
                summary.bytes_listed += meta.size;
                let unchanged = same_rules
                    && known.get(&meta.key).is_some_and(|k| {
                        k.size == meta.size && k.modified == meta.modified && k.etag == meta.etag
                    });
                if unchanged {
                    summary.objects_unchanged += 1;
                    if let Some(k) = known.get(&meta.key) {
                        unchanged_ids.push(k.id);
                    }
                } else {
                    summary.objects_read += 1;
                    let (links, unreadable) = links_of(config, store, &meta).await;
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
            }
        }
        if pending.len() >= 2000 {
            write_batch(state, run, &mut pending).await?;
        }
        if unchanged_ids.len() >= 5000 {
            touch(state, run, &mut unchanged_ids).await?;
        }
        if done.is_multiple_of(1000) {
            progress(done, total);
        }
    }
    write_batch(state, run, &mut pending).await?;
    touch(state, run, &mut unchanged_ids).await?;
    progress(total, total);

    let removed = sqlx::query("DELETE FROM objects WHERE seen_run <> ?")
        .bind(run)
        .execute(state.pool())
        .await
        .map_err(q("removing objects gone from the store"))?;
    summary.objects_removed = removed.rows_affected();
    // Unchanged objects keep their links; count them for the summary.
    if summary.objects_unchanged > 0 {
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
    state.meta_set("index.run", &run.to_string()).await?;
    state.meta_set("index.rules", &rules).await?;
    state.meta_set("index.store", &store_id).await?;
    state
        .meta_set("index.completed_at", &jiff::Timestamp::now().to_string())
        .await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn touch(state: &StateStore, run: i64, ids: &mut Vec<i64>) -> Result<(), StateError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tx = state
        .pool()
        .begin()
        .await
        .map_err(q("updating the index"))?;
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE objects SET seen_run = ? WHERE id IN ({})",
            vec!["?"; chunk.len()].join(",")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run);
        for id in chunk {
            query = query.bind(*id);
        }
        query
            .execute(&mut *tx)
            .await
            .map_err(q("updating the index"))?;
    }
    tx.commit().await.map_err(q("updating the index"))?;
    ids.clear();
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
    let mut tx = state.pool().begin().await.map_err(q("writing the index"))?;
    for (meta, status, error, links) in pending.drain(..) {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO objects(key, size, modified, etag, status, error, seen_run) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(key) DO UPDATE SET size = excluded.size, modified = excluded.modified, etag = excluded.etag,
               status = excluded.status, error = excluded.error, seen_run = excluded.seen_run
             RETURNING id",
        )
        .bind(&meta.key)
        .bind(meta.size as i64)
        .bind(meta.modified)
        .bind(&meta.etag)
        .bind(status)
        .bind(error)
        .bind(run)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("writing the index"))?;
        sqlx::query("DELETE FROM links WHERE object_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("writing the index"))?;
        for l in links {
            sqlx::query("INSERT INTO links(object_id, entity_type, entity_key, rule, location) VALUES (?, ?, ?, ?, ?)")
                .bind(id)
                .bind(&l.entity_type)
                .bind(&l.entity_key)
                .bind(l.rule as i64)
                .bind(&l.location)
                .execute(&mut *tx)
                .await
                .map_err(q("writing the index"))?;
        }
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

/// The current links of each of `keys` that is in the index (an object
/// missing from the map has left the index), for the apply re-check.
pub async fn links_of_keys(
    state: &StateStore,
    keys: &[String],
) -> Result<std::collections::HashMap<String, Vec<(String, String)>>, StateError> {
    let mut out: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    for chunk in keys.chunks(400) {
        let sql = format!(
            "SELECT o.key, l.entity_type, l.entity_key FROM objects o LEFT JOIN links l ON l.object_id = o.id
             WHERE o.key IN ({})",
            vec!["?"; chunk.len()].join(",")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in chunk {
            query = query.bind(k.clone());
        }
        for r in query
            .fetch_all(state.pool())
            .await
            .map_err(q("reading the index"))?
        {
            let entry = out.entry(r.get(0)).or_default();
            let (ty, key): (Option<String>, Option<String>) = (r.get(1), r.get(2));
            if let (Some(ty), Some(key)) = (ty, key) {
                entry.push((ty, key));
            }
        }
    }
    Ok(out)
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
