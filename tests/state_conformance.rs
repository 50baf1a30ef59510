//! One conformance suite for every state store backend: each case runs on
//! SQLite (a temp file) and on PostgreSQL (a fresh database next to the one
//! LETHE_TEST_POSTGRES_URL names; under CI=true a missing URL is a failure).
//! The whole pipeline on a PostgreSQL state store is compared with SQLite's
//! in `tests/conformance.rs`; this file holds what is the state store's own:
//! migrations, holds, the registered-link trigger, the audit chain under
//! concurrent appenders, and the apply workers' claims.

use std::time::Duration;

use lethe::audit::{self, NewRecord};
use lethe::state::workers::Items;
use lethe::state::{Dialect, HoldKind, StateStore};
#[allow(dead_code)] // uses two of the helpers
mod util;

/// The state stores under test: SQLite always, PostgreSQL when configured.
/// Each comes with a way to open it again (a second process would).
async fn stores(test: &str, tmp: &std::path::Path) -> Vec<(StateStore, Reopen)> {
    let path = tmp.join(format!("{test}.db"));
    let mut out = vec![(
        StateStore::open_sqlite(&path).await.unwrap(),
        Reopen::Sqlite(path),
    )];
    if let Some(admin) = util::postgres_url("the PostgreSQL state store") {
        let url = util::fresh_postgres_db(&admin, &format!("lethe_state_{test}")).await;
        out.push((
            StateStore::open_postgres(&url).await.unwrap(),
            Reopen::Postgres(url),
        ));
    }
    out
}

