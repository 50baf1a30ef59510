//! The Dataverse-shaped OData test server (`tests/odata`), one per test:
//! started from `$LETHE_TEST_ODATA`, its JSON line read, killed when the
//! handle drops (its stdin closes too, which ends it by itself). Helpers
//! for its test endpoints (`/_test/seed`, `stats`, `faults`) and for
//! changing rows behind lethe's back through the Web API.

use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, Stdio};

use lethe::crm::dataverse::DataverseCrm;
use lethe::crm::dataverse::client::{ClientOptions, Credentials};
use lethe::sensitive::Sensitive;
use serde_json::Value;

pub struct OdataServer {
    child: Child,
    _stdin: Option<ChildStdin>,
    /// `http://127.0.0.1:P1`: the server itself (test endpoints, tokens).
    pub direct: String,
    /// `http://127.0.0.1:P2`: the counting, fault-injecting proxy.
    pub proxy: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    http: reqwest::Client,
}

/// The deterministic GUID of fixture row `id` of type number `ty`
/// (1 lead, 2 opportunity, 3 quote, 4 sales order):
/// `00000000-0000-0000-000T-00000000NNNN`.
pub fn guid(ty: u16, id: i64) -> String {
    format!("00000000-0000-0000-{ty:04}-{id:012}")
}

/// The fixture id of a GUID made by [`guid`].
pub fn id_of(guid: &str) -> i64 {
    guid.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a fixture GUID: {guid}"))
}

impl OdataServer {
    /// Starts a server; `None` (with a note) when `LETHE_TEST_ODATA` is not
    /// set, a failure under `CI=true`.
    pub fn start(test: &str) -> Option<OdataServer> {
        let dir = match std::env::var("LETHE_TEST_ODATA") {
            Ok(d) if !d.is_empty() => d,
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "LETHE_TEST_ODATA must be set under CI=true (the Dataverse test server, tests/odata)"
                );
                eprintln!(
                    "{test}: skipped, LETHE_TEST_ODATA is not set (the Dataverse test server)"
                );
                return None;
            }
        };
        let mut child = Command::new(format!("{dir}/node_modules/.bin/node"))
            .arg(format!("{dir}/server.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the OData test server in {dir}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the OData test server's JSON line");
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the OData test server printed {line:?}: {e}"));
        let s = |k: &str| info[k].as_str().unwrap_or_default().to_string();
        Some(OdataServer {
            _stdin: child.stdin.take(),
            child,
            direct: s("direct"),
            proxy: s("proxy"),
            tenant: s("tenant"),
            client_id: s("client_id"),
            client_secret: s("client_secret"),
            http: reqwest::Client::new(),
        })
    }

    /// `dataverse+http://127.0.0.1:PORT` of the proxy (or the server).
    pub fn crm_url(&self, through_proxy: bool) -> String {
        let origin = if through_proxy {
            &self.proxy
        } else {
            &self.direct
        };
        origin.replacen("http://", "dataverse+http://", 1)
    }

    /// The credentials the server accepts, its token endpoint as authority.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            tenant_id: self.tenant.clone(),
            client_id: self.client_id.clone(),
            client_secret: Sensitive::new(self.client_secret.clone()),
            authority_host: format!("{}/", self.direct),
            certificate: None,
        }
    }

    /// The `AZURE_*` environment for a `lethe` process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_TENANT_ID", self.tenant.clone()),
            ("AZURE_CLIENT_ID", self.client_id.clone()),
            ("AZURE_CLIENT_SECRET", self.client_secret.clone()),
            ("AZURE_AUTHORITY_HOST", format!("{}/", self.direct)),
        ]
    }

    /// A CRM on the proxy with `options`.
    pub async fn crm(&self, options: ClientOptions) -> DataverseCrm {
        DataverseCrm::connect(&self.proxy, self.credentials(), options)
            .await
            .unwrap_or_else(|e| panic!("connecting to the OData test server: {e}"))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.direct))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Inserts rows: `{"leads": [...], ...}`.
    pub async fn seed(&self, rows: Value) -> Value {
        self.post("/_test/seed", rows).await
    }

    /// Registers a certificate (PEM) of the app for client assertions.
    pub async fn register_certificate(&self, pem: &str) {
        self.post("/_test/certificate", serde_json::json!({ "pem": pem }))
            .await;
    }

    pub async fn reset(&self) {
        self.post("/_test/reset", serde_json::json!({})).await;
    }

    /// What the proxy saw: `requests`, `by_method`, `batch_requests`, ...
    pub async fn stats(&self) -> Value {
        let text = self
            .http
            .get(format!("{}/_test/stats", self.direct))
            .send()
            .await
            .expect("GET /_test/stats")
            .text()
            .await
            .expect("stats");
        serde_json::from_str(&text).expect("stats JSON")
    }

    pub async fn stats_reset(&self) {
        self.post("/_test/stats/reset", serde_json::json!({})).await;
    }

    /// `{"throttle_every":N,"retry_after":S,"reset_every":M,"delay_ms":D}`.
    pub async fn faults(&self, faults: Value) {
        self.post("/_test/faults", faults).await;
    }

    /// A token, for changes behind lethe's back.
    pub async fn token(&self) -> String {
        let form = serde_urlencoded::to_string([
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("scope", "http://test/.default"),
        ])
        .expect("a form");
        let text = self
            .http
            .post(format!("{}/{}/oauth2/v2.0/token", self.direct, self.tenant))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("token request")
            .text()
            .await
            .expect("token answer");
        let r: Value = serde_json::from_str(&text).expect("token JSON");
        r["access_token"].as_str().expect("a token").to_string()
    }

    /// A Web API request on the direct port: `(status, JSON body)`.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let token = self.token().await;
        let mut r = self
            .http
            .request(method, format!("{}/api/data/v9.2/{path}", self.direct))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = r.send().await.expect("a Web API request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The keys of a set, as fixture ids, sorted.
    pub async fn ids(&self, set: &str, key: &str) -> Vec<i64> {
        let (status, v) = self
            .api(reqwest::Method::GET, &format!("{set}?$select={key}"), None)
            .await;
        assert_eq!(status, 200, "{set}: {v}");
        let mut ids: Vec<i64> = v["value"]
            .as_array()
            .expect("value")
            .iter()
            .map(|r| id_of(r[key].as_str().expect("a key")))
            .collect();
        ids.sort();
        ids
    }
}

impl Drop for OdataServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
