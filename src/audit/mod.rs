//! Stage 6, audit: the hash-chained, pseudonymous record of every deletion.
//! Each record carries HMAC-SHA256(audit key, ref) instead of the ref, and
//! the hash of the record before it; `verify` recomputes the chain and
//! compares its end with the head stored beside it, so an edited, removed or
//! reordered record is found.
//!
//! Architecture invariant: records are appended in the same state-store
//! transaction as the journal step they describe.

pub mod pseudonym;

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::state::{StateError, StateStore, q};
use pseudonym::Pseudonymizer;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record before it is chained.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub plan_id: String,
    pub policy: Option<String>,
    pub basis: Option<String>,
    /// `delete-entity`, `delete-object`, …
    pub action: &'static str,
    pub entity_type: Option<String>,
    pub pseudonym: String,
    pub bytes: Option<i64>,
    /// Who made the change (holds); None for deletions, which a plan makes.
    pub author: Option<String>,
    /// The length of a hold's reason, in characters (never its text).
    pub reason_chars: Option<i64>,
}

/// The actions whose records `verify` matches with the journal, one record
/// per item the journal says lethe deleted.
pub const DELETE_ENTITY: &str = "delete-entity";
pub const DELETE_OBJECT: &str = "delete-object";
/// A legal hold put on (`hold add`) or lifted (`hold rm`).
pub const HOLD_ADD: &str = "hold-add";
pub const HOLD_RM: &str = "hold-rm";

#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    pub seq: i64,
    pub plan_id: String,
    pub policy: Option<String>,
    pub basis: Option<String>,
    pub action: String,
    pub entity_type: Option<String>,
    pub pseudonym: String,
    pub bytes: Option<i64>,
    pub at: String,
    pub prev: String,
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_chars: Option<i64>,
}

