//! Helpers for the command-line integration tests: a temp folder holding a
//! small hand-made CRM (SQLite, built with the `sqlite3` CLI from
//! `lethe::crm::sample::SCHEMA`), a technical folder of payloads and a
//! `lethe.toml` from `lethe::demo::config_text`, plus a runner for the real
//! binary.
//!
//! The standard fixture, judged at `AS_OF` (2026-06-30) by the demo config
//! (policy unconverted-sales: lead, 24 months, keep_if contract; policy
//! lost-opportunities: opportunity, 12 months):
//!
//! | lead | clock                | children                        | verdict        |
//! |------|----------------------|---------------------------------|----------------|
//! | 1    | 2020-01-01           | none                            | due            |
//! | 2    | 2020-01-01           | opp 2 (won) → quote 2 → contract 1 | kept: contract |
//! | 3    | 2026-01-01           | none                            | young, due 2028-01-01 |
//! | 4    | NULL, NULL           | none                            | undatable      |
//! | 5    | 2021-03-15           | none                            | due            |
//! | 6    | 2020-06-01           | opp 6 (lost) → quote 6          | due (3 entities) |
//!
//! Files: `inbound/<1..6>/lead.json` (path rule), `quotes/2020/quote-2.xml`
//! and `quote-6.xml` (XML rule), `misc/readme.txt` (unlinked).

#[allow(dead_code)] // each test file uses some of it
pub mod odata;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

/// The evaluation instant of every plan in these tests.
pub const AS_OF: &str = "2026-06-30";
/// The audit key of the fixture config (>= 16 characters).
pub const AUDIT_KEY: &str = "integration-test-audit-key-0001";

/// The personal data planted in the fixture: must never leave the CRM and
/// the payload files.
pub const JANE_EMAIL: &str = "jane.doe@example.com";

/// One run of the binary.
#[derive(Clone, Debug)]
pub struct Out {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts exit code `code`, showing the output otherwise.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Out {
        assert_eq!(
            self.code,
            code,
            "`lethe {}` exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Out {
        self.expect(0)
    }

