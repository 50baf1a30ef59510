//! The Dataverse Web API client: one `reqwest` client, an OAuth2 token
//! (client credentials against Azure AD, cached until shortly before it
//! expires), a cap on requests in flight, retries, and a request counter.
//! Reusable by anything that talks to the same environment (the CRM
//! backend, a store of notes).
//!
//! Retries, decided by [`decide`]: a `429` or one of the service
//! protection error codes (`0x80072322` requests, `0x80072321` execution
//! time, `0x80072326` concurrency) waits exactly the `Retry-After` the
//! server gave, then tries again; a connection that failed or was reset and
//! a `502`/`503`/`504` are retried with exponential backoff and jitter
//! (backon); a `401` fetches a new token once; anything else is permanent.
//! A request that may have reached the server is retried only when it is
//! idempotent (`GET`, and a conditional `DELETE`/`PATCH`); a `$batch` is
//! never re-sent after it may have run (the caller settles it by reading).
//!
//! Nothing here prints a token, a secret, a body or a URL's key: errors
//! name the entity set (or `$batch`, `$metadata`) of the path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, Semaphore};

use super::batch::{self, BatchOp, ChangeSetResult};
use crate::sensitive::Sensitive;

/// Dataverse's limit on concurrent requests per user is 52; lethe stays below.
pub const MAX_IN_FLIGHT: usize = 51;
/// Requests in flight unless configured (`[crm] max_in_flight`).
pub const DEFAULT_IN_FLIGHT: usize = 16;
/// The most operations Dataverse takes in one `$batch` request.
pub const MAX_BATCH_OPERATIONS: usize = 1000;
/// The authority when `AZURE_AUTHORITY_HOST` is not set.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com/";
/// Dataverse's service root.
pub const SERVICE_ROOT: &str = "/api/data/v9.2/";

/// The service protection error codes (hex, as the Web API writes them,
/// and the decimal form of the same numbers).
const THROTTLE_CODES: [&str; 6] = [
    "0x80072322",
    "0x80072321",
    "0x80072326",
    "-2147015902",
    "-2147015903",
    "-2147015898",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An `AZURE_*` variable the credentials need is not set.
    #[error(
        "{var} is not set; the Dataverse CRM authenticates with OAuth2 client credentials from AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH)"
    )]
    MissingEnv { var: &'static str },
    /// The certificate credential cannot be used (names the file, never
    /// the key).
    #[error("{0}")]
    Certificate(String),
    /// A way of authenticating lethe does not have yet.
    #[error("{0}")]
    Unsupported(String),
    /// A URL that cannot be the Dataverse environment or the authority.
    #[error("{0}")]
    Url(String),
    /// Azure AD refused the credentials; `hint` names the variable to check.
    #[error("Azure AD refused the token request ({what}); check {hint}")]
    Token { what: String, hint: &'static str },
    /// The token endpoint could not be reached or answered nonsense.
    #[error("the token request to the Azure AD authority failed: {0}")]
    TokenTransport(String),
    /// The Web API answered an error.
    #[error(
        "Dataverse {method} {target} answered {status}{}",
        detail(code, message)
    )]
    Status {
        method: &'static str,
        target: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// Throttled more often than lethe waits for.
    #[error(
        "Dataverse {method} {target}: still throttled (429) after {waits} waits for Retry-After; service protection limits: try again later or lower [crm] max_in_flight"
    )]
    Throttled {
        method: &'static str,
        target: String,
        waits: usize,
    },
    /// No answer: the connection failed, was reset, or timed out.
    #[error("Dataverse {method} {target}: {reason}")]
    Transport {
        method: &'static str,
        target: String,
        reason: String,
        /// The request may have reached the server and run.
        may_have_run: bool,
        /// The connection itself could not be made.
        connect: bool,
    },
    /// An answer that is not what the protocol says.
    #[error("Dataverse {target}: unexpected answer: {reason}")]
    Protocol { target: String, reason: String },
}

fn detail(code: &Option<String>, message: &Option<String>) -> String {
    let mut s = String::new();
    if let Some(c) = code {
        s.push_str(&format!(" ({c})"));
    }
    if let Some(m) = message {
        s.push_str(&format!(": {m}"));
    }
    s
}

impl ClientError {
    /// Worth trying again later: throttling, a server that was unavailable,
    /// a connection that failed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Throttled { .. } | ClientError::Transport { .. } => true,
            ClientError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request may have run on the server although no answer came.
    pub fn may_have_run(&self) -> bool {
        match self {
            ClientError::Transport { may_have_run, .. } => *may_have_run,
            ClientError::Status { status, .. } => matches!(status, 502 | 504),
            _ => false,
        }
    }
}

