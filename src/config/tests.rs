use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[crm]
url = "sqlite://crm.db"
[crm.entities.lead]
table = "leads"
key = "id"
clock = "modified_at"
[technical]
url = "technical"
[[policy]]
name = "p"
root = "lead"
retain = "24 months"
basis = "b"
[audit]
key = "0123456789abcdef"
"#;

fn parse_text(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("lethe.toml"), Path::new("/etc/lethe"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse_text(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("config was accepted"),
    }
}

#[test]
fn reference_parses_as_config() {
    // SAFETY of the test: the variable is only read by this parse.
    unsafe { std::env::set_var("LETHE_AUDIT_KEY", "reference-test-key-0123456789") };
    unsafe {
        std::env::set_var(
            "LETHE_INTEGRATION_TOKEN_SHA256",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
    };
    let text = include_str!("../../lethe.reference.toml");
    let c = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
    let s = c.schedule.as_ref().expect("[schedule]");
    assert_eq!(
        (s.pattern.as_str(), s.timezone.as_str()),
        ("0 3 * * *", "Europe/Berlin")
    );
    assert_eq!(s.mode, super::schedule::Mode::Plan);
    assert_eq!(c.serve.tokens.len(), 2);
    assert_eq!(c.serve.tokens[0].scope, Scope::Operate);
    assert_eq!(c.serve.tokens[1].scope, Scope::Admin);
    assert_eq!(c.serve.request_timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.entities.len(), 4);
    assert_eq!(c.links.len(), 8, "the table's link rules only with crm://");
    assert!(c.table.is_some());
    assert_eq!(c.policies[0].keep_if.len(), 2);
    assert_eq!(c.max_delete_fraction, 0.5);
    assert!(c.batch_deletes);
    assert_eq!(c.apply.worker_timeout, std::time::Duration::from_secs(60));
}

#[test]
fn batch_deletes_and_worker_timeout_can_be_set() {
    let text = MINIMAL.replace("[audit]", "[apply]\nworker_timeout = \"5s\"\n[audit]");
    let text = text.replacen("[technical]", "[technical]\nbatch_deletes = false", 1);
    let c = parse_text(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.batch_deletes);
    assert_eq!(c.apply.worker_timeout, std::time::Duration::from_secs(5));
    let text = MINIMAL.replace("[audit]", "[apply]\nworker_timeout = \"200ms\"\n[audit]");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| format!("{p:?}").contains("worker_timeout")),
        "{p:?}"
    );
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let c = parse_text(MINIMAL).unwrap();
    assert_eq!(c.crm, CrmUrl::Sqlite("/etc/lethe/crm.db".into()));
    assert_eq!(c.store, StoreUrl::Folder("/etc/lethe/technical".into()));
    assert_eq!(
        c.state,
        StateUrl::Sqlite("/etc/lethe/lethe-state.db".into())
    );
}

#[test]
fn env_expansion_and_missing_variables() {
    unsafe { std::env::set_var("LETHE_TEST_CRM_FILE", "other.db") };
    let c = parse_text(&MINIMAL.replace("crm.db", "${LETHE_TEST_CRM_FILE}")).unwrap();
    assert_eq!(c.crm, CrmUrl::Sqlite("/etc/lethe/other.db".into()));
    let p = problems(&MINIMAL.replace("0123456789abcdef", "${LETHE_TEST_SURELY_UNSET}"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, "audit.key");
    assert!(p[0].message.contains("LETHE_TEST_SURELY_UNSET"));
}

#[test]
fn every_problem_reported_at_once_with_lines() {
    let text = MINIMAL
        .replace("table = \"leads\"", "tabel = \"leads\"")
        .replace("retain = \"24 months\"", "retain = \"24 monthz\"")
        .replace("root = \"lead\"", "root = \"leed\"")
        .replace("[audit]\nkey = \"0123456789abcdef\"", "");
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"crm.entities.lead.tabel"), "{p:?}");
    assert!(
        keys.contains(&"crm.entities.lead.table"),
        "missing table: {p:?}"
    );
    assert!(keys.contains(&"policy[0].retain"), "{p:?}");
    assert!(keys.contains(&"policy[0].root"), "{p:?}");
    assert!(keys.contains(&"audit.key"), "{p:?}");
    let tabel = p
        .iter()
        .find(|p| p.key == "crm.entities.lead.tabel")
        .unwrap();
    assert_eq!(tabel.line, 5, "the line of the unknown key");
}

