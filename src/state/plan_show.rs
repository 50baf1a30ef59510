//! Reading a stored plan back for `lethe plan show --items` and the
//! report: its cases (with their entities), objects and review rows, each
//! in pages (keyset, in primary-key order), so a plan of millions of items
//! is never held whole. Re-exported by `plans`.

use serde::Serialize;
use sqlx::Row;

use super::status::{CaseStatus, EntityStatus, ObjectFate, ObjectStatus};
use super::{StateError, StateStore, q};

/// Which items `plan show --items` lists.
#[derive(Clone, Debug, Default)]
pub struct ItemFilter {
    /// `delete` or `orphan`: objects of that fate (cases are deletions, so
    /// `orphan` lists no case).
    pub fate: Option<String>,
    /// The policy (`orphans` for orphaned objects).
    pub policy: Option<String>,
    /// An entity type: the cases holding one, and only those entities of
    /// them; no objects. `object`: only the objects.
    pub entity_type: Option<String>,
}

impl ItemFilter {
    fn cases_wanted(&self) -> bool {
        self.fate.as_deref().is_none_or(|f| f == "delete")
            && self.entity_type.as_deref() != Some("object")
    }

    fn objects_wanted(&self) -> bool {
        self.entity_type.as_deref().is_none_or(|t| t == "object")
            && self.fate.as_deref().is_none_or(is_fate)
    }
}

/// One case of a plan, with the entities inside it.
#[derive(Clone, Debug, Serialize)]
pub struct CaseRow {
    pub case_id: i64,
    pub policy: String,
    pub root_type: String,
    pub root_key: String,
    /// The latest clock inside the case (plans from before it was kept: none).
    pub case_clock: Option<i64>,
    pub status: &'static str,
    pub reason: Option<String>,
    pub entities: Vec<EntityRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EntityRow {
    pub entity_type: String,
    pub entity_key: String,
    pub status: &'static str,
}

/// One object of a plan.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectRow {
    pub item: i64,
    pub key: String,
    pub size: u64,
    pub fate: &'static str,
    pub policy: String,
    pub status: &'static str,
    pub reason: Option<String>,
    /// The entities it links, as refs (plans from before they were kept: empty).
    pub entities: Vec<String>,
    /// `redact`: how many of its records go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_to_remove: Option<u64>,
}

/// Something the plan keeps, for review: an object it does not delete, an
/// undatable entity, or a dangling parent reference.
#[derive(Clone, Debug, Serialize)]
pub struct ReviewRow {
    pub item: i64,
    /// `object`, `undatable`, `dangling` or `reimported`.
    pub kind: &'static str,
    pub entity_type: Option<String>,
    pub key: String,
    pub size: Option<u64>,
    /// Object: `shared`, `orphan-young`, `unlinked`, `unreadable`, `held`.
    /// Dangling: the parent type named.
    pub fate: String,
    /// Unreadable: why. Dangling: the missing parent's key.
    pub reason: Option<String>,
    pub entities: Vec<String>,
}

const REVIEW_KINDS: &[&str] = &["object", "undatable", "dangling", "reimported"];

fn refs(json: Option<String>) -> Vec<String> {
    json.and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default()
}

/// The review rows of `plan_id` that `filter` admits, a page at a time.
pub async fn for_each_review(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    sink: &mut (dyn FnMut(&[ReviewRow]) + Send),
) -> Result<(), StateError> {
    for_each_review_up_to(state, plan_id, filter, page, u64::MAX, sink).await
}

/// As [`for_each_review`], stopping after `limit` rows (the report shows
/// the first few; it must not read a million to show them).
pub async fn for_each_review_up_to(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    limit: u64,
    sink: &mut (dyn FnMut(&[ReviewRow]) + Send),
) -> Result<(), StateError> {
    let mut read = 0u64;
    // The review rows have no policy; a policy filter lists none.
    if filter.policy.is_some() || filter.fate.as_deref().is_some_and(is_fate) {
        return Ok(());
    }
    let page = page.max(1);
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT item, kind, entity_type, key, size, fate, reason, entities FROM plan_review
             WHERE plan_id = $1 AND item > $2
               AND ($3 IS NULL OR fate = $3 OR kind = $3)
               AND ($4 IS NULL OR entity_type = $4 OR ($4 = 'object' AND kind = 'object'))
             ORDER BY item LIMIT $5",
        )
        .bind(plan_id)
        .bind(after)
        .bind(filter.fate.clone())
        .bind(filter.entity_type.clone())
        .bind(page)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's review rows"))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0);
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(ReviewRow {
                item: r.get(0),
                kind: known(REVIEW_KINDS, &r.get::<String, _>(1), "review kind")?,
                entity_type: r.get(2),
                key: r.get(3),
                size: r.get::<Option<i64>, _>(4).map(|n| n.max(0) as u64),
                fate: r.get(5),
                reason: r.get(6),
                entities: refs(r.get(7)),
            });
        }
        read += out.len() as u64;
        sink(&out);
        if (rows.len() as i64) < page || read >= limit {
            return Ok(());
        }
    }
}

fn is_fate(s: &str) -> bool {
    ObjectFate::parse(s).is_some()
}

