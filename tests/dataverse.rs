//! The Dataverse backend against the OData test server's fault-injecting
//! proxy (tests/odata): throttling (429 with `Retry-After`, and the service
//! protection codes) waited out for exactly the time given, connection
//! resets retried, a row changed between the re-check and the delete never
//! deleted, wrong credentials refused with a message naming the variable
//! (never the secret), paging by `@odata.nextLink`, and the cap on requests
//! in flight. The conformance suite (tests/conformance.rs) runs the same
//! plans and applies on it as on SQL.
//!
//! One server per test; without `LETHE_TEST_ODATA` each test is skipped
//! with a note, under `CI=true` it fails.

#[allow(dead_code)]
mod util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lethe::apply::{self, ApplyOptions};
use lethe::config::{Config, EntityType};
use lethe::crm::dataverse::client::{ClientError, ClientOptions, Credentials};
use lethe::crm::dataverse::{CHANGED_WHILE_DELETING, DataverseCrm};
use lethe::crm::{CaseNow, CaseRequest, Crm, Decision, RecheckInput};
use lethe::model::EntityKey;
use lethe::state::StateStore;
use lethe::store::folder::FolderStore;
use serde_json::json;
use util::odata::{OdataServer, guid, id_of};

const AS_OF: &str = "2026-06-30T00:00:00Z";

macro_rules! server {
    ($test:expr) => {
        match OdataServer::start($test) {
            Some(s) => s,
            None => return,
        }
    };
}

/// `n` old leads, each with an opportunity and a quote: every case due.
fn old_cases(n: i64) -> serde_json::Value {
    let old = "2020-01-01T00:00:00Z";
    let leads: Vec<_> = (1..=n)
        .map(|i| json!({"leadid": guid(1, i), "fullname": format!("Lead {i}"), "emailaddress1": format!("lead{i}@example.com"), "modifiedon": old, "createdon": old}))
        .collect();
    let opps: Vec<_> = (1..=n)
        .map(|i| json!({"opportunityid": guid(2, i), "_originatingleadid_value": guid(1, i), "statecode": 2, "modifiedon": old}))
        .collect();
    let quotes: Vec<_> = (1..=n)
        .map(|i| json!({"quoteid": guid(3, i), "_opportunityid_value": guid(2, i), "modifiedon": old}))
        .collect();
    json!({"leads": leads, "opportunities": opps, "quotes": quotes})
}

fn config_text(crm_url: &str) -> String {
    format!(
        r#"
[crm]
url = "{crm_url}"
[crm.entities.lead]
table = "leads"
key = "leadid"
clock = ["modifiedon", "createdon"]
subject = ["emailaddress1"]
identifiers = ["emailaddress1"]
[crm.entities.opportunity]
table = "opportunities"
key = "opportunityid"
clock = "modifiedon"
parent = {{ lead = "_originatingleadid_value" }}
[crm.entities.quote]
table = "quotes"
key = "quoteid"
clock = "modifiedon"
parent = {{ opportunity = "_opportunityid_value" }}
[technical]
url = "technical"
[safety]
max_delete_fraction = 1.0
[[policy]]
name = "unconverted-sales"
root = "lead"
retain = "24 months"
keep_if = [{{ entity = "opportunity", where = "statecode eq 0" }}]
basis = "test"
[audit]
key = "dataverse-test-key-0123456"
"#
    )
}

struct Setup {
    config: Config,
    state: StateStore,
    store: FolderStore,
    _dir: tempfile::TempDir,
}

async fn setup(server: &OdataServer) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("technical")).unwrap();
    std::fs::write(
        dir.path().join("lethe.toml"),
        config_text(&server.crm_url(true)),
    )
    .unwrap();
    let config = lethe::config::load(&dir.path().join("lethe.toml")).unwrap();
    let state = StateStore::open(&config).await.unwrap();
    let store = FolderStore::open(&dir.path().join("technical")).unwrap();
    Setup {
        config,
        state,
        store,
        _dir: dir,
    }
}