#[test]
fn parent_cycles_and_unknown_parents() {
    let text = MINIMAL.replace(
        "clock = \"modified_at\"\n[technical]",
        "clock = \"modified_at\"\nparent = { quote = \"q\" }\n[crm.entities.quote]\ntable = \"quotes\"\nkey = \"id\"\nclock = \"m\"\nparent = { lead = \"l\", account = \"a\" }\n[technical]",
    );
    let p = problems(&text);
    assert!(p.iter().any(|p| p.message.contains("cycle")), "{p:?}");
    assert!(
        p.iter()
            .any(|p| p.message.contains("unknown entity type `account`")),
        "{p:?}"
    );
}

#[test]
fn syntax_errors_carry_a_line() {
    let p = problems("[crm\nurl = 1");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, 1);
}

#[test]
fn retention_is_calendar_aware() {
    let r = Retention::parse("1 month").unwrap();
    let jan31 = crate::model::parse_clock_text("2025-01-31").unwrap();
    let feb28 = crate::model::parse_clock_text("2025-02-28").unwrap();
    assert_eq!(r.add_to(jan31), feb28, "Jan 31 + 1 month = Feb 28");
    let two_years = Retention::parse("24 months").unwrap();
    let d = crate::model::parse_clock_text("2024-02-29").unwrap();
    assert_eq!(
        crate::model::format_instant(two_years.add_to(d)),
        "2026-02-28T00:00:00Z"
    );
    assert!(Retention::parse("P2Y").is_ok());
    assert!(Retention::parse("forever").is_err());
    assert!(Retention::parse("-1 day").is_err());
}

#[test]
fn schedule_and_serve_mistakes_are_reported_by_key() {
    let text = format!(
        "{MINIMAL}\n[schedule]\ncron = \"0 3 * *\"\ntimezone = \"Mars/Olympus\"\nmode = \"often\"\n\n[serve]\nlisten = \"everywhere\"\nrequest_timeout = \"soon\"\n\n[[serve.token]]\nname = \"x\"\nsha256 = \"abc\"\nscope = \"root\"\n"
    );
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "schedule.mode",
        "schedule.cron",
        "serve.listen",
        "serve.request_timeout",
        "serve.token[0].scope",
        "serve.token[0].sha256",
    ] {
        assert!(keys.contains(&k), "{k} not reported: {keys:?}");
    }
    // A bad zone with a good pattern names the zone.
    let text =
        format!("{MINIMAL}\n[schedule]\ncron = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\n");
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "schedule.timezone");
    assert!(found[0].message.contains("IANA"));
}

#[test]
fn every_documented_key_is_known() {
    // Walks lethe.reference.toml: each key it documents must be one that
    // "did you mean" suggests from (a key lethe reads but known_keys lacks
    // would never be suggested).
    fn walk(table: &toml::Table, path: &mut Vec<Seg>, missing: &mut Vec<String>) {
        for (k, v) in table {
            let dynamic = matches!(path.as_slice(), [Seg::Key(c), Seg::Key(e)] if c == "crm" && e == "entities")
                || matches!(path.last(), Some(Seg::Key(p)) if p == "parent" || p == "links" || p == "types");
            if !dynamic && !known_keys(path).contains(&k.as_str()) {
                missing.push(format!("{}.{k}", key_path(path)));
            }
            path.push(Seg::Key(k.clone()));
            match v {
                toml::Value::Table(t) if !matches!(path.last(), Some(Seg::Key(p)) if p == "parent" || p == "links" || p == "types") => {
                    walk(t, path, missing)
                }
                toml::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let toml::Value::Table(t) = item {
                            path.push(Seg::Index(i));
                            walk(t, path, missing);
                            path.pop();
                        }
                    }
                }
                _ => {}
            }
            path.pop();
        }
    }
    let text = include_str!("../../lethe.reference.toml");
    let table: toml::Table = toml::from_str(text).expect("reference parses");
    let mut missing = Vec::new();
    walk(&table, &mut Vec::new(), &mut missing);
    assert_eq!(missing, Vec::<String>::new());
}

