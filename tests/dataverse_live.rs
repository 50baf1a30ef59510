//! Opt-in: the Dataverse backend against a real environment. Runs only
//! when `LETHE_TEST_DATAVERSE_URL` (`dataverse://ORG.crm4.dynamics.com`)
//! and the `AZURE_*` credentials are set; skipped otherwise, under
//! `CI=true` too (CI has no Dataverse environment).
//!
//! It touches nothing but what it creates: a lead and an opportunity
//! named with a random tag. It checks that a config of Dataverse's names
//! fits the environment's `$metadata`, that the re-check reads the two as
//! one case, and that `delete_cases` (one `$batch` change set, `If-Match`
//! on the etags read) deletes exactly them. What it shows that the test
//! server cannot: Azure AD's token, real etags and `$metadata`, and the
//! environment's own answer to the change set (its cascade rules).

use lethe::config::EntityType;
use lethe::crm::dataverse::DataverseCrm;
use lethe::crm::{CaseNow, CaseRequest, Crm, Decision, RecheckInput};
use lethe::model::EntityKey;

fn et(name: &str, table: &str, key: &str, parents: &[(&str, &str)]) -> EntityType {
    EntityType {
        name: name.into(),
        table: table.into(),
        key: key.into(),
        clock: vec!["modifiedon".into(), "createdon".into()],
        parents: parents
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect(),
        subject: vec![],
        identifiers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_only_what_it_created_in_a_real_environment() {
    let Some(url) = std::env::var("LETHE_TEST_DATAVERSE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("LETHE_TEST_DATAVERSE_URL not set: the real-environment test is skipped");
        return;
    };
    let host = url
        .strip_prefix("dataverse://")
        .expect("LETHE_TEST_DATAVERSE_URL is dataverse://HOST");
    let crm = DataverseCrm::from_env(&format!("https://{}", host.trim_end_matches('/')), 4)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let entities = vec![
        et("lead", "leads", "leadid", &[]),
        et(
            "opportunity",
            "opportunities",
            "opportunityid",
            &[("lead", "_originatingleadid_value")],
        ),
    ];
    for e in &entities {
        let columns = crm
            .columns(&e.table)
            .await
            .unwrap()
            .expect("the set exists");
        for c in std::iter::once(&e.key)
            .chain(&e.clock)
            .chain(e.parents.iter().map(|(_, c)| c))
        {
            assert!(columns.iter().any(|x| &x.name == c), "{}: {c}", e.table);
        }
    }
    let tag: [u8; 6] = rand::random();
    let tag = format!("lethe-test-{}", hex::encode(tag));
    let client = crm.client();
    let lead = client
        .create(
            "leads",
            &serde_json::json!({"lastname": tag, "subject": tag}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let opp = client
        .create(
            "opportunities",
            &serde_json::json!({"name": tag, "originatingleadid@odata.bind": format!("/leads({lead})")}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let input = RecheckInput {
        entities: entities.clone(),
        conditions: vec![],
        cases: vec![CaseRequest {
            case_id: 1,
            root_ty: 0,
            root_key: EntityKey::Text(lead.to_ascii_lowercase()),
        }],
        payloads: None,
    };
    let now = crm.subtrees(&input).await.unwrap();
    let keys: Vec<String> = now[0].entities.iter().map(|e| e.key.canonical()).collect();
    assert_eq!(
        keys,
        vec![lead.to_ascii_lowercase(), opp.to_ascii_lowercase()]
    );
    // Only the two rows created here, whatever else the case holds.
    let mine = [lead.to_ascii_lowercase(), opp.to_ascii_lowercase()];
    let decide = |now: &CaseNow| {
        Decision::Delete(
            now.entities
                .iter()
                .filter(|e| mine.contains(&e.key.canonical()))
                .map(|e| (e.ty, e.key.clone()))
                .collect(),
        )
    };
    let out = crm.delete_cases(&input, &decide).await.unwrap();
    assert!(out.failed.is_empty() && out.unsettled.is_empty(), "{out:?}");
    assert_eq!(out.deleted[0].1.len(), 2);
    for (e, k) in entities.iter().zip(&mine) {
        assert!(
            crm.existing(e, &[EntityKey::Text(k.clone())])
                .await
                .unwrap()
                .is_empty()
        );
    }
    eprintln!(
        "dataverse live: created and deleted a lead and an opportunity in {} requests",
        client.requests()
    );
}
