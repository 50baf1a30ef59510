//! Redaction of shared payloads and the residual scan, through the real
//! binary on the standard fixture (leads 1, 5 and 6 are due at AS_OF; 2, 3
//! and 4 stay): a CSV export, a JSON batch and an XML batch that hold rows
//! of due and kept leads are rewritten without the due leads' records,
//! every other byte kept; verify then reads the whole store for the due
//! leads' e-mail addresses and phone numbers.

#[allow(dead_code)] // uses some of the helpers
mod util;

use serde_json::Value;
use util::{AS_OF, Fixture};

/// A Windows export: BOM, `;`, CRLF and LF mixed, a quoted field with the
/// delimiter and a line break in it, no final newline.
const CSV: &str = "\u{feff}LeadId;Name;Email;Phone\r\n\
1;Jane;jane.doe@example.com;+49 30 5550101\r\n\
2;\"Max; the \"\"boss\"\"\nsecond line\";max.muster@example.com;\r\n\
5;Olga;OLGA.OLD@example.com;030-555-0105\n\
3;Erika;erika.young@example.com;\r\n\
6;Paul;paul.lost@example.com;+49 (30) 5550106";

const CSV_AFTER: &str = "\u{feff}LeadId;Name;Email;Phone\r\n\
2;\"Max; the \"\"boss\"\"\nsecond line\";max.muster@example.com;\r\n\
3;Erika;erika.young@example.com;\r\n";

const JSON: &str = r#"{
  "batch": "2020-01",
  "records": [
    { "lead": { "id": 1 }, "email": "jane.doe\u0040example.com", "note": "say \"hi\"" },
    {"lead":{"id":2},"email":"max.muster@example.com"},
    { "lead": { "id": 6 }, "nested": [[{"deep": ["paul.lost@example.com"]}]] },
    { "lead": { "id": 3 }, "email": "erika.young@example.com" }
  ]
}
"#;

const JSON_AFTER: &str = r#"{
  "batch": "2020-01",
  "records": [
    {"lead":{"id":2},"email":"max.muster@example.com"},
    { "lead": { "id": 3 }, "email": "erika.young@example.com" }
  ]
}
"#;

const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- nightly batch -->
<b:Batch xmlns:b="urn:example:batch">
  <b:Lead><b:Id>2</b:Id><b:Mail>max.muster@example.com</b:Mail></b:Lead>
  <b:Lead>
    <b:Id>5</b:Id>
    <b:Mail>olga.old&#64;example.com</b:Mail>
    <b:Note><![CDATA[<not a tag> & olga]]></b:Note>
  </b:Lead>
  <b:Lead><b:Id>4</b:Id><b:Mail>nils.nodate@example.com</b:Mail><b:Co>A &amp; B</b:Co></b:Lead>
</b:Batch>
"#;

const XML_AFTER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- nightly batch -->
<b:Batch xmlns:b="urn:example:batch">
  <b:Lead><b:Id>2</b:Id><b:Mail>max.muster@example.com</b:Mail></b:Lead>
  <b:Lead><b:Id>4</b:Id><b:Mail>nils.nodate@example.com</b:Mail><b:Co>A &amp; B</b:Co></b:Lead>
</b:Batch>
"#;

const RULES: &str = r#"
[[technical.link]]
glob = "batches/*.json"
json = "$.records[*].lead.id"
record = "$.records[*]"
entity = "lead"

[[technical.link]]
glob = "batches/*.xml"
xml = "/Batch/Lead/Id"
record = "/Batch/Lead"
entity = "lead"
"#;

fn shared_fixture() -> Fixture {
    let f = Fixture::new();
    f.put("exports/leads-2020.csv", CSV);
    f.put("batches/b.json", JSON);
    f.put("batches/b.xml", XML);
    f.edit_config(
        "[technical.orphans]",
        &format!("{RULES}\n[technical.orphans]"),
    );
    f
}

/// `lethe apply`, killed at `failpoint` (and with its temporary files in
/// `tmp`, when given).
#[cfg(feature = "failpoints")]
#[track_caller]
fn crash_at(f: &Fixture, failpoint: &str, tmp: Option<&std::path::Path>) {
    let mut apply = util::lethe_command(f.dir());
    apply
        .args(["-c", &f.config().to_string_lossy(), "apply"])
        .env("FAILPOINTS", format!("{failpoint}=return"));
    if let Some(tmp) = tmp {
        apply.env("TMPDIR", tmp);
    }
    let crashed = apply.status().expect("run lethe");
    assert!(
        !crashed.success(),
        "the failpoint {failpoint} was not reached"
    );
}

