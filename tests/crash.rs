//! Crash safety: a plan of more than 5,000 cases with linked objects is
//! applied by a `lethe apply` that is killed (SIGKILL) at 30 or more random
//! instants and aborted once at every failpoint (cargo feature
//! `failpoints`), then resumed to the end. The CRM and the store must equal
//! those of an uninterrupted apply of the same plan, the audit chain must
//! verify, and every deleted item must have exactly one audit record.
//!
//! Payload rows deleted in the case's transaction (a payload table of the
//! CRM with a foreign key to the leads) survive a crash before their
//! journal step on SQLite, PostgreSQL and MariaDB; the servers come from
//! LETHE_TEST_POSTGRES_URL and LETHE_TEST_MYSQL_URL (skipped with a note
//! when unset, a failure under CI=true).

#[allow(dead_code)] // the crash test uses only a few helpers
mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{list_files, sqlite};

fn lethe(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lethe"));
    c.current_dir(dir)
        .env_remove("LETHE_CONFIG")
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .args(["-c", "lethe.toml", "--format", "json"]);
    c
}

fn run(dir: &Path, args: &[&str]) -> std::process::ExitStatus {
    lethe(dir).args(args).status().unwrap()
}

/// Every table as sorted text: what "equal CRMs" means here.
fn crm_dump(dir: &Path) -> String {
    ["leads", "opportunities", "quotes", "contracts"]
        .iter()
        .map(|t| {
            sqlite(
                &dir.join("crm.db"),
                &format!("SELECT * FROM {t} ORDER BY id"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n--\n")
}

/// A tiny deterministic generator (no dependency for one test).
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

#[test]
fn apply_survives_kills_and_failpoints_and_ends_like_an_uninterrupted_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(["demo", "--generate-only", "--leads", "12500", "--dir"])
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Small batches: many journal steps, many places to die in.
    let mut config = std::fs::read_to_string(base.join("lethe.toml")).unwrap();
    config.push_str("\n[apply]\nbatch_cases = 25\nbatch_objects = 25\n");
    std::fs::write(base.join("lethe.toml"), config).unwrap();
    assert!(run(&base, &["index"]).success());
    assert!(run(&base, &["plan"]).success());
    let state = base.join("lethe-state.db");
    let plan_id = sqlite(&state, "SELECT id FROM plans").trim().to_string();
    let cases: u64 = sqlite(&state, "SELECT count(*) FROM plan_cases")
        .trim()
        .parse()
        .unwrap();
    let objects: u64 = sqlite(&state, "SELECT count(*) FROM plan_objects")
        .trim()
        .parse()
        .unwrap();
    // The plan's objects are in key order, whatever order the index's
    // parallel reads finished in.
    let keys = sqlite(&state, "SELECT key FROM plan_objects ORDER BY item");
    let keys: Vec<&str> = keys.lines().collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "the plan's objects are not in key order"
    );
    assert!(keys.first().is_some_and(|k| k.starts_with("exports/")));
    assert!(cases >= 5000, "the plan has only {cases} cases");
    assert!(objects > 1000, "the plan has only {objects} objects");

    // The reference: the same plan, applied without interruption.
    let reference = tmp.path().join("reference");
    util::copy_tree(&base, &reference);
    assert!(run(&reference, &["apply", &plan_id]).success());

    let crashed = tmp.path().join("crashed");
    util::copy_tree(&base, &crashed);
    #[cfg_attr(not(feature = "failpoints"), allow(unused_mut))]
    let mut aborts = 0;
    #[cfg(feature = "failpoints")]
    // The plan holds its objects in key order: the demo's exports
    // (`exports/…`, the redactions) come first, so the redaction
    // failpoints go before the deletes'.
    for fp in [
        "apply::case-intent",
        "apply::case-deleted",
        "apply::redact-before-rewrite",
        "apply::redact-rewritten",
        "apply::object-intent",
        "apply::object-deleted",
    ] {
        let status = lethe(&crashed)
            .args(["apply", &plan_id])
            .env("FAILPOINTS", format!("{fp}=return"))
            .status()
            .unwrap();
        assert!(!status.success(), "failpoint {fp} was not reached");
        aborts += 1;
    }

    let mut rng = Lcg(4711);
    let mut kills = 0;
    let mut finished_early = false;
    let started = Instant::now();
    while kills < 30 {
        // With failpoints, each batch takes a few milliseconds more (the case
        // phase is over by now: the failpoint aborts above went through it),
        // so that 30 kills land inside the apply however fast the machine.
        let mut cmd = lethe(&crashed);
        if cfg!(feature = "failpoints") {
            cmd.env(
                "FAILPOINTS",
                "apply::case-intent=sleep(15);apply::object-intent=sleep(15)",
            );
        }
        let mut child = cmd.args(["apply", &plan_id]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(15 + rng.next(120)));
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("apply ended by itself after {kills} kills: {status}");
            finished_early = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "kill loop too slow"
        );
    }
    // The final resume finishes the plan.
    assert!(run(&crashed, &["apply", &plan_id]).success());
    assert!(
        !finished_early || kills >= 30 || cfg!(not(feature = "failpoints")),
        "apply finished after only {kills} kills; make the plan bigger"
    );
    eprintln!(
        "crash test: {cases} cases, {objects} objects, {kills} SIGKILLs, {aborts} failpoint aborts"
    );

    assert_eq!(
        crm_dump(&crashed),
        crm_dump(&reference),
        "CRM differs from the uninterrupted apply"
    );
    assert_eq!(
        list_files(&crashed.join("technical")),
        list_files(&reference.join("technical")),
        "store differs from the uninterrupted apply"
    );
    // Byte for byte: a redaction resumed after a kill is neither lost nor
    // done twice.
    for key in list_files(&reference.join("technical")) {
        assert!(
            std::fs::read(crashed.join("technical").join(&key)).ok()
                == std::fs::read(reference.join("technical").join(&key)).ok(),
            "{key} differs from the uninterrupted apply"
        );
    }
    let redacted = sqlite(
        &base.join("lethe-state.db"),
        &format!(
            "SELECT count(*) FROM plan_objects WHERE plan_id = '{plan_id}' AND fate = 'redact'"
        ),
    );
    assert!(
        redacted.trim().parse::<u64>().unwrap_or(0) > 10,
        "the plan redacts the shared exports: {redacted}"
    );
    assert!(
        run(&crashed, &["audit", "verify"]).success(),
        "audit chain or journal/audit agreement broken"
    );
    let cstate = crashed.join("lethe-state.db");
    let audited = sqlite(
        &cstate,
        &format!("SELECT count(*) FROM audit WHERE plan_id = '{plan_id}'"),
    );
    let deleted = sqlite(
        &cstate,
        &format!(
            "SELECT (SELECT count(*) FROM plan_entities WHERE plan_id = '{plan_id}' AND status = 'deleted')
                  + (SELECT count(*) FROM plan_objects WHERE plan_id = '{plan_id}' AND status IN ('deleted', 'redacted'))"
        ),
    );
    assert_eq!(
        audited, deleted,
        "one audit record per deleted or redacted item"
    );
    assert_eq!(
        sqlite(
            &cstate,
            &format!(
                "SELECT count(*) FROM audit WHERE plan_id = '{plan_id}' AND action = 'redact-object'"
            ),
        ),
        redacted,
        "one redact-object record per redacted object"
    );
    assert!(
        run(&crashed, &["verify", &plan_id]).success(),
        "verify after the crashed apply: something of a deleted lead is left"
    );
    assert_eq!(
        sqlite(
            &cstate,
            "SELECT count(*) FROM (SELECT pseudonym FROM audit GROUP BY pseudonym HAVING count(*) > 1)"
        ),
        "0\n",
        "an item was audited twice"
    );
    let reference_audited = sqlite(
        &reference.join("lethe-state.db"),
        "SELECT count(*) FROM audit",
    );
    assert_eq!(
        audited, reference_audited,
        "the crashed run audited a different number of items"
    );
}

/// The CRM of the payload-table crash test: SQLite (a file in each run's
/// folder, copied with it), or a schema (PostgreSQL) or database (MariaDB)
/// of its own, `lethe_crash_<pid>_<test>`, on the server of
/// LETHE_TEST_POSTGRES_URL / LETHE_TEST_MYSQL_URL, dropped when the test
/// ends. A server CRM is one for every run of the test: it is loaded again
/// with the same rows before each.
#[cfg(feature = "failpoints")]
mod payload_crm {
    use std::path::Path;

    use super::util::sqlite;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Db {
        Sqlite,
        Postgres,
        Mysql,
    }

    /// How the leads' and payload rows' keys (and so the foreign key) are
    /// typed.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Keys {
        Int,
        /// The server's UUID type.
        Uuid,
    }

    pub struct Crm {
        pub db: Db,
        pub keys: Keys,
        /// `[crm] url` of the test's config.
        pub url: String,
        /// What table names are prefixed with (the PostgreSQL schema).
        pub prefix: String,
        /// The admin URL and the statement that drops the schema or database.
        drop: Option<(String, String)>,
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The server's URL (`util::server_url`).
    fn server_url(var: &str) -> Option<String> {
        super::util::server_url(var, "the payload crash test on that server")
    }

    async fn exec_on(url: &str, sql: &[String]) {
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url)
            .await
            .unwrap_or_else(|e| panic!("the test server is reachable: {e}"));
        for s in sql {
            pool.execute(sqlx::AssertSqlSafe(s.clone()))
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        pool.close().await;
    }

    impl Crm {
        /// The CRM of test `test`; none when its server is not configured.
        pub fn new(db: Db, keys: Keys, test: &str) -> Option<Crm> {
            let tag = format!("lethe_crash_{}_{test}", std::process::id());
            let (url, prefix, drop) = match db {
                Db::Sqlite => ("sqlite://crm.db".to_string(), String::new(), None),
                Db::Postgres => {
                    let admin = server_url("LETHE_TEST_POSTGRES_URL")?;
                    let drop = format!("DROP SCHEMA IF EXISTS {tag} CASCADE");
                    block(exec_on(
                        &admin,
                        &[drop.clone(), format!("CREATE SCHEMA {tag}")],
                    ));
                    (admin.clone(), format!("{tag}."), Some((admin, drop)))
                }
                Db::Mysql => {
                    let admin = server_url("LETHE_TEST_MYSQL_URL")?;
                    let drop = format!("DROP DATABASE IF EXISTS {tag}");
                    block(exec_on(
                        &admin,
                        &[drop.clone(), format!("CREATE DATABASE {tag}")],
                    ));
                    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                    (format!("{base}/{tag}"), String::new(), Some((admin, drop)))
                }
            };
            Some(Crm {
                db,
                keys,
                url,
                prefix,
                drop,
            })
        }

        fn exec(&self, dir: &Path, sql: &[String]) {
            match self.db {
                Db::Sqlite => {
                    sqlite(&dir.join("crm.db"), &sql.join(";\n"));
                }
                _ => block(exec_on(&self.url, sql)),
            }
        }

        /// One text column per row, one row a line.
        fn lines(&self, dir: &Path, sql: &str) -> String {
            match self.db {
                Db::Sqlite => sqlite(&dir.join("crm.db"), sql),
                _ => block(async {
                    sqlx::any::install_default_drivers();
                    let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
                    let rows: Vec<String> =
                        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                            .fetch_all(&pool)
                            .await
                            .unwrap_or_else(|e| panic!("{sql}: {e}"));
                    pool.close().await;
                    rows.iter().map(|r| format!("{r}\n")).collect()
                }),
            }
        }

        /// Key `n` as the database prints it.
        pub fn key(&self, n: u32) -> String {
            match self.keys {
                Keys::Int => n.to_string(),
                Keys::Uuid => format!("abcdef00-0000-4000-8000-{n:012}"),
            }
        }

        fn lit(&self, n: u32) -> String {
            match self.keys {
                Keys::Int => self.key(n),
                Keys::Uuid => format!("'{}'", self.key(n)),
            }
        }

        /// The leads and payload rows, as at the start of every run: 40 due
        /// leads with a payload row each (foreign key, ON DELETE
        /// RESTRICT), one recent lead with one. The CRM of `dir` (SQLite),
        /// or the server's, emptied first.
        pub fn load(&self, dir: &Path) {
            let p = &self.prefix;
            let (int, clock, text, blob, engine) = match self.db {
                Db::Sqlite => ("INTEGER", "TEXT", "TEXT", "BLOB", ""),
                Db::Postgres => ("BIGINT", "TIMESTAMPTZ", "TEXT", "BYTEA", ""),
                Db::Mysql => (
                    "BIGINT",
                    "DATETIME",
                    "VARCHAR(255)",
                    "LONGBLOB",
                    " ENGINE=InnoDB",
                ),
            };
            let key = match self.keys {
                Keys::Int => int,
                Keys::Uuid => "UUID",
            };
            let k = |n| self.lit(n);
            let hex = |h: &str| match self.db {
                Db::Postgres => format!("decode('{h}', 'hex')"),
                _ => format!("X'{h}'"),
            };
            let mut sql = vec![
                format!("DROP TABLE IF EXISTS {p}payloads"),
                format!("DROP TABLE IF EXISTS {p}leads"),
                format!("CREATE TABLE {p}leads (id {key} PRIMARY KEY, modified_at {clock}){engine}"),
                format!(
                    "CREATE TABLE {p}payloads (id {key} PRIMARY KEY, filename {text}, body {blob}, modified_on {clock},
                        version {int}, lead_id {key}, FOREIGN KEY (lead_id) REFERENCES {p}leads(id) ON DELETE RESTRICT){engine}"
                ),
                format!("INSERT INTO {p}leads VALUES ({}, '2026-05-01')", k(1000)),
                format!(
                    "INSERT INTO {p}payloads VALUES ({}, 'kept.bin', {}, '2026-05-01', 1, {})",
                    k(5000),
                    hex("6b657074"),
                    k(1000)
                ),
            ];
            let leads: Vec<String> = (1..=40)
                .map(|i| format!("({}, '2020-01-01')", k(i)))
                .collect();
            sql.push(format!("INSERT INTO {p}leads VALUES {}", leads.join(", ")));
            let payloads: Vec<String> = (1..=40)
                .map(|i| {
                    format!(
                        "({}, 'p.bin', {}, '2020-01-02', 1, {})",
                        k(100 + i),
                        hex("7061796c6f6164"),
                        k(i)
                    )
                })
                .collect();
            sql.push(format!(
                "INSERT INTO {p}payloads VALUES {}",
                payloads.join(", ")
            ));
            self.exec(dir, &sql);
        }

        /// Every row of both tables as text: what "equal CRMs" means here.
        pub fn dump(&self, dir: &Path) -> String {
            let p = &self.prefix;
            let (leads, payloads) = match self.db {
                Db::Sqlite => (
                    "SELECT * FROM leads ORDER BY id".to_string(),
                    "SELECT * FROM payloads ORDER BY id".to_string(),
                ),
                Db::Postgres => (
                    format!("SELECT CAST(CONCAT_WS('|', id, modified_at) AS TEXT) FROM {p}leads ORDER BY id"),
                    format!(
                        "SELECT CAST(CONCAT_WS('|', id, filename, encode(body, 'hex'), modified_on, version, lead_id) AS TEXT)
                         FROM {p}payloads ORDER BY id"
                    ),
                ),
                Db::Mysql => (
                    "SELECT CAST(CONCAT_WS('|', id, modified_at) AS CHAR) FROM leads ORDER BY id".to_string(),
                    "SELECT CAST(CONCAT_WS('|', id, filename, HEX(body), modified_on, version, lead_id) AS CHAR)
                     FROM payloads ORDER BY id"
                        .to_string(),
                ),
            };
            format!(
                "{}--\n{}",
                self.lines(dir, &leads),
                self.lines(dir, &payloads)
            )
        }

        /// The keys of the payload rows left, one a line.
        pub fn payload_ids(&self, dir: &Path) -> String {
            let cast = match self.db {
                Db::Mysql => "CHAR",
                _ => "TEXT",
            };
            self.lines(
                dir,
                &format!(
                    "SELECT CAST(id AS {cast}) FROM {}payloads ORDER BY id",
                    self.prefix
                ),
            )
        }
    }

    impl Drop for Crm {
        fn drop(&mut self) {
            if let Some((admin, drop)) = &self.drop {
                let (admin, drop) = (admin.clone(), drop.clone());
                // Its own thread: the drop may run inside a runtime.
                let _ = std::thread::spawn(move || block(exec_on(&admin, &[drop]))).join();
            }
        }
    }
}

