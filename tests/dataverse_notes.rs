//! Dataverse notes (`annotation`: the body Base64 in `documentbody`,
//! attached to a row by `_objectid_value` + `objecttypecode`) as the
//! technical store, `url = "crm://"` on a Dataverse CRM, driven through the
//! `lethe` binary against the OData test server (tests/odata), as a user
//! runs it: check, index, plan, apply, verify, audit.
//!
//! What it shows: a note attached to a deleted lead goes in that lead's
//! change set, before it (Dataverse would otherwise delete it with the lead,
//! unjournaled); a lead whose note lethe may not delete (shared with a
//! kept lead) is kept, its note too; a shared CSV export kept as a note is
//! redacted record by record (`PATCH documentbody` on the etag read); a
//! note changed after the plan keeps its lead's case; no e-mail of a
//! deleted lead is left in any note.

#[allow(dead_code)]
mod util;

use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};
use util::odata::{OdataServer, guid};

const AS_OF: &str = "2026-06-30T00:00:00Z";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn config_text(crm_url: &str) -> String {
    format!(
        r#"
[crm]
url = "{crm_url}"
[crm.entities.lead]
table = "leads"
key = "leadid"
clock = ["modifiedon", "createdon"]
subject = ["emailaddress1"]
identifiers = ["emailaddress1"]
[technical]
url = "crm://"
[technical.table]
table = "annotations"
key = "annotationid"
body = "documentbody"
encoding = "base64"
name = "filename"
modified = "modifiedon"
size = "filesize"
[technical.table.polymorphic]
id = "_objectid_value"
type = "objecttypecode"
types = {{ lead = "lead" }}
[[technical.link]]
glob = "**/*.json"
json = "$.lead.id"
entity = "lead"
[[technical.link]]
glob = "**/*.csv"
csv = "LeadId"
entity = "lead"
[safety]
max_delete_fraction = 1.0
[[policy]]
name = "unconverted-sales"
root = "lead"
retain = "24 months"
keep_if = []
basis = "test"
[audit]
key = "dataverse-notes-test-key-0123"
"#
    )
}

