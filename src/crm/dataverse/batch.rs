//! OData v4 `$batch` in its multipart form, both ways: the request body
//! (change sets of `DELETE`/`PATCH` operations, each operation with its
//! `If-Match`) and the reading of the answer, one result per change set.
//!
//! A change set is atomic on the server: all of its operations happen or
//! none. The answer to a change set that went through is a nested
//! `multipart/mixed` of one `2xx` per operation; the answer to one that
//! failed is a single `application/http` part with the status of the
//! operation that failed (a `412` for a stale `If-Match`), everything of the
//! change set rolled back. A server that stops at the first failure sends no
//! part at all for the change sets after it: those are `NotAttempted`.
//!
//! Request URLs inside a batch are relative to the service root (the test
//! server requires it; Dataverse accepts it). Nothing here logs; an error
//! names the part, never a URL (it holds a key) or a body.

/// One operation of a change set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOp {
    pub method: BatchMethod,
    /// Relative to the service root: `leads(00000000-…)`.
    pub path: String,
    /// The etag the operation is conditional on (`If-Match`).
    pub if_match: Option<String>,
    /// A JSON body (`PATCH`).
    pub body: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMethod {
    Delete,
    Patch,
}

impl BatchMethod {
    fn as_str(self) -> &'static str {
        match self {
            BatchMethod::Delete => "DELETE",
            BatchMethod::Patch => "PATCH",
        }
    }
}

/// What happened to one change set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeSetResult {
    /// Every operation answered 2xx: all of them happened.
    Done,
    /// The change set failed and was rolled back: nothing of it happened.
    /// `status` is the failing operation's (412: an `If-Match` was stale;
    /// 404: a row was gone), `code` the OData error code when one was given.
    Failed { status: u16, code: Option<String> },
    /// The server sent no answer for it (it stopped at an earlier failure):
    /// nothing of it happened.
    NotAttempted,
}

