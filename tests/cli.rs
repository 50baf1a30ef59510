//! Over 800 lines on purpose: each tests/ file is a binary; these share one fixture and build.
//!
//! Integration tests of the `lethe` binary: each test builds a small CRM,
//! technical folder and config in a temp folder (see `util`), runs the real
//! binary and checks exit codes, output, the CRM and the folder afterwards.

mod util;

use serde_json::Value;
use util::{
    ALL_FILES, AS_OF, AUDIT_KEY, Fixture, JANE_EMAIL, KEPT_FILES, assert_files, list_files, run_in,
    set_mtime,
};

/// The number in a JSON map under `key`, 0 when absent.
fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

// 1 ─────────────────────────────────────────────────────────────────────────

/// Verify reads the journal in pages: small pages check exactly what one
/// page does, and an object put back on a later page is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_the_journal_in_pages() {
    let f = Fixture::empty();
    let demo = f.dir().join("demo");
    let dir = demo.to_string_lossy().into_owned();
    let json = f
        .lethe_bare(&["demo", "--dir", &dir, "--leads", "200", "--format", "json"])
        .ok()
        .json();
    let plan_id = json["apply"]["plan_id"].as_str().unwrap().to_string();
    let config = lethe::config::load(&demo.join("lethe.toml")).unwrap();
    let crm = lethe::crm::connect(&config).await.unwrap();
    let store = lethe::store::open(&config).unwrap();
    let state = lethe::state::StateStore::open(&config).await.unwrap();
    let check = |page: i64| {
        lethe::verify::verify_paged(
            &config,
            crm.as_ref(),
            store.as_ref(),
            &state,
            &plan_id,
            page,
        )
    };
    let whole = check(1_000_000).await.unwrap();
    assert!(
        whole.entities_checked > 20 && whole.objects_checked > 20,
        "{whole:?}"
    );
    assert!(whole.ok(), "{whole:?}");
    let paged = check(3).await.unwrap();
    assert_eq!(
        (paged.entities_checked, paged.objects_checked),
        (whole.entities_checked, whole.objects_checked)
    );
    assert!(paged.ok());
    // The last object apply deleted, back in the store.
    let last = util::sqlite(
        &demo.join("lethe-state.db"),
        &format!(
            "SELECT key FROM plan_objects WHERE plan_id = '{plan_id}' AND status = 'deleted' \
             ORDER BY item DESC LIMIT 1"
        ),
    );
    let back = demo.join("technical").join(last.trim());
    std::fs::create_dir_all(back.parent().unwrap()).unwrap();
    std::fs::write(&back, "{}").unwrap();
    let found = check(3).await.unwrap();
    assert_eq!(found.objects_remaining, 1, "{found:?}");
    assert!(!found.ok());
}

