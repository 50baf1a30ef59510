//! The `registered_links` table: links registered at ingest time: the integration service that stores a
//! payload tells lethe which entities it belongs to (the HTTP API's
//! `POST /v1/links`). They add to what the link rules find, never replace it.
//!
//! A registration is kept in `registered_links` by object key, whether or not
//! the index has seen the object yet, and is copied into `links` (rule
//! [`REGISTERED_RULE`]) for every indexed object it names: at registration
//! for objects already indexed, by the index for objects it reads later.
//! The plan and the apply re-check read `links` only, so a link registered
//! after a plan makes apply skip the object (its link set changed). When an
//! object leaves the index, its registrations go with it (a trigger).

use sqlx::{Any, Transaction};

use super::{StateError, StateStore, q};

/// The `links.rule` of a registered link (link rules count from 0).
pub const REGISTERED_RULE: i64 = -1;

/// One object and the entities it belongs to, already validated.
#[derive(Clone, Debug)]
pub struct Registration {
    pub object: String,
    /// (entity type, key)
    pub entities: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Registered {
    /// Links not registered before.
    pub new: u64,
    /// Links that were registered already (a repeated call is harmless).
    pub existing: u64,
    /// Of the new links, those whose object the index already holds: they
    /// count from the next plan on. The others count once the index reads
    /// the object.
    pub indexed: u64,
}

/// Registers links, all in one transaction.
pub async fn register(
    state: &StateStore,
    registrations: &[Registration],
    now: &str,
) -> Result<Registered, StateError> {
    let rows: Vec<(&str, &str, &str)> = registrations
        .iter()
        .flat_map(|r| {
            r.entities
                .iter()
                .map(move |(t, k)| (r.object.as_str(), t.as_str(), k.as_str()))
        })
        .collect();
    let mut out = Registered::default();
    let mut tx = state.begin_write().await.map_err(q("registering links"))?;
    for chunk in rows.chunks(200) {
        let sql = format!(
            "INSERT INTO registered_links(key, entity_type, entity_key, registered_at) VALUES {}
             ON CONFLICT DO NOTHING",
            super::params(chunk.len(), "(?, ?, ?, ?)", 1)
        );
        let mut query = sqlx::query(super::sql(state.is_sqlite(), sql));
        for (key, ty, ek) in chunk {
            query = query.bind(*key).bind(*ty).bind(*ek).bind(now);
        }
        out.new += query
            .execute(&mut *tx)
            .await
            .map_err(q("registering links"))?
            .rows_affected();
    }
    out.existing = rows.len() as u64 - out.new;
    let mut keys: Vec<String> = registrations.iter().map(|r| r.object.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    for chunk in keys.chunks(400) {
        out.indexed += materialize(&mut tx, "o.key", chunk).await?;
    }
    tx.commit().await.map_err(q("registering links"))?;
    Ok(out)
}

/// Copies the registrations of the given objects (by `column` = `o.key` or
/// `o.id`) into `links`, skipping those already there. Returns the rows added.
pub(crate) async fn materialize<T>(
    tx: &mut Transaction<'_, Any>,
    column: &str,
    values: &[T],
) -> Result<u64, StateError>
where
    T: for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + Clone + Send + 'static,
{
    if values.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "INSERT INTO links(object_id, entity_type, entity_key, rule, location)
         SELECT o.id, r.entity_type, r.entity_key, {REGISTERED_RULE}, 'registered'
         FROM registered_links r JOIN objects o ON o.key = r.key
         WHERE {column} IN ({})
           AND NOT EXISTS (SELECT 1 FROM links l WHERE l.object_id = o.id AND l.rule = {REGISTERED_RULE}
                           AND l.entity_type = r.entity_type AND l.entity_key = r.entity_key)",
        super::params(values.len(), "?", 1)
    );
    let mut query = sqlx::query(super::sql(super::is_sqlite(tx), sql));
    for v in values {
        query = query.bind(v.clone());
    }
    Ok(query
        .execute(&mut **tx)
        .await
        .map_err(q("registering links"))?
        .rows_affected())
}

/// How many links are registered, and how many of them name an object the
/// index holds.
pub async fn counts(state: &StateStore) -> Result<(u64, u64), StateError> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM registered_links")
        .fetch_one(state.pool())
        .await
        .map_err(q("counting registered links"))?;
    let indexed: i64 = sqlx::query_scalar("SELECT count(*) FROM links WHERE rule = $1")
        .bind(REGISTERED_RULE)
        .fetch_one(state.pool())
        .await
        .map_err(q("counting registered links"))?;
    Ok((total as u64, indexed as u64))
}