/// Puts the object `key` on hold.
fn hold(f: &Fixture, key: &str) {
    f.lethe(&[
        "hold",
        "add",
        &format!("object:{key}"),
        "--reason",
        "litigation",
    ])
    .ok();
}

/// `sweep --as-of AS_OF`, asserting exit 0 and that its plan removes
/// `records` records of entities absent from the CRM.
#[track_caller]
fn sweep_removing_absent_records(f: &Fixture, records: u64) {
    let sweep = f
        .lethe(&["sweep", "--as-of", AS_OF, "--format", "json"])
        .ok()
        .json();
    assert_eq!(
        n(&sweep["plan"]["objects"], "redact_absent_records"),
        records,
        "{sweep:#}"
    );
}

fn read(f: &Fixture, key: &str) -> String {
    String::from_utf8(std::fs::read(f.tech().join(key)).expect("read")).expect("UTF-8")
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v:#}"))
}

#[test]
fn shared_files_lose_exactly_the_due_records_and_verify_finds_nothing_left() {
    let f = shared_fixture();
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    let o = &plan["objects"];
    assert_eq!(n(o, "redact"), 3, "{o:#}");
    assert_eq!(n(o, "redact_records"), 3 + 2 + 1, "{o:#}");
    assert_eq!(n(o, "shared"), 0, "{o:#}");

    let sweep = f.lethe(&["sweep", "--as-of", AS_OF, "--format", "json"]);
    let json = sweep.ok().json();
    assert_eq!(read(&f, "exports/leads-2020.csv"), CSV_AFTER);
    assert_eq!(read(&f, "batches/b.json"), JSON_AFTER);
    assert_eq!(read(&f, "batches/b.xml"), XML_AFTER);
    let v = &json["verify"];
    assert!(
        n(v, "identifiers") >= 6,
        "three due leads, e-mail and phone: {v:#}"
    );
    assert_eq!(v["residual"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert!(n(v, "objects_scanned") >= 6, "{v:#}");

    // Measured, not assumed: no due lead's address is anywhere in the store.
    for (_, bytes) in f.file_contents() {
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for gone in ["jane.doe", "olga.old", "paul.lost", "5550101", "5550106"] {
            assert!(!text.contains(gone), "{gone} is still in the store");
        }
    }
    // One redact-object record per object, with counts and pseudonyms only.
    let audit = f.state_sql("SELECT detail FROM audit WHERE action = 'redact-object' ORDER BY seq");
    assert_eq!(audit.lines().count(), 3, "{audit}");
    for line in audit.lines() {
        let d: Value = serde_json::from_str(line).expect("detail is JSON");
        assert!(n(&d, "records_removed") >= 1, "{d:#}");
        assert!(n(&d, "bytes_after") < n(&d, "bytes_before"), "{d:#}");
        assert!(
            !line.contains("example.com") && !line.contains("lead:"),
            "{line}"
        );
    }

    // The new index entries are what an index run reads of the new files
    // (rule, key, location and record: CSV rows renumbered).
    let entries = "SELECT o.key, l.entity_type, l.entity_key, l.rule, l.location, l.record
                   FROM links l JOIN objects o ON o.id = l.object_id
                   ORDER BY 1, 2, 3, 4, 5, 6";
    let journaled = f.state_sql(entries);
    assert!(journaled.contains("row "), "{journaled}");
    f.state_sql("UPDATE objects SET size = size + 1");
    f.lethe(&["index"]).ok();
    assert_eq!(f.state_sql(entries), journaled);

    // `lethe verify` on its own says the same, and a second sweep has
    // nothing to redact: the index holds the new files' links.
    f.lethe(&["verify"]).ok().contains("none left");
    let again = f
        .lethe(&["sweep", "--as-of", AS_OF, "--format", "json"])
        .ok()
        .json();
    assert_eq!(n(&again["plan"]["objects"], "redact"), 0, "{again:#}");
    assert_eq!(read(&f, "exports/leads-2020.csv"), CSV_AFTER);
    f.lethe(&["audit", "verify"]).ok();
}

/// A plan's records are positions. Between the plan and its apply the
/// export changes and is indexed again: a row without a key (someone's
/// data, linked to no one) lands above the due rows, so every row moves
/// down one, and a due lead's row is appended. The positions the plan
/// named now hold other records: the apply must not cut them, and says why.
#[test]
fn records_that_moved_since_the_plan_are_not_cut() {
    let f = shared_fixture();
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    let id = plan["id"].as_str().expect("plan id").to_string();
    assert_eq!(n(&plan["objects"], "redact"), 3, "{plan:#}");
    let moved = CSV.replacen(
        "Phone\r\n",
        "Phone\r\n;Nobody;nobody.kept@example.com;\r\n",
        1,
    ) + "\r\n1;Jane;jane.again@example.com;";
    f.put("exports/leads-2020.csv", &moved);
    f.lethe(&["index"]).ok();
    let out = f.lethe(&["--format", "json", "apply", &id]);
    let report = out.expect(3).json();
    // The export is as it was left: nothing cut at the old positions.
    assert_eq!(read(&f, "exports/leads-2020.csv"), moved);
    let reasons = report["apply"]["skipped_reasons"].to_string();
    assert!(
        reasons.contains("its records hold other entities now"),
        "{report:#}"
    );
    // The batches did not change: redacted as planned.
    assert_eq!(read(&f, "batches/b.json"), JSON_AFTER);
    assert_eq!(read(&f, "batches/b.xml"), XML_AFTER);
    let audit = f.state_sql("SELECT count(*) FROM audit WHERE action = 'redact-object'");
    assert_eq!(audit.trim(), "2");
    // What is left is said, not vouched for: verify names the export.
    let residual = report["verify"]["residual"]
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(residual.len(), 1, "{report:#}");
    // And it stays said: `lethe verify` of the plan fails on it.
    f.lethe(&["verify", &id])
        .expect(3)
        .contains("RESIDUAL 1 object");
}

/// A redaction skipped because the export changed leaves the due leads'
/// rows behind, and a delete skipped because lead 1's payload changed
/// leaves that file; the leads are gone from the CRM. The next sweep finds
/// them absent and knows lethe erased them (the journal of the first plan
/// says so): no orphans' grace to wait, the rows and the file go now, and
/// the first plan's verify passes then.
#[test]
fn what_a_skipped_apply_left_behind_goes_with_the_next_sweep() {
    let f = shared_fixture();
    f.lethe(&["index"]).ok();
    let id = f.plan()["id"].as_str().expect("plan id").to_string();
    let changed = format!("{CSV}\r\n3;Erika;erika.young@example.com;");
    f.put("exports/leads-2020.csv", &changed);
    let payload = read(&f, "inbound/1/lead.json");
    f.put("inbound/1/lead.json", &format!("{payload} "));
    // Not indexed since: both differ from what the index read.
    f.lethe(&["apply", &id]).expect(3);
    assert_eq!(read(&f, "exports/leads-2020.csv"), changed);
    assert!(f.tech().join("inbound/1/lead.json").exists());
    f.lethe(&["verify", &id]).expect(3);

    // A new payload naming lead 1 arrives: not what the plan left behind,
    // so it keeps the orphans' grace (a payload may come before its lead).
    f.put("inbound/1/again.json", "{\"lead\": 1}");
    // Both written just now: within the orphans' grace, and gone anyway.
    let sweep = f
        .lethe(&["sweep", "--as-of", AS_OF, "--format", "json"])
        .ok()
        .json();
    let o = &sweep["plan"]["objects"];
    assert_eq!(n(o, "redact"), 1, "{o:#}");
    assert_eq!(n(o, "redact_absent_records"), 3, "{o:#}");
    // Erased by lethe, as linked: no sign of a misread key for the brake.
    assert_eq!(n(o, "redact_absent_suspect"), 0, "{o:#}");
    assert_eq!(n(o, "orphan_delete"), 1, "{o:#}");
    assert_eq!(
        read(&f, "exports/leads-2020.csv"),
        format!("{CSV_AFTER}3;Erika;erika.young@example.com;")
    );
    assert!(!f.tech().join("inbound/1/lead.json").exists());
    assert!(f.tech().join("inbound/1/again.json").exists());
    assert_eq!(n(o, "orphan_young"), 1, "{o:#}");
    let bases = f.state_sql(
        "SELECT action || ' | ' || policy || ' | ' || basis FROM audit WHERE action IN ('redact-object', 'delete-object') AND policy = 'orphans' ORDER BY seq",
    );
    assert_eq!(bases.lines().count(), 2, "{bases}");
    assert!(
        bases
            .lines()
            .all(|l| l.contains("erased by an earlier plan that left it behind")),
        "{bases}"
    );
    f.lethe(&["verify", &id]).ok().contains("none left");
}

/// A link rule that reads keys the CRM does not spell so makes every
/// entity look absent: the shared files would lose their records by the
/// orphans' rule. The brake stops such a plan, measured as the mass-delete
/// brake measures objects: against the whole store.
#[test]
fn a_plan_that_would_strip_shared_files_of_absent_entities_is_braked() {
    let f = shared_fixture();
    f.edit_config("max_delete_fraction = 0.9", "max_delete_fraction = 0.4");
    let rows: String = (901..=910)
        .map(|k| format!("{k};Someone;someone{k}@example.com;\r\n"))
        .collect();
    f.put(
        "exports/leads-2019.csv",
        &format!("LeadId;Name;Email;Phone\r\n{rows}2;Max;max.muster@example.com;\r\n"),
    );
    util::set_mtime(&f.tech().join("exports/leads-2019.csv"), 1_546_300_800);
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    let o = &plan["objects"];
    assert_eq!(n(o, "redact_absent_records"), 10, "{o:#}");
    // 10 of the store's 23 record links (this file 11, the fixture's 12).
    assert_eq!(n(o, "record_links"), 23, "{o:#}");
    let absent_brake = "records of entities absent from the CRM";
    assert!(
        plan["brake"].to_string().contains(
            "removes 10 records of entities absent from the CRM, of the store's 23 records"
        ),
        "{plan:#}"
    );
    // The same file among many sound ones: no longer most of the store.
    let kept: String = (0..60)
        .map(|i| format!("{};Kept;kept{i}@example.com;\r\n", 2 + i % 2))
        .collect();
    f.put(
        "exports/leads-2018.csv",
        &format!("LeadId;Name;Email;Phone\r\n{kept}"),
    );
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    assert_eq!(n(&plan["objects"], "record_links"), 83, "{plan:#}");
    assert!(
        !plan["brake"].to_string().contains(absent_brake),
        "{plan:#}"
    );
}

/// A hold on a lead the CRM does not have (`--allow-absent`) holds what
/// names it (its key written in any way): its row in a kept export and its
/// own payload file stay past the orphans' grace, while the row of an
/// unheld absent lead goes.
#[test]
fn a_hold_on_an_absent_lead_keeps_its_rows_and_files() {
    let f = shared_fixture();
    let export = "LeadId;Name;Email;Phone\r\n2;Max;max.muster@example.com;\r\n0901;Held;held@example.com;\r\n902;Gone;gone@example.com;\r\n";
    f.put("exports/leads-2019.csv", export);
    f.put("inbound/901/lead.json", "{\"lead\": 901}");
    for key in ["exports/leads-2019.csv", "inbound/901/lead.json"] {
        util::set_mtime(&f.tech().join(key), 1_546_300_800);
    }
    f.lethe(&[
        "hold",
        "add",
        "lead:901",
        "--reason",
        "litigation",
        "--allow-absent",
    ])
    .ok();
    sweep_removing_absent_records(&f, 1);
    assert_eq!(
        read(&f, "exports/leads-2019.csv"),
        export.replace("902;Gone;gone@example.com;\r\n", "")
    );
    assert!(f.tech().join("inbound/901/lead.json").exists());
}

/// `0002` is not lead 2 to the plan, and no proof that lead 2 is absent
/// either: its row stays, while the row of a lead the CRM really lacks
/// goes by the orphans' rule.
#[test]
fn a_zero_padded_key_of_a_kept_lead_is_not_taken_for_an_absent_one() {
    let f = shared_fixture();
    let text = "LeadId;Name;Email;Phone\r\n0002;Max;max.muster@example.com;\r\n3;Erika;erika.young@example.com;\r\n901;Gone;gone@example.com;\r\n";
    f.put("exports/leads-2019.csv", text);
    // Written after AS_OF: within the grace, lead 901's row stays.
    f.lethe(&["index"]).ok();
    assert_eq!(n(&f.plan()["objects"], "redact_absent_records"), 0);
    util::set_mtime(&f.tech().join("exports/leads-2019.csv"), 1_546_300_800);
    sweep_removing_absent_records(&f, 1);
    assert_eq!(
        read(&f, "exports/leads-2019.csv"),
        "LeadId;Name;Email;Phone\r\n0002;Max;max.muster@example.com;\r\n3;Erika;erika.young@example.com;\r\n"
    );
}

#[test]
fn what_cannot_be_redacted_is_residual_and_fails_the_run_unless_held() {
    let f = shared_fixture();
    f.edit_config("url = \"technical\"", "url = \"technical\"\nredact = false");
    // A note that names a due lead without any rule linking it.
    f.put("misc/notes.txt", "call Jane back: JANE.DOE@EXAMPLE.COM\n");
    let out = f.lethe(&["sweep", "--as-of", AS_OF, "--format", "json"]);
    let json = out.expect(3).json();
    assert_eq!(
        read(&f, "exports/leads-2020.csv"),
        CSV,
        "redact = false keeps it whole"
    );
    let residual = json["verify"]["residual"]
        .as_array()
        .expect("residual list")
        .clone();
    let mut why: Vec<&str> = residual.iter().filter_map(|r| r["why"].as_str()).collect();
    why.sort();
    assert_eq!(
        why,
        ["shared", "shared", "shared", "unlinked"],
        "{residual:#?}"
    );
    for r in &residual {
        let object = r["object"].as_str().unwrap_or_default();
        assert!(object.starts_with("object:~"), "pseudonyms only: {object}");
        assert!(n(r, "entities") >= 1);
    }
    // The text says so, and `lethe verify` exits 3 as the sweep did.
    f.lethe(&["verify"])
        .expect(3)
        .contains("RESIDUAL 3 objects: shared")
        .contains("RESIDUAL 1 object: unlinked");

    // Held objects are reported, not failed.
    for key in [
        "exports/leads-2020.csv",
        "batches/b.json",
        "batches/b.xml",
        "misc/notes.txt",
    ] {
        hold(&f, key);
    }
    let held = f.lethe(&["verify", "--format", "json"]);
    let held = held.ok().json();
    let residual = held["verify"]["residual"].as_array().expect("list").clone();
    assert_eq!(residual.len(), 4, "{held:#}");
    assert!(residual.iter().all(|r| r["why"] == "held"), "{held:#}");
}

/// A kill after the CRM committed a batch's deletes and before the journal
/// recorded them: the identifiers were kept (pending) before the delete, so
/// the resumed apply still knows them and verify still finds what is left.
#[cfg(feature = "failpoints")]
#[test]
fn identifiers_survive_a_crash_between_the_crm_commit_and_the_journal() {
    let f = shared_fixture();
    f.put(
        "misc/notes.txt",
        "Jane: jane.doe@example.com, +49 30 555-0101\n",
    );
    f.lethe(&["index"]).ok();
    f.plan();
    crash_at(&f, "apply::case-deleted", None);
    assert_eq!(
        f.sql("SELECT count(*) FROM leads WHERE id IN (1, 5, 6)")
            .trim(),
        "0",
        "the CRM committed before the crash"
    );
    let out = f.lethe(&["apply", "--format", "json"]);
    let json = out.expect(3).json();
    let v = &json["verify"];
    assert!(n(v, "identifiers") >= 6, "{v:#}");
    let residual = v["residual"].as_array().expect("list");
    assert_eq!(residual.len(), 1, "the note names Jane: {v:#}");
    assert_eq!(residual[0]["why"], "unlinked");
    assert_eq!(
        f.state_sql(
            "SELECT (SELECT count(*) FROM erased_identifiers WHERE pending = 1)
                  + (SELECT count(*) FROM erased_staged)"
        )
        .trim(),
        "0",
        "nothing pending, nothing left staged after the apply"
    );
}

/// A kill while a shared file's spool holds the records that go (the
/// original content, copied for the engine) leaves no copy of them on
/// local disk: the spool has no name in the temporary folder.
#[cfg(feature = "failpoints")]
#[test]
fn a_kill_mid_redaction_leaves_no_spool_behind() {
    let f = shared_fixture();
    f.lethe(&["index"]).ok();
    f.plan();
    let tmp = tempfile::tempdir().expect("temporary folder");
    crash_at(&f, "apply::redact-spooled", Some(tmp.path()));
    assert_eq!(
        util::list_files(tmp.path()),
        Vec::<String>::new(),
        "nothing left in the temporary folder"
    );
    // The file is as it was, and the resumed apply redacts it.
    assert_eq!(read(&f, "exports/leads-2020.csv"), CSV);
    f.lethe(&["apply"]).ok();
    assert_eq!(read(&f, "exports/leads-2020.csv"), CSV_AFTER);
}

/// A kill after a shared file was rewritten and before the journal said
/// so; then, before the apply is resumed, the file is put on hold and the
/// store indexed again (what a scheduled sweep does first). The resumed
/// apply recognises its own rewrite by the digest its intent holds and
/// journals it, with its audit record, instead of skipping it as "on hold"
/// or "changed" with no record of what was removed.
#[cfg(feature = "failpoints")]
#[test]
fn a_rewrite_killed_before_its_journal_is_recognised_after_a_hold_and_an_index_run() {
    let f = shared_fixture();
    f.lethe(&["index"]).ok();
    f.plan();
    crash_at(&f, "apply::redact-rewritten", None);
    let files = [
        ("exports/leads-2020.csv", CSV, CSV_AFTER, 3),
        ("batches/b.json", JSON, JSON_AFTER, 2),
        ("batches/b.xml", XML, XML_AFTER, 1),
    ];
    let rewritten: Vec<_> = files
        .iter()
        .filter(|(key, before, _, _)| read(&f, key) != *before)
        .collect();
    assert_eq!(rewritten.len(), 1, "one file rewritten before the kill");
    let (key, _, after, entities) = rewritten[0];
    assert_eq!(read(&f, key), *after);
    hold(&f, key);
    f.lethe(&["index"]).ok();
    let report = f.lethe(&["--format", "json", "apply"]).ok().json();
    assert_eq!(n(&report["apply"], "objects_redacted"), 3, "{report:#}");
    for (key, _, after, _) in &files {
        assert_eq!(read(&f, key), *after, "{key}");
    }
    let audit = f.state_sql("SELECT detail FROM audit WHERE action = 'redact-object' ORDER BY seq");
    assert_eq!(audit.lines().count(), 3, "{audit}");
    // The first record is the recognised rewrite's: its entities are those
    // whose records went (not the kept ones, not none).
    let first: Value =
        serde_json::from_str(audit.lines().next().unwrap_or_default()).expect("JSON");
    assert_eq!(
        first["entities"].as_array().map(Vec::len),
        Some(*entities),
        "{first:#}"
    );
    f.lethe(&["audit", "verify"]).ok();
}

/// An odd byte in a file name does not hide it from the scan; a symlink
/// (never followed) is not searched, and verify says so instead of "all gone".
#[test]
fn odd_names_are_searched_and_symlinks_are_named_as_not_searched() {
    use std::os::unix::ffi::OsStrExt;
    let f = shared_fixture();
    let odd = std::ffi::OsStr::from_bytes(b"notes-\xff.txt");
    std::fs::create_dir_all(f.tech().join("misc")).unwrap();
    std::fs::write(f.tech().join("misc").join(odd), "jane.doe@example.com\n").unwrap();
    let out = f.lethe(&["sweep", "--as-of", AS_OF, "--format", "json"]);
    let json = out.expect(3).json();
    let residual = json["verify"]["residual"].as_array().expect("list").clone();
    assert_eq!(residual.len(), 1, "the oddly named note is found: {json:#}");
    std::fs::remove_file(f.tech().join("misc").join(odd)).unwrap();

    let outside = f.dir().join("outside.txt");
    std::fs::write(&outside, "jane.doe@example.com\n").unwrap();
    std::os::unix::fs::symlink(&outside, f.tech().join("misc/link.txt")).unwrap();
    let text = f.lethe(&["verify"]).ok().stdout.clone();
    assert!(!text.contains("all gone"), "{text}");
    assert!(!text.contains("none left"), "{text}");
    assert!(
        text.contains("NOT PROVEN: 1 entry of the listing"),
        "{text}"
    );
    let json = f.lethe(&["verify", "--format", "json"]).ok().json();
    assert_eq!(n(&json["verify"], "scan_skipped"), 1, "{json:#}");
}
