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
    let text = include_str!("../../lethe.reference.toml");
    let c = parse_text(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.entities.len(), 4);
    assert_eq!(c.links.len(), 6);
    assert_eq!(c.policies[0].keep_if.len(), 2);
    assert_eq!(c.max_delete_fraction, 0.5);
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