#[test]
fn misspelt_keys_and_types_get_a_suggestion() {
    let text = MINIMAL.replace("clock = \"modified_at\"", "clok = \"modified_at\"");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.key == "crm.entities.lead.clok"
                && p.message.contains("did you mean `clock`?")),
        "{p:?}"
    );
    let text = MINIMAL.replace("root = \"lead\"", "root = \"leads\"");
    let p = problems(&text);
    assert!(
        p.iter().any(|p| p.key == "policy[0].root"
            && p.message.contains("did you mean `lead`?")
            && p.message.contains("declared types: lead")),
        "{p:?}"
    );
}

#[test]
fn negative_zero_is_not_a_share() {
    // Regression: `-0.0` passed the range check and printed as "(-0%)".
    let text = format!("{MINIMAL}\n[safety]\nmax_delete_fraction = -0.0\n");
    let p = problems(&text);
    assert!(
        p.iter().any(|p| p.key == "safety.max_delete_fraction"),
        "{p:?}"
    );
    let text = format!("{MINIMAL}\n[safety]\nmax_dangling_fraction = 2\n");
    assert!(
        problems(&text)
            .iter()
            .any(|p| p.key == "safety.max_dangling_fraction")
    );
}

#[test]
fn suggestions_find_typos_not_strangers() {
    let cols = ["opportunityid", "name", "originatingleadid", "modifiedon"];
    assert_eq!(
        closest("leadid", cols.iter().copied()),
        Some("originatingleadid")
    );
    assert_eq!(
        closest("modifedon", cols.iter().copied()),
        Some("modifiedon")
    );
    assert_eq!(closest("Name", cols.iter().copied()), Some("name"));
    assert_eq!(closest("zzz", cols.iter().copied()), None);
}

#[test]
fn problems_found_after_loading_name_their_line() {
    let c = parse_text(MINIMAL).unwrap();
    let p = c.problem(
        vec![
            Seg::from("crm"),
            Seg::from("entities"),
            Seg::from("lead"),
            Seg::from("key"),
        ],
        "no such column",
    );
    assert_eq!((p.line, p.key.as_str()), (6, "crm.entities.lead.key"));
}

#[test]
fn documented_defaults_are_the_code_defaults() {
    // Regression: the reference said batch_cases 500 while the code (and
    // the README) said 1000. Every line of lethe.reference.toml marked as
    // the default must parse to what a config without the key gets.
    unsafe { std::env::set_var("LETHE_AUDIT_KEY", "reference-test-key-0123456789") };
    unsafe {
        std::env::set_var(
            "LETHE_INTEGRATION_TOKEN_SHA256",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
    };
    let text = include_str!("../../lethe.reference.toml");
    let reference = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
    let minimal = parse_text(MINIMAL).unwrap();
    type Get = fn(&Config) -> String;
    let fields: &[(&str, Get)] = &[
        ("crm.vacuum", |c| c.crm_vacuum.to_string()),
        ("crm.max_in_flight", |c| c.crm_max_in_flight.to_string()),
        ("technical.max_content_bytes", |c| {
            c.max_content_bytes.to_string()
        }),
        ("technical.max_line_bytes", |c| c.max_line_bytes.to_string()),
        ("technical.batch_deletes", |c| c.batch_deletes.to_string()),
        ("technical.redact", |c| c.redact.to_string()),
        ("orphans.retain", |c| c.orphans_retain.text().to_string()),
        ("safety.max_delete_fraction", |c| {
            c.max_delete_fraction.to_string()
        }),
        ("safety.max_dangling_fraction", |c| {
            c.safety.max_dangling_fraction.to_string()
        }),
        ("safety.max_drop_fraction", |c| {
            c.safety.max_drop_fraction.to_string()
        }),
        ("safety.max_keep_drop_fraction", |c| {
            c.safety.max_keep_drop_fraction.to_string()
        }),
        ("apply.max_attempts", |c| c.apply.max_attempts.to_string()),
        ("apply.backoff", |c| format!("{:?}", c.apply.backoff)),
        ("apply.max_backoff", |c| {
            format!("{:?}", c.apply.max_backoff)
        }),
        ("apply.batch_cases", |c| c.apply.batch_cases.to_string()),
        ("apply.batch_objects", |c| c.apply.batch_objects.to_string()),
        ("apply.parallel_deletes", |c| {
            c.apply.parallel_deletes.to_string()
        }),
        ("apply.worker_timeout", |c| {
            format!("{:?}", c.apply.worker_timeout)
        }),
        ("serve.listen", |c| c.serve.listen.clone()),
        ("serve.body_limit", |c| c.serve.body_limit.to_string()),
        ("serve.request_timeout", |c| {
            format!("{:?}", c.serve.request_timeout)
        }),
        ("state.url", |c| format!("{:?}", c.state)),
    ];
    let mut section = String::new();
    let mut checked = 0;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l.trim_matches(|c| c == '[' || c == ']').to_string();
            section = section.rsplit('.').next().unwrap_or_default().to_string();
            continue;
        }
        let Some((kv, comment)) = l.split_once('#') else {
            continue;
        };
        let comment = comment.trim();
        let marked = comment == "default"
            || comment.starts_with("default;")
            || comment.starts_with("default ")
            || comment.ends_with("(default)")
            || comment.contains("(default ");
        let Some((key, _)) = kv.split_once('=') else {
            continue;
        };
        let key = format!("{section}.{}", key.trim());
        if !marked || key == "schedule.mode" {
            continue;
        }
        let (_, get) = fields
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} is documented as a default; add it to this test"));
        assert_eq!(
            get(&reference),
            get(&minimal),
            "{key}: documented default differs from the code's"
        );
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} defaults checked");
}

