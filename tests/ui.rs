//! The dashboard at `/ui/`: `lethe serve` as a process on a loopback port.
//!
//! Plain HTTP (no browser): every page answers with the strict
//! Content-Security-Policy; a POST without a session, with a wrong or
//! missing CSRF token, or from a session whose scope is too small is
//! refused (403) and changes nothing; logging out ends the session.
//!
//! In Debian's chromium over WebDriver (chromedriver): sign in with the
//! read, operate and admin tokens and see what each may do; add and lift a
//! hold and watch explain change; approve a plan with a wrong and then the
//! right digest and follow the run to its verify; look the deleted entity
//! up in the audit; a screenshot of every view at 1280 and 390 px wide
//! under target/ui-screenshots/, each page checked by axe-core (npm, its
//! script named by `LETHE_AXE_JS`) for serious and critical violations.
//! Without chromium, chromedriver or axe-core the browser test (or its
//! accessibility check) is skipped, and under `CI=true` it fails.

#[allow(dead_code)] // uses a few of the helpers
mod util;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use util::Fixture;

const READ: &str = "ui-read-token-0123456789";
const OPERATE: &str = "ui-operate-token-0123456789";
const ADMIN: &str = "ui-admin-token-0123456789";

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'";

struct Service {
    child: Child,
    base: String,
}

