//! Azure Blob Batch, the wire format: up to 256 Delete Blob sub-requests in
//! one `POST <container>?restype=container&comp=batch`, each signed on its
//! own and answered on its own, `multipart/mixed` both ways.
//!
//! object_store has a Blob Batch of its own, but its sub-requests carry
//! neither `x-ms-delete-snapshots` (Azure refuses to delete a blob that has
//! snapshots without it) nor `If-Match` (lethe deletes only the blob the
//! index read). This module writes the body from signed `http` requests,
//! sends it (`AzureBlobs::delete_batch`, falling back to one request per
//! blob where the account refuses batches) and reads the per-blob answers
//! back. Nothing here logs or returns a key: the answers are matched to the
//! request by their `Content-ID`, the part's position in the request.

use futures::StreamExt;
use http::Method;
use object_store::client::HttpRequest;
use percent_encoding::utf8_percent_encode;

use super::blobs::{Answering, DeleteAnswer, delete_answer, delete_headers};
use super::{AzureBlobs, sign};
use crate::store::http::{
    QUERY, answer_error, err, error_code, exchange, request, retrying, status_error, with_headers,
};
use crate::store::{DeleteOutcome, StoreError, StoreErrorKind};

/// The most sub-requests Azure takes in one batch.
pub const MAX_BATCH: usize = 256;

/// A boundary for one request body: random, so that no part can contain it.
pub fn boundary() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("batch_{}", hex::encode(bytes))
}

/// Appends one sub-request (already signed) as a part of the batch body:
/// the part's headers with `Content-ID: id`, the request line with the
/// signed URL's path and query, the request's headers, no body.
pub fn write_part(dst: &mut Vec<u8>, boundary: &str, id: usize, request: &HttpRequest) {
    dst.extend_from_slice(b"--");
    dst.extend_from_slice(boundary.as_bytes());
    dst.extend_from_slice(b"\r\nContent-Type: application/http\r\n");
    dst.extend_from_slice(b"Content-Transfer-Encoding: binary\r\n");
    // Azure wants exactly `Content-ID`.
    dst.extend_from_slice(format!("Content-ID: {id}\r\n\r\n").as_bytes());
    dst.extend_from_slice(request.method().as_str().as_bytes());
    dst.push(b' ');
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        title_case(dst, name.as_str());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// Closes the batch body.
pub fn finish(dst: &mut Vec<u8>, boundary: &str) {
    dst.extend_from_slice(b"--");
    dst.extend_from_slice(boundary.as_bytes());
    dst.extend_from_slice(b"--\r\n");
}

/// `x-ms-delete-snapshots` as `X-Ms-Delete-Snapshots`: the http crate keeps
/// names in lower case, and Azure's batch parser is not always
/// case-insensitive.
fn title_case(dst: &mut Vec<u8>, name: &str) {
    let mut start = true;
    for c in name.bytes() {
        dst.push(if start { c.to_ascii_uppercase() } else { c });
        start = c == b'-';
    }
}

/// One sub-request's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartAnswer {
    /// The `Content-ID` of the sub-request it answers; none where Azure
    /// answers the batch as a whole (an invalid batch).
    pub id: Option<usize>,
    pub status: u16,
    /// `x-ms-error-code`, or the `<Code>` of the answer's body.
    pub code: Option<String>,
}

/// Reads the answer to a batch: one `PartAnswer` per part, in order. The
/// boundary is the body's first line (Azure names it in `Content-Type`
/// too). An answer that is not a multipart body of HTTP responses is an
/// error, never a guess.
pub fn read_answer(body: &[u8]) -> Result<Vec<PartAnswer>, String> {
    let first_end = memchr::memmem::find(body, b"\r\n").ok_or("no boundary line")?;
    let first = &body[..first_end];
    let boundary = first
        .strip_prefix(b"--")
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or("the answer does not start with a boundary")?;
    let mut delimiter = b"\r\n--".to_vec();
    delimiter.extend_from_slice(boundary);
    let finder = memchr::memmem::Finder::new(&delimiter);
    let mut out = Vec::new();
    // Each part runs from after its boundary line to the next delimiter.
    let mut rest = &body[first_end + 2..];
    loop {
        let end = finder
            .find(rest)
            .ok_or("the answer ends inside a part (no closing boundary)")?;
        out.push(read_part(&rest[..end])?);
        if out.len() > MAX_BATCH {
            return Err(format!("more than {MAX_BATCH} parts"));
        }
        let after = &rest[end + delimiter.len()..];
        if after.starts_with(b"--") {
            return Ok(out);
        }
        rest = after
            .strip_prefix(b"\r\n")
            .ok_or("a boundary not followed by a line end")?;
    }
}