#[test]
fn demo_runs_end_to_end_and_a_second_sweep_deletes_nothing() {
    let f = Fixture::empty();
    let demo = f.dir().join("demo");
    let dir = demo.to_string_lossy().into_owned();

    let text = f.lethe_bare(&["demo", "--dir", &dir, "--leads", "300"]);
    // The demo's monthly exports are shared with retained leads: they are
    // redacted, and verify searched the whole store for what is left.
    text.ok()
        .contains("all gone")
        .contains("redacted")
        .contains("none left")
        .contains("audit chain head");
    for name in ["crm.db", "lethe.toml", "lethe-state.db", "technical"] {
        assert!(demo.join(name).exists(), "demo wrote {name}");
    }
    // Measured, not assumed: the e-mail address of every lead the demo
    // deleted (`first.<id><len>@example.com`) is nowhere in the store.
    let kept: std::collections::HashSet<i64> =
        util::sqlite(&demo.join("crm.db"), "SELECT id FROM leads")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
    let deleted: Vec<i64> = (1..=300).filter(|id| !kept.contains(id)).collect();
    assert!(deleted.len() > 50, "the demo deletes a backlog");
    let mut named = std::collections::HashSet::new();
    for file in util::list_files(&demo.join("technical")) {
        let bytes = std::fs::read(demo.join("technical").join(&file)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for (at, _) in text.match_indices("@example.com") {
            let digits: String = text[..at]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            // (`gone1305@…`, an orphan's address, is no lead's.)
            let dotted = text[..at - digits.len()].ends_with('.');
            if digits.len() >= 2 && dotted {
                named.insert(digits[..digits.len() - 1].parse::<i64>().unwrap_or(-1));
            }
        }
    }
    assert!(named.len() > 100, "the store still names the kept leads");
    let left: Vec<&i64> = deleted.iter().filter(|id| named.contains(id)).collect();
    assert!(
        left.is_empty(),
        "deleted leads still named in the store: {left:?}"
    );

    // Again over the earlier demo, as JSON: one document with every stage.
    let json = f
        .lethe_bare(&["demo", "--dir", &dir, "--leads", "300", "--format", "json"])
        .ok()
        .json();
    for key in ["generated", "index", "plan", "apply", "verify"] {
        assert!(json.get(key).is_some(), "demo JSON has `{key}`: {json:#}");
    }
    assert_eq!(json["generated"]["leads"], 300);
    let apply = &json["apply"];
    assert!(
        n(apply, "cases_done") > 0,
        "the demo deletes a backlog: {apply:#}"
    );
    assert_eq!(n(apply, "cases_failed"), 0);
    assert_eq!(n(&json["verify"], "entities_remaining"), 0);
    assert_eq!(n(&json["verify"], "objects_remaining"), 0);
    assert_eq!(json["verify"]["residual"].as_array().map(Vec::len), Some(0));
    assert!(n(&json["verify"], "entities_checked") > 0);
    // Verify asks for exactly what apply deleted.
    let deleted: u64 = apply["entities_deleted"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(n(&json["verify"], "entities_checked"), deleted);
    assert_eq!(
        n(&json["verify"], "objects_checked"),
        n(apply, "objects_deleted")
    );

    // The scheduled job right after: nothing new is due.
    let config = demo.join("lethe.toml").to_string_lossy().into_owned();
    let sweep = run_in(f.dir(), &["-c", &config, "sweep", "--format", "json"]);
    let sweep = sweep.ok().json();
    assert_eq!(n(&sweep["apply"], "cases_done"), 0, "{sweep:#}");
    assert_eq!(
        sweep["apply"]["entities_deleted"]
            .as_object()
            .map(|m| m.len()),
        Some(0),
        "{sweep:#}"
    );
    assert_eq!(n(&sweep["apply"], "objects_deleted"), 0, "{sweep:#}");
    assert_eq!(n(&sweep["plan"], "cases"), 0);

    run_in(f.dir(), &["-c", &config, "audit", "verify"])
        .ok()
        .contains("audit chain intact");

    // A folder that is not an earlier demo is refused and left alone.
    let other = f.dir().join("not-a-demo");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "keep me").unwrap();
    let refused = f.lethe_bare(&["demo", "--dir", &other.to_string_lossy(), "--leads", "10"]);
    assert_ne!(refused.code, 0, "demo over a foreign folder must fail");
    refused.contains("not an earlier lethe demo");
    assert_eq!(
        std::fs::read_to_string(other.join("precious.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}

// 2 ─────────────────────────────────────────────────────────────────────────

#[test]
fn plan_is_a_dry_run_and_apply_deletes_exactly_the_due_cases() {
    let f = Fixture::new();
    let tables = ["leads", "opportunities", "quotes", "contracts"];
    let counts = |f: &Fixture| tables.map(|t| f.count(t));
    assert_eq!(counts(&f), [6, 2, 2, 1]);
    let crm_before = f.crm_dump();
    let crm_bytes = std::fs::read(f.crm()).unwrap();
    let files_before = f.file_contents();
    assert_files(&f.files(), ALL_FILES);

    f.lethe(&["index"]).ok();
    let plan = f.plan();
    assert_eq!(counts(&f), [6, 2, 2, 1], "plan deleted rows");
    assert_eq!(f.crm_dump(), crm_before, "plan changed the CRM");
    assert_eq!(
        std::fs::read(f.crm()).unwrap(),
        crm_bytes,
        "plan wrote to crm.db"
    );
    assert_eq!(
        f.file_contents(),
        files_before,
        "plan changed the technical folder"
    );

    // What the plan says, exactly.
    assert_eq!(plan["cases"], 3, "{plan:#}");
    assert_eq!(
        plan["entities_to_delete"],
        serde_json::json!({ "lead": 3, "opportunity": 1, "quote": 1 })
    );
    assert_eq!(
        plan["entities_read"],
        serde_json::json!({ "lead": 6, "opportunity": 2, "quote": 2, "contract": 1 })
    );
    assert_eq!(plan["undatable_entities"], 1);
    assert_eq!(plan["objects"]["total"], 9);
    assert_eq!(plan["objects"]["delete"], 4, "{plan:#}");
    assert_eq!(plan["objects"]["unlinked"], 1);
    assert_eq!(plan["brake"], serde_json::json!([]));
    let lead_policy = &plan["policies"][0];
    assert_eq!(lead_policy["name"], "unconverted-sales");
    assert_eq!(lead_policy["due"], 3);
    assert_eq!(lead_policy["kept"]["keep_if contract"], 1);
    assert_eq!(lead_policy["kept"]["retention running"], 1);
    assert_eq!(lead_policy["kept"]["undatable"], 1);

    // The text form says nothing was deleted and how to apply.
    let id = plan["id"].as_str().unwrap().to_string();
    f.lethe(&["plan", "--as-of", AS_OF])
        .ok()
        .contains("nothing was deleted")
        .contains("lethe apply");
    f.lethe(&["plan", "--list"]).ok().contains(&id);
    assert_eq!(f.crm_dump(), crm_before);
    assert_eq!(f.file_contents(), files_before);

    // Apply the first plan by id.
    let applied = f.lethe(&["apply", &id, "--format", "json"]).ok().json();
    let apply = &applied["apply"];
    assert_eq!(apply["plan_id"], id.as_str());
    assert_eq!(n(apply, "cases_done"), 3, "{applied:#}");
    assert_eq!(n(apply, "cases_skipped"), 0);
    assert_eq!(
        apply["entities_deleted"],
        serde_json::json!({ "lead": 3, "opportunity": 1, "quote": 1 })
    );
    assert_eq!(n(apply, "objects_deleted"), 4);
    assert_eq!(n(&applied["verify"], "entities_remaining"), 0);
    assert_eq!(n(&applied["verify"], "objects_remaining"), 0);

    // The CRM: old without contract gone; contract, young and undatable stay.
    assert_eq!(f.ids("leads"), vec![2, 3, 4]);
    assert_eq!(f.ids("opportunities"), vec![2]);
    assert_eq!(f.ids("quotes"), vec![2]);
    assert_eq!(f.ids("contracts"), vec![1]);
    assert_eq!(counts(&f), [3, 1, 1, 1]);
    assert_eq!(
        f.sql("SELECT email, modified_at FROM leads WHERE id = 3")
            .trim(),
        "erika.young@example.com|2026-01-01T00:00:00Z",
        "kept rows are untouched"
    );

    // The folder: the deleted leads' payloads and their emptied folders go.
    assert_files(&f.files(), KEPT_FILES);
    for gone in ["inbound/1", "inbound/5", "inbound/6"] {
        assert!(
            !f.tech().join(gone).exists(),
            "{gone}/ was emptied and must be removed"
        );
    }
    assert!(
        f.tech().join("quotes/2020").is_dir(),
        "quotes/2020 still holds quote-2.xml"
    );
    assert!(f.tech().is_dir(), "the store root stays");
    for (key, bytes) in &files_before {
        if KEPT_FILES.contains(&key.as_str()) {
            assert_eq!(
                &std::fs::read(f.tech().join(key)).unwrap(),
                bytes,
                "{key} unchanged"
            );
        }
    }
}

// 3 ─────────────────────────────────────────────────────────────────────────

#[test]
fn apply_rechecks_each_case_and_skips_what_changed_since_the_plan() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    assert_eq!(plan["cases"], 3);

    // Since the plan: lead 6's quote got a contract, lead 5 was touched.
    f.sql("INSERT INTO contracts VALUES (7, 6, '2026-06-01T00:00:00Z', '2026-06-01T00:00:00Z')");
    f.sql("UPDATE leads SET modified_at = '2026-06-01T00:00:00Z' WHERE id = 5");

    let out = f.lethe(&["apply"]);
    out.ok().contains("skipped");
    out.contains("1 case deleted, 2 skipped");
    out.contains("changed since plan");

    assert_eq!(f.ids("leads"), vec![2, 3, 4, 5, 6], "only lead 1 goes");
    assert_eq!(f.ids("opportunities"), vec![2, 6]);
    assert_eq!(f.ids("quotes"), vec![2, 6]);
    assert_eq!(f.ids("contracts"), vec![1, 7]);

    // The skipped cases' payloads stay; the deleted one's go.
    assert_files(
        &f.files(),
        &[
            "inbound/2/lead.json",
            "inbound/3/lead.json",
            "inbound/4/lead.json",
            "inbound/5/lead.json",
            "inbound/6/lead.json",
            "misc/readme.txt",
            "quotes/2020/quote-2.xml",
            "quotes/2020/quote-6.xml",
        ],
    );

    // Exactly one audit record per deleted item: lead 1 and its payload.
    f.lethe(&["audit", "verify"]).ok().contains("2 records");
    f.lethe(&["audit", "lookup", "lead:6"])
        .ok()
        .contains("no audit record");
    f.lethe(&["audit", "lookup", "lead:1"])
        .ok()
        .contains("delete-entity");
}

/// A payload rewritten after the index read it may serve another entity
/// now: apply does not delete it on the strength of its old links.
#[test]
fn apply_keeps_a_payload_rewritten_since_the_index_read_it() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    assert_eq!(plan["objects"]["delete"], 4, "{plan:#}");
    // Since the index: the integration re-sent quote 6's file, now about
    // quote 2, whose case is kept (it led to a contract).
    f.put(
        "quotes/2020/quote-6.xml",
        &util::quote_xml(2, "max.mustermann@example.org"),
    );
    let out = f.lethe(&["--format", "json", "apply"]);
    let report = out.ok().json();
    assert_eq!(n(&report["apply"], "objects_deleted"), 3, "{report:#}");
    assert_eq!(n(&report["apply"], "objects_skipped"), 1, "{report:#}");
    assert!(
        report["apply"]["skipped_reasons"]
            .as_object()
            .unwrap()
            .keys()
            .any(|r| r.contains("rewritten since the index read it")),
        "{report:#}"
    );
    assert!(f.files().contains(&"quotes/2020/quote-6.xml".to_string()));
    // The CRM side went as planned.
    assert_eq!(f.ids("leads"), vec![2, 3, 4]);
    // Indexed again, the file links to the kept quote 2: it stays.
    f.lethe(&["sweep"]).ok();
    assert!(f.files().contains(&"quotes/2020/quote-6.xml".to_string()));
    // One audit record per deleted item: 3 cases' entities, 3 files.
    f.lethe(&["audit", "verify"]).ok();
}

// 4 ─────────────────────────────────────────────────────────────────────────

#[test]
fn holds_keep_entities_and_can_be_listed_and_lifted() {
    let f = Fixture::new();
    f.lethe(&["hold", "add", "lead:1", "--reason", "LH-2026-001"])
        .ok()
        .contains("hold added on lead:1");
    f.lethe(&["hold", "add", "lead:1", "--reason", "LH-2026-001"])
        .ok()
        .contains("already on hold");
    f.lethe(&["hold", "list"])
        .ok()
        .contains("lead:1")
        .contains("LH-2026-001")
        .contains("tester");

    // A hold on a descendant keeps every case containing it.
    f.lethe(&["hold", "add", "quote:6", "--reason", "LH-2026-002"])
        .ok();

    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    assert_eq!(f.ids("leads"), vec![1, 2, 3, 4, 6], "the held leads stay");
    assert_eq!(f.ids("opportunities"), vec![2, 6]);
    assert_eq!(f.ids("quotes"), vec![2, 6]);
    assert!(f.tech().join("quotes/2020/quote-6.xml").exists());
    assert!(
        f.tech().join("inbound/1/lead.json").exists(),
        "the held lead's payload stays"
    );
    assert!(!f.tech().join("inbound/5").exists());
    f.lethe(&["explain", "lead:1", "--as-of", AS_OF])
        .ok()
        .contains("hold");

    f.lethe(&["hold", "rm", "lead:1"]).ok().contains("lifted");
    f.lethe(&["hold", "rm", "quote:6"]).ok().contains("lifted");
    f.lethe(&["hold", "list"]).ok().contains("no holds");
    let again = f.lethe(&["hold", "rm", "lead:1"]);
    assert_eq!(
        again.code, 1,
        "lifting a hold that is not there fails: {again:?}"
    );
    again.contains("not on hold");

    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    assert_eq!(f.ids("leads"), vec![2, 3, 4], "once lifted, the leads go");
    assert_eq!(f.ids("quotes"), vec![2]);
    assert_files(&f.files(), KEPT_FILES);
}

#[test]
fn holds_added_between_plan_and_apply_are_honoured_and_object_holds_keep_files() {
    let f = Fixture::new();
    f.lethe(&[
        "hold",
        "add",
        "object:inbound/1/lead.json",
        "--reason",
        "LH-7",
    ])
    .ok();
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    assert_eq!(plan["objects"]["held"], 1, "{plan:#}");
    assert_eq!(plan["objects"]["delete"], 3, "{plan:#}");

    // After the plan: a hold on a due lead and on a folder of due files.
    f.lethe(&["hold", "add", "lead:5", "--reason", "LH-8"]).ok();
    f.lethe(&["hold", "add", "prefix:quotes/2020/", "--reason", "LH-9"])
        .ok();
    f.lethe(&["hold", "list"])
        .ok()
        .contains("object:inbound/1/lead.json")
        .contains("prefix:quotes/2020/")
        .contains("lead:5");

    let out = f.lethe(&["apply"]);
    out.ok().contains("skipped");
    out.contains("changed since plan: hold");
    out.contains("changed since plan: on hold");

    // Lead 1 leaves the CRM but its held payload stays; lead 5 stays whole;
    // lead 6 goes but its quote file is under a held prefix.
    assert_eq!(f.ids("leads"), vec![2, 3, 4, 5]);
    assert_eq!(f.ids("opportunities"), vec![2]);
    assert_files(
        &f.files(),
        &[
            "inbound/1/lead.json",
            "inbound/2/lead.json",
            "inbound/3/lead.json",
            "inbound/4/lead.json",
            "inbound/5/lead.json",
            "misc/readme.txt",
            "quotes/2020/quote-2.xml",
            "quotes/2020/quote-6.xml",
        ],
    );

    // Bad hold targets are usage errors.
    f.lethe(&["hold", "add", "customer:1", "--reason", "x"])
        .expect(2);
    f.lethe(&["hold", "add", "prefix:", "--reason", "x"])
        .expect(2);
    f.lethe(&["hold", "add", "object:../etc/passwd", "--reason", "x"])
        .expect(2);
}

// 5 ─────────────────────────────────────────────────────────────────────────

#[test]
fn mass_delete_brake_stops_apply_until_allowed() {
    let f = Fixture::new();
    f.edit_config("max_delete_fraction = 0.9", "max_delete_fraction = 0.1");
    f.lethe(&["index"]).ok();
    let crm_before = f.crm_dump();

    let plan_text = f.lethe(&["plan", "--as-of", AS_OF]);
    plan_text.ok().contains("BRAKE");
    let plan = f.plan();
    let brake = plan["brake"].as_array().cloned().unwrap_or_default();
    assert!(
        brake
            .iter()
            .any(|b| b.as_str().unwrap_or("").contains("3 of 6 lead")),
        "{plan:#}"
    );

    let refused = f.lethe(&["apply"]);
    refused.expect(1).contains("--allow-mass-delete");
    assert_eq!(f.crm_dump(), crm_before, "a braked plan deletes nothing");
    assert_files(&f.files(), ALL_FILES);
    let refused = f.lethe(&["sweep", "--as-of", AS_OF]);
    refused.expect(1).contains("--allow-mass-delete");
    assert_eq!(f.crm_dump(), crm_before);
    assert_files(&f.files(), ALL_FILES);

    f.lethe(&["apply", "--allow-mass-delete"])
        .ok()
        .contains("all gone");
    assert_eq!(f.ids("leads"), vec![2, 3, 4]);
    assert_files(&f.files(), KEPT_FILES);
}

/// Makes every payload look old, so that files whose leads vanish from the
/// CRM become orphans due for deletion.
fn age_files(f: &Fixture) {
    for key in f.files() {
        set_mtime(&f.tech().join(key), 1_577_836_800); // 2020-01-01
    }
}

#[test]
fn brake_trips_when_a_type_the_previous_plan_saw_reads_empty() {
    let f = Fixture::new();
    age_files(&f);
    f.lethe(&["index"]).ok();
    let first = f.plan();
    assert_eq!(first["brake"], serde_json::json!([]));

    // A broken CRM read: every table comes back empty.
    f.sql(
        "DELETE FROM contracts; DELETE FROM quotes; DELETE FROM opportunities; DELETE FROM leads;",
    );
    let second = f.plan();
    let reasons: Vec<String> = second["brake"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        reasons.iter().any(|r| r.contains("sees no lead")),
        "the brake must name the empty type: {second:#}"
    );
    f.lethe(&["apply"])
        .expect(1)
        .contains("--allow-mass-delete");
    assert_files(&f.files(), ALL_FILES);
}

/// The "type read empty" brake must hold on the next run too: a scheduled
/// sweep that was braked once must not delete every orphaned payload on its
/// next run just because the braked plan became "the previous plan".
#[test]
fn brake_for_an_empty_read_is_not_defeated_by_planning_again() {
    let f = Fixture::new();
    age_files(&f);
    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    assert_files(&f.files(), KEPT_FILES);

    f.sql(
        "DELETE FROM contracts; DELETE FROM quotes; DELETE FROM opportunities; DELETE FROM leads;",
    );
    f.lethe(&["sweep", "--as-of", AS_OF])
        .expect(1)
        .contains("--allow-mass-delete");
    assert_files(&f.files(), KEPT_FILES);

    // The next scheduled run, with the CRM read still empty.
    let again = f.lethe(&["sweep", "--as-of", AS_OF]);
    assert_files(&f.files(), KEPT_FILES);
    again.expect(1).contains("--allow-mass-delete");
}

fn brake_reasons(plan: &serde_json::Value) -> Vec<String> {
    plan["brake"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 15: a parent column that exists but is the wrong one (here the
/// opportunity's amount) makes every lead look childless, so the lead whose
/// opportunity has a contract would be due. The dangling references are
/// counted per relation and brake the plan.
#[test]
fn a_wrong_parent_column_trips_the_dangling_brake() {
    let f = Fixture::new();
    age_files(&f);
    f.lethe(&["index"]).ok();
    let crm_before = f.crm_dump();
    f.edit_config(
        "parent = { lead = \"lead_id\" }",
        "parent = { lead = \"amount\" }",
    );
    let plan = f.plan();
    assert_eq!(
        plan["dangling"],
        serde_json::json!([{ "entity": "opportunity", "parent": "lead", "column": "amount", "count": 2, "of": 2 }])
    );
    let reasons = brake_reasons(&plan);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("max_dangling_fraction") && r.contains("column `amount`")),
        "{reasons:#?}"
    );
    f.lethe(&["apply"])
        .expect(1)
        .contains("--allow-mass-delete");
    assert_eq!(f.crm_dump(), crm_before, "a braked plan deletes nothing");
}

/// A row lethe cannot place in the graph fails the read instead of being
/// left out: here the only contract's `quote_id` holds a blob (SQLite
/// stores what it is given, whatever the declared type), which would
/// leave lead 2 without the contract that keeps it, and a contract whose
/// key is NULL. Both the paged scan (a rowid table) and the row-by-row
/// scan (a table WITHOUT ROWID) refuse, `plan` and `sweep`; nothing is
/// planned, and no key is printed.
#[test]
fn a_row_whose_key_or_parent_cannot_be_read_fails_the_plan() {
    let f = Fixture::new();
    age_files(&f);
    f.lethe(&["index"]).ok();
    // Without the blob, lead 2 is kept by its contract.
    f.lethe(&["explain", "lead:2", "--as-of", util::AS_OF])
        .ok()
        .contains("kept: keep_if contract");
    for (label, setup) in [
        ("rowid", ""),
        (
            "without rowid",
            "CREATE TABLE c2 (id INTEGER PRIMARY KEY, quote_id INTEGER, signed_at TEXT, modified_at TEXT) WITHOUT ROWID;
             INSERT INTO c2 SELECT id, quote_id, signed_at, modified_at FROM contracts;
             DROP TABLE contracts; ALTER TABLE c2 RENAME TO contracts;",
        ),
    ] {
        if !setup.is_empty() {
            f.sql(setup);
        }
        f.sql("UPDATE contracts SET quote_id = CAST(X'02' AS BLOB) WHERE id = 1");
        for args in [
            &["plan", "--as-of", util::AS_OF][..],
            &["sweep", "--as-of", util::AS_OF][..],
        ] {
            let out = f.lethe(args);
            out.expect(1)
                .contains("entity type `contract` (table contracts): a row's quote_id holds a blob")
                .contains("typeof(\"quote_id\") = 'blob'");
            assert!(!out.all().contains("lead:2"), "{label}: {}", out.all());
        }
        f.sql("UPDATE contracts SET quote_id = 2 WHERE id = 1");
        f.lethe(&["plan", "--as-of", util::AS_OF]).ok();
    }
    // A NULL key in a table whose key column may hold one (WITHOUT ROWID
    // tables take NULL in a non-INTEGER PRIMARY KEY; here a plain column).
    f.sql(
        "CREATE TABLE c3 (id TEXT, quote_id INTEGER, signed_at TEXT, modified_at TEXT);
         INSERT INTO c3 SELECT NULL, quote_id, signed_at, modified_at FROM contracts;
         DROP TABLE contracts; ALTER TABLE c3 RENAME TO contracts;",
    );
    f.lethe(&["plan", "--as-of", util::AS_OF])
        .expect(1)
        .contains("a row's id holds NULL")
        .contains("\"id\" IS NULL");
}

/// Issue 15: contracts cut short between plans (a partial read) trip the
/// brake at a tenth; what lethe deleted itself is no drop.
#[test]
fn a_count_that_falls_since_the_previous_plan_trips_the_brake() {
    let f = Fixture::new();
    age_files(&f);
    let mut sql = String::new();
    for id in 10..30 {
        sql.push_str(&format!(
            "INSERT INTO contracts VALUES ({id}, 2, '2020-01-20T00:00:00Z', '2020-01-20T00:00:00Z');"
        ));
    }
    f.sql(&sql);
    f.edit_config("[safety]\n", "[safety]\nmax_drop_fraction = 0.2\n");
    // lethe's own sweep deletes 3 of 6 leads and 1 of 2 opportunities.
    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    assert_eq!(f.count("leads"), 3);
    let after_own = f.plan();
    assert_eq!(
        brake_reasons(&after_own),
        Vec::<String>::new(),
        "lethe's own deletions are no drop"
    );
    // 3 of 21 contracts vanish from the read (14%: over the 10% of a keep type).
    f.sql("DELETE FROM contracts WHERE id IN (10, 11, 12)");
    let short = f.plan();
    let reasons = brake_reasons(&short);
    assert!(
        reasons.iter().any(
            |r| r.contains("reads 18 contract entities where 21 were expected")
                && r.contains("max_keep_drop_fraction")
        ),
        "{reasons:#?}"
    );
    f.lethe(&["apply"])
        .expect(1)
        .contains("--allow-mass-delete");
}

/// Issue 15: a plan on a store that was never indexed would delete the
/// entities and leave every payload that names them.
#[test]
fn plan_refuses_an_index_that_was_never_built_or_is_empty() {
    let f = Fixture::new();
    f.lethe(&["plan", "--as-of", AS_OF])
        .expect(2)
        .contains("never indexed: run `lethe index` first")
        .contains("--allow-unindexed");
    assert_eq!(f.state_sql("SELECT count(*) FROM plans").trim(), "0");
    f.lethe(&["plan", "--as-of", AS_OF, "--allow-unindexed"])
        .ok();
    f.lethe(&["index"]).ok();
    f.plan();
    // An index emptied behind lethe's back, while the store is not.
    f.state_sql("DELETE FROM links; DELETE FROM objects;");
    f.lethe(&["plan", "--as-of", AS_OF])
        .expect(2)
        .contains("the link index is empty but the technical store holds 9 objects");
    // A link rule changed since the index was built (here: the path the
    // quotes' rule reads): its links would name other entities, or none in
    // the CRM, and the orphans' rules would act on them.
    f.lethe(&["index"]).ok();
    f.edit_config("xml = \"/Quotation/ID\"", "xml = \"/Quotation/QuoteID\"");
    f.lethe(&["plan", "--as-of", AS_OF])
        .expect(2)
        .contains("built with other link rules than this config's");
    f.lethe(&["index"]).ok();
    f.plan();
}

/// Issue 15: `hold add lead:018` answered "hold added" and protected
/// nothing (the key is 18); so did `"lead: 22"`. Refs are read against the
/// key column's type, stored canonical, and a ref that names no row is
/// refused unless --allow-absent; the audit tells an erased one.
#[test]
fn hold_refs_are_read_as_the_key_column_stores_them() {
    let f = Fixture::new();
    age_files(&f);
    f.lethe(&["hold", "add", "lead:05", "--reason", "LH-1"])
        .ok()
        .contains("hold added on lead:5");
    f.lethe(&["hold", "list"]).ok().contains("lead:5");
    f.lethe(&["explain", "lead:005", "--as-of", AS_OF])
        .ok()
        .contains("hold");
    for bad in ["lead: 2", "lead:2 ", "lead:1.5", "lead:1\nINJECT", "lead:x"] {
        f.lethe(&["hold", "add", bad, "--reason", "LH-2"]).expect(2);
    }
    f.lethe(&["hold", "add", "lead:999", "--reason", "LH-3"])
        .expect(2)
        .contains("lead:999 is not in the CRM")
        .contains("--allow-absent");
    f.lethe(&[
        "hold",
        "add",
        "lead:999",
        "--reason",
        "LH-3",
        "--allow-absent",
    ])
    .ok();
    f.lethe(&["hold", "add", "leads:1", "--reason", "LH-4"])
        .expect(2)
        .contains("did you mean `lead`?");
    // Lead 1 goes in a sweep; a hold on it now is refused, and says why.
    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    assert!(!f.ids("leads").contains(&1));
    f.lethe(&["hold", "add", "lead:1", "--reason", "LH-5"])
        .expect(2)
        .contains("the audit shows lethe deleted it");
    f.lethe(&["explain", "lead:01"])
        .ok()
        .contains("lead:1: not in the CRM; the audit shows lethe deleted it");
    f.lethe(&["audit", "lookup", "lead:001"])
        .ok()
        .contains("delete-entity");
    assert!(f.ids("leads").contains(&5), "the held lead stays");
}

/// Issue 15: with `--format json` an error was text on stderr and nothing
/// on stdout; a script now gets one JSON document with the exit code.
#[test]
fn json_errors_are_one_document_on_stdout() {
    let f = Fixture::new();
    let out = f.lethe(&["plan", "--as-of", AS_OF, "--format", "json"]);
    out.expect(2);
    let doc = out.json();
    assert_eq!(doc["exit"], 2);
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("run `lethe index` first")),
        "{doc}"
    );
}

/// Issue 15: `lethe report` showed the latest plan even when it was a dry
/// run after the sweep; an apply that skipped every case said nothing of it
/// and printed "rows deleted with secure_delete=ON".
#[test]
fn report_shows_the_applied_plan_and_an_all_skipped_apply_says_so() {
    let f = Fixture::new();
    age_files(&f);
    f.lethe(&["index"]).ok();
    let planned = f.plan();
    // Every due lead is touched after the plan: the re-check skips them all.
    f.sql("UPDATE leads SET modified_at = '2026-06-29T00:00:00Z'");
    let applied = f.lethe(&["apply"]);
    applied
        .ok()
        .contains("NOTHING DELETED: every case was skipped at the re-check");
    assert!(
        !applied.stdout.contains("secure_delete"),
        "{}",
        applied.stdout
    );
    let sweep = f.lethe(&["sweep", "--format", "json"]).ok().json();
    let swept = sweep["plan"]["id"].as_str().unwrap().to_string();
    assert_eq!(sweep["apply"]["all_skipped"], false);
    let dry = f
        .lethe(&["plan", "--as-of", AS_OF, "--format", "json"])
        .ok()
        .json();
    assert_ne!(dry["id"], planned["id"]);
    f.lethe(&["report"])
        .ok()
        .contains(&format!("report for plan {swept}, the latest applied plan"));
}

/// A legal hold on a file must be possible while the CRM is down (only an
/// entity ref needs its key columns), and a hold stored as typed before
/// refs were read canonically (`lead:05`) is still lifted by that text.
#[test]
fn object_holds_need_no_crm_and_old_typed_holds_can_be_lifted() {
    let f = Fixture::new();
    f.state_sql("SELECT 1"); // the state store exists
    f.lethe(&["index"]).ok();
    std::fs::rename(f.crm(), f.dir().join("crm.db.away")).unwrap();
    f.lethe(&["hold", "add", "object:misc/readme.txt", "--reason", "LH-9"])
        .ok()
        .contains("hold added on object:misc/readme.txt");
    f.lethe(&["hold", "add", "lead:1", "--reason", "LH-9"])
        .expect(1);
    std::fs::rename(f.dir().join("crm.db.away"), f.crm()).unwrap();
    f.state_sql(
        "INSERT INTO holds(kind, target, reason, author, created_at) VALUES ('entity', 'lead:05', 'old', 'dpo', '2026-01-01T00:00:00Z')",
    );
    f.lethe(&["hold", "rm", "lead:05"]).ok().contains("lifted");
    assert_eq!(
        f.state_sql("SELECT count(*) FROM holds WHERE kind = 'entity'")
            .trim(),
        "0"
    );
}

// 6 ─────────────────────────────────────────────────────────────────────────

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
        + 1
}

/// Problem lines of a config error: `  FILE:LINE:COL: key: message`.
fn problem_lines(out: &util::Out) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{}:", out.args[1])))
        .map(str::to_string)
        .collect()
}

