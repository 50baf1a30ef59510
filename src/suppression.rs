//! The suppression list: the keyed hashes of the identifiers of every
//! person lethe erased (`state::erased`, written as their rows are
//! deleted), read as the index and the plan need it to notice a re-import —
//! a payload that names an erased person again (index), a CRM row that
//! carries an erased person's identifier (plan). Counted and listed for
//! review; never a reason to delete anything.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::config::Config;
use crate::crm::Crm;
use crate::state::{StateError, StateStore};
use crate::verify::residual::{
    Erased, Fingerprint, IdentifierKind, Scanner, normalise, parse_hash,
};

/// Hashes read at a time.
const PAGE: i64 = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    #[error(transparent)]
    Crm(#[from] crate::crm::CrmError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// A scanner for every identifier on the list; `None` when it is empty.
/// Memory: the list (a few dozen bytes per erased identifier).
pub async fn scanner(config: &Config, state: &StateStore) -> Result<Option<Scanner>, StateError> {
    let mut erased = Erased::default();
    let mut after = String::new();
    loop {
        let rows = crate::state::erased::suppression_page(state, &after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        for (hash, kind, len) in rows {
            let (Ok(kind), Some(hash)) = (kind.parse::<IdentifierKind>(), parse_hash(&hash)) else {
                continue;
            };
            // One "entity" per hash: what is counted is objects, not people.
            erased.add(kind, hash, 0, len);
        }
    }
    Ok(erased.scanner(Fingerprint::new(&config.audit_key)))
}

/// The objects among `keys` that name an identifier on the list, read
/// through `scanner` (several at a time); objects that cannot be read are
/// counted apart.
pub async fn objects_naming(
    store: &dyn crate::store::TechnicalStore,
    scanner: Scanner,
    keys: Vec<String>,
) -> (Vec<String>, u64) {
    use futures::StreamExt;
    let scanner = Arc::new(scanner);
    let scans = keys.into_iter().map(|key| {
        let scanner = scanner.clone();
        async move {
            let found = async {
                let reader = store.read(&key).await.map_err(|e| e.to_string())?;
                tokio::task::spawn_blocking(move || {
                    let mut hit = false;
                    scanner
                        .scan(reader, &mut |_| hit = true)
                        .map(|_| hit)
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            }
            .await;
            (key, found)
        }
    });
    let mut results = futures::stream::iter(scans).buffer_unordered(8);
    let (mut hits, mut failed) = (Vec::new(), 0);
    while let Some((key, found)) = results.next().await {
        match found {
            Ok(true) => hits.push(key),
            Ok(false) => {}
            Err(_) => failed += 1,
        }
    }
    hits.sort();
    (hits, failed)
}

/// The list as a set of hash prefixes (8 bytes each: a few megabytes for
/// millions of identifiers), for the plan's pass over the CRM; a hit is
/// confirmed against the full hash in the state store. `None`: empty list.
pub async fn prefixes(state: &StateStore) -> Result<Option<HashSet<u64>>, StateError> {
    let mut out = HashSet::new();
    let mut after = String::new();
    loop {
        let rows = crate::state::erased::suppression_page(state, &after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        for (hash, _, _) in rows {
            if let Some(h) = parse_hash(&hash) {
                out.insert(prefix(&h));
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn prefix(h: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b)
}

/// Every identifier value the CRM holds (columns of `identifiers`) whose
/// keyed hash has a prefix in `filter`: (type, key, hex hash). One read of
/// each identifier column, every value hashed.
async fn crm_hashes_in(
    config: &Config,
    crm: &dyn Crm,
    filter: &HashSet<u64>,
) -> Result<Vec<(String, String, String)>, SuppressionError> {
    let fingerprint = Fingerprint::new(&config.audit_key);
    let mut out: Vec<(String, String, String)> = Vec::new();
    for et in config.entities.iter().filter(|e| !e.identifiers.is_empty()) {
        for column in &et.identifiers {
            crm.column_values(et, column, &mut |key, value| {
                let kind = if value.contains('@') {
                    IdentifierKind::Email
                } else {
                    IdentifierKind::Phone
                };
                if let Some(n) = normalise(kind, &value) {
                    let h = fingerprint.hash(kind, &n);
                    if filter.contains(&prefix(&h)) {
                        out.push((et.name.clone(), key.canonical(), hex::encode(h)));
                    }
                }
            })
            .await?;
        }
    }
    Ok(out)
}

/// The CRM's entities (of types with `identifiers`) whose identifier is on
/// the list: (type, key), at most `limit` (and the count of all). Reads
/// each identifier column once, hashing every value (the list's prefixes
/// in memory; a hit confirmed in the state store).
pub async fn reimported_entities(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    list: &HashSet<u64>,
    limit: usize,
) -> Result<(Vec<(String, String)>, u64), SuppressionError> {
    let candidates = crm_hashes_in(config, crm, list).await?;
    let confirmed = crate::state::erased::suppressed(
        state,
        &candidates.iter().map(|c| c.2.clone()).collect::<Vec<_>>(),
    )
    .await?;
    let mut found: BTreeSet<(String, String)> = BTreeSet::new();
    for (t, k, h) in candidates {
        if confirmed.contains(&h) {
            found.insert((t, k));
        }
    }
    let count = found.len() as u64;
    Ok((found.into_iter().take(limit).collect(), count))
}

/// After an apply: an identifier that an entity still in the CRM carries
/// (the same person's lead kept by a contract, another entity with the same
/// phone) was not erased, whatever row of it was deleted: it leaves the
/// plan's erased identifiers (the suppression list, and what verify
/// searches the store for). Returns how many left.
pub async fn release_retained(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    plan_id: &str,
) -> Result<u64, SuppressionError> {
    if config.entities.iter().all(|e| e.identifiers.is_empty()) {
        return Ok(0);
    }
    let mut mine: HashSet<u64> = HashSet::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let rows = crate::state::erased::of_plan(
            state,
            plan_id,
            after.as_ref().map(|(h, e)| (h.as_str(), e.as_str())),
            PAGE,
        )
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.hash.clone(), last.entity.clone()));
        for r in rows {
            if let Some(h) = parse_hash(&r.hash) {
                mine.insert(prefix(&h));
            }
        }
    }
    if mine.is_empty() {
        return Ok(0);
    }
    let held: BTreeSet<String> = crm_hashes_in(config, crm, &mine)
        .await?
        .into_iter()
        .map(|(_, _, h)| h)
        .collect();
    if held.is_empty() {
        return Ok(0);
    }
    Ok(
        crate::state::erased::release(state, plan_id, &held.into_iter().collect::<Vec<_>>())
            .await?,
    )
}