fn read_part(part: &[u8]) -> Result<PartAnswer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let (used, part_headers) = match httparse::parse_headers(part, &mut headers) {
        Ok(httparse::Status::Complete(done)) => done,
        _ => return Err("a part's headers cannot be read".into()),
    };
    let id = part_headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-id"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    // The delimiter took the line end that closes the answer's headers
    // (where it has no body): put one back.
    let mut http = part[used..].to_vec();
    http.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(&http) {
        Ok(httparse::Status::Complete(used)) => used,
        _ => return Err("a part is not an HTTP response".into()),
    };
    let status = response.code.ok_or("a part without a status")?;
    let code = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-ms-error-code"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(|c| c.trim().to_string())
        .or_else(|| crate::store::http::error_code(&http[used..]));
    Ok(PartAnswer { id, status, code })
}

/// Each sub-request's answer in a batch answer, by `Content-ID` (the
/// sub-request's position): a part answering no sub-request of ours is
/// ignored, a blob answered twice or not at all fails (nothing is assumed
/// of it), and a batch-wide error part fails every blob it left unanswered.
fn batch_answers(
    parts: &[PartAnswer],
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
                StoreErrorKind::Transient,
                "two answers for one blob".into(),
            )),
            Some(answer) => Ok(answer),
            None => Err(whole
                .as_ref()
                .map(|e| e.again(OP))
                .unwrap_or_else(crate::store::unanswered)),
        })
        .collect()
}

