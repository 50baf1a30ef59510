//! The provider calls object_store does not make: seeing and deleting every
//! version and snapshot of a key, and reading the settings that keep them.
//!
//! - S3: GetBucketVersioning, GetObjectLockConfiguration, ListObjectVersions,
//!   DeleteObjects with version ids (or `DELETE ?versionId=` one by one where
//!   `technical.batch_deletes = false`).
//! - Azure Blob: Delete Blob with `x-ms-delete-snapshots: include` and
//!   `If-Match`, 256 at a time in a Blob Batch of our own (blob_batch.rs) or
//!   one request per blob where `technical.batch_deletes = false`, and Get
//!   Blob Service Properties for the soft-delete retention.
//!
//! Requests are signed with object_store's own authorizers and credential
//! chain and sent through its HTTP client, so credentials, TLS and proxies
//! are those of the rest of the store. Errors carry the HTTP status and the
//! provider's error code, never a key or a URL (keys can be personal data).

use std::sync::Arc;

use futures::StreamExt;
use http::{HeaderValue, Method};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::azure::{AzureAuthorizer, MicrosoftAzure};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{DeleteOutcome, StoreError};

/// A response body larger than this is refused (a listing page of 1,000
/// versions is well under 1 MiB).
const MAX_BODY: usize = 16 << 20;

/// Path segments: everything but unreserved characters and `/` encoded (the
/// form SigV4 signs and both providers accept).
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// Query values: `/` encoded too.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What the bucket keeps after a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// Versioning was never enabled: a delete removes the object.
    Off,
    /// `Enabled` or `Suspended`: older versions and delete markers may exist,
    /// and apply deletes each of them.
    On { status: String, mfa_delete: bool },
    /// The setting could not be read (the reason, without keys): apply
    /// deletes the current version, and the report says older ones may remain.
    Unknown(String),
}

fn err(op: &'static str, kind: std::io::ErrorKind, text: String) -> StoreError {
    StoreError::Io {
        op,
        source: std::io::Error::new(kind, text),
    }
}

/// An error answer, as `HTTP 403 AccessDenied`: the status and the
/// provider's code, nothing of the message (it may quote the key).
fn answer_error(op: &'static str, status: u16, body: &[u8]) -> StoreError {
    status_error(op, status, error_code(body).as_deref())
}

/// The `<Code>` of an error answer's XML body, at most 60 characters.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    leaves(body).ok().and_then(|l| {
        l.into_iter()
            .find(|(_, n, _)| n == "Code")
            .map(|(_, _, t)| t.chars().take(60).collect())
    })
}

/// As `answer_error`, with the code already read.
fn status_error(op: &'static str, status: u16, code: Option<&str>) -> StoreError {
    let code = code
        .map(|c| format!(" {}", c.chars().take(60).collect::<String>()))
        .unwrap_or_default();
    let kind = match status {
        403 | 401 => std::io::ErrorKind::PermissionDenied,
        404 => std::io::ErrorKind::NotFound,
        400 | 405 | 409 | 412 | 501 => std::io::ErrorKind::InvalidInput,
        // Throttling and server errors: worth a retry.
        _ => std::io::ErrorKind::TimedOut,
    };
    err(op, kind, format!("HTTP {status}{code}"))
}

/// The leaf elements of a small XML answer, in order, as (parent, name,
/// text): entity and character references resolved, nothing external read.
pub(crate) fn leaves(body: &[u8]) -> Result<Vec<(String, String, String)>, String> {
    Ok(grouped(body)?
        .into_iter()
        .map(|(p, n, t, _)| (p, n, t))
        .collect())
}

/// The entries named `entry` (`Deleted`, `Error`) of a small XML answer,
/// each with its leaf fields.
fn records(body: &[u8], entry: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut current = None;
    for (parent, name, text, group) in grouped(body)? {
        if parent != entry {
            continue;
        }
        if current != Some(group) {
            current = Some(group);
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            last.push((name, text));
        }
    }
    Ok(out)
}

/// Leaves with the sequence number of their parent element, which tells
/// sibling entries apart.
fn grouped(body: &[u8]) -> Result<Vec<(String, String, String, usize)>, String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut text = String::new();
    let mut out = Vec::new();
    let mut leaf = false;
    let mut seq = 0usize;
    loop {
        match r.read_event() {
            Err(e) => return Err(format!("malformed XML answer ({e})")),
            Ok(Event::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                seq += 1;
                stack.push((name, seq));
                if stack.len() > 32 {
                    return Err("XML answer nested too deep".into());
                }
                text.clear();
                leaf = true;
            }
            Ok(Event::Empty(e)) => {
                let name = e.local_name().as_ref().to_string();
                let (parent, group) = stack.last().cloned().unwrap_or_default();
                out.push((parent, name, String::new(), group));
                leaf = false;
            }
            Ok(Event::Text(t)) => {
                text.push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0));
            }
            Ok(Event::CData(t)) => text.push_str(t.as_ref()),
            Ok(Event::GeneralRef(g)) => {
                if let Ok(Some(c)) = g.resolve_char_ref() {
                    text.push(c);
                } else {
                    let name = g.as_ref().to_string();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => text.push_str(s),
                        None => return Err("XML answer with an unknown entity".into()),
                    }
                }
            }
            Ok(Event::End(_)) => {
                let (name, _) = stack.pop().unwrap_or_default();
                if leaf {
                    let (parent, group) = stack.last().cloned().unwrap_or_default();
                    out.push((parent, name, std::mem::take(&mut text), group));
                }
                leaf = false;
            }
            Ok(Event::Eof) => return Ok(out),
            Ok(_) => {}
        }
    }
}

/// The text of the first leaf named `name` (settings answers have one each).
fn leaf(l: &[(String, String, String)], name: &str) -> Option<String> {
    l.iter()
        .find(|(_, n, _)| n == name)
        .map(|(_, _, t)| t.clone())
}

/// A settings answer: its status and, for a 200, its leaves.
fn settings(
    op: &'static str,
    status: u16,
    body: &[u8],
) -> Result<Vec<(String, String, String)>, StoreError> {
    if status != 200 {
        return Ok(Vec::new());
    }
    leaves(body).map_err(|e| err(op, std::io::ErrorKind::InvalidData, e))
}

/// object_store's HTTP client, with plain HTTP allowed where the endpoint
/// asks for it (emulators on loopback).
fn http_client(allow_http: bool) -> Result<HttpClient, StoreError> {
    ReqwestConnector::default()
        .connect(&ClientOptions::new().with_allow_http(allow_http))
        .map_err(|e| err("connect", std::io::ErrorKind::Other, e.to_string()))
}