    /// Parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`lethe {}` did not print JSON ({e}):\n{}\n--- stderr\n{}",
                self.args.join(" "),
                self.stdout,
                self.stderr
            )
        })
    }

    #[track_caller]
    pub fn contains(&self, needle: &str) -> &Out {
        assert!(
            self.all().contains(needle),
            "`lethe {}` output lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The binary, with an environment that cannot leak into the tests.
pub fn lethe_command(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lethe"));
    c.current_dir(cwd)
        .env_remove("LETHE_CONFIG")
        .env_remove("LETHE_AUDIT_KEY")
        .env("USER", "tester");
    c
}

/// Runs the binary with `args` in `cwd`.
pub fn run_in(cwd: &Path, args: &[&str]) -> Out {
    let output = lethe_command(cwd)
        .args(args)
        .output()
        .expect("running the lethe binary");
    Out {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `sqlite3 DB SQL`; returns stdout (rows as `a|b`, one a line).
#[track_caller]
pub fn sqlite(db: &Path, sql: &str) -> String {
    let output = Command::new("sqlite3")
        .arg("-bail")
        .arg(db)
        .arg(sql)
        .output()
        .expect("running sqlite3 (is /usr/bin/sqlite3 installed?)");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "sqlite3 {} {sql:?} failed: {}",
        db.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every regular file and symlink under `root`, as `/`-separated keys,
/// sorted. Symlinks are listed, never followed.
pub fn list_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = format!("{prefix}{name}");
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                walk(&entry.path(), &format!("{key}/"), out);
            } else {
                out.push(key);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

/// Sets a file's modification time (seconds since the epoch).
pub fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open for set_mtime");
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
        .expect("set_modified");
}

pub const FIXTURE_SQL: &str = "
INSERT INTO leads VALUES (1, 'Jane', 'Doe', 'jane.doe@example.com', '+49 30 5550101', 'Acme GmbH', 'open', '2019-12-01T00:00:00Z', '2020-01-01T00:00:00Z');
INSERT INTO leads VALUES (2, 'Max', 'Muster', 'max.muster@example.com', '+49 30 5550102', 'Beta AG', 'open', '2019-12-01T00:00:00Z', '2020-01-01T00:00:00Z');
INSERT INTO leads VALUES (3, 'Erika', 'Young', 'erika.young@example.com', '+49 30 5550103', 'Gamma KG', 'open', '2025-12-01T00:00:00Z', '2026-01-01T00:00:00Z');
INSERT INTO leads VALUES (4, 'Nils', 'Nodate', 'nils.nodate@example.com', '+49 30 5550104', 'Delta eG', 'imported', NULL, NULL);
INSERT INTO leads VALUES (5, 'Olga', 'Old', 'olga.old@example.com', '+49 30 5550105', 'Epsilon SE', 'open', '2021-03-01T00:00:00Z', '2021-03-15T00:00:00Z');
INSERT INTO leads VALUES (6, 'Paul', 'Lost', 'paul.lost@example.com', '+49 30 5550106', 'Zeta Ltd', 'open', '2020-05-01T00:00:00Z', '2020-06-01T00:00:00Z');
INSERT INTO opportunities VALUES (2, 2, 'Beta deal', 'won', 12000, '2020-01-10T00:00:00Z');
INSERT INTO opportunities VALUES (6, 6, 'Zeta deal', 'lost', 8000, '2020-06-01T00:00:00Z');
INSERT INTO quotes VALUES (2, 2, 12000, '2020-01-15T00:00:00Z');
INSERT INTO quotes VALUES (6, 6, 8000, '2020-06-02T00:00:00Z');
INSERT INTO contracts VALUES (1, 2, '2020-01-20T00:00:00Z', '2020-01-20T00:00:00Z');
";

/// (id, first name, email) of the fixture's leads, for their payloads.
const LEADS: &[(i64, &str, &str)] = &[
    (1, "Jane", "jane.doe@example.com"),
    (2, "Max", "max.muster@example.com"),
    (3, "Erika", "erika.young@example.com"),
    (4, "Nils", "nils.nodate@example.com"),
    (5, "Olga", "olga.old@example.com"),
    (6, "Paul", "paul.lost@example.com"),
];

pub fn lead_json(id: i64, first: &str, email: &str) -> String {
    format!(
        "{{\n  \"attributes\": {{ \"type\": \"Lead\" }},\n  \"lead\": {{ \"id\": {id} }},\n  \"FirstName\": \"{first}\",\n  \"Email\": \"{email}\"\n}}\n"
    )
}

pub fn quote_xml(id: i64, email: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Quotation xmlns="urn:oasis:names:specification:ubl:schema:xsd:Quotation-2"
    xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
    xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2">
  <cbc:ID>{id}</cbc:ID>
  <cac:BuyerCustomerParty><cac:Party><cac:Contact><cbc:ElectronicMail>{email}</cbc:ElectronicMail></cac:Contact></cac:Party></cac:BuyerCustomerParty>
</Quotation>
"#
    )
}

/// The files of the standard fixture before any delete.
pub const ALL_FILES: &[&str] = &[
    "inbound/1/lead.json",
    "inbound/2/lead.json",
    "inbound/3/lead.json",
    "inbound/4/lead.json",
    "inbound/5/lead.json",
    "inbound/6/lead.json",
    "misc/readme.txt",
    "quotes/2020/quote-2.xml",
    "quotes/2020/quote-6.xml",
];

/// The files of the standard fixture after a normal apply at `AS_OF`.
pub const KEPT_FILES: &[&str] = &[
    "inbound/2/lead.json",
    "inbound/3/lead.json",
    "inbound/4/lead.json",
    "misc/readme.txt",
    "quotes/2020/quote-2.xml",
];

/// A temp folder with crm.db, technical/, lethe.toml (and, once lethe ran,
/// lethe-state.db). Remembers every command's output.
pub struct Fixture {
    tmp: tempfile::TempDir,
    log: RefCell<Vec<Out>>,
}

impl Fixture {
    /// An empty temp folder.
    pub fn empty() -> Fixture {
        Fixture {
            tmp: tempfile::Builder::new()
                .prefix("lethe-cli-")
                .tempdir()
                .expect("tempdir"),
            log: RefCell::new(Vec::new()),
        }
    }

    /// The standard fixture (see the module doc).
    pub fn new() -> Fixture {
        let f = Fixture::empty();
        sqlite(
            &f.crm(),
            &format!("{}\n{FIXTURE_SQL}", lethe::crm::sample::SCHEMA),
        );
        for (id, first, email) in LEADS {
            f.put(
                &format!("inbound/{id}/lead.json"),
                &lead_json(*id, first, email),
            );
        }
        f.put(
            "quotes/2020/quote-2.xml",
            &quote_xml(2, "max.muster@example.com"),
        );
        f.put(
            "quotes/2020/quote-6.xml",
            &quote_xml(6, "paul.lost@example.com"),
        );
        f.put("misc/readme.txt", "Integration drop folder.\n");
        f.write_config(&lethe::demo::config_text(AUDIT_KEY));
        f
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir().join("lethe.toml")
    }

    pub fn crm(&self) -> PathBuf {
        self.dir().join("crm.db")
    }

    pub fn tech(&self) -> PathBuf {
        self.dir().join("technical")
    }

    pub fn state(&self) -> PathBuf {
        self.dir().join("lethe-state.db")
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config()).expect("reading lethe.toml")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).expect("writing lethe.toml");
    }

    /// Replaces `from` (which must occur exactly once) in lethe.toml.
    #[track_caller]
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = self.config_text();
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} must occur once in lethe.toml"
        );
        self.write_config(&text.replacen(from, to, 1));
    }

    /// Writes a file into the technical folder.
    pub fn put(&self, key: &str, content: &str) {
        let path = self.tech().join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("writing a payload");
    }

    /// Runs `lethe -c DIR/lethe.toml ARGS…` with the fixture folder as the
    /// working directory.
    pub fn lethe(&self, args: &[&str]) -> Out {
        let config = self.config().to_string_lossy().into_owned();
        let mut all = vec!["-c", config.as_str()];
        all.extend_from_slice(args);
        let out = run_in(self.dir(), &all);
        self.log.borrow_mut().push(out.clone());
        out
    }

    /// Runs a command without `-c` (for usage errors and `demo`).
    pub fn lethe_bare(&self, args: &[&str]) -> Out {
        let out = run_in(self.dir(), args);
        self.log.borrow_mut().push(out.clone());
        out
    }

    /// `plan --as-of AS_OF --format json`, asserting exit 0.
    #[track_caller]
    pub fn plan(&self) -> serde_json::Value {
        self.lethe(&["plan", "--as-of", AS_OF, "--format", "json"])
            .ok()
            .json()
    }

    /// Every output so far.
    pub fn outputs(&self) -> Vec<Out> {
        self.log.borrow().clone()
    }

    #[track_caller]
    pub fn sql(&self, sql: &str) -> String {
        sqlite(&self.crm(), sql)
    }

    #[track_caller]
    pub fn state_sql(&self, sql: &str) -> String {
        sqlite(&self.state(), sql)
    }

    #[track_caller]
    pub fn count(&self, table: &str) -> i64 {
        self.sql(&format!("SELECT count(*) FROM {table}"))
            .trim()
            .parse()
            .expect("a count")
    }

    /// The ids in `table`, ascending.
    #[track_caller]
    pub fn ids(&self, table: &str) -> Vec<i64> {
        self.sql(&format!("SELECT id FROM {table} ORDER BY id"))
            .lines()
            .map(|l| l.trim().parse().expect("an id"))
            .collect()
    }

    /// Every row of the four CRM tables, as text.
    #[track_caller]
    pub fn crm_dump(&self) -> String {
        ["leads", "opportunities", "quotes", "contracts"]
            .iter()
            .map(|t| {
                format!(
                    "{t}:\n{}",
                    self.sql(&format!("SELECT * FROM {t} ORDER BY id"))
                )
            })
            .collect()
    }

    pub fn files(&self) -> Vec<String> {
        list_files(&self.tech())
    }

    /// Every file under the technical folder with its content.
    pub fn file_contents(&self) -> Vec<(String, Vec<u8>)> {
        self.files()
            .into_iter()
            .map(|k| {
                let bytes = std::fs::read(self.tech().join(&k)).unwrap_or_default();
                (k, bytes)
            })
            .collect()
    }
}