#[test]
fn identifiers_must_be_subject_columns() {
    let ok = MINIMAL.replace(
        "clock = \"modified_at\"",
        "clock = \"modified_at\"\nsubject = [\"email\", \"phone\"]\nidentifiers = [\"email\"]",
    );
    let c = parse_text(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.entities[0].identifiers, vec!["email".to_string()]);
    assert!(c.redact, "redaction is on by default");
    // A typo, or a column not declared as subject data, is refused at its line.
    let typo = MINIMAL.replace(
        "clock = \"modified_at\"",
        "clock = \"modified_at\"\nsubject = [\"email\"]\nidentifiers = [\"emial\"]",
    );
    let p = problems(&typo);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].message
            .contains("`emial` is not one of this type's subject columns (email)")
    );
    assert_eq!(p[0].line, 9, "{p:?}");
    let off = MINIMAL.replace("url = \"technical\"", "url = \"technical\"\nredact = false");
    assert!(!parse_text(&off).unwrap().redact);
}

#[test]
fn records_are_prefixes_of_their_rules_path_and_errors_name_the_line() {
    let rules = r#"
[[technical.link]]
glob = "**/*.json"
json = "$.records[*].lead.id"
record = "$.records[*]"
entity = "lead"

[[technical.link]]
glob = "**/*.xml"
xml = "/b:Batch/Lead/Id"
record = "/Batch/x:Lead"
entity = "lead"

[[technical.link]]
glob = "**/*.json"
json = "$.lead.id"
entity = "lead"
"#;
    let c = parse_text(&MINIMAL.replace("[[policy]]", &format!("{rules}\n[[policy]]"))).unwrap();
    let signatures: Vec<Option<String>> = c
        .links
        .iter()
        .map(|l| match l {
            LinkRule::Content { kind, .. } => kind.record_signature(),
            _ => None,
        })
        .collect();
    assert_eq!(
        signatures,
        vec![
            Some("json $['records'][*]".to_string()),
            Some("xml /Batch/Lead".to_string()),
            None
        ]
    );
    let notes: Vec<String> = c.links.iter().filter_map(|l| l.whole_file_note()).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("technical.link[2] (**/*.json json $.lead.id"),
        "{notes:?}"
    );
    assert!(notes[0].contains("whole-file links"), "{notes:?}");

    // Each refusal at the line of its `record` key.
    let bad = |rule: &str| -> Vec<Problem> {
        let text = MINIMAL.replace(
            "[[policy]]",
            &format!("[[technical.link]]\n{rule}\n[[policy]]"),
        );
        problems(&text)
    };
    let line_of_record = |rule: &str| {
        MINIMAL[..MINIMAL.find("[[policy]]").unwrap()]
            .lines()
            .count()
            + 2
            + rule.lines().position(|l| l.starts_with("record")).unwrap()
    };
    for (rule, says) in [
        (
            "glob = \"**\"\njson = \"$.records[*].id\"\nrecord = \"$.records\"\nentity = \"lead\"",
            "does not end in [*]",
        ),
        (
            "glob = \"**\"\njson = \"$.records[*].id\"\nrecord = \"$.records[0]\"\nentity = \"lead\"",
            "does not end in [*]",
        ),
        (
            "glob = \"**\"\njson = \"$.records[*].id\"\nrecord = \"$.records[*].id\"\nentity = \"lead\"",
            "does not end in [*]",
        ),
        (
            "glob = \"**\"\njson = \"$.records[*]\"\nrecord = \"$.records[*]\"\nentity = \"lead\"",
            "not a proper prefix",
        ),
        (
            "glob = \"**\"\njson = \"$.records[*].id\"\nrecord = \"$.other[*]\"\nentity = \"lead\"",
            "not a proper prefix",
        ),
        (
            "glob = \"**\"\njson = \"$.records[*].items[?@.x].id\"\nrecord = \"$.rec[*]\"\nentity = \"lead\"",
            "not a proper prefix",
        ),
        (
            "glob = \"**\"\njson = \"$..id\"\nrecord = \"$..records[*]\"\nentity = \"lead\"",
            "a record path is $ followed by",
        ),
        (
            "glob = \"**\"\nxml = \"/Batch/Lead/Id\"\nrecord = \"/Batch/Other\"\nentity = \"lead\"",
            "not a proper prefix",
        ),
        (
            "glob = \"**\"\nxml = \"/Batch/Lead\"\nrecord = \"/Batch/Lead\"\nentity = \"lead\"",
            "not a proper prefix",
        ),
        (
            "glob = \"**\"\nxml = \"/Batch/Lead/@id\"\nrecord = \"/Batch/Lead/@id\"\nentity = \"lead\"",
            "not an attribute",
        ),
        (
            "glob = \"**\"\ncsv = \"LeadId\"\nrecord = \"row\"\nentity = \"lead\"",
            "records are its rows",
        ),
        (
            "path = \"inbound/{lead}/**\"\nrecord = \"$.records[*]\"",
            "only JSON and XML rules take a record",
        ),
        (
            "glob = \"**\"\nmetadata = \"lead-id\"\nrecord = \"$.records[*]\"\nentity = \"lead\"",
            "only JSON and XML rules take a record",
        ),
        (
            "crm = \"lead.source_file\"\nrecord = \"$.records[*]\"",
            "only JSON and XML rules take a record",
        ),
    ] {
        let p = bad(rule);
        let r = p
            .iter()
            .find(|p| p.key == "technical.link[0].record")
            .unwrap_or_else(|| panic!("{rule}: {p:?}"));
        assert!(r.message.contains(says), "{rule}: {}", r.message);
        assert_eq!(r.line, line_of_record(rule), "{rule}");
    }
    // Rules that stay valid: a path beyond the streamable subset whose
    // record is its beginning, and an attribute in the record element.
    for rule in [
        "glob = \"**\"\njson = \"$.records[*].items[?@.x].id\"\nrecord = \"$.records[*]\"\nentity = \"lead\"",
        "glob = \"**\"\nxml = \"/Batch/Lead/@id\"\nrecord = \"/Batch/Lead\"\nentity = \"lead\"",
        "glob = \"**\"\nxml = \"//Lead//Id\"\nrecord = \"//Lead\"\nentity = \"lead\"",
    ] {
        let text = MINIMAL.replace(
            "[[policy]]",
            &format!("[[technical.link]]\n{rule}\n[[policy]]"),
        );
        parse_text(&text).unwrap_or_else(|e| panic!("{rule}: {e}"));
    }
}

