//! One conformance suite for every CRM backend: the same CRM (the same rows,
//! stored in each backend's own column types — timestamptz, timestamp,
//! datetime, date, ISO text, epoch seconds) is planned and applied on
//! SQLite, PostgreSQL and MariaDB; the plans (cases, entities, verdicts by
//! reason) and the CRMs afterwards must be identical, including the apply
//! re-check (a contract signed since the plan, an opportunity reopened
//! since: a conditional keep rule) and a row already gone.
//!
//! `crm_test_suite!` generates one module per backend, one test per case
//! (`sqlite::plans_and_applies_like_sqlite` checks what the fixture is built
//! for; `postgres::…` and `mysql::…` compare with a fresh SQLite run), so a
//! failing backend hides none of the others.
//!
//! Servers come from LETHE_TEST_POSTGRES_URL and LETHE_TEST_MYSQL_URL; a
//! backend whose URL is not set skips its tests with a note, but under
//! CI=true a missing URL or server is a failure.

#[allow(dead_code)] // uses one of the helpers
mod util;

use std::collections::BTreeMap;
use std::path::Path;

use lethe::apply::{self, ApplyOptions};
use lethe::config::Config;
use lethe::crm;
use lethe::state::{HoldKind, StateStore};
use lethe::store::folder::FolderStore;
use sqlx::Executor;

const AS_OF: &str = "2026-06-30T00:00:00Z";
const DAY: i64 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

/// Deterministic data, the same for every backend.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[derive(Default)]
struct Data {
    leads: Vec<(i64, Option<i64>, Option<i64>)>, // id, modified, created (date)
    opps: Vec<(i64, i64, &'static str, Option<i64>)>,
    quotes: Vec<(i64, i64, Option<i64>)>,
    contracts: Vec<(i64, i64, i64)>,
}

fn data() -> Data {
    let now = AS_OF.parse::<jiff::Timestamp>().unwrap().as_second();
    let mut rng = Lcg(42);
    let mut d = Data::default();
    let (mut opp, mut quote, mut contract) = (0, 0, 0);
    for id in 1..=300i64 {
        let modified = now - rng.next(1500) as i64 * DAY - rng.next(DAY as u64) as i64;
        let (m, c) = match rng.next(50) {
            0 => (None, None),                                      // undatable
            1 => (None, Some(modified - modified.rem_euclid(DAY))), // falls back to the date
            _ => (
                Some(modified),
                Some(modified - 30 * DAY - modified.rem_euclid(DAY)),
            ),
        };
        d.leads.push((id, m, c));
        for _ in 0..rng.next(3) {
            opp += 1;
            let stage = ["lost", "open", "won"][rng.next(3) as usize];
            let om = if rng.next(40) == 0 {
                None
            } else {
                Some(modified + rng.next(200) as i64 * DAY)
            };
            d.opps.push((opp, id, stage, om.map(|t| t.min(now))));
            if stage == "won" || rng.next(2) == 0 {
                quote += 1;
                let qm = (modified + rng.next(250) as i64 * DAY).min(now);
                d.quotes.push((quote, opp, Some(qm)));
                if stage == "won" {
                    contract += 1;
                    d.contracts.push((contract, quote, qm));
                }
            }
        }
    }
    d
}

fn ts(t: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t).unwrap()
}
fn lit_tz(t: i64) -> String {
    format!("'{}'", ts(t).strftime("%Y-%m-%d %H:%M:%S+00"))
}
fn lit_dt(t: i64) -> String {
    format!("'{}'", ts(t).strftime("%Y-%m-%d %H:%M:%S"))
}
fn lit_date(t: i64) -> String {
    format!("'{}'", ts(t).strftime("%Y-%m-%d"))
}
fn lit_iso(t: i64) -> String {
    format!("'{}'", ts(t))
}
/// Formats an instant as a SQL literal of some column type.
type Lit = fn(i64) -> String;

fn opt(v: Option<i64>, f: Lit) -> String {
    v.map(f).unwrap_or_else(|| "NULL".into())
}

