//! The payload table store (`url = "crm://"`, `[technical.table]`) through
//! the binary: a payload linked by its foreign-key column (no parsing) and
//! one linked by a JSON rule on its decoded Base64 body (the rule's glob
//! matching the name column) go with their due leads, each audited as an
//! object; a payload of a kept lead, one whose name no rule matches, and
//! one whose polymorphic type code maps to no entity type stay; no name or
//! body is printed. `check` says what each foreign key from the payload
//! table would do.
//!
//! The foreign-key tests (payload rows deleted in the case's transaction:
//! RESTRICT and NO ACTION never fail a case, CASCADE never takes a row
//! lethe did not plan) run on SQLite, PostgreSQL and MariaDB, with integer,
//! text and (on the servers) UUID keys; so does a sweep with UUID refs
//! typed in another spelling than the server prints. Servers come from
//! LETHE_TEST_POSTGRES_URL and LETHE_TEST_MYSQL_URL; each test gets a
//! schema (PostgreSQL) or database (MariaDB) of its own,
//! `lethe_ts_<pid>_<test>`, dropped when it ends. A backend whose URL is
//! not set skips with a note; under CI=true that is a failure.

#[allow(dead_code)]
mod util;

use std::path::{Path, PathBuf};

use util::{run_in, sqlite};

const KEY: &str = "table-store-test-audit-key-0001";

/// The CRM's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
    Mysql,
}

/// How the leads' and the payload rows' keys (and so the foreign key) are
/// typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keys {
    /// INTEGER / BIGINT.
    Int,
    /// TEXT / VARCHAR, keys like `k-1`.
    Text,
    /// TEXT / VARCHAR, keys of digits (`1`): text that reads as a number.
    Digits,
    /// UUID (the servers only).
    Uuid,
}

/// A test's CRM: a file in its folder (SQLite), or a schema (PostgreSQL)
/// or database (MariaDB) of its own on the server, dropped when it goes.
struct Crm {
    db: Db,
    keys: Keys,
    dir: PathBuf,
    /// `[crm] url` of the test's lethe.toml.
    url: String,
    /// What the table names are prefixed with (the PostgreSQL schema).
    prefix: String,
    /// The admin URL and the statement that drops the test's schema or
    /// database.
    drop: Option<(String, String)>,
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

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
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
    /// A fresh CRM for the test `test` in `dir`; None (with a note) when the
    /// backend's server is not configured.
    fn new(db: Db, keys: Keys, dir: &Path, test: &str) -> Option<Crm> {
        let tag = format!("lethe_ts_{}_{test}", std::process::id());
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
            dir: dir.to_path_buf(),
            url,
            prefix,
            drop,
        })
    }

    /// Runs statements on the CRM.
    fn exec(&self, sql: &[String]) {
        match self.db {
            Db::Sqlite => {
                sqlite(&self.dir.join("crm.db"), &sql.join(";\n"));
            }
            _ => block(exec_on(&self.url, sql)),
        }
    }

    /// The key of lead or payload row `n`, as the database gives it.
    fn key(&self, n: u32) -> String {
        match self.keys {
            Keys::Int => n.to_string(),
            Keys::Text => format!("k-{n}"),
            Keys::Digits => n.to_string(),
            // Letters too, so that a ref in capitals is another spelling.
            Keys::Uuid => format!("abcdef00-0000-4000-8000-{n:012}"),
        }
    }

    /// That key as an SQL literal.
    fn lit(&self, n: u32) -> String {
        match self.keys {
            Keys::Int => n.to_string(),
            _ => format!("'{}'", self.key(n)),
        }
    }

    /// That key as a JSON value.
    fn json(&self, n: u32) -> String {
        match self.keys {
            Keys::Int => n.to_string(),
            _ => format!("\"{}\"", self.key(n)),
        }
    }

    /// The numbers of the rows left in `table`, one a line, ascending.
    fn left_in(&self, table: &str) -> String {
        let sql = match self.db {
            Db::Sqlite => format!("SELECT id FROM {table}"),
            Db::Postgres => format!("SELECT CAST(id AS TEXT) FROM {}{table}", self.prefix),
            Db::Mysql => format!("SELECT CAST(id AS CHAR) FROM {table}"),
        };
        let keys: Vec<String> = match self.db {
            Db::Sqlite => sqlite(&self.dir.join("crm.db"), &sql)
                .lines()
                .map(str::to_string)
                .collect(),
            _ => block(async {
                sqlx::any::install_default_drivers();
                let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                rows
            }),
        };
        let mut ns: Vec<u32> = keys
            .iter()
            .map(|k| {
                // The number is the key's last run of digits.
                let n = k.rsplit(|c: char| !c.is_ascii_digit()).next();
                n.and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a key of the fixture: {k}"))
            })
            .collect();
        ns.sort();
        ns.iter().map(|n| format!("{n}\n")).collect()
    }

    /// The payload rows left.
    fn left(&self) -> String {
        self.left_in("payloads")
    }

    /// The leads left.
    fn leads(&self) -> String {
        self.left_in("leads")
    }
}