fn record_hash(r: &Record) -> String {
    let mut h = Sha256::new();
    let mut fields = vec![
        r.seq.to_string(),
        r.plan_id.clone(),
        r.policy.clone().unwrap_or_default(),
        r.basis.clone().unwrap_or_default(),
        r.action.clone(),
        r.entity_type.clone().unwrap_or_default(),
        r.pseudonym.clone(),
        r.bytes.map(|b| b.to_string()).unwrap_or_default(),
        r.at.clone(),
        r.prev.clone(),
    ];
    // Fields added later are hashed only when present, so the records
    // written before them keep their hashes.
    if r.author.is_some() || r.reason_chars.is_some() {
        fields.push(r.author.clone().unwrap_or_default());
        fields.push(r.reason_chars.map(|n| n.to_string()).unwrap_or_default());
    }
    for f in fields {
        // Length-prefixed so that no two field lists hash alike.
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends records inside the caller's transaction; returns the new head.
pub async fn append(
    tx: &mut Transaction<'_, Any>,
    records: Vec<NewRecord>,
) -> Result<Option<String>, StateError> {
    if records.is_empty() {
        return Ok(None);
    }
    // One appender at a time: several workers may share the chain.
    crate::state::serialize_audit(tx).await?;
    let head = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(q("reading the audit head"))?;
    let (mut seq, mut prev) = match head {
        Some(r) => (r.get::<i64, _>(0), r.get::<String, _>(1)),
        None => (0, GENESIS.to_string()),
    };
    let at = jiff::Timestamp::now().to_string();
    let mut chained = Vec::with_capacity(records.len());
    for n in records {
        seq += 1;
        let mut r = Record {
            seq,
            plan_id: n.plan_id,
            policy: n.policy,
            basis: n.basis,
            action: n.action.to_string(),
            entity_type: n.entity_type,
            pseudonym: n.pseudonym,
            bytes: n.bytes,
            at: at.clone(),
            prev: prev.clone(),
            hash: String::new(),
            author: n.author,
            reason_chars: n.reason_chars,
        };
        r.hash = record_hash(&r);
        prev = r.hash.clone();
        chained.push(r);
    }
    // Many rows per statement: the audit is written on apply's hot path.
    // The records move into the statements (no copy of their strings).
    const ROWS: usize = 200;
    let statement = crate::state::RowsSql::new(
        crate::state::is_sqlite(tx),
        "INSERT INTO audit(seq, plan_id, policy, basis, action, entity_type, pseudonym, bytes, at, prev, hash, author, reason_chars) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        1,
        "",
        ROWS,
    );
    let mut rest = chained.into_iter();
    loop {
        let chunk: Vec<Record> = rest.by_ref().take(ROWS).collect();
        if chunk.is_empty() {
            break;
        }
        let mut query = sqlx::query(statement.rows(chunk.len()));
        for r in chunk {
            query = query
                .bind(r.seq)
                .bind(r.plan_id)
                .bind(r.policy)
                .bind(r.basis)
                .bind(r.action)
                .bind(r.entity_type)
                .bind(r.pseudonym)
                .bind(r.bytes)
                .bind(r.at)
                .bind(r.prev)
                .bind(r.hash)
                .bind(r.author)
                .bind(r.reason_chars);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(q("appending to the audit log"))?;
    }
    sqlx::query("INSERT INTO meta(k, v) VALUES ('audit.head', $1) ON CONFLICT(k) DO UPDATE SET v = excluded.v")
        .bind(format!("{seq}:{prev}"))
        .execute(&mut **tx)
        .await
        .map_err(q("updating the audit head"))?;
    Ok(Some(prev))
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Verification {
    pub records: u64,
    pub head: Option<String>,
    /// Journal items that say lethe deleted them (entities and objects).
    pub journal_deleted: u64,
    /// Of those, items with no `delete-*` record of their plan and pseudonym.
    pub unaudited: u64,
    /// `delete-*` records that name no such journal item (or repeat one).
    pub unjournaled: u64,
    /// `delete-*` records of plans removed by `plan prune`: chained, but
    /// with no journal left to compare them with.
    #[serde(default)]
    pub of_pruned_plans: u64,
    /// Empty when the chain is intact.
    pub problems: Vec<String>,
}

/// At most this many problems of each kind are named one by one; the
/// counts above are always complete.
const NAMED: usize = 20;

impl Verification {
    /// `--expect-head`: the chain must end at `expected`, a head kept
    /// elsewhere (the hash alone, or `SEQ:HASH` as stored).
    pub fn expect_head(&mut self, expected: &str, seen_at: Option<i64>) {
        let want = expected.rsplit(':').next().unwrap_or(expected).trim();
        let found = self.head.as_deref().unwrap_or("(empty)");
        if !found.eq_ignore_ascii_case(want) {
            let seen = match seen_at {
                Some(seq) => format!(
                    "; the expected head is record {seq}, so {} records were appended since it was kept",
                    self.records.saturating_sub(seq as u64)
                ),
                None => "; no record of the chain has the expected head".to_string(),
            };
            self.problems.push(format!(
                "the chain's head is {found}, not the expected {want}{seen}"
            ));
        }
    }
}

/// What `verify` matches a `delete-*` record and a journal item by: the
/// plan (an index into the plans seen), the action and the pseudonym's 32
/// bytes. Only hashes and small numbers, so a million items cost tens of
/// megabytes, never their keys.
type ItemKey = (u32, bool, [u8; 32]);

#[derive(Default)]
struct Plans {
    index: std::collections::HashMap<String, u32>,
    ids: Vec<String>,
}

impl Plans {
    fn of(&mut self, id: &str) -> u32 {
        if let Some(i) = self.index.get(id) {
            return *i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }
}

fn pseudonym_bytes(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

fn short(p: &[u8; 32]) -> String {
    hex::encode(&p[..8])
}

fn row_record(r: &sqlx::any::AnyRow) -> Record {
    Record {
        seq: r.get(0),
        plan_id: r.get(1),
        policy: r.get(2),
        basis: r.get(3),
        action: r.get(4),
        entity_type: r.get(5),
        pseudonym: r.get(6),
        bytes: r.get(7),
        at: r.get(8),
        prev: r.get(9),
        hash: r.get(10),
        author: r.get(11),
        reason_chars: r.get(12),
    }
}

const SELECT: &str = "SELECT seq, plan_id, policy, basis, action, entity_type, pseudonym, bytes, at, prev, hash, author, reason_chars FROM audit";

/// Streams every record in chain order.
pub async fn for_each(
    state: &StateStore,
    sink: &mut (dyn FnMut(Record) + Send),
) -> Result<(), StateError> {
    use futures::TryStreamExt;
    let mut rows =
        sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY seq"))).fetch(state.pool());
    while let Some(r) = rows.try_next().await.map_err(q("reading the audit log"))? {
        sink(row_record(&r));
    }
    Ok(())
}

pub async fn lookup(state: &StateStore, pseudonym: &str) -> Result<Vec<Record>, StateError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE pseudonym = $1 ORDER BY seq"
    )))
    .bind(pseudonym)
    .fetch_all(state.pool())
    .await
    .map_err(q("reading the audit log"))?;
    Ok(rows.iter().map(row_record).collect())
}

/// Journal rows read per query by `verify`.
pub const JOURNAL_PAGE: i64 = 5_000;

/// Recomputes the chain; checks it against the stored head and the journal,
/// item by item: every journal item that says deleted has exactly one
/// `delete-*` record of its plan with its pseudonym, and no `delete-*`
/// record exists without one. Other actions (holds) are only chained.
pub async fn verify(
    state: &StateStore,
    pseudo: &Pseudonymizer,
) -> Result<Verification, StateError> {
    verify_paged(state, pseudo, JOURNAL_PAGE, None).await
}

/// As [`verify`], reading `page` journal rows at a time, and with
/// `expect_head` comparing the chain's end with a head kept elsewhere.
pub async fn verify_paged(
    state: &StateStore,
    pseudo: &Pseudonymizer,
    page: i64,
    expect_head: Option<&str>,
) -> Result<Verification, StateError> {
    let page = page.max(1);
    let mut v = Verification::default();
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 1i64;
    let mut plans = Plans::default();
    let mut audited: std::collections::HashMap<ItemKey, u32> = Default::default();
    let mut bad_pseudonyms: Vec<String> = Vec::new();
    let want_head = expect_head.map(|h| {
        h.rsplit(':')
            .next()
            .unwrap_or(h)
            .trim()
            .to_ascii_lowercase()
    });
    let mut head_seen_at = None;
    let problems = &mut v.problems;
    let mut count = 0u64;
    let pruned = crate::state::plans::pruned_plans(state).await?;
    let of_pruned = &mut v.of_pruned_plans;
    let unjournaled = &mut v.unjournaled;
    for_each(state, &mut |r| {
        count += 1;
        if problems.len() < NAMED {
            if r.seq != expect_seq {
                problems.push(format!("record {}: expected sequence number {expect_seq} (a record was removed or reordered)", r.seq));
            }
            if r.prev != prev {
                problems.push(format!("record {}: does not follow the record before it (removed, inserted or reordered)", r.seq));
            }
            if record_hash(&r) != r.hash {
                problems.push(format!("record {}: content does not match its hash (edited)", r.seq));
            }
        }
        if want_head.as_deref() == Some(r.hash.as_str()) {
            head_seen_at = Some(r.seq);
        }
        let object = match r.action.as_str() {
            DELETE_ENTITY => Some(false),
            DELETE_OBJECT => Some(true),
            _ => None,
        };
        let object = object.filter(|_| {
            let gone = pruned.contains(&r.plan_id);
            *of_pruned += u64::from(gone);
            !gone
        });
        if let Some(object) = object {
            match pseudonym_bytes(&r.pseudonym) {
                Some(p) => *audited.entry((plans.of(&r.plan_id), object, p)).or_default() += 1,
                None => {
                    *unjournaled += 1;
                    if bad_pseudonyms.len() < NAMED {
                        bad_pseudonyms.push(format!(
                            "record {}: {} names no pseudonym (not 64 hex digits), so no journal item",
                            r.seq, r.action
                        ));
                    }
                }
            }
        }
        expect_seq = r.seq + 1;
        prev = r.hash;
    })
    .await?;
    v.problems.extend(bad_pseudonyms);
    v.records = count;
    let head = state.meta_get("audit.head").await?;
    match (&head, count) {
        (None, 0) => {}
        (None, _) => v.problems.push("the stored chain head is missing".into()),
        (Some(h), _) => {
            if h != &format!("{}:{prev}", expect_seq - 1) {
                v.problems.push(format!(
                    "the chain ends at record {} but the stored head is {}: records were removed from the end or the head was altered",
                    expect_seq - 1,
                    h.split(':').next().unwrap_or("?")
                ));
            }
        }
    }
    v.head = if count > 0 { Some(prev) } else { None };

    // The journal, item by item, in pages: each deleted item takes its record.
    let mut unaudited: Vec<String> = Vec::new();
    let mut take = |v: &mut Verification, plan: &str, object: bool, p: [u8; 32], shown: String| {
        v.journal_deleted += 1;
        let key = (plans.of(plan), object, p);
        match audited.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                audited.remove(&key);
            }
            None => {
                v.unaudited += 1;
                if unaudited.len() < NAMED {
                    unaudited.push(format!(
                        "plan {plan}: the journal says {shown} was deleted, but no {} record names it",
                        if object { DELETE_OBJECT } else { DELETE_ENTITY }
                    ));
                }
            }
        }
    };
    let mut after: Option<(String, String, String)> = None;
    loop {
        let query = match &after {
            None => sqlx::query(
                "SELECT plan_id, entity_type, entity_key FROM plan_entities WHERE status = 'deleted'
                 ORDER BY plan_id, entity_type, entity_key LIMIT $1",
            )
            .bind(page),
            Some((p, t, k)) => sqlx::query(
                "SELECT plan_id, entity_type, entity_key FROM plan_entities WHERE status = 'deleted'
                   AND (plan_id, entity_type, entity_key) > ($2, $3, $4)
                 ORDER BY plan_id, entity_type, entity_key LIMIT $1",
            )
            .bind(page)
            .bind(p.clone())
            .bind(t.clone())
            .bind(k.clone()),
        };
        let rows = query
            .fetch_all(state.pool())
            .await
            .map_err(q("reading the journal"))?;
        for r in &rows {
            let (plan, ty, key): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            take(
                &mut v,
                &plan,
                false,
                pseudo.entity_bytes(&ty, &key),
                pseudo.show_entity(&ty, &key),
            );
        }
        match rows.last() {
            Some(last) => after = Some((last.get(0), last.get(1), last.get(2))),
            None => break,
        }
    }
    let mut after: Option<(String, i64)> = None;
    loop {
        let query = match &after {
            None => sqlx::query(
                "SELECT plan_id, item, key FROM plan_objects WHERE status = 'deleted'
                 ORDER BY plan_id, item LIMIT $1",
            )
            .bind(page),
            Some((p, i)) => sqlx::query(
                "SELECT plan_id, item, key FROM plan_objects WHERE status = 'deleted'
                   AND (plan_id, item) > ($2, $3)
                 ORDER BY plan_id, item LIMIT $1",
            )
            .bind(page)
            .bind(p.clone())
            .bind(*i),
        };
        let rows = query
            .fetch_all(state.pool())
            .await
            .map_err(q("reading the journal"))?;
        for r in &rows {
            let (plan, key): (String, String) = (r.get(0), r.get(2));
            take(
                &mut v,
                &plan,
                true,
                pseudo.object_bytes(&key),
                pseudo.show_object(&key),
            );
        }
        match rows.last() {
            Some(last) => after = Some((last.get(0), last.get(1))),
            None => break,
        }
    }
    // What is left names no journal item (or names one twice).
    let mut left: Vec<(&ItemKey, &u32)> = audited.iter().collect();
    left.sort();
    for ((plan, object, p), n) in left {
        v.unjournaled += u64::from(*n);
        if unaudited.len() < 2 * NAMED {
            let plan = &plans.ids[*plan as usize];
            let (action, kind) = if *object {
                (DELETE_OBJECT, "object")
            } else {
                (DELETE_ENTITY, "entity")
            };
            unaudited.push(format!(
                "plan {plan}: {n} {action} record(s) for {kind} ~{} but the journal says no such item of the plan was deleted",
                short(p)
            ));
        }
    }
    if v.unaudited > 0 || v.unjournaled > 0 {
        v.problems.push(format!(
            "the journal and the audit log disagree: {} of {} items the journal says deleted have no record, {} delete records name no such item",
            v.unaudited, v.journal_deleted, v.unjournaled
        ));
    }
    v.problems.extend(unaudited);
    if let Some(expected) = expect_head {
        v.expect_head(expected, head_seen_at);
    }
    Ok(v)
}

