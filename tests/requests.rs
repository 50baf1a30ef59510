//! Subject requests through the real binary on the standard fixture, with
//! one more person: Jane Subject, who has two leads under one e-mail
//! address (spelt two ways in the CRM). Lead 7 led to a contract (its chain
//! is kept, with its reason); lead 8 did not (it goes, with its payload, and
//! its row leaves a shared CSV export). A note in the store names her
//! without a link: listed for review, never deleted.

#[allow(dead_code)] // uses some of the helpers
mod util;

use util::{AS_OF, Fixture};

const SUBJECT_SQL: &str = "
INSERT INTO leads VALUES (7, 'Jane', 'Subject', 'jane.subject@example.com', '+49 40 1110007', 'Kappa GmbH', 'open', '2026-05-01T00:00:00Z', '2026-06-01T00:00:00Z');
INSERT INTO leads VALUES (8, 'Jane', 'Subject', ' Jane.Subject@Example.COM ', '+49 (40) 111-0008', 'Kappa GmbH', 'open', '2026-05-01T00:00:00Z', '2026-06-01T00:00:00Z');
INSERT INTO opportunities VALUES (7, 7, 'Kappa deal', 'won', 5000, '2026-06-01T00:00:00Z');
INSERT INTO opportunities VALUES (8, 8, 'Kappa extra', 'lost', 900, '2026-06-01T00:00:00Z');
INSERT INTO quotes VALUES (7, 7, 5000, '2026-06-01T00:00:00Z');
INSERT INTO contracts VALUES (2, 7, '2026-06-02T00:00:00Z', '2026-06-02T00:00:00Z');
";

const EXPORT: &str =
    "LeadId;Name;Email\r\n8;Jane;jane.subject@example.com\r\n3;Erika;erika.young@example.com\r\n";
const EXPORT_AFTER: &str = "LeadId;Name;Email\r\n3;Erika;erika.young@example.com\r\n";

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.sql(SUBJECT_SQL);
    f.put(
        "inbound/7/lead.json",
        &util::lead_json(7, "Jane", "jane.subject@example.com"),
    );
    f.put(
        "inbound/8/lead.json",
        &util::lead_json(8, "Jane", "Jane.Subject@example.com"),
    );
    f.put("exports/leads-2026-06.csv", EXPORT);
    f.put(
        "misc/jane-note.txt",
        "Call back: JANE.SUBJECT@example.com (re Kappa)\n",
    );
    f.lethe(&["index"]).ok();
    f
}

/// Every entry of a zip: name → bytes.
fn read_zip(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).expect("zip")).expect("a zip");
    let mut out = std::collections::BTreeMap::new();
    for i in 0..z.len() {
        let mut e = z.by_index(i).expect("entry");
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).expect("read entry");
        out.insert(e.name().expect("entry name").to_string(), bytes);
    }
    out
}

fn no_subject_data(text: &str) {
    let lower = text.to_lowercase();
    for needle in ["jane.subject", "1110007", "1110008", "olga.old"] {
        assert!(
            !lower.contains(needle),
            "output names the subject ({needle}): {text}"
        );
    }
}

