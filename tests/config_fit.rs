//! Issue 15's reproduction: a Dataverse-shaped CRM (`lead`, `opportunity`,
//! `salesorder`; keys `leadid`, …; the opportunity's foreign key
//! `originatingleadid`) and a config with one typo. Before, `check` said
//! "every table and column readable" and `sweep` deleted the lead whose
//! opportunity has a sales order: SQLite read the double-quoted unknown
//! column `"leadid"` as the string 'leadid'. Each typo must now give exit 2
//! at `check`, `plan` and `sweep`, name the key's file:line and the real
//! columns, and delete nothing — on SQLite, PostgreSQL and MariaDB.

#[allow(dead_code)] // uses some of the helpers
mod util;

use std::path::Path;

use sqlx::Executor;
use util::{AUDIT_KEY, Out, run_in};

/// Four leads: L-1 and L-3 old and alone, L-2 old with an opportunity that
/// has a sales order (kept), L-4 recent.
fn crm_sql(prefix: &str, mysql: bool) -> Vec<String> {
    // `lead` is a reserved word on MariaDB (the window function).
    let t = |name: &str| {
        if mysql {
            format!("{prefix}`{name}`")
        } else {
            format!("{prefix}\"{name}\"")
        }
    };
    vec![
        format!(
            "CREATE TABLE {} (leadid VARCHAR(40) PRIMARY KEY, fullname VARCHAR(80), emailaddress1 VARCHAR(80), modifiedon VARCHAR(40))",
            t("lead")
        ),
        format!(
            "CREATE TABLE {} (opportunityid VARCHAR(40) PRIMARY KEY, originatingleadid VARCHAR(40), statecode INTEGER, modifiedon VARCHAR(40))",
            t("opportunity")
        ),
        format!(
            "CREATE TABLE {} (salesorderid VARCHAR(40) PRIMARY KEY, opportunityid VARCHAR(40), modifiedon VARCHAR(40))",
            t("salesorder")
        ),
        format!(
            "INSERT INTO {} VALUES ('L-1', 'Ann One', 'ann@example.com', '2020-01-10'), ('L-2', 'Bob Two', 'bob@example.com', '2020-02-10'), ('L-3', 'Cy Three', 'cy@example.com', '2020-03-10'), ('L-4', 'Di Four', 'di@example.com', '2026-06-01')",
            t("lead")
        ),
        format!(
            "INSERT INTO {} VALUES ('O-2', 'L-2', 1, '2020-02-11')",
            t("opportunity")
        ),
        format!(
            "INSERT INTO {} VALUES ('S-2', 'O-2', '2020-02-12')",
            t("salesorder")
        ),
    ]
}

fn config(crm_url: &str, prefix: &str) -> String {
    format!(
        r#"[crm]
url = "{crm_url}"

[crm.entities.lead]
table = "{prefix}lead"
key = "leadid"
clock = "modifiedon"
subject = ["emailaddress1"]

[crm.entities.opportunity]
table = "{prefix}opportunity"
key = "opportunityid"
clock = "modifiedon"
parent = {{ lead = "originatingleadid" }}

[crm.entities.salesorder]
table = "{prefix}salesorder"
key = "salesorderid"
clock = "modifiedon"
parent = {{ opportunity = "opportunityid" }}

[technical]
url = "technical"

[safety]
max_delete_fraction = 0.9

[[policy]]
name = "unconverted-sales"
root = "lead"
retain = "24 months"
keep_if = ["salesorder", {{ entity = "opportunity", where = "statecode = 1" }}]
basis = "GDPR Art. 5(1)(e)"

[audit]
key = "{AUDIT_KEY}"
"#
    )
}

/// (typo, replacement, the key it must be reported at, what the message names)
const TYPOS: &[(&str, &str, &str, &str)] = &[
    (
        "parent = { lead = \"originatingleadid\" }",
        "parent = { lead = \"leadid\" }",
        "crm.entities.opportunity.parent.lead",
        "did you mean `originatingleadid`?",
    ),
    (
        "key = \"leadid\"",
        "key = \"leadidd\"",
        "crm.entities.lead.key",
        "did you mean `leadid`?",
    ),
    (
        "clock = \"modifiedon\"\nparent = { lead",
        "clock = \"modifieon\"\nparent = { lead",
        "crm.entities.opportunity.clock",
        "did you mean `modifiedon`?",
    ),
    (
        "where = \"statecode = 1\"",
        "where = \"statecod = 1\"",
        "policy[0].keep_if[1]",
        "does not compile",
    ),
    (
        "where = \"statecode = 1\"",
        "where = '\"statecod\" = 1'",
        "policy[0].keep_if[1]",
        "statecod",
    ),
    (
        "table = \"{P}salesorder\"",
        "table = \"{P}salesorders\"",
        "crm.entities.salesorder.table",
        "did you mean",
    ),
];

fn lethe(dir: &Path, args: &[&str]) -> Out {
    let config = dir.join("lethe.toml").to_string_lossy().into_owned();
    let mut all = vec!["-c", config.as_str()];
    all.extend_from_slice(args);
    run_in(dir, &all)
}