/// DDL and INSERTs for one backend; `p` prefixes table names.
fn script(kind: Kind, p: &str, d: &Data) -> Vec<String> {
    let ddl = match kind {
        Kind::Sqlite => vec![
            format!(
                "CREATE TABLE {p}leads (id INTEGER PRIMARY KEY, email TEXT, modified_at TEXT, created_at TEXT)"
            ),
            format!(
                "CREATE TABLE {p}opportunities (id INTEGER PRIMARY KEY, lead_id INTEGER REFERENCES leads(id), stage TEXT NOT NULL, modified_at TEXT)"
            ),
            format!(
                "CREATE TABLE {p}quotes (id INTEGER PRIMARY KEY, opportunity_id INTEGER REFERENCES opportunities(id), modified_at TEXT)"
            ),
            format!(
                "CREATE TABLE {p}contracts (id INTEGER PRIMARY KEY, quote_id INTEGER REFERENCES quotes(id), modified_at INTEGER)"
            ),
        ],
        Kind::Postgres => vec![
            format!(
                "CREATE TABLE {p}leads (id INTEGER PRIMARY KEY, email TEXT, modified_at TIMESTAMPTZ, created_at DATE)"
            ),
            format!(
                "CREATE TABLE {p}opportunities (id INTEGER PRIMARY KEY, lead_id INTEGER REFERENCES {p}leads(id), stage TEXT NOT NULL, modified_at TIMESTAMP)"
            ),
            format!(
                "CREATE TABLE {p}quotes (id BIGINT PRIMARY KEY, opportunity_id INTEGER REFERENCES {p}opportunities(id), modified_at TEXT)"
            ),
            format!(
                "CREATE TABLE {p}contracts (id INTEGER PRIMARY KEY, quote_id BIGINT REFERENCES {p}quotes(id), modified_at BIGINT)"
            ),
        ],
        Kind::Mysql => vec![
            format!(
                "CREATE TABLE {p}leads (id INT PRIMARY KEY, email VARCHAR(200), modified_at DATETIME NULL, created_at DATE NULL) ENGINE=InnoDB"
            ),
            format!(
                "CREATE TABLE {p}opportunities (id INT PRIMARY KEY, lead_id INT, stage VARCHAR(20) NOT NULL, modified_at DATETIME NULL, FOREIGN KEY (lead_id) REFERENCES {p}leads(id)) ENGINE=InnoDB"
            ),
            format!(
                "CREATE TABLE {p}quotes (id BIGINT PRIMARY KEY, opportunity_id INT, modified_at VARCHAR(40) NULL, FOREIGN KEY (opportunity_id) REFERENCES {p}opportunities(id)) ENGINE=InnoDB"
            ),
            format!(
                "CREATE TABLE {p}contracts (id INT PRIMARY KEY, quote_id BIGINT, modified_at BIGINT NULL, FOREIGN KEY (quote_id) REFERENCES {p}quotes(id)) ENGINE=InnoDB"
            ),
        ],
    };
    let (lead_m, lead_c, opp_m): (Lit, Lit, Lit) = match kind {
        Kind::Sqlite => (lit_iso, lit_date, lit_iso),
        Kind::Postgres => (lit_tz, lit_date, lit_dt),
        Kind::Mysql => (lit_dt, lit_date, lit_dt),
    };
    let mut out = ddl;
    let rows: Vec<String> = d
        .leads
        .iter()
        .map(|(id, m, c)| {
            format!(
                "({id}, 'jane{id}@example.com', {}, {})",
                opt(*m, lead_m),
                opt(*c, lead_c)
            )
        })
        .collect();
    out.push(format!("INSERT INTO {p}leads VALUES {}", rows.join(",")));
    let rows: Vec<String> = d
        .opps
        .iter()
        .map(|(id, l, s, m)| format!("({id}, {l}, '{s}', {})", opt(*m, opp_m)))
        .collect();
    out.push(format!(
        "INSERT INTO {p}opportunities VALUES {}",
        rows.join(",")
    ));
    let rows: Vec<String> = d
        .quotes
        .iter()
        .map(|(id, o, m)| format!("({id}, {o}, {})", opt(*m, lit_iso)))
        .collect();
    out.push(format!("INSERT INTO {p}quotes VALUES {}", rows.join(",")));
    let rows: Vec<String> = d
        .contracts
        .iter()
        .map(|(id, q, m)| format!("({id}, {q}, {m})"))
        .collect();
    out.push(format!(
        "INSERT INTO {p}contracts VALUES {}",
        rows.join(",")
    ));
    out
}