#[test]
fn an_erasure_request_erases_what_may_go_keeps_what_must_stay_and_is_tracked() {
    let f = fixture();
    let check = f
        .lethe(&[
            "--format",
            "json",
            "suppression",
            "check",
            "--subject",
            "email=jane.subject@example.com",
        ])
        .ok()
        .json();
    assert_eq!(check["results"][0]["suppressed"], false);

    let out = f.lethe(&[
        "--format",
        "json",
        "request",
        "erase",
        "--subject",
        "email= JANE.SUBJECT@example.com",
        "--reference",
        "TICKET-4711",
        "--received",
        "2026-11-20",
    ]);
    out.ok();
    no_subject_data(&out.all());
    let v = out.json();
    let id = v["request"]["id"].as_str().expect("request id").to_string();
    let plan = v["plan"]["id"].as_str().expect("plan id").to_string();
    assert_eq!(v["request"]["status"], "planned");
    assert_eq!(v["request"]["due"], "2026-12-20");
    assert_eq!(v["plan"]["request"], id.as_str());
    // Both leads, found by one address spelt two ways, and their chains.
    assert_eq!(v["entities_found"], 6, "{v}");
    // No retention period: lead 8 was touched in June and still goes.
    assert_eq!(
        v["plan"]["entities_to_delete"],
        serde_json::json!({"lead": 1, "opportunity": 1})
    );
    let kept: Vec<&serde_json::Value> = v["plan"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kept"].as_object().is_some_and(|k| !k.is_empty()))
        .collect();
    assert!(
        kept.iter()
            .any(|p| p["root"] == "lead" && p["kept"]["keep_if contract"] == 1),
        "lead 7 is kept for its contract: {kept:?}"
    );
    assert_eq!(v["plan"]["objects"]["delete"], 1);
    assert_eq!(v["plan"]["objects"]["redact"], 1);
    assert_eq!(v["names_subject"], 1, "the note names her without a link");
    assert_eq!(v["nothing_held"], false);

    // The review lists the note; nothing is deleted by the request itself.
    let items = f
        .lethe(&[
            "--format",
            "json",
            "plan",
            "show",
            &plan,
            "--items",
            "--fate",
            "names-subject",
        ])
        .ok()
        .all();
    assert!(items.contains("names-subject"), "{items}");
    assert_eq!(f.count("leads"), 8);

    let list = f
        .lethe(&["--format", "json", "request", "list"])
        .ok()
        .json();
    assert_eq!(list["requests"][0]["id"], id.as_str());
    assert_eq!(list["requests"][0]["status"], "planned");
    no_subject_data(&list.to_string());

    // Applied like any plan: exactly lead 8 and its opportunity go.
    let applied = f.lethe(&["--format", "json", "apply", &plan]);
    applied.ok();
    no_subject_data(&applied.all());
    let a = applied.json();
    assert_eq!(a["apply"]["objects_deleted"], 1);
    assert_eq!(a["apply"]["objects_redacted"], 1);
    // Her address is still carried by lead 7: not erased, not searched for.
    assert_eq!(a["apply"]["identifiers_still_held"], 1, "{a}");
    assert_eq!(f.ids("leads"), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(f.ids("opportunities"), vec![2, 6, 7]);
    assert_eq!(f.ids("contracts"), vec![1, 2]);
    let files = f.files();
    assert!(!files.contains(&"inbound/8/lead.json".to_string()));
    assert!(files.contains(&"inbound/7/lead.json".to_string()));
    assert!(files.contains(&"misc/jane-note.txt".to_string()));
    let export = std::fs::read_to_string(f.tech().join("exports/leads-2026-06.csv")).unwrap();
    assert_eq!(export, EXPORT_AFTER);

    let shown = f
        .lethe(&["--format", "json", "request", "show", &id])
        .ok()
        .json();
    assert_eq!(shown["status"], "done-with-kept");
    assert!(shown["audit_records"].as_u64().unwrap() >= 3, "{shown}");

    // On the suppression list: her phone (lead 8's only); her address is
    // not, since lead 7 still carries it.
    let check = f
        .lethe(&[
            "--format",
            "json",
            "suppression",
            "check",
            "--subject",
            "email=jane.subject@example.com",
            "--subject",
            "phone=+49 40 111 0008",
        ])
        .ok()
        .json();
    assert_eq!(
        check["results"],
        serde_json::json!([
            {"kind": "email", "suppressed": false},
            {"kind": "phone", "suppressed": true},
        ])
    );

    // A re-import: a new lead with her phone, and a payload naming it.
    f.sql("INSERT INTO leads VALUES (9, 'J', 'S', 'js@example.org', '+4940 1110008', 'Kappa', 'open', '2026-06-01T00:00:00Z', '2026-06-01T00:00:00Z');");
    f.put(
        "inbound/9/lead.json",
        "{\"lead\": {\"id\": 9}, \"Phone\": \"+49 40 1110008\"}\n",
    );
    let idx = f.lethe(&["--format", "json", "index"]).ok().json();
    assert_eq!(idx["reimported"], 1, "{idx}");
    let p = f
        .lethe(&["--format", "json", "plan", "--as-of", AS_OF])
        .ok()
        .json();
    assert_eq!(p["reimported"], 1, "{p}");
    let r = f
        .lethe(&[
            "--format",
            "json",
            "plan",
            "show",
            p["id"].as_str().unwrap(),
            "--items",
            "--keys",
            "--fate",
            "reimported",
        ])
        .ok()
        .all();
    assert!(r.contains("lead:9"), "{r}");

    // Renewed consent: lifted, and audited.
    f.lethe(&[
        "suppression",
        "rm",
        "--subject",
        "phone=+49 40 1110008",
        "--reason",
        "consent 2026-12",
        "--author",
        "dpo",
    ])
    .ok();
    let check = f
        .lethe(&[
            "--format",
            "json",
            "suppression",
            "check",
            "--subject",
            "phone=+49401110008",
        ])
        .ok()
        .json();
    assert_eq!(check["results"][0]["suppressed"], false);
    let audit = f
        .lethe(&["--format", "jsonl", "audit", "export"])
        .ok()
        .all();
    assert!(audit.contains("suppression-rm"), "{audit}");
}

#[test]
fn a_second_erasure_of_an_erased_subject_finds_nothing_held_and_says_so() {
    let f = fixture();
    let first = f
        .lethe(&[
            "--format",
            "json",
            "request",
            "erase",
            "--subject",
            "email=olga.old@example.com",
            "--reference",
            "T-1",
        ])
        .ok()
        .json();
    let plan = first["plan"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        first["plan"]["entities_to_delete"],
        serde_json::json!({"lead": 1})
    );
    f.lethe(&["apply", &plan]).ok();
    assert!(!f.ids("leads").contains(&5));

    let again = f.lethe(&[
        "request",
        "erase",
        "--subject",
        "email=OLGA.OLD@example.com",
        "--reference",
        "T-2",
    ]);
    again
        .ok()
        .contains("nothing held")
        .contains("suppression list");
    no_subject_data(&again.all());
    let again = f
        .lethe(&[
            "--format",
            "json",
            "request",
            "erase",
            "--subject",
            "email=olga.old@example.com",
            "--reference",
            "T-3",
        ])
        .ok()
        .json();
    assert_eq!(again["nothing_held"], true);
    assert_eq!(again["suppressed"][0]["suppressed"], true);
    assert_eq!(again["request"]["status"], "done");
    assert_eq!(again["plan"]["cases"], 0);
}

#[test]
fn a_subject_lethe_cannot_read_is_refused_without_echo() {
    let f = fixture();
    for bad in [
        "email=not-an-address",
        "phone=12-34",
        "fax=123",
        "lead:x:y:z\n",
    ] {
        let out = f.lethe(&["request", "erase", "--subject", bad, "--reference", "T"]);
        out.expect(2);
        let text = out.all();
        assert!(
            !text.contains("not-an-address") && !text.contains("12-34"),
            "{text}"
        );
    }
    f.lethe(&[
        "request",
        "erase",
        "--subject",
        "email=a@b.example",
        "--reference",
        "",
    ])
    .expect(2);
    assert_eq!(f.count("leads"), 8);
    assert_eq!(f.state_sql("SELECT count(*) FROM requests").trim(), "0");
}

#[test]
fn an_access_export_holds_her_rows_her_files_and_only_her_records_of_shared_ones() {
    let f = fixture();
    let out_path = f.dir().join("jane.zip");
    let out_arg = out_path.to_str().unwrap();
    let out = f.lethe(&[
        "--format",
        "json",
        "request",
        "export",
        "--subject",
        "email=jane.subject@example.com",
        "--reference",
        "TICKET-4712",
        "--out",
        out_arg,
    ]);
    out.ok();
    // The command's own output names no one; only the zip does.
    no_subject_data(&out.all());
    let v = out.json();
    let id = v["request"].as_str().expect("request id").to_string();
    let zip = read_zip(&out_path);

    // Every column of her entities, and of no one else's.
    let leads: serde_json::Value =
        serde_json::from_slice(zip.get("entities/lead.json").expect("leads")).unwrap();
    let text = leads.to_string();
    assert!(text.contains("jane.subject@example.com"), "{text}");
    assert!(text.contains("+49 (40) 111-0008"), "{text}");
    assert!(!text.contains("erika"), "another lead's row: {text}");
    assert!(
        zip.contains_key("entities/contract.json"),
        "{:?}",
        zip.keys()
    );

    // Her whole files as stored; from the shared export only her row,
    // under its header, with its line ending.
    let lead8 = std::fs::read(f.tech().join("inbound/8/lead.json")).unwrap();
    assert_eq!(zip.get("files/inbound/8/lead.json"), Some(&lead8));
    assert!(zip.contains_key("files/inbound/7/lead.json"));
    assert_eq!(
        zip.get("files/exports/leads-2026-06.csv")
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        Some("LeadId;Name;Email\r\n8;Jane;jane.subject@example.com\r\n".to_string())
    );
    // The note that names her without a link is not hers by the index.
    assert!(!zip.keys().any(|k| k.contains("jane-note")));
    let manifest: serde_json::Value =
        serde_json::from_slice(zip.get("manifest.json").expect("manifest")).unwrap();
    assert_eq!(manifest["request"]["id"], id.as_str(), "{manifest}");
    assert!(zip.contains_key("index.html"));
    // The store is untouched by an export.
    assert_eq!(
        std::fs::read_to_string(f.tech().join("exports/leads-2026-06.csv")).unwrap(),
        EXPORT
    );

    // Done, and audited without her data; a second export never overwrites.
    let shown = f
        .lethe(&["--format", "json", "request", "show", &id])
        .ok()
        .json();
    assert_eq!(shown["status"], "done", "{shown}");
    let audit = f
        .lethe(&["--format", "jsonl", "audit", "export"])
        .ok()
        .all();
    assert!(audit.contains("access-export"), "{audit}");
    no_subject_data(&audit);
    f.lethe(&[
        "request",
        "export",
        "--subject",
        "email=jane.subject@example.com",
        "--reference",
        "TICKET-4713",
        "--out",
        out_arg,
    ])
    .expect(2);
}

#[test]
fn explain_lists_the_objects_linked_to_an_entity_by_pseudonym() {
    let f = fixture();
    let v = f
        .lethe(&["--format", "json", "explain", "lead:8"])
        .ok()
        .json();
    // Her payload (whole file) and her row of the shared export.
    assert_eq!(v["objects_linked"], 2, "{v}");
    let objects = v["objects"].as_array().expect("objects");
    let shared: Vec<&serde_json::Value> = objects.iter().filter(|o| o["shared"] == true).collect();
    assert_eq!(shared.len(), 1, "{v}");
    assert_eq!(shared[0]["by_record"], true, "a CSV row: {v}");
    let whole: Vec<&serde_json::Value> = objects.iter().filter(|o| o["shared"] == false).collect();
    assert_eq!(whole.len(), 1, "{v}");
    assert_eq!(whole[0]["by_record"], false, "{v}");
    // Pseudonyms, never keys.
    let text = v.to_string();
    assert!(
        !text.contains("inbound/") && !text.contains("exports/"),
        "{text}"
    );
    // Lead 4: its one payload, not shared.
    let four = f
        .lethe(&["--format", "json", "explain", "lead:4"])
        .ok()
        .json();
    assert_eq!(four["objects_linked"], 1, "{four}");
    assert_eq!(four["objects"][0]["shared"], false, "{four}");
}
