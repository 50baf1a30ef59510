//! The signed HTTP requests object_store does not make, shared by `s3/`
//! and `azure/`: building a request, sending it through object_store's own
//! HTTP client (retrying network faults, throttling and server errors),
//! reading a bounded answer, and turning an error answer into a
//! `StoreError` with its status, the provider's error code (`error_code`)
//! and its kind, never a key or a URL (keys can be personal data). Also the
//! small XML reader the answers need and the URL encodings both providers
//! sign.

use futures::StreamExt;
use http::{HeaderValue, Method};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use super::{StoreError, StoreErrorKind};

/// A response body larger than this is refused (a listing page of 1,000
/// versions is well under 1 MiB).
pub(super) const MAX_BODY: usize = 16 << 20;

/// Path segments: everything but unreserved characters and `/` encoded (the
/// form SigV4 signs and both providers accept).
pub(super) const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// Query values: `/` encoded too.
pub(super) const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A failure of one of these requests, of the kind the caller decided.
pub(super) fn err(op: &'static str, kind: StoreErrorKind, text: String) -> StoreError {
    StoreError::failed(op, kind, text)
}

/// An error answer, as `HTTP 403 AccessDenied`: the status and the
/// provider's code, nothing of the message (it may quote the key).
pub(super) fn answer_error(op: &'static str, status: u16, body: &[u8]) -> StoreError {
    status_error(op, status, error_code(body).as_deref())
}

/// The `<Code>` of an error answer's XML body, at most 60 characters.
pub(super) fn error_code(body: &[u8]) -> Option<String> {
    leaves(body).ok().and_then(|l| {
        l.into_iter()
            .find(|(_, n, _)| n == "Code")
            .map(|(_, _, t)| t.chars().take(60).collect())
    })
}

/// As `answer_error`, with the code already read.
pub(super) fn status_error(op: &'static str, status: u16, code: Option<&str>) -> StoreError {
    let code = code
        .map(|c| format!(" {}", c.chars().take(60).collect::<String>()))
        .unwrap_or_default();
    let kind = match status {
        403 | 401 => StoreErrorKind::Permanent,
        // As it always was: not a refusal, so retried like a hiccup.
        404 => StoreErrorKind::Transient,
        400 | 405 | 409 | 412 | 501 => StoreErrorKind::Permanent,
        // Throttling and server errors: worth a retry.
        _ => StoreErrorKind::Transient,
    };
    err(op, kind, format!("HTTP {status}{code}"))
}

/// The leaf elements of a small XML answer, in order, as (parent, name,
/// text): entity and character references resolved, nothing external read.
pub(super) fn leaves(body: &[u8]) -> Result<Vec<(String, String, String)>, String> {
    Ok(grouped(body)?
        .into_iter()
        .map(|(p, n, t, _)| (p, n, t))
        .collect())
}

/// The entries named `entry` (`Deleted`, `Error`) of a small XML answer,
/// each with its leaf fields.
pub(super) fn records(body: &[u8], entry: &str) -> Result<Vec<Vec<(String, String)>>, String> {
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
pub(super) fn grouped(body: &[u8]) -> Result<Vec<(String, String, String, usize)>, String> {
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
pub(super) fn leaf(l: &[(String, String, String)], name: &str) -> Option<String> {
    l.iter()
        .find(|(_, n, _)| n == name)
        .map(|(_, _, t)| t.clone())
}

/// A settings answer: its status and, for a 200, its leaves.
pub(super) fn settings(
    op: &'static str,
    status: u16,
    body: &[u8],
) -> Result<Vec<(String, String, String)>, StoreError> {
    if status != 200 {
        return Ok(Vec::new());
    }
    leaves(body).map_err(|e| err(op, StoreErrorKind::Transient, e))
}

/// object_store's HTTP client, with plain HTTP allowed where the endpoint
/// asks for it (emulators on loopback).
pub(super) fn http_client(allow_http: bool) -> Result<HttpClient, StoreError> {
    ReqwestConnector::default()
        .connect(&ClientOptions::new().with_allow_http(allow_http))
        .map_err(|e| err("connect", StoreErrorKind::Transient, e.to_string()))
}

/// Sends a signed request; a failure to get an answer is transient and
/// named by its kind only (the error's text quotes the URL, which holds the
/// key).
pub(super) async fn send(
    http: &HttpClient,
    op: &'static str,
    request: HttpRequest,
) -> Result<object_store::client::HttpResponse, StoreError> {
    http.execute(request).await.map_err(|e| {
        err(
            op,
            StoreErrorKind::Transient,
            format!("request failed ({:?})", e.kind()),
        )
    })
}

/// Sends a signed request; answers the status and a body of at most
/// `MAX_BODY` bytes.
pub(super) async fn exchange(
    http: &HttpClient,
    op: &'static str,
    request: HttpRequest,
) -> Result<(u16, Vec<u8>), StoreError> {
    exchange_with_headers(http, op, request)
        .await
        .map(|(status, body, _)| (status, body))
}

/// As `exchange`, with the answer's headers (an uploaded part's etag).
pub(super) async fn exchange_with_headers(
    http: &HttpClient,
    op: &'static str,
    request: HttpRequest,
) -> Result<(u16, Vec<u8>, http::HeaderMap), StoreError> {
    let response = send(http, op, request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut stream = response.into_body().bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            err(
                op,
                StoreErrorKind::Transient,
                format!("reading the answer failed ({:?})", e.kind()),
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(err(
                op,
                StoreErrorKind::Transient,
                format!("an answer larger than {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body, headers))
}

/// Headers whose names are not fixed (user metadata), for a request.
pub(super) fn with_named_headers(
    req: &mut HttpRequest,
    headers: &[(String, String)],
) -> Result<(), StoreError> {
    for (name, value) in headers {
        let name =
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| StoreError::InvalidKey {
                reason: "a metadata name that cannot be sent",
            })?;
        let value = HeaderValue::from_str(value).map_err(|_| StoreError::InvalidKey {
            reason: "a header value that cannot be sent",
        })?;
        req.headers_mut().insert(name, value);
    }
    Ok(())
}

/// A header's value as text.
pub(super) fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Sends a request again on network faults, throttling and server errors
/// (429, 5xx): up to four more times, 50 ms to 2 s apart, as object_store
/// does for its own calls. Answers whether it had to.
pub(super) async fn retrying<F, Fut>(
    op: &'static str,
    once: F,
) -> Result<((u16, Vec<u8>), bool), StoreError>
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
pub(super) fn worth_again(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// As `retrying`, for any answer; `once` turns the answers worth another
/// try into transient errors itself.
pub(super) async fn retrying_with<T, F, Fut>(once: F) -> Result<(T, bool), StoreError>
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
        .when(|e: &StoreError| e.kind() == crate::store::StoreErrorKind::Transient)
        .notify(|_, _| retried.store(true, std::sync::atomic::Ordering::Relaxed))
        .await?;
    Ok((answer, retried.load(std::sync::atomic::Ordering::Relaxed)))
}

pub(super) fn request(method: Method, url: &str, body: Vec<u8>) -> Result<HttpRequest, StoreError> {
    let mut req = HttpRequest::new(HttpRequestBody::from(body));
    *req.method_mut() = method;
    *req.uri_mut() = url.parse().map_err(|_| StoreError::InvalidKey {
        reason: "not a valid object URL",
    })?;
    Ok(req)
}

pub(super) fn with_headers(
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

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::utf8_percent_encode;

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
}