struct Run {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Run {
    fn lethe(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
            .arg("-c")
            .arg(self.dir.path().join("lethe.toml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("running lethe");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

async fn note(server: &OdataServer, id: i64) -> Option<Value> {
    let (status, v) = server
        .api(
            reqwest::Method::GET,
            &format!("annotations({})", guid(9, id)),
            None,
        )
        .await;
    (status == 200).then_some(v)
}

async fn body_of(server: &OdataServer, id: i64) -> Option<String> {
    let v = note(server, id).await?;
    let text = v["documentbody"].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("Base64 body");
    Some(String::from_utf8(bytes).expect("UTF-8 body"))
}

async fn lead_exists(server: &OdataServer, id: i64) -> bool {
    let (status, _) = server
        .api(
            reqwest::Method::GET,
            &format!("leads({})", guid(1, id)),
            None,
        )
        .await;
    status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_go_with_their_leads_shared_exports_are_redacted() {
    let Some(server) = OdataServer::start("notes_go_with_their_leads_shared_exports_are_redacted")
    else {
        return;
    };
    let old = "2020-01-01T00:00:00Z";
    let recent = "2026-06-01T00:00:00Z";
    let lead = |i: i64, when: &str| {
        json!({"leadid": guid(1, i), "fullname": format!("Lead {i}"),
               "emailaddress1": format!("lead{i}@example.com"), "modifiedon": when, "createdon": when})
    };
    let n = |i: i64, lead: Option<i64>, name: &str, body: String| {
        let mut row = json!({"annotationid": guid(9, i), "filename": name, "documentbody": b64(&body),
                             "modifiedon": "2021-01-01T00:00:00Z", "isdocument": true});
        match lead {
            Some(l) => {
                row["_objectid_value"] = json!(guid(1, l));
                row["objecttypecode"] = json!("lead");
            }
            None => {
                row["_objectid_value"] = json!(guid(5, 1));
                row["objecttypecode"] = json!("account");
            }
        }
        row
    };
    let lead_json = |i: i64| {
        format!(
            r#"{{"lead": {{"id": "{}", "email": "lead{i}@example.com"}}}}"#,
            guid(1, i)
        )
    };
    let export = format!(
        "LeadId,Email\r\n{},lead1@example.com\r\n{},lead3@example.com\r\n",
        guid(1, 1),
        guid(1, 3)
    );
    server
        .seed(json!({
            "leads": [lead(1, old), lead(2, old), lead(3, recent), lead(4, old)],
            "annotations": [
                // Attached to lead 1 (due): goes with it.
                n(1, Some(1), "a.json", lead_json(1)),
                // Attached to lead 2 (due), but names lead 3 (kept): shared.
                n(2, Some(2), "b.json", lead_json(3)),
                // Attached to lead 3 (kept).
                n(3, Some(3), "c.json", "{}".into()),
                // An export attached to an account: records of leads 1 and 3.
                n(4, None, "export.csv", export),
                // Attached to lead 4 (due): changed after the plan.
                n(5, Some(4), "e.json", lead_json(4)),
                // Attached to an account, naming lead 1 in its content:
                // deleted in the object phase, on its etag.
                n(6, None, "f.json", lead_json(1)),
            ],
        }))
        .await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lethe.toml"),
        config_text(&server.crm_url(true)),
    )
    .unwrap();
    let run = Run {
        dir,
        env: server.env(),
    };

    let (code, out, err) = run.lethe(&["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    assert!(
        out.contains("annotations._objectid_value → lead (ON DELETE CASCADE)"),
        "check says that Dataverse deletes a lead's notes with it and what lethe does: {out}"
    );

    let (code, out, err) = run.lethe(&["--format", "json", "index"]);
    assert_eq!(code, 0, "index: {out}{err}");
    let (code, out, err) = run.lethe(&["--format", "json", "plan", "--as-of", AS_OF]);
    assert_eq!(code, 0, "plan: {out}{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let plan_id = plan["id"].as_str().unwrap().to_string();

    // Changed behind lethe's back after the plan: its lead must stay.
    let (status, v) = server
        .api(
            reqwest::Method::PATCH,
            &format!("annotations({})", guid(9, 5)),
            Some(json!({"notetext": "edited"})),
        )
        .await;
    assert!(status < 300, "PATCH: {status} {v}");

    let (code, out, err) = run.lethe(&["--format", "json", "apply", &plan_id]);
    assert!(code == 0 || code == 3, "apply: {code} {out}{err}");

    assert!(!lead_exists(&server, 1).await, "lead 1 is due");
    assert!(note(&server, 1).await.is_none(), "its note went with it");
    assert!(
        note(&server, 6).await.is_none(),
        "the note naming it went in the object phase"
    );
    assert!(
        lead_exists(&server, 2).await,
        "lead 2's note is shared with a kept lead: Dataverse would take it with the lead, so the case is kept"
    );
    assert_eq!(
        body_of(&server, 2).await,
        Some(lead_json(3)),
        "note 2 untouched"
    );
    assert!(lead_exists(&server, 3).await);
    assert_eq!(body_of(&server, 3).await.as_deref(), Some("{}"));
    assert_eq!(
        body_of(&server, 4).await,
        Some(format!(
            "LeadId,Email\r\n{},lead3@example.com\r\n",
            guid(1, 3)
        )),
        "the export lost lead 1's record and nothing else"
    );
    assert!(
        lead_exists(&server, 4).await,
        "lead 4's note changed since the plan: kept"
    );
    assert_eq!(
        body_of(&server, 5).await,
        Some(lead_json(4)),
        "note 5 untouched"
    );

    // The audit: a delete-object for notes 1 and 6, a redact-object for the
    // export; no key in clear.
    let (code, out, err) = run.lethe(&["audit", "export", "--format", "jsonl"]);
    assert_eq!(code, 0, "audit export: {out}{err}");
    let actions: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["action"].as_str().map(String::from))
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "delete-object").count(),
        2,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "redact-object").count(),
        1,
        "{actions:?}"
    );
    assert!(
        !out.contains(&guid(9, 1)) && !out.contains(&guid(1, 1)),
        "pseudonyms only"
    );

    // No e-mail of a deleted lead is left in any note: measured.
    let (code, out, err) = run.lethe(&["--format", "json", "verify", &plan_id]);
    assert_eq!(code, 0, "verify: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verify"]["residual"], json!([]), "{out}");
    for id in 1..=6 {
        if let Some(body) = body_of(&server, id).await {
            assert!(!body.contains("lead1@example.com"), "note {id}: {body}");
        }
    }
}
