//! Faults survived: the real pipeline (SQLite CRM, folder store, SQLite
//! state) with a fault-injecting wrapper around the store and the CRM.

use std::path::PathBuf;

use lethe::apply::{self, ApplyOptions};
use lethe::config::Config;
use lethe::crm::sqlite::SqliteCrm;
use lethe::index;
use lethe::plan;
use lethe::state::{StateError, StateStore};
use lethe::store::folder::FolderStore;
use lethe::testing::{FaultyCrm, FaultyStore};

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: Config,
    state: StateStore,
    crm: FaultyCrm,
    store: FaultyStore,
}

const NOW: i64 = 1_790_000_000; // 2026-09-21

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    lethe::demo::generate(
        &dir.join("crm.db"),
        &dir.join("technical"),
        400,
        7,
        NOW,
        true,
    )
    .await
    .unwrap();
    let mut text = lethe::demo::config_text("faults-test-audit-key-0001");
    text.push_str("\n[apply]\nmax_attempts = 4\nbackoff = \"1ms\"\nmax_backoff = \"5ms\"\n");
    std::fs::write(dir.join("lethe.toml"), text).unwrap();
    let config = lethe::config::load(&dir.join("lethe.toml")).unwrap_or_else(|e| panic!("{e}"));
    let state = StateStore::open(&config).await.unwrap();
    let crm = FaultyCrm::new(Box::new(
        SqliteCrm::open(&dir.join("crm.db"), false).await.unwrap(),
    ));
    let store = FaultyStore::new(Box::new(FolderStore::open(&dir.join("technical")).unwrap()));
    World {
        _tmp: tmp,
        dir,
        config,
        state,
        crm,
        store,
    }
}

impl World {
    async fn index(&self) -> Result<index::IndexSummary, index::IndexError> {
        index::run(&self.config, &self.store, &self.state, None, &|_, _| {}).await
    }

    async fn plan(&self) -> plan::PlanSummary {
        let as_of = jiff::Timestamp::from_second(NOW).unwrap();
        plan::make_plan(&self.config, &self.crm, &self.state, as_of, &|_, _| {})
            .await
            .unwrap()
    }

    async fn apply(&self) -> Result<apply::ApplyReport, apply::ApplyError> {
        apply::apply(
            &self.config,
            &self.crm,
            &self.store,
            &self.state,
            None,
            &ApplyOptions::default(),
            &|_, _, _| {},
        )
        .await
    }

    async fn planned_objects(&self, like: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT key FROM plan_objects WHERE key LIKE ? ORDER BY item")
            .bind(like)
            .fetch_all(self.state.pool())
            .await
            .unwrap()
    }

    async fn audit_count(&self, pseudonym: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM audit WHERE pseudonym = ?")
            .bind(pseudonym)
            .fetch_one(self.state.pool())
            .await
            .unwrap()
    }