async fn exec(url: &str, sql: &[String]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("the CRM database");
    for s in sql {
        pool.execute(sqlx::AssertSqlSafe(s.clone()))
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    pool.close().await;
}

async fn count(url: &str, table: &str) -> i64 {
    let pool = sqlx::AnyPool::connect(url).await.expect("the CRM database");
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM {table}"
    )))
    .fetch_one(&pool)
    .await
    .or(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"
    )))
    .fetch_one(&pool)
    .await)
    .unwrap_or_else(|e| panic!("counting {table}: {e}"));
    pool.close().await;
    n
}

/// Runs every typo against one CRM, then the right config.
async fn typos_refused_on(crm_url: &str, setup_url: &str, prefix: &str, dir: &Path) {
    let mysql = setup_url.starts_with("mysql");
    exec(setup_url, &crm_sql(prefix, mysql)).await;
    std::fs::create_dir_all(dir.join("technical/inbound/L-2")).unwrap();
    std::fs::write(dir.join("technical/inbound/L-2/lead.json"), "{}").unwrap();
    let good = config(crm_url, prefix);
    let q = |name: &str| {
        if mysql {
            format!("{prefix}`{name}`")
        } else {
            format!("{prefix}\"{name}\"")
        }
    };
    let leads = q("lead");
    for (from, to, key, names) in TYPOS {
        let (from, to) = (from.replace("{P}", prefix), to.replace("{P}", prefix));
        assert_eq!(good.matches(&from).count(), 1, "{from}");
        let text = good.replacen(&from, &to, 1);
        std::fs::write(dir.join("lethe.toml"), &text).unwrap();
        let line = text[..text.find(&to).unwrap()].matches('\n').count() + 1;
        for command in [
            vec!["check"],
            vec!["plan", "--as-of", "2026-06-30"],
            vec!["sweep", "--as-of", "2026-06-30"],
        ] {
            let out = lethe(dir, &command);
            out.expect(2).contains(key).contains(names);
            // The location is the line of the typo (the key's own line, or
            // the policy's keep_if entry).
            assert!(
                out.stderr.contains(&format!("lethe.toml:{line}:")) || key.starts_with("policy"),
                "{key} not located at line {line}:\n{}",
                out.stderr
            );
            assert_eq!(count(setup_url, &leads).await, 4, "{command:?} with {to}");
        }
        // The table's real columns are listed.
        if key.ends_with(".key") {
            lethe(dir, &["check"]).contains("its columns: leadid, fullname");
        }
    }
    // The right config: check vouches for it, the sweep deletes exactly
    // the two due leads, and the lead with a sales order stays.
    std::fs::write(dir.join("lethe.toml"), &good).unwrap();
    lethe(dir, &["check"])
        .ok()
        .contains("every configured table and column is in the catalogue");
    lethe(dir, &["sweep", "--as-of", "2026-06-30"]).ok();
    assert_eq!(count(setup_url, &leads).await, 2);
    assert_eq!(count(setup_url, &q("salesorder")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_fit_the_crm_is_refused_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("crm.db");
    let url = format!("sqlite://{}", db.display());
    typos_refused_on(&url, &format!("{url}?mode=rwc"), "", tmp.path()).await;
}

fn server_url(var: &str) -> Option<String> {
    util::server_url(var, "that backend")
}

/// A fresh schema `lethe_{tag}_{pid}` on the PostgreSQL server: the admin
/// URL and the schema's name (none when the server is not configured).
async fn postgres_schema(tag: &str) -> Option<(String, String)> {
    let admin = server_url("LETHE_TEST_POSTGRES_URL")?;
    let schema = format!("lethe_{tag}_{}", std::process::id());
    exec(
        &admin,
        &[
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("CREATE SCHEMA {schema}"),
        ],
    )
    .await;
    Some((admin, schema))
}

/// A fresh database `lethe_{tag}_{pid}` on the MariaDB server: the admin
/// URL, the database's URL and its name.
async fn mariadb_database(tag: &str) -> Option<(String, String, String)> {
    let admin = server_url("LETHE_TEST_MYSQL_URL")?;
    let db = format!("lethe_{tag}_{}", std::process::id());
    exec(
        &admin,
        &[
            format!("DROP DATABASE IF EXISTS {db}"),
            format!("CREATE DATABASE {db}"),
        ],
    )
    .await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let url = format!("{base}/{db}");
    Some((admin, url, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_fit_the_crm_is_refused_on_postgres() {
    let Some((admin, schema)) = postgres_schema("fit").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    typos_refused_on(&admin, &admin, &format!("{schema}."), tmp.path()).await;
    exec(&admin, &[format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_does_not_fit_the_crm_is_refused_on_mariadb() {
    let Some((admin, url, db)) = mariadb_database("fit").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    typos_refused_on(&url, &url, "", tmp.path()).await;
    exec(&admin, &[format!("DROP DATABASE IF EXISTS {db}")]).await;
}

/// A key or foreign key of a type lethe cannot read a key from (binary,
/// exact decimal) is refused by `check`, `plan` and `sweep` with the
/// column's type, and nothing is deleted. (Read through the driver, such a
/// key came back as nothing: the scan dropped the row, and with it the
/// entity, from the plan without a word.)
async fn unreadable_key_types_refused_on(url: &str, prefix: &str, dir: &Path) {
    let mysql = url.starts_with("mysql");
    let (binary, decimal) = if mysql {
        ("VARBINARY(40)", "DECIMAL(12,0)")
    } else {
        ("BYTEA", "NUMERIC(12,0)")
    };
    let t = |p: &str, n: &str| {
        if mysql {
            format!("{p}`{n}`")
        } else {
            format!("{p}\"{n}\"")
        }
    };
    exec(
        url,
        &[
            format!(
                "CREATE TABLE {} (leadid {binary} PRIMARY KEY, fullname VARCHAR(80), emailaddress1 VARCHAR(80), modifiedon VARCHAR(40))",
                t(prefix, "lead")
            ),
            format!(
                "CREATE TABLE {} (opportunityid VARCHAR(40) PRIMARY KEY, originatingleadid {decimal}, statecode INTEGER, modifiedon VARCHAR(40))",
                t(prefix, "opportunity")
            ),
            format!(
                "CREATE TABLE {} (salesorderid VARCHAR(40) PRIMARY KEY, opportunityid VARCHAR(40), modifiedon VARCHAR(40))",
                t(prefix, "salesorder")
            ),
            format!(
                "INSERT INTO {} VALUES ('L-1', 'Ann One', 'ann@example.com', '2020-01-10')",
                t(prefix, "lead")
            ),
        ],
    )
    .await;
    std::fs::create_dir_all(dir.join("technical")).unwrap();
    std::fs::write(dir.join("lethe.toml"), config(url, prefix)).unwrap();
    for command in [
        vec!["check"],
        vec!["plan", "--as-of", "2026-06-30"],
        vec!["sweep", "--as-of", "2026-06-30"],
    ] {
        let out = lethe(dir, &command);
        out.expect(2)
            .contains("crm.entities.lead.key")
            .contains("column `leadid`")
            .contains("which lethe cannot read keys from")
            .contains("crm.entities.opportunity.parent.lead");
        assert_eq!(count(url, &t(prefix, "lead")).await, 1, "{command:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_of_an_unreadable_type_is_refused_on_postgres() {
    let Some((admin, schema)) = postgres_schema("fitkey").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    unreadable_key_types_refused_on(&admin, &format!("{schema}."), tmp.path()).await;
    exec(&admin, &[format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_of_an_unreadable_type_is_refused_on_mariadb() {
    let Some((admin, url, db)) = mariadb_database("fitkey").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    unreadable_key_types_refused_on(&url, "", tmp.path()).await;
    exec(&admin, &[format!("DROP DATABASE IF EXISTS {db}")]).await;
}

/// A row whose key is NULL (the column is no primary key) fails the read
/// on a server as on SQLite: left out, the sales order here would leave
/// lead L-2 without what keeps it. `plan` and `sweep` refuse (exit 1),
/// name the column, and nothing is deleted.
async fn null_keys_refused_on(url: &str, prefix: &str, dir: &Path) {
    let mysql = url.starts_with("mysql");
    let t = |n: &str| {
        if mysql {
            format!("{prefix}`{n}`")
        } else {
            format!("{prefix}\"{n}\"")
        }
    };
    let mut sql = crm_sql(prefix, mysql);
    sql.extend([
        format!("UPDATE {} SET statecode = 0", t("opportunity")),
        format!("DROP TABLE {}", t("salesorder")),
        format!(
            "CREATE TABLE {} (salesorderid VARCHAR(40), opportunityid VARCHAR(40), modifiedon VARCHAR(40))",
            t("salesorder")
        ),
        format!(
            "INSERT INTO {} VALUES (NULL, 'O-2', '2020-02-12')",
            t("salesorder")
        ),
    ]);
    exec(url, &sql).await;
    std::fs::create_dir_all(dir.join("technical")).unwrap();
    std::fs::write(dir.join("lethe.toml"), config(url, prefix)).unwrap();
    lethe(dir, &["index"]).ok();
    for command in [
        vec!["plan", "--as-of", "2026-06-30"],
        vec!["sweep", "--as-of", "2026-06-30"],
    ] {
        let out = lethe(dir, &command);
        out.expect(1)
            .contains("entity type `salesorder`")
            .contains("a row's salesorderid holds NULL");
        assert_eq!(count(url, &t("lead")).await, 4, "{command:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_key_is_refused_on_postgres() {
    let Some((admin, schema)) = postgres_schema("nullkey").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    null_keys_refused_on(&admin, &format!("{schema}."), tmp.path()).await;
    exec(&admin, &[format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_key_is_refused_on_mariadb() {
    let Some((admin, url, db)) = mariadb_database("nullkey").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    null_keys_refused_on(&url, "", tmp.path()).await;
    exec(&admin, &[format!("DROP DATABASE IF EXISTS {db}")]).await;
}