#[test]
fn record_signatures_are_equal_exactly_for_the_same_pieces() {
    let json = |p: &str, r: Option<&str>| ContentKind::json(p, r).unwrap().record_signature();
    let xml = |p: &str, r: Option<&str>| ContentKind::xml(p, r).unwrap().record_signature();
    // The same records, spelt two ways, under two value paths.
    assert_eq!(
        json("$.records[*].lead.id", Some("$.records[*]")),
        json("$['records'][*].owner.id", Some("$['records'].*"))
    );
    assert_ne!(
        json("$.records[*].lead.id", Some("$.records[*]")),
        json("$.records[*].lead[*].id", Some("$.records[*].lead[*]"))
    );
    assert_eq!(
        xml("/Batch/Lead/Id", Some("/Batch/Lead")),
        xml("/b:Batch/Lead/@ref", Some("/b:Batch/b:Lead"))
    );
    assert_ne!(
        xml("/Batch/Lead/Id", Some("/Batch/Lead")),
        xml("//Lead/Id", Some("//Lead"))
    );
    // JSON and XML records are never the same pieces; rules without
    // records have none.
    assert_ne!(
        json("$.Batch.Lead[*].Id", Some("$.Batch.Lead[*]")),
        xml("/Batch/Lead/Id", Some("/Batch/Lead"))
    );
    assert_eq!(json("$.records[*].id", None), None);
    assert_eq!(xml("/Batch/Lead/Id", None), None);
    let csv = |d: Option<u8>| {
        ContentKind::Csv {
            column: "LeadId".into(),
            delimiter: d,
        }
        .record_signature()
    };
    assert_eq!(csv(None), Some("csv".into()));
    assert_eq!(csv(Some(b';')), Some("csv ;".into()));
    assert_ne!(csv(None), csv(Some(b',')));
}

