//! The index stage against real payloads (../shared/samples, never edited:
//! copied into a temporary store) and against hostile and broken input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lethe::config::{self, Config};
use lethe::index;
use lethe::state::StateStore;
use lethe::store::folder::FolderStore;
use sqlx::Row;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            // Copies of read-only samples must stay writable for cleanup.
            let mut perm = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&target, perm).unwrap();
        }
    }
}

const TYPES: &str = r#"
[crm]
url = "sqlite://crm.db"
[crm.entities.record]
table = "records"
key = "id"
clock = "modified_at"
[crm.entities.account]
table = "accounts"
key = "id"
clock = "modified_at"
[crm.entities.quote]
table = "quotes"
key = "id"
clock = "modified_at"
[crm.entities.order]
table = "orders"
key = "id"
clock = "modified_at"
[crm.entities.invoice]
table = "invoices"
key = "id"
clock = "modified_at"
[[policy]]
name = "p"
root = "record"
retain = "1 year"
basis = "test"
[audit]
key = "0123456789abcdef0123"
"#;

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: Config,
    state: StateStore,
    store: FolderStore,
}

async fn env(technical: &str) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir_all(dir.join("technical")).unwrap();
    let text = format!("{TYPES}\n[technical]\nurl = \"technical\"\n{technical}");
    std::fs::write(dir.join("lethe.toml"), &text).unwrap();
    let config = config::load(&dir.join("lethe.toml")).unwrap_or_else(|e| panic!("{e}"));
    let state = StateStore::open(&config).await.unwrap();
    let store = FolderStore::open(&dir.join("technical")).unwrap();
    Env {
        _tmp: tmp,
        dir,
        config,
        state,
        store,
    }
}