    fn exists(&self, key: &str) -> bool {
        self.dir.join("technical").join(key).exists()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_lost_and_refused_deletes() {
    let w = world().await;
    w.index().await.unwrap();
    w.plan().await;
    let keys = w.planned_objects("inbound/%").await;
    assert!(keys.len() >= 3, "{keys:?}");
    let (flaky, lost, refused) = (keys[0].clone(), keys[1].clone(), keys[2].clone());
    {
        let mut f = w.store.faults();
        f.transient.insert(flaky.clone(), 2);
        f.lost_answer.insert(lost.clone());
        f.refuse.insert(refused.clone(), "403 Forbidden".into());
    }
    let report = w.apply().await.unwrap();
    // Transient: retried until it went.
    assert!(!w.exists(&flaky));
    assert_eq!(w.store.faults().delete_calls[&flaky], 3);
    // Lost answer: retried, found gone, counted deleted, audited once.
    assert!(!w.exists(&lost));
    let pseudo = lethe::audit::pseudonym::Pseudonymizer::new(w.config.audit_key.clone());
    assert_eq!(w.audit_count(&pseudo.object(&lost)).await, 1);
    // Refused: failed with its reason, named by pseudonym only; not retried.
    assert!(w.exists(&refused));
    assert_eq!(w.store.faults().delete_calls[&refused], 1);
    assert_eq!(report.objects_failed, 1);
    assert!(report.failed());
    let (who, why) = &report.failures[0];
    assert_eq!(who, &pseudo.show_object(&refused));
    assert!(why.contains("403 Forbidden"), "{why}");
    assert!(!who.contains("inbound"), "a failure names no key: {who}");

    // A re-run retries what failed, and only that.
    w.store.faults().refuse.clear();
    let again = w.apply().await.unwrap();
    assert!(!again.failed(), "{again:?}");
    assert_eq!(again.objects_deleted, 1);
    assert!(!w.exists(&refused));
    let v = lethe::audit::verify(
        &w.state,
        &lethe::audit::pseudonym::Pseudonymizer::new(w.config.audit_key.clone()),
    )
    .await
    .unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_failed_batch_delete_fails_exactly_its_failed_keys() {
    let w = world().await;
    w.index().await.unwrap();
    let planned = w.plan().await;
    let keys = w.planned_objects("inbound/%").await;
    assert!(keys.len() >= 10, "{keys:?}");
    let (flaky, lost, refused) = (keys[1].clone(), keys[4].clone(), keys[7].clone());
    {
        let mut f = w.store.faults();
        // Like S3 or Azure: 7 keys per request, faults per key in the answer.
        f.batch_size = Some(7);
        f.transient.insert(flaky.clone(), 2);
        f.lost_answer.insert(lost.clone());
        f.refuse.insert(refused.clone(), "403 Forbidden".into());
    }
    let report = w.apply().await.unwrap();
    let total = planned.objects.delete + planned.objects.orphan_delete;
    // Exactly the refused key failed; its batch-mates went.
    assert_eq!(report.objects_failed, 1, "{report:?}");
    assert_eq!(report.objects_deleted, total - 1);
    assert!(w.exists(&refused));
    for k in keys.iter().filter(|k| **k != refused) {
        assert!(!w.exists(k), "{k} left behind");
    }
    let pseudo = lethe::audit::pseudonym::Pseudonymizer::new(w.config.audit_key.clone());
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].0, pseudo.show_object(&refused));
    // The transient key was retried (in a smaller batch) until it went; the
    // lost answer was retried, found gone and counted ours, audited once.
    assert_eq!(w.store.faults().delete_calls[&flaky], 3);
    assert_eq!(w.audit_count(&pseudo.object(&lost)).await, 1);
    // Batches, not one request per key.
    let calls = w.store.faults().delete_many_calls as u64;
    assert!(calls < total / 3, "{calls} requests for {total} objects");

    w.store.faults().refuse.clear();
    let again = w.apply().await.unwrap();
    assert_eq!((again.objects_deleted, again.objects_failed), (1, 0));
    assert!(!w.exists(&refused));
    let v = lethe::audit::verify(
        &w.state,
        &lethe::audit::pseudonym::Pseudonymizer::new(w.config.audit_key.clone()),
    )
    .await
    .unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_faults_retry_or_fail_the_batch() {
    let w = world().await;
    w.index().await.unwrap();
    let planned = w.plan().await;
    assert!(planned.cases > 10);
    // Busy twice: retried, then the batch goes through.
    w.crm.faults().transient = 2;
    w.crm.faults().refuse = false;
    let report = w.apply().await.unwrap();
    assert!(!report.failed(), "{report:?}");
    assert_eq!(report.cases_done, planned.cases);
    assert_eq!(w.crm.faults().delete_calls, 3);

    // A permanent refusal fails every case of the batch, names each by
    // pseudonym, and deletes none of their objects.
    let w = world().await;
    w.index().await.unwrap();
    let planned = w.plan().await;
    w.crm.faults().refuse = true;
    let report = w.apply().await.unwrap();
    assert_eq!(report.cases_failed, planned.cases);
    assert_eq!(
        report.objects_deleted, planned.objects.orphan_delete,
        "only orphans go"
    );
    assert!(report.failures.iter().all(|(who, _)| who.contains(":~")));
    // Their objects could not be judged: failed too (the shared ones whose
    // records would go as well), retried with them.
    assert!(planned.objects.redact > 0, "the demo's exports are shared");
    assert_eq!(
        report.objects_failed,
        planned.objects.delete + planned.objects.redact
    );
    assert_eq!(report.objects_redacted, 0);
    w.crm.faults().refuse = false;
    let again = w.apply().await.unwrap();
    assert_eq!(again.cases_done, planned.cases);
    assert_eq!(
        again.objects_deleted, planned.objects.delete,
        "no payload of a deleted case left behind"
    );
    assert_eq!(again.objects_redacted, planned.objects.redact);
    assert!(!again.failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_that_break_or_come_back_empty_plan_nothing_from_them() {
    let w = world().await;
    let first = w.index().await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM objects")
            .fetch_one(w.state.pool())
            .await
            .unwrap()
    };
    let before = count().await;
    assert_eq!(before as u64, first.objects_seen);
    w.store.faults().list_fails_after = Some(10);
    let err = w.index().await.unwrap_err();
    assert!(err.to_string().contains("listing"), "{err}");
    assert_eq!(count().await, before, "a broken listing changes nothing");
    w.store.faults().list_fails_after = None;

    let clear = w.plan().await;
    assert!(clear.brake.is_empty(), "{:?}", clear.brake);
    // An empty listing empties the index, but the next plan refuses.
    w.store.faults().list_empty = true;
    w.index().await.unwrap();
    let braked = w.plan().await;
    assert!(
        braked
            .brake
            .iter()
            .any(|b| b.contains("sees no technical objects")),
        "{:?}",
        braked.brake
    );
    assert!(matches!(
        w.apply().await,
        Err(apply::ApplyError::MassDelete { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_at_a_time() {
    let w = world().await;
    w.index().await.unwrap();
    w.plan().await;
    let held = w.state.lock_apply(false).unwrap();
    let second = w.apply().await;
    assert!(
        matches!(
            second,
            Err(apply::ApplyError::State(StateError::Locked { .. }))
        ),
        "{second:?}"
    );
    drop(held);
    assert!(w.apply().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_relinked_to_a_kept_entity_since_the_plan_is_skipped() {
    let w = world().await;
    w.index().await.unwrap();
    w.plan().await;
    let quotes = w.planned_objects("quotes/%").await;
    let target = quotes.first().expect("a quote file in the plan").clone();
    // A quote that stays (not in the plan).
    let crm = SqliteCrm::open(&w.dir.join("crm.db"), false).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM quotes ORDER BY id")
        .fetch_all(crm.pool())
        .await
        .unwrap();
    let planned: Vec<String> =
        sqlx::query_scalar("SELECT entity_key FROM plan_entities WHERE entity_type = 'quote'")
            .fetch_all(w.state.pool())
            .await
            .unwrap();
    let kept = ids
        .into_iter()
        .find(|q| !planned.contains(&q.to_string()))
        .expect("a kept quote");
    let path = w.dir.join("technical").join(&target);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("<cbc:ID>").unwrap() + 8;
    let end = text[start..].find('<').unwrap() + start;
    std::fs::write(&path, format!("{}{kept}{} ", &text[..start], &text[end..])).unwrap();
    w.index().await.unwrap();
    let report = w.apply().await.unwrap();
    assert!(w.exists(&target), "the relinked file must stay");
    assert!(
        report
            .skipped_reasons
            .keys()
            .any(|r| r.contains("links changed")),
        "{:?}",
        report.skipped_reasons
    );
}