/// OAuth2 client credentials for the environment.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    /// Empty when the app authenticates with a certificate.
    pub client_secret: Sensitive<String>,
    /// `https://login.microsoftonline.com/` unless `AZURE_AUTHORITY_HOST`.
    pub authority_host: String,
    /// A certificate credential (`AZURE_CLIENT_CERTIFICATE_PATH`), used
    /// when there is no secret.
    pub certificate: Option<Certificate>,
}

/// A certificate of the app registration with its private key: each token
/// request carries a client assertion (a JWT signed RS256 with the key,
/// naming the certificate by its SHA-1 thumbprint), never the key.
#[derive(Clone)]
pub struct Certificate {
    /// The certificate, DER.
    der: Vec<u8>,
    key: std::sync::Arc<aws_lc_rs::signature::RsaKeyPair>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificate(…)")
    }
}

impl Certificate {
    /// A PEM file holding the certificate and its RSA private key (PKCS#8
    /// or PKCS#1), as `AZURE_CLIENT_CERTIFICATE_PATH` names it. The error
    /// names the file and what is missing, never a byte of the key.
    pub fn from_pem_file(path: &std::path::Path) -> Result<Certificate, ClientError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &str| {
            ClientError::Certificate(format!(
                "AZURE_CLIENT_CERTIFICATE_PATH {}: {what}",
                path.display()
            ))
        };
        let der = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&format!("cannot be read ({e})")))?
            .next()
            .ok_or_else(|| bad("holds no CERTIFICATE block"))?
            .map_err(|e| bad(&format!("its certificate is not PEM ({e})")))?
            .to_vec();
        let key = PrivateKeyDer::from_pem_file(path).map_err(|_| {
            bad("holds no private key (a PEM file with the certificate and its unencrypted RSA key; a .pfx with AZURE_CLIENT_CERTIFICATE_PASSWORD is not supported)")
        })?;
        let pair = match &key {
            PrivateKeyDer::Pkcs8(k) => {
                aws_lc_rs::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
            }
            PrivateKeyDer::Pkcs1(k) => {
                aws_lc_rs::signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
            }
            _ => {
                return Err(bad(
                    "its private key is not an RSA key (Azure AD takes RS256)",
                ));
            }
        }
        .map_err(|_| bad("its private key is not a usable RSA key"))?;
        Ok(Certificate {
            der,
            key: std::sync::Arc::new(pair),
        })
    }

    /// The client assertion for a token request to `audience` (the token
    /// endpoint): header `{alg: RS256, typ: JWT, x5t}`, claims `aud`,
    /// `iss` = `sub` = the client id, `jti`, `nbf`, `iat`, `exp` (ten
    /// minutes).
    fn assertion(&self, client_id: &str, audience: &str) -> Result<String, ClientError> {
        use base64::Engine;
        use sha1::Digest;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let thumbprint = b64.encode(sha1::Sha1::digest(&self.der));
        let now = jiff::Timestamp::now().as_second();
        let jti: [u8; 16] = rand::random();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": thumbprint});
        let claims = serde_json::json!({
            "aud": audience, "iss": client_id, "sub": client_id,
            "jti": hex::encode(jti), "nbf": now, "iat": now, "exp": now + 600,
        });
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| ClientError::Certificate("signing the client assertion failed".into()))?;
        Ok(format!("{input}.{}", b64.encode(signature)))
    }
}

impl Credentials {
    /// From the standard environment: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`, `AZURE_AUTHORITY_HOST`.
    pub fn from_env() -> Result<Credentials, ClientError> {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let tenant_id = var("AZURE_TENANT_ID").ok_or(ClientError::MissingEnv {
            var: "AZURE_TENANT_ID",
        })?;
        let client_id = var("AZURE_CLIENT_ID").ok_or(ClientError::MissingEnv {
            var: "AZURE_CLIENT_ID",
        })?;
        let (client_secret, certificate) = match (
            var("AZURE_CLIENT_SECRET"),
            var("AZURE_CLIENT_CERTIFICATE_PATH"),
        ) {
            (Some(s), _) => (Sensitive::new(s), None),
            (None, Some(path)) => {
                if var("AZURE_CLIENT_CERTIFICATE_PASSWORD").is_some() {
                    return Err(ClientError::Unsupported(
                        "AZURE_CLIENT_CERTIFICATE_PASSWORD is set: a password-protected (.pfx) certificate is not supported; give AZURE_CLIENT_CERTIFICATE_PATH a PEM file with the certificate and its unencrypted key".into(),
                    ));
                }
                (
                    Sensitive::new(String::new()),
                    Some(Certificate::from_pem_file(std::path::Path::new(&path))?),
                )
            }
            (None, None) => {
                return Err(ClientError::MissingEnv {
                    var: "AZURE_CLIENT_SECRET",
                });
            }
        };
        Ok(Credentials {
            tenant_id,
            client_id,
            client_secret,
            certificate,
            authority_host: var("AZURE_AUTHORITY_HOST")
                .unwrap_or_else(|| DEFAULT_AUTHORITY.to_string()),
        })
    }
}