#[test]
fn config_errors_exit_2_and_name_file_line_and_key() {
    let f = Fixture::new();
    let good = f.config_text();
    let cfg = f.config().to_string_lossy().into_owned();

    let case = |edits: &[(&str, &str)], check: &[&str]| -> (util::Out, String) {
        let mut text = good.clone();
        for (from, to) in edits {
            assert!(text.contains(from), "{from:?} not in the config");
            text = text.replacen(from, to, 1);
        }
        f.write_config(&text);
        let out = f.lethe(&["plan", "--as-of", AS_OF]);
        out.expect(2);
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
        for c in check {
            out.contains(c);
        }
        (out, text)
    };

    // An unknown key: its line and its full key path.
    let (out, text) = case(
        &[("table = \"leads\"", "tabel = \"leads\"")],
        &["crm.entities.lead.tabel", "unknown key"],
    );
    let line = line_of(&text, "tabel = ");
    out.contains(&format!("{cfg}:{line}:"));

    // A policy over a type the CRM does not declare.
    let (out, text) = case(
        &[("root = \"lead\"", "root = \"prospect\"")],
        &["policy[0].root", "prospect"],
    );
    out.contains(&format!("{cfg}:{}:", line_of(&text, "root = \"prospect\"")));

    // A parent cycle: opportunity → quote → opportunity.
    case(
        &[(
            "parent = { lead = \"lead_id\" }",
            "parent = { quote = \"lead_id\" }",
        )],
        &["cycle", &format!("{cfg}:")],
    );

    // A misspelt duration.
    let (out, text) = case(
        &[("retain = \"24 months\"", "retain = \"24 monthz\"")],
        &["policy[0].retain", "24 monthz"],
    );
    out.contains(&format!("{cfg}:{}:", line_of(&text, "24 monthz")));

    // The audit key: missing, too short, or from an unset variable.
    let key_line = format!("key = \"{AUDIT_KEY}\"");
    case(&[(key_line.as_str(), "")], &["audit.key", "missing"]);
    case(
        &[(key_line.as_str(), "key = \"short\"")],
        &["audit.key", "too short"],
    );
    case(
        &[(
            key_line.as_str(),
            "key = \"${LETHE_TEST_SURELY_UNSET_KEY}\"",
        )],
        &["audit.key", "LETHE_TEST_SURELY_UNSET_KEY"],
    );

    // Several problems: all of them, in one run, one line each.
    let (out, _) = case(
        &[
            ("table = \"leads\"", "tabel = \"leads\""),
            ("root = \"lead\"", "root = \"prospect\""),
            ("retain = \"24 months\"", "retain = \"24 monthz\""),
            (key_line.as_str(), "key = \"short\""),
        ],
        &["tabel", "prospect", "24 monthz", "too short"],
    );
    let mut lines = problem_lines(&out);
    assert!(lines.len() >= 4, "one line per problem: {}", out.stderr);
    lines.dedup();
    assert!(lines.len() >= 4, "distinct problem lines: {}", out.stderr);

    // TOML syntax errors are config errors too.
    case(&[("[crm]", "[crm")], &[&format!("{cfg}:")]);

    // No state store was created by any of these runs.
    assert!(
        !f.state().exists(),
        "a bad config must not touch the state store"
    );

    // A missing config file: bad config, and the message names the file.
    let missing = f.dir().join("nope.toml");
    let out = run_in(f.dir(), &["-c", &missing.to_string_lossy(), "plan"]);
    out.expect(2).contains("nope.toml");
    // The default ./lethe.toml, in a folder without one.
    let empty = Fixture::empty();
    let out = run_in(empty.dir(), &["plan"]);
    out.expect(2).contains("lethe.toml");
}

