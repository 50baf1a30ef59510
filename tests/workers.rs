//! Scale-out: three `lethe apply` processes share one plan in a PostgreSQL
//! state store, and one of them is killed (SIGKILL) while it holds claimed
//! cases in `executing`. The other two take its claims over once its
//! heartbeat is stale, finish the plan, and the outcome is exactly that of
//! one worker on a SQLite state store applying a copy of the same plan
//! input: the same CRM rows and files remain, every deleted item has
//! exactly one audit record, and the audit chain verifies.
//!
//! Needs LETHE_TEST_POSTGRES_URL (a failure under CI=true). The kill needs
//! the `failpoints` feature (each batch sleeps at its intent point, so that
//! it lands inside a batch); without it the three workers only share the
//! plan, and the same checks run.

#[allow(dead_code)] // uses a few of the helpers
mod util;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sqlx::Executor;
use util::{fresh_postgres_db, lethe_command, list_files, postgres_url, run_in, sqlite};

/// Small batches, so that the plan takes many claims; a short worker
/// timeout, so that the takeover happens within the test.
fn tune(dir: &Path, state_url: Option<&str>) {
    let path = dir.join("lethe.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    if let Some(url) = state_url {
        text = text.replace(
            "url = \"sqlite://lethe-state.db\"",
            &format!("url = \"{url}\""),
        );
        assert!(text.contains(url));
    }
    text.push_str(
        "\n[apply]\nbatch_cases = 20\nbatch_objects = 40\nworker_timeout = \"2s\"\nbackoff = \"50ms\"\n",
    );
    std::fs::write(&path, text).unwrap();
}

fn crm_rows(dir: &Path) -> String {
    let db = dir.join("crm.db");
    ["leads", "opportunities", "quotes", "contracts"]
        .iter()
        .map(|t| {
            sqlite(
                &db,
                &format!("SELECT group_concat(id) FROM (SELECT id FROM {t} ORDER BY id)"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn spawn_apply(dir: &Path) -> Child {
    lethe_command(dir)
        .args(["--format", "json", "apply", "--allow-mass-delete"])
        .env(
            "FAILPOINTS",
            "apply::case-intent=sleep(60);apply::object-intent=sleep(60)",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_killed_execute_every_item_exactly_once() {
    let Some(admin) = postgres_url("scale-out") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single");
    let shared = tmp.path().join("shared");
    run_in(
        tmp.path(),
        &[
            "demo",
            "--dir",
            "single",
            "--leads",
            "1200",
            "--generate-only",
        ],
    )
    .ok();
    util::copy_tree(&single, &shared);
    let state_url = fresh_postgres_db(&admin, "lethe_workers").await;
    tune(&single, None);
    tune(&shared, Some(&state_url));

    // The reference: one worker, SQLite state.
    run_in(&single, &["index"]).ok();
    run_in(&single, &["plan"]).ok();
    run_in(&single, &["apply", "--allow-mass-delete"]).ok();

    // The same input, three workers on a PostgreSQL state store.
    run_in(&shared, &["index"]).ok();
    run_in(&shared, &["plan"]).ok();
    let state = sqlx::AnyPool::connect(&state_url).await.unwrap();
    let cases: i64 = sqlx::query_scalar("SELECT count(*) FROM plan_cases")
        .fetch_one(&state)
        .await
        .unwrap();
    assert!(cases > 100, "the plan is too small to share: {cases} cases");

    let mut workers: Vec<Child> = (0..3).map(|_| spawn_apply(&shared)).collect();
    // Without failpoints the batches are too fast to kill one inside
    // reliably: then the three workers only share the plan.
    let kill = cfg!(feature = "failpoints");
    // Kill the first worker while it holds cases it marked `executing`.
    let victim = format!("-{}-", workers[0].id());
    let deadline = Instant::now() + Duration::from_secs(60);
    if kill {
        loop {
            let holding: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM plan_cases WHERE status = 'executing' AND claimed_by LIKE $1",
            )
            .bind(format!("%{victim}%"))
            .fetch_one(&state)
            .await
            .unwrap();
            if holding > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the first worker never held a case"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        workers[0].kill().unwrap();
        let killed = workers.remove(0).wait_with_output().unwrap();
        assert!(!killed.status.success());
    }

    let mut reports = Vec::new();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "a surviving worker failed ({:?}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        reports.push(stdout);
    }

    // The dead worker's claims were taken over: some case was marked
    // `executing` twice.
    let taken_over: i64 = sqlx::query_scalar("SELECT count(*) FROM plan_cases WHERE attempts >= 2")
        .fetch_one(&state)
        .await
        .unwrap();
    assert!(
        !kill || taken_over > 0,
        "no claim of the killed worker was taken over"
    );
    // Every item reached a final state; the plan is applied.
    for table in ["plan_cases", "plan_objects"] {
        let open: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE status IN ('planned', 'executing', 'failed')"
        )))
        .fetch_one(&state)
        .await
        .unwrap();
        assert_eq!(open, 0, "{table} has unfinished items");
    }
    let status: String = sqlx::query_scalar("SELECT status FROM plans")
        .fetch_one(&state)
        .await
        .unwrap();
    assert_eq!(status, "applied");
    // Exactly once: one audit record per deleted or redacted item, none
    // twice.
    let (records, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT pseudonym) FROM audit")
            .fetch_one(&state)
            .await
            .unwrap();
    let deleted: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM plan_entities WHERE status = 'deleted')
              + (SELECT count(*) FROM plan_objects WHERE status = 'deleted')",
    )
    .fetch_one(&state)
    .await
    .unwrap();
    let redacted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM plan_objects WHERE status = 'redacted'")
            .fetch_one(&state)
            .await
            .unwrap();
    assert_eq!(records, distinct, "an item was audited twice");
    assert_eq!(
        records,
        deleted + redacted,
        "the audit and the journal disagree"
    );
    run_in(&shared, &["audit", "verify"]).ok();
    // Verify on the PostgreSQL state, in pages of 7 (keyset pages on
    // PostgreSQL's collation): it asks for exactly what was deleted.
    let plan_id: String = sqlx::query_scalar("SELECT id FROM plans")
        .fetch_one(&state)
        .await
        .unwrap();
    let config = lethe::config::load(&shared.join("lethe.toml")).unwrap();
    let crm = lethe::crm::connect(&config).await.unwrap();
    let store = lethe::store::open(&config).unwrap();
    let state_store = lethe::state::StateStore::open(&config).await.unwrap();
    let verified = lethe::verify::verify_paged(
        &config,
        crm.as_ref(),
        store.as_ref(),
        &state_store,
        &plan_id,
        7,
    )
    .await
    .unwrap();
    assert!(verified.ok(), "{verified:?}");
    assert_eq!(
        (verified.entities_checked + verified.objects_checked) as i64,
        deleted,
        "{verified:?}"
    );

    // And the result is the single worker's.
    assert_eq!(crm_rows(&shared), crm_rows(&single), "the CRMs differ");
    assert_eq!(
        list_files(&shared.join("technical")),
        list_files(&single.join("technical")),
        "the technical stores differ"
    );
    let single_audit: i64 = sqlite(&single.join("lethe-state.db"), "SELECT count(*) FROM audit")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(records, single_audit);
    state.close().await;
    let admin_pool = sqlx::AnyPool::connect(&admin).await.unwrap();
    let name = state_url.rsplit('/').next().unwrap().to_string();
    admin_pool
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .unwrap();
}
