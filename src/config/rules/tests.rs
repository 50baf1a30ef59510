use super::*;

fn types() -> BTreeSet<String> {
    ["lead", "quote"].iter().map(|s| s.to_string()).collect()
}

#[test]
fn path_captures_one_segment() {
    let p = PathPattern::compile("inbound/{lead}/**", &types()).unwrap();
    assert_eq!(
        p.matches("inbound/4711/a/b.json"),
        vec![("lead".into(), "4711".into())]
    );
    assert_eq!(
        p.matches("inbound/4711/x.xml"),
        vec![("lead".into(), "4711".into())]
    );
    assert!(p.matches("outbound/4711/x.xml").is_empty());
    assert!(
        p.matches("inbound/4711").is_empty(),
        "** after / needs the slash"
    );
}

#[test]
fn double_star_slash_matches_zero_folders() {
    let p = PathPattern::compile("**/lead-{lead}.json", &types()).unwrap();
    assert_eq!(p.matches("lead-7.json"), vec![("lead".into(), "7".into())]);
    assert_eq!(
        p.matches("a/b/lead-7.json"),
        vec![("lead".into(), "7".into())]
    );
    assert!(p.matches("a/lead-7.json.bak").is_empty());
}

#[test]
fn star_stays_in_its_segment() {
    let p = PathPattern::compile("q/*/{quote}.xml", &types()).unwrap();
    assert_eq!(
        p.matches("q/2024/9.xml"),
        vec![("quote".into(), "9".into())]
    );
    assert!(p.matches("q/2024/01/9.xml").is_empty());
}

/// Regression: `inbound/18/new<LF>line.json` got no link (the pattern's
/// `.` did not match a newline) and was never deleted with its lead.
const ODD: &[&str] = &[
    "new\nline.json",
    "tab\there.json",
    "back\\slash.json",
    "50% off.json",
    "sp ace.json",
    "\u{e4}\u{f6}\u{fc}\u{1f600}.json",
    "\r\n.json",
    "byte\u{10ffff}.json",
];

#[test]
fn patterns_and_globs_match_any_character_a_key_may_hold() {
    let p = PathPattern::compile("inbound/{lead}/**", &types()).unwrap();
    let flat = PathPattern::compile("in/{lead}.json", &types()).unwrap();
    let glob = |g: &str| {
        globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .unwrap()
            .compile_matcher()
    };
    let (star, deep) = (glob("inbound/*/*.json"), glob("**/*.json"));
    for name in ODD {
        let key = format!("inbound/18/{name}");
        assert_eq!(
            p.matches(&key),
            vec![("lead".into(), "18".into())],
            "{key:?}"
        );
        assert!(star.is_match(&key), "{key:?}");
        assert!(deep.is_match(&key), "{key:?}");
        let stem = name.trim_end_matches(".json");
        assert_eq!(
            flat.matches(&format!("in/{stem}.json")),
            vec![("lead".into(), stem.to_string())],
            "{name:?}"
        );
        let deeper = format!("inbound/{name}/x.json");
        assert_eq!(p.matches(&deeper), vec![("lead".into(), name.to_string())]);
    }
    assert!(
        !star.is_match("inbound/a/b/c.json"),
        "`*` stays in its segment"
    );
}

#[test]
fn pattern_errors_name_the_problem() {
    assert!(
        PathPattern::compile("inbound/{account}/**", &types())
            .unwrap_err()
            .contains("names no entity type")
    );
    assert!(
        PathPattern::compile("inbound/**", &types())
            .unwrap_err()
            .contains("captures no entity")
    );
    assert!(PathPattern::compile("in**/{lead}", &types()).is_err());
}

/// Regression: a CSV rule's description (of which the index's rule hash
/// is made) left out its delimiter, so changing it re-indexed nothing.
#[test]
fn a_csv_rules_description_names_its_delimiter() {
    let rule = |delimiter: Option<&str>| {
        let raw = RawLink {
            glob: Some("**/*.csv".into()),
            csv: Some("LeadId".into()),
            delimiter: delimiter.map(str::to_string),
            entity: Some("lead".into()),
            ..RawLink::default()
        };
        compile(0, &raw, &types()).unwrap().describe()
    };
    assert_eq!(rule(None), "**/*.csv csv LeadId → lead");
    assert_eq!(rule(Some(";")), "**/*.csv csv LeadId delimiter ';' → lead");
    assert_ne!(rule(Some("tab")), rule(Some("|")));
}

#[test]
fn xml_paths_by_local_name() {
    let p = XmlPath::parse("/cac:Quotation/cbc:ID").unwrap();
    assert!(p.matches(&["Quotation".into(), "ID".into()]));
    assert!(!p.matches(&["Quotation".into(), "X".into(), "ID".into()]));
    let any = XmlPath::parse("//ID").unwrap();
    assert!(any.matches(&["Quotation".into(), "X".into(), "ID".into()]));
    assert!(any.matches(&["ID".into()]));
    let attr = XmlPath::parse("/Lead/@id").unwrap();
    assert_eq!(attr.attribute.as_deref(), Some("id"));
    assert!(XmlPath::parse("Quotation/ID").is_err());
}