fn config_text(crm_url: &str, p: &str, state_url: Option<&str>) -> String {
    let state = state_url
        .map(|u| format!("[state]\nurl = \"{u}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
{state}
[crm]
url = "{crm_url}"
[crm.entities.lead]
table = "{p}leads"
key = "id"
clock = ["modified_at", "created_at"]
subject = ["email"]
[crm.entities.opportunity]
table = "{p}opportunities"
key = "id"
clock = "modified_at"
parent = {{ lead = "lead_id" }}
[crm.entities.quote]
table = "{p}quotes"
key = "id"
clock = "modified_at"
parent = {{ opportunity = "opportunity_id" }}
[crm.entities.contract]
table = "{p}contracts"
key = "id"
clock = "modified_at"
parent = {{ quote = "quote_id" }}
[technical]
url = "technical"
[safety]
max_delete_fraction = 1.0
[[policy]]
name = "unconverted-sales"
root = "lead"
retain = "24 months"
keep_if = ["contract"]
basis = "test"
[[policy]]
name = "lost-opportunities"
root = "opportunity"
retain = "12 months"
keep_if = ["contract", {{ entity = "opportunity", where = "stage = 'open'" }}]
basis = "test"
[audit]
key = "conformance-test-key-0123"
"#
    )
}

/// What a backend produced: compared across backends.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    planned: Vec<(String, String)>,
    verdicts: Vec<(String, u64, BTreeMap<String, u64>)>,
    cases_done: u64,
    cases_skipped: u64,
    already_gone: u64,
    remaining: BTreeMap<String, Vec<String>>,
}