impl Env {
    async fn index(&self) -> index::IndexSummary {
        index::run(&self.config, &self.store, &self.state, None, &|_, _| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// object key → [(type, key, rule, location)]
    async fn links(&self) -> BTreeMap<String, Vec<(String, String, i64, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT o.key, l.entity_type, l.entity_key, l.rule, l.location FROM links l JOIN objects o ON o.id = l.object_id
             ORDER BY o.key, l.rule, l.rowid",
        )
        .fetch_all(self.state.pool())
        .await
        .unwrap();
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for r in rows {
            out.entry(r.get(0))
                .or_default()
                .push((r.get(1), r.get(2), r.get(3), r.get(4)));
        }
        out
    }

    /// object key → (status, error)
    async fn objects(&self) -> BTreeMap<String, (String, Option<String>)> {
        let rows = sqlx::query("SELECT key, status, error FROM objects")
            .fetch_all(self.state.pool())
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect()
    }

    fn tech(&self) -> PathBuf {
        self.dir.join("technical")
    }
}

fn keys(links: &[(String, String, i64, Option<String>)], rule: i64) -> Vec<&str> {
    links
        .iter()
        .filter(|l| l.3.is_some() && l.2 == rule)
        .map(|l| l.1.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_payloads_link_exactly() {
    let e = env(r#"
[[technical.link]]
glob = "xml/*.xml"
xml = "/Quotation/ID"
entity = "quote"
[[technical.link]]
glob = "xml/*.xml"
xml = "/Order/ID"
entity = "order"
[[technical.link]]
glob = "xml/*.xml"
xml = "//BuyerReference"
entity = "invoice"
[[technical.link]]
glob = "json/*.json"
json = "$.records[*].attributes.referenceId"
entity = "record"
[[technical.link]]
glob = "csv/*.csv"
csv = "accountId"
entity = "account"
[[technical.link]]
glob = "json/*.json"
json = "$..referenceId"
entity = "record"
"#)
    .await;
    copy_dir(&samples().join("payloads"), &e.tech());
    let summary = e.index().await;
    assert_eq!(summary.objects_unreadable, 0, "{summary:?}");
    let links = e.links().await;

    assert_eq!(
        keys(&links["xml/UBL-Quotation-2.1-Example.xml"], 0),
        vec!["QIY7655"]
    );
    assert_eq!(keys(&links["xml/UBL-Order-2.1-Example.xml"], 1), vec!["34"]);
    assert!(
        !links.contains_key("xml/UBL-Invoice-2.1-Example.xml"),
        "an Invoice is not an Order: {links:?}"
    );
    for f in [
        "xml/xrechnung-01.15a-INVOICE_ubl.xml",
        "xml/xrechnung-03.03a-INVOICE_ubl.xml",
        "xml/xrechnung-03.03a-INVOICE_uncefact.xml",
    ] {
        assert_eq!(keys(&links[f], 2), vec!["11002002-98765-14"], "{f}");
    }

    // Salesforce sObject trees: one link per record, in order, with its pointer.
    for (file, prefix, n) in [
        ("json/apex-recipes-Accounts.json", "AccountRef", 50),
        ("json/apex-recipes-Contacts.json", "ContactRef", 150),
        ("json/apex-recipes-Opportunities.json", "OpportunityRef", 50),
    ] {
        let l = &links[file];
        let streamed: Vec<(&str, &str)> = l
            .iter()
            .filter(|x| x.2 == 3)
            .map(|x| (x.1.as_str(), x.3.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(streamed.len(), n, "{file}");
        for (i, (key, at)) in streamed.iter().enumerate() {
            assert_eq!(*key, format!("{prefix}{}", i + 1));
            assert_eq!(*at, format!("/records/{i}/attributes/referenceId"));
        }
        // The whole-document evaluator ($..) finds the same values.
        assert_eq!(keys(l, 5), keys(l, 3), "{file}");
    }
    assert!(!links.contains_key("json/apex-recipes-data-plan.json"));

    // CSV: one link per row with its row number; 48 distinct accounts.
    let contacts = &links["csv/apex-recipes-Contacts.csv"];
    assert_eq!(contacts.len(), 150);
    assert_eq!(contacts[0].1, "@AccountRef10");
    assert_eq!(contacts[0].3.as_deref(), Some("row 2"));
    assert_eq!(contacts[149].3.as_deref(), Some("row 151"));
    let distinct: std::collections::BTreeSet<&str> =
        contacts.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(distinct.len(), 48);
    assert_eq!(links["csv/apex-recipes-Opportunities.csv"].len(), 50);
    assert!(
        !links.contains_key("csv/apex-recipes-Accounts.csv"),
        "no accountId column there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_unreadable_and_the_run_goes_on() {
    let e = env(r#"
max_line_bytes = 1048576
[[technical.link]]
glob = "**/*.json"
json = "$.id"
entity = "record"
[[technical.link]]
glob = "**/*.xml"
xml = "//ID"
entity = "quote"
[[technical.link]]
glob = "**/*.csv"
csv = "id"
entity = "account"
[[technical.link]]
glob = "**/y_object_duplicated_key.json"
json = "$.a"
entity = "record"
[[technical.link]]
path = "by-path/{record}/**"
"#)
    .await;
    let t = e.tech();
    copy_dir(&samples().join("bad-input"), &t);
    let generated = t.join("generated");
    std::fs::create_dir_all(&generated).unwrap();
    std::fs::write(
        generated.join("truncated.json"),
        br#"{"id": "17", "email": "jane.doe@exa"#,
    )
    .unwrap();
    std::fs::write(
        generated.join("invalid-utf8-id.json"),
        b"{\"id\": \"\xff\xfe\"}",
    )
    .unwrap();
    std::fs::write(generated.join("nul.json"), b"{\"id\": \"1\0\"}\0\0").unwrap();
    std::fs::write(generated.join("latin1.csv"), b"id;name\r\n7\xfc;M\r\n").unwrap();
    std::fs::write(
        generated.join("latin1-name.csv"),
        b"id;name\r\n8;M\xfcller\r\n",
    )
    .unwrap();
    std::fs::write(
        generated.join("utf16.xml"),
        b"\xff\xfe<\0a\0>\0<\0/\0a\0>\0",
    )
    .unwrap();
    let mut long = b"id,blob\n1,".to_vec();
    long.extend(std::iter::repeat_n(b'x', 2 << 20));
    std::fs::write(generated.join("long-line.csv"), &long).unwrap();
    std::fs::write(
        generated.join("Angebot Müller & Söhne.xml"),
        "<Q><ID>Ä-1</ID></Q>",
    )
    .unwrap();
    std::fs::write(generated.join("a..b.json"), r#"{"id": 5}"#).unwrap();
    std::fs::create_dir_all(t.join("by-path/99")).unwrap();
    std::fs::write(t.join("by-path/99/broken.json"), "{{{").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.json"), r#"{"id": "outside"}"#).unwrap();
    std::os::unix::fs::symlink(outside.path(), t.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.json"), t.join("file-link.json"))
        .unwrap();

    let summary = e.index().await;
    let objects = e.objects().await;
    let links = e.links().await;
    let status = |k: &str| objects.get(k).map(|o| o.0.as_str()).unwrap_or("missing");

    for k in [
        "json/n_structure_100000_opening_arrays.json",
        "json/n_structure_open_array_object.json",
        "json/n_structure_unclosed_array.json",
        "generated/invalid-utf8-id.json",
        "json/i_string_UTF-16LE_with_BOM.json",
        "generated/truncated.json",
        "generated/nul.json",
        "generated/latin1.csv",
        "generated/utf16.xml",
        "generated/long-line.csv",
        "by-path/99/broken.json",
    ] {
        assert_eq!(status(k), "unreadable", "{k}: {:?}", objects.get(k));
    }
    let long_err = objects["generated/long-line.csv"]
        .1
        .clone()
        .unwrap_or_default();
    assert!(long_err.contains("max_line_bytes"), "{long_err}");
    // A UTF-8 byte order mark is not an error.
    assert_eq!(status("json/i_structure_UTF-8_BOM_empty_object.json"), "ok");
    // Invalid UTF-8 off the path is skipped unread; it costs no link.
    assert_eq!(keys(&links["generated/latin1-name.csv"], 2), vec!["8"]);
    assert_eq!(status("json/i_string_invalid_utf-8.json"), "ok");
    assert!(!links.contains_key("json/i_string_invalid_utf-8.json"));
    // Entities are never expanded and nothing external is fetched.
    for k in [
        "xml/xmlbomb.xml",
        "xml/quadratic.xml",
        "xml/external.xml",
        "xml/dtd.xml",
        "xml/cyclic.xml",
    ] {
        assert_ne!(status(k), "missing", "{k}");
        assert!(!links.contains_key(k), "{k}: {:?}", links.get(k));
    }
    // Duplicate member names: a link per value when streaming.
    let dup = &links["json/y_object_duplicated_key.json"];
    assert_eq!(
        dup.iter().map(|l| l.1.as_str()).collect::<Vec<_>>(),
        vec!["b", "c"]
    );
    // Names with spaces, umlauts and dots are objects like any other.
    assert_eq!(
        keys(&links["generated/Angebot Müller & Söhne.xml"], 1),
        vec!["Ä-1"]
    );
    assert_eq!(keys(&links["generated/a..b.json"], 0), vec!["5"]);
    // A path link survives the failed content rule, which leaves no link.
    assert_eq!(
        links["by-path/99/broken.json"]
            .iter()
            .map(|l| (l.1.as_str(), l.2))
            .collect::<Vec<_>>(),
        vec![("99", 4)]
    );
    // Symlinks: recorded as skipped, never followed.
    assert_eq!(status("escape"), "skipped");
    assert_eq!(status("file-link.json"), "skipped");
    assert!(!objects.keys().any(|k| k.starts_with("escape/")));
    assert!(links.values().flatten().all(|l| l.1 != "outside"));
    assert_eq!(summary.entries_skipped, 2);
    // Errors name the problem, not the content.
    for (k, (_, err)) in &objects {
        let err = err.as_deref().unwrap_or("");
        for secret in ["jane.doe", "Müller", "w3schools", "lol", "xxxxxxxx"] {
            assert!(!err.contains(secret), "{k}: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_incremental() {
    let e = env(r#"
[[technical.link]]
glob = "**/*.json"
json = "$.id"
entity = "record"
"#)
    .await;
    for i in 0..20 {
        std::fs::write(
            e.tech().join(format!("{i}.json")),
            format!(r#"{{"id": {i}}}"#),
        )
        .unwrap();
    }
    let first = e.index().await;
    assert_eq!((first.objects_read, first.objects_unchanged), (20, 0));
    let second = e.index().await;
    assert_eq!((second.objects_read, second.objects_unchanged), (0, 20));
    assert_eq!(
        second.links_per_rule,
        vec![20],
        "unchanged objects keep their links"
    );
    std::fs::write(e.tech().join("3.json"), r#"{"id": "three"}"#).unwrap();
    std::fs::remove_file(e.tech().join("4.json")).unwrap();
    let third = e.index().await;
    assert_eq!(
        (
            third.objects_read,
            third.objects_unchanged,
            third.objects_removed
        ),
        (1, 18, 1)
    );
    let links = e.links().await;
    assert_eq!(keys(&links["3.json"], 0), vec!["three"]);
    assert!(!links.contains_key("4.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_column_names_the_object() {
    let e = env(r#"
[[technical.link]]
crm = "record.source_file"
"#)
    .await;
    let crm = lethe::crm::sqlite::SqliteCrm::open(&e.dir.join("crm.db"), true)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE records (id INTEGER PRIMARY KEY, modified_at TEXT, source_file TEXT);
         INSERT INTO records VALUES (1, '2020-01-01', 'inbound/a.json'), (2, '2020-01-01', NULL), (3, '2020-01-01', '/elsewhere/b.json');",
    )
    .execute(crm.pool())
    .await
    .unwrap();
    let abs = e.tech().join("inbound/c.json");
    sqlx::query("INSERT INTO records VALUES (4, '2020-01-01', ?)")
        .bind(format!("file://{}", abs.display()))
        .execute(crm.pool())
        .await
        .unwrap();
    std::fs::create_dir_all(e.tech().join("inbound")).unwrap();
    for f in ["a.json", "b.json", "c.json"] {
        std::fs::write(e.tech().join("inbound").join(f), "{}").unwrap();
    }
    let summary = index::run(&e.config, &e.store, &e.state, Some(&crm), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(summary.links_per_rule, vec![2]);
    let links = e.links().await;
    assert_eq!(links["inbound/a.json"][0].1, "1");
    assert_eq!(links["inbound/c.json"][0].1, "4");
    assert!(
        !links.contains_key("inbound/b.json"),
        "a path outside the store links nothing"
    );
    // Without the CRM, the rule cannot run: an error, not a silent gap.
    assert!(
        index::run(&e.config, &e.store, &e.state, None, &|_, _| {})
            .await
            .is_err()
    );
}

/// Regression: the summary counted links and unreadable objects of this
/// run's reads (or of the last run that read something), so `lethe index`
/// said "0 unreadable" with one in the index, and link counts an apply had
/// made stale. Totals now describe the index after the run; `run_*` this run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_the_index_after_the_run() {
    let e = env(r#"
[[technical.link]]
glob = "**/*.json"
json = "$.id"
entity = "record"
"#)
    .await;
    for i in 0..5 {
        std::fs::write(
            e.tech().join(format!("{i}.json")),
            format!(r#"{{"id": {i}}}"#),
        )
        .unwrap();
    }
    let first = e.index().await;
    assert_eq!(
        (
            first.links_per_rule.clone(),
            first.run_links_per_rule.clone()
        ),
        (vec![5], vec![5])
    );
    std::fs::write(e.tech().join("0.json"), "{ not json").unwrap();
    let second = e.index().await;
    assert_eq!(
        (second.objects_unreadable, second.run_objects_unreadable),
        (1, 1),
        "{second:?}"
    );
    assert_eq!(
        (
            second.links_per_rule.clone(),
            second.run_links_per_rule.clone()
        ),
        (vec![4], vec![0])
    );
    let third = e.index().await;
    assert_eq!(third.objects_read, 0);
    assert_eq!(
        (third.objects_unreadable, third.run_objects_unreadable),
        (1, 0),
        "{third:?}"
    );
    assert_eq!(third.links_per_rule, vec![4]);
    // An apply deletes a file and its index entry, between two runs.
    std::fs::remove_file(e.tech().join("1.json")).unwrap();
    sqlx::query("DELETE FROM objects WHERE key = '1.json'")
        .execute(e.state.pool())
        .await
        .unwrap();
    let fourth = e.index().await;
    assert_eq!(fourth.links_per_rule, vec![3], "{fourth:?}");
    assert_eq!(fourth.objects_unreadable, 1);
}

/// The names of the state's indexes on `links`.
async fn link_indexes(state: &StateStore) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'links' ORDER BY name",
    )
    .fetch_all(state.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_run_builds_the_index_by_entity_once_and_leaves_it_in_place() {
    let e = env(r#"
[[technical.link]]
glob = "**/*.json"
json = "$.id"
entity = "record"
"#)
    .await;
    // More than a bulk run's 1,000 objects: the index of links by entity is
    // set aside during the run and built at its end.
    for i in 0..1200 {
        std::fs::write(
            e.tech().join(format!("{i}.json")),
            format!(r#"{{"id": {i}}}"#),
        )
        .unwrap();
    }
    assert!(
        link_indexes(&e.state)
            .await
            .contains(&"links_entity".to_string())
    );
    let first = e.index().await;
    assert_eq!(first.objects_read, 1200);
    assert_eq!(first.links_per_rule, vec![1200], "{first:?}");
    assert!(
        link_indexes(&e.state)
            .await
            .contains(&"links_entity".to_string()),
        "the index by entity is back after a bulk run"
    );
    // A second bulk run (every file changed) with 100 files gone: the
    // totals, counted while the index by entity is built, are the index
    // after the removal.
    for i in 0..1200 {
        let f = e.tech().join(format!("{i}.json"));
        if i % 12 == 0 {
            std::fs::remove_file(f).unwrap();
        } else {
            std::fs::write(f, format!(r#"{{"id": {i}, "v": 2}}"#)).unwrap();
        }
    }
    let second = e.index().await;
    assert_eq!(
        (second.objects_read, second.objects_removed),
        (1100, 100),
        "{second:?}"
    );
    assert_eq!(second.links_per_rule, vec![1100], "{second:?}");
    let e2 = e.index().await;
    assert_eq!(
        (e2.objects_read, e2.links_per_rule.clone()),
        (0, vec![1100])
    );
    let found = lethe::state::index::entries_linking(
        &e.state,
        &[("record".to_string(), "777".to_string())],
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        found.iter().map(|x| x.key.as_str()).collect::<Vec<_>>(),
        vec!["777.json"]
    );
    let gone = lethe::state::index::entries_linking(
        &e.state,
        &[("record".to_string(), "24".to_string())],
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(gone.is_empty(), "a removed file's links left with it");
    // A run that stopped between setting it aside and building it again
    // leaves it to the next open.
    lethe::state::index::suspend_entity_index(&e.state)
        .await
        .unwrap();
    assert!(
        !link_indexes(&e.state)
            .await
            .contains(&"links_entity".to_string())
    );
    let reopened = StateStore::open(&e.config).await.unwrap();
    assert!(
        link_indexes(&reopened)
            .await
            .contains(&"links_entity".to_string())
    );
}
