//! Crash safety: a plan of more than 5,000 cases with linked objects is
//! applied by a `lethe apply` that is killed (SIGKILL) at 30 or more random
//! instants and aborted once at every failpoint (cargo feature
//! `failpoints`), then resumed to the end. The CRM and the store must equal
//! those of an uninterrupted apply of the same plan, the audit chain must
//! verify, and every deleted item must have exactly one audit record.

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
    for fp in [
        "apply::case-intent",
        "apply::case-deleted",
        "apply::object-intent",
        "apply::object-deleted",
        "apply::redact-before-rewrite",
        "apply::redact-rewritten",
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

/// Payload rows kept in a CRM table with a foreign key to their leads go
/// in the case's transaction: aborted between that transaction's commit
/// and its journal step, the resumed apply counts them deleted by lethe
/// (one `delete-object` record each) and ends like an uninterrupted one.
#[cfg(feature = "failpoints")]
#[test]
fn payload_rows_deleted_in_the_case_transaction_survive_a_crash_before_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("lethe.toml"),
        r#"
[crm]
url = "sqlite://crm.db"

[crm.entities.lead]
table = "leads"
key = "id"
clock = "modified_at"

[technical]
url = "crm://"

[technical.table]
table = "payloads"
key = "id"
body = "body"
encoding = "raw"
name = "filename"
modified = "modified_on"
version = "version"
links = { lead = "lead_id" }

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
    )
    .unwrap();
    let mut sql = String::from(
        "CREATE TABLE leads (id INTEGER PRIMARY KEY, modified_at TEXT);
         CREATE TABLE payloads (id INTEGER PRIMARY KEY, filename TEXT, body BLOB, modified_on TEXT,
            version INTEGER, lead_id INTEGER REFERENCES leads(id) ON DELETE RESTRICT);
         INSERT INTO leads VALUES (1000, '2026-05-01');
         INSERT INTO payloads VALUES (5000, 'kept.bin', X'6b657074', '2026-05-01', 1, 1000);",
    );
    for i in 1..=40 {
        sql.push_str(&format!(
            "INSERT INTO leads VALUES ({i}, '2020-01-01');
             INSERT INTO payloads VALUES ({p}, 'p.bin', X'7061796c6f6164', '2020-01-02', 1, {i});",
            p = 100 + i
        ));
    }
    sqlite(&base.join("crm.db"), &sql);
    assert!(run(&base, &["index"]).success());
    assert!(run(&base, &["plan", "--as-of", "2026-06-01"]).success());
    let state = base.join("lethe-state.db");
    let plan_id = sqlite(&state, "SELECT id FROM plans").trim().to_string();

    let reference = tmp.path().join("reference");
    util::copy_tree(&base, &reference);
    assert!(run(&reference, &["apply", &plan_id]).success());

    let crashed = tmp.path().join("crashed");
    util::copy_tree(&base, &crashed);
    let status = lethe(&crashed)
        .args(["apply", &plan_id])
        .env("FAILPOINTS", "apply::case-deleted=return")
        .status()
        .unwrap();
    assert!(!status.success(), "the failpoint was not reached");
    // The CRM committed the first batch; its journal step never ran.
    let after_crash = sqlite(&crashed.join("crm.db"), "SELECT count(*) FROM payloads");
    assert_eq!(after_crash.trim(), "36", "the first batch's rows went");
    assert!(run(&crashed, &["apply", &plan_id]).success());

    let dump = |dir: &Path| {
        ["leads", "payloads"]
            .iter()
            .map(|t| {
                sqlite(
                    &dir.join("crm.db"),
                    &format!("SELECT * FROM {t} ORDER BY id"),
                )
            })
            .collect::<Vec<_>>()
            .join("\n--\n")
    };
    assert_eq!(dump(&crashed), dump(&reference));
    assert_eq!(
        sqlite(&crashed.join("crm.db"), "SELECT id FROM payloads").trim(),
        "5000"
    );
    assert!(run(&crashed, &["audit", "verify"]).success());
    for dir in [&crashed, &reference] {
        let s = dir.join("lethe-state.db");
        assert_eq!(
            sqlite(
                &s,
                "SELECT count(*), count(DISTINCT pseudonym) FROM audit WHERE action = 'delete-object'"
            )
            .trim(),
            "40|40"
        );
        assert_eq!(
            sqlite(
                &s,
                "SELECT status, count(*) FROM plan_objects GROUP BY status ORDER BY status"
            )
            .trim(),
            "deleted|40"
        );
    }
}
