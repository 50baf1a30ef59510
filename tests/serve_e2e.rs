//! End to end: `lethe serve` as a process on a loopback port, driven by an
//! HTTP client. Registers links, plans, approves, stops the service with
//! SIGTERM in the middle of the apply, starts it again and watches the
//! journal finish the plan. Logs are JSON with a request id per request and
//! no personal data.

#[allow(dead_code)] // uses a few of the helpers
mod util;

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use util::Fixture;

const ADMIN: &str = "e2e-admin-token-0123456789";

struct Service {
    child: Child,
    base: String,
}

impl Service {
    /// Starts `lethe serve` on a free loopback port; `failpoints` slows the
    /// apply down (a failpoint that sleeps) so that a stop lands mid-apply.
    fn start(f: &Fixture, failpoints: Option<&str>, log: &std::path::Path) -> Service {
        let config = f.config().to_string_lossy().into_owned();
        let mut cmd = util::lethe_command(f.dir());
        cmd.args([
            "-c",
            &config,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log file"),
        );
        match failpoints {
            Some(fp) => cmd.env("FAILPOINTS", fp),
            None => cmd.env_remove("FAILPOINTS"),
        };
        let mut child = cmd.spawn().expect("lethe serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads the address line");
        let base = line
            .trim()
            .strip_prefix("lethe serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Service { child, base }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lethe serve did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn wait_status(client: &reqwest::Client, base: &str, run: i64, not: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, s) = send(
            client,
            reqwest::Method::GET,
            format!("{base}/v1/sweeps/{run}"),
            None,
        )
        .await;
        if s["status"] != not {
            return s;
        }
        assert!(Instant::now() < deadline, "run {run} stays {not}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_registers_plans_approves_stops_and_resumes() {
    let f = Fixture::empty();
    f.lethe_bare(&["demo", "--dir", ".", "--leads", "600", "--generate-only"])
        .ok();
    let mut text = f.config_text();
    text.push_str(&format!(
        "\n[apply]\nbatch_cases = 5\nbatch_objects = 5\n\n[[serve.token]]\nname = \"dpo\"\nsha256 = \"{}\"\nscope = \"admin\"\n",
        hex::encode(Sha256::digest(ADMIN.as_bytes()))
    ));
    f.write_config(&text);
    let log = f.dir().join("serve.log");
    let client = reqwest::Client::new();

    // A slow apply (each case batch sleeps), so the stop lands in it.
    let slow = cfg!(feature = "failpoints").then_some("apply::case-intent=sleep(40)");
    let mut svc = Service::start(&f, slow, &log);
    let base = svc.base.clone();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let anonymous = client.get(format!("{base}/v1/plans")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // An integration service registers 2,000 payloads in one batch.
    let links: Vec<Value> = (0..2000)
        .map(|i| json!({"object": format!("ingest/{i}.json"), "entities": [format!("lead:{}", i % 600 + 1)]}))
        .collect();
    let (status, body) = send(
        &client,
        reqwest::Method::POST,
        format!("{base}/v1/links/batch"),
        Some(json!({"links": links})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["new"], 2000);

    // Plan, then approve by digest.
    let (status, started) = send(
        &client,
        reqwest::Method::POST,
        format!("{base}/v1/sweeps"),
        Some(json!({"mode": "plan"})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let run = started["run"].as_i64().unwrap();
    let planned = wait_status(&client, &base, run, "running").await;
    assert_eq!(planned["status"], "awaiting-approval", "{planned}");
    let plan_id = planned["plan_id"].as_str().unwrap().to_string();
    let (_, plan) = send(
        &client,
        reqwest::Method::GET,
        format!("{base}/v1/plans/{plan_id}"),
        None,
    )
    .await;
    let cases = plan["summary"]["cases"].as_u64().unwrap();
    assert!(cases > 50, "a plan worth interrupting: {plan}");
    let (status, started) = send(
        &client,
        reqwest::Method::POST,
        format!("{base}/v1/plans/{plan_id}/apply"),
        Some(json!({"confirm": plan["digest"]})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let apply_run = started["run"].as_i64().unwrap();

    // SIGTERM while it applies: the batch in flight finishes, then it stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = svc.terminate();
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");
    let state = f.dir().join("lethe-state.db");
    let stopped = util::sqlite(
        &state,
        &format!("SELECT status FROM sweeps WHERE id = {apply_run}"),
    );
    let plan_status = util::sqlite(
        &state,
        &format!("SELECT status FROM plans WHERE id = '{plan_id}'"),
    );
    if cfg!(feature = "failpoints") {
        assert_eq!(stopped.trim(), "interrupted", "the stop landed mid-apply");
        assert_eq!(plan_status.trim(), "applying");
        let done: i64 = util::sqlite(
            &state,
            &format!(
                "SELECT count(*) FROM plan_cases WHERE plan_id = '{plan_id}' AND status = 'done'"
            ),
        )
        .trim()
        .parse()
        .unwrap();
        assert!(
            done > 0 && (done as u64) < cases,
            "{done} of {cases} done before the stop"
        );
        let executing = util::sqlite(
            &state,
            &format!(
                "SELECT count(*) FROM plan_cases WHERE plan_id = '{plan_id}' AND status = 'executing'"
            ),
        );
        assert_eq!(executing.trim(), "0", "the batch in flight was finished");
    }

    // Started again: the journal resumes the plan.
    let svc = Service::start(&f, None, &log);
    let base = svc.base.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, p) = send(
            &client,
            reqwest::Method::GET,
            format!("{base}/v1/plans/{plan_id}"),
            None,
        )
        .await;
        // The plan is applied when its items are; the run that applied it
        // ends after its verification.
        let (_, runs) = send(
            &client,
            reqwest::Method::GET,
            format!("{base}/v1/sweeps"),
            None,
        )
        .await;
        if p["status"] == "applied" && runs[0]["status"] != "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the plan was not resumed: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, runs) = send(
        &client,
        reqwest::Method::GET,
        format!("{base}/v1/sweeps"),
        None,
    )
    .await;
    let runs = runs.as_array().unwrap().clone();
    if cfg!(feature = "failpoints") {
        assert_eq!(runs[0]["trigger"], "resume", "{runs:?}");
        assert_eq!(runs[0]["status"], "done", "{runs:?}");
    }
    let (_, verify) = send(
        &client,
        reqwest::Method::GET,
        format!("{base}/v1/audit/verify"),
        None,
    )
    .await;
    assert_eq!(verify["problems"], json!([]), "{verify}");
    let deleted: i64 = util::sqlite(
        &state,
        &format!("SELECT count(*) FROM plan_cases WHERE plan_id = '{plan_id}' AND status = 'done'"),
    )
    .trim()
    .parse()
    .unwrap();
    let audited: i64 = util::sqlite(
        &state,
        &format!("SELECT count(DISTINCT pseudonym) FROM audit WHERE plan_id = '{plan_id}'"),
    )
    .trim()
    .parse()
    .unwrap();
    let records: i64 = util::sqlite(
        &state,
        &format!("SELECT count(*) FROM audit WHERE plan_id = '{plan_id}'"),
    )
    .trim()
    .parse()
    .unwrap();
    assert!(deleted > 0);
    assert_eq!(audited, records, "every item audited once across the stop");
    let (_, metrics) = {
        let r = client
            .get(format!("{base}/metrics"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    // The resumed run is certain only when failpoints slow the apply down
    // (without them it may finish before the stop, and the restarted
    // service has nothing to resume).
    if cfg!(feature = "failpoints") {
        assert!(metrics.contains("lethe_runs_total"), "{metrics}");
    }
    assert!(metrics.contains("lethe_objects_planned"), "{metrics}");
    drop(svc);

    // Logs: JSON lines, a request id on each request, no personal data.
    let logs = std::fs::read_to_string(&log).unwrap();
    let mut requests = 0;
    for line in logs.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if let Some(id) = v["span"]["request_id"].as_str() {
            assert_eq!(id.len(), 36, "a UUID: {line}");
            requests += 1;
        }
    }
    assert!(requests >= 10, "request log lines: {requests}");
    assert!(
        !logs.contains("@example"),
        "no e-mail addresses in the logs"
    );
    assert!(!logs.contains("ingest/"), "no object keys in the logs");
    assert!(!logs.contains("lead:"), "no entity refs in the logs");
}