/// Payload rows kept in a CRM table with a foreign key to their leads go
/// in the case's transaction: aborted between that transaction's commit
/// and its journal step, the resumed apply counts them deleted by lethe
/// (one `delete-object` record each) and ends like an uninterrupted one.
/// On SQLite, PostgreSQL and MariaDB (`test` names the server's schema or
/// database).
#[cfg(feature = "failpoints")]
fn payload_rows_survive_a_crash_before_the_journal(
    db: payload_crm::Db,
    keys: payload_crm::Keys,
    test: &str,
) {
    let Some(crm) = payload_crm::Crm::new(db, keys, test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("lethe.toml"),
        format!(
            r#"
[crm]
url = "{url}"

[crm.entities.lead]
table = "{p}leads"
key = "id"
clock = "modified_at"

[technical]
url = "crm://"

[technical.table]
table = "{p}payloads"
key = "id"
body = "body"
encoding = "raw"
name = "filename"
modified = "modified_on"
version = "version"
links = {{ lead = "lead_id" }}

[[policy]]
name = "leads"
root = "lead"
retain = "24 months"
basis = "GDPR Art. 5(1)(e)"

[safety]
max_delete_fraction = 1.0

[apply]
batch_cases = 5

[state]
url = "sqlite://lethe-state.db"

[audit]
key = "crash-test-payload-table-key-0001"
"#,
            url = crm.url,
            p = crm.prefix
        ),
    )
    .unwrap();
    crm.load(&base);
    let initial = crm.dump(&base);
    assert!(run(&base, &["index"]).success(), "{db:?}: index");
    assert!(
        run(&base, &["plan", "--as-of", "2026-06-01"]).success(),
        "{db:?}: plan"
    );
    let state = base.join("lethe-state.db");
    let plan_id = sqlite(&state, "SELECT id FROM plans").trim().to_string();

    let reference = tmp.path().join("reference");
    util::copy_tree(&base, &reference);
    assert!(
        run(&reference, &["apply", &plan_id]).success(),
        "{db:?}: apply"
    );
    let reference_dump = crm.dump(&reference);

    let crashed = tmp.path().join("crashed");
    util::copy_tree(&base, &crashed);
    // A server CRM is shared by the runs: as the plan found it again, row
    // for row (SQLite's was copied with the folder).
    if db != payload_crm::Db::Sqlite {
        crm.load(&crashed);
        assert_eq!(crm.dump(&crashed), initial, "{db:?}: loaded again");
    }
    let status = lethe(&crashed)
        .args(["apply", &plan_id])
        .env("FAILPOINTS", "apply::case-deleted=return")
        .status()
        .unwrap();
    assert!(!status.success(), "{db:?}: the failpoint was not reached");
    // The CRM committed the first batch; its journal step never ran.
    assert_eq!(
        crm.payload_ids(&crashed).lines().count(),
        36,
        "{db:?}: the first batch's rows went"
    );
    assert!(
        run(&crashed, &["apply", &plan_id]).success(),
        "{db:?}: resume"
    );

    assert_eq!(crm.dump(&crashed), reference_dump, "{db:?}");
    assert_eq!(crm.payload_ids(&crashed).trim(), crm.key(5000), "{db:?}");
    assert!(run(&crashed, &["audit", "verify"]).success(), "{db:?}");
    for dir in [&crashed, &reference] {
        let s = dir.join("lethe-state.db");
        assert_eq!(
            sqlite(
                &s,
                "SELECT count(*), count(DISTINCT pseudonym) FROM audit WHERE action = 'delete-object'"
            )
            .trim(),
            "40|40",
            "{db:?}"
        );
        assert_eq!(
            sqlite(
                &s,
                "SELECT status, count(*) FROM plan_objects GROUP BY status ORDER BY status"
            )
            .trim(),
            "deleted|40",
            "{db:?}"
        );
    }
}