async fn plan(s: &Setup, crm: &DataverseCrm) {
    lethe::index::run(&s.config, &s.store, &s.state, None, &|_, _| {})
        .await
        .unwrap();
    lethe::plan::make_plan(&s.config, crm, &s.state, AS_OF.parse().unwrap(), &|_, _| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn apply(s: &Setup, crm: &DataverseCrm) -> lethe::apply::ApplyReport {
    apply::apply(
        &s.config,
        crm,
        &s.store,
        &s.state,
        None,
        &ApplyOptions::default(),
        &|_, _, _| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The journal says exactly what the server shows: every entity it calls
/// deleted is gone, every planned one it does not is still there.
async fn journal_matches_server(s: &Setup, server: &OdataServer) -> (usize, usize) {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT e.entity_type, e.entity_key, c.status FROM plan_entities e JOIN plan_cases c
           ON c.plan_id = e.plan_id AND c.case_id = e.case_id",
    )
    .fetch_all(s.state.pool())
    .await
    .unwrap();
    let mut there: HashSet<(String, i64)> = HashSet::new();
    for (ty, set, key) in [
        ("lead", "leads", "leadid"),
        ("opportunity", "opportunities", "opportunityid"),
        ("quote", "quotes", "quoteid"),
    ] {
        for id in server.ids(set, key).await {
            there.insert((ty.to_string(), id));
        }
    }
    let (mut gone, mut kept) = (0, 0);
    for (ty, key, status) in rows {
        let present = there.contains(&(ty.clone(), id_of(&key)));
        match status.as_str() {
            "done" => {
                assert!(!present, "{ty}:{key} journaled deleted, still there");
                gone += 1;
            }
            other => {
                assert!(present, "{ty}:{key} journaled {other}, but gone");
                kept += 1;
            }
        }
    }
    (gone, kept)
}

/// A 429 with `Retry-After: 1` is waited out for that second, then the
/// request goes again and answers; so is a 429 with a service protection
/// code (execution time, concurrency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_waits_exactly_retry_after() {
    let server = server!("throttling_waits_exactly_retry_after");
    server.seed(old_cases(3)).await;
    let crm = server.crm(ClientOptions::default()).await;
    let client = crm.client();
    for code in ["0x80072322", "0x80072321", "0x80072326"] {
        // Every 2nd request: the first answers, the second is throttled.
        server
            .faults(json!({"throttle_every": 2, "retry_after": 1, "throttle_code": code}))
            .await;
        server.stats_reset().await;
        let before = client.requests();
        client
            .get_json("leads?$select=leadid&$top=1")
            .await
            .unwrap();
        let started = Instant::now();
        let v = client.get_json("leads?$select=leadid").await.unwrap();
        let waited = started.elapsed();
        assert_eq!(v["value"].as_array().unwrap().len(), 3);
        assert!(
            waited >= Duration::from_secs(1),
            "{code}: waited {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "{code}: waited {waited:?}");
        assert_eq!(client.requests() - before, 3, "{code}: one retry");
        let stats = server.stats().await;
        assert_eq!(stats["throttled"], 1, "{code}: {stats}");
    }
    server.faults(json!({"throttle_every": 0})).await;
    // A whole apply under throttling: every case done, each 429 waited out.
    server
        .faults(json!({"throttle_every": 5, "retry_after": 1}))
        .await;
    let s = setup(&server).await;
    plan(&s, &crm).await;
    let report = apply(&s, &crm).await;
    assert!(!report.failed(), "{:?}", report.failures);
    assert_eq!(report.cases_done, 3);
    assert_eq!(journal_matches_server(&s, &server).await, (9, 0));
    assert!(server.stats().await["throttled"].as_u64().unwrap() > 0);
}

/// Connection resets (TCP RST, the request never forwarded) are retried:
/// reads go again; a `$batch` whose answer was lost is settled by reading
/// its rows back, never sent blindly again. The journal matches the server
/// whatever happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried_and_settled() {
    let server = server!("connection_resets_are_retried_and_settled");
    server.seed(old_cases(40)).await;
    let crm = server
        .crm(ClientOptions {
            backoff: Duration::from_millis(20),
            ..ClientOptions::default()
        })
        .await;
    server.faults(json!({"reset_every": 3})).await;
    for _ in 0..6 {
        let v = crm.client().get_json("leads?$select=leadid").await.unwrap();
        assert_eq!(v["value"].as_array().unwrap().len(), 40);
    }
    assert!(server.stats().await["resets"].as_u64().unwrap() >= 2);
    let s = setup(&server).await;
    plan(&s, &crm).await;
    server.stats_reset().await;
    let report = apply(&s, &crm).await;
    let stats = server.stats().await;
    assert!(stats["resets"].as_u64().unwrap() > 0, "{stats}");
    let (gone, kept) = journal_matches_server(&s, &server).await;
    assert_eq!(gone + kept, 120);
    assert_eq!(gone as u64, 3 * report.cases_done);
    assert!(report.cases_done > 0, "{report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // What a reset kept from going is planned again, then deleted.
    server.faults(json!({"reset_every": 0})).await;
    if kept > 0 {
        plan(&s, &crm).await;
        apply(&s, &crm).await;
    }
    for set in ["leads", "opportunities", "quotes"] {
        let key = format!(
            "{}id",
            set.trim_end_matches('s')
                .replace("opportunitie", "opportunity")
        );
        assert!(server.ids(set, &key).await.is_empty(), "{set}");
    }
}

/// Runs `f` on a thread of its own with a runtime of its own: the
/// re-check's judgement is synchronous, and this is how a test changes a
/// row from inside it (in the window between the re-check's read and the
/// delete).
fn blocking<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap();
}

/// A row changed after the re-check read it and before the `$batch`
/// deletes it is never deleted: its `If-Match` is stale (412), the change
/// set rolls back, and the case is judged again on the new row; a case
/// that keeps changing is skipped with its rows all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_since_the_recheck_is_never_deleted() {
    let server = server!("a_row_changed_since_the_recheck_is_never_deleted");
    server.seed(old_cases(2)).await;
    let crm = server.crm(ClientOptions::default()).await;
    let s = setup(&server).await;
    let input = |case: i64| RecheckInput {
        entities: s.config.entities.clone(),
        conditions: Vec::new(),
        cases: vec![CaseRequest {
            case_id: case as u64,
            root_ty: 0,
            root_key: EntityKey::Text(guid(1, case)),
        }],
        payloads: None,
    };
    let (direct, tenant, id, secret) = (
        server.direct.clone(),
        server.tenant.clone(),
        server.client_id.clone(),
        server.client_secret.clone(),
    );
    // Changes the case's quote (its fullname's counterpart: the name) from
    // inside the judgement, `times` times.
    let change = move |case: i64| {
        let (direct, tenant, id, secret) =
            (direct.clone(), tenant.clone(), id.clone(), secret.clone());
        blocking(async move {
            let http = reqwest::Client::new();
            let form = serde_urlencoded::to_string([
                ("grant_type", "client_credentials"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("scope", "http://test/.default"),
            ])
            .unwrap();
            let t: serde_json::Value = serde_json::from_str(
                &http
                    .post(format!("{direct}/{tenant}/oauth2/v2.0/token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            )
            .unwrap();
            let r = http
                .patch(format!("{direct}/api/data/v9.2/quotes({})", guid(3, case)))
                .bearer_auth(t["access_token"].as_str().unwrap())
                .header("content-type", "application/json")
                .body(json!({"name": "changed"}).to_string())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        })
    };
    let judge = |now: &CaseNow| {
        Decision::Delete(now.entities.iter().map(|e| (e.ty, e.key.clone())).collect())
    };

    // Changed once, in the first window: judged again, then deleted.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let decide = |now: &CaseNow| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            change(1);
        }
        judge(now)
    };
    server.stats_reset().await;
    let out = crm.delete_cases(&input(1), &decide).await.unwrap();
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "judged again"
    );
    assert_eq!(out.deleted.len(), 1);
    assert_eq!(out.deleted[0].1.len(), 3);
    assert!(server.ids("quotes", "quoteid").await == vec![2]);
    let stats = server.stats().await;
    assert_eq!(stats["batch_requests"], 2, "{stats}");

    // Changed in every window: skipped, never deleted.
    let decide = |now: &CaseNow| {
        change(2);
        judge(now)
    };
    let out = crm.delete_cases(&input(2), &decide).await.unwrap();
    assert!(out.deleted.is_empty(), "{:?}", out.deleted);
    assert_eq!(
        out.cases,
        vec![(2, Decision::Skip(CHANGED_WHILE_DELETING.into()))]
    );
    assert_eq!(server.ids("leads", "leadid").await, vec![2]);
    assert_eq!(server.ids("opportunities", "opportunityid").await, vec![2]);
    assert_eq!(server.ids("quotes", "quoteid").await, vec![2]);
}

/// Wrong credentials: the error names AZURE_CLIENT_SECRET and never
/// prints the secret; in-process and from `lethe check`. A certificate
/// instead of a secret is said to be unsupported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_name_the_variable_never_the_secret() {
    let server = server!("wrong_credentials_name_the_variable_never_the_secret");
    let secret = "wrong-secret-x7Q9";
    let creds = Credentials {
        client_secret: lethe::sensitive::Sensitive::new(secret.into()),
        ..server.credentials()
    };
    let e = DataverseCrm::connect(&server.proxy, creds, ClientOptions::default())
        .await
        .err()
        .expect("a wrong secret is refused");
    let msg = e.to_string();
    assert!(msg.contains("AZURE_CLIENT_SECRET"), "{msg}");
    assert!(msg.contains("invalid_client"), "{msg}");
    assert!(!msg.contains(secret), "{msg}");
    assert!(matches!(
        e,
        lethe::crm::CrmError::Dataverse(ClientError::Token { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("technical")).unwrap();
    std::fs::write(
        dir.path().join("lethe.toml"),
        config_text(&server.crm_url(true)),
    )
    .unwrap();
    let run = |env: Vec<(&'static str, String)>, drop: &[&str]| {
        let mut c = util::lethe_command(dir.path());
        for v in [
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_AUTHORITY_HOST",
            "AZURE_CLIENT_CERTIFICATE_PATH",
        ] {
            c.env_remove(v);
        }
        for (k, v) in env {
            if !drop.contains(&k) {
                c.env(k, v);
            }
        }
        let out = c.arg("check").output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let mut env = server.env();
    for (k, v) in &mut env {
        if *k == "AZURE_CLIENT_SECRET" {
            *v = secret.into();
        }
    }
    let (code, out) = run(env, &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("AZURE_CLIENT_SECRET"), "{out}");
    assert!(!out.contains(secret), "{out}");
    let mut env = server.env();
    env.push((
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "/nonexistent/lethe-test-cert.pem".into(),
    ));
    let (code, out) = run(env, &["AZURE_CLIENT_SECRET"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(
            "AZURE_CLIENT_CERTIFICATE_PATH /nonexistent/lethe-test-cert.pem: cannot be read"
        ),
        "a certificate file that is not there is named: {out}"
    );
    // The right ones: check passes, the config fits $metadata.
    let (code, out) = run(server.env(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("crm (dataverse)"), "{out}");
}

/// `lethe check` on a config that does not fit `$metadata`: the column at
/// its key, with a "did you mean"; a keep condition the server refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_compares_the_config_with_metadata() {
    let server = server!("check_compares_the_config_with_metadata");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("technical")).unwrap();
    let text = config_text(&server.crm_url(true))
        .replace(
            "clock = \"modifiedon\"\nparent = { lead",
            "clock = \"modifedon\"\nparent = { lead",
        )
        .replace("statecode eq 0", "statecode eq 0 and nosuch eq 1");
    std::fs::write(dir.path().join("lethe.toml"), text).unwrap();
    let mut c = util::lethe_command(dir.path());
    for (k, v) in server.env() {
        c.env(k, v);
    }
    let out = c.arg("check").output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("crm.entities.opportunity.clock"), "{all}");
    assert!(all.contains("did you mean `modifiedon`"), "{all}");
    assert!(
        all.contains("policy.0.keep_if") || all.contains("keep_if"),
        "{all}"
    );
}

/// Pages follow `@odata.nextLink` (the server's is absolute, through the
/// proxy's port) until the last; `count` and `scan` see every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_next_links() {
    let server = server!("pages_follow_next_links");
    server.seed(old_cases(25)).await;
    let crm = server.crm(ClientOptions::default()).await;
    server.stats_reset().await;
    let mut seen = Vec::new();
    let n = crm
        .client()
        .get_pages("leads?$select=leadid", 10, &mut |row| {
            seen.push(row["leadid"].as_str().unwrap().to_string())
        })
        .await
        .unwrap();
    assert_eq!(n, 25);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
    assert!(server.stats().await["requests"].as_u64().unwrap() >= 3);
    let et = EntityType {
        name: "lead".into(),
        table: "leads".into(),
        key: "leadid".into(),
        clock: vec!["modifiedon".into()],
        parents: vec![],
        subject: vec![],
        identifiers: vec![],
    };
    assert_eq!(crm.count(&et).await.unwrap(), 25);
}

/// Never more requests in flight than the cap, also when lethe reads many
/// chunks at once against a slow server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_stay_below_the_cap() {
    let server = server!("requests_in_flight_stay_below_the_cap");
    server.seed(old_cases(400)).await;
    let crm = server
        .crm(ClientOptions {
            max_in_flight: 3,
            ..ClientOptions::default()
        })
        .await;
    server.faults(json!({"delay_ms": 30})).await;
    server.stats_reset().await;
    let et = EntityType {
        name: "lead".into(),
        table: "leads".into(),
        key: "leadid".into(),
        clock: vec!["modifiedon".into()],
        parents: vec![],
        subject: vec![],
        identifiers: vec![],
    };
    let keys: Vec<EntityKey> = (1..=400).map(|i| EntityKey::Text(guid(1, i))).collect();
    assert_eq!(crm.existing(&et, &keys).await.unwrap().len(), 400);
    let stats = server.stats().await;
    let max = stats["max_in_flight"].as_u64().unwrap();
    assert!(max <= 3, "{stats}");
    assert!(max >= 2, "chunks are read in parallel: {stats}");
    // The config refuses a cap above Dataverse's limit.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lethe.toml"),
        config_text(&server.crm_url(true)).replace("[crm]\n", "[crm]\nmax_in_flight = 60\n"),
    )
    .unwrap();
    let e = lethe::config::load(&dir.path().join("lethe.toml"))
        .expect_err("60 is refused")
        .to_string();
    assert!(e.contains("crm.max_in_flight"), "{e}");
}

/// A certificate credential (`AZURE_CLIENT_CERTIFICATE_PATH`: a PEM with
/// the certificate and its key): a client assertion signed with the key
/// gets a token when the certificate is the app's; another certificate is
/// refused with a message naming the variable, never the key; a file
/// without a key is refused before any request. Through the binary too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_credential_signs_its_way_in() {
    let server = server!("a_certificate_credential_signs_its_way_in");
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let key = dir.path().join(format!("{name}.key"));
        let cert = dir.path().join(format!("{name}.crt"));
        let ok = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            ])
            .arg(format!("/CN=lethe-test-{name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let cert_pem = std::fs::read_to_string(&cert).unwrap();
        let both = dir.path().join(format!("{name}.pem"));
        std::fs::write(
            &both,
            format!("{cert_pem}{}", std::fs::read_to_string(&key).unwrap()),
        )
        .unwrap();
        (cert_pem, both, cert)
    };
    let (app_pem, app, app_cert_only) = make("app");
    let (_, other, _) = make("other");
    server.register_certificate(&app_pem).await;
    let with = |path: &std::path::Path| Credentials {
        client_secret: lethe::sensitive::Sensitive::new(String::new()),
        certificate: Some(
            lethe::crm::dataverse::client::Certificate::from_pem_file(path)
                .unwrap_or_else(|e| panic!("{e}")),
        ),
        ..server.credentials()
    };
    let crm = DataverseCrm::connect(&server.proxy, with(&app), ClientOptions::default())
        .await
        .unwrap_or_else(|e| panic!("the app's certificate gets a token: {e}"));
    assert!(crm.columns("leads").await.unwrap().is_some());

    let e = DataverseCrm::connect(&server.proxy, with(&other), ClientOptions::default())
        .await
        .err()
        .expect("a certificate the app does not have is refused")
        .to_string();
    assert!(e.contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{e}");
    assert!(e.contains("700027"), "Azure AD's code is passed on: {e}");
    assert!(!e.contains("PRIVATE KEY") && !e.contains("MII"), "{e}");

    let e = lethe::crm::dataverse::client::Certificate::from_pem_file(&app_cert_only)
        .expect_err("a certificate without its key is refused")
        .to_string();
    assert!(e.contains("no private key") && e.contains("app.crt"), "{e}");

    // The binary, from the standard environment, without a secret.
    std::fs::write(
        dir.path().join("lethe.toml"),
        config_text(&server.crm_url(true)),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("technical")).unwrap();
    let run = |pem: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
            .arg("-c")
            .arg(dir.path().join("lethe.toml"))
            .arg("check")
            .envs(
                server
                    .env()
                    .into_iter()
                    .filter(|(k, _)| *k != "AZURE_CLIENT_SECRET"),
            )
            .env_remove("AZURE_CLIENT_SECRET")
            .env("AZURE_CLIENT_CERTIFICATE_PATH", pem)
            .output()
            .expect("lethe check")
    };
    let out = run(&app);
    assert!(
        out.status.success(),
        "check with the app's certificate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&other);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{text}");
}
