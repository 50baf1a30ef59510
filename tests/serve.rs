//! Over 800 lines on purpose: the router and scheduler tests share one in-process fixture.
//!
//! Service mode, in process: the router driven with `oneshot` against the
//! standard fixture (real SQLite CRM, folder store, state store), and the
//! scheduler driven by a jumping clock with the real runner as its job.
//! The end-to-end test of the binary is in `serve_e2e.rs`.

#[allow(dead_code)] // uses a few of the helpers
mod util;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use lethe::serve::{api, runner::Runner, schedule};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use util::{Fixture, JANE_EMAIL, KEPT_FILES, list_files};

const READ: &str = "read-token-0123456789";
const OPERATE: &str = "operate-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn sha(t: &str) -> String {
    hex::encode(Sha256::digest(t.as_bytes()))
}

/// The fixture's config plus three tokens, a small body limit and `extra`.
fn serve_config(f: &Fixture, extra: &str) {
    let mut text = f.config_text();
    text.push_str(&format!(
        r#"
[serve]
body_limit = 4096

[[serve.token]]
name = "dashboard"
sha256 = "{}"
scope = "read"

[[serve.token]]
name = "integration"
sha256 = "{}"
scope = "operate"

[[serve.token]]
name = "dpo"
sha256 = "{}"
scope = "admin"
{extra}
"#,
        sha(READ),
        sha(OPERATE),
        sha(ADMIN)
    ));
    f.write_config(&text);
}

async fn runner(f: &Fixture) -> Arc<Runner> {
    let mut config = lethe::config::load(&f.config()).expect("config loads");
    config.file = f.config();
    let state = lethe::state::StateStore::open(&config)
        .await
        .expect("state opens");
    Runner::new(Arc::new(config), state)
}