async fn exec_all(pool: &sqlx::AnyPool, sql: &[String]) {
    for s in sql {
        pool.execute(sqlx::AssertSqlSafe(s.clone()))
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Runs the suite on the CRM backend `kind`, with lethe's own state in
/// SQLite, or in PostgreSQL when `state_url` is given.
/// `test` names the test: the database or schema of a server backend is
/// `lethe_conf_<pid>_<test>`, no other test's.
async fn run_backend(
    kind: Kind,
    admin_url: &str,
    dir: &Path,
    state_url: Option<&str>,
    test: &str,
) -> Outcome {
    sqlx::any::install_default_drivers();
    std::fs::create_dir_all(dir).unwrap();
    let tag = format!("lethe_conf_{}_{test}", std::process::id());
    // A fresh database (MariaDB), schema (PostgreSQL) or file (SQLite).
    let (crm_url, prefix, cleanup): (String, String, Option<String>) = match kind {
        Kind::Sqlite => (
            format!("sqlite://{}", dir.join("crm.db").display()),
            String::new(),
            None,
        ),
        Kind::Postgres => {
            let admin = sqlx::AnyPool::connect(admin_url)
                .await
                .expect("PostgreSQL at LETHE_TEST_POSTGRES_URL");
            exec_all(
                &admin,
                &[
                    format!("DROP SCHEMA IF EXISTS {tag} CASCADE"),
                    format!("CREATE SCHEMA {tag}"),
                ],
            )
            .await;
            (
                admin_url.to_string(),
                format!("{tag}."),
                Some(format!("DROP SCHEMA IF EXISTS {tag} CASCADE")),
            )
        }
        Kind::Mysql => {
            let admin = sqlx::AnyPool::connect(admin_url)
                .await
                .expect("MariaDB at LETHE_TEST_MYSQL_URL");
            exec_all(
                &admin,
                &[
                    format!("DROP DATABASE IF EXISTS {tag}"),
                    format!("CREATE DATABASE {tag}"),
                ],
            )
            .await;
            let base = admin_url
                .rsplit_once('/')
                .map(|(b, _)| b)
                .unwrap_or(admin_url);
            (
                format!("{base}/{tag}"),
                String::new(),
                Some(format!("DROP DATABASE IF EXISTS {tag}")),
            )
        }
    };
    let setup_url = if kind == Kind::Sqlite {
        format!("{crm_url}?mode=rwc")
    } else {
        crm_url.clone()
    };
    let setup = sqlx::AnyPool::connect(&setup_url).await.unwrap();
    exec_all(&setup, &script(kind, &prefix, &data())).await;

    std::fs::create_dir_all(dir.join("technical")).unwrap();
    std::fs::write(
        dir.join("lethe.toml"),
        config_text(&crm_url, &prefix, state_url),
    )
    .unwrap();
    let config: Config =
        lethe::config::load(&dir.join("lethe.toml")).unwrap_or_else(|e| panic!("{e}"));
    let state = StateStore::open(&config).await.unwrap();
    state
        .add_hold(HoldKind::Entity, "lead:5", "litigation", "test")
        .await
        .unwrap();
    let crm = crm::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    let fit = crm::fit::fit(&config, crm.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    assert!(fit.problems.is_empty(), "{kind:?}: {:?}", fit.problems);
    // Every backend's catalogue says the integer keys are integers.
    assert_eq!(fit.integer_keys.get("lead"), Some(&true), "{kind:?}");
    let store = FolderStore::open(&dir.join("technical")).unwrap();
    lethe::index::run(&config, &store, &state, None, &|_, _| {})
        .await
        .unwrap();
    let summary = lethe::plan::make_plan(
        &config,
        crm.as_ref(),
        &state,
        AS_OF.parse().unwrap(),
        &|_, _| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    let planned: Vec<(String, String)> = sqlx::query_as(
        "SELECT entity_type, entity_key FROM plan_entities ORDER BY entity_type, entity_key",
    )
    .fetch_all(state.pool())
    .await
    .unwrap();

    // Between plan and apply: a contract is signed in one planned case (the
    // lowest planned quote), and one planned lead without children vanishes.
    let quote: Option<String> = sqlx::query_scalar(
        "SELECT entity_key FROM plan_entities WHERE entity_type = 'quote' ORDER BY CAST(entity_key AS INTEGER) LIMIT 1",
    )
    .fetch_optional(state.pool())
    .await
    .unwrap();
    let lone: String = sqlx::query_scalar(
        "SELECT e.entity_key FROM plan_entities e WHERE e.entity_type = 'lead'
           AND (SELECT count(*) FROM plan_entities x WHERE x.case_id = e.case_id) = 1
         ORDER BY CAST(e.entity_key AS INTEGER) LIMIT 1",
    )
    .fetch_one(state.pool())
    .await
    .unwrap();
    // And one planned lost opportunity (a case of its own) is reopened: the
    // keep rule `stage = 'open'` must hold it at apply time.
    let reopened: String = sqlx::query_scalar(
        "SELECT c.root_key FROM plan_cases c WHERE c.root_type = 'opportunity'
           AND c.case_id NOT IN (SELECT e.case_id FROM plan_entities e
                                 WHERE e.entity_type = 'quote' AND e.entity_key = $1)
         ORDER BY CAST(c.root_key AS INTEGER) LIMIT 1",
    )
    .bind(quote.clone().unwrap_or_default())
    .fetch_one(state.pool())
    .await
    .expect("the fixture plans a lost opportunity as a case of its own");
    let now = jiff::Timestamp::now().as_second();
    let mut change = vec![
        format!("DELETE FROM {prefix}leads WHERE id = {lone}"),
        format!("UPDATE {prefix}opportunities SET stage = 'open' WHERE id = {reopened}"),
    ];
    if let Some(q) = &quote {
        change.push(format!(
            "INSERT INTO {prefix}contracts VALUES (999999, {q}, {now})"
        ));
    }
    exec_all(&setup, &change).await;

    let report = apply::apply(
        &config,
        crm.as_ref(),
        &store,
        &state,
        None,
        &ApplyOptions::default(),
        &|_, _, _| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    assert!(!report.failed(), "{kind:?}: {:?}", report.failures);
    let pseudo = lethe::audit::pseudonym::Pseudonymizer::new(config.audit_key.clone());
    let v = lethe::audit::verify(&state, &pseudo).await.unwrap();
    assert!(v.problems.is_empty(), "{kind:?}: {:?}", v.problems);

    let mut remaining = BTreeMap::new();
    for t in ["leads", "opportunities", "quotes", "contracts"] {
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS {}) FROM {prefix}{t} ORDER BY id",
            if kind == Kind::Mysql {
                "SIGNED"
            } else {
                "BIGINT"
            }
        )))
        .fetch_all(&setup)
        .await
        .unwrap();
        remaining.insert(t.to_string(), ids.iter().map(|i| i.to_string()).collect());
    }
    setup.close().await;
    if let Some(sql) = cleanup {
        let admin = sqlx::AnyPool::connect(admin_url).await.unwrap();
        exec_all(&admin, &[sql]).await;
    }
    Outcome {
        planned,
        verdicts: summary
            .policies
            .iter()
            .map(|p| (p.name.clone(), p.due, p.kept.clone()))
            .collect(),
        cases_done: report.cases_done,
        cases_skipped: report.cases_skipped,
        already_gone: report.entities_already_gone,
        remaining,
    }
}

fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} must be set under CI=true"
            );
            eprintln!("{var} not set: that backend is not tested here");
            None
        }
    }
}