/// How the client behaves; the defaults suit Dataverse.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Requests in flight at most (1..=51).
    pub max_in_flight: usize,
    /// Tries of a request that failed transiently (first try included).
    pub max_attempts: usize,
    /// Waits for `Retry-After` before giving up on a throttled request.
    pub max_throttle_waits: usize,
    /// The first backoff; it doubles with jitter up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Per request, from sending to the whole body.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_in_flight: DEFAULT_IN_FLIGHT,
            max_attempts: 5,
            max_throttle_waits: 20,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
        }
    }
}

/// What to do after an answer or a failure (pure; see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Done: a success, or an error that trying again will not change.
    No,
    /// Service protection: wait this long (the `Retry-After`), then again.
    After(Duration),
    /// A transient fault: back off, then again (if the request may be repeated).
    Backoff,
    /// The token was refused: fetch a new one, then again (once).
    Reauthenticate,
}

/// Decides on an answer's status, `Retry-After` and OData error code.
pub fn decide(status: u16, retry_after: Option<&str>, code: Option<&str>) -> Retry {
    let throttled = status == 429 || code.is_some_and(|c| THROTTLE_CODES.contains(&c));
    if throttled {
        return match retry_after.and_then(parse_retry_after) {
            Some(d) => Retry::After(d),
            None => Retry::Backoff,
        };
    }
    match status {
        401 => Retry::Reauthenticate,
        502..=504 => Retry::Backoff,
        _ => Retry::No,
    }
}

/// `Retry-After` in seconds (Dataverse sends whole or fractional seconds).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && (0.0..=3600.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// The OData error code of an error body (`{"error":{"code":…}}`).
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")?
        .get("code")?
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// The OData error message of an error body, with what may be data taken
/// out: GUIDs and quoted text become `…`.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v.get("error")?.get("message")?.as_str()?;
    Some(scrub(m))
}

/// A server message without what may be a key or a value: GUIDs, and
/// anything in single or double quotes.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            // Skip to the closing quote.
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            out.push(c);
            out.push('…');
            out.push(c);
            continue;
        }
        out.push(c);
    }
    let guid = regex_lite_guid();
    let out = guid.replace_all(&out, "…").into_owned();
    out.chars().take(300).collect()
}

fn regex_lite_guid() -> &'static regex::Regex {
    static GUID: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    GUID.get_or_init(|| {
        regex::Regex::new(
            r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
        )
        .expect("a valid pattern")
    })
}

/// What an error names: the entity set (or `$batch`, `$metadata`) a path
/// starts with, never its key or query.
pub fn target_of(path: &str) -> String {
    let rel = path
        .split_once(SERVICE_ROOT)
        .map(|(_, r)| r)
        .unwrap_or(path)
        .trim_start_matches('/');
    let end = rel.find(['(', '?', '/']).unwrap_or(rel.len());
    let name = &rel[..end];
    if name.is_empty() {
        "(service root)".into()
    } else {
        name.chars().take(100).collect()
    }
}

/// A cached token and when to stop using it.
struct Token {
    value: Sensitive<String>,
    renew_at: std::time::Instant,
}

/// An answer the client got: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

pub struct Client {
    http: reqwest::Client,
    /// `https://org.crm4.dynamics.com`
    origin: Url,
    /// The service root, absolute.
    root: Url,
    credentials: Credentials,
    token_url: Url,
    token: Mutex<Option<Token>>,
    slots: Semaphore,
    options: ClientOptions,
    requests: AtomicU64,
    token_requests: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("origin", &self.origin.as_str())
            .finish_non_exhaustive()
    }
}