// 7 ─────────────────────────────────────────────────────────────────────────

#[test]
fn symlinks_out_of_the_store_are_never_followed_or_deleted_through() {
    let f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("lead.json");
    std::fs::write(&victim, util::lead_json(5, "Olga", "olga.old@example.com")).unwrap();
    let victim2 = outside.path().join("attachment.json");
    std::fs::write(&victim2, util::lead_json(1, "Jane", JANE_EMAIL)).unwrap();
    std::fs::create_dir(outside.path().join("6")).unwrap();
    let victim3 = outside.path().join("6/lead.json");
    std::fs::write(
        &victim3,
        util::lead_json(6, "Paul", "paul.lost@example.com"),
    )
    .unwrap();

    // inbound/5 is a link to the outside folder (lead 5 has no payload of
    // its own); inbound/1/attachment.json links to an outside file; a link
    // at the root points at a whole outside tree.
    std::fs::remove_dir_all(f.tech().join("inbound/5")).unwrap();
    std::os::unix::fs::symlink(outside.path(), f.tech().join("inbound/5")).unwrap();
    std::os::unix::fs::symlink(&victim2, f.tech().join("inbound/1/attachment.json")).unwrap();
    std::os::unix::fs::symlink(outside.path(), f.tech().join("inbound-mirror")).unwrap();

    let out = f.lethe(&["sweep", "--as-of", AS_OF, "--format", "json"]);
    let json = out.ok().json();
    assert!(
        n(&json["index"], "entries_skipped") >= 3,
        "symlinks are skipped: {json:#}"
    );
    assert_eq!(f.ids("leads"), vec![2, 3, 4], "the sweep itself goes on");

    for v in [&victim, &victim2, &victim3] {
        assert!(v.exists(), "{} outside the store was deleted", v.display());
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 3);
    // The links themselves stay too (lethe never deletes through links).
    assert!(
        f.tech()
            .join("inbound/5")
            .symlink_metadata()
            .unwrap()
            .is_symlink()
    );
    assert!(
        f.tech()
            .join("inbound/1/attachment.json")
            .symlink_metadata()
            .unwrap()
            .is_symlink()
    );
    assert!(!f.tech().join("inbound/1/lead.json").exists());
    assert!(!f.tech().join("inbound/6").exists());
}

// 8 ─────────────────────────────────────────────────────────────────────────

/// A fixture after one apply at AS_OF: 5 entity and 4 object records.
fn applied() -> Fixture {
    let f = Fixture::new();
    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    f.lethe(&["audit", "verify"])
        .ok()
        .contains("audit chain intact: 9 records");
    f
}

#[test]
fn audit_verify_finds_an_edited_record() {
    let f = applied();
    f.state_sql("UPDATE audit SET entity_type = 'x' WHERE seq = 2");
    let out = f.lethe(&["audit", "verify"]);
    assert_ne!(out.code, 0, "an edited record must fail verify: {out:?}");
    out.contains("record 2");
    let json = f.lethe(&["audit", "verify", "--format", "json"]).json();
    assert!(
        json["problems"].as_array().is_some_and(|p| !p.is_empty()),
        "{json:#}"
    );
}

#[test]
fn audit_verify_finds_a_removed_record() {
    let f = applied();
    f.state_sql("DELETE FROM audit WHERE seq = 3");
    let out = f.lethe(&["audit", "verify"]);
    assert_ne!(out.code, 0, "a removed record must fail verify: {out:?}");
    out.contains("BROKEN");
}

#[test]
fn audit_verify_finds_a_removed_last_record() {
    let f = applied();
    f.state_sql("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)");
    let out = f.lethe(&["audit", "verify"]);
    assert_ne!(out.code, 0, "a truncated chain must fail verify: {out:?}");
    out.contains("BROKEN");
}

#[test]
fn audit_export_and_lookup() {
    let f = applied();
    let records: usize = f
        .state_sql("SELECT count(*) FROM audit")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(records, 9);

    let csv = f.lethe(&["audit", "export", "--format", "csv"]);
    csv.ok();
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "seq,plan_id,policy,basis,action,entity_type,pseudonym,bytes,at,prev,hash,author,reason_chars,detail"
    );
    assert_eq!(lines.len(), 1 + records, "{}", csv.stdout);
    assert_eq!(
        lines.iter().filter(|l| l.contains("delete-entity")).count(),
        5
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("delete-object")).count(),
        4
    );

    let jsonl = f.lethe(&["audit", "export", "--format", "jsonl"]);
    jsonl.ok();
    let parsed: Vec<Value> = jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record a line"))
        .collect();
    assert_eq!(parsed.len(), records);
    assert_eq!(parsed[0]["seq"], 1);
    assert_eq!(parsed[0]["prev"], "0".repeat(64));
    for w in parsed.windows(2) {
        assert_eq!(w[1]["prev"], w[0]["hash"], "the chain links up");
    }

    f.lethe(&["audit", "lookup", "lead:1"])
        .ok()
        .contains("delete-entity")
        .contains("unconverted-sales");
    f.lethe(&["audit", "lookup", "quote:6"])
        .ok()
        .contains("delete-entity");
    f.lethe(&["audit", "lookup", "object:inbound/1/lead.json"])
        .ok()
        .contains("delete-object");
    f.lethe(&["audit", "lookup", "lead:2"])
        .ok()
        .contains("no audit record");
    f.lethe(&["audit", "lookup", "lead:3"])
        .ok()
        .contains("no audit record");
    let json = f
        .lethe(&["audit", "lookup", "lead:1", "--format", "json"])
        .ok()
        .json();
    assert_eq!(
        json["records"].as_array().map(Vec::len),
        Some(1),
        "{json:#}"
    );
    assert_eq!(json["records"][0]["entity_type"], "lead");
}