/// A CRM backend under test: its kind and (for a server) its admin URL.
struct Backend {
    kind: Kind,
    url: String,
}

fn sqlite() -> Option<Backend> {
    Some(Backend {
        kind: Kind::Sqlite,
        url: String::new(),
    })
}

fn postgres() -> Option<Backend> {
    server_url("LETHE_TEST_POSTGRES_URL").map(|url| Backend {
        kind: Kind::Postgres,
        url,
    })
}

fn mysql() -> Option<Backend> {
    server_url("LETHE_TEST_MYSQL_URL").map(|url| Backend {
        kind: Kind::Mysql,
        url,
    })
}

/// One module per backend, one test per case listed for it
/// (`postgres::plans_and_applies_like_sqlite`, ...): a failing backend hides
/// none of the others. A backend whose URL is not set skips its tests with a
/// note (a failure under CI=true: `server_url` asserts that). Each case gets
/// the backend's name for the names of what it creates on the server.
macro_rules! crm_test_suite {
    ($($backend:ident [$($case:ident),* $(,)?];)*) => {$(
        mod $backend {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                match super::$backend() {
                    Some(backend) => super::$case(backend, stringify!($backend)).await,
                    None => eprintln!(
                        "{}::{}: skipped, {} is not configured here",
                        stringify!($backend),
                        stringify!($case),
                        stringify!($backend),
                    ),
                }
            }
        )*}
    )*};
}

crm_test_suite! {
    sqlite [plans_and_applies_like_sqlite];
    postgres [
        plans_and_applies_like_sqlite,
        plans_and_applies_like_sqlite_with_state_in_postgres,
        existing_answers_integer_and_text_probes_alike,
    ];
    mysql [
        plans_and_applies_like_sqlite,
        existing_answers_integer_and_text_probes_alike,
    ];
}

/// SQLite's outcome, the reference every other backend is compared with.
async fn sqlite_outcome(dir: &Path, state_url: Option<&str>, test: &str) -> Outcome {
    run_backend(Kind::Sqlite, "", dir, state_url, test).await
}

/// SQLite plans and applies what the fixture is built for; every other
/// backend plans and applies identically to a fresh SQLite run.
async fn plans_and_applies_like_sqlite(b: Backend, name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = sqlite_outcome(&tmp.path().join("sqlite"), None, name).await;
    match b.kind {
        Kind::Sqlite => {
            assert!(
                sqlite.planned.len() > 50,
                "the fixture plans too little: {}",
                sqlite.planned.len()
            );
            assert_eq!(
                sqlite.cases_skipped, 2,
                "the contract signed since the plan, the opportunity reopened since"
            );
            assert_eq!(
                sqlite.already_gone, 1,
                "the lead deleted by hand since the plan"
            );
            assert!(sqlite.verdicts[0].2.contains_key("hold"));
            assert!(sqlite.verdicts[0].2.contains_key("undatable"));
            assert!(
                sqlite.verdicts[1]
                    .2
                    .keys()
                    .any(|k| k.contains("stage = 'open'"))
            );
        }
        Kind::Postgres => {
            let pg = run_backend(Kind::Postgres, &b.url, &tmp.path().join("pg"), None, name).await;
            assert_eq!(pg, sqlite, "PostgreSQL differs from SQLite");
        }
        Kind::Mysql => {
            let my = run_backend(Kind::Mysql, &b.url, &tmp.path().join("mysql"), None, name).await;
            assert_eq!(my, sqlite, "MariaDB differs from SQLite");
        }
    }
    if b.kind != Kind::Sqlite {
        eprintln!("conformance: {name} plans and applies as SQLite does");
    }
}