/// Whether `host` is a loopback address (plain `http://` is allowed there
/// only: tests).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Client {
    /// A client for the environment at `origin` (`https://HOST`, or
    /// `http://127.0.0.1:PORT` for tests), its Web API at `service_root`.
    /// Fetches a token at once, so that wrong credentials fail here.
    pub async fn connect(
        origin: &str,
        service_root: &str,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let origin = checked_url(origin, "the Dataverse environment")?;
        let root = origin
            .join(service_root)
            .map_err(|e| ClientError::Url(format!("the service root {service_root}: {e}")))?;
        let authority = if credentials.authority_host.ends_with('/') {
            credentials.authority_host.clone()
        } else {
            format!("{}/", credentials.authority_host)
        };
        let authority = checked_url(&authority, "AZURE_AUTHORITY_HOST")?;
        if credentials.tenant_id.contains(['/', '?', '#']) {
            return Err(ClientError::Url(
                "AZURE_TENANT_ID is not a tenant id or domain".into(),
            ));
        }
        let token_url = authority
            .join(&format!("{}/oauth2/v2.0/token", credentials.tenant_id))
            .map_err(|e| ClientError::Url(format!("AZURE_AUTHORITY_HOST: {e}")))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.timeout)
            .pool_max_idle_per_host(options.max_in_flight.clamp(1, MAX_IN_FLIGHT))
            .build()
            .map_err(|e| ClientError::Url(format!("building the HTTP client: {e}")))?;
        let max = options.max_in_flight.clamp(1, MAX_IN_FLIGHT);
        let client = Client {
            http,
            origin,
            root,
            credentials,
            token_url,
            token: Mutex::new(None),
            slots: Semaphore::new(max),
            options,
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
        };
        client.bearer().await?;
        Ok(client)
    }

    /// Web API requests sent so far (every try counts; tokens do not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Token requests sent so far.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    /// The service root, absolute (ends with `/`).
    pub fn service_root(&self) -> &Url {
        &self.root
    }

    /// The cap on requests in flight.
    pub fn max_in_flight(&self) -> usize {
        self.options.max_in_flight.clamp(1, MAX_IN_FLIGHT)
    }

    /// A valid access token: the cached one, or a new one.
    async fn bearer(&self) -> Result<Sensitive<String>, ClientError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && std::time::Instant::now() < t.renew_at
        {
            return Ok(t.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn fetch_token(&self) -> Result<Token, ClientError> {
        use oauth2::basic::{BasicClient, BasicErrorResponseType};
        use oauth2::{
            AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl,
        };
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let c = &self.credentials;
        let mut client = BasicClient::new(ClientId::new(c.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(TokenUrl::from_url(self.token_url.clone()));
        // A secret when there is one; else the certificate's assertion.
        let assertion = match (&c.certificate, c.client_secret.expose().is_empty()) {
            (Some(cert), true) => Some(cert.assertion(&c.client_id, self.token_url.as_str())?),
            _ => {
                client =
                    client.set_client_secret(ClientSecret::new(c.client_secret.expose().clone()));
                None
            }
        };
        let scope = format!("{}/.default", self.origin.as_str().trim_end_matches('/'));
        let http = self.http.clone();
        let send = move |request: oauth2::HttpRequest| {
            let http = http.clone();
            async move { token_http(&http, request).await }
        };
        let started = std::time::Instant::now();
        let mut request = client
            .exchange_client_credentials()
            .add_scope(Scope::new(scope));
        if let Some(a) = assertion {
            request = request
                .add_extra_param(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                )
                .add_extra_param("client_assertion", a);
        }
        let answer = request.request_async(&send).await;
        match answer {
            Ok(t) => {
                let lifetime = t.expires_in().unwrap_or(Duration::from_secs(3600));
                // Renewed a little before it expires: five minutes, or a
                // tenth of a short lifetime.
                let margin = Duration::from_secs(300).min(lifetime / 10);
                Ok(Token {
                    value: Sensitive::new(t.access_token().secret().clone()),
                    renew_at: started + lifetime.saturating_sub(margin),
                })
            }
            Err(RequestTokenError::ServerResponse(e)) => {
                let hint = match e.error() {
                    BasicErrorResponseType::InvalidClient
                    | BasicErrorResponseType::UnauthorizedClient
                        if c.client_secret.expose().is_empty() =>
                    {
                        "AZURE_CLIENT_CERTIFICATE_PATH (is this certificate uploaded to the app registration?) and AZURE_CLIENT_ID"
                    }
                    BasicErrorResponseType::InvalidClient
                    | BasicErrorResponseType::UnauthorizedClient => {
                        "AZURE_CLIENT_SECRET and AZURE_CLIENT_ID"
                    }
                    BasicErrorResponseType::InvalidScope => {
                        "crm.url (the scope is the environment's URL + /.default) and the app's access to it"
                    }
                    _ => "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
                };
                let mut what = e.error().as_ref().to_string();
                if let Some(d) = e.error_description() {
                    // Azure AD's descriptions (AADSTS…) name the app and
                    // tenant, never the secret; the first line says it.
                    let first = d.lines().next().unwrap_or_default();
                    what.push_str(": ");
                    what.push_str(&scrub(first));
                }
                Err(ClientError::Token { what, hint })
            }
            Err(RequestTokenError::Request(e)) => Err(ClientError::TokenTransport(e.to_string())),
            Err(RequestTokenError::Parse(e, _)) => Err(ClientError::TokenTransport(format!(
                "the token answer does not parse: {e}"
            ))),
            Err(RequestTokenError::Other(e)) => Err(ClientError::TokenTransport(scrub(&e))),
        }
    }

    /// An absolute URL for a path relative to the service root (or an
    /// absolute URL of the same origin: a `@odata.nextLink`).
    pub fn resolve(&self, path: &str) -> Result<Url, ClientError> {
        resolve(&self.origin, &self.root, path)
    }

    /// Sends one request with the retries of the module doc. `idempotent`:
    /// the request may be sent again after it may have run.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Option<(Vec<u8>, String)>,
        idempotent: bool,
    ) -> Result<Answer, ClientError> {
        let url = self.resolve(path)?;
        let target = target_of(url.path());
        let name = method_name(&method);
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.options.backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_attempts.saturating_sub(1))
            .with_jitter()
            .build();
        let mut throttled = 0usize;
        let mut reauthenticated = false;
        loop {
            let token = self.bearer().await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose())
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0");
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
            {
                request = request.header("Accept", "application/json");
            }
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some((bytes, content_type)) = &body {
                request = request
                    .header("Content-Type", content_type)
                    .body(bytes.clone());
            }
            let permit = self
                .slots
                .acquire()
                .await
                .map_err(|_| ClientError::Protocol {
                    target: target.clone(),
                    reason: "the client was closed".into(),
                })?;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = request.send().await;
            let result = match sent {
                Ok(r) => {
                    let status = r.status();
                    let headers = r.headers().clone();
                    match r.bytes().await {
                        Ok(body) => Ok(Answer {
                            status,
                            headers,
                            body: body.to_vec(),
                        }),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            drop(permit);
            match result {
                Ok(answer) if answer.status.is_success() => return Ok(answer),
                Ok(answer) => {
                    let status = answer.status.as_u16();
                    let code = error_code(&answer.body);
                    let retry_after = answer
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok());
                    let decision = decide(status, retry_after, code.as_deref());
                    // A throttled or unavailable answer means the request
                    // did not run: any request may be sent again.
                    let again = match decision {
                        Retry::No => None,
                        Retry::After(d) => {
                            throttled += 1;
                            if throttled > self.options.max_throttle_waits {
                                return Err(ClientError::Throttled {
                                    method: name,
                                    target,
                                    waits: throttled - 1,
                                });
                            }
                            Some(d)
                        }
                        Retry::Backoff if status == 429 || code.is_some() || status == 503 => {
                            if status == 429 || code.is_some() {
                                throttled += 1;
                            }
                            backoff.next()
                        }
                        Retry::Backoff if idempotent => backoff.next(),
                        Retry::Backoff => None,
                        Retry::Reauthenticate if !reauthenticated => {
                            reauthenticated = true;
                            self.forget_token().await;
                            Some(Duration::ZERO)
                        }
                        Retry::Reauthenticate => None,
                    };
                    match again {
                        Some(d) => {
                            tracing::debug!(status, target = %target, wait_ms = d.as_millis() as u64, "dataverse: retrying");
                            tokio::time::sleep(d).await;
                        }
                        None => {
                            return Err(ClientError::Status {
                                method: name,
                                target,
                                status,
                                code,
                                message: error_message(&answer.body),
                            });
                        }
                    }
                }
                Err(e) => {
                    let connect = e.is_connect();
                    let may_have_run = !connect;
                    let again = if connect || idempotent {
                        backoff.next()
                    } else {
                        None
                    };
                    match again {
                        Some(d) => {
                            tracing::debug!(target = %target, wait_ms = d.as_millis() as u64, "dataverse: connection failed, retrying");
                            tokio::time::sleep(d).await;
                        }
                        None => {
                            return Err(ClientError::Transport {
                                method: name,
                                target,
                                reason: transport_reason(&e),
                                may_have_run,
                                connect,
                            });
                        }
                    }
                }
            }
        }
    }

    /// `GET` a JSON document.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let answer = self.send(Method::GET, path, &[], None, true).await?;
        parse_json(&answer.body, path)
    }

    /// `GET` raw bytes (`$metadata`).
    pub async fn get_bytes(&self, path: &str, accept: &str) -> Result<Vec<u8>, ClientError> {
        let answer = self
            .send(
                Method::GET,
                path,
                &[("Accept", accept.to_string())],
                None,
                true,
            )
            .await?;
        Ok(answer.body)
    }

    /// Every row of a collection, page by page (`Prefer:
    /// odata.maxpagesize`), following `@odata.nextLink` (absolute or
    /// relative); each row goes to `sink`. Returns how many.
    pub async fn get_pages(
        &self,
        path: &str,
        page_size: usize,
        sink: &mut (dyn FnMut(Map<String, Value>) + Send),
    ) -> Result<u64, ClientError> {
        let prefer = format!("odata.maxpagesize={page_size}");
        let mut next = Some(path.to_string());
        let mut n = 0u64;
        let mut pages = 0u64;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > 10_000_000 {
                return Err(ClientError::Protocol {
                    target: target_of(&path),
                    reason: "the server's pages do not end".into(),
                });
            }
            let answer = self
                .send(
                    Method::GET,
                    &path,
                    &[("Prefer", prefer.clone())],
                    None,
                    true,
                )
                .await?;
            let mut page = match parse_json(&answer.body, &path)? {
                Value::Object(o) => o,
                _ => {
                    return Err(ClientError::Protocol {
                        target: target_of(&path),
                        reason: "a page is not a JSON object".into(),
                    });
                }
            };
            let rows = match page.remove("value") {
                Some(Value::Array(rows)) => rows,
                _ => {
                    return Err(ClientError::Protocol {
                        target: target_of(&path),
                        reason: "a page without a `value` array".into(),
                    });
                }
            };
            for row in rows {
                if let Value::Object(o) = row {
                    sink(o);
                    n += 1;
                }
            }
            next = match page.remove("@odata.nextLink") {
                Some(Value::String(link)) => {
                    // Checked here: a link elsewhere never gets our token.
                    self.resolve(&link)?;
                    Some(link)
                }
                _ => None,
            };
        }
        Ok(n)
    }

    /// `DELETE`, conditional on `if_match` (an etag) when given.
    pub async fn delete(&self, path: &str, if_match: Option<&str>) -> Result<(), ClientError> {
        let headers: Vec<(&'static str, String)> = if_match
            .map(|e| vec![("If-Match", e.to_string())])
            .unwrap_or_default();
        // A conditional delete sent twice deletes once (the second: 404 or
        // 412); an unconditional one is repeated only where it failed to connect.
        self.send(Method::DELETE, path, &headers, None, if_match.is_some())
            .await?;
        Ok(())
    }

    /// `PATCH` a JSON body, conditional on `if_match` when given.
    pub async fn patch_json(
        &self,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<(), ClientError> {
        let headers: Vec<(&'static str, String)> = if_match
            .map(|e| vec![("If-Match", e.to_string())])
            .unwrap_or_default();
        self.send(
            Method::PATCH,
            path,
            &headers,
            Some((body.to_string().into_bytes(), "application/json".into())),
            if_match.is_some(),
        )
        .await?;
        Ok(())
    }

    /// `POST` a new row to an entity set; returns its key, read from the
    /// `OData-EntityId` header (`…/leads(KEY)`). Not retried once it may
    /// have run (it would create a second row).
    pub async fn create(&self, entity_set: &str, body: &Value) -> Result<String, ClientError> {
        let answer = self
            .send(
                Method::POST,
                entity_set,
                &[],
                Some((body.to_string().into_bytes(), "application/json".into())),
                false,
            )
            .await?;
        answer
            .headers
            .get("odata-entityid")
            .and_then(|v| v.to_str().ok())
            .and_then(|id| {
                id.rsplit_once('(')
                    .map(|(_, k)| k.trim_end_matches(')').to_string())
            })
            .ok_or_else(|| ClientError::Protocol {
                target: target_of(entity_set),
                reason: "a created row without OData-EntityId".into(),
            })
    }

    /// One `$batch` request of these change sets (at most
    /// [`MAX_BATCH_OPERATIONS`] operations in all), with
    /// `Prefer: odata.continue-on-error`: one result per change set. Never
    /// re-sent once it may have run: an error that
    /// [`ClientError::may_have_run`] leaves the outcome unknown, and the
    /// caller must read what is there.
    pub async fn batch(
        &self,
        change_sets: &[Vec<BatchOp>],
    ) -> Result<Vec<ChangeSetResult>, ClientError> {
        let ops: usize = change_sets.iter().map(Vec::len).sum();
        if ops > MAX_BATCH_OPERATIONS {
            return Err(ClientError::Protocol {
                target: "$batch".into(),
                reason: format!(
                    "{ops} operations in one batch; Dataverse takes at most {MAX_BATCH_OPERATIONS}"
                ),
            });
        }
        if change_sets.is_empty() {
            return Ok(Vec::new());
        }
        let (body, content_type) = batch::write(change_sets);
        let answer = self
            .send(
                Method::POST,
                "$batch",
                &[
                    ("Prefer", "odata.continue-on-error".into()),
                    ("Accept", "multipart/mixed".into()),
                ],
                Some((body, content_type)),
                false,
            )
            .await?;
        let content_type = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        batch::read(content_type, &answer.body, change_sets.len()).map_err(|reason| {
            ClientError::Protocol {
                target: "$batch".into(),
                reason,
            }
        })
    }
}

/// The answer of the token endpoint, through our client.
async fn token_http(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TokenHttpError> {
    let request =
        reqwest::Request::try_from(request).map_err(|e| TokenHttpError(transport_reason(&e)))?;
    let answer = http
        .execute(request)
        .await
        .map_err(|e| TokenHttpError(transport_reason(&e)))?;
    let mut out = http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        out = out.header(name, value);
    }
    let body = answer
        .bytes()
        .await
        .map_err(|e| TokenHttpError(transport_reason(&e)))?;
    out.body(body.to_vec())
        .map_err(|e| TokenHttpError(e.to_string()))
}

/// A transport failure of the token request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenHttpError(String);

/// A reqwest error as text without its URL (which may hold a key).
fn transport_reason(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "could not connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else if e.is_request() {
        "the connection failed"
    } else {
        "the request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({})", scrub(&cause))
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "request",
    }
}

fn parse_json(body: &[u8], path: &str) -> Result<Value, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
        target: target_of(path),
        reason: format!("not JSON: {}", e.classify_name()),
    })
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "an I/O error",
            serde_json::error::Category::Syntax => "a syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "it ends early",
        }
    }
}