/// Neutralises a CSV cell against formula injection.
pub fn csv_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash of `deletion()` under the ten-field formula of schema 3.
    const PINNED: &str = "cd12198bae7f324149ef030dad277b9f66402688f9e447e25117e48d3f8b358c";

    fn deletion() -> Record {
        Record {
            seq: 7,
            plan_id: "p1".into(),
            policy: Some("unconverted-sales".into()),
            basis: Some("GDPR Art. 17".into()),
            action: DELETE_ENTITY.into(),
            entity_type: Some("lead".into()),
            pseudonym: "ab".repeat(32),
            bytes: None,
            at: "2026-06-30T00:00:00Z".into(),
            prev: GENESIS.into(),
            hash: String::new(),
            author: None,
            reason_chars: None,
        }
    }

    /// Chains written before holds were audited must still verify: the
    /// fields added since are hashed only when present.
    #[test]
    fn records_without_the_hold_fields_hash_as_before() {
        assert_eq!(record_hash(&deletion()), PINNED);
        let mut held = deletion();
        held.author = Some("dpo".into());
        assert_ne!(record_hash(&held), PINNED);
        let mut held = deletion();
        held.reason_chars = Some(0);
        assert_ne!(record_hash(&held), PINNED);
    }

    #[test]
    fn csv_cells_cannot_become_formulas() {
        for evil in ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tx", "\rx"] {
            assert!(csv_cell(evil).starts_with('\''), "{evil:?}");
        }
        assert_eq!(csv_cell("delete-entity"), "delete-entity");
        assert_eq!(csv_cell("GDPR Art. 17"), "GDPR Art. 17");
    }
}