async fn router(f: &Fixture) -> (axum::Router, Arc<Runner>) {
    let runner = runner(f).await;
    let config = runner.config.clone();
    let app = Arc::new(api::App {
        runner: runner.clone(),
        store: lethe::store::open(&config).expect("store opens"),
        tokens: config.serve.tokens.clone(),
        ui: Default::default(),
    });
    (
        api::router(app, config.serve.body_limit, config.serve.request_timeout),
        runner,
    )
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .expect("request builds");
    let response = router.clone().oneshot(req).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("body reads");
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        bytes: bytes.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes_guard_every_endpoint_but_health() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;

    assert_eq!(
        call(&r, "GET", "/healthz", None, None).await.status,
        StatusCode::OK
    );
    let ready = call(&r, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.json()["ready"], true);

    // No token, a wrong one, a malformed header: 401 without detail.
    for token in [None, Some("not-a-token"), Some("")] {
        let a = call(&r, "GET", "/v1/plans", token, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.json(), json!({"error": "unauthorized"}));
        assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    for path in [
        "/metrics",
        "/openapi.json",
        "/v1/holds",
        "/v1/sweeps",
        "/v1/schedule",
        "/v1/audit/verify",
    ] {
        assert_eq!(
            call(&r, "GET", path, None, None).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(&r, "GET", path, Some(READ), None).await.status,
            StatusCode::OK,
            "{path}"
        );
    }

    let link = json!({"object": "misc/readme.txt", "entities": ["lead:5"]});
    let hold = json!({"target": "lead:3", "reason": "case 12"});
    let approve = json!({"confirm": "x"});
    // read < operate < admin; a token without the scope: 403 without detail.
    let cases: &[(&str, &str, Option<Value>, [StatusCode; 3])] = &[
        (
            "POST",
            "/v1/links",
            Some(link.clone()),
            [StatusCode::FORBIDDEN, StatusCode::OK, StatusCode::OK],
        ),
        (
            "POST",
            "/v1/holds",
            Some(hold.clone()),
            [StatusCode::FORBIDDEN, StatusCode::OK, StatusCode::OK],
        ),
        (
            "POST",
            "/v1/plans/nope/apply",
            Some(approve.clone()),
            [
                StatusCode::FORBIDDEN,
                StatusCode::FORBIDDEN,
                StatusCode::NOT_FOUND,
            ],
        ),
        (
            "POST",
            "/v1/sweeps",
            Some(json!({"mode": "sweep"})),
            [
                StatusCode::FORBIDDEN,
                StatusCode::FORBIDDEN,
                StatusCode::ACCEPTED,
            ],
        ),
    ];
    for (method, path, body, expected) in cases {
        for (token, want) in [READ, OPERATE, ADMIN].iter().zip(expected) {
            let a = call(&r, method, path, Some(token), body.clone()).await;
            assert_eq!(a.status, *want, "{method} {path} with {token}: {}", a.text);
            if a.status == StatusCode::FORBIDDEN {
                assert_eq!(a.json(), json!({"error": "forbidden"}));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    let doc = call(&r, "GET", "/openapi.json", Some(READ), None)
        .await
        .json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/links",
        "/v1/links/batch",
        "/v1/entities/{entity}/explain",
        "/v1/holds",
        "/v1/plans",
        "/v1/plans/{id}",
        "/v1/plans/{id}/apply",
        "/v1/sweeps",
        "/v1/sweeps/{id}",
        "/v1/schedule",
        "/v1/audit/verify",
        "/v1/audit/lookup",
        "/v1/audit/export",
        "/v1/requests",
        "/v1/requests/{id}",
        "/v1/requests/{id}/export",
        "/v1/suppression/check",
    ] {
        assert!(paths.contains_key(p), "{p} missing from /openapi.json");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(paths["/v1/holds"]["post"].is_object() && paths["/v1/holds"]["delete"].is_object());
    assert!(paths["/v1/requests"]["post"].is_object() && paths["/v1/requests"]["get"].is_object());
    assert!(
        paths["/v1/requests/{id}/export"]["get"]["responses"]["200"]["content"]["application/zip"]
            .is_object(),
        "{}",
        paths["/v1/requests/{id}/export"]
    );
    let export = &paths["/v1/audit/export"]["get"]["responses"]["200"]["content"];
    assert!(
        export["text/csv"].is_object() && export["application/jsonl"].is_object(),
        "{export}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_links_decide_what_goes_with_an_entity() {
    let f = Fixture::new();
    serve_config(&f, "");
    f.put("drop/shared.bin", "payload for leads 1 and 2");
    f.put("drop/early.bin", "registered before the index saw it");
    let (r, _runner) = router(&f).await;

    // Registered before the index has seen any object.
    let a = call(
        &r,
        "POST",
        "/v1/links",
        Some(OPERATE),
        Some(json!({"object": "drop/early.bin", "entities": ["lead:5"]})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json(), json!({"new": 1, "existing": 0, "indexed": 0}));

    f.lethe(&["index"]).ok();
    // After the index: the readme (unlinked by the rules) now serves lead 5;
    // the shared file serves a due lead and a kept one.
    let a = call(
        &r,
        "POST",
        "/v1/links/batch",
        Some(OPERATE),
        Some(json!({"links": [
            {"object": "misc/readme.txt", "entities": ["lead:5"]},
            {"object": "drop/shared.bin", "entities": ["lead:1", "lead:2"]},
            {"object": "drop/early.bin", "entities": ["lead:5"]},
        ]})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json(), json!({"new": 3, "existing": 1, "indexed": 3}));

    f.plan();
    f.lethe(&["apply"]).ok();
    let files = list_files(&f.tech());
    assert!(!files.contains(&"misc/readme.txt".to_string()), "{files:?}");
    assert!(!files.contains(&"drop/early.bin".to_string()), "{files:?}");
    assert!(
        files.contains(&"drop/shared.bin".to_string()),
        "shared with kept lead 2: {files:?}"
    );
    // The deleted objects' registrations left with them.
    assert_eq!(
        f.state_sql("SELECT key FROM registered_links ORDER BY key, entity_key")
            .trim(),
        "drop/shared.bin\ndrop/shared.bin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_registered_after_the_plan_makes_apply_skip_the_object() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    f.lethe(&["index"]).ok();
    let link = |e: &str| json!({"object": "misc/readme.txt", "entities": [e]});
    assert_eq!(
        call(&r, "POST", "/v1/links", Some(OPERATE), Some(link("lead:5")))
            .await
            .status,
        StatusCode::OK
    );
    let plan = f.plan();
    assert_eq!(plan["objects"]["delete"], 5, "{plan}");
    // Now the readme turns out to serve lead 3 too, which is kept.
    assert_eq!(
        call(&r, "POST", "/v1/links", Some(OPERATE), Some(link("lead:3")))
            .await
            .status,
        StatusCode::OK
    );
    let out = f.lethe(&["apply", "--format", "json"]).ok().json();
    assert_eq!(out["apply"]["objects_skipped"], 1, "{out}");
    let mut kept: Vec<String> = KEPT_FILES.iter().map(|s| s.to_string()).collect();
    kept.sort();
    assert_eq!(list_files(&f.tech()), kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_clear_4xx() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    let post = |body: Value| call(&r, "POST", "/v1/links/batch", Some(OPERATE), Some(body));

    let a = post(json!({"links": [
        {"object": "a.json", "entities": ["lead:1"]},
        {"object": "b.json", "entities": ["invoice:1"]},
    ]}))
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("links[1].entities[0]: `invoice`"),
        "{}",
        a.text
    );

    let a = post(json!({"links": [{"object": "../etc/passwd", "entities": ["lead:1"]}]})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let a = post(json!({"links": [{"object": "a.json", "entities": []}]})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let a = post(json!({"links": [], "extra": 1})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    // Nothing of the rejected batches was registered.
    assert_eq!(
        f.state_sql("SELECT count(*) FROM registered_links").trim(),
        "0"
    );

    let big = json!({"links": [{"object": "x".repeat(5000), "entities": ["lead:1"]}]});
    let a = post(big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text);

    let req = Request::builder()
        .method("POST")
        .uri("/v1/links")
        .header(header::AUTHORIZATION, format!("Bearer {OPERATE}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("object=a"))
        .unwrap();
    let a = r.clone().oneshot(req).await.unwrap();
    assert_eq!(a.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let a = call(&r, "GET", "/v1/entities/nonsense/explain", Some(READ), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(&r, "GET", "/v1/sweeps/abc", Some(READ), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(&r, "GET", "/v1/nowhere", Some(READ), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_texts_over_the_api_are_bounded_printable_and_named() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    let add = |body: Value| call(&r, "POST", "/v1/holds", Some(OPERATE), Some(body));
    for (body, status, starts) in [
        (
            json!({"target": "lead:1\nINJECT", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target: contains the control character U+000A",
        ),
        (
            json!({"target": "lead:1\u{0}", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target: contains the control character U+0000",
        ),
        (
            json!({"target": format!("object:{}", "a".repeat(1100)), "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target: 1107 bytes, more than the 1024 allowed",
        ),
        (
            json!({"target": "lead:1", "reason": "a\tb"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason: contains the control character U+0009",
        ),
        (
            json!({"target": "lead:1", "reason": "r".repeat(2001)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason: 2001 characters",
        ),
        (
            json!({"target": "lead:1", "reason": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason: empty",
        ),
        (
            json!({"target": "lead:1", "reason": "x", "author": "somebody-else"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "author: the author of a hold is the token's configured name",
        ),
        (
            json!({"target": "invoice:1", "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "target: `invoice` is not an entity type",
        ),
        (
            json!({"target": "prefix:", "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "target: an empty prefix",
        ),
    ] {
        let a = add(body.clone()).await;
        assert_eq!(a.status, status, "{body}: {}", a.text);
        let error = a.json()["error"].as_str().unwrap().to_string();
        assert!(error.starts_with(starts), "{body}: {error}");
        assert!(
            !error.contains("(command line)") && !error.contains("TARGET"),
            "{error}"
        );
    }
    let a = call(
        &r,
        "DELETE",
        "/v1/holds?target=lead:1%0A",
        Some(OPERATE),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert_eq!(f.state_sql("SELECT count(*) FROM holds").trim(), "0");
    assert_eq!(f.state_sql("SELECT count(*) FROM audit").trim(), "0");

    // The token's own name as author is fine; timestamps to the second.
    let a = add(json!({"target": "lead:1", "reason": "x", "author": "integration"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let holds = call(&r, "GET", "/v1/holds", Some(READ), None).await.json();
    let at = holds[0]["created_at"].as_str().unwrap();
    assert!(at.len() == 20 && at.ends_with('Z'), "{at}");
}

/// Regression (issue 15): only `Bearer ` with a capital B was understood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    for (value, status) in [
        (format!("Bearer {READ}"), StatusCode::OK),
        (format!("bearer {READ}"), StatusCode::OK),
        (format!("BEARER  {READ} "), StatusCode::OK),
        (format!("Basic {READ}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer{READ}"), StatusCode::UNAUTHORIZED),
        ("bearer ".to_string(), StatusCode::UNAUTHORIZED),
        (format!("bearer {READ}x"), StatusCode::UNAUTHORIZED),
    ] {
        let req = Request::builder()
            .uri("/v1/holds")
            .header(header::AUTHORIZATION, &value)
            .body(Body::empty())
            .unwrap();
        let a = r.clone().oneshot(req).await.unwrap();
        assert_eq!(a.status(), status, "{value:?}");
    }
}

async fn wait_for_run(r: &axum::Router, run: i64) -> Value {
    for _ in 0..600 {
        let s = call(r, "GET", &format!("/v1/sweeps/{run}"), Some(READ), None)
            .await
            .json();
        if s["status"] != "running" {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("run {run} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_approved_by_its_digest_then_applied() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    f.lethe(&["index"]).ok();
    let id = f.plan()["id"].as_str().unwrap().to_string();

    let plan = call(&r, "GET", &format!("/v1/plans/{id}"), Some(READ), None)
        .await
        .json();
    assert_eq!(plan["status"], "planned");
    let digest = plan["digest"].as_str().unwrap().to_string();
    let apply = format!("/v1/plans/{id}/apply");

    let a = call(
        &r,
        "POST",
        &apply,
        Some(ADMIN),
        Some(json!({"confirm": "0".repeat(64)})),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert_eq!(
        list_files(&f.tech()).len(),
        util::ALL_FILES.len(),
        "nothing deleted"
    );

    let a = call(
        &r,
        "POST",
        &apply,
        Some(ADMIN),
        Some(json!({"confirm": digest})),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
    let run = a.json()["run"].as_i64().unwrap();
    let s = wait_for_run(&r, run).await;
    assert_eq!(s["status"], "done", "{s}");
    assert_eq!(s["trigger"], "approval");
    assert_eq!(s["plan_id"], id.as_str());
    assert_eq!(s["summary"]["apply"]["cases_done"], 3, "{s}");
    let mut kept: Vec<String> = KEPT_FILES.iter().map(|s| s.to_string()).collect();
    kept.sort();
    assert_eq!(list_files(&f.tech()), kept);

    let a = call(
        &r,
        "POST",
        &apply,
        Some(ADMIN),
        Some(json!({"confirm": digest})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let v = call(&r, "GET", "/v1/audit/verify", Some(READ), None)
        .await
        .json();
    assert_eq!(v["problems"], json!([]));
    assert!(v["records"].as_u64().unwrap() > 0);
    let l = call(
        &r,
        "GET",
        "/v1/audit/lookup?target=lead:1",
        Some(READ),
        None,
    )
    .await
    .json();
    assert_eq!(l["records"].as_array().unwrap().len(), 1, "{l}");

    // Metrics: counts under bounded labels, no keys, no subject data.
    let m = call(&r, "GET", "/metrics", Some(READ), None).await.text;
    assert!(
        m.contains("lethe_entities_deleted_total{type=\"lead\"}"),
        "{m}"
    );
    assert!(
        m.contains("lethe_runs_total{mode=\"apply\",outcome=\"done\"}"),
        "{m}"
    );
    assert!(
        !m.contains(JANE_EMAIL) && !m.contains("inbound/") && !m.contains("lead:1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_over_the_api_keep_a_case_and_explain_says_so() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    let explain = "/v1/entities/lead:5/explain?as_of=2026-06-30";
    let e = call(&r, "GET", explain, Some(READ), None).await.json();
    assert_eq!(e["cases"][0]["due"], true, "{e}");

    let a = call(
        &r,
        "POST",
        "/v1/holds",
        Some(OPERATE),
        Some(json!({"target": "lead:5", "reason": "LH-7"})),
    )
    .await;
    assert_eq!(a.json(), json!({"target": "lead:5", "changed": true}));
    let holds = call(&r, "GET", "/v1/holds", Some(READ), None).await.json();
    assert_eq!(holds[0]["author"], "integration");
    let e = call(&r, "GET", explain, Some(READ), None).await.json();
    assert_eq!(e["cases"][0]["due"], false, "{e}");
    assert!(
        e["cases"][0]["kept_because"]
            .as_str()
            .unwrap()
            .contains("hold"),
        "{e}"
    );
    f.lethe(&["index"]).ok();
    let plan = f.plan();
    assert_eq!(plan["cases"], 2, "lead 5 held: {plan}");

    // Issue 15: refs read against the key column's type; a hold that
    // would protect nothing is refused.
    let hold = |target: &str, absent: bool| json!({"target": target, "reason": "LH-8", "allow_absent": absent});
    let again = call(
        &r,
        "POST",
        "/v1/holds",
        Some(OPERATE),
        Some(hold("lead:05", false)),
    )
    .await;
    assert_eq!(
        again.json(),
        json!({"target": "lead:5", "changed": false}),
        "lead:05 is lead:5"
    );
    for bad in ["lead:1.5", "lead: 1"] {
        let refused = call(
            &r,
            "POST",
            "/v1/holds",
            Some(OPERATE),
            Some(hold(bad, false)),
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    for bad in ["lead:-1", "lead:999"] {
        let refused = call(
            &r,
            "POST",
            "/v1/holds",
            Some(OPERATE),
            Some(hold(bad, false)),
        )
        .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            refused.json()
        );
    }
    let ahead = call(
        &r,
        "POST",
        "/v1/holds",
        Some(OPERATE),
        Some(hold("lead:999", true)),
    )
    .await;
    assert_eq!(ahead.json(), json!({"target": "lead:999", "changed": true}));
    assert_eq!(
        call(
            &r,
            "DELETE",
            "/v1/holds?target=lead:999",
            Some(OPERATE),
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    let lift = "/v1/holds?target=lead:5";
    assert_eq!(
        call(&r, "DELETE", lift, Some(OPERATE), None).await.status,
        StatusCode::OK
    );
    // Both changes are audit records, by the token's name, and chain.
    assert_eq!(
        f.state_sql("SELECT action, entity_type, author, reason_chars FROM audit ORDER BY seq")
            .trim(),
        // lead:5 added, lead:999 (allow_absent) added and lifted, lead:5 lifted.
        "hold-add|lead|integration|4\nhold-add|lead|integration|4\nhold-rm|lead|integration|\nhold-rm|lead|integration|"
    );
    let v = call(&r, "GET", "/v1/audit/verify", Some(READ), None)
        .await
        .json();
    assert_eq!(
        (
            v["records"].as_u64(),
            v["problems"].as_array().map(Vec::len)
        ),
        (Some(4), Some(0)),
        "{v}"
    );
    assert_eq!(
        call(&r, "DELETE", lift, Some(OPERATE), None).await.status,
        StatusCode::NOT_FOUND
    );
    let e = call(&r, "GET", explain, Some(READ), None).await.json();
    assert_eq!(e["cases"][0]["due"], true, "{e}");
    let e = call(&r, "GET", "/v1/entities/lead:999/explain", Some(READ), None)
        .await
        .json();
    assert_eq!(e["exists"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_the_real_pipeline_and_catches_up_once() {
    let f = Fixture::new();
    serve_config(
        &f,
        "[schedule]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\nmode = \"plan\"\n",
    );
    let runner = runner(&f).await;
    let s = runner.config.schedule.clone().expect("schedule configured");
    let ts = |t: &str| t.parse::<jiff::Timestamp>().unwrap();

    // Three days of ticks, at a clock that jumps.
    let clock = schedule::JumpClock::starting_at(ts("2026-07-01T12:00:00Z"));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ran = schedule::run(
        &s,
        &clock,
        runner.as_ref(),
        rx,
        Some(ts("2026-07-04T12:00:00Z")),
    )
    .await;
    assert_eq!((ran.runs, ran.failures, ran.catch_ups), (3, 0, 0));
    let rows = runner.sweeps(10).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.trigger == "schedule"
        && r.status == "awaiting-approval"
        && r.plan_id.is_some()));
    assert_eq!(
        rows[0].scheduled_for.as_deref(),
        Some("2026-07-04T01:00:00Z"),
        "03:00 CEST"
    );
    // In plan mode nothing is deleted.
    assert_eq!(list_files(&f.tech()).len(), util::ALL_FILES.len());

    // Down for a week: one catch-up run at start, then the schedule.
    let clock = schedule::JumpClock::starting_at(ts("2026-07-11T12:00:00Z"));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ran = schedule::run(
        &s,
        &clock,
        runner.as_ref(),
        rx,
        Some(ts("2026-07-12T12:00:00Z")),
    )
    .await;
    assert_eq!((ran.runs, ran.catch_ups), (2, 1));
    let rows = runner.sweeps(2).await.unwrap();
    assert_eq!(rows[1].trigger, "catch-up");
    assert_eq!(
        rows[1].scheduled_for.as_deref(),
        Some("2026-07-11T01:00:00Z")
    );
    assert_eq!(rows[0].trigger, "schedule");

    // A failing run is recorded and counted; the next tick comes as usual.
    std::fs::rename(f.crm(), f.dir().join("crm.db.away")).unwrap();
    let clock = schedule::JumpClock::starting_at(ts("2026-07-12T12:00:00Z"));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ran = schedule::run(
        &s,
        &clock,
        runner.as_ref(),
        rx,
        Some(ts("2026-07-14T12:00:00Z")),
    )
    .await;
    assert_eq!((ran.runs, ran.failures), (2, 2));
    let rows = runner.sweeps(1).await.unwrap();
    assert_eq!(rows[0].status, "failed");
    assert!(
        rows[0].error.as_deref().unwrap_or("").contains("crm"),
        "{:?}",
        rows[0].error
    );
}

/// Issue 15: every plan was kept forever; `[state] plan_retention` makes
/// the service prune old ones after each run, never the latest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_prunes_plans_older_than_the_configured_retention() {
    let f = Fixture::new();
    serve_config(&f, "");
    f.edit_config(
        "[state]\nurl = \"sqlite://lethe-state.db\"\n",
        "[state]\nurl = \"sqlite://lethe-state.db\"\nplan_retention = \"30 days\"\n",
    );
    f.lethe(&["index"]).ok();
    let old = f.plan()["id"].as_str().unwrap().to_string();
    let recent = f.plan()["id"].as_str().unwrap().to_string();
    // The first plan is 60 days old, the second a day.
    let ago = |days: i64| {
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(24 * days))
            .unwrap()
            .to_string()
    };
    f.state_sql(&format!(
        "UPDATE plans SET created_at = '{}' WHERE id = '{old}'",
        ago(60)
    ));
    f.state_sql(&format!(
        "UPDATE plans SET created_at = '{}' WHERE id = '{recent}'",
        ago(1)
    ));
    let runner = runner(&f).await;
    runner
        .run_now(
            lethe::serve::runner::Work::Sweep {
                mode: schedule::Mode::Plan,
                as_of: None,
            },
            "test",
            None,
        )
        .await
        .unwrap();
    let left = f.state_sql("SELECT id FROM plans ORDER BY seq");
    assert!(!left.contains(&old), "the 60-day-old plan stays: {left}");
    assert!(left.contains(&recent), "{left}");
    assert_eq!(left.lines().count(), 2, "{left}");
}

// ------------------------------------------------------- subject requests

/// Jane (lead 1, the fixture's `JANE_EMAIL`) shares an export with Max
/// (lead 2): the demo config's CSV rule links each row.
const SHARED_CSV: &str =
    "LeadId;Name;Email\r\n1;Jane;jane.doe@example.com\r\n2;Max;max.muster@example.com\r\n";
const JANE_ROW: &str = "LeadId;Name;Email\r\n1;Jane;jane.doe@example.com\r\n";

/// Jane as a client would name her (normalised by lethe).
fn jane() -> Value {
    json!(["email=Jane.Doe@Example.COM"])
}

/// An answer that must not name the subject (any case).
#[track_caller]
fn no_subject(a: &Answer, what: &str) {
    let text = a.text.to_lowercase();
    assert!(
        !text.contains("jane.doe") && !text.contains("5550101"),
        "{what} names the subject: {}",
        a.text
    );
}

/// Every entry of a zip, name and content (the reader checks each CRC).
fn zip_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    (0..a.len())
        .map(|i| {
            let mut e = a.by_index(i).unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (e.name().unwrap().to_string(), b)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_request_endpoints_need_their_scope() {
    let f = Fixture::new();
    serve_config(&f, "");
    let (r, _) = router(&f).await;
    let access = json!({"kind": "access", "subject": jane(), "reference": "T-1"});
    let check = json!({"subject": jane()});

    // No token: 401 without detail, everywhere.
    for (method, path, body) in [
        ("POST", "/v1/requests", Some(access.clone())),
        ("GET", "/v1/requests", None),
        ("GET", "/v1/requests/R-nope", None),
        ("GET", "/v1/requests/R-nope/export", None),
        ("POST", "/v1/suppression/check", Some(check.clone())),
    ] {
        let a = call(&r, method, path, None, body).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(a.json(), json!({"error": "unauthorized"}));
    }

    // Receiving a request and asking the suppression list: operate.
    let a = call(&r, "POST", "/v1/requests", Some(READ), Some(access.clone())).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(a.json(), json!({"error": "forbidden"}));
    let a = call(&r, "POST", "/v1/requests", Some(OPERATE), Some(access)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    no_subject(&a, "POST /v1/requests");
    let id = a.json()["id"].as_str().unwrap().to_string();
    let a = call(
        &r,
        "POST",
        "/v1/suppression/check",
        Some(READ),
        Some(check.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    for token in [OPERATE, ADMIN] {
        let a = call(
            &r,
            "POST",
            "/v1/suppression/check",
            Some(token),
            Some(check.clone()),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        no_subject(&a, "POST /v1/suppression/check");
    }

    // Reading requests: read.
    for path in ["/v1/requests".to_string(), format!("/v1/requests/{id}")] {
        for token in [READ, OPERATE, ADMIN] {
            let a = call(&r, "GET", &path, Some(token), None).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
            no_subject(&a, &path);
        }
    }

    // The export, the one answer with personal data: admin only; nothing
    // was exported (the request is still open).
    let export = format!("/v1/requests/{id}/export");
    for token in [READ, OPERATE] {
        let a = call(&r, "GET", &export, Some(token), None).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
        assert_eq!(a.json(), json!({"error": "forbidden"}));
    }
    let a = call(&r, "GET", "/v1/requests/R-nope/export", Some(ADMIN), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    let shown = call(&r, "GET", &format!("/v1/requests/{id}"), Some(READ), None)
        .await
        .json();
    assert_eq!(shown["status"], "open", "{shown}");
    assert_eq!(
        f.state_sql("SELECT count(*) FROM audit WHERE action = 'access-export'")
            .trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_request_is_tracked_and_exported_as_a_zip() {
    let f = Fixture::new();
    serve_config(&f, "");
    f.put("exports/leads-2020.csv", SHARED_CSV);
    f.lethe(&["index"]).ok();
    let (r, _) = router(&f).await;

    let a = call(
        &r,
        "POST",
        "/v1/requests",
        Some(OPERATE),
        Some(json!({"kind": "access", "subject": jane(), "reference": "T-15", "received": "2026-06-20"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    no_subject(&a, "POST /v1/requests");
    let v = a.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            &v["kind"],
            &v["status"],
            &v["reference"],
            &v["received"],
            &v["due"],
            &v["subject_kinds"],
            &v["entities"],
            &v["plan_id"],
        ),
        (
            &json!("access"),
            &json!("open"),
            &json!("T-15"),
            &json!("2026-06-20"),
            &json!("2026-07-20"),
            &json!(["email"]),
            &json!(1),
            &Value::Null,
        ),
        "{v}"
    );

    let list = call(&r, "GET", "/v1/requests", Some(READ), None).await;
    assert_eq!(list.status, StatusCode::OK);
    no_subject(&list, "GET /v1/requests");
    let list = list.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    let show = call(&r, "GET", &format!("/v1/requests/{id}"), Some(READ), None).await;
    assert_eq!(show.status, StatusCode::OK);
    assert_eq!(show.json()["id"], id.as_str());
    let a = call(&r, "GET", "/v1/requests/R-0000-nope", Some(READ), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    assert!(a.json()["error"].is_string());

    let zip = call(
        &r,
        "GET",
        &format!("/v1/requests/{id}/export"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(zip.status, StatusCode::OK, "{}", zip.text);
    assert_eq!(zip.headers[header::CONTENT_TYPE], "application/zip");
    assert_eq!(
        zip.headers[header::CONTENT_DISPOSITION],
        format!("attachment; filename=\"{id}.zip\"").as_str()
    );
    let entries = zip_entries(&zip.bytes);
    let entry = |name: &str| {
        entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| panic!("no {name} in {entries:?}"))
    };
    let manifest: Value = serde_json::from_str(&entry("manifest.json")).unwrap();
    assert_eq!(manifest["request"]["id"], id.as_str(), "{manifest}");
    assert_eq!(manifest["request"]["reference"], "T-15");
    assert_eq!(
        manifest["counts"],
        json!({"entities": 1, "files": 2, "records": 1, "not_included": 0})
    );
    // Her lead, her own file as it is, and of the shared export only her
    // row under the header.
    assert!(entry("entities/lead.json").contains(JANE_EMAIL));
    assert_eq!(
        entry("files/inbound/1/lead.json"),
        util::lead_json(1, "Jane", JANE_EMAIL)
    );
    assert_eq!(entry("files/exports/leads-2020.csv"), JANE_ROW);
    assert!(
        !zip.bytes.is_empty()
            && !entries
                .iter()
                .any(|(_, b)| b.windows(6).any(|w| w == b"max.mu")),
        "nobody else's data"
    );

    // Exported: the access request is done, and the audit says so (counts
    // only).
    let done = call(&r, "GET", &format!("/v1/requests/{id}"), Some(READ), None).await;
    no_subject(&done, "GET /v1/requests/{id}");
    let done = done.json();
    assert_eq!(done["status"], "done", "{done}");
    assert!(done["done_at"].is_string(), "{done}");
    assert_eq!(done["overdue"], false, "{done}");
    let audit = f.state_sql("SELECT action, pseudonym, detail FROM audit");
    assert!(
        audit.starts_with(&format!("access-export|{id}|")),
        "{audit}"
    );
    assert!(!audit.contains("jane"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_request_is_planned_and_once_applied_suppressed() {
    let f = Fixture::new();
    serve_config(&f, "");
    f.lethe(&["index"]).ok();
    let (r, _) = router(&f).await;
    let check = |token: &'static str| {
        call(
            &r,
            "POST",
            "/v1/suppression/check",
            Some(token),
            Some(json!({"subject": [
                "email=Jane.Doe@Example.COM",
                "phone=+49 30 5550101",
                "email=max.muster@example.com",
            ]})),
        )
    };
    let before = check(OPERATE).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    no_subject(&before, "POST /v1/suppression/check");
    assert_eq!(
        before.json(),
        json!({"results": [
            {"kind": "email", "suppressed": false},
            {"kind": "phone", "suppressed": false},
            {"kind": "email", "suppressed": false},
        ]})
    );

    let a = call(
        &r,
        "POST",
        "/v1/requests",
        Some(OPERATE),
        Some(json!({"kind": "erase", "subject": jane(), "reference": "T-17"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    no_subject(&a, "POST /v1/requests (erase)");
    let v = a.json();
    assert_eq!(
        (&v["kind"], &v["status"]),
        (&json!("erase"), &json!("planned")),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    let plan_id = v["plan_id"]
        .as_str()
        .expect("an erasure has a plan")
        .to_string();
    // Nothing is deleted before the plan is approved.
    assert_eq!(list_files(&f.tech()).len(), util::ALL_FILES.len());

    let plan = call(&r, "GET", &format!("/v1/plans/{plan_id}"), Some(READ), None).await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.text);
    no_subject(&plan, "GET /v1/plans/{id}");
    let digest = plan.json()["digest"].as_str().unwrap().to_string();
    let a = call(
        &r,
        "POST",
        &format!("/v1/plans/{plan_id}/apply"),
        Some(ADMIN),
        Some(json!({"confirm": digest})),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
    let s = wait_for_run(&r, a.json()["run"].as_i64().unwrap()).await;
    assert_eq!(s["status"], "done", "{s}");
    assert!(!list_files(&f.tech()).contains(&"inbound/1/lead.json".to_string()));
    assert_eq!(f.ids("leads"), vec![2, 3, 4, 5, 6]);

    let done = call(&r, "GET", &format!("/v1/requests/{id}"), Some(READ), None).await;
    no_subject(&done, "GET /v1/requests/{id}");
    assert_eq!(done.json()["status"], "done", "{}", done.text);
    // Her identifiers are on the suppression list now, Max's is not: one
    // answer per identifier, in order, by kind only.
    let after = check(OPERATE).await;
    no_subject(&after, "POST /v1/suppression/check");
    assert_eq!(
        after.json(),
        json!({"results": [
            {"kind": "email", "suppressed": true},
            {"kind": "phone", "suppressed": true},
            {"kind": "email", "suppressed": false},
        ]})
    );
    assert_eq!(check(READ).await.status, StatusCode::FORBIDDEN);
    for path in ["/metrics", "/v1/requests", "/v1/sweeps"] {
        let a = call(&r, "GET", path, Some(READ), None).await;
        no_subject(&a, path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subject_requests_get_a_4xx_that_never_repeats_the_subject() {
    let f = Fixture::new();
    serve_config(&f, "");
    f.edit_config("body_limit = 4096", "body_limit = 65536");
    let (r, _) = router(&f).await;
    let create = |body: Value| call(&r, "POST", "/v1/requests", Some(OPERATE), Some(body));
    let check = |body: Value| {
        call(
            &r,
            "POST",
            "/v1/suppression/check",
            Some(OPERATE),
            Some(body),
        )
    };

    // Subjects lethe cannot use: 422, the value not repeated.
    for subject in [
        json!([]),
        json!(["email=jane.doe.example.com"]),
        json!(["phone=jane.doe@example.com"]),
        json!(["fax=jane.doe@example.com"]),
        json!(["jane.doe@example.com"]),
        json!(["jane.doe@example.com:"]),
        json!(["jane.doe@example.com:1"]),
        json!(["lead:jane.doe@example.com"]),
        json!(["lead: jane.doe@example.com"]),
        json!(["email=jane.doe@example.com", "phone=12-34"]),
    ] {
        for kind in ["erase", "access"] {
            let a = create(json!({"kind": kind, "subject": subject, "reference": "T"})).await;
            assert_eq!(
                a.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{kind} {subject}: {}",
                a.text
            );
            assert!(a.json()["error"].is_string(), "{}", a.text);
            no_subject(&a, &format!("{kind} {subject}"));
        }
        let a = check(json!({ "subject": subject })).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "check {subject}: {}",
            a.text
        );
        no_subject(&a, &format!("check {subject}"));
    }
    // The rest of a request lethe cannot use: 422 too.
    for body in [
        json!({"kind": "forget", "subject": jane(), "reference": "T"}),
        json!({"kind": "erase", "subject": jane(), "reference": " "}),
        json!({"kind": "erase", "subject": jane(), "reference": "a\nb"}),
        json!({"kind": "access", "subject": jane(), "reference": "T", "received": "yesterday"}),
    ] {
        let a = create(body.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            a.text
        );
        no_subject(&a, &body.to_string());
    }
    // Bodies of the wrong shape: 400, saying where and what, the values in
    // them not repeated.
    for (body, says) in [
        (
            json!({"kind": "erase", "subject": "email=jane.doe@example.com", "reference": "T"}),
            "subject: invalid type, expected a sequence",
        ),
        (
            json!({"kind": "erase", "subject": [49_305_550_101_i64], "reference": "T"}),
            "subject[0]: invalid type, expected a string",
        ),
        (
            json!({"kind": "erase", "subject": jane(), "reference": "T", "jane.doe@example.com": 1}),
            "unknown field; the fields are kind, subject, reference, received",
        ),
        (
            json!({"kind": "erase", "subject": jane()}),
            "missing field `reference`",
        ),
    ] {
        let a = create(body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
        no_subject(&a, &body.to_string());
        let error = a.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{body}: {error}");
    }
    for body in [
        json!({"subject": "email=jane.doe@example.com"}),
        json!({"subject": [{"email": "jane.doe@example.com"}]}),
        json!({"subject": jane(), "email": "jane.doe@example.com"}),
        json!({"subject": [true, "email=jane.doe@example.com", 5550101.5]}),
    ] {
        let a = check(body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
        no_subject(&a, &body.to_string());
    }
    // The suppression list holds identifiers, not refs.
    let a = check(json!({"subject": ["lead:1"]})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    // At most 1,000 identifiers at once.
    let many =
        |n: usize| -> Vec<String> { (0..n).map(|i| format!("email=u{i}@x.example")).collect() };
    let a = check(json!({ "subject": many(1000) })).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json()["results"].as_array().map(Vec::len), Some(1000));
    let a = check(json!({ "subject": many(1001) })).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert!(!a.text.contains("u7@x.example"), "{}", a.text);
    // Nothing was received.
    assert_eq!(f.state_sql("SELECT count(*) FROM requests").trim(), "0");
}