/// Regression (issue 15): verify compared counts per plan, so removing the
/// last record, moving the stored head back one and flipping an unrelated
/// journal row from deleted to skipped passed as "intact".
#[test]
fn audit_verify_matches_the_journal_item_by_item() {
    let f = applied();
    let last: i64 = f
        .state_sql("SELECT max(seq) FROM audit")
        .trim()
        .parse()
        .unwrap();
    let before = f.state_sql(&format!("SELECT hash FROM audit WHERE seq = {}", last - 1));
    f.state_sql(&format!("DELETE FROM audit WHERE seq = {last}"));
    f.state_sql(&format!(
        "UPDATE meta SET v = '{}:{}' WHERE k = 'audit.head'",
        last - 1,
        before.trim()
    ));
    // An entity row: the removed last record is an object's.
    let flipped = f.state_sql(
        "SELECT entity_type, entity_key FROM plan_entities WHERE status = 'deleted'
         ORDER BY entity_type, entity_key LIMIT 1",
    );
    let (ty, key) = flipped.trim().split_once('|').unwrap();
    f.state_sql(&format!(
        "UPDATE plan_entities SET status = 'skipped' WHERE entity_type = '{ty}' AND entity_key = '{key}'"
    ));

    let out = f.lethe(&["audit", "verify"]);
    out.expect(1).contains("BROKEN").contains(
        "1 of 8 items the journal says deleted have no record, 1 delete records name no such item",
    );
    // The chain itself is whole: only the journal comparison finds it.
    for chain_problem in [
        "sequence number",
        "does not follow",
        "does not match its hash",
        "stored head",
    ] {
        assert!(!out.stdout.contains(chain_problem), "{}", out.stdout);
    }
    // Named by pseudonym, never by key.
    let pseudo = lethe::audit::pseudonym::Pseudonymizer::new(lethe::sensitive::Sensitive::new(
        AUDIT_KEY.as_bytes().to_vec(),
    ));
    out.contains(&format!("entity ~{}", &pseudo.entity(ty, key)[..16]));
    assert!(!out.all().contains("inbound/"), "{}", out.all());
    let json = f.lethe(&["audit", "verify", "--format", "json"]);
    json.expect(1);
    let json = json.json();
    assert_eq!(
        (json["unaudited"].as_u64(), json["unjournaled"].as_u64()),
        (Some(1), Some(1)),
        "{json:#}"
    );
}

#[test]
fn audit_verify_checks_the_head_an_operator_kept() {
    let f = applied();
    let head = f
        .lethe(&["audit", "verify", "--format", "json"])
        .ok()
        .json()["head"]
        .as_str()
        .unwrap()
        .to_string();
    f.lethe(&["audit", "verify", "--expect-head", &head]).ok();
    let zeros = "0".repeat(64);
    f.lethe(&["audit", "verify", "--expect-head", &zeros])
        .expect(1)
        .contains(&format!(
            "the chain's head is {head}, not the expected {zeros}"
        ))
        .contains("no record of the chain has the expected head");
    // The chain grew since the head was kept: said, and still a mismatch.
    f.lethe(&["hold", "add", "lead:3", "--reason", "LH-1"]).ok();
    f.lethe(&["audit", "verify", "--expect-head", &head])
        .expect(1)
        .contains("the expected head is record 9, so 1 records were appended since");
}

#[test]
fn holds_are_audit_records_and_verify_accepts_them() {
    let f = Fixture::new();
    f.lethe(&["hold", "add", "lead:1", "--reason", "LH-2026-001"])
        .ok();
    f.lethe(&[
        "hold",
        "add",
        "prefix:quotes/",
        "--reason",
        "LH-2",
        "--author",
        "dpo",
    ])
    .ok();
    // Again: nothing changed, nothing recorded.
    f.lethe(&["hold", "add", "lead:1", "--reason", "LH-2026-001"])
        .ok();
    f.lethe(&["hold", "rm", "lead:1"]).ok();
    let pseudo = lethe::audit::pseudonym::Pseudonymizer::new(lethe::sensitive::Sensitive::new(
        AUDIT_KEY.as_bytes().to_vec(),
    ));
    let rows =
        f.state_sql("SELECT action, pseudonym, author, reason_chars FROM audit ORDER BY seq");
    assert_eq!(
        rows.trim(),
        format!(
            "hold-add|{lead}|tester|11\nhold-add|{prefix}|dpo|4\nhold-rm|{lead}|tester|",
            lead = pseudo.entity("lead", "1"),
            prefix = pseudo.target("prefix:quotes/")
        )
    );
    let export = f.lethe(&["audit", "export", "--format", "jsonl"]);
    export.ok();
    assert!(
        !export.stdout.contains("LH-2026-001"),
        "no reason text: {}",
        export.stdout
    );
    f.lethe(&["audit", "lookup", "lead:1"])
        .ok()
        .contains("hold-add")
        .contains("hold-rm")
        .contains("by tester");

    // Hold records among the deletions: the chain and the journal agree.
    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    f.lethe(&["audit", "verify"])
        .ok()
        .contains("audit chain intact: 11 records")
        .contains("8 deleted items");
}

#[test]
fn hold_texts_are_bounded_and_printable() {
    let f = Fixture::new();
    let long_target = format!("object:{}", "a".repeat(1020));
    let long_reason = "r".repeat(2001);
    let long_author = "a".repeat(201);
    for (args, says) in [
        (
            vec!["hold", "add", "lead:1\nINJECT", "--reason", "x"],
            "TARGET: contains the control character U+000A at character 7",
        ),
        (
            vec!["hold", "add", &long_target, "--reason", "x"],
            "TARGET: 1027 bytes, more than the 1024 allowed",
        ),
        (
            vec!["hold", "add", "lead:1", "--reason", "a\tb"],
            "--reason: contains the control character U+0009",
        ),
        (
            vec!["hold", "add", "lead:1", "--reason", &long_reason],
            "--reason: 2001 characters, more than the 2000 allowed",
        ),
        (
            vec!["hold", "add", "lead:1", "--reason", "x", "--author", "me\r"],
            "--author: contains the control character U+000D",
        ),
        (
            vec![
                "hold",
                "add",
                "lead:1",
                "--reason",
                "x",
                "--author",
                &long_author,
            ],
            "--author: 201 characters",
        ),
        (
            vec!["hold", "rm", "lead:1\n"],
            "TARGET: contains the control character",
        ),
    ] {
        f.lethe(&args).expect(2).contains(says);
    }
    f.lethe(&["hold", "list"]).ok().contains("no holds");
    assert_eq!(f.state_sql("SELECT count(*) FROM audit").trim(), "0");

    // A hold stored before these checks prints on one line, to the second.
    f.state_sql(
        "INSERT INTO holds(kind, target, reason, author, created_at)
         VALUES ('entity', 'lead:1' || char(10) || 'INJECT', 'why' || char(27) || '[2J', 'old', '2026-03-01T10:20:30.123456789Z')",
    );
    let list = f.lethe(&["hold", "list"]);
    list.ok();
    assert_eq!(
        list.stdout,
        "lead:1\\nINJECT  reason: why\\u{1b}[2J  by old at 2026-03-01T10:20:30Z\n"
    );
    let json = f.lethe(&["hold", "list", "--format", "json"]).ok().json();
    assert_eq!(json[0]["created_at"], "2026-03-01T10:20:30Z");
}