/// The stored word of `s` as one of `T`'s (the journal's enums), or what
/// lethe never writes.
fn word<T: Copy>(
    parse: fn(&str) -> Option<T>,
    as_str: fn(T) -> &'static str,
    s: &str,
    what: &str,
) -> Result<&'static str, StateError> {
    parse(s)
        .map(as_str)
        .ok_or_else(|| StateError::Corrupt(format!("{what} `{s}` is not one lethe writes")))
}

fn known(set: &[&'static str], s: &str, what: &str) -> Result<&'static str, StateError> {
    set.iter()
        .copied()
        .find(|k| *k == s)
        .ok_or_else(|| StateError::Corrupt(format!("{what} `{s}` is not one lethe writes")))
}

/// Rows read per query.
pub const PAGE: i64 = 2_000;

/// Every case of `plan_id` that `filter` admits, in case order, handed to
/// `sink` one page at a time.
pub async fn for_each_case(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    sink: &mut (dyn FnMut(&[CaseRow]) + Send),
) -> Result<(), StateError> {
    if !filter.cases_wanted() {
        return Ok(());
    }
    let page = page.max(1);
    let ty = filter.entity_type.clone();
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT case_id, policy, root_type, root_key, status, reason, case_clock FROM plan_cases
             WHERE plan_id = $1 AND case_id > $2 AND ($3 IS NULL OR policy = $3)
               AND ($4 IS NULL OR EXISTS (SELECT 1 FROM plan_entities e
                    WHERE e.plan_id = plan_cases.plan_id AND e.case_id = plan_cases.case_id
                      AND e.entity_type = $4))
             ORDER BY case_id LIMIT $5",
        )
        .bind(plan_id)
        .bind(after)
        .bind(filter.policy.clone())
        .bind(ty.clone())
        .bind(page)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's cases"))?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        let (lo, hi): (i64, i64) = (first.get(0), last.get(0));
        let mut cases = Vec::with_capacity(rows.len());
        for r in &rows {
            cases.push(CaseRow {
                case_id: r.get(0),
                policy: r.get(1),
                root_type: r.get(2),
                root_key: r.get(3),
                case_clock: r.get(6),
                status: word(
                    CaseStatus::parse,
                    CaseStatus::as_str,
                    &r.get::<String, _>(4),
                    "case status",
                )?,
                reason: r.get(5),
                entities: Vec::new(),
            });
        }
        let ents = sqlx::query(
            "SELECT case_id, entity_type, entity_key, status FROM plan_entities
             WHERE plan_id = $1 AND case_id >= $2 AND case_id <= $3 AND ($4 IS NULL OR entity_type = $4)
             ORDER BY case_id, entity_type, entity_key",
        )
        .bind(plan_id)
        .bind(lo)
        .bind(hi)
        .bind(ty.clone())
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's entities"))?;
        let mut i = 0;
        for e in &ents {
            let case: i64 = e.get(0);
            while i < cases.len() && cases[i].case_id < case {
                i += 1;
            }
            if let Some(c) = cases.get_mut(i).filter(|c| c.case_id == case) {
                c.entities.push(EntityRow {
                    entity_type: e.get(1),
                    entity_key: e.get(2),
                    status: word(
                        EntityStatus::parse,
                        EntityStatus::as_str,
                        &e.get::<String, _>(3),
                        "entity status",
                    )?,
                });
            }
        }
        sink(&cases);
        if (rows.len() as i64) < page {
            return Ok(());
        }
        after = hi;
    }
}

/// Every object of `plan_id` that `filter` admits, in item order, handed to
/// `sink` one page at a time.
pub async fn for_each_object(
    state: &StateStore,
    plan_id: &str,
    filter: &ItemFilter,
    page: i64,
    sink: &mut (dyn FnMut(&[ObjectRow]) + Send),
) -> Result<(), StateError> {
    if !filter.objects_wanted() {
        return Ok(());
    }
    let page = page.max(1);
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(
            "SELECT item, key, size, fate, policy, status, reason, entities, records FROM plan_objects
             WHERE plan_id = $1 AND item > $2 AND ($3 IS NULL OR policy = $3)
               AND ($4 IS NULL OR fate = $4)
             ORDER BY item LIMIT $5",
        )
        .bind(plan_id)
        .bind(after)
        .bind(filter.policy.clone())
        .bind(filter.fate.clone())
        .bind(page)
        .fetch_all(state.pool())
        .await
        .map_err(q("reading the plan's objects"))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0);
        let mut objects = Vec::with_capacity(rows.len());
        for r in &rows {
            objects.push(ObjectRow {
                item: r.get(0),
                key: r.get(1),
                size: r.get::<i64, _>(2).max(0) as u64,
                fate: word(
                    ObjectFate::parse,
                    ObjectFate::as_str,
                    &r.get::<String, _>(3),
                    "object fate",
                )?,
                policy: r.get(4),
                status: word(
                    ObjectStatus::parse,
                    ObjectStatus::as_str,
                    &r.get::<String, _>(5),
                    "object status",
                )?,
                reason: r.get(6),
                entities: refs(r.get(7)),
                records_to_remove: r
                    .get::<Option<String>, _>(8)
                    .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                    .and_then(|v| v["records"].as_array().map(|a| a.len() as u64)),
            });
        }
        sink(&objects);
        if (rows.len() as i64) < page {
            return Ok(());
        }
    }
}