/// `https://…`, or `http://` on a loopback host; no credentials, query or
/// fragment.
fn checked_url(text: &str, what: &str) -> Result<Url, ClientError> {
    let url = Url::parse(text).map_err(|e| ClientError::Url(format!("{what}: {e}")))?;
    let host = url.host_str().unwrap_or_default().to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(ClientError::Url(format!(
                "{what}: plain http:// is allowed only on a loopback address (tests); use https://"
            )));
        }
        other => {
            return Err(ClientError::Url(format!(
                "{what}: scheme {other}:// is not https://"
            )));
        }
    }
    if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Url(format!("{what}: a host and nothing else")));
    }
    Ok(url)
}

/// `path` against the service root: relative (`leads?$top=1`,
/// `/api/data/v9.2/leads`) or absolute of the same origin.
pub fn resolve(origin: &Url, root: &Url, path: &str) -> Result<Url, ClientError> {
    let url = root.join(path).map_err(|e| ClientError::Protocol {
        target: target_of(path),
        reason: format!("a URL that does not parse: {e}"),
    })?;
    if url.origin() != origin.origin() {
        return Err(ClientError::Protocol {
            target: target_of(url.path()),
            reason:
                "a link to another host; lethe sends its token to the configured environment only"
                    .into(),
        });
    }
    Ok(url)
}