#[test]
fn a_hold_needs_an_author() {
    let f = Fixture::new();
    let config = f.config().to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let out = util::lethe_command(f.dir())
            .env_remove("USER")
            .args(["-c", config.as_str()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["hold", "add", "lead:1", "--reason", "LH-1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--author: no author: $USER is not set"),
        "{err}"
    );
    f.lethe(&["hold", "list"]).ok().contains("no holds");
    let (code, err) = run(&[
        "hold", "add", "lead:1", "--reason", "LH-1", "--author", "dpo",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(&["hold", "rm", "lead:1"]);
    assert_eq!(code, Some(2), "{err}");
    f.lethe(&["hold", "list"]).ok().contains("by dpo at");
    f.lethe(&["hold", "add", "lead:2", "--reason", "x", "--author", " "])
        .expect(2)
        .contains("--author: empty");
}

/// Regression (issue 15): usage errors read "1 problem in (command line):
/// (command line):0:0: …".
#[test]
fn usage_errors_name_the_argument_without_a_bogus_location() {
    let f = Fixture::new();
    let out = f.lethe(&["--format", "csv", "plan"]);
    out.expect(2);
    assert!(
        out.stderr
            .starts_with("lethe: --format: jsonl and csv are for `audit export`"),
        "{}",
        out.stderr
    );
    let out = f.lethe(&["hold", "add", "customer:1", "--reason", "x"]);
    out.expect(2)
        .contains("lethe: TARGET: `customer` is not an entity type");
    for out in f.outputs() {
        assert!(!out.all().contains("(command line)"), "{}", out.all());
    }
}

// 9 ─────────────────────────────────────────────────────────────────────────

#[test]
fn no_personal_data_in_output_or_state() {
    let f = Fixture::new();
    // More places the email hides: a CSV export, a broken XML and a broken
    // CSV (content rules that fail must not quote the content).
    f.put(
        "exports/leads-2020-01.csv",
        &format!("\u{feff}LeadId;FirstName;Email\r\n1;Jane;{JANE_EMAIL}\r\n5;Olga;olga.old@example.com\r\n"),
    );
    f.put(
        "quotes/2020/quote-broken.xml",
        &format!("<Quotation><Contact>{JANE_EMAIL}</Contact><ID>6</ID><{JANE_EMAIL}>"),
    );
    f.put(
        "exports/leads-2020-02.csv",
        &format!("LeadId,Email\n1,\"{JANE_EMAIL}\n"),
    );
    let commands: &[&[&str]] = &[
        &["check"],
        &["index"],
        &["plan", "--as-of", AS_OF],
        &["plan", "--as-of", AS_OF, "--format", "json"],
        &["explain", "lead:1", "--as-of", AS_OF],
        &["explain", "opportunity:6", "--as-of", AS_OF],
        &["explain", "lead:1", "--as-of", AS_OF, "--format", "json"],
        &["hold", "add", "lead:4", "--reason", "LH-1"],
        &["hold", "list"],
        &["apply"],
        &["sweep", "--as-of", AS_OF],
        &["sweep", "--as-of", AS_OF, "--format", "json"],
        &["audit", "verify"],
        &["audit", "export", "--format", "jsonl"],
        &["audit", "export", "--format", "csv"],
        &["audit", "lookup", "lead:1"],
        &["plan", "--list"],
    ];
    for args in commands {
        assert_ne!(f.lethe(args).code, 2, "{args:?}");
    }
    assert_eq!(f.ids("leads"), vec![2, 3, 4], "the sweep did its work");

    // The demo too.
    f.lethe_bare(&[
        "demo",
        "--dir",
        &f.dir().join("demo").to_string_lossy(),
        "--leads",
        "40",
    ])
    .ok();

    let needles = [JANE_EMAIL, "jane.doe", "Jane", "olga.old", "5550101"];
    for out in f.outputs() {
        for needle in needles {
            assert!(
                !out.all().contains(needle),
                "`lethe {}` printed personal data {needle:?}:\n{}",
                out.args.join(" "),
                out.all()
            );
        }
    }
    for name in ["lethe-state.db", "lethe-state.db-wal", "lethe-state.db-shm"] {
        let Ok(bytes) = std::fs::read(f.dir().join(name)) else {
            continue;
        };
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{name} holds personal data {needle:?}"
            );
        }
    }
    // The demo's state store holds none of its generated emails either.
    let demo_state = f.dir().join("demo/lethe-state.db");
    for name in ["", "-wal"] {
        let path = std::path::PathBuf::from(format!("{}{name}", demo_state.display()));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        assert!(
            !bytes.windows(12).any(|w| w == b"@example.com"),
            "{} holds an email address",
            path.display()
        );
    }
}

// 10 ────────────────────────────────────────────────────────────────────────

#[test]
fn explain_says_why_and_when() {
    let f = Fixture::new();
    f.lethe(&["hold", "add", "lead:5", "--reason", "LH-3"]).ok();

    f.lethe(&["explain", "lead:5", "--as-of", AS_OF])
        .ok()
        .contains("kept: hold")
        .contains("it stays");
    f.lethe(&["explain", "lead:3", "--as-of", AS_OF])
        .ok()
        .contains("due at 2028-01-01T00:00:00Z");
    f.lethe(&["explain", "lead:1", "--as-of", AS_OF])
        .ok()
        .contains("DUE")
        .contains("deletes it");
    f.lethe(&["explain", "lead:2", "--as-of", AS_OF])
        .ok()
        .contains("keep_if contract");
    f.lethe(&["explain", "lead:4", "--as-of", AS_OF])
        .ok()
        .contains("undatable");
    // An opportunity inside a due lead case, and one that is not there.
    f.lethe(&["explain", "opportunity:6", "--as-of", AS_OF])
        .ok()
        .contains("DUE");
    f.lethe(&["explain", "lead:99", "--as-of", AS_OF])
        .ok()
        .contains("not in the CRM");

    let json = f
        .lethe(&["explain", "lead:3", "--as-of", AS_OF, "--format", "json"])
        .ok()
        .json();
    assert_eq!(json["deleted_by_next_sweep"], false);
    assert_eq!(json["cases"][0]["due_at"], "2028-01-01T00:00:00Z");

    // Unknown type and bad syntax: usage errors.
    f.lethe(&["explain", "customer:1"])
        .expect(2)
        .contains("customer");
    f.lethe(&["explain", "lead"]).expect(2).contains("type:key");
    f.lethe(&["explain", ":1"]).expect(2);
    // explain reads, it never deletes.
    assert_eq!(f.ids("leads"), vec![1, 2, 3, 4, 5, 6]);
}

// 11 ────────────────────────────────────────────────────────────────────────

#[test]
fn usage_errors_exit_2() {
    let f = Fixture::new();
    f.lethe_bare(&["frobnicate"]).expect(2);
    f.lethe_bare(&[]).expect(2);
    f.lethe(&["plan", "--as-of", "yesterday"])
        .expect(2)
        .contains("yesterday");
    f.lethe(&["plan", "--format", "xml"]).expect(2);
    f.lethe(&["plan", "--format", "csv", "--as-of", AS_OF])
        .expect(2)
        .contains("--format");
    f.lethe(&["hold", "add", "lead:1"])
        .expect(2)
        .contains("--reason");
    f.lethe(&["apply", "--bogus"]).expect(2);
    f.lethe_bare(&["--help"]).ok().contains("Usage");
    f.lethe_bare(&["--version"]).ok().contains("lethe");
    assert!(!f.state().exists(), "usage errors touch nothing");
}

// 12 ────────────────────────────────────────────────────────────────────────

#[test]
fn applying_a_finished_plan_again_does_nothing() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    let id = f.plan()["id"].as_str().unwrap().to_string();
    f.lethe(&["apply"]).ok().contains("3 cases deleted");
    let records = f.state_sql("SELECT count(*) FROM audit");

    f.lethe(&["apply"]).ok().contains("already applied");
    f.lethe(&["apply", &id]).ok().contains("already applied");
    let json = f.lethe(&["apply", &id, "--format", "json"]).ok().json();
    assert_eq!(json["apply"]["already_applied"], true);
    assert_eq!(
        f.state_sql("SELECT count(*) FROM audit"),
        records,
        "no new audit records"
    );
    assert_eq!(f.ids("leads"), vec![2, 3, 4]);
    f.lethe(&["audit", "verify"]).ok();
}

// 13 ────────────────────────────────────────────────────────────────────────

#[test]
fn apply_refuses_stale_future_and_unknown_plans() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    let crm_before = f.crm_dump();

    // No plan yet.
    assert_ne!(f.lethe(&["apply"]).code, 0);

    // A plan made with a different config.
    f.plan();
    let text = f.config_text();
    f.write_config(&format!("{text}\n# edited after the plan\n"));
    f.lethe(&["apply"]).expect(1).contains("different config");
    assert_eq!(f.crm_dump(), crm_before);
    assert_files(&f.files(), ALL_FILES);

    // A plan as of the future is a preview.
    f.lethe(&["plan", "--as-of", "2100-01-01", "--format", "json"])
        .ok();
    f.lethe(&["apply"]).expect(1).contains("future");
    assert_eq!(f.crm_dump(), crm_before);
    assert_files(&f.files(), ALL_FILES);

    // An unknown plan id.
    assert_ne!(f.lethe(&["apply", "no-such-plan"]).code, 0);
    assert_eq!(f.crm_dump(), crm_before);
}

// 14 ────────────────────────────────────────────────────────────────────────

/// 2026-06-15T00:00:00Z and 2026-05-01T00:00:00Z, as epoch seconds.
const JUNE_15: u64 = 1_781_481_600;
const MAY_1: u64 = 1_777_593_600;

#[test]
fn case_clocks_calendar_retention_and_object_fates() {
    let f = Fixture::new();
    f.sql(
        "INSERT INTO leads VALUES (7, 'A', 'B', 'a7@example.com', NULL, NULL, 'open', '2019-12-01T00:00:00Z', '2020-01-01T00:00:00Z');
         INSERT INTO opportunities VALUES (7, 7, 'x', 'lost', 1, '2020-01-01T00:00:00Z');
         INSERT INTO quotes VALUES (7, 7, 1, '2026-06-20T00:00:00Z');
         INSERT INTO leads VALUES (8, 'A', 'B', 'a8@example.com', NULL, NULL, 'open', '2019-01-01T00:00:00Z', 'not a date');
         INSERT INTO leads VALUES (9, 'A', 'B', 'a9@example.com', NULL, NULL, 'open', '2019-02-01T00:00:00Z', NULL);
         INSERT INTO leads VALUES (10, 'A', 'B', 'a10@example.com', NULL, NULL, 'open', NULL, '2024-06-30T00:00:00Z');
         INSERT INTO leads VALUES (11, 'A', 'B', 'a11@example.com', NULL, NULL, 'open', NULL, '2024-06-30T00:00:01Z');
         INSERT INTO leads VALUES (12, 'A', 'B', 'a12@example.com', NULL, NULL, 'open', NULL, '2024-01-15T00:00:00Z');",
    );
    // Shared between a deleted and a kept lead; linking only deleted leads.
    f.put("exports/leads-2020-01.csv", "LeadId;Name\r\n1;x\r\n2;y\r\n");
    f.put("exports/leads-2020-02.csv", "LeadId;Name\r\n1;x\r\n5;y\r\n");
    // Unreadable by its content rule: never deleted on its strength.
    f.put("quotes/2020/quote-broken.xml", "<Quotation><ID>6</ID>");
    // Orphans of leads long gone: one 15 days old at AS_OF (but months old
    // by the wall clock), one 60 days old.
    f.put(
        "inbound/77/lead.json",
        &util::lead_json(77, "X", "x77@example.com"),
    );
    f.put(
        "inbound/78/lead.json",
        &util::lead_json(78, "X", "x78@example.com"),
    );
    set_mtime(&f.tech().join("inbound/77/lead.json"), JUNE_15);
    set_mtime(&f.tech().join("inbound/78/lead.json"), MAY_1);

    // Case clock: the quote touched on 2026-06-20 keeps the 2020 lead young.
    f.lethe(&["explain", "lead:7", "--as-of", AS_OF])
        .ok()
        .contains("case clock 2026-06-20T00:00:00Z")
        .contains("due at 2028-06-20T00:00:00Z");
    // A clock that is not a date: undatable, kept; no fallback to created_at.
    f.lethe(&["explain", "lead:8", "--as-of", AS_OF])
        .ok()
        .contains("undatable");
    // NULL modified_at falls back to created_at.
    f.lethe(&["explain", "lead:9", "--as-of", AS_OF])
        .ok()
        .contains("DUE");
    // The boundary: due exactly at clock + 24 months, not a second before.
    f.lethe(&["explain", "lead:10", "--as-of", AS_OF])
        .ok()
        .contains("DUE");
    f.lethe(&["explain", "lead:11", "--as-of", AS_OF])
        .ok()
        .contains("due at 2026-06-30T00:00:01Z");
    // Calendar months: 24 months after 2024-01-15 is 2026-01-15, where 730
    // days (across 2024-02-29) would be 2026-01-14.
    f.lethe(&["explain", "lead:12", "--as-of", "2026-01-14T12:00:00Z"])
        .ok()
        .contains("due at 2026-01-15T00:00:00Z");

    f.lethe(&["index"]).ok();
    let plan = f.plan();
    assert_eq!(plan["unreadable_clocks"], 1, "{plan:#}");
    let objects = &plan["objects"];
    assert_eq!(objects["total"], 14, "{plan:#}");
    assert_eq!(objects["shared"], 0, "{plan:#}");
    assert_eq!(objects["redact"], 1, "{plan:#}");
    assert_eq!(objects["unreadable"], 1, "{plan:#}");
    assert_eq!(objects["orphan_delete"], 1, "{plan:#}");
    assert_eq!(objects["orphan_young"], 1, "{plan:#}");
    assert_eq!(objects["delete"], 5, "{plan:#}");
    // The shared export loses the deleted lead's row, every other byte
    // kept; verify then reads the whole store, unlinked and unreadable
    // objects too, for the deleted leads' identifiers.
    f.lethe(&["apply"])
        .ok()
        .contains("1 redacted (1 records of deleted entities removed")
        .contains("all gone")
        .contains("none left");
    assert_eq!(
        std::fs::read_to_string(f.tech().join("exports/leads-2020-01.csv")).unwrap(),
        "LeadId;Name\r\n2;y\r\n"
    );

    assert_eq!(f.ids("leads"), vec![2, 3, 4, 7, 8, 11]);
    assert_eq!(f.ids("quotes"), vec![2, 7]);
    assert_files(
        &f.files(),
        &[
            "exports/leads-2020-01.csv",
            "inbound/2/lead.json",
            "inbound/3/lead.json",
            "inbound/4/lead.json",
            "inbound/77/lead.json",
            "misc/readme.txt",
            "quotes/2020/quote-2.xml",
            "quotes/2020/quote-broken.xml",
        ],
    );

    // The young orphan's age is measured at the plan's instant.
    let later = f
        .lethe(&["plan", "--as-of", "2026-07-20", "--format", "json"])
        .ok()
        .json();
    assert_eq!(later["objects"]["orphan_delete"], 1, "{later:#}");
}