/// One test per CRM backend and key type; the tag names its schema or
/// database (`lethe_crash_<pid>_<tag>`).
macro_rules! payload_crash_tests {
    ($($name:ident: $db:ident, $keys:ident, $tag:literal;)*) => {$(
        #[cfg(feature = "failpoints")]
        #[test]
        fn $name() {
            payload_rows_survive_a_crash_before_the_journal(
                payload_crm::Db::$db,
                payload_crm::Keys::$keys,
                $tag,
            );
        }
    )*};
}

payload_crash_tests! {
    payload_rows_deleted_in_the_case_transaction_survive_a_crash_before_the_journal: Sqlite, Int, "payload_sqlite";
    payload_rows_deleted_in_the_case_transaction_survive_a_crash_before_the_journal_on_postgres: Postgres, Int, "payload_pg";
    payload_rows_deleted_in_the_case_transaction_survive_a_crash_before_the_journal_on_postgres_with_uuid_keys: Postgres, Uuid, "payload_pg_uuid";
    payload_rows_deleted_in_the_case_transaction_survive_a_crash_before_the_journal_on_mariadb: Mysql, Int, "payload_my";
    payload_rows_deleted_in_the_case_transaction_survive_a_crash_before_the_journal_on_mariadb_with_uuid_keys: Mysql, Uuid, "payload_my_uuid";
}