#[track_caller]
pub fn assert_files(actual: &[String], expected: &[&str]) {
    let actual: Vec<&str> = actual.iter().map(String::as_str).collect();
    assert_eq!(actual, expected, "files in technical/");
}

/// The URL of a server test's server from the variable `var`
/// (LETHE_TEST_POSTGRES_URL, LETHE_TEST_MYSQL_URL: admin URLs such as
/// postgres://postgres@127.0.0.1:5432/test). None, with a note naming
/// `what` is not tested, when unset; under CI=true a missing URL is a
/// failure.
#[allow(dead_code)] // the server tests' only
pub fn server_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} must be set under CI=true"
            );
            eprintln!("{var} not set: {what} is not tested here");
            None
        }
    }
}

/// The PostgreSQL server of the server tests ([`server_url`]).
#[allow(dead_code)] // the server tests' only
pub fn postgres_url(what: &str) -> Option<String> {
    server_url("LETHE_TEST_POSTGRES_URL", what)
}

/// A new, empty database `PREFIX_PID` on that server; databases left by
/// earlier runs under the same prefix go first. Returns its URL.
#[allow(dead_code)] // the server tests' only
pub async fn fresh_postgres_db(admin_url: &str, prefix: &str) -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let name = format!("{prefix}_{}", std::process::id());
    let admin = sqlx::AnyPool::connect(admin_url)
        .await
        .expect("PostgreSQL at LETHE_TEST_POSTGRES_URL");
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT CAST(datname AS TEXT) FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{prefix}\\_%"))
            .fetch_all(&admin)
            .await
            .unwrap();
    for db in stale.iter().chain([&name]) {
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .await
            .unwrap();
    }
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{name}")
}

