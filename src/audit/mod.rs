//! Stage 6, audit: the hash-chained, pseudonymous record of every deletion.
//! Each record carries HMAC-SHA256(audit key, ref) instead of the ref, and
//! the hash of the record before it; `verify` recomputes the chain and
//! compares its end with the head stored beside it, so an edited, removed or
//! reordered record is found. Then it matches the journal with the chain
//! item by item (`Walk` along the chain, then `Matching`).
//!
//! Architecture invariant: records are appended in the same state-store
//! transaction as the journal step they describe.

pub mod pseudonym;

pub use crate::state::audit_log::{
    DELETE_ENTITY, DELETE_OBJECT, GENESIS, HOLD_ADD, HOLD_RM, NewRecord, Record, append, for_each,
    lookup, record_hash,
};
use crate::state::{StateError, StateStore};
use pseudonym::Pseudonymizer;

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
    let mut walk = Walk::new(expect_head, crate::state::plans::pruned_plans(state).await?);
    for_each(state, &mut |r| walk.record(r, &mut v)).await?;
    v.problems.append(&mut walk.bad_pseudonyms);
    v.records = walk.count;
    walk.check_stored_head(state, &mut v).await?;
    v.head = if walk.count > 0 {
        Some(walk.prev.clone())
    } else {
        None
    };
    let mut matching = Matching {
        plans: walk.plans,
        audited: walk.audited,
        unaudited: Vec::new(),
    };
    matching.journal(state, pseudo, page, &mut v).await?;
    matching.finish(&mut v);
    if let Some(expected) = expect_head {
        v.expect_head(expected, walk.head_seen_at);
    }
    Ok(v)
}

/// The walk along the chain, record by record: its sequence, links and
/// hashes checked, its `delete-*` records counted by item.
struct Walk {
    prev: String,
    expect_seq: i64,
    count: u64,
    /// `--expect-head`, the hash alone, lower case; and where it was seen.
    want_head: Option<String>,
    head_seen_at: Option<i64>,
    /// Plans removed by `plan prune`: their records have no journal left.
    pruned: std::collections::HashSet<String>,
    plans: Plans,
    audited: std::collections::HashMap<ItemKey, u32>,
    bad_pseudonyms: Vec<String>,
}

impl Walk {
    fn new(expect_head: Option<&str>, pruned: std::collections::HashSet<String>) -> Walk {
        Walk {
            prev: GENESIS.to_string(),
            expect_seq: 1,
            count: 0,
            want_head: expect_head.map(|h| {
                h.rsplit(':')
                    .next()
                    .unwrap_or(h)
                    .trim()
                    .to_ascii_lowercase()
            }),
            head_seen_at: None,
            pruned,
            plans: Plans::default(),
            audited: Default::default(),
            bad_pseudonyms: Vec::new(),
        }
    }

    fn record(&mut self, r: Record, v: &mut Verification) {
        self.count += 1;
        let expect_seq = self.expect_seq;
        let problems = &mut v.problems;
        if problems.len() < NAMED {
            if r.seq != expect_seq {
                problems.push(format!("record {}: expected sequence number {expect_seq} (a record was removed or reordered)", r.seq));
            }
            if r.prev != self.prev {
                problems.push(format!("record {}: does not follow the record before it (removed, inserted or reordered)", r.seq));
            }
            if record_hash(&r) != r.hash {
                problems.push(format!(
                    "record {}: content does not match its hash (edited)",
                    r.seq
                ));
            }
        }
        if self.want_head.as_deref() == Some(r.hash.as_str()) {
            self.head_seen_at = Some(r.seq);
        }
        let object = match r.action.as_str() {
            DELETE_ENTITY => Some(false),
            DELETE_OBJECT => Some(true),
            _ => None,
        };
        let object = object.filter(|_| {
            let gone = self.pruned.contains(&r.plan_id);
            v.of_pruned_plans += u64::from(gone);
            !gone
        });
        if let Some(object) = object {
            match pseudonym_bytes(&r.pseudonym) {
                Some(p) => {
                    *self
                        .audited
                        .entry((self.plans.of(&r.plan_id), object, p))
                        .or_default() += 1
                }
                None => {
                    v.unjournaled += 1;
                    if self.bad_pseudonyms.len() < NAMED {
                        self.bad_pseudonyms.push(format!(
                            "record {}: {} names no pseudonym (not 64 hex digits), so no journal item",
                            r.seq, r.action
                        ));
                    }
                }
            }
        }
        self.expect_seq = r.seq + 1;
        self.prev = r.hash;
    }