/// The same CRM (SQLite) with lethe's own state in PostgreSQL: the state
/// backend must not change a plan or a result either.
async fn plans_and_applies_like_sqlite_with_state_in_postgres(b: Backend, name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = sqlite_outcome(&tmp.path().join("sqlite"), None, name).await;
    let state_url = util::fresh_postgres_db(&b.url, &format!("lethe_conf_state_{name}")).await;
    let state_db = state_url.rsplit('/').next().unwrap_or_default().to_string();
    let on_pg = sqlite_outcome(&tmp.path().join("sqlite-pg-state"), Some(&state_url), name).await;
    assert_eq!(
        on_pg, sqlite,
        "a PostgreSQL state store differs from SQLite's"
    );
    let admin = sqlx::AnyPool::connect(&b.url).await.unwrap();
    exec_all(
        &admin,
        &[format!("DROP DATABASE IF EXISTS {state_db} WITH (FORCE)")],
    )
    .await;
}

/// `existing` (the object phase's re-check) asked in turn about integer and
/// text keys, the same number of each, on one connection: each answer is
/// right. (PostgreSQL once got an IN list of N texts sent to the prepared
/// statement of N integers, whose SQL text was the same: "insufficient
/// data left in message", an object failed now and then.)
async fn existing_answers_integer_and_text_probes_alike(b: Backend, name: &str) {
    use lethe::model::EntityKey;
    sqlx::any::install_default_drivers();
    let url = b.url;
    let table = format!("lethe_probe_{}_{name}", std::process::id());
    let et = lethe::config::EntityType {
        name: "lead".into(),
        table: table.clone(),
        key: "id".into(),
        clock: vec!["modified_at".into()],
        parents: Vec::new(),
        subject: Vec::new(),
        identifiers: Vec::new(),
    };
    let admin = sqlx::AnyPool::connect(&url).await.unwrap();
    exec_all(
        &admin,
        &[
            format!("DROP TABLE IF EXISTS {table}"),
            format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, modified_at TEXT)"),
            format!("INSERT INTO {table} (id) VALUES (1), (2), (3), (5), (8)"),
        ],
    )
    .await;
    let crm = lethe::crm::server::ServerCrm::connect(&url, false)
        .await
        .unwrap();
    use lethe::crm::Crm;
    let ints: Vec<EntityKey> = [1, 2, 4].into_iter().map(EntityKey::Int).collect();
    let texts: Vec<EntityKey> = ["3", "5", "x"]
        .into_iter()
        .map(|t| EntityKey::Text(t.into()))
        .collect();
    let mysql = url.starts_with("mysql");
    for round in 0..6 {
        let mut got = crm
            .existing(&et, &ints)
            .await
            .unwrap_or_else(|e| panic!("{url} round {round}: {e}"));
        got.sort();
        assert_eq!(
            got,
            vec![EntityKey::Int(1), EntityKey::Int(2)],
            "round {round}"
        );
        let got = crm
            .existing(&et, &texts)
            .await
            .unwrap_or_else(|e| panic!("{url} round {round}: {e}"));
        // PostgreSQL never equates text with an integer column; MySQL
        // compares them as numbers.
        let want: Vec<EntityKey> = if mysql {
            vec![EntityKey::Int(3), EntityKey::Int(5)]
        } else {
            Vec::new()
        };
        let mut got = got;
        got.sort();
        assert_eq!(got, want, "{url} round {round}");
    }
    exec_all(&admin, &[format!("DROP TABLE IF EXISTS {table}")]).await;
}