/// `cp -a FROM TO`: a copy of a folder tree, links and times kept.
#[allow(dead_code)] // the crash and scale-out tests' only
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// moto's S3 server (PyPI, started by .ci/run) at LETHE_TEST_MOTO_ENDPOINT,
/// for versioned buckets and Object Lock. None, with a note, when unset;
/// under CI=true a missing URL is a failure.
#[allow(dead_code)] // the object-store tests' only
pub fn moto_endpoint() -> Option<String> {
    match std::env::var("LETHE_TEST_MOTO_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "LETHE_TEST_MOTO_ENDPOINT must be set under CI=true"
            );
            eprintln!("LETHE_TEST_MOTO_ENDPOINT not set: versioned S3 is not tested here");
            None
        }
    }
}

/// boto3, through tests/util/s3admin.py: what lethe's own code cannot vouch for.
#[allow(dead_code)] // the object-store tests' only
pub fn s3admin(endpoint: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/util/s3admin.py"
        ))
        .arg(endpoint)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "s3admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every (key, version id, is delete marker) under a prefix, as boto3 sees it.
#[allow(dead_code)] // the object-store tests' only
pub fn versions(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, String, bool)> {
    serde_json::from_str(&s3admin(endpoint, &["versions", bucket, prefix])).unwrap()
}