/// A boundary: random, so no part can contain it.
pub fn boundary(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The body of a `$batch` request of these change sets, and its
/// `Content-Type`. Content-IDs run from 1 over the whole batch.
pub fn write(change_sets: &[Vec<BatchOp>]) -> (Vec<u8>, String) {
    let batch = boundary("batch");
    let mut out = Vec::new();
    let mut id = 0usize;
    for set in change_sets {
        let cs = boundary("changeset");
        push(&mut out, &format!("--{batch}\r\n"));
        push(
            &mut out,
            &format!("Content-Type: multipart/mixed; boundary={cs}\r\n\r\n"),
        );
        for op in set {
            id += 1;
            push(&mut out, &format!("--{cs}\r\n"));
            push(&mut out, "Content-Type: application/http\r\n");
            push(&mut out, "Content-Transfer-Encoding: binary\r\n");
            push(&mut out, &format!("Content-ID: {id}\r\n\r\n"));
            push(
                &mut out,
                &format!("{} {} HTTP/1.1\r\n", op.method.as_str(), op.path),
            );
            if let Some(etag) = &op.if_match {
                push(&mut out, &format!("If-Match: {etag}\r\n"));
            }
            match &op.body {
                Some(body) => {
                    let text = body.to_string();
                    push(&mut out, "Content-Type: application/json\r\n");
                    push(&mut out, &format!("Content-Length: {}\r\n\r\n", text.len()));
                    push(&mut out, &text);
                    push(&mut out, "\r\n");
                }
                // The head's blank line, then the line end that belongs to
                // the next delimiter.
                None => push(&mut out, "\r\n\r\n"),
            }
        }
        push(&mut out, &format!("--{cs}--\r\n"));
    }
    push(&mut out, &format!("--{batch}--\r\n"));
    (out, format!("multipart/mixed; boundary={batch}"))
}

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// The boundary a `Content-Type: multipart/mixed; boundary=…` names.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// Reads a `$batch` answer (`content_type` is its header) into one result
/// per change set sent (`sent` of them). A part for a change set is either
/// a nested multipart (every operation's status) or one `application/http`
/// (the failure); change sets without a part were not attempted.
pub fn read(content_type: &str, body: &[u8], sent: usize) -> Result<Vec<ChangeSetResult>, String> {
    let boundary = boundary_of(content_type).ok_or("the answer is not multipart/mixed")?;
    let parts = split_parts(body, &boundary)?;
    if parts.len() > sent {
        return Err(format!("{} parts answer {sent} change sets", parts.len()));
    }
    let mut out = Vec::with_capacity(sent);
    for (i, part) in parts.iter().enumerate() {
        let (headers, content) = part_headers(part).map_err(|e| format!("part {}: {e}", i + 1))?;
        let content_type = header(&headers, "content-type").unwrap_or_default();
        let result = match boundary_of(&content_type) {
            Some(inner) => {
                let ops =
                    split_parts(content, &inner).map_err(|e| format!("part {}: {e}", i + 1))?;
                let mut failed = None;
                for op in &ops {
                    let (_, http) = part_headers(op).map_err(|e| format!("part {}: {e}", i + 1))?;
                    let (status, code) =
                        read_http(http).map_err(|e| format!("part {}: {e}", i + 1))?;
                    if !(200..300).contains(&status) && failed.is_none() {
                        failed = Some((status, code));
                    }
                }
                match failed {
                    None => ChangeSetResult::Done,
                    Some((status, code)) => ChangeSetResult::Failed { status, code },
                }
            }
            None => {
                let (status, code) =
                    read_http(content).map_err(|e| format!("part {}: {e}", i + 1))?;
                if (200..300).contains(&status) {
                    // A change set of one operation may come back as the
                    // operation's own answer.
                    ChangeSetResult::Done
                } else {
                    ChangeSetResult::Failed { status, code }
                }
            }
        };
        out.push(result);
    }
    out.resize(sent, ChangeSetResult::NotAttempted);
    Ok(out)
}

/// The parts between `--boundary` lines (the preamble and epilogue left out).
fn split_parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>, String> {
    let open = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(open.as_bytes());
    let mut positions = finder.find_iter(body).filter(|&p| {
        // A delimiter starts a line.
        p == 0 || body[..p].ends_with(b"\n")
    });
    let first = positions.next().ok_or("no boundary")?;
    let mut out = Vec::new();
    let mut start = first + open.len();
    for p in positions {
        let after = &body[start..p];
        // The part runs from after the boundary line's end to the line
        // end before the next delimiter.
        let after = after
            .strip_prefix(b"\r\n")
            .or_else(|| after.strip_prefix(b"\n"))
            .ok_or("a boundary not followed by a line end")?;
        let after = after
            .strip_suffix(b"\r\n")
            .or_else(|| after.strip_suffix(b"\n"))
            .unwrap_or(after);
        out.push(after);
        start = p + open.len();
        if body[start..].starts_with(b"--") {
            return Ok(out);
        }
    }
    if body[start..].starts_with(b"--") {
        return Ok(out);
    }
    Err("the answer ends inside a part (no closing boundary)".into())
}

/// A part's MIME headers (names lower case) and what follows them.
/// A part's headers, names in lower case.
type Headers = Vec<(String, String)>;

fn part_headers(part: &[u8]) -> Result<(Headers, &[u8]), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(part, &mut headers) {
        Ok(httparse::Status::Complete((used, parsed))) => Ok((
            parsed
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            &part[used..],
        )),
        Ok(httparse::Status::Partial) => Err("a part's headers do not end".into()),
        Err(e) => Err(format!("a part's headers do not parse: {e}")),
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// An operation's HTTP answer: its status and the OData error code of its
/// body, if any.
fn read_http(http: &[u8]) -> Result<(u16, Option<String>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(http) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Err("an answer's head does not end".into()),
        Err(e) => return Err(format!("an answer does not parse: {e}")),
    };
    let status = response.code.ok_or("an answer without a status")?;
    Ok((status, super::client::error_code(&http[used..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn del(path: &str, etag: &str) -> BatchOp {
        BatchOp {
            method: BatchMethod::Delete,
            path: path.into(),
            if_match: Some(etag.into()),
            body: None,
        }
    }

    #[test]
    fn a_request_body_has_one_change_set_each_with_its_if_match() {
        let sets = vec![
            vec![del("quotes(q1)", "W/\"7\""), del("leads(l1)", "W/\"8\"")],
            vec![BatchOp {
                method: BatchMethod::Patch,
                path: "leads(l2)".into(),
                if_match: None,
                body: Some(serde_json::json!({"subject": "x"})),
            }],
        ];
        let (body, ct) = write(&sets);
        let text = String::from_utf8(body).unwrap();
        let batch = boundary_of(&ct).unwrap();
        assert!(batch.starts_with("batch_"));
        assert!(text.starts_with(&format!("--{batch}\r\n")));
        assert!(text.ends_with(&format!("--{batch}--\r\n")));
        assert_eq!(
            text.matches("Content-Type: multipart/mixed; boundary=changeset_")
                .count(),
            2
        );
        assert!(
            text.contains(
                "Content-ID: 1\r\n\r\nDELETE quotes(q1) HTTP/1.1\r\nIf-Match: W/\"7\"\r\n"
            )
        );
        assert!(
            text.contains(
                "Content-ID: 2\r\n\r\nDELETE leads(l1) HTTP/1.1\r\nIf-Match: W/\"8\"\r\n"
            )
        );
        assert!(text.contains("Content-ID: 3\r\n\r\nPATCH leads(l2) HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"subject\":\"x\"}\r\n"));
        assert!(
            text.contains("\r\n\r\n--changeset_"),
            "a blank line ends each operation"
        );
    }

    /// An answer as a server writes it: the first change set done, the
    /// second failed on a stale etag (one part), the third not attempted.
    fn answer() -> (String, Vec<u8>) {
        let body = "--batchresponse_1\r\n\
Content-Type: multipart/mixed; boundary=changesetresponse_a\r\n\
\r\n\
--changesetresponse_a\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-ID: 1\r\n\
\r\n\
HTTP/1.1 204 No Content\r\n\
OData-Version: 4.0\r\n\
\r\n\
\r\n\
--changesetresponse_a\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-ID: 2\r\n\
\r\n\
HTTP/1.1 204 No Content\r\n\
\r\n\
\r\n\
--changesetresponse_a--\r\n\
--batchresponse_1\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
\r\n\
HTTP/1.1 412 Precondition Failed\r\n\
Content-Type: application/json; odata.metadata=minimal\r\n\
\r\n\
{\"error\":{\"code\":\"0x80060882\",\"message\":\"The version of the existing record doesn't match\"}}\r\n\
--batchresponse_1--\r\n";
        (
            "multipart/mixed; boundary=batchresponse_1".into(),
            body.as_bytes().to_vec(),
        )
    }

    #[test]
    fn an_answer_gives_one_result_per_change_set() {
        let (ct, body) = answer();
        assert_eq!(
            read(&ct, &body, 3).unwrap(),
            vec![
                ChangeSetResult::Done,
                ChangeSetResult::Failed {
                    status: 412,
                    code: Some("0x80060882".into())
                },
                ChangeSetResult::NotAttempted,
            ]
        );
    }

    #[test]
    fn a_failed_operation_inside_a_nested_answer_fails_its_change_set() {
        let body = "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n--c\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n\r\n--c--\r\n--b--\r\n";
        assert_eq!(
            read("multipart/mixed; boundary=b", body.as_bytes(), 1).unwrap(),
            vec![ChangeSetResult::Failed {
                status: 404,
                code: None
            }]
        );
    }

    #[test]
    fn a_round_trip_through_the_writer_s_framing() {
        // The writer's own framing, answered part for part, reads back.
        let sets = vec![
            vec![del("leads(a)", "W/\"1\"")],
            vec![del("leads(b)", "W/\"2\"")],
        ];
        let (body, ct) = write(&sets);
        let text = String::from_utf8(body).unwrap();
        let b = boundary_of(&ct).unwrap();
        let answered = text
            .replace(
                "DELETE leads(a) HTTP/1.1\r\nIf-Match: W/\"1\"\r\n",
                "HTTP/1.1 204 No Content\r\n",
            )
            .replace(
                "DELETE leads(b) HTTP/1.1\r\nIf-Match: W/\"2\"\r\n",
                "HTTP/1.1 412 Precondition Failed\r\n",
            );
        assert_eq!(
            read(
                &format!("multipart/mixed; boundary=\"{b}\""),
                answered.as_bytes(),
                2
            )
            .unwrap(),
            vec![
                ChangeSetResult::Done,
                ChangeSetResult::Failed {
                    status: 412,
                    code: None
                }
            ]
        );
    }

    #[test]
    fn broken_answers_are_errors() {
        let ct = "multipart/mixed; boundary=b";
        assert!(read("application/json", b"{}", 1).is_err());
        assert!(read(ct, b"no boundary here", 1).is_err());
        assert!(
            read(
                ct,
                b"--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
                1
            )
            .is_err(),
            "no closing boundary"
        );
        let two = "--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 OK\r\n\r\n\r\n--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 OK\r\n\r\n\r\n--b--\r\n";
        assert!(
            read(ct, two.as_bytes(), 1).is_err(),
            "more parts than change sets"
        );
        assert_eq!(
            read(ct, two.as_bytes(), 2).unwrap(),
            vec![ChangeSetResult::Done; 2]
        );
    }
}