#[test]
fn a_missing_config_file_is_reported_once_and_plainly() {
    let f = Fixture::empty();
    let out = f.lethe(&["plan"]);
    out.expect(2).contains("lethe.toml");
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "the cause is printed twice: {}",
        out.stderr
    );
}

// 15 ────────────────────────────────────────────────────────────────────────

#[test]
fn items_already_gone_at_apply_are_reported_not_audited() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    f.plan();
    // Someone else removes lead 1 and its payload between plan and apply.
    f.sql("DELETE FROM leads WHERE id = 1");
    std::fs::remove_dir_all(f.tech().join("inbound/1")).unwrap();

    let json = f.lethe(&["apply", "--format", "json"]).ok().json();
    let apply = &json["apply"];
    assert_eq!(n(apply, "entities_already_gone"), 1, "{json:#}");
    assert_eq!(n(apply, "objects_already_gone"), 1, "{json:#}");
    assert_eq!(
        apply["entities_deleted"],
        serde_json::json!({ "lead": 2, "opportunity": 1, "quote": 1 })
    );
    assert_eq!(n(apply, "objects_deleted"), 3);
    assert_eq!(f.ids("leads"), vec![2, 3, 4]);
    assert_files(&f.files(), KEPT_FILES);

    // One record per item lethe deleted: 4 entities + 3 objects.
    f.lethe(&["audit", "verify"]).ok().contains("7 records");
    f.lethe(&["audit", "lookup", "lead:1"])
        .ok()
        .contains("no audit record");
    f.lethe(&["audit", "lookup", "object:inbound/1/lead.json"])
        .ok()
        .contains("no audit record");
    f.lethe(&["audit", "lookup", "lead:5"])
        .ok()
        .contains("delete-entity");
}

/// An item that fails is named (by pseudonym) and makes the exit code 3;
/// once the cause is fixed, applying the partial plan again must finish it
/// rather than mark it applied with the payload still there.
#[test]
fn failed_items_exit_3_and_a_rerun_of_the_partial_plan_retries_them() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    f.plan();
    // A delete that fails even for root: the key is now a folder.
    let key = f.tech().join("inbound/5/lead.json");
    let original = std::fs::read(&key).unwrap();
    let mtime = std::fs::metadata(&key)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    std::fs::write(key.join("part"), "x").unwrap();

    let out = f.lethe(&["apply"]);
    out.expect(3)
        .contains("FAILED object:~")
        .contains("1 failed");
    assert!(
        !out.all().contains("inbound/5"),
        "keys appear only as pseudonyms: {}",
        out.all()
    );
    assert_eq!(f.ids("leads"), vec![2, 3, 4], "the cases themselves went");
    assert!(
        !f.tech().join("inbound/6").exists(),
        "the other objects went"
    );
    f.lethe(&["plan", "--list"]).ok().contains("partial");

    // The cause is fixed (the file the index read is back: a rewritten one
    // would be skipped, see apply_keeps_a_payload_rewritten_since_the_index_read_it);
    // the operator applies the plan again.
    std::fs::remove_dir_all(&key).unwrap();
    std::fs::write(&key, &original).unwrap();
    set_mtime(&key, mtime);
    f.lethe(&["apply"]).ok();
    assert!(
        !key.exists(),
        "re-applying a partial plan left the failed payload of a deleted lead in place"
    );
    f.lethe(&["audit", "verify"]).ok();
}

/// `explain` must tell an entity's own case from the case of an ancestor
/// that happens to have the same key (opportunity 6 lies in lead 6's case).
#[test]
fn explain_names_the_case_an_entity_belongs_to() {
    let f = Fixture::new();
    let out = f.lethe(&["explain", "opportunity:6", "--as-of", AS_OF]);
    out.ok();
    let lead_policy_line = out
        .stdout
        .lines()
        .find(|l| l.contains("policy unconverted-sales"))
        .unwrap_or_else(|| panic!("no unconverted-sales line: {}", out.stdout))
        .to_string();
    assert!(
        lead_policy_line.contains("the case of lead:~"),
        "opportunity:6 is in the case of lead 6, not its own: {lead_policy_line}"
    );
    let opp_policy_line = out
        .stdout
        .lines()
        .find(|l| l.contains("policy lost-opportunities"))
        .unwrap_or_default();
    assert!(opp_policy_line.contains("its own case"), "{}", out.stdout);
    // The pseudonym shown is not the plain ref.
    assert!(!lead_policy_line.contains("lead:6"), "{lead_policy_line}");
}

// 16 ────────────────────────────────────────────────────────────────────────