/// Sends a signed request; a failure to get an answer is transient and
/// named by its kind only (the error's text quotes the URL, which holds the
/// key).
async fn send(
    http: &HttpClient,
    op: &'static str,
    request: HttpRequest,
) -> Result<object_store::client::HttpResponse, StoreError> {
    http.execute(request).await.map_err(|e| {
        err(
            op,
            std::io::ErrorKind::TimedOut,
            format!("request failed ({:?})", e.kind()),
        )
    })
}

/// Sends a signed request; answers the status and a body of at most
/// `MAX_BODY` bytes.
async fn execute(
    http: &HttpClient,
    op: &'static str,
    request: HttpRequest,
) -> Result<(u16, Vec<u8>), StoreError> {
    let response = send(http, op, request).await?;
    let status = response.status().as_u16();
    let mut stream = response.into_body().bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            err(
                op,
                std::io::ErrorKind::TimedOut,
                format!("reading the answer failed ({:?})", e.kind()),
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(err(
                op,
                std::io::ErrorKind::InvalidData,
                format!("an answer larger than {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// Sends a request again on network faults, throttling and server errors
/// (429, 5xx): up to four more times, 50 ms to 2 s apart, as object_store
/// does for its own calls. Answers whether it had to.
async fn retrying<F, Fut>(op: &'static str, once: F) -> Result<((u16, Vec<u8>), bool), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(u16, Vec<u8>), StoreError>>,
{
    let mut once = once;
    retrying_with(|| {
        let attempt = once();
        async move {
            let (status, body) = attempt.await?;
            if worth_again(status) {
                return Err(answer_error(op, status, &body));
            }
            Ok((status, body))
        }
    })
    .await
}

/// Timeouts, throttling and server errors.
fn worth_again(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// As `retrying`, for any answer; `once` turns the answers worth another
/// try into transient errors itself.
async fn retrying_with<T, F, Fut>(once: F) -> Result<(T, bool), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let retried = std::sync::atomic::AtomicBool::new(false);
    let answer = once
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(50))
                .with_max_delay(std::time::Duration::from_secs(2))
                .with_max_times(4)
                .with_jitter(),
        )
        .when(|e: &StoreError| e.kind() == super::StoreErrorKind::Transient)
        .notify(|_, _| retried.store(true, std::sync::atomic::Ordering::Relaxed))
        .await?;
    Ok((answer, retried.load(std::sync::atomic::Ordering::Relaxed)))
}

fn request(method: Method, url: &str, body: Vec<u8>) -> Result<HttpRequest, StoreError> {
    let mut req = HttpRequest::new(HttpRequestBody::from(body));
    *req.method_mut() = method;
    *req.uri_mut() = url.parse().map_err(|_| StoreError::InvalidKey {
        reason: "not a valid object URL",
    })?;
    Ok(req)
}

/// S3 calls on one bucket.
pub struct S3Versions {
    s3: AmazonS3,
    http: HttpClient,
    /// `https://s3.region.amazonaws.com/bucket`, `http://127.0.0.1:9000/bucket`,
    /// or the virtual-hosted form; no trailing slash.
    bucket_url: String,
    region: String,
    versioning: tokio::sync::OnceCell<Versioning>,
}

/// One entry of a version listing.
struct ListedVersion {
    key: String,
    version: String,
    /// A delete marker, not a version.
    marker: bool,
    latest: bool,
    /// A version's size, date and etag.
    meta: Option<super::ObjectMeta>,
}

/// A version of a key to delete: its index in the caller's list, the full
/// key, the version id.
type VersionItem = (usize, String, String);

impl S3Versions {
    pub fn new(
        s3: AmazonS3,
        bucket: &str,
        endpoint: Option<&str>,
        region: &str,
        virtual_hosted: bool,
    ) -> Result<S3Versions, StoreError> {
        let bucket_url = match (endpoint, virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let allow_http = bucket_url.starts_with("http://");
        Ok(S3Versions {
            s3,
            http: http_client(allow_http)?,
            bucket_url,
            region: region.to_string(),
            versioning: tokio::sync::OnceCell::new(),
        })
    }

    /// The bucket's versioning as far as it has been read (for reports).
    pub fn seen(&self) -> Option<&Versioning> {
        self.versioning.get()
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), StoreError> {
        retrying(op, || {
            self.send_once(op, method.clone(), url, headers, body.clone())
        })
        .await
        .map(|(answer, _)| answer)
    }

    async fn send_once(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), StoreError> {
        let credential = self.s3.credentials().get_credential().await.map_err(|_| {
            err(
                op,
                std::io::ErrorKind::PermissionDenied,
                "no S3 credentials (the AWS_* environment or the credential chain)".into(),
            )
        })?;
        let mut req = request(method, url, body)?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| StoreError::InvalidKey {
                reason: "a header value that cannot be sent",
            })?;
            req.headers_mut().insert(*name, value);
        }
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| {
                err(
                    op,
                    std::io::ErrorKind::Other,
                    format!("signing failed ({e})"),
                )
            })?;
        execute(&self.http, op, req).await
    }

    /// GetBucketVersioning, read once per process.
    pub async fn versioning(&self) -> Result<Versioning, StoreError> {
        self.versioning
            .get_or_try_init(|| async {
                let url = format!("{}?versioning", self.bucket_url);
                let (status, body) = self
                    .send("versioning", Method::GET, &url, &[], vec![])
                    .await?;
                let l = settings("versioning", status, &body)?;
                match status {
                    200 => Ok(match leaf(&l, "Status") {
                        Some(s) if s == "Enabled" || s == "Suspended" => Versioning::On {
                            status: s,
                            mfa_delete: leaf(&l, "MfaDelete").as_deref() == Some("Enabled"),
                        },
                        _ => Versioning::Off,
                    }),
                    401 | 403 | 404 | 405 | 501 => Ok(Versioning::Unknown(format!(
                        "GetBucketVersioning answered HTTP {status}"
                    ))),
                    _ => Err(answer_error("versioning", status, &body)),
                }
            })
            .await
            .cloned()
    }

    /// GetObjectLockConfiguration, in words; `None` when the bucket has no
    /// Object Lock.
    pub async fn object_lock(&self) -> Result<Option<String>, StoreError> {
        let url = format!("{}?object-lock", self.bucket_url);
        let (status, body) = self
            .send("object lock", Method::GET, &url, &[], vec![])
            .await?;
        let l = settings("object lock", status, &body)?;
        match status {
            200 => {
                if leaf(&l, "ObjectLockEnabled").as_deref() != Some("Enabled") {
                    return Ok(None);
                }
                let default = match (leaf(&l, "Mode"), leaf(&l, "Days"), leaf(&l, "Years")) {
                    (Some(m), Some(d), _) => format!("default retention {m} for {d} days"),
                    (Some(m), _, Some(y)) => format!("default retention {m} for {y} years"),
                    _ => "no default retention".into(),
                };
                Ok(Some(format!(
                    "s3: Object Lock is enabled ({default}); a version under retention or legal hold cannot be deleted, and apply fails its item as blocked"
                )))
            }
            404 => Ok(None),
            401 | 403 | 405 | 501 => Ok(Some(format!(
                "s3: the Object Lock setting could not be read (HTTP {status}); a locked version would fail its item as blocked"
            ))),
            _ => Err(answer_error("object lock", status, &body)),
        }
    }

    /// Every version id and delete marker of `full_key` (exactly that key,
    /// not the others it prefixes).
    pub async fn versions_of(&self, full_key: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.versions_and_latest(full_key).await?.0)
    }

    /// One page of ListObjectVersions under `prefix`, from `after` on: its
    /// versions and delete markers in key order, and where the next page
    /// starts (`None` on the last page).
    async fn versions_page(
        &self,
        prefix: &str,
        after: Option<&(String, String)>,
    ) -> Result<(Vec<ListedVersion>, Option<(String, String)>), StoreError> {
        let mut url = format!(
            "{}?versions&max-keys=1000&prefix={}",
            self.bucket_url,
            utf8_percent_encode(prefix, QUERY)
        );
        if let Some((k, v)) = after {
            url.push_str(&format!(
                "&key-marker={}&version-id-marker={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            ));
        }
        let (status, body) = self
            .send("list versions", Method::GET, &url, &[], vec![])
            .await?;
        if status != 200 {
            return Err(answer_error("list versions", status, &body));
        }
        let invalid = |e| err("list versions", std::io::ErrorKind::InvalidData, e);
        let top: Vec<_> = leaves(&body)
            .map_err(invalid)?
            .into_iter()
            .filter(|(p, _, _)| p == "ListVersionsResult")
            .collect();
        let next = match (
            leaf(&top, "IsTruncated").as_deref() == Some("true"),
            leaf(&top, "NextKeyMarker"),
            leaf(&top, "NextVersionIdMarker"),
        ) {
            (true, Some(k), Some(v)) => Some((k, v)),
            _ => None,
        };
        // Each entry on its own, whatever the order of its fields. The
        // answer lists versions and markers in elements of their own: sorted
        // by key (stably, newest first within a key), a key's are together.
        let mut entries = Vec::new();
        for entry in ["Version", "DeleteMarker"] {
            for rec in records(&body, entry).map_err(invalid)? {
                let field = |n: &str| {
                    rec.iter()
                        .find(|(name, _)| name == n)
                        .map(|(_, t)| t.clone())
                };
                let (Some(key), Some(version)) = (field("Key"), field("VersionId")) else {
                    continue;
                };
                let marker = entry == "DeleteMarker";
                entries.push(ListedVersion {
                    meta: (!marker).then(|| super::ObjectMeta {
                        key: key.clone(),
                        size: field("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                        modified: field("LastModified")
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .map(|t| t.as_second()),
                        etag: field("ETag").map(|e| e.trim_matches('"').to_string()),
                        metadata: Vec::new(),
                    }),
                    key,
                    version,
                    marker,
                    latest: field("IsLatest").as_deref() == Some("true"),
                });
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((entries, next))
    }

    /// The version ids of `full_key` and, when its latest entry is a version
    /// (not a delete marker), that version's size, date and etag.
    async fn versions_and_latest(
        &self,
        full_key: &str,
    ) -> Result<(Vec<String>, Option<super::ObjectMeta>), StoreError> {
        let (mut out, mut latest) = (Vec::new(), None);
        let mut after = None;
        loop {
            let (entries, next) = self.versions_page(full_key, after.as_ref()).await?;
            // Keys come in order: once past the key, the rest are others.
            let past = entries.iter().any(|e| e.key.as_str() > full_key);
            for e in entries.into_iter().filter(|e| e.key == full_key) {
                if e.latest && !e.marker {
                    latest = e.meta;
                }
                out.push(e.version);
            }
            if out.len() > 1_000_000 {
                return Err(err(
                    "list versions",
                    std::io::ErrorKind::InvalidData,
                    "more than a million versions of one key".into(),
                ));
            }
            match next {
                Some(n) if !past => after = Some(n),
                _ => return Ok((out, latest)),
            }
        }
    }

    /// Keys under `prefix` whose latest entry is a delete marker but which
    /// keep older versions: content no listing shows (so lethe cannot link
    /// it), still stored. Answers (keys, versions); one pass over the
    /// version listing, a key at a time in memory.
    pub async fn hidden_versions(&self, prefix: &str) -> Result<(u64, u64), StoreError> {
        let (mut keys, mut versions) = (0u64, 0u64);
        // The key being read: (name, latest is a marker, versions so far).
        let mut current: Option<(String, bool, u64)> = None;
        let mut flush = |c: Option<(String, bool, u64)>| {
            if let Some((_, true, n)) = c
                && n > 0
            {
                keys += 1;
                versions += n;
            }
        };
        let mut after = None;
        loop {
            let (entries, next) = self.versions_page(prefix, after.as_ref()).await?;
            for e in entries {
                if current.as_ref().map(|c| &c.0) != Some(&e.key) {
                    flush(current.take());
                    current = Some((e.key, false, 0));
                }
                if let Some(c) = current.as_mut() {
                    c.1 |= e.latest && e.marker;
                    c.2 += u64::from(!e.marker);
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        flush(current.take());
        Ok((keys, versions))
    }

    /// DeleteObjects for up to 1,000 versions: one answer per item.
    async fn delete_batch(&self, items: &[VersionItem]) -> Vec<(usize, Result<(), StoreError>)> {
        let mut xml = String::from("<Delete><Quiet>false</Quiet>");
        for (_, key, version) in items {
            xml.push_str(&format!(
                "<Object><Key>{}</Key><VersionId>{}</VersionId></Object>",
                quick_xml::escape::escape(key.as_str()),
                quick_xml::escape::escape(version.as_str())
            ));
        }
        xml.push_str("</Delete>");
        let body = xml.into_bytes();
        use base64::Engine;
        use md5::Digest;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let url = format!("{}?delete", self.bucket_url);
        let answer = self
            .send(
                "delete versions",
                Method::POST,
                &url,
                &[
                    ("content-md5", md5),
                    ("content-type", "application/xml".into()),
                ],
                body,
            )
            .await;
        let whole = |e: &StoreError| {
            items
                .iter()
                .map(|(i, _, _)| (*i, Err(e.again("delete versions"))))
                .collect::<Vec<_>>()
        };
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => return whole(&e),
        };
        if status != 200 {
            return whole(&answer_error("delete versions", status, &body));
        }
        // Answers name (key, version): match them back to the items. An
        // error without a version id (some servers omit it) fails every
        // version of its key; a deletion without one answers nothing.
        let mut by_id: std::collections::HashMap<(&str, &str), Vec<usize>> =
            std::collections::HashMap::new();
        let mut by_key: std::collections::HashMap<&str, Vec<(usize, &str)>> =
            std::collections::HashMap::new();
        for (i, key, version) in items {
            by_id
                .entry((key.as_str(), version.as_str()))
                .or_default()
                .push(*i);
            by_key
                .entry(key.as_str())
                .or_default()
                .push((*i, version.as_str()));
        }
        let mut out = Vec::with_capacity(items.len());
        let mut answered: std::collections::HashSet<(String, String)> =
            std::collections::HashSet::new();
        for entry in ["Deleted", "Error"] {
            let recs = match records(&body, entry) {
                Ok(r) => r,
                Err(e) => {
                    return whole(&err("delete versions", std::io::ErrorKind::InvalidData, e));
                }
            };
            for rec in recs {
                let field = |n: &str| {
                    rec.iter()
                        .find(|(name, _)| name == n)
                        .map(|(_, t)| t.as_str())
                };
                let Some(key) = field("Key") else { continue };
                let targets: Vec<(usize, &str)> = match field("VersionId") {
                    Some(v) => by_id
                        .get(&(key, v))
                        .map(|idx| idx.iter().map(|i| (*i, v)).collect())
                        .unwrap_or_default(),
                    None if entry == "Error" => by_key.get(key).cloned().unwrap_or_default(),
                    None => Vec::new(),
                };
                for (i, v) in targets {
                    answered.insert((key.to_string(), v.to_string()));
                    let r = if entry == "Deleted" {
                        Ok(())
                    } else {
                        Err(version_error(field("Code").unwrap_or("no code")))
                    };
                    out.push((i, r));
                }
            }
        }
        for (i, k, v) in items {
            if !answered.contains(&(k.clone(), v.clone())) {
                out.push((
                    *i,
                    Err(err(
                        "delete versions",
                        std::io::ErrorKind::Other,
                        "the store did not answer for a version".into(),
                    )),
                ));
            }
        }
        out
    }

    /// `DELETE ?versionId=` for one version (gateways without DeleteObjects).
    async fn delete_one(&self, full_key: &str, version: &str) -> Result<(), StoreError> {
        let url = format!(
            "{}/{}?versionId={}",
            self.bucket_url,
            utf8_percent_encode(full_key, PATH),
            utf8_percent_encode(version, QUERY)
        );
        let (status, body) = self
            .send("delete version", Method::DELETE, &url, &[], vec![])
            .await?;
        match status {
            200 | 204 => Ok(()),
            _ => {
                let code = leaves(&body)
                    .ok()
                    .and_then(|l| l.into_iter().find(|(_, n, _)| n == "Code"))
                    .map(|(_, _, c)| c)
                    .unwrap_or_else(|| format!("HTTP {status}"));
                Err(version_error(&code))
            }
        }
    }

    /// Deletes every version and delete marker of each key: `Deleted` when
    /// there was any, `AlreadyGone` when there was none. A key with one
    /// version left undeleted fails as a whole (the next run lists again).
    pub async fn delete_all_versions(
        self: &Arc<Self>,
        keys: &[(usize, String, Option<super::Expected>)],
        batch: bool,
    ) -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
        // A key whose current version is not the one the index read is
        // `Changed` and keeps every version.
        let listed: Vec<(usize, Result<Vec<String>, StoreError>, bool)> =
            futures::stream::iter(keys.iter().cloned().map(|(i, k, expected)| {
                let this = self.clone();
                async move {
                    match this.versions_and_latest(&k).await {
                        Ok((ids, Some(now)))
                            if expected.as_ref().is_some_and(|e| !e.matches(&now)) =>
                        {
                            (i, Ok(ids), true)
                        }
                        Ok((ids, _)) => (i, Ok(ids), false),
                        Err(e) => (i, Err(e), false),
                    }
                }
            }))
            .buffered(super::ASKS_IN_FLIGHT)
            .collect()
            .await;
        let mut out = Vec::with_capacity(keys.len());
        let mut items: Vec<VersionItem> = Vec::new();
        let key_of: std::collections::HashMap<usize, &String> =
            keys.iter().map(|(i, k, _)| (*i, k)).collect();
        let mut pending = std::collections::HashSet::new();
        for (i, r, changed) in listed {
            match r {
                _ if changed => out.push((i, Ok(DeleteOutcome::Changed))),
                Err(e) => out.push((i, Err(e))),
                Ok(v) if v.is_empty() => out.push((i, Ok(DeleteOutcome::AlreadyGone))),
                Ok(v) => {
                    pending.insert(i);
                    for version in v {
                        items.push((i, key_of[&i].clone(), version));
                    }
                }
            }
        }
        let answers: Vec<(usize, Result<(), StoreError>)> = if batch {
            let chunks: Vec<Vec<VersionItem>> = items.chunks(1000).map(|c| c.to_vec()).collect();
            futures::stream::iter(chunks.into_iter().map(|chunk| {
                let this = self.clone();
                async move { this.delete_batch(&chunk).await }
            }))
            .buffer_unordered(4)
            .flat_map(futures::stream::iter)
            .collect()
            .await
        } else {
            futures::stream::iter(items.into_iter().map(|(i, k, v)| {
                let this = self.clone();
                async move { (i, this.delete_one(&k, &v).await) }
            }))
            .buffer_unordered(16)
            .collect()
            .await
        };
        let mut failed: std::collections::HashMap<usize, StoreError> =
            std::collections::HashMap::new();
        for (i, r) in answers {
            if let Err(e) = r {
                failed.entry(i).or_insert(e);
            }
        }
        for i in pending {
            match failed.remove(&i) {
                Some(e) => out.push((i, Err(e))),
                None => out.push((i, Ok(DeleteOutcome::Deleted))),
            }
        }
        out
    }
}

/// A version that could not be deleted, by the provider's code.
fn version_error(code: &str) -> StoreError {
    let code: String = code.chars().take(60).collect();
    match code.as_str() {
        "AccessDenied" => err(
            "delete version",
            std::io::ErrorKind::PermissionDenied,
            "blocked: AccessDenied (Object Lock retention or legal hold, MFA delete, or no s3:DeleteObjectVersion permission)".into(),
        ),
        "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => err(
            "delete version",
            std::io::ErrorKind::TimedOut,
            format!("{code} (retried in a later run)"),
        ),
        _ => err(
            "delete version",
            std::io::ErrorKind::Other,
            format!("the store refused: {code}"),
        ),
    }
}

/// The headers of a Delete Blob: its snapshots go with it; with an etag,
/// only that blob.
fn delete_headers(if_match: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![("x-ms-delete-snapshots", "include".to_string())];
    if let Some(etag) = if_match {
        headers.push(("if-match", format!("\"{}\"", etag.trim_matches('"'))));
    }
    headers
}

fn with_headers(
    req: &mut HttpRequest,
    headers: &[(&'static str, String)],
) -> Result<(), StoreError> {
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).map_err(|_| StoreError::InvalidKey {
            reason: "a header value that cannot be sent",
        })?;
        req.headers_mut().insert(*name, value);
    }
    Ok(())
}

/// Signs an Azure request (Shared Key, bearer token or SAS: whatever the
/// credential chain gave).
fn sign(
    credential: &object_store::azure::AzureCredential,
    account: &str,
    op: &'static str,
    req: &mut HttpRequest,
) -> Result<(), StoreError> {
    AzureAuthorizer::new(credential, account)
        .try_authorize(req)
        .map_err(|e| {
            err(
                op,
                std::io::ErrorKind::Other,
                format!("signing failed ({e})"),
            )
        })
}

/// Azure Blob calls on one container.
pub struct AzureBlobs {
    az: MicrosoftAzure,
    http: HttpClient,
    account: String,
    /// `https://account.blob.core.windows.net` or the emulator's
    /// `http://127.0.0.1:10000/devstoreaccount1`; no trailing slash.
    account_url: String,
    container: String,
    soft_delete: tokio::sync::OnceCell<SoftDelete>,
    /// Set once the account refused a Blob Batch as a whole: later deletes
    /// go one request per blob.
    batch_refused: std::sync::atomic::AtomicBool,
}

/// One blob's delete under way, answering with the caller's index (boxed
/// and `Send`, spelled out: async-trait callers need it).
type Answering<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (usize, Result<DeleteOutcome, StoreError>)> + Send + 'a>,
>;

/// What a Delete Blob answer says of the blob.
#[derive(Debug)]
enum DeleteAnswer {
    Done(DeleteOutcome),
    /// `If-Match` failed: another blob is there, or none at all; a HEAD
    /// tells which.
    Ask,
    Failed(StoreError),
}

/// Reads a Delete Blob answer (a plain request's or a batch part's).
/// `retried`: the request was sent again after a fault, so an earlier try
/// may have deleted the blob. `conditional`: it carried `If-Match`.
fn delete_answer(
    status: u16,
    code: Option<&str>,
    retried: bool,
    conditional: bool,
) -> DeleteAnswer {
    match status {
        200 | 202 => DeleteAnswer::Done(DeleteOutcome::Deleted),
        // Gone after a failed attempt: that attempt may have deleted it,
        // and the journal shows it existed (as apply counts it too).
        404 if retried => DeleteAnswer::Done(DeleteOutcome::Deleted),
        404 => DeleteAnswer::Done(DeleteOutcome::AlreadyGone),
        // A lease (`LeaseIdMissing`) is a 412 too, and a failure: the blob
        // is there, unchanged, and not deleted. Without `If-Match` no 412 is
        // a failed condition.
        412 if conditional && code.is_none_or(|c| c == "ConditionNotMet") => DeleteAnswer::Ask,
        _ => DeleteAnswer::Failed(status_error("delete", status, code)),
    }
}

/// Each sub-request's answer in a batch answer, by `Content-ID` (the
/// sub-request's position): a part answering no sub-request of ours is
/// ignored, a blob answered twice or not at all fails (nothing is assumed
/// of it), and a batch-wide error part fails every blob it left unanswered.
fn batch_answers(
    parts: &[super::blob_batch::PartAnswer],
    conditional: &[bool],
    retried: bool,
) -> Vec<Result<DeleteAnswer, StoreError>> {
    const OP: &str = "batch delete";
    let n = conditional.len();
    let mut answers: Vec<Option<DeleteAnswer>> = (0..n).map(|_| None).collect();
    let mut twice = vec![false; n];
    let mut whole: Option<StoreError> = None;
    for part in parts {
        match part.id {
            Some(id) if id < n => {
                if answers[id].is_some() {
                    twice[id] = true;
                }
                answers[id] = Some(delete_answer(
                    part.status,
                    part.code.as_deref(),
                    retried,
                    conditional[id],
                ));
            }
            Some(_) => {}
            None => whole = Some(status_error(OP, part.status, part.code.as_deref())),
        }
    }
    answers
        .into_iter()
        .zip(twice)
        .map(|(answer, twice)| match answer {
            _ if twice => Err(err(
                OP,
                std::io::ErrorKind::InvalidData,
                "two answers for one blob".into(),
            )),
            Some(answer) => Ok(answer),
            None => Err(whole
                .as_ref()
                .map(|e| e.again(OP))
                .unwrap_or_else(super::unanswered)),
        })
        .collect()
}

/// The account's blob soft delete, as Get Blob Service Properties says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SoftDelete {
    Off,
    /// Deleted blobs and snapshots can be restored for this many days.
    Days(u32),
    Unknown(String),
}

impl AzureBlobs {
    pub fn new(
        az: MicrosoftAzure,
        account: &str,
        account_url: &str,
        container: &str,
    ) -> Result<AzureBlobs, StoreError> {
        let account_url = account_url.trim_end_matches('/').to_string();
        let allow_http = account_url.starts_with("http://");
        Ok(AzureBlobs {
            az,
            http: http_client(allow_http)?,
            account: account.to_string(),
            account_url,
            container: container.to_string(),
            soft_delete: tokio::sync::OnceCell::new(),
            batch_refused: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn credential(
        &self,
        op: &'static str,
    ) -> Result<Arc<object_store::azure::AzureCredential>, StoreError> {
        self.az.credentials().get_credential().await.map_err(|_| {
            err(
                op,
                std::io::ErrorKind::PermissionDenied,
                "no Azure credentials (the AZURE_STORAGE_* environment or the credential chain)"
                    .into(),
            )
        })
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<(u16, Vec<u8>), StoreError> {
        self.send_retried(op, method, url, headers)
            .await
            .map(|(answer, _)| answer)
    }

    /// As `send`, and whether a retry was needed.
    async fn send_retried(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<((u16, Vec<u8>), bool), StoreError> {
        retrying(op, || self.send_once(op, method.clone(), url, headers)).await
    }

    async fn send_once(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<(u16, Vec<u8>), StoreError> {
        let credential = self.credential(op).await?;
        let mut req = request(method, url, vec![])?;
        with_headers(&mut req, headers)?;
        sign(&credential, &self.account, op, &mut req)?;
        execute(&self.http, op, req).await
    }

    fn blob_url(&self, full_key: &str) -> String {
        format!(
            "{}/{}/{}",
            self.account_url,
            self.container,
            utf8_percent_encode(full_key, PATH)
        )
    }

    /// Deletes a blob and all its snapshots in one request; a missing blob
    /// is `AlreadyGone`. With an etag, only that blob (`If-Match`): another
    /// one is `Changed`.
    pub async fn delete_with_snapshots(
        &self,
        full_key: &str,
        if_match: Option<&str>,
    ) -> Result<DeleteOutcome, StoreError> {
        let url = self.blob_url(full_key);
        let ((status, body), retried) = self
            .send_retried("delete", Method::DELETE, &url, &delete_headers(if_match))
            .await?;
        let code = error_code(&body);
        let answer = delete_answer(status, code.as_deref(), retried, if_match.is_some());
        self.settle(&url, answer, retried, if_match).await
    }

    /// Turns an answer into the blob's outcome, asking (HEAD) where the
    /// condition failed.
    /// A blob is `Changed` only when the HEAD shows another etag than the
    /// one the delete expected: the same etag after a failed condition is a
    /// failure, never a reason to keep the blob as "rewritten".
    async fn settle(
        &self,
        url: &str,
        answer: DeleteAnswer,
        retried: bool,
        expected: Option<&str>,
    ) -> Result<DeleteOutcome, StoreError> {
        match answer {
            DeleteAnswer::Done(outcome) => Ok(outcome),
            DeleteAnswer::Failed(e) => Err(e),
            DeleteAnswer::Ask => {
                let (status, etag) = self.head_etag(url).await?;
                let same = |now: &str| {
                    expected.is_some_and(|e| e.trim_matches('"') == now.trim_matches('"'))
                };
                match (status, etag) {
                    (404, _) if retried => Ok(DeleteOutcome::Deleted),
                    (404, _) => Ok(DeleteOutcome::AlreadyGone),
                    (200, Some(now)) if !same(&now) => Ok(DeleteOutcome::Changed),
                    (200, _) => Err(err(
                        "delete",
                        std::io::ErrorKind::Other,
                        "HTTP 412: the condition failed, yet the blob is the one the index read"
                            .into(),
                    )),
                    (status, _) => Err(status_error("head", status, None)),
                }
            }
        }
    }

    /// HEAD of a blob: the status and its etag.
    async fn head_etag(&self, url: &str) -> Result<(u16, Option<String>), StoreError> {
        const OP: &str = "head";
        let (answer, _) = retrying_with(|| async {
            let credential = self.credential(OP).await?;
            let mut req = request(Method::HEAD, url, vec![])?;
            sign(&credential, &self.account, OP, &mut req)?;
            let response = send(&self.http, OP, req).await?;
            let status = response.status().as_u16();
            if worth_again(status) {
                return Err(status_error(OP, status, None));
            }
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((status, etag))
        })
        .await?;
        Ok(answer)
    }

    /// One Delete Blob request per blob, 32 in flight; answers by the
    /// items' first field.
    pub async fn delete_each(
        &self,
        items: &[(usize, String, Option<String>)],
    ) -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
        let mut deletes: Vec<Answering<'_>> = Vec::with_capacity(items.len());
        for (i, key, etag) in items {
            deletes.push(Box::pin(async move {
                (*i, self.delete_with_snapshots(key, etag.as_deref()).await)
            }));
        }
        futures::stream::iter(deletes)
            .buffer_unordered(32)
            .collect()
            .await
    }

    /// Deletes up to 256 blobs, each with its snapshots and with `If-Match`
    /// where an etag is given, in one Blob Batch request, and answers each
    /// blob on its own (by the items' first field): a batch that partly
    /// fails fails exactly the blobs Azure refused. A batch refused as a
    /// whole (HTTP 4xx: an emulator or an account without Blob Batch) is
    /// sent again one request per blob, and so is every later delete of
    /// this store.
    pub async fn delete_batch(
        &self,
        items: &[(usize, String, Option<String>)],
    ) -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
        use std::sync::atomic::Ordering;
        const OP: &str = "batch delete";
        if items.is_empty() {
            return Vec::new();
        }
        if items.len() > super::blob_batch::MAX_BATCH || self.batch_refused.load(Ordering::Relaxed)
        {
            return self.delete_each(items).await;
        }
        // A blob whose sub-request cannot even be written fails alone.
        let mut out: Vec<(usize, Result<DeleteOutcome, StoreError>)> = Vec::new();
        let mut sendable: Vec<(usize, String, Option<String>)> = Vec::with_capacity(items.len());
        for (i, key, etag) in items {
            let checked = request(Method::DELETE, &self.blob_url(key), vec![])
                .and_then(|mut r| with_headers(&mut r, &delete_headers(etag.as_deref())));
            match checked {
                Ok(()) => sendable.push((*i, key.clone(), etag.clone())),
                Err(e) => out.push((*i, Err(e))),
            }
        }
        if sendable.is_empty() {
            return out;
        }
        let items = &sendable[..];
        let all_failed = |e: StoreError| -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
            items.iter().map(|(i, ..)| (*i, Err(e.again(OP)))).collect()
        };
        let url = format!(
            "{}/{}?restype=container&comp=batch",
            self.account_url,
            utf8_percent_encode(&self.container, QUERY)
        );
        let ((status, body), retried) = match retrying(OP, || self.batch_once(&url, items)).await {
            Ok(answer) => answer,
            Err(e) => {
                out.extend(all_failed(e));
                return out;
            }
        };
        if status != 202 {
            // Refused before any blob was touched, in a way that says the
            // account or emulator does not take batches (not a permission,
            // a throttle, or a timeout after which some may be gone).
            if matches!(status, 400 | 404 | 405 | 501) && !retried {
                let code = error_code(&body);
                tracing::warn!(
                    status,
                    code = code.as_deref().unwrap_or(""),
                    "the Azure account refused a Blob Batch request; deleting one blob per request"
                );
                self.batch_refused.store(true, Ordering::Relaxed);
                out.extend(self.delete_each(items).await);
                return out;
            }
            out.extend(all_failed(answer_error(OP, status, &body)));
            return out;
        }
        let parts = match super::blob_batch::read_answer(&body) {
            Ok(parts) => parts,
            Err(why) => {
                out.extend(all_failed(err(
                    OP,
                    std::io::ErrorKind::InvalidData,
                    format!("an answer lethe cannot read ({why})"),
                )));
                return out;
            }
        };
        let conditional: Vec<bool> = items.iter().map(|(_, _, e)| e.is_some()).collect();
        let answers = batch_answers(&parts, &conditional, retried);
        let mut settling: Vec<Answering<'_>> = Vec::with_capacity(items.len());
        for ((i, key, etag), answer) in items.iter().zip(answers) {
            settling.push(Box::pin(async move {
                let outcome = match answer {
                    Ok(answer) => {
                        self.settle(&self.blob_url(key), answer, retried, etag.as_deref())
                            .await
                    }
                    Err(e) => Err(e),
                };
                (*i, outcome)
            }));
        }
        out.extend(
            futures::stream::iter(settling)
                .buffered(super::ASKS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await,
        );
        out
    }

    /// One try of a Blob Batch: every sub-request signed on its own, the
    /// whole signed again.
    async fn batch_once(
        &self,
        url: &str,
        items: &[(usize, String, Option<String>)],
    ) -> Result<(u16, Vec<u8>), StoreError> {
        use super::blob_batch;
        const OP: &str = "batch delete";
        let credential = self.credential(OP).await?;
        let boundary = blob_batch::boundary();
        let mut body = Vec::with_capacity(items.len() * 640);
        for (id, (_, key, etag)) in items.iter().enumerate() {
            let mut sub = request(Method::DELETE, &self.blob_url(key), vec![])?;
            let mut headers = delete_headers(etag.as_deref());
            headers.push(("content-length", "0".into()));
            with_headers(&mut sub, &headers)?;
            sign(&credential, &self.account, OP, &mut sub)?;
            blob_batch::write_part(&mut body, &boundary, id, &sub);
        }
        blob_batch::finish(&mut body, &boundary);
        let length = body.len().to_string();
        let mut req = request(Method::POST, url, body)?;
        with_headers(
            &mut req,
            &[
                (
                    "content-type",
                    format!("multipart/mixed; boundary={boundary}"),
                ),
                ("content-length", length),
            ],
        )?;
        sign(&credential, &self.account, OP, &mut req)?;
        execute(&self.http, OP, req).await
    }

    /// Takes a snapshot of a blob (tests and tooling; lethe itself never
    /// writes). Answers the snapshot's timestamp.
    pub async fn snapshot(&self, full_key: &str) -> Result<String, StoreError> {
        let credential = self.credential("snapshot").await?;
        let url = format!("{}?comp=snapshot", self.blob_url(full_key));
        let mut req = request(Method::PUT, &url, vec![])?;
        sign(&credential, &self.account, "snapshot", &mut req)?;
        let response = self.http.execute(req).await.map_err(|e| {
            err(
                "snapshot",
                std::io::ErrorKind::Other,
                format!("{:?}", e.kind()),
            )
        })?;
        let status = response.status().as_u16();
        let stamp = response
            .headers()
            .get("x-ms-snapshot")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (status, stamp) {
            (201, Some(s)) => Ok(s),
            _ => Err(err(
                "snapshot",
                std::io::ErrorKind::Other,
                format!("HTTP {status}"),
            )),
        }
    }

    /// Acquires an infinite lease on a blob (`acquire`) or breaks it at
    /// once (`break`): tests and tooling; a leased blob refuses deletes.
    pub async fn lease(&self, full_key: &str, action: &'static str) -> Result<(), StoreError> {
        let url = format!("{}?comp=lease", self.blob_url(full_key));
        let mut headers = vec![("x-ms-lease-action", action.to_string())];
        match action {
            "acquire" => headers.push(("x-ms-lease-duration", "-1".into())),
            _ => headers.push(("x-ms-lease-break-period", "0".into())),
        }
        let (status, body) = self.send("lease", Method::PUT, &url, &headers).await?;
        match status {
            200..=202 => Ok(()),
            _ => Err(answer_error("lease", status, &body)),
        }
    }

    /// Whether the account refused a Blob Batch, so that deletes now go one
    /// request per blob (reports and tests).
    pub fn batch_refused(&self) -> bool {
        self.batch_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a snapshot of a blob is still there (tests and tooling).
    pub async fn snapshot_exists(&self, full_key: &str, stamp: &str) -> Result<bool, StoreError> {
        let url = format!(
            "{}?snapshot={}",
            self.blob_url(full_key),
            utf8_percent_encode(stamp, QUERY)
        );
        let (status, body) = self.send("head", Method::HEAD, &url, &[]).await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(answer_error("head", status, &body)),
        }
    }

    /// The soft delete as far as it has been read (for reports).
    pub fn seen(&self) -> Option<&SoftDelete> {
        self.soft_delete.get()
    }

    /// The account's soft-delete retention for blobs, read once per process.
    pub async fn soft_delete(&self) -> Result<SoftDelete, StoreError> {
        self.soft_delete
            .get_or_try_init(|| self.read_soft_delete())
            .await
            .cloned()
    }

    async fn read_soft_delete(&self) -> Result<SoftDelete, StoreError> {
        let url = format!("{}/?restype=service&comp=properties", self.account_url);
        let (status, body) = self
            .send("service properties", Method::GET, &url, &[])
            .await?;
        // Only the blob retention policy: the answer has other `Enabled`s.
        let l: Vec<_> = settings("service properties", status, &body)?
            .into_iter()
            .filter(|(p, _, _)| p == "DeleteRetentionPolicy")
            .collect();
        match status {
            200 => Ok(match (leaf(&l, "Enabled").as_deref(), leaf(&l, "Days")) {
                (Some("true"), Some(d)) => SoftDelete::Days(d.parse().unwrap_or(0)),
                (Some("true"), None) => SoftDelete::Days(0),
                _ => SoftDelete::Off,
            }),
            401 | 403 | 404 | 405 | 501 => Ok(SoftDelete::Unknown(format!(
                "Get Blob Service Properties answered HTTP {status}"
            ))),
            _ => Err(answer_error("service properties", status, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_resolve_references_and_keep_parents() {
        let xml = br#"<?xml version="1.0"?>
<ListVersionsResult><IsTruncated>false</IsTruncated>
<Version><Key>a &amp; b/&#228;.json</Key><VersionId>v1</VersionId></Version>
<DeleteMarker><Key>c</Key><VersionId>v2</VersionId></DeleteMarker>
<Empty/></ListVersionsResult>"#;
        let l = leaves(xml).unwrap();
        assert_eq!(
            l[1],
            ("Version".into(), "Key".into(), "a & b/ä.json".into())
        );
        assert_eq!(
            l[4],
            ("DeleteMarker".into(), "VersionId".into(), "v2".into())
        );
        assert_eq!(
            l[5],
            ("ListVersionsResult".into(), "Empty".into(), "".into())
        );
        assert!(
            leaves(b"<a>&ext;</a>").is_err(),
            "unknown entities are refused"
        );
    }

    #[test]
    fn errors_keep_the_code_and_never_the_message() {
        let body = b"<Error><Code>AccessDenied</Code><Message>Access Denied for leads/jane.doe@example.com.json</Message><Key>leads/jane.doe@example.com.json</Key></Error>";
        let e = answer_error("delete", 403, body).to_string();
        assert!(e.contains("HTTP 403 AccessDenied"), "{e}");
        assert!(!e.contains("jane"), "{e}");
        assert!(
            version_error("AccessDenied")
                .to_string()
                .contains("blocked")
        );
    }

    #[test]
    fn keys_are_encoded_for_paths_and_queries() {
        let k = "payloads/Ä b+c&d.json";
        assert_eq!(
            utf8_percent_encode(k, PATH).to_string(),
            "payloads/%C3%84%20b%2Bc%26d.json"
        );
        assert_eq!(utf8_percent_encode("a/b", QUERY).to_string(), "a%2Fb");
    }

    /// What each Delete Blob answer means: only a failed `If-Match` asks
    /// again; a lease or any other 412 fails the blob; after a retry, a
    /// missing blob may be ours.
    #[test]
    fn delete_answers_read_as_outcomes() {
        let done = |status, code: Option<&str>, retried| match delete_answer(
            status, code, retried, true,
        ) {
            DeleteAnswer::Done(o) => Some(o),
            _ => None,
        };
        assert_eq!(done(202, None, false), Some(DeleteOutcome::Deleted));
        assert_eq!(done(200, None, true), Some(DeleteOutcome::Deleted));
        assert_eq!(
            done(404, Some("BlobNotFound"), false),
            Some(DeleteOutcome::AlreadyGone)
        );
        assert_eq!(
            done(404, Some("BlobNotFound"), true),
            Some(DeleteOutcome::Deleted)
        );
        for code in [Some("ConditionNotMet"), None] {
            assert!(matches!(
                delete_answer(412, code, false, true),
                DeleteAnswer::Ask
            ));
            // Without `If-Match`, a 412 is no failed condition.
            assert!(matches!(
                delete_answer(412, code, false, false),
                DeleteAnswer::Failed(_)
            ));
        }
        for (status, code) in [
            (412, "LeaseIdMissing"),
            (409, "SnapshotsPresent"),
            (403, "AuthorizationPermissionMismatch"),
            (503, "ServerBusy"),
        ] {
            match delete_answer(status, Some(code), false, true) {
                DeleteAnswer::Failed(e) => {
                    let text = e.to_string();
                    assert!(
                        text.contains(code) && text.contains(&status.to_string()),
                        "{text}"
                    );
                }
                other => panic!("{status} {code}: {other:?}"),
            }
        }
        // Throttling is worth a retry, a lease is not.
        let kind = |status, code| match delete_answer(status, Some(code), false, true) {
            DeleteAnswer::Failed(e) => e.kind(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(503, "ServerBusy"),
            super::super::StoreErrorKind::Transient
        );
        assert_eq!(
            kind(412, "LeaseIdMissing"),
            super::super::StoreErrorKind::Permanent
        );
    }

    /// Parts are matched by Content-ID, not by position; duplicates, gaps,
    /// foreign ids and batch-wide errors never become a deletion.
    #[test]
    fn batch_answers_go_to_the_blob_they_name() {
        use super::super::blob_batch::PartAnswer;
        let part = |id: Option<usize>, status: u16, code: Option<&str>| PartAnswer {
            id,
            status,
            code: code.map(str::to_string),
        };
        let outcome = |a: &Result<DeleteAnswer, StoreError>| match a {
            Ok(DeleteAnswer::Done(o)) => format!("{o:?}"),
            Ok(DeleteAnswer::Ask) => "ask".into(),
            Ok(DeleteAnswer::Failed(e)) | Err(e) => format!("error: {e}"),
        };
        // Out of order, one answered twice, one not at all, a foreign id.
        let parts = [
            part(Some(3), 202, None),
            part(Some(0), 404, Some("BlobNotFound")),
            part(Some(2), 412, Some("LeaseIdMissing")),
            part(Some(4), 412, Some("ConditionNotMet")),
            part(Some(5), 202, None),
            part(Some(5), 412, Some("LeaseIdMissing")),
            part(Some(99), 202, None),
        ];
        let got: Vec<String> = batch_answers(&parts, &[true; 6], false)
            .iter()
            .map(outcome)
            .collect();
        assert_eq!(got[0], "AlreadyGone");
        assert!(got[1].contains("no answer"), "{}", got[1]);
        assert!(got[2].contains("LeaseIdMissing"), "{}", got[2]);
        assert_eq!(got[3], "Deleted");
        assert_eq!(got[4], "ask");
        assert!(got[5].contains("two answers"), "{}", got[5]);
        // After a retry, a missing blob is counted as ours.
        let again = batch_answers(&parts[1..2], &[true], true);
        assert_eq!(outcome(&again[0]), "Deleted");
        // A batch-wide error fails every blob it left unanswered.
        let whole = batch_answers(
            &[
                part(None, 400, Some("InvalidInput")),
                part(Some(1), 202, None),
            ],
            &[true, true],
            false,
        );
        assert!(outcome(&whole[0]).contains("InvalidInput"));
        assert_eq!(outcome(&whole[1]), "Deleted");
    }
}