/// A header value that is visible ASCII (an etag as the server gave it).
pub fn header_value(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_waits_exactly_retry_after() {
        assert_eq!(
            decide(429, Some("7"), None),
            Retry::After(Duration::from_secs(7))
        );
        assert_eq!(
            decide(429, Some("0.5"), None),
            Retry::After(Duration::from_millis(500))
        );
        // The service protection codes, whatever the status.
        for code in ["0x80072322", "0x80072321", "0x80072326", "-2147015902"] {
            assert_eq!(
                decide(503, Some("3"), Some(code)),
                Retry::After(Duration::from_secs(3)),
                "{code}"
            );
        }
        // Without a usable Retry-After: back off.
        assert_eq!(decide(429, None, None), Retry::Backoff);
        assert_eq!(decide(429, Some("soon"), None), Retry::Backoff);
        assert_eq!(decide(429, Some("-1"), None), Retry::Backoff);
    }

    #[test]
    fn transient_faults_back_off_and_the_rest_is_permanent() {
        for s in [502, 503, 504] {
            assert_eq!(decide(s, None, None), Retry::Backoff, "{s}");
        }
        assert_eq!(decide(401, None, None), Retry::Reauthenticate);
        for s in [400, 403, 404, 412, 428, 500] {
            assert_eq!(decide(s, Some("5"), None), Retry::No, "{s}");
        }
        assert_eq!(decide(400, None, Some("0x80040217")), Retry::No);
    }

    #[test]
    fn errors_say_whether_to_retry_and_whether_it_may_have_run() {
        let status = |status| ClientError::Status {
            method: "GET",
            target: "leads".into(),
            status,
            code: None,
            message: None,
        };
        assert!(status(503).is_transient());
        assert!(!status(412).is_transient());
        assert!(!status(503).may_have_run());
        assert!(status(504).may_have_run());
        let reset = ClientError::Transport {
            method: "POST",
            target: "$batch".into(),
            reason: "the connection failed".into(),
            may_have_run: true,
            connect: false,
        };
        assert!(reset.is_transient() && reset.may_have_run());
    }

    #[test]
    fn next_links_resolve_absolute_and_relative_on_one_origin_only() {
        let origin = Url::parse("https://org.crm4.dynamics.com").unwrap();
        let root = origin.join(SERVICE_ROOT).unwrap();
        let r = |p: &str| resolve(&origin, &root, p).map(|u| u.to_string());
        assert_eq!(
            r("leads?$skiptoken=abc").unwrap(),
            "https://org.crm4.dynamics.com/api/data/v9.2/leads?$skiptoken=abc"
        );
        assert_eq!(
            r("https://org.crm4.dynamics.com/api/data/v9.2/leads?$skiptoken=%3Ccookie%3E").unwrap(),
            "https://org.crm4.dynamics.com/api/data/v9.2/leads?$skiptoken=%3Ccookie%3E"
        );
        assert_eq!(
            r("/api/data/v9.2/leads?$top=1").unwrap(),
            "https://org.crm4.dynamics.com/api/data/v9.2/leads?$top=1"
        );
        assert!(r("https://evil.example/api/data/v9.2/leads").is_err());
        assert!(r("http://org.crm4.dynamics.com/api/data/v9.2/leads").is_err());
        // A test server's relative link, on loopback.
        let origin = Url::parse("http://127.0.0.1:4004").unwrap();
        let root = origin.join(SERVICE_ROOT).unwrap();
        assert_eq!(
            resolve(&origin, &root, "leads?$skiptoken=2")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:4004/api/data/v9.2/leads?$skiptoken=2"
        );
    }

    #[test]
    fn urls_are_https_except_on_loopback() {
        assert!(checked_url("https://org.crm4.dynamics.com", "x").is_ok());
        assert!(checked_url("http://127.0.0.1:1234", "x").is_ok());
        assert!(checked_url("http://[::1]:1234", "x").is_ok());
        assert!(checked_url("http://localhost:1234", "x").is_ok());
        assert!(checked_url("http://org.crm4.dynamics.com", "x").is_err());
        assert!(checked_url("http://10.0.0.1", "x").is_err());
        assert!(checked_url("ftp://org", "x").is_err());
        assert!(checked_url("https://u:p@org", "x").is_err());
    }

    #[test]
    fn errors_name_the_entity_set_never_the_key_or_a_value() {
        assert_eq!(target_of("/api/data/v9.2/leads(0000-1)"), "leads");
        assert_eq!(target_of("leads?$filter=emailaddress1 eq 'x'"), "leads");
        assert_eq!(target_of("$batch"), "$batch");
        assert_eq!(target_of("/api/data/v9.2/$metadata"), "$metadata");
        let m = scrub(
            "leads With Id = 6f1c5b0e-3b8a-4c1e-9d55-0a1b2c3d4e5f Does Not Exist; value 'jane@example.com'",
        );
        assert!(!m.contains("6f1c5b0e") && !m.contains("jane"), "{m}");
        assert!(m.contains("Does Not Exist"), "{m}");
        assert_eq!(
            error_code(
                br#"{"error":{"code":"0x80072322","message":"Number of requests exceeded"}}"#
            )
            .as_deref(),
            Some("0x80072322")
        );
        assert_eq!(error_code(b"not json"), None);
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let c = Credentials {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Sensitive::new("hunter2".into()),
            authority_host: DEFAULT_AUTHORITY.into(),
            certificate: None,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