impl Service {
    fn start(f: &Fixture) -> Service {
        let config = f.config().to_string_lossy().into_owned();
        let mut cmd = util::lethe_command(f.dir());
        cmd.args(["-c", &config, "serve", "--listen", "127.0.0.1:0"])
            .env_remove("FAILPOINTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
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
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's CRM and files (200 leads) with a token of each scope.
fn fixture() -> Fixture {
    let f = Fixture::empty();
    f.lethe_bare(&["demo", "--dir", ".", "--leads", "200", "--generate-only"])
        .ok();
    let mut text = f.config_text();
    for (name, token, scope) in [
        ("reader", READ, "read"),
        ("operator", OPERATE, "operate"),
        ("dpo", ADMIN, "admin"),
    ] {
        text.push_str(&format!(
            "\n[[serve.token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscope = \"{scope}\"\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        ));
    }
    f.write_config(&text);
    f
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// An API call with the admin token.
async fn api(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = http()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.expect("request sent");
    let text = r.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Plans now (over the API) and waits for the plan; answers its id.
async fn make_plan(base: &str) -> String {
    let started = api(
        base,
        reqwest::Method::POST,
        "/v1/sweeps",
        Some(json!({"mode": "plan"})),
    )
    .await;
    let run = started["run"].as_i64().expect("a run");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = api(
            base,
            reqwest::Method::GET,
            &format!("/v1/sweeps/{run}"),
            None,
        )
        .await;
        if r["status"] != "running" {
            assert_eq!(r["status"], "awaiting-approval", "{r}");
            return r["plan_id"].as_str().expect("plan id").to_string();
        }
        assert!(Instant::now() < deadline, "the plan run does not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first demo lead the next sweep deletes.
async fn due_lead(base: &str) -> String {
    for i in 1..=200 {
        let e = format!("lead:{i}");
        let v = api(
            base,
            reqwest::Method::GET,
            &format!("/v1/entities/{e}/explain"),
            None,
        )
        .await;
        if v["deleted_by_next_sweep"] == true {
            return e;
        }
    }
    panic!("no due lead in the demo data")
}

/// The first demo lead the next sweep keeps.
async fn kept_lead(base: &str) -> String {
    for i in 1..=200 {
        let e = format!("lead:{i}");
        let v = api(
            base,
            reqwest::Method::GET,
            &format!("/v1/entities/{e}/explain"),
            None,
        )
        .await;
        if v["exists"] == true && v["deleted_by_next_sweep"] == false {
            return e;
        }
    }
    panic!("no kept lead in the demo data")
}

async fn holds(base: &str) -> Vec<Value> {
    api(base, reqwest::Method::GET, "/v1/holds", None)
        .await
        .as_array()
        .cloned()
        .expect("a list")
}

/// Signs in over plain HTTP; answers the session cookie (name=value).
async fn sign_in(base: &str, token: &str) -> String {
    let r = http()
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("sign-in sent");
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    cookie
        .split(';')
        .next()
        .expect("name=value")
        .trim()
        .to_string()
}

/// The CSRF token in a page's forms.
async fn csrf(base: &str, cookie: &str, path: &str) -> String {
    let page = http()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("a form with a CSRF token on {path}: {page}"));
    page[at + 19..at + 19 + 64].to_string()
}

async fn post(base: &str, path: &str, cookie: Option<&str>, form: &str) -> (u16, String) {
    let mut req = http()
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string());
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.expect("post sent");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_refuses_posts_without_session_or_csrf_and_sends_csp() {
    let f = fixture();
    let svc = Service::start(&f);
    let base = svc.base.clone();
    let client = http();

    // The CSP on every kind of /ui answer: a page, a redirect, the
    // stylesheet, a refusal.
    for path in ["/ui/login", "/ui/", "/ui/style.css", "/ui/plans"] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        let csp = r
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok());
        assert_eq!(csp, Some(CSP), "{path}");
        assert_eq!(
            r.headers()
                .get("x-frame-options")
                .and_then(|v| v.to_str().ok()),
            Some("DENY")
        );
    }
    // German for a browser that asks for it, English otherwise.
    let de = client
        .get(format!("{base}/ui/login"))
        .header("accept-language", "de-DE,de;q=0.9,en;q=0.8")
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(
        de.contains("<html lang=\"de\">") && de.contains("Anmelden"),
        "{de}"
    );
    let en = client
        .get(format!("{base}/ui/login"))
        .header("accept-language", "fr-FR,en;q=0.5")
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(
        en.contains("<html lang=\"en\">") && en.contains("Sign in"),
        "{en}"
    );

    // Without a session a page sends the browser to sign in.
    let r = client.get(format!("{base}/ui/")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");

    // An unknown token opens no session.
    let r = client
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=not-a-token")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // Nor does a sign-in posted from another site.
    let r = client
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(format!("token={ADMIN}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("set-cookie").is_none());

    let lead = due_lead(&base).await;
    let before = holds(&base).await.len();
    let add = format!("target={lead}&reason=CASE-1");

    // No session: refused, nothing changed.
    let (status, _) = post(&base, "/ui/holds", None, &add).await;
    assert_eq!(status, 403);
    let (status, _) = post(&base, "/ui/holds", Some("lethe_session=forged"), &add).await;
    assert_eq!(status, 403);

    // A session, but no CSRF token or a wrong one: refused, nothing changed.
    let operator = sign_in(&base, OPERATE).await;
    let (status, body) = post(&base, "/ui/holds", Some(&operator), &add).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = post(
        &base,
        "/ui/holds",
        Some(&operator),
        &format!("{add}&csrf={}", "0".repeat(64)),
    )
    .await;
    assert_eq!(status, 403);
    // Another session's token is no good either.
    let reader = sign_in(&base, READ).await;
    let reader_csrf = csrf(&base, &reader, "/ui/holds").await;
    let (status, _) = post(
        &base,
        "/ui/holds",
        Some(&operator),
        &format!("{add}&csrf={reader_csrf}"),
    )
    .await;
    assert_eq!(status, 403);
    // The read scope may not add a hold, with its own CSRF token.
    let (status, _) = post(
        &base,
        "/ui/holds",
        Some(&reader),
        &format!("{add}&csrf={reader_csrf}"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(holds(&base).await.len(), before, "nothing was held");

    // Nor may it approve a plan, even with the right digest.
    let plan = make_plan(&base).await;
    let digest = api(
        &base,
        reqwest::Method::GET,
        &format!("/v1/plans/{plan}"),
        None,
    )
    .await["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let (status, _) = post(
        &base,
        &format!("/ui/plans/{plan}/approve"),
        Some(&reader),
        &format!("digest={digest}&csrf={reader_csrf}"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &base,
        &format!("/ui/plans/{plan}/approve"),
        None,
        &format!("digest={digest}"),
    )
    .await;
    assert_eq!(status, 403);
    let p = api(
        &base,
        reqwest::Method::GET,
        &format!("/v1/plans/{plan}"),
        None,
    )
    .await;
    assert_eq!(p["status"], "planned", "not applied: {p}");

    // With the session's own token, but posted from another site: refused.
    let token = csrf(&base, &operator, "/ui/holds").await;
    let r = client
        .post(format!("{base}/ui/holds"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &operator)
        .header("sec-fetch-site", "cross-site")
        .body(format!("{add}&csrf={token}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(holds(&base).await.len(), before, "nothing was held");

    // A form without its fields is answered by the API's check, as a page.
    let (status, body) = post(
        &base,
        "/ui/holds",
        Some(&operator),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("<p class=\"error\""), "{body}");

    // With the session's own token the same form goes through.
    let (status, body) = post(
        &base,
        "/ui/holds",
        Some(&operator),
        &format!("{add}&csrf={token}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(holds(&base).await.len(), before + 1);

    // The audit export, as the API answers it, for the read scope: the
    // hold just added is its last record.
    let r = client
        .get(format!("{base}/ui/audit/export?format=csv"))
        .header("cookie", &reader)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.expect("body");
    assert!(csv.starts_with("seq,plan_id,"), "{csv}");
    assert!(
        csv.lines().last().unwrap_or("").contains(",hold-add,"),
        "{csv}"
    );
    let jsonl = client
        .get(format!("{base}/v1/audit/export"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    let last = jsonl
        .lines()
        .last()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .expect("records");
    assert_eq!(last["author"], "operator", "{last}");
    let bad = api(
        &base,
        reqwest::Method::GET,
        "/v1/audit/export?format=xml",
        None,
    )
    .await;
    assert_eq!(bad["error"], "format is csv or jsonl");

    // Signed out, the cookie opens nothing, and its token changes nothing.
    let (status, _) = post(
        &base,
        "/ui/logout",
        Some(&operator),
        &format!("csrf={token}"),
    )
    .await;
    assert_eq!(status, 303);
    let r = client
        .get(format!("{base}/ui/holds"))
        .header("cookie", &operator)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 303, "signed out");
    let (status, _) = post(
        &base,
        "/ui/holds/lift",
        Some(&operator),
        &format!("target={lead}&csrf={token}"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(holds(&base).await.len(), before + 1, "still held");
}

// ---------------------------------------------------------------- browser

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_parts() -> Option<(&'static str, &'static str)> {
    let chromium = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "CI=true: chromium and chromium-driver are required (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: chromium or chromedriver is not installed");
            None
        }
    }
}

async fn start_driver(path: &str) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(path)
        .args([&format!("--port={port}"), "--allowed-ips=127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http().get(format!("{}/status", driver.url)).send().await
            && r.status().is_success()
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn browser(driver: &Driver, chromium: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--no-first-run", "--no-default-browser-check"],
        }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// axe-core's script (npm `axe-core`, `axe.min.js`) from `LETHE_AXE_JS`;
/// `.ci/run` installs it. Without it the accessibility check is skipped,
/// and under `CI=true` it fails.
fn axe_source() -> Option<String> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match std::env::var_os("LETHE_AXE_JS") {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("LETHE_AXE_JS={}: {e}", p.to_string_lossy())),
        ),
        None => {
            assert!(
                !ci,
                "CI=true: set LETHE_AXE_JS to axe-core's axe.min.js (npm install axe-core)"
            );
            None
        }
    }
}

/// axe-core's serious and critical violations on the page in the browser.
async fn axe(c: &Client, source: &str) -> Vec<String> {
    c.execute(&format!("{source}\n;return true;"), vec![])
        .await
        .expect("axe-core loads");
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             axe.run(document, {resultTypes: ['violations']}).then(r => done( \
               r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical') \
                 .map(v => v.impact + ' ' + v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))) \
             .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .expect("axe-core runs");
    serde_json::from_value(found).expect("a list of violations")
}

/// The page at 1280 and at 390 px wide, saved as `NAME-1280.png` and
/// `NAME-390.png`; at each width the page does not scroll sideways, and
/// (with axe-core) has no serious or critical accessibility violation.
async fn shoot(c: &Client, name: &str) {
    if let Some(source) = axe_source() {
        let violations = axe(c, &source).await;
        assert!(
            violations.is_empty(),
            "{name}: axe-core finds {violations:#?}"
        );
    }
    for (w, h) in [(1280u32, 1000u32), (390, 844)] {
        c.set_window_size(w, h).await.expect("resize");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}-{w}.png")), png).expect("saved");
        let wide = c
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .expect("script");
        if wide.as_i64().unwrap_or(0) > 0 {
            // Name what sticks out on the right.
            let culprits = c
                .execute(
                    "const w = document.documentElement.clientWidth; \
                     return [...document.querySelectorAll('body *')] \
                       .filter(e => e.getBoundingClientRect().right > w + 0.5) \
                       .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));",
                    vec![],
                )
                .await
                .expect("script");
            panic!("{name} at {w} px scrolls sideways by {wide}: {culprits}");
        }
    }
    c.set_window_size(1280, 1000).await.expect("resize");
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn has(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css))
        .await
        .expect("find")
        .is_empty()
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.expect(css);
    e.clear().await.expect("clear");
    e.send_keys(value).await.expect("type");
}

/// Clicks what submits a form or follows a link, and waits for the new
/// document to have loaded.
async fn click(c: &Client, css: &str) {
    c.execute("document.documentElement.dataset.old = '1';", vec![])
        .await
        .expect("mark the page");
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fresh = c
            .execute(
                "return document.readyState === 'complete' && !document.documentElement.dataset.old;",
                vec![],
            )
            .await;
        if matches!(fresh, Ok(Value::Bool(true))) {
            return;
        }
        assert!(Instant::now() < deadline, "{css}: no new page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key pressed and released, wherever the focus is.
async fn press(c: &Client, key: fantoccini::key::Key) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let k: char = key.into();
    let keys = KeyActions::new("keyboard".to_string())
        .then(KeyAction::Down { value: k })
        .then(KeyAction::Up { value: k });
    c.perform_actions(keys).await.expect("key pressed");
}

async fn sign_in_browser(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui/login"))
        .await
        .expect("login page");
    fill(c, "#token", token).await;
    click(c, "form button[type=submit]").await;
    // The Secure cookie over http://127.0.0.1 (a secure context) is kept:
    // the overview, not the sign-in page again.
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("form.signout"))
        .await
        .expect("signed in: the overview");
    let cookie = c
        .get_named_cookie("lethe_session")
        .await
        .expect("the session cookie is set");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
}

async fn sign_out(c: &Client) {
    click(c, "form.signout button").await;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#token"))
        .await
        .expect("back at sign-in");
}

async fn explain_verdict(c: &Client, base: &str, lead: &str) -> String {
    c.goto(&format!("{base}/ui/explain"))
        .await
        .expect("explain");
    fill(c, "#entity", lead).await;
    click(c, "form.inline button").await;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("p.result"))
        .await
        .expect("an answer");
    text_of(c, "p.result strong").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_in_chromium_sign_in_scopes_holds_approval_audit() {
    let Some((chromium, driver_path)) = chromium_parts() else {
        return;
    };
    let f = fixture();
    let svc = Service::start(&f);
    let base = svc.base.clone();
    let plan = make_plan(&base).await;
    let lead = due_lead(&base).await;
    let kept = kept_lead(&base).await;
    let driver = start_driver(driver_path).await;
    let c = browser(&driver, chromium).await;

    // A wrong token: refused, still at sign-in.
    c.goto(&format!("{base}/ui/login"))
        .await
        .expect("login page");
    shoot(&c, "login").await;
    fill(&c, "#token", "wrong").await;
    click(&c, "form button[type=submit]").await;
    assert!(text_of(&c, "p.error").await.contains("Unknown token"));

    // read: sees the plans, may neither approve nor change holds.
    sign_in_browser(&c, &base, READ).await;
    assert!(text_of(&c, ".who").await.contains("reader (read)"));
    c.goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    assert!(!has(&c, "#digest").await, "read may not approve");
    assert!(
        text_of(&c, "main")
            .await
            .contains("needs a token with the admin scope")
    );
    c.goto(&format!("{base}/ui/holds")).await.expect("holds");
    assert!(!has(&c, "#target").await, "read may not add holds");
    assert!(!has(&c, "form[action='/ui/holds/lift']").await);
    sign_out(&c).await;
    c.goto(&format!("{base}/ui/")).await.expect("overview");
    assert!(has(&c, "#token").await, "signed out: sent to sign in");

    // operate: puts the due lead on hold (explain: kept), lifts it (due).
    sign_in_browser(&c, &base, OPERATE).await;
    assert_eq!(
        explain_verdict(&c, &base, &lead).await,
        "due — deleted by the next sweep"
    );
    c.goto(&format!("{base}/ui/holds")).await.expect("holds");
    fill(&c, "#target", &lead).await;
    fill(&c, "#reason", "CASE-2026-17").await;
    click(&c, "form.stack button").await;
    let notice = text_of(&c, "p.notice").await;
    assert_eq!(notice, format!("{lead} is on hold."));
    shoot(&c, "holds").await;
    assert_eq!(explain_verdict(&c, &base, &lead).await, "kept");
    assert!(text_of(&c, "td.why").await.contains("hold"));
    c.goto(&format!("{base}/ui/holds")).await.expect("holds");
    click(
        &c,
        &format!("form[action='/ui/holds/lift'] button[aria-label='Lift the hold on {lead}']"),
    )
    .await;
    assert_eq!(
        text_of(&c, "p.notice").await,
        format!("The hold on {lead} is lifted.")
    );
    assert_eq!(
        explain_verdict(&c, &base, &lead).await,
        "due — deleted by the next sweep"
    );
    // The objects the index links to it, by pseudonym only.
    let source = c.source().await.expect("the page's source");
    assert!(source.contains("Linked objects ("), "{source}");
    assert!(
        !source.contains("inbound/") && !source.contains(".json"),
        "an object key on the page: {source}"
    );
    shoot(&c, "explain").await;
    c.goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    assert!(!has(&c, "#digest").await, "operate may not approve");
    sign_out(&c).await;

    // admin: a wrong digest changes nothing; the right one applies, and
    // the run page follows it to its verify.
    sign_in_browser(&c, &base, ADMIN).await;
    shoot(&c, "overview").await;
    c.goto(&format!("{base}/ui/plans")).await.expect("plans");
    shoot(&c, "plans").await;
    click(&c, &format!("a[href='/ui/plans/{plan}']")).await;
    let digest = text_of(&c, "code.digest").await;
    shoot(&c, "plan").await;
    fill(&c, "#digest", &"0".repeat(64)).await;
    click(&c, "form.approve button").await;
    assert_eq!(
        text_of(&c, "p.error").await,
        "That is not this plan's digest. Nothing was changed."
    );
    let p = api(
        &base,
        reqwest::Method::GET,
        &format!("/v1/plans/{plan}"),
        None,
    )
    .await;
    assert_eq!(p["status"], "planned", "a wrong digest applies nothing");
    // The right digest, by keyboard only: Tab from the top of the page to
    // the digest field, type it, Enter.
    c.goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    let mut tabs = 0;
    loop {
        let active = c.active_element().await.expect("focus");
        if active.attr("id").await.expect("id").as_deref() == Some("digest") {
            break;
        }
        tabs += 1;
        assert!(tabs < 30, "the digest field is not reachable by Tab");
        press(&c, fantoccini::key::Key::Tab).await;
    }
    let field = c.active_element().await.expect("focus");
    field.send_keys(&digest).await.expect("typed");
    press(&c, fantoccini::key::Key::Enter).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        // The page reloads itself (meta refresh) until the run ends.
        if c.current_url()
            .await
            .expect("url")
            .path()
            .starts_with("/ui/runs/")
            && let Ok(e) = c.find(Locator::Css("span.status")).await
            && let Ok(s) = e.text().await
            && s != "running"
        {
            break s;
        }
        assert!(Instant::now() < deadline, "the run does not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, "done");
    assert_eq!(
        text_of(&c, "p.verified").await,
        "Verified: no residual identifiers."
    );
    let p = api(
        &base,
        reqwest::Method::GET,
        &format!("/v1/plans/{plan}"),
        None,
    )
    .await;
    assert_eq!(p["status"], "applied");
    shoot(&c, "run").await;

    // The deleted lead in the audit, by pseudonym; the chain intact.
    c.goto(&format!("{base}/ui/audit")).await.expect("audit");
    fill(&c, "#target", &lead).await;
    click(&c, "#lookup button").await;
    let found = text_of(&c, "p.result").await;
    assert!(found.contains("audit records"), "{found}");
    assert!(text_of(&c, "table").await.contains(&plan));
    click(&c, "#verify button").await;
    assert!(
        text_of(&c, "p.result")
            .await
            .starts_with("The chain is intact"),
        "verify now"
    );
    shoot(&c, "audit").await;
    // The overview shows that check (it does not walk the chain itself on
    // every load).
    c.goto(&format!("{base}/ui/")).await.expect("overview");
    assert!(text_of(&c, "main").await.contains("Intact"));

    // The switch to German and back, on the same session.
    click(&c, "a.lang[hreflang=de]").await;
    assert_eq!(text_of(&c, "nav a[aria-current=page]").await, "Übersicht");
    assert!(
        text_of(&c, "form.signout button")
            .await
            .contains("Abmelden")
    );
    c.goto(&format!("{base}/ui/plans/{plan}"))
        .await
        .expect("plan");
    assert!(text_of(&c, "main").await.contains("Objekte nach Schicksal"));
    shoot(&c, "plan-de").await;
    click(&c, "a.lang[hreflang=en]").await;
    assert_eq!(text_of(&c, "nav a[aria-current=page]").await, "Overview");

    // A subject request: received today, due in a month (green).
    c.goto(&format!("{base}/ui/requests"))
        .await
        .expect("requests");
    c.find(Locator::Css("#kind option[value=access]"))
        .await
        .expect("access")
        .click()
        .await
        .expect("chosen");
    fill(&c, "#subject", &kept).await;
    fill(&c, "#reference", "TICKET-1").await;
    click(&c, "form.stack button").await;
    shoot(&c, "requests").await;
    assert!(text_of(&c, "p.notice").await.contains("received"));
    assert!(has(&c, "span.days-ok").await, "a month left: green");
    assert!(
        has(&c, "a[href$='/export']").await,
        "admin may download the export"
    );
    click(&c, "td a[href^='/ui/requests/R-']").await;
    assert!(text_of(&c, "h1").await.starts_with("Request R-"));
    assert!(has(&c, "dd span.days-ok").await);
    assert!(text_of(&c, "main").await.contains("TICKET-1"));
    shoot(&c, "request").await;

    // Nothing personal on the pages: the lead's e-mail address is not shown.
    let html = c.source().await.expect("source");
    assert!(!html.contains("@example"), "no e-mail on the page");

    sign_out(&c).await;
    c.close().await.expect("browser closes");
}