impl Drop for Crm {
    fn drop(&mut self) {
        if let Some((admin, drop)) = &self.drop {
            let (admin, drop) = (admin.clone(), drop.clone());
            // Its own thread: a test may be inside a runtime.
            let _ = std::thread::spawn(move || block(exec_on(&admin, &[drop]))).join();
        }
    }
}

fn config(crm: &Crm) {
    let p = &crm.prefix;
    std::fs::write(
        crm.dir.join("lethe.toml"),
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
encoding = "base64"
name = "filename"
modified = "modified_on"
version = "version"
links = {{ lead = "lead_id" }}

[technical.table.polymorphic]
id = "objectid"
type = "objecttypecode"
types = {{ "4" = "lead" }}

[[technical.link]]
glob = "**/*.json"
json = "$.lead.id"
entity = "lead"

[[policy]]
name = "leads"
root = "lead"
retain = "24 months"
basis = "GDPR Art. 5(1)(e)"

[safety]
max_delete_fraction = 1.0

[state]
url = "sqlite://state.db"

[audit]
key = "{KEY}"
"#,
            url = crm.url
        ),
    )
    .unwrap();
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The CRM's tables; `on_delete` given, `payloads.lead_id` is a foreign
/// key with that action (none: a plain column).
fn tables(crm: &Crm, on_delete: Option<&str>) {
    let p = &crm.prefix;
    let (key, clock, modified, text, body, int) = match (crm.db, crm.keys) {
        (Db::Sqlite, Keys::Int) => ("INTEGER", "TEXT", "TEXT", "TEXT", "TEXT", "INTEGER"),
        (Db::Sqlite, _) => ("TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "INTEGER"),
        (Db::Postgres, k) => (
            match k {
                Keys::Int => "BIGINT",
                Keys::Text | Keys::Digits => "TEXT",
                Keys::Uuid => "UUID",
            },
            "TIMESTAMP",
            "TIMESTAMPTZ",
            "TEXT",
            "TEXT",
            "BIGINT",
        ),
        (Db::Mysql, k) => (
            match k {
                Keys::Int => "BIGINT",
                Keys::Text | Keys::Digits => "VARCHAR(64)",
                Keys::Uuid => "UUID",
            },
            "DATETIME",
            "DATETIME",
            "VARCHAR(255)",
            "LONGTEXT",
            "BIGINT",
        ),
    };
    let fk = on_delete
        .map(|a| format!(", FOREIGN KEY (lead_id) REFERENCES {p}leads(id) ON DELETE {a}"))
        .unwrap_or_default();
    let k = |n| crm.lit(n);
    let row = |id: u32, name: &str, body: String, lead: Option<u32>, obj: Option<(u32, &str)>| {
        format!(
            "({}, '{name}', '{body}', '2020-01-02', 1, {}, {}, {})",
            k(id),
            lead.map_or("NULL".into(), k),
            obj.map_or("NULL".into(), |(n, _)| format!("'{}'", crm.key(n))),
            obj.map_or("NULL".into(), |(_, c)| format!("'{c}'")),
        )
    };
    crm.exec(&[
        format!("CREATE TABLE {p}leads (id {key} PRIMARY KEY, modified_at {clock})"),
        format!(
            "INSERT INTO {p}leads VALUES ({}, '2020-01-01'), ({}, '2020-01-01'), ({}, '2026-01-01'), ({}, '2020-01-01')",
            k(1),
            k(2),
            k(3),
            k(4)
        ),
        format!(
            "CREATE TABLE {p}payloads (id {key} PRIMARY KEY, filename {text}, body {body}, modified_on {modified}, version {int},
                lead_id {key}, objectid {text}, objecttypecode {text}{fk})"
        ),
        format!(
            "INSERT INTO {p}payloads VALUES {}, {}, {}, {}, {}, {}",
            row(10, "jane.doe@example.com.pdf", b64("%PDF secret body of Jane"), Some(1), None),
            row(11, "in/lead.json", b64(&format!(r#"{{"lead": {{"id": {}}}}}"#, crm.json(2))), None, None),
            row(12, "kept.json", b64(&format!(r#"{{"lead": {{"id": {}}}}}"#, crm.json(3))), Some(3), None),
            row(13, "notes.txt", b64(&format!(r#"{{"lead": {{"id": {}}}}}"#, crm.json(1))), None, None),
            row(14, "note.bin", b64("a note on lead 4"), None, Some((4, "4"))),
            row(15, "other.bin", b64("a note on something else"), None, Some((2, "99"))),
        ),
    ]);
}

/// A CRM of integer keys in SQLite, set up in `dir`.
fn sqlite_crm(dir: &Path, on_delete: Option<&str>) -> Crm {
    let crm = Crm::new(Db::Sqlite, Keys::Int, dir, "").unwrap();
    config(&crm);
    tables(&crm, on_delete);
    crm
}

#[test]
fn payload_rows_go_with_their_due_leads_by_column_or_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let crm = sqlite_crm(dir, None);
    let index = run_in(dir, &["index", "--format", "json"]);
    assert_eq!(index.code, 0, "{index:?}");
    let plan = run_in(dir, &["plan", "--as-of", "2026-06-01", "--format", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(p["objects"]["delete"], 3, "{p:#}");
    assert_eq!(p["objects"]["unlinked"], 2, "{p:#}");
    let apply = run_in(dir, &["apply", "--format", "json"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    // 10 by its lead_id, 11 by its JSON body, 14 by objectid + type code 4.
    assert_eq!(crm.left(), "12\n13\n15\n");
    let records = sqlite(
        &dir.join("state.db"),
        "SELECT count(*) FROM audit WHERE action = 'delete-object'",
    );
    assert_eq!(records.trim(), "3");
    for out in [&index, &plan, &apply] {
        for secret in ["jane.doe", "secret body", "in/lead.json", "notes.txt"] {
            assert!(
                !out.stdout.contains(secret) && !out.stderr.contains(secret),
                "{secret} printed: {out:?}"
            );
        }
    }
    // Again: nothing more to do.
    let again = run_in(dir, &["sweep", "--as-of", "2026-06-01", "--format", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(crm.left(), "12\n13\n15\n");
}

#[test]
fn check_says_what_each_foreign_key_would_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _crm = sqlite_crm(dir, Some("CASCADE"));
    let check = run_in(dir, &["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains("payloads.lead_id → lead")
            && check.stdout.contains("ON DELETE CASCADE"),
        "{check:?}"
    );
}

fn audited_objects(dir: &Path) -> String {
    sqlite(
        &dir.join("state.db"),
        "SELECT count(*) FROM audit WHERE action = 'delete-object'",
    )
    .trim()
    .to_string()
}

/// `check` finds the foreign key in the catalogue and says that lethe
/// deletes its rows in the case's transaction.
fn check_names(dir: &Path, action: &str) {
    let check = run_in(dir, &["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check
            .stdout
            .contains(&format!("payloads.lead_id → lead (ON DELETE {action})"))
            && check.stdout.contains("in its case's transaction"),
        "{action}: {check:?}"
    );
}

/// RESTRICT and NO ACTION: the payload row that references a due lead goes
/// in its case's transaction, before the lead; no case fails.
fn a_restricting_foreign_key_never_fails_a_case_payload_rows_go_in_its_transaction(
    db: Db,
    keys: Keys,
    test: &str,
) {
    for (action, tag) in [("RESTRICT", "r"), ("NO ACTION", "n")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let Some(crm) = Crm::new(db, keys, dir, &format!("{test}_{tag}")) else {
            return;
        };
        config(&crm);
        tables(&crm, Some(action));
        check_names(dir, action);
        let index = run_in(dir, &["index"]);
        assert_eq!(index.code, 0, "{index:?}");
        let plan = run_in(dir, &["plan", "--as-of", "2026-06-01", "--format", "json"]);
        assert_eq!(plan.code, 0, "{plan:?}");
        let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
        assert_eq!(p["objects"]["delete"], 3, "{action}: {p:#}");
        let apply = run_in(dir, &["apply", "--format", "json"]);
        assert_eq!(apply.code, 0, "{action}: {apply:?}");
        let r: serde_json::Value = serde_json::from_str(&apply.stdout).unwrap();
        let r = &r["apply"];
        assert_eq!(r["cases_done"], 3, "{action}: {r:#}");
        assert_eq!(r["cases_failed"], 0, "{action}: {r:#}");
        assert_eq!(r["objects_deleted"], 3, "{action}: {r:#}");
        assert_eq!(r["objects_already_gone"], 0, "{action}: {r:#}");
        assert_eq!(crm.left(), "12\n13\n15\n", "{action}");
        assert_eq!(crm.leads(), "3\n", "{action}");
        // One record per payload row, none twice; the journal agrees.
        assert_eq!(audited_objects(dir), "3", "{action}");
        assert_eq!(
            sqlite(
                &dir.join("state.db"),
                "SELECT count(*) FROM plan_objects WHERE status = 'deleted'"
            )
            .trim(),
            "3",
            "{action}"
        );
        assert_eq!(run_in(dir, &["audit", "verify"]).code, 0, "{action}");
    }
}

/// CASCADE: a payload row held after the plan keeps its lead's case, so
/// the cascade never takes it.
fn a_cascading_foreign_key_never_takes_a_payload_lethe_did_not_plan(
    db: Db,
    keys: Keys,
    test: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(crm) = Crm::new(db, keys, dir, test) else {
        return;
    };
    config(&crm);
    tables(&crm, Some("CASCADE"));
    check_names(dir, "CASCADE");
    let index = run_in(dir, &["index"]);
    assert_eq!(index.code, 0, "{index:?}");
    let plan = run_in(dir, &["plan", "--as-of", "2026-06-01", "--format", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    // Held after the plan: row 10 references lead 1, which the plan deletes.
    let held = format!("object:{}", crm.key(10));
    let hold = run_in(dir, &["hold", "add", &held, "--reason", "LH-1"]);
    assert_eq!(hold.code, 0, "{hold:?}");
    let apply = run_in(dir, &["apply", "--format", "json"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let r: serde_json::Value = serde_json::from_str(&apply.stdout).unwrap();
    let r = &r["apply"];
    assert_eq!(r["cases_done"], 2, "{r:#}");
    assert_eq!(r["cases_skipped"], 1, "{r:#}");
    assert!(
        r["skipped_reasons"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("payload row the plan does not delete")),
        "{r:#}"
    );
    // The held row and its lead stay; the rest went.
    assert_eq!(crm.left(), "10\n12\n13\n15\n");
    assert_eq!(crm.leads(), "1\n3\n");
    assert_eq!(audited_objects(dir), "2");
}

/// A writer that re-encodes a body since the index read it — the same
/// bytes decoded, line breaks in the Base64, within the same second and
/// without a new version — changed the row as lethe judges it (the stored
/// length): the delete spares it, in the object phase (row 11, linked by
/// its body) and, with a foreign key, in the case's transaction (row 10,
/// whose lead's case is then kept). Indexed again, both go.
fn a_row_reencoded_since_the_index_is_spared_by_its_stored_length(db: Db, test: &str) {
    for (fk, tag) in [(None, "plain"), (Some("RESTRICT"), "fk")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let Some(crm) = Crm::new(db, Keys::Int, dir, &format!("{test}_{tag}")) else {
            return;
        };
        config(&crm);
        tables(&crm, fk);
        for step in ["index", "plan --as-of 2026-06-01"] {
            let out = run_in(dir, &step.split(' ').collect::<Vec<_>>());
            assert_eq!(out.code, 0, "{tag} {step}: {out:?}");
        }
        let p = &crm.prefix;
        let reencoded = match db {
            Db::Sqlite => "substr(body, 1, 4) || char(13, 10) || substr(body, 5)".to_string(),
            Db::Postgres => {
                "substr(body, 1, 4) || chr(13) || chr(10) || substr(body, 5)".to_string()
            }
            Db::Mysql => {
                "CONCAT(SUBSTRING(body, 1, 4), CHAR(13, 10 USING utf8mb4), SUBSTRING(body, 5))"
                    .to_string()
            }
        };
        crm.exec(&[format!(
            "UPDATE {p}payloads SET body = {reencoded} WHERE id IN (10, 11)"
        )]);
        let apply = run_in(dir, &["apply", "--format", "json"]);
        let r: serde_json::Value =
            serde_json::from_str(&apply.stdout).unwrap_or_else(|e| panic!("{tag}: {e}: {apply:?}"));
        let r = &r["apply"];
        // Row 14 (lead 4, by its polymorphic pair) goes as planned.
        assert_eq!(crm.left(), "10\n11\n12\n13\n15\n", "{tag}: {r:#}");
        assert_eq!(r["objects_deleted"], 1, "{tag}: {r:#}");
        if fk.is_some() {
            // Lead 1's row changed: its case stays, with the lead.
            assert_eq!(crm.leads(), "1\n3\n", "{tag}: {r:#}");
        } else {
            assert_eq!(r["objects_skipped"], 2, "{tag}: {r:#}");
            assert_eq!(crm.leads(), "3\n", "{tag}: {r:#}");
        }
        let again = run_in(dir, &["sweep", "--as-of", "2026-06-01", "--format", "json"]);
        assert_eq!(again.code, 0, "{tag}: {again:?}");
        assert_eq!(crm.left(), "12\n13\n15\n", "{tag}: {again:?}");
        assert_eq!(crm.leads(), "3\n", "{tag}");
    }
}

#[test]
fn a_row_reencoded_since_the_index_is_spared_sqlite() {
    a_row_reencoded_since_the_index_is_spared_by_its_stored_length(Db::Sqlite, "reenc_sqlite");
}

#[test]
fn a_row_reencoded_since_the_index_is_spared_postgres() {
    a_row_reencoded_since_the_index_is_spared_by_its_stored_length(Db::Postgres, "reenc_pg");
}

#[test]
fn a_row_reencoded_since_the_index_is_spared_mysql() {
    a_row_reencoded_since_the_index_is_spared_by_its_stored_length(Db::Mysql, "reenc_my");
}

/// One module per backend, one test per (case, key type): a failing
/// backend or key type hides none of the others.
macro_rules! fk_tests {
    ($($backend:ident: $db:expr => [$($keys:ident),* $(,)?];)*) => {$(
        mod $backend {
            $(
                #[allow(non_snake_case)]
                mod $keys {
                    use super::super::{Db, Keys};
                    #[test]
                    fn a_restricting_foreign_key_never_fails_a_case_payload_rows_go_in_its_transaction() {
                        super::super::a_restricting_foreign_key_never_fails_a_case_payload_rows_go_in_its_transaction(
                            $db,
                            Keys::$keys,
                            &format!("{}_{}_restrict", stringify!($backend), stringify!($keys)).to_lowercase(),
                        );
                    }
                    #[test]
                    fn a_cascading_foreign_key_never_takes_a_payload_lethe_did_not_plan() {
                        super::super::a_cascading_foreign_key_never_takes_a_payload_lethe_did_not_plan(
                            $db,
                            Keys::$keys,
                            &format!("{}_{}_cascade", stringify!($backend), stringify!($keys)).to_lowercase(),
                        );
                    }
                }
            )*
        }
    )*};
}

fk_tests! {
    sqlite: Db::Sqlite => [Int, Text, Digits];
    postgres: Db::Postgres => [Int, Text, Digits, Uuid];
    mysql: Db::Mysql => [Int, Text, Digits, Uuid];
}

/// UUID keys through the command line (the server's UUID type): `check`
/// passes; a ref in capitals or in braces names the row the server prints
/// in lower case — a hold on it is stored in that text and keeps the lead,
/// `explain` finds it — and a ref that is no UUID is refused with a message
/// that says so, never matched against another row. The sweep takes the
/// due leads and their payload rows and nothing else.
fn uuid_refs_name_the_row_in_any_spelling(db: Db, test: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(crm) = Crm::new(db, Keys::Uuid, dir, test) else {
        return;
    };
    config(&crm);
    tables(&crm, Some("RESTRICT"));
    check_names(dir, "RESTRICT");
    let (one, two) = (crm.key(1), crm.key(2));
    // Regression: a hold typed in capitals was stored as typed on MariaDB
    // (which found the row) and then held nothing in the plan.
    let hold = run_in(
        dir,
        &[
            "hold",
            "add",
            &format!("lead:{}", one.to_uppercase()),
            "--reason",
            "LH-7",
        ],
    );
    assert_eq!(hold.code, 0, "{hold:?}");
    assert!(hold.stdout.contains(&format!("lead:{one}")), "{hold:?}");
    for bad in [
        "lead:not-a-uuid",
        "lead:1",
        "lead:abcdef00-0000-4000-8000-00000000000",
    ] {
        let refused = run_in(dir, &["hold", "add", bad, "--reason", "x"]);
        assert_eq!(refused.code, 2, "{bad}: {refused:?}");
        assert!(
            refused.stderr.contains("keys are UUIDs"),
            "{bad}: {refused:?}"
        );
        let explain = run_in(dir, &["explain", bad]);
        assert_eq!(explain.code, 2, "{bad}: {explain:?}");
    }
    // A UUID that is no lead's.
    let absent = run_in(
        dir,
        &[
            "hold",
            "add",
            "lead:abcdef00-0000-4000-8000-000000000099",
            "--reason",
            "x",
        ],
    );
    assert_eq!(absent.code, 2, "{absent:?}");
    assert!(absent.stderr.contains("not in the CRM"), "{absent:?}");
    let explain = run_in(
        dir,
        &[
            "explain",
            &format!("lead:{{{}}}", two.to_uppercase()),
            "--as-of",
            "2026-06-01",
            "--format",
            "json",
        ],
    );
    assert_eq!(explain.code, 0, "{explain:?}");
    let e: serde_json::Value = serde_json::from_str(&explain.stdout).unwrap();
    assert_eq!(e["entity"], format!("lead:{two}"), "{e:#}");
    assert_eq!(e["exists"], true, "{e:#}");
    assert_eq!(e["deleted_by_next_sweep"], true, "{e:#}");

    let sweep = run_in(dir, &["sweep", "--as-of", "2026-06-01", "--format", "json"]);
    assert_eq!(sweep.code, 0, "{sweep:?}");
    // Lead 1 is held (its payload row 10 stays), 3 is recent; 2 and 4 go
    // with rows 11 (by its JSON body) and 14 (by objectid, type code 4).
    assert_eq!(crm.leads(), "1\n3\n");
    assert_eq!(crm.left(), "10\n12\n13\n15\n");
    assert_eq!(audited_objects(dir), "2");
    assert_eq!(run_in(dir, &["audit", "verify"]).code, 0);
}

mod uuid_refs {
    #[test]
    fn postgres() {
        super::uuid_refs_name_the_row_in_any_spelling(super::Db::Postgres, "uuid_refs_pg");
    }

    #[test]
    fn mysql() {
        super::uuid_refs_name_the_row_in_any_spelling(super::Db::Mysql, "uuid_refs_my");
    }
}

/// The index reads bodies a group at a time (one statement per group of
/// the listing): over several groups, a body larger than the per-row cap
/// (read alone) and one that is not Base64 (unreadable, as read alone),
/// it finds exactly the links reading each row gives: row `i` names lead
/// `i`.
#[test]
fn the_index_reads_bodies_a_group_at_a_time_and_finds_what_row_by_row_reads_find() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let crm = Crm::new(Db::Sqlite, Keys::Int, dir, "").unwrap();
    config(&crm);
    tables(&crm, None);
    let n = 300u32;
    let big = 150u32;
    let mut rows = Vec::new();
    for i in 100..100 + n {
        let body = if i == 222 {
            "'not base64 at all!'".to_string()
        } else if i == big {
            // Over a megabyte decoded, built by SQLite (too long for an
            // argument): the head, then "xxx" as "eHh4" many times.
            let mut head = format!(r#"{{"lead": {{"id": {i}}}, "pad": ""#);
            while head.len() % 3 != 0 {
                head.insert(1, ' ');
            }
            format!(
                "'{}' || replace(hex(zeroblob(400000)), '00', 'eHh4') || '{}'",
                b64(&head),
                b64(r#""}"#)
            )
        } else {
            let pad = "y".repeat((i % 50) as usize * 20);
            format!(
                "'{}'",
                b64(&format!(r#"{{"lead": {{"id": {i}}}, "pad": "{pad}"}}"#))
            )
        };
        rows.push(format!(
            "({i}, 'p/{i}.json', {body}, '2020-01-02', 1, NULL, NULL, NULL)"
        ));
    }
    for chunk in rows.chunks(50) {
        crm.exec(&[format!("INSERT INTO payloads VALUES {}", chunk.join(", "))]);
    }
    let index = run_in(dir, &["index", "--format", "json"]);
    assert_eq!(index.code, 0, "{index:?}");
    let found = sqlite(
        &dir.join("state.db"),
        "SELECT o.key || ' ' || l.entity_key FROM links l JOIN objects o ON o.id = l.object_id
         WHERE CAST(o.key AS INTEGER) >= 100 ORDER BY CAST(o.key AS INTEGER)",
    );
    let expected: String = (100..100 + n)
        .filter(|i| *i != 222)
        .map(|i| format!("{i} {i}\n"))
        .collect();
    assert_eq!(found, expected);
    let unreadable = sqlite(
        &dir.join("state.db"),
        "SELECT key FROM objects WHERE status = 'unreadable'",
    );
    assert_eq!(unreadable, "222\n");
    let size = sqlite(
        &dir.join("state.db"),
        &format!("SELECT size > 1048576 FROM objects WHERE key = '{big}'"),
    );
    assert_eq!(size, "1\n", "the large body is over the per-row cap");
}