#[test]
fn an_unreachable_crm_or_store_fails_closed() {
    let f = Fixture::new();
    let crm = f.crm();
    let moved = f.dir().join("crm.moved");
    std::fs::rename(&crm, &moved).unwrap();
    let out = f.lethe(&["sweep", "--as-of", AS_OF]);
    out.expect(1).contains("CRM");
    assert!(!crm.exists(), "a missing CRM must not be created empty");
    assert_files(&f.files(), ALL_FILES);
    std::fs::rename(&moved, &crm).unwrap();

    // The technical folder is gone: nothing happens, not even to the CRM.
    let tech_moved = f.dir().join("technical.moved");
    std::fs::rename(f.tech(), &tech_moved).unwrap();
    f.lethe(&["sweep", "--as-of", AS_OF])
        .expect(1)
        .contains("technical");
    assert_eq!(f.ids("leads"), vec![1, 2, 3, 4, 5, 6]);
    std::fs::rename(&tech_moved, f.tech()).unwrap();

    // The folder reads empty (an unmounted share) after a plan saw objects.
    f.lethe(&["index"]).ok();
    f.plan();
    std::fs::rename(f.tech(), &tech_moved).unwrap();
    std::fs::create_dir(f.tech()).unwrap();
    f.lethe(&["sweep", "--as-of", AS_OF])
        .expect(1)
        .contains("sees no technical objects")
        .contains("--allow-mass-delete");
    assert_eq!(f.ids("leads"), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(list_files(&tech_moved).len(), ALL_FILES.len());
}

// Issue 15: probing with bad input ──────────────────────────────────────────

/// Regression: the index knew its store by the root folder as the config
/// path spelled it, so adding `[[serve.token]]`s and running the service
/// (`-c` an absolute path) re-read every object.
#[test]
fn an_unrelated_config_change_or_another_config_spelling_rereads_nothing() {
    let f = Fixture::new();
    let first = run_in(f.dir(), &["-c", "lethe.toml", "index", "--format", "json"])
        .ok()
        .json();
    assert_eq!(n(&first, "objects_read"), 9, "{first:#}");
    let text = f.config_text();
    f.write_config(&format!(
        "{text}\n[[serve.token]]\nname = \"ops\"\nscope = \"read\"\nsha256 = \"{}\"\n",
        "ab".repeat(32)
    ));
    let again = f.lethe(&["index", "--format", "json"]).ok().json();
    assert_eq!(n(&again, "objects_read"), 0, "{again:#}");
    assert_eq!(n(&again, "objects_unchanged"), 9, "{again:#}");
    let dotted = run_in(
        f.dir(),
        &["-c", "./lethe.toml", "index", "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(n(&dotted, "objects_read"), 0, "{dotted:#}");
}

/// Regression: `inbound/18/a\b.json` was planned and then refused at delete,
/// `inbound/18/new<LF>line.json` got no link: every name a folder may hold
/// (non-UTF-8 bytes too) goes with its deleted lead, and stays with a kept one.
#[test]
fn payloads_with_odd_names_go_with_their_lead() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    let names: Vec<Vec<u8>> = [
        "a\\b.json",
        "new\nline.json",
        "tab\there.json",
        "50% off.json",
        "sp ace.json",
        "\u{e4}\u{f6}\u{fc}\u{1f600}.json",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([b"caf\xe9.json".to_vec(), b"\xff\xfe".to_vec()])
    .collect();
    let path = |lead: &str, name: &[u8]| {
        f.tech()
            .join("inbound")
            .join(lead)
            .join(OsStr::from_bytes(name))
    };
    for lead in ["1", "3"] {
        for name in &names {
            std::fs::write(path(lead, name), "odd").unwrap();
        }
        // A folder whose name is not UTF-8, too.
        std::fs::create_dir_all(path(lead, b"dir\xff")).unwrap();
        std::fs::write(path(lead, b"dir\xff").join("x.json"), "odd").unwrap();
    }
    let indexed = f.lethe(&["index", "--format", "json"]).ok().json();
    assert_eq!(n(&indexed, "entries_skipped"), 0, "{indexed:#}");
    assert_eq!(n(&indexed, "objects_seen"), 9 + 2 * 9, "{indexed:#}");
    let plan = f.plan();
    assert_eq!(
        plan["objects"]["unlinked"], 1,
        "only misc/readme.txt: {plan:#}"
    );
    let swept = f
        .lethe(&["sweep", "--as-of", util::AS_OF, "--format", "json"])
        .ok()
        .json();
    assert_eq!(n(&swept["apply"], "objects_failed"), 0, "{swept:#}");
    for name in &names {
        assert!(
            !path("1", name).exists(),
            "{:?} of lead 1 is left",
            OsStr::from_bytes(name)
        );
        assert!(
            path("3", name).exists(),
            "{:?} of kept lead 3 is gone",
            OsStr::from_bytes(name)
        );
    }
    assert!(!path("1", b"dir\xff").exists());
    assert!(path("3", b"dir\xff").join("x.json").exists());
    assert!(!f.tech().join("inbound/1").exists());
}

#[test]
fn plan_show_prints_the_header_and_items_as_pseudonyms_unless_keys() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    let id = plan["id"].as_str().unwrap().to_string();
    // `plan --as-of` still plans; `plan --list` still lists, and its JSON
    // stays the array of [id, created_at, as_of, status] scripts read.
    f.lethe(&["plan", "--list"]).ok().contains(&id);
    let list = f.lethe(&["plan", "--list", "--format", "json"]).ok().json();
    assert_eq!(list[0][0], id.as_str(), "{list}");
    assert_eq!(list[0][3], "planned", "{list}");
    f.lethe(&["plan", "show"])
        .ok()
        .contains(&id)
        .contains("status: planned")
        .contains("unconverted-sales");
    let doc = f
        .lethe(&["plan", "show", &id, "--items", "--format", "json"])
        .ok()
        .json();
    assert_eq!(doc["plan"]["id"], id.as_str());
    assert_eq!(doc["plan"]["status"], "planned");
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "{doc:#}");
    let objects = doc["objects"].as_array().unwrap();
    assert_eq!(
        objects.len() as u64,
        plan["objects"]["delete"].as_u64().unwrap()
            + plan["objects"]["orphan_delete"].as_u64().unwrap()
    );
    let text = doc.to_string();
    assert!(text.contains("lead:~"), "{text}");
    assert!(text.contains("object:~"), "{text}");
    assert!(!text.contains("lead:1\""), "a key without --keys: {text}");
    assert!(
        !text.contains("inbound/"),
        "an object key without --keys: {text}"
    );
    // With --keys, the refs themselves.
    let keyed = f
        .lethe(&["plan", "show", "--items", "--keys", "--format", "json"])
        .ok()
        .json();
    let keyed_text = keyed.to_string();
    assert!(keyed_text.contains("\"lead:1\""), "{keyed_text}");
    assert!(
        keyed_text.contains("object:inbound/1/lead.json"),
        "{keyed_text}"
    );
    // Filters: a type lists only those entities and no objects.
    let quotes = f
        .lethe(&[
            "plan", "show", "--items", "--type", "quote", "--format", "json",
        ])
        .ok()
        .json();
    assert_eq!(quotes["cases"].as_array().unwrap().len(), 1, "{quotes:#}");
    assert_eq!(quotes["cases"][0]["entities"].as_array().unwrap().len(), 1);
    assert_eq!(quotes["objects"], serde_json::json!([]));
    let orphans = f
        .lethe(&[
            "plan", "show", "--items", "--fate", "orphan", "--format", "json",
        ])
        .ok()
        .json();
    assert_eq!(orphans["cases"], serde_json::json!([]));
    let lost = f.lethe(&["plan", "show", "--items", "--policy", "lost-opportunities"]);
    lost.ok();
    lost.contains("lost-opportunities");
    assert!(
        !lost.stdout.contains("unconverted-sales  "),
        "{}",
        lost.stdout
    );
    // Text, without personal data.
    let items = f.lethe(&["plan", "show", "--items"]);
    items.ok();
    items
        .contains("cases:")
        .contains("objects:")
        .contains("lead:~");
    assert!(!items.all().contains(JANE_EMAIL));
    // An unknown plan points at the list.
    f.lethe(&["plan", "show", "no-such-plan"])
        .expect(1)
        .contains("lethe plan --list");
}

/// Issue 15: a reviewer sees what a plan keeps as well as what it deletes:
/// each case's clock, each object's linked entities, the objects it does
/// not delete with their fate (and an unreadable one's reason), the
/// undatable entities and the dangling parent references.
#[test]
fn plan_show_lists_what_the_plan_keeps_and_why() {
    let f = Fixture::new();
    f.put("quotes/2020/broken.xml", "<Quotation><ID>9");
    f.lethe(&["index"]).ok();
    let show = |args: &[&str]| {
        let mut all = vec!["plan", "show", "--items", "--keys", "--format", "json"];
        all.extend_from_slice(args);
        f.lethe(&all).ok().json()
    };
    f.plan();
    let doc = show(&[]);
    let case = &doc["cases"][0];
    assert!(
        case["case_clock"]
            .as_str()
            .is_some_and(|c| c.starts_with("20")),
        "{case}"
    );
    assert!(
        doc["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["object"] == "object:inbound/1/lead.json"
                && o["entities"] == serde_json::json!(["lead:1"])),
        "{doc:#}"
    );
    let kept = |fate: &str| -> Vec<serde_json::Value> {
        show(&["--fate", fate])["kept"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let unlinked = kept("unlinked");
    assert_eq!(unlinked.len(), 1, "{unlinked:?}");
    assert_eq!(unlinked[0]["item"], "object:misc/readme.txt");
    let unreadable = kept("unreadable");
    assert_eq!(unreadable[0]["item"], "object:quotes/2020/broken.xml");
    assert!(
        unreadable[0]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let undatable = kept("undatable");
    assert_eq!(undatable.len(), 1);
    assert_eq!(undatable[0]["item"], "lead:4");
    // A wrong parent column: every opportunity dangles, each listed.
    f.edit_config(
        "parent = { lead = \"lead_id\" }",
        "parent = { lead = \"amount\" }",
    );
    f.plan();
    let dangling = kept("dangling");
    assert_eq!(dangling.len(), 2, "{dangling:?}");
    assert!(
        dangling
            .iter()
            .any(|d| d["item"] == "opportunity:2" && d["names"] == "lead:12000"),
        "{dangling:?}"
    );
    // Without --keys, only pseudonyms.
    let text = f.lethe(&["plan", "show", "--items", "--fate", "dangling"]);
    text.ok().contains("dangling").contains("opportunity:~");
    assert!(!text.stdout.contains("12000"), "{}", text.stdout);
}

#[test]
fn plan_prune_removes_old_plans_keeps_the_newest_and_the_audit_chain_verifies() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    f.lethe(&["sweep", "--as-of", AS_OF]).ok();
    let second = f.plan()["id"].as_str().unwrap().to_string();
    let third = f.plan()["id"].as_str().unwrap().to_string();
    assert_eq!(f.state_sql("SELECT count(*) FROM plans").trim(), "3");
    let audit_before = f.state_sql("SELECT count(*) FROM audit").trim().to_string();
    // A plan interrupted mid-apply is kept.
    f.state_sql(&format!(
        "UPDATE plans SET status = 'applying' WHERE id = '{second}'"
    ));
    f.lethe(&["plan", "prune", "--keep", "1"])
        .ok()
        .contains("pruned 1 plan(s)")
        .contains(&format!("kept {second}"));
    assert_eq!(f.state_sql("SELECT count(*) FROM plans").trim(), "2");
    assert_eq!(
        f.state_sql("SELECT count(*) FROM audit").trim(),
        audit_before
    );
    f.lethe(&["audit", "verify"]).ok();
    let list = f.lethe(&["plan", "--list"]).ok().stdout.clone();
    assert!(list.contains(&third) && list.contains(&second), "{list}");
    // Planned only (never started), old enough: goes.
    f.state_sql(&format!(
        "UPDATE plans SET status = 'planned' WHERE id = '{second}'"
    ));
    f.lethe(&[
        "plan",
        "prune",
        "--older-than",
        "0 days",
        "--format",
        "json",
    ])
    .ok();
    // The latest plan stays (it is also the brake's baseline).
    assert_eq!(f.state_sql("SELECT id FROM plans").trim(), third);
    assert_eq!(
        f.state_sql(&format!(
            "SELECT count(*) FROM plan_entities WHERE plan_id != '{third}'"
        ))
        .trim(),
        "0"
    );
    f.lethe(&["audit", "verify"])
        .ok()
        .contains("audit chain intact")
        .contains("delete records of pruned plans");
    f.lethe(&["plan", "prune", "--older-than", "soon"])
        .expect(2);
    f.lethe(&["plan", "prune"]).expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_show_reads_the_items_in_pages() {
    let f = Fixture::new();
    f.lethe(&["index"]).ok();
    let plan_id = f.plan()["id"].as_str().unwrap().to_string();
    let config = lethe::config::load(&f.dir().join("lethe.toml")).unwrap();
    let state = lethe::state::StateStore::open(&config).await.unwrap();
    let filter = lethe::plan::show::ItemFilter::default();
    let read = |page: i64| {
        let (state, filter, plan_id) = (&state, &filter, &plan_id);
        async move {
            let mut cases: Vec<(i64, Vec<String>)> = Vec::new();
            let mut pages = 0;
            lethe::plan::show::for_each_case(state, plan_id, filter, page, &mut |rows| {
                pages += 1;
                for c in rows {
                    let ents = c
                        .entities
                        .iter()
                        .map(|e| format!("{}:{}", e.entity_type, e.entity_key));
                    cases.push((c.case_id, ents.collect()));
                }
            })
            .await
            .unwrap();
            let mut objects = Vec::new();
            lethe::plan::show::for_each_object(state, plan_id, filter, page, &mut |rows| {
                objects.extend(rows.iter().map(|o| o.item));
            })
            .await
            .unwrap();
            (cases, objects, pages)
        }
    };
    let (whole, whole_objects, one) = read(1_000).await;
    assert_eq!(one, 1);
    assert_eq!(whole.len(), 3, "{whole:?}");
    assert_eq!(
        whole.iter().map(|c| c.1.len()).sum::<usize>(),
        5,
        "{whole:?}"
    );
    assert!(!whole_objects.is_empty());
    let (paged, paged_objects, pages) = read(1).await;
    assert_eq!(pages, 3);
    assert_eq!(paged, whole);
    assert_eq!(paged_objects, whole_objects);
}

/// `check` names each JSON or XML rule without `record`: its links are
/// whole-file links, so a file it shares between a deleted and a kept
/// entity is kept whole. A rule with a record, and a CSV rule, get no note.
#[test]
fn check_says_which_rules_link_whole_files() {
    let f = Fixture::new();
    let note = "technical.link[1] (quotes/**/*.xml xml /Quotation/ID → quote): no `record`, so its links are whole-file links";
    let out = f.lethe(&["check", "--no-environment"]);
    out.ok().contains(note);
    assert!(!out.all().contains("technical.link[2]"), "{}", out.all());
    let json = f
        .lethe(&["check", "--no-environment", "--format", "json"])
        .json();
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with(note)),
        "{json}"
    );
    f.edit_config(
        "xml = \"/Quotation/ID\"",
        "xml = \"/Quotation/ID\"\nrecord = \"/Quotation\"",
    );
    let out = f.lethe(&["check", "--no-environment"]);
    assert!(!out.ok().all().contains("whole-file"), "{}", out.all());
}

#[test]
fn the_outlook_counts_each_policys_cases_becoming_due_and_they_add_up() {
    let f = Fixture::empty();
    f.lethe_bare(&["demo", "--dir", ".", "--leads", "400", "--generate-only"])
        .ok();
    f.lethe(&["index"]).ok();
    let plan = f.lethe(&["--format", "json", "plan"]);
    let v = plan.json();
    let all = v["due_by_month"].as_object().expect("the plan's outlook");
    assert_eq!(all.len(), 12, "{v}");
    let policies = v["policies"].as_array().expect("policies");
    let mut sum_all = 0;
    for (month, n) in all {
        let by_policy: u64 = policies
            .iter()
            .map(|p| {
                p["due_by_month"][month]
                    .as_u64()
                    .expect("a count per month")
            })
            .sum();
        assert_eq!(by_policy, n.as_u64().unwrap(), "month {month}: {v}");
        sum_all += by_policy;
    }
    assert!(
        sum_all > 0,
        "the demo has cases becoming due within a year: {v}"
    );
    assert!(
        policies
            .iter()
            .filter(|p| p["due_by_month"]
                .as_object()
                .unwrap()
                .values()
                .any(|n| n != 0))
            .count()
            >= 1
    );
}