#[test]
fn dataverse_urls_are_https_or_plain_http_on_loopback() {
    let with = |url: &str| parse_text(&MINIMAL.replace("sqlite://crm.db", url));
    assert_eq!(
        with("dataverse://org.crm4.dynamics.com").unwrap().crm,
        CrmUrl::Dataverse {
            origin: "https://org.crm4.dynamics.com".into()
        }
    );
    assert_eq!(
        with("dataverse://org.crm4.dynamics.com/").unwrap().crm,
        CrmUrl::Dataverse {
            origin: "https://org.crm4.dynamics.com".into()
        }
    );
    assert_eq!(
        with("dataverse+http://127.0.0.1:4004").unwrap().crm,
        CrmUrl::Dataverse {
            origin: "http://127.0.0.1:4004".into()
        }
    );
    for bad in [
        "dataverse+http://org.crm4.dynamics.com",
        "dataverse://org.crm4.dynamics.com/api/data/v9.2",
        "dataverse://user:secret@org.crm4.dynamics.com",
        "dataverse://",
    ] {
        let e = with(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad}"))
            .to_string();
        assert!(e.contains("crm.url"), "{bad}: {e}");
        assert!(!e.contains("secret"), "{bad}: {e}");
    }
    assert_eq!(
        with("dataverse://org.crm4.dynamics.com")
            .unwrap()
            .crm_max_in_flight,
        16
    );
}

#[test]
fn a_payload_table_needs_no_name_nor_version_and_a_size_only_on_dataverse() {
    let table = |crm: &str, extra: &str| {
        MINIMAL
            .replace("url = \"sqlite://crm.db\"", &format!("url = \"{crm}\""))
            .replace(
                "url = \"technical\"",
                &format!(
                    "url = \"crm://\"\n[technical.table]\ntable = \"payloads\"\nkey = \"id\"\nbody = \"body\"\nencoding = \"base64\"\nmodified = \"modified_on\"\n{extra}"
                ),
            )
    };
    let c = parse_text(&table("sqlite://crm.db", "")).unwrap_or_else(|e| panic!("{e}"));
    let t = c.table.expect("[technical.table]");
    assert_eq!((t.name, t.version, t.size), (None, None, None));
    let found = problems(&table("sqlite://crm.db", "size = \"filesize\""));
    assert!(
        found.iter().any(|p| p.key == "technical.table.size"),
        "{found:?}"
    );
    let found = problems(&table("dataverse+http://127.0.0.1:9", ""));
    assert!(
        found
            .iter()
            .any(|p| p.key == "technical.table.size" && p.message.contains("filesize")),
        "{found:?}"
    );
    let c = parse_text(&table(
        "dataverse+http://127.0.0.1:9",
        "size = \"filesize\"",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.table.and_then(|t| t.size).as_deref(), Some("filesize"));
    let found = problems(
        &table("dataverse+http://127.0.0.1:9", "size = \"filesize\"")
            .replace("encoding = \"base64\"", "encoding = \"raw\""),
    );
    assert!(
        found.iter().any(|p| p.key == "technical.table.encoding"),
        "{found:?}"
    );
}