    /// The chain's end against the head stored beside it.
    async fn check_stored_head(
        &self,
        state: &StateStore,
        v: &mut Verification,
    ) -> Result<(), StateError> {
        let head = state.meta_get("audit.head").await?;
        match (&head, self.count) {
            (None, 0) => {}
            (None, _) => v.problems.push("the stored chain head is missing".into()),
            (Some(h), _) => {
                if h != &format!("{}:{}", self.expect_seq - 1, self.prev) {
                    v.problems.push(format!(
                        "the chain ends at record {} but the stored head is {}: records were removed from the end or the head was altered",
                        self.expect_seq - 1,
                        h.split(':').next().unwrap_or("?")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The journal matched with the chain's `delete-*` records, item by item.
struct Matching {
    plans: Plans,
    /// Records not yet matched, by item, with how many name it.
    audited: std::collections::HashMap<ItemKey, u32>,
    /// Named problems of the match (at most `2 * NAMED`).
    unaudited: Vec<String>,
}

impl Matching {
    /// The journal, item by item, in pages: each deleted item takes its
    /// record.
    async fn journal(
        &mut self,
        state: &StateStore,
        pseudo: &Pseudonymizer,
        page: i64,
        v: &mut Verification,
    ) -> Result<(), StateError> {
        let mut after: Option<(String, String, String)> = None;
        loop {
            let rows =
                crate::state::journal::deleted_entity_items(state, after.as_ref(), page).await?;
            for (plan, ty, key) in &rows {
                let (p, shown) = (pseudo.entity_bytes(ty, key), pseudo.show_entity(ty, key));
                self.take(v, plan, false, p, shown);
            }
            match rows.into_iter().last() {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        let mut after: Option<(String, i64)> = None;
        loop {
            let rows =
                crate::state::journal::deleted_object_items(state, after.as_ref(), page).await?;
            for (plan, _, key) in &rows {
                let (p, shown) = (pseudo.object_bytes(key), pseudo.show_object(key));
                self.take(v, plan, true, p, shown);
            }
            match rows.into_iter().last() {
                Some((plan, item, _)) => after = Some((plan, item)),
                None => break,
            }
        }
        Ok(())
    }

    /// A journal item that says deleted takes one record of its plan and
    /// pseudonym.
    fn take(&mut self, v: &mut Verification, plan: &str, object: bool, p: [u8; 32], shown: String) {
        v.journal_deleted += 1;
        let key = (self.plans.of(plan), object, p);
        match self.audited.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.audited.remove(&key);
            }
            None => {
                v.unaudited += 1;
                if self.unaudited.len() < NAMED {
                    self.unaudited.push(format!(
                        "plan {plan}: the journal says {shown} was deleted, but no {} record names it",
                        if object { DELETE_OBJECT } else { DELETE_ENTITY }
                    ));
                }
            }
        }
    }

    /// What is left names no journal item (or names one twice).
    fn finish(mut self, v: &mut Verification) {
        let mut left: Vec<(&ItemKey, &u32)> = self.audited.iter().collect();
        left.sort();
        for ((plan, object, p), n) in left {
            v.unjournaled += u64::from(*n);
            if self.unaudited.len() < 2 * NAMED {
                let plan = &self.plans.ids[*plan as usize];
                let (action, kind) = if *object {
                    (DELETE_OBJECT, "object")
                } else {
                    (DELETE_ENTITY, "entity")
                };
                self.unaudited.push(format!(
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
        v.problems.append(&mut self.unaudited);
    }
}

/// The header line of the CSV export (`audit export --format csv`,
/// `GET /v1/audit/export?format=csv`).
pub const CSV_HEADER: &str = "seq,plan_id,policy,basis,action,entity_type,pseudonym,bytes,at,prev,hash,author,reason_chars,detail\n";

/// Records as CSV rows (to follow [`CSV_HEADER`]), every cell neutralised
/// against formula injection.
pub fn csv_rows(records: &[Record]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        let cells = [
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
            r.hash.clone(),
            r.author.clone().unwrap_or_default(),
            r.reason_chars.map(|n| n.to_string()).unwrap_or_default(),
            r.detail.clone().unwrap_or_default(),
        ];
        w.write_record(cells.iter().map(|c| csv_cell(c)))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Records as JSON lines, one record a line.
pub fn jsonl(records: &[Record]) -> anyhow::Result<String> {
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    Ok(lines)
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
            detail: None,
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
        let mut redacted = deletion();
        redacted.detail = Some("{}".into());
        assert_ne!(
            record_hash(&redacted),
            PINNED,
            "the detail is hashed when present"
        );
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