impl AzureBlobs {
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
        if items.len() > MAX_BATCH || self.batch_refused.load(Ordering::Relaxed) {
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
        let parts = match read_answer(&body) {
            Ok(parts) => parts,
            Err(why) => {
                out.extend(all_failed(err(
                    OP,
                    StoreErrorKind::Transient,
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
                .buffered(crate::store::ASKS_IN_FLIGHT)
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
        const OP: &str = "batch delete";
        let credential = self.credential(OP).await?;
        let boundary = boundary();
        let mut body = Vec::with_capacity(items.len() * 640);
        for (id, (_, key, etag)) in items.iter().enumerate() {
            let mut sub = request(Method::DELETE, &self.blob_url(key), vec![])?;
            let mut headers = delete_headers(etag.as_deref());
            headers.push(("content-length", "0".into()));
            with_headers(&mut sub, &headers)?;
            sign(&credential, &self.account, OP, &mut sub)?;
            write_part(&mut body, &boundary, id, &sub);
        }
        finish(&mut body, &boundary);
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
        exchange(&self.http, OP, req).await
    }

    /// Whether the account refused a Blob Batch, so that deletes now go one
    /// request per blob (reports and tests).
    pub fn batch_refused(&self) -> bool {
        self.batch_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method};
    use object_store::client::HttpRequestBody;

    fn delete(url: &str, etag: &str) -> HttpRequest {
        let mut r = HttpRequest::new(HttpRequestBody::from(Vec::new()));
        *r.method_mut() = Method::DELETE;
        *r.uri_mut() = url.parse().unwrap();
        r.headers_mut()
            .insert("x-ms-delete-snapshots", HeaderValue::from_static("include"));
        r.headers_mut()
            .insert("if-match", HeaderValue::from_str(etag).unwrap());
        r
    }

    #[test]
    fn parts_carry_id_request_line_and_title_cased_headers() {
        let mut body = Vec::new();
        let b = "batch_x";
        write_part(
            &mut body,
            b,
            0,
            &delete(
                "http://127.0.0.1:10000/devstoreaccount1/c/a%20b.json?sig=1",
                "\"0x1\"",
            ),
        );
        write_part(
            &mut body,
            b,
            1,
            &delete("https://acc.blob.core.windows.net/c/d.xml", "\"0x2\""),
        );
        finish(&mut body, b);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "--batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\
             Content-ID: 0\r\n\r\n\
             DELETE /devstoreaccount1/c/a%20b.json?sig=1 HTTP/1.1\r\n\
             X-Ms-Delete-Snapshots: include\r\nIf-Match: \"0x1\"\r\n\r\n\
             --batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\
             Content-ID: 1\r\n\r\n\
             DELETE /c/d.xml HTTP/1.1\r\n\
             X-Ms-Delete-Snapshots: include\r\nIf-Match: \"0x2\"\r\n\r\n\
             --batch_x--\r\n"
        );
    }

    #[test]
    fn boundaries_differ() {
        assert_ne!(boundary(), boundary());
        assert!(boundary().starts_with("batch_"));
    }

    /// An answer as Azure writes it (the Blob Batch reference's example,
    /// with a failed part whose code is only in its body).
    const ANSWER: &str = "--batchresponse_66925647-d0cb-4109-b6d3-28efe3e1e5ed\r\n\
Content-Type: application/http\r\n\
Content-ID: 0\r\n\
\r\n\
HTTP/1.1 202 Accepted\r\n\
x-ms-delete-type-permanent: true\r\n\
x-ms-request-id: 778fdc83-801e-0000-62ff-0334671e284f\r\n\
x-ms-version: 2018-11-09\r\n\
\r\n\
--batchresponse_66925647-d0cb-4109-b6d3-28efe3e1e5ed\r\n\
Content-Type: application/http\r\n\
Content-ID: 2\r\n\
\r\n\
HTTP/1.1 412 The condition specified using HTTP conditional header(s) is not met.\r\n\
x-ms-error-code: ConditionNotMet\r\n\
x-ms-version: 2018-11-09\r\n\
\r\n\
--batchresponse_66925647-d0cb-4109-b6d3-28efe3e1e5ed\r\n\
Content-Type: application/http\r\n\
Content-ID: 1\r\n\
\r\n\
HTTP/1.1 412 There is currently a lease on the blob\r\n\
Content-Type: application/xml\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>LeaseIdMissing</Code><Message>no</Message></Error>\r\n\
--batchresponse_66925647-d0cb-4109-b6d3-28efe3e1e5ed--";

    #[test]
    fn answers_are_read_per_part_with_ids_and_codes() {
        let parts = read_answer(ANSWER.as_bytes()).unwrap();
        assert_eq!(
            parts,
            vec![
                PartAnswer {
                    id: Some(0),
                    status: 202,
                    code: None
                },
                PartAnswer {
                    id: Some(2),
                    status: 412,
                    code: Some("ConditionNotMet".into())
                },
                PartAnswer {
                    id: Some(1),
                    status: 412,
                    code: Some("LeaseIdMissing".into())
                },
            ]
        );
        // With the closing line end too.
        let closed = format!("{ANSWER}\r\n");
        assert_eq!(read_answer(closed.as_bytes()).unwrap(), parts);
    }

    #[test]
    fn broken_answers_are_errors() {
        for bad in [
            "",
            "HTTP/1.1 202 Accepted\r\n\r\n",
            "--b\r\nContent-ID: 0\r\n\r\nHTTP/1.1 202 Accepted\r\n\r\n",
            "--b\r\nContent-ID: 0\r\n\r\nnot http\r\n--b--",
            "--b\r\nContent-ID: 0\r\n\r\nHTTP/1.1 202 Accepted\r\n\r\n\r\n--bX",
        ] {
            assert!(read_answer(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // A batch-wide answer: no Content-ID.
        let whole = "--b\r\nContent-Type: application/http\r\n\r\n\
                     HTTP/1.1 400 Bad Request\r\nx-ms-error-code: InvalidInput\r\n\r\n\r\n--b--";
        assert_eq!(
            read_answer(whole.as_bytes()).unwrap(),
            vec![PartAnswer {
                id: None,
                status: 400,
                code: Some("InvalidInput".into())
            }]
        );
    }

    #[test]
    fn too_many_parts_are_refused() {
        let answer = |parts: usize| {
            let mut body = String::new();
            for i in 0..parts {
                body.push_str(&format!(
                    "--b\r\nContent-ID: {i}\r\n\r\nHTTP/1.1 202 Accepted\r\n\r\n\r\n"
                ));
            }
            body.push_str("--b--");
            read_answer(body.as_bytes())
        };
        assert_eq!(answer(MAX_BATCH).unwrap().len(), MAX_BATCH);
        assert!(answer(MAX_BATCH + 1).is_err());
    }

    /// Parts are matched by Content-ID, not by position; duplicates, gaps,
    /// foreign ids and batch-wide errors never become a deletion.
    #[test]
    fn batch_answers_go_to_the_blob_they_name() {
        use super::PartAnswer;
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
