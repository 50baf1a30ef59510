//! The payload table store (`url = "crm://"`, `[technical.table]`) through
//! the binary, on an SQLite CRM: a payload linked by its foreign-key
//! column (no parsing) and one linked by a JSON rule on its decoded Base64
//! body (the rule's glob matching the name column) go with their due
//! leads, each audited as an object; a payload of a kept lead, one whose
//! name no rule matches, and one whose polymorphic type code maps to no
//! entity type stay; no name or body is printed. `check` says what each
//! foreign key from the payload table would do.

#[allow(dead_code)]
mod util;

use util::{run_in, sqlite};

const KEY: &str = "table-store-test-audit-key-0001";

fn config(dir: &std::path::Path) {
    std::fs::write(
        dir.join("lethe.toml"),
        format!(
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
"#
        ),
    )
    .unwrap();
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The CRM; `on_delete` given, `payloads.lead_id` is a foreign key with
/// that action (none: a plain column).
fn crm(dir: &std::path::Path, on_delete: Option<&str>) {
    let db = dir.join("crm.db");
    let fk = on_delete
        .map(|a| format!("REFERENCES leads(id) ON DELETE {a}"))
        .unwrap_or_default();
    sqlite(
        &db,
        &format!(
            "CREATE TABLE leads (id INTEGER PRIMARY KEY, modified_at TEXT);
             INSERT INTO leads VALUES (1, '2020-01-01'), (2, '2020-01-01'), (3, '2026-01-01'), (4, '2020-01-01');
             CREATE TABLE payloads (id INTEGER PRIMARY KEY, filename TEXT, body TEXT, modified_on TEXT, version INTEGER,
                lead_id INTEGER {fk}, objectid TEXT, objecttypecode TEXT);
             INSERT INTO payloads VALUES
               (10, 'jane.doe@example.com.pdf', '{}', '2020-01-02', 1, 1, NULL, NULL),
               (11, 'in/lead.json', '{}', '2020-01-02', 1, NULL, NULL, NULL),
               (12, 'kept.json', '{}', '2020-01-02', 1, 3, NULL, NULL),
               (13, 'notes.txt', '{}', '2020-01-02', 1, NULL, NULL, NULL),
               (14, 'note.bin', '{}', '2020-01-02', 1, NULL, '4', '4'),
               (15, 'other.bin', '{}', '2020-01-02', 1, NULL, '2', '99');",
            b64("%PDF secret body of Jane"),
            b64(r#"{"lead": {"id": 2}}"#),
            b64(r#"{"lead": {"id": 3}}"#),
            b64(r#"{"lead": {"id": 1}}"#),
            b64("a note on lead 4"),
            b64("a note on something else"),
        ),
    );
}

fn left(dir: &std::path::Path) -> String {
    sqlite(&dir.join("crm.db"), "SELECT id FROM payloads ORDER BY id")
}

#[test]
fn payload_rows_go_with_their_due_leads_by_column_or_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    config(dir);
    crm(dir, None);
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
    assert_eq!(left(dir), "12\n13\n15\n");
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
    assert_eq!(left(dir), "12\n13\n15\n");
}

#[test]
fn check_says_what_each_foreign_key_would_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    config(dir);
    crm(dir, Some("CASCADE"));
    let check = run_in(dir, &["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains("payloads.lead_id → lead")
            && check.stdout.contains("ON DELETE CASCADE"),
        "{check:?}"
    );
}

fn audited_objects(dir: &std::path::Path) -> String {
    sqlite(
        &dir.join("state.db"),
        "SELECT count(*) FROM audit WHERE action = 'delete-object'",
    )
    .trim()
    .to_string()
}

#[test]
fn a_restricting_foreign_key_never_fails_a_case_payload_rows_go_in_its_transaction() {
    for action in ["RESTRICT", "NO ACTION"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        config(dir);
        crm(dir, Some(action));
        assert_eq!(run_in(dir, &["index"]).code, 0);
        let plan = run_in(dir, &["plan", "--as-of", "2026-06-01", "--format", "json"]);
        assert_eq!(plan.code, 0, "{plan:?}");
        let apply = run_in(dir, &["apply", "--format", "json"]);
        assert_eq!(apply.code, 0, "{action}: {apply:?}");
        let r: serde_json::Value = serde_json::from_str(&apply.stdout).unwrap();
        let r = &r["apply"];
        assert_eq!(r["cases_done"], 3, "{action}: {r:#}");
        assert_eq!(r["cases_failed"], 0, "{action}: {r:#}");
        assert_eq!(r["objects_deleted"], 3, "{action}: {r:#}");
        assert_eq!(r["objects_already_gone"], 0, "{action}: {r:#}");
        assert_eq!(left(dir), "12\n13\n15\n");
        assert_eq!(
            sqlite(&dir.join("crm.db"), "SELECT id FROM leads ORDER BY id"),
            "3\n"
        );
        // One record per payload row, none twice; the journal agrees.
        assert_eq!(audited_objects(dir), "3");
        assert_eq!(
            sqlite(
                &dir.join("state.db"),
                "SELECT count(*) FROM plan_objects WHERE status = 'deleted'"
            )
            .trim(),
            "3"
        );
        assert_eq!(run_in(dir, &["audit", "verify"]).code, 0);
    }
}

#[test]
fn a_cascading_foreign_key_never_takes_a_payload_lethe_did_not_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    config(dir);
    crm(dir, Some("CASCADE"));
    assert_eq!(run_in(dir, &["index"]).code, 0);
    let plan = run_in(dir, &["plan", "--as-of", "2026-06-01", "--format", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    // Held after the plan: row 10 references lead 1, which the plan deletes.
    let hold = run_in(dir, &["hold", "add", "object:10", "--reason", "LH-1"]);
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
    assert_eq!(left(dir), "10\n12\n13\n15\n");
    assert_eq!(
        sqlite(&dir.join("crm.db"), "SELECT id FROM leads ORDER BY id"),
        "1\n3\n"
    );
    assert_eq!(audited_objects(dir), "2");
}
