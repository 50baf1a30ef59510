//! Fault injection, for tests (cargo feature `test-util`; `cargo test
//! --all-features` has it). Above the backends it wraps, so no backend
//! depends on another: wrappers around a technical store and a CRM
//! that fail the way real backends do — transient errors, an answer lost
//! after the delete happened, permanent refusals, listings that break
//! midway or come back empty. A rewrite (a redaction) meets the same faults
//! by key as a delete.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::config::EntityType;
use crate::crm::{BatchOutcome, CaseNow, Crm, CrmError, Decision, EntityRow, RecheckInput};
use crate::model::EntityKey;
use crate::store::{
    DeleteOutcome, Expected, Listed, ObjectMeta, RewriteOutcome, StoreError, StoreErrorKind,
    TechnicalStore,
};
use crate::verify::residual::IdentifierKind;

/// What goes wrong, by object key. `transient`, `lost_answer` and `refuse`
/// hold for a delete and a rewrite of the key alike.
#[derive(Debug, Default)]
pub struct StoreFaults {
    /// Transient failures before a delete (or rewrite) succeeds.
    pub transient: HashMap<String, u32>,
    /// The delete (or rewrite) happens, then the answer is lost (a
    /// timeout), once.
    pub lost_answer: HashSet<String>,
    /// Permanent refusals (a 403, a lock, a hold in the store), with reason.
    pub refuse: HashMap<String, String>,
    /// The listing breaks after this many entries.
    pub list_fails_after: Option<usize>,
    /// The listing succeeds and returns nothing.
    pub list_empty: bool,
    /// Delete calls seen, per key.
    pub delete_calls: HashMap<String, u32>,
    /// Batch the deletes, this many per `delete_many` (None: one by one).
    pub batch_size: Option<usize>,
    /// `delete_many` calls seen.
    pub delete_many_calls: u32,
    /// Rewrite calls seen, per key.
    pub rewrite_calls: HashMap<String, u32>,
}

pub struct FaultyStore {
    inner: Box<dyn TechnicalStore>,
    pub faults: Mutex<StoreFaults>,
}

impl FaultyStore {
    pub fn new(inner: Box<dyn TechnicalStore>) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::new(StoreFaults::default()),
        }
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, StoreFaults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn injected(kind: StoreErrorKind, what: &str) -> StoreError {
    injected_in("delete", kind, what)
}

fn injected_in(op: &'static str, kind: StoreErrorKind, what: &str) -> StoreError {
    StoreError::failed(op, kind, what.to_string())
}