#[derive(Clone)]
enum Reopen {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Reopen {
    async fn open(&self) -> StateStore {
        match self {
            Reopen::Sqlite(p) => StateStore::open_sqlite(p).await.unwrap(),
            Reopen::Postgres(u) => StateStore::open_postgres(u).await.unwrap(),
        }
    }
}

fn pseudo() -> audit::pseudonym::Pseudonymizer {
    audit::pseudonym::Pseudonymizer::new(lethe::sensitive::Sensitive::new(
        b"state-conformance-key".to_vec(),
    ))
}

fn record(plan: &str, n: usize) -> NewRecord {
    NewRecord {
        plan_id: plan.to_string(),
        policy: Some("p".into()),
        basis: Some("test".into()),
        // Not a deletion: verify only chains it (no journal here).
        action: audit::HOLD_ADD,
        entity_type: Some("lead".into()),
        pseudonym: format!("pseudonym-{plan}-{n}"),
        bytes: None,
        author: Some(format!("appender {plan}")),
        reason_chars: Some(n as i64),
        detail: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_holds_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, again) in stores("migrate", tmp.path()).await {
        let d = state.dialect();
        let version = state.meta_get("schema_version").await.unwrap();
        // Opening a migrated store again changes nothing.
        let second = again.open().await;
        assert_eq!(second.meta_get("schema_version").await.unwrap(), version);
        assert_eq!(
            version.as_deref(),
            Some(lethe::state::schema::VERSION.to_string().as_str()),
            "{d:?}"
        );

        assert!(
            state
                .add_hold(HoldKind::Entity, "lead:7", "litigation", "dpo")
                .await
                .unwrap()
        );
        assert!(
            !second
                .add_hold(HoldKind::Entity, "lead:7", "again", "dpo")
                .await
                .unwrap()
        );
        state
            .add_hold(HoldKind::Prefix, "exports/2020/", "audit", "dpo")
            .await
            .unwrap();
        let holds = second.holds().await.unwrap();
        assert_eq!(holds.len(), 2, "{d:?}");
        assert_eq!(holds[0].target, "lead:7");
        assert_eq!(holds[0].reason, "litigation");
        assert!(state.remove_hold(HoldKind::Entity, "lead:7").await.unwrap());
        assert!(!state.remove_hold(HoldKind::Entity, "lead:7").await.unwrap());
        assert_eq!(second.holds().await.unwrap().len(), 1);

        state.meta_set("k", "v1").await.unwrap();
        second.meta_set("k", "v2").await.unwrap();
        assert_eq!(state.meta_get("k").await.unwrap().as_deref(), Some("v2"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_leaving_the_index_takes_its_registered_links() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, _) in stores("trigger", tmp.path()).await {
        let d = state.dialect();
        let pool = state.pool();
        for (key, n) in [("in/a.json", 1), ("in/b.json", 2)] {
            sqlx::query(
                "INSERT INTO objects(key, size, status, seen_run) VALUES ($1, $2, 'ok', 1)",
            )
            .bind(key)
            .bind(n as i64)
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO registered_links(key, entity_type, entity_key, registered_at)
                 VALUES ($1, 'lead', $2, 'now')",
            )
            .bind(key)
            .bind(n.to_string())
            .execute(pool)
            .await
            .unwrap();
        }
        sqlx::query("DELETE FROM objects WHERE key = $1")
            .bind("in/a.json")
            .execute(pool)
            .await
            .unwrap();
        let left: Vec<String> = sqlx::query_scalar("SELECT key FROM registered_links ORDER BY key")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(left, vec!["in/b.json".to_string()], "{d:?}");
        // Keys order byte by byte on both (PostgreSQL columns are COLLATE "C").
        for key in ["in/B.json", "in/_.json", "in/ä.json"] {
            sqlx::query("INSERT INTO objects(key, size, status, seen_run) VALUES ($1, 0, 'ok', 1)")
                .bind(key)
                .execute(pool)
                .await
                .unwrap();
        }
        let order: Vec<String> = sqlx::query_scalar("SELECT key FROM objects ORDER BY key")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(
            order,
            ["in/B.json", "in/_.json", "in/b.json", "in/ä.json"],
            "{d:?}"
        );
    }
}

/// The index as the incremental run reads it back: every object with its
/// size, date and etag, in pages, whatever its key holds (quotes, escapes,
/// control and non-ASCII characters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_reads_back_exactly_in_pages() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, _) in stores("indexpages", tmp.path()).await {
        let d = state.dialect();
        let mut expected = std::collections::HashMap::new();
        for i in 0..23i64 {
            let key = match i % 4 {
                0 => format!("leads/{i}.json"),
                1 => format!("a \"quoted\" \\ key\t{i}"),
                2 => format!("Gr\u{fc}\u{df}e/\u{1F600}-{i}\u{1}.xml"),
                _ => format!("x/{i}"),
            };
            let (size, modified, etag) = match i % 3 {
                0 => (i64::MAX - i, None, None),
                1 => (i, Some(1_700_000_000 + i), Some(format!("etag-{i}"))),
                _ => (0, Some(-i), Some(String::new())),
            };
            sqlx::query(
                "INSERT INTO objects(key, size, modified, etag, status, error, seen_run) VALUES ($1, $2, $3, $4, 'ok', NULL, 1)",
            )
            .bind(key.clone())
            .bind(size)
            .bind(modified)
            .bind(etag.clone())
            .execute(state.pool())
            .await
            .unwrap();
            expected.insert(key, (size as u64, modified, etag));
        }
        for page in [1, 5, 23, 100] {
            let got = state.indexed_objects_paged(page).await.unwrap();
            let got: std::collections::HashMap<_, _> = got
                .into_iter()
                .map(|(k, o)| (k, (o.size, o.modified, o.etag)))
                .collect();
            assert_eq!(got, expected, "{d:?}, pages of {page}");
        }
        assert_eq!(state.indexed_objects().await.unwrap().len(), 23);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_keep_one_audit_chain() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, again) in stores("audit", tmp.path()).await {
        let d = state.dialect();
        // Eight appenders, each with its own store (as separate processes
        // would have), each appending 25 transactions of 4 records.
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = again.open().await;
            tasks.push(tokio::spawn(async move {
                for t in 0..25 {
                    let mut tx = s.begin_write().await.unwrap();
                    let recs = (0..4)
                        .map(|i| record(&format!("plan{w}"), t * 4 + i))
                        .collect();
                    audit::append(&mut tx, recs).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = audit::verify(&state, &pseudo()).await.unwrap();
        assert!(v.problems.is_empty(), "{d:?}: {:?}", v.problems);
        assert_eq!(v.records, 8 * 25 * 4, "{d:?}");

        // Tampering shows.
        sqlx::query("UPDATE audit SET pseudonym = 'edited' WHERE seq = 17")
            .execute(state.pool())
            .await
            .unwrap();
        let v = audit::verify(&state, &pseudo()).await.unwrap();
        assert!(
            v.problems.iter().any(|p| p.contains("record 17")),
            "{d:?}: {:?}",
            v.problems
        );
    }
}

/// Writes a plan with `n` cases straight into the journal.
async fn journal_plan(state: &StateStore, plan: &str, n: i64) {
    sqlx::query(
        "INSERT INTO plans(id, created_at, as_of, config_hash, digest, summary, status)
         VALUES ($1, 'now', 0, 'h', 'd', '{}', 'applying')",
    )
    .bind(plan)
    .execute(state.pool())
    .await
    .unwrap();
    for i in 0..n {
        sqlx::query(
            "INSERT INTO plan_cases(plan_id, case_id, policy, root_type, root_key, root_kind, status)
             VALUES ($1, $2, 'p', 'lead', $3, 'int', 'planned')",
        )
        .bind(plan)
        .bind(i)
        .bind(i.to_string())
        .execute(state.pool())
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_exclusive_and_a_dead_workers_claims_are_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, again) in stores("claims", tmp.path()).await {
        let d = state.dialect();
        journal_plan(&state, "P1", 30).await;
        let timeout = Duration::from_secs(1);
        let w1 = state.start_worker("P1", timeout).await.unwrap();
        let first = w1.claim(Items::Cases, 10).await.unwrap();
        assert_eq!(first, (0..10).collect::<Vec<_>>(), "{d:?}");

        let other = again.open().await;
        let w2 = other.start_worker("P1", timeout).await.unwrap();
        let second = w2.claim(Items::Cases, 10).await.unwrap();
        match d {
            // A live worker's claims are its own.
            Dialect::Postgres => {
                assert_eq!(second, (10..20).collect::<Vec<_>>());
                assert_eq!(w2.open_elsewhere(Items::Cases).await.unwrap(), 20);
            }
            // SQLite admits one worker (the apply lock): any other is dead.
            Dialect::Sqlite => assert_eq!(second, (0..10).collect::<Vec<_>>()),
        }
        // Concurrent claims on PostgreSQL never overlap.
        if d == Dialect::Postgres {
            let (a, b) = tokio::join!(w1.claim(Items::Cases, 5), w2.claim(Items::Cases, 5));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.len() + b.len(), 10);
            assert!(a.iter().all(|i| !b.contains(i)), "{a:?} {b:?}");

            // w1 dies (no more heartbeats); after the timeout w2 takes over
            // what it held, and w1 no longer owns it.
            let held_by_w1: Vec<i64> = sqlx::query_scalar(
                "SELECT case_id FROM plan_cases WHERE claimed_by = $1 ORDER BY case_id",
            )
            .bind(&w1.id)
            .fetch_all(state.pool())
            .await
            .unwrap();
            assert_eq!(held_by_w1.len(), 10 + a.len());
            let w1_id = w1.id.clone();
            drop(w1);
            tokio::time::sleep(timeout + Duration::from_millis(600)).await;
            let taken = w2.claim(Items::Cases, 100).await.unwrap();
            for i in &held_by_w1 {
                assert!(
                    taken.contains(i),
                    "case {i} of the dead worker not taken over"
                );
            }
            let still: i64 =
                sqlx::query_scalar("SELECT count(*) FROM plan_cases WHERE claimed_by = $1")
                    .bind(&w1_id)
                    .fetch_one(state.pool())
                    .await
                    .unwrap();
            assert_eq!(still, 0);
            let mut tx = state.pool().begin().await.unwrap();
            let mine = w2
                .still_mine(&mut tx, Items::Cases, &held_by_w1)
                .await
                .unwrap();
            assert_eq!(mine.len(), held_by_w1.len());
            tx.commit().await.unwrap();
        }
        // Finished items are never claimed again.
        sqlx::query("UPDATE plan_cases SET status = 'done' WHERE plan_id = 'P1'")
            .execute(state.pool())
            .await
            .unwrap();
        assert!(w2.claim(Items::Cases, 100).await.unwrap().is_empty());
        w2.finish().await.unwrap();
    }
}

/// A batch claimed ahead and given back unstarted (apply stopping) returns
/// to what it was: fresh cases to `planned`, cases a crashed run had
/// started stay `executing` (the next run must know they may be gone by
/// our hand); nobody holds them, and the next claim takes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_claims_return_to_what_they_were() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, _) in stores("release", tmp.path()).await {
        let d = state.dialect();
        journal_plan(&state, "P1", 12).await;
        // Cases 3 and 4 were started by a worker that died.
        sqlx::query(
            "UPDATE plan_cases SET status = 'executing', claimed_by = 'dead-worker', attempts = 1
             WHERE case_id IN (3, 4)",
        )
        .execute(state.pool())
        .await
        .unwrap();
        let w = state
            .start_worker("P1", Duration::from_secs(60))
            .await
            .unwrap();
        let rows = w
            .claim_rows::<(i64, String, String, String, String, String)>(
                Items::Cases,
                8,
                "policy, root_type, root_key, root_kind, status",
                true,
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 8, "{d:?}");
        let (resumed, fresh): (Vec<i64>, Vec<i64>) = {
            let (r, f): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.5 == "executing");
            (
                r.iter().map(|r| r.0).collect(),
                f.iter().map(|r| r.0).collect(),
            )
        };
        assert_eq!(resumed, vec![3, 4], "{d:?}");
        let status = |state: &StateStore| {
            let pool = state.pool().clone();
            async move {
                sqlx::query_as::<_, (i64, String, Option<String>, i64)>(
                    "SELECT case_id, status, claimed_by, attempts FROM plan_cases ORDER BY case_id",
                )
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        };
        let claimed = status(&state).await;
        assert!(
            claimed[..8]
                .iter()
                .all(|(_, s, by, _)| s == "executing" && by.as_deref() == Some(w.id.as_str())),
            "{d:?}: {claimed:?}"
        );

        w.release(Items::Cases, &fresh, &resumed).await.unwrap();
        let after = status(&state).await;
        for (id, s, by, attempts) in &after {
            assert_eq!(by, &None, "{d:?}: case {id} still held");
            if [3, 4].contains(id) {
                assert_eq!(
                    (s.as_str(), *attempts),
                    ("executing", 1),
                    "{d:?}: case {id}"
                );
            } else {
                assert_eq!((s.as_str(), *attempts), ("planned", 0), "{d:?}: case {id}");
            }
        }
        // Giving back what another worker holds changes nothing.
        sqlx::query("UPDATE plan_cases SET claimed_by = 'someone-else', status = 'executing' WHERE case_id = 0")
            .execute(state.pool())
            .await
            .unwrap();
        w.release(Items::Cases, &[0], &[]).await.unwrap();
        let zero = &status(&state).await[0];
        assert_eq!(zero.2.as_deref(), Some("someone-else"), "{d:?}");
        sqlx::query(
            "UPDATE plan_cases SET claimed_by = NULL, status = 'planned' WHERE case_id = 0",
        )
        .execute(state.pool())
        .await
        .unwrap();
        // The next claim takes them again, the resumed ones still resumed.
        let again = w
            .claim_rows::<(i64, String, String, String, String, String)>(
                Items::Cases,
                100,
                "policy, root_type, root_key, root_kind, status",
                true,
            )
            .await
            .unwrap();
        assert_eq!(again.len(), 12, "{d:?}");
        let resumed_again: Vec<i64> = again
            .iter()
            .filter(|r| r.5 == "executing")
            .map(|r| r.0)
            .collect();
        assert_eq!(resumed_again, vec![3, 4], "{d:?}");
        w.finish().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_planner_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, again) in stores("planner", tmp.path()).await {
        let held = state.lock_plan(false).await.unwrap();
        let other = again.open().await;
        match state.dialect() {
            Dialect::Postgres => {
                let err = other
                    .lock_plan(false)
                    .await
                    .err()
                    .expect("a second planner");
                assert!(err.to_string().contains("planning"), "{err}");
                drop(held);
                // Released with its connection.
                let mut got = None;
                for _ in 0..50 {
                    if let Ok(l) = other.lock_plan(false).await {
                        got = Some(l);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert!(got.is_some(), "the planner lock was not released");
            }
            _ => {
                // SQLite plans in one write transaction; no lock to take.
                assert!(other.lock_plan(false).await.is_ok());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_connections_carry_the_safety_and_durability_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateStore::open_sqlite(&tmp.path().join("s.db"))
        .await
        .unwrap();
    // Every pooled connection, not only the first.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(state.pool().acquire().await.unwrap());
    }
    for c in conns.iter_mut() {
        for (pragma, want) in [
            ("journal_mode", "wal"),
            ("synchronous", "1"),
            ("secure_delete", "1"),
            ("foreign_keys", "1"),
            ("busy_timeout", "30000"),
        ] {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&mut **c)
                .await
                .unwrap();
            use sqlx::Row;
            let got = row
                .try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|i| i.to_string()))
                .unwrap();
            assert_eq!(got, want, "PRAGMA {pragma}");
        }
    }
}

/// An apply stages the identifiers it erases and moves them in one sorted
/// step (`state::erased::flush`); every reader must see the confirmed ones
/// whether or not that step ran (a crashed apply, a standalone verify), and
/// never a pending one, nor lose another plan's pending rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_identifiers_are_read_once_confirmed_and_moved_once() {
    use lethe::state::erased::{self, ErasedIdentifier};
    let tmp = tempfile::tempdir().unwrap();
    for (state, again) in stores("staged", tmp.path()).await {
        let d = state.dialect();
        let id = |h: &str, e: &str| ErasedIdentifier {
            hash: format!("{h:0>64}"),
            kind: "email".into(),
            entity: e.into(),
            len: Some(7),
        };
        let hashes = |rows: Vec<ErasedIdentifier>| -> Vec<String> {
            rows.into_iter().map(|r| r.hash).collect()
        };
        let at = "2026-12-07T00:00:00Z";
        // Plan p1: cases 1 and 2 read before their deletes; the same value
        // twice for one entity (a resumed batch).
        erased::record_pending(
            &state,
            "p1",
            at,
            &[
                (1, id("a", "e1")),
                (1, id("b", "e1")),
                (1, id("a", "e1")),
                (2, id("c", "e2")),
            ],
        )
        .await
        .unwrap();
        // Plan p2 has a pending row of its own.
        erased::record_pending(&state, "p2", at, &[(7, id("f", "e7"))])
            .await
            .unwrap();
        // Pending rows are nobody's erasure yet.
        assert!(
            erased::of_plan(&state, "p1", None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{d:?}"
        );
        let all: Vec<String> = ["a", "c", "f"]
            .iter()
            .map(|h| format!("{h:0>64}"))
            .collect();
        assert!(
            erased::suppressed(&state, &all).await.unwrap().is_empty(),
            "{d:?}"
        );
        // The journal step: case 1 deleted (and a row recorded as erased at
        // once), case 2 skipped.
        let mut tx = state.begin_write().await.unwrap();
        erased::record(&mut tx, "p1", at, &[id("d", "e1")])
            .await
            .unwrap();
        erased::confirm(&mut tx, "p1", &[1]).await.unwrap();
        erased::drop_pending(&mut tx, "p1", &[2]).await.unwrap();
        tx.commit().await.unwrap();
        // A reader of another process (a standalone verify after a crash)
        // sees the confirmed rows without the apply's flush, once each.
        let reader = again.open().await;
        let rows = hashes(erased::of_plan(&reader, "p1", None, 10).await.unwrap());
        let want: Vec<String> = ["a", "b", "d"]
            .iter()
            .map(|h| format!("{h:0>64}"))
            .collect();
        assert_eq!(rows, want, "{d:?}");
        // The flush moved p1's rows and left p2's pending row staged.
        let staged: Vec<(String, i64)> =
            sqlx::query_as("SELECT plan_id, pending FROM erased_staged ORDER BY plan_id")
                .fetch_all(state.pool())
                .await
                .unwrap();
        assert_eq!(staged, vec![("p2".to_string(), 1)], "{d:?}");
        assert_eq!(erased::flush(&state, Some("p1")).await.unwrap(), 0, "{d:?}");
        // p2's case is confirmed later; the suppression list reads it.
        let mut tx = state.begin_write().await.unwrap();
        erased::confirm(&mut tx, "p2", &[7]).await.unwrap();
        tx.commit().await.unwrap();
        let on = erased::suppressed(&state, &all).await.unwrap();
        let mut on: Vec<String> = on.into_iter().collect();
        on.sort();
        assert_eq!(on, vec![all[0].clone(), all[2].clone()], "{d:?}");
        // Lifting takes a staged confirmed row too (recorded after the
        // last flush).
        erased::record_pending(&state, "p3", at, &[(9, id("g", "e9"))])
            .await
            .unwrap();
        let mut tx = state.begin_write().await.unwrap();
        erased::confirm(&mut tx, "p3", &[9]).await.unwrap();
        let lifted = erased::lift(&mut tx, &format!("{:0>64}", "g"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(lifted, 1, "{d:?}");
        assert!(
            erased::of_plan(&state, "p3", None, 10)
                .await
                .unwrap()
                .is_empty(),
            "{d:?}"
        );
    }
}