#[async_trait]
impl TechnicalStore for FaultyStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        self.inner.check().await
    }

    async fn list(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError> {
        let (fails_after, empty) = {
            let f = self.faults();
            (f.list_fails_after, f.list_empty)
        };
        if empty {
            return Ok(0);
        }
        let mut n = 0usize;
        let mut broke = false;
        let count = self
            .inner
            .list(&mut |l| {
                if fails_after.is_some_and(|max| n >= max) {
                    broke = true;
                    return;
                }
                n += 1;
                sink(l);
            })
            .await?;
        if broke {
            return Err(StoreError::List {
                store: self.describe(),
                at: format!("entry {n}"),
                kind: StoreErrorKind::Transient,
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected: listing broke",
                ),
            });
        }
        Ok(count)
    }

    async fn read(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        self.inner.read(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError> {
        {
            let mut f = self.faults();
            *f.delete_calls.entry(key.to_string()).or_default() += 1;
            if let Some(reason) = f.refuse.get(key) {
                return Err(injected(StoreErrorKind::Permanent, reason));
            }
            if let Some(n) = f.transient.get_mut(key)
                && *n > 0
            {
                *n -= 1;
                return Err(injected(StoreErrorKind::Transient, "injected: transient"));
            }
        }
        let outcome = self.inner.delete(key).await?;
        if self.faults().lost_answer.remove(key) {
            return Err(injected(
                StoreErrorKind::Transient,
                "injected: answer lost after the delete",
            ));
        }
        Ok(outcome)
    }

    async fn rewrite(
        &self,
        key: &str,
        expected: &Expected,
        content: &std::path::Path,
    ) -> Result<RewriteOutcome, StoreError> {
        {
            let mut f = self.faults();
            *f.rewrite_calls.entry(key.to_string()).or_default() += 1;
            if let Some(reason) = f.refuse.get(key) {
                return Err(injected_in("rewrite", StoreErrorKind::Permanent, reason));
            }
            if let Some(n) = f.transient.get_mut(key)
                && *n > 0
            {
                *n -= 1;
                return Err(injected_in(
                    "rewrite",
                    StoreErrorKind::Transient,
                    "injected: transient",
                ));
            }
        }
        let outcome = self.inner.rewrite(key, expected, content).await?;
        if self.faults().lost_answer.remove(key) {
            return Err(injected_in(
                "rewrite",
                StoreErrorKind::Transient,
                "injected: answer lost after the rewrite",
            ));
        }
        Ok(outcome)
    }

    /// With `batch_size` set, the store batches like S3 or Azure: the keys
    /// without a fault go to the inner store in one `delete_many`, the
    /// faulted ones fail individually in the same answer.
    fn delete_batch_size(&self) -> usize {
        self.faults().batch_size.unwrap_or(1)
    }

    fn erasure_note(&self) -> Option<String> {
        self.inner.erasure_note()
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<Result<DeleteOutcome, StoreError>> {
        let mut out: Vec<Option<Result<DeleteOutcome, StoreError>>> =
            (0..keys.len()).map(|_| None).collect();
        let mut through = Vec::new();
        {
            let mut f = self.faults();
            f.delete_many_calls += 1;
            for (i, key) in keys.iter().enumerate() {
                *f.delete_calls.entry(key.clone()).or_default() += 1;
                if let Some(reason) = f.refuse.get(key) {
                    out[i] = Some(Err(injected(StoreErrorKind::Permanent, reason)));
                } else if let Some(n) = f.transient.get_mut(key)
                    && *n > 0
                {
                    *n -= 1;
                    out[i] = Some(Err(injected(
                        StoreErrorKind::Transient,
                        "injected: transient",
                    )));
                } else {
                    through.push(i);
                }
            }
        }
        let passed: Vec<String> = through.iter().map(|&i| keys[i].clone()).collect();
        let results = self.inner.delete_many(&passed).await;
        let mut f = self.faults();
        for (&i, r) in through.iter().zip(results) {
            out[i] = Some(match r {
                Ok(_) if f.lost_answer.remove(&keys[i]) => Err(injected(
                    StoreErrorKind::Transient,
                    "injected: answer lost after the delete",
                )),
                other => other,
            });
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(injected(StoreErrorKind::Transient, "no answer"))))
            .collect()
    }
}

/// What goes wrong in the CRM's deleting transaction.
#[derive(Debug, Default)]
pub struct CrmFaults {
    /// Transient failures (busy database) before a batch succeeds.
    pub transient: u32,
    /// Every deleting transaction fails permanently.
    pub refuse: bool,
    pub delete_calls: u32,
}

pub struct FaultyCrm {
    inner: Box<dyn Crm>,
    pub faults: Mutex<CrmFaults>,
}

impl FaultyCrm {
    pub fn new(inner: Box<dyn Crm>) -> Self {
        FaultyCrm {
            inner,
            faults: Mutex::new(CrmFaults::default()),
        }
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, CrmFaults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Crm for FaultyCrm {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<crate::crm::fit::Column>>, CrmError> {
        self.inner.columns(table).await
    }

    async fn tables(&self, near: &str) -> Result<Vec<String>, CrmError> {
        self.inner.tables(near).await
    }

    async fn probe_condition(
        &self,
        et: &EntityType,
        condition: &str,
    ) -> Result<Option<String>, CrmError> {
        self.inner.probe_condition(et, condition).await
    }

    async fn scan(
        &self,
        et: &EntityType,
        sink: &mut (dyn FnMut(EntityRow) + Send),
    ) -> Result<u64, CrmError> {
        self.inner.scan(et, sink).await
    }

    async fn matching(
        &self,
        et: &EntityType,
        condition: &str,
        sink: &mut (dyn FnMut(EntityKey) + Send),
    ) -> Result<(), CrmError> {
        self.inner.matching(et, condition, sink).await
    }

    async fn column_values(
        &self,
        et: &EntityType,
        column: &str,
        sink: &mut (dyn FnMut(EntityKey, String) + Send),
    ) -> Result<(), CrmError> {
        self.inner.column_values(et, column, sink).await
    }

    async fn existing(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<EntityKey>, CrmError> {
        self.inner.existing(et, keys).await
    }

    async fn identifier_values(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<(EntityKey, Vec<Option<String>>)>, CrmError> {
        self.inner.identifier_values(et, keys).await
    }

    async fn delete_cases(
        &self,
        input: &RecheckInput,
        decide: &(dyn for<'c> Fn(&'c CaseNow) -> Decision + Sync),
    ) -> Result<BatchOutcome, CrmError> {
        {
            let mut f = self.faults();
            f.delete_calls += 1;
            if f.refuse {
                return Err(CrmError::Transaction(sqlx::Error::Protocol(
                    "injected: permission denied for table".into(),
                )));
            }
            if f.transient > 0 {
                f.transient -= 1;
                return Err(CrmError::Transaction(sqlx::Error::PoolTimedOut));
            }
        }
        self.inner.delete_cases(input, decide).await
    }

    async fn find_by_identifier(
        &self,
        et: &EntityType,
        column: &str,
        kind: IdentifierKind,
        normalised: &str,
    ) -> Result<Vec<EntityKey>, CrmError> {
        self.inner
            .find_by_identifier(et, column, kind, normalised)
            .await
    }

    async fn subtrees(&self, input: &RecheckInput) -> Result<Vec<CaseNow>, CrmError> {
        self.inner.subtrees(input).await
    }

    async fn component(
        &self,
        input: &crate::crm::ComponentInput,
    ) -> Result<Vec<crate::crm::EntityNow>, CrmError> {
        self.inner.component(input).await
    }

    async fn export_rows(
        &self,
        et: &EntityType,
        keys: &[EntityKey],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, CrmError> {
        self.inner.export_rows(et, keys).await
    }

    async fn count(&self, et: &EntityType) -> Result<u64, CrmError> {
        self.inner.count(et).await
    }

    async fn after_apply(&self) -> Result<Vec<String>, CrmError> {
        self.inner.after_apply().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// A rewrite meets the faults of its key: a refusal, a transient error
    /// before it goes through, an answer lost after the new content is in
    /// place (asked again, it is done); every call is counted.
    #[tokio::test]
    async fn rewrites_meet_the_faults_of_their_key() {
        let inner = MemoryStore::default();
        for k in ["a.csv", "b.csv", "c.csv"] {
            inner.put(k, b"id\n1\n2\n".to_vec(), 1_700_000_000);
        }
        let store = FaultyStore::new(Box::new(inner));
        let expected = Expected {
            size: 7,
            modified: Some(1_700_000_000),
            etag: None,
        };
        let spool = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(spool.path(), b"id\n2\n").unwrap();
        {
            let mut f = store.faults();
            f.refuse.insert("a.csv".into(), "injected: refused".into());
            f.transient.insert("b.csv".into(), 1);
            f.lost_answer.insert("c.csv".into());
        }
        let refused = store.rewrite("a.csv", &expected, spool.path()).await;
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(StoreErrorKind::Permanent)
        );
        let flaky = store.rewrite("b.csv", &expected, spool.path()).await;
        assert_eq!(
            flaky.map_err(|e| e.kind()).err(),
            Some(StoreErrorKind::Transient)
        );
        assert!(matches!(
            store.rewrite("b.csv", &expected, spool.path()).await,
            Ok(RewriteOutcome::Rewritten(_))
        ));
        assert!(
            store
                .rewrite("c.csv", &expected, spool.path())
                .await
                .is_err()
        );
        assert!(matches!(
            store.rewrite("c.csv", &expected, spool.path()).await,
            Ok(RewriteOutcome::Rewritten(m)) if m.size == 5
        ));
        let f = store.faults();
        assert_eq!(f.rewrite_calls["a.csv"], 1);
        assert_eq!(f.rewrite_calls["b.csv"], 2);
        assert_eq!(f.rewrite_calls["c.csv"], 2);
        assert!(f.delete_calls.is_empty());
    }
}
