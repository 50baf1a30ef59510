//! JSON records: the nodes the rule's `record` path selects (array
//! elements; members, where its last wildcard meets an object), named by
//! their JSON pointer as both JSON extractors name them (`/records/3`). A
//! removed record goes with the separator around it, so that the result is
//! valid JSON and every kept record keeps its bytes and the separator that
//! preceded it (see `Cutter`).
//!
//! Why a scanner of our own rather than serde_json over a counting reader:
//! serde_json does not say where a value starts and ends in the input (it
//! peeks ahead, and skips whitespace on its own terms), and redaction needs
//! exact byte spans. The scanner knows only structure: strings and their
//! escapes, nesting, separators; it follows the record path's steps (at most
//! as deep as the path) and skips everything else iteratively, in constant
//! memory. Validity is serde_json's, the extractors' parser: a first pass
//! reads the whole document with it (building nothing), so the scanner only
//! ever sees valid JSON, and a file the extractor refuses is refused here.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};

use serde::Deserialize;

use super::{Cutter, Named, RedactError, Spans, open_past_bom};
use crate::config::rules::{JsonRecord, Step};
use crate::index::extract::Unreadable;
use crate::index::extract::jsonstream::pointer_escape;

/// Member names longer than this are never followed: a wildcard on the
/// record path meeting one refuses the file (a pointer is held per step).
const MAX_NAME: usize = 64 * 1024;

/// The spans of the records to cut.
pub(super) fn spans(
    input: &std::fs::File,
    record: &JsonRecord,
    named: Named<'_>,
) -> Result<Spans, RedactError> {
    validate(input)?;
    let (r, at) = open_past_bom(input)?;
    let mut walk = Walk {
        s: Scanner {
            r,
            at,
            name: Vec::new(),
        },
        named,
        spans: Spans::default(),
        seen: HashSet::new(),
        pointer: String::new(),
    };
    walk.s.ws()?;
    walk.value(&record.steps)?;
    Ok(walk.spans)
}

/// The whole document through serde_json, as the extractors read it.
fn validate(input: &std::fs::File) -> Result<(), RedactError> {
    let (r, _) = open_past_bom(input)?;
    let invalid = |e: serde_json::Error| {
        RedactError::Unreadable(Unreadable(format!(
            "not valid JSON ({})",
            crate::index::extract::json_error_class(&e)
        )))
    };
    let mut de = serde_json::Deserializer::from_reader(r);
    serde::de::IgnoredAny::deserialize(&mut de).map_err(invalid)?;
    de.end().map_err(invalid)
}

struct Walk<'a> {
    s: Scanner,
    named: Named<'a>,
    spans: Spans,
    seen: HashSet<String>,
    /// The pointer of the value being walked.
    pointer: String,
}

impl Walk<'_> {
    /// The value at the scanner (whitespace skipped), with `steps` of the
    /// record path left (at least one: the record's own wildcard).
    fn value(&mut self, steps: &[Step]) -> Result<(), RedactError> {
        let records = steps.len() == 1;
        match self.s.peek()? {
            Some(b'[') => {
                self.s.bump(1);
                self.s.ws()?;
                if self.s.peek()? == Some(b']') {
                    self.s.bump(1);
                    return Ok(());
                }
                let mut cutter = Cutter::joined();
                let mut i = 0usize;
                loop {
                    self.s.ws()?;
                    let start = self.s.at;
                    let len = self.pointer.len();
                    let follow = match steps[0] {
                        Step::Any => true,
                        Step::Index(n) => n == i,
                        Step::Member(_) => false,
                    };
                    if follow {
                        let _ = write!(self.pointer, "/{i}");
                    }
                    self.member_value(steps, follow, start, &mut cutter)?;
                    self.pointer.truncate(len);
                    self.s.ws()?;
                    match self.s.next()? {
                        Some(b',') => i += 1,
                        Some(b']') => break,
                        _ => return Err(structure()),
                    }
                }
                if records {
                    cutter.finish(&mut self.spans.cuts);
                }
            }
            Some(b'{') => {
                self.s.bump(1);
                self.s.ws()?;
                if self.s.peek()? == Some(b'}') {
                    self.s.bump(1);
                    return Ok(());
                }
                let mut cutter = Cutter::joined();
                loop {
                    self.s.ws()?;
                    let start = self.s.at;
                    let len = self.pointer.len();
                    let follow = match &steps[0] {
                        Step::Any => {
                            let name = self.s.member_name(MAX_NAME)?.ok_or_else(|| {
                                RedactError::Unreadable(Unreadable(
                                    "a member name on the record path longer than 64 KiB".into(),
                                ))
                            })?;
                            self.pointer.push('/');
                            self.pointer.push_str(&pointer_escape(&name));
                            true
                        }
                        Step::Member(m) => {
                            // A name as long as the step's, escaped at most
                            // six bytes per character, can still be it.
                            match self.s.member_name(m.len() * 6 + 2)? {
                                Some(name) if name == *m => {
                                    self.pointer.push('/');
                                    self.pointer.push_str(&pointer_escape(&name));
                                    true
                                }
                                _ => false,
                            }
                        }
                        Step::Index(_) => {
                            self.s.member_name(0)?;
                            false
                        }
                    };
                    self.s.ws()?;
                    if self.s.next()? != Some(b':') {
                        return Err(structure());
                    }
                    self.s.ws()?;
                    self.member_value(steps, follow, start, &mut cutter)?;
                    self.pointer.truncate(len);
                    self.s.ws()?;
                    match self.s.next()? {
                        Some(b',') => {}
                        Some(b'}') => break,
                        _ => return Err(structure()),
                    }
                }
                if records {
                    cutter.finish(&mut self.spans.cuts);
                }
            }
            Some(_) => self.s.skip_value()?,
            None => return Err(structure()),
        }
        Ok(())
    }

    /// One element or member of a container, starting at `start`: a record
    /// when the path ends at it, else followed or skipped.
    fn member_value(
        &mut self,
        steps: &[Step],
        follow: bool,
        start: u64,
        cutter: &mut Cutter,
    ) -> Result<(), RedactError> {
        if steps.len() == 1 {
            // The record's wildcard selects every element (and member);
            // each goes to the cutter, so that separators stay right. One
            // the path does not follow is no record, and is never cut.
            self.s.skip_value()?;
            let is_named = follow && self.named.ids.contains(&self.pointer);
            if is_named {
                self.spans.found_once(&mut self.seen, &self.pointer)?;
            }
            let cut = follow && self.named.cuts(is_named);
            self.spans.record(cutter, start..self.s.at, cut);
            Ok(())
        } else if follow {
            self.value(&steps[1..])
        } else {
            self.s.skip_value()
        }
    }
}

/// Valid JSON (checked first) cannot break the scanner's expectations.
fn structure() -> RedactError {
    RedactError::Unreadable(Unreadable(
        "the JSON structure changed while it was read".into(),
    ))
}

/// Bytes of a valid JSON document, with the offset of the next one.
struct Scanner {
    r: BufReader<std::fs::File>,
    at: u64,
    /// A member name's raw bytes, reused.
    name: Vec<u8>,
}

impl Scanner {
    fn peek(&mut self) -> Result<Option<u8>, RedactError> {
        Ok(self
            .r
            .fill_buf()
            .map_err(RedactError::Read)?
            .first()
            .copied())
    }

    fn bump(&mut self, n: usize) {
        self.r.consume(n);
        self.at += n as u64;
    }

    fn next(&mut self) -> Result<Option<u8>, RedactError> {
        let b = self.peek()?;
        if b.is_some() {
            self.bump(1);
        }
        Ok(b)
    }

    fn ws(&mut self) -> Result<(), RedactError> {
        loop {
            let buf = self.r.fill_buf().map_err(RedactError::Read)?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(buf.len());
            let all = n == buf.len();
            self.bump(n);
            if !all {
                return Ok(());
            }
        }
    }

    /// Past the string at the scanner (its opening quote); with `keep`,
    /// its raw bytes up to `keep` of them are appended to `self.name`.
    /// `false` when it was longer than that.
    fn string(&mut self, keep: Option<usize>) -> Result<bool, RedactError> {
        if self.next()? != Some(b'"') {
            return Err(structure());
        }
        let mut fits = true;
        let mut escaped = false;
        loop {
            let buf = self.r.fill_buf().map_err(RedactError::Read)?;
            if buf.is_empty() {
                return Err(structure());
            }
            let mut n = 0;
            let mut closed = false;
            if escaped {
                n = 1;
                escaped = false;
            }
            while n < buf.len() {
                match memchr::memchr2(b'"', b'\\', &buf[n..]) {
                    None => n = buf.len(),
                    Some(i) if buf[n + i] == b'"' => {
                        n += i + 1;
                        closed = true;
                        break;
                    }
                    Some(i) => {
                        if n + i + 1 < buf.len() {
                            n += i + 2;
                        } else {
                            n = buf.len();
                            escaped = true;
                        }
                    }
                }
            }
            if let Some(max) = keep {
                if fits && self.name.len() + n <= max + 1 {
                    self.name.extend_from_slice(&buf[..n]);
                } else {
                    fits = false;
                }
            }
            self.bump(n);
            if closed {
                return Ok(fits);
            }
        }
    }

    /// The member name at the scanner, decoded; `None` (and skipped) when
    /// its raw text is longer than `max` bytes.
    fn member_name(&mut self, max: usize) -> Result<Option<String>, RedactError> {
        self.name.clear();
        self.name.push(b'"');
        if !self.string(Some(max))? {
            return Ok(None);
        }
        // The raw bytes with their quotes are a JSON string; serde_json
        // decodes its escapes as the extractors' parser did.
        serde_json::from_slice::<String>(&self.name)
            .map(Some)
            .map_err(|_| structure())
    }

    /// Past the value at the scanner (whitespace skipped), iteratively.
    fn skip_value(&mut self) -> Result<(), RedactError> {
        match self.peek()? {
            Some(b'"') => self.string(None).map(|_| ()),
            Some(b'[' | b'{') => {
                let mut depth = 0u64;
                loop {
                    let buf = self.r.fill_buf().map_err(RedactError::Read)?;
                    if buf.is_empty() {
                        return Err(structure());
                    }
                    let mut n = 0;
                    let mut string = false;
                    let mut done = false;
                    for b in buf {
                        match b {
                            b'"' => {
                                string = true;
                                break;
                            }
                            b'[' | b'{' => depth += 1,
                            b']' | b'}' => {
                                depth -= 1;
                                if depth == 0 {
                                    n += 1;
                                    done = true;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        n += 1;
                    }
                    self.bump(n);
                    if done {
                        return Ok(());
                    }
                    if string {
                        self.string(None)?;
                    }
                }
            }
            Some(_) => loop {
                // A number, true, false or null: up to a delimiter.
                let buf = self.r.fill_buf().map_err(RedactError::Read)?;
                if buf.is_empty() {
                    return Ok(());
                }
                let n = buf
                    .iter()
                    .position(|b| matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(buf.len());
                let all = n == buf.len();
                self.bump(n);
                if !all {
                    return Ok(());
                }
            },
            None => Err(structure()),
        }
    }
}

#[cfg(test)]
mod tests {

    use crate::apply::redact::RedactError;
    use crate::config::ContentKind;

    use crate::apply::redact::test_support::links;

    /// The shared redaction, and the result must still be JSON.
    fn redacted(kind: &ContentKind, text: &[u8], ids: &[&str]) -> Result<Vec<u8>, RedactError> {
        let out = crate::apply::redact::test_support::redacted(kind, text, ids)?;
        serde_json::from_slice::<serde::de::IgnoredAny>(
            out.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&out),
        )
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
        Ok(out)
    }

    fn keys(kind: &ContentKind, bytes: &[u8]) -> Vec<(String, String)> {
        links(kind, bytes)
            .into_iter()
            .map(|f| (f.key, f.record.unwrap()))
            .collect()
    }

    #[test]
    fn pretty_printed_elements_keep_their_formatting() {
        let kind = ContentKind::json("$.records[*].lead.id", Some("$.records[*]")).unwrap();
        let text = b"{\n  \"records\": [\n    {\"lead\": {\"id\": 1}},\n    {\n      \"lead\": {\"id\": 2}\n    },\n    {\"lead\": {\"id\": 3}}\n  ],\n  \"n\": 3\n}\n";
        assert_eq!(
            keys(&kind, text),
            [
                ("1", "/records/0"),
                ("2", "/records/1"),
                ("3", "/records/2")
            ]
            .map(|(k, r)| (k.to_string(), r.to_string()))
        );
        let r = |ids: &[&str]| String::from_utf8(redacted(&kind, text, ids).unwrap()).unwrap();
        assert_eq!(
            r(&["/records/0"]),
            "{\n  \"records\": [\n    {\n      \"lead\": {\"id\": 2}\n    },\n    {\"lead\": {\"id\": 3}}\n  ],\n  \"n\": 3\n}\n"
        );
        assert_eq!(
            r(&["/records/1"]),
            "{\n  \"records\": [\n    {\"lead\": {\"id\": 1}},\n    {\"lead\": {\"id\": 3}}\n  ],\n  \"n\": 3\n}\n"
        );
        assert_eq!(
            r(&["/records/2"]),
            "{\n  \"records\": [\n    {\"lead\": {\"id\": 1}},\n    {\n      \"lead\": {\"id\": 2}\n    }\n  ],\n  \"n\": 3\n}\n"
        );
        assert_eq!(
            r(&["/records/0", "/records/1", "/records/2"]),
            "{\n  \"records\": [\n    \n  ],\n  \"n\": 3\n}\n"
        );
    }

    #[test]
    fn escaped_strings_and_deep_nesting_around_the_records() {
        // Strings that look like structure, escapes of quotes and
        // backslashes, escaped member names, and records deep inside
        // arrays and objects nested 60 levels around them.
        let deep_open = "[{\"x\":".repeat(30);
        let deep_close = "}]".repeat(30);
        let text = format!(
            "\u{feff}{{\"a\\\"]}}\": \"[{{\\\"\", \"b\\\\\": [\"\\\\\"], \"wrap\": {deep_open}{{\"b\\u0061tch\": {{\"records\": [\
             {{\"id\": \"k\\\"1\", \"s\": \"}}],[{{\"}},\
             {{\"id\": \"k2\", \"t\": {deep_open}\"\\u00e9\\\\\"{deep_close}}},\
             {{\"note\": \"no id\"}},\
             {{\"id\": \"k4\"}}]}}}}{deep_close}}}"
        );
        let path = format!("$.wrap{}.batch.records[*].id", "[0].x".repeat(30));
        let record = format!("$.wrap{}['batch'].records[*]", "[0].x".repeat(30));
        let kind = ContentKind::json(&path, Some(&record)).unwrap();
        let found = keys(&kind, text.as_bytes());
        let prefix = format!("/wrap{}/batch/records", "/0/x".repeat(30));
        assert_eq!(
            found,
            vec![
                ("k\"1".to_string(), format!("{prefix}/0")),
                ("k2".to_string(), format!("{prefix}/1")),
                ("k4".to_string(), format!("{prefix}/3")),
            ]
        );
        for remove in [
            vec![0],
            vec![1],
            vec![3],
            vec![0, 1],
            vec![1, 3],
            vec![0, 1, 2, 3],
        ] {
            let ids: Vec<String> = remove.iter().map(|i| format!("{prefix}/{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
            let out = redacted(&kind, text.as_bytes(), &ids).unwrap();
            let left: Vec<(String, String)> = keys(&kind, &out);
            // Removing element i shifts the pointers of those after it.
            let want: Vec<String> = found
                .iter()
                .filter(|(_, r)| !ids.contains(&r.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(
                left.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
                want,
                "{remove:?}"
            );
            assert!(out.starts_with("\u{feff}{\"a\\\"]}\": \"[{\\\"\"".as_bytes()));
        }
    }

    #[test]
    fn records_of_an_object_are_its_members() {
        let kind = ContentKind::json("$.leads.*.id", Some("$.leads[*]")).unwrap();
        let text = br#"{"leads": {"a/b": {"id": 1}, "c~d": {"id": 2}, "e": {"id": 3}}}"#;
        assert_eq!(
            keys(&kind, text),
            [
                ("1", "/leads/a~1b"),
                ("2", "/leads/c~0d"),
                ("3", "/leads/e")
            ]
            .map(|(k, r)| (k.to_string(), r.to_string()))
        );
        assert_eq!(
            redacted(&kind, text, &["/leads/a~1b", "/leads/e"]).unwrap(),
            br#"{"leads": {"c~d": {"id": 2}}}"#
        );
    }

    #[test]
    fn what_cannot_be_redacted_is_refused_and_nothing_written() {
        let kind = ContentKind::json("$.records[*].id", Some("$.records[*]")).unwrap();
        // Not in the file.
        let err = redacted(&kind, br#"{"records": [{"id": 1}]}"#, &["/records/1"]).unwrap_err();
        assert!(
            matches!(
                err,
                RedactError::Missing {
                    missing: 1,
                    asked: 1
                }
            ),
            "{err}"
        );
        // Not JSON; the message quotes nothing of it.
        let err = redacted(
            &kind,
            br#"{"records": [{"id": "jane@example.com"}"#,
            &["/records/0"],
        )
        .unwrap_err();
        assert!(matches!(err, RedactError::Unreadable(_)), "{err}");
        assert!(!err.to_string().contains("jane"), "{err}");
        // The same id twice: a repeated member name on the record path.
        let err = redacted(
            &kind,
            br#"{"records": [{"id": 1}], "records": [{"id": 2}]}"#,
            &["/records/0"],
        )
        .unwrap_err();
        assert!(matches!(err, RedactError::Ambiguous), "{err}");
        // Deep nesting off the path is skipped; unclosed, it is refused.
        let deep = format!(
            "{{\"x\": {}{}, \"records\": [1]}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(
            redacted(&kind, deep.as_bytes(), &["/records/0"])
                .unwrap()
                .len(),
            deep.len() - 1
        );
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples/bad-input/json");
        for bad in [
            "n_structure_100000_opening_arrays.json",
            "n_structure_open_array_object.json",
            "n_structure_unclosed_array.json",
        ] {
            let text = std::fs::read(samples.join(bad)).unwrap();
            let err = redacted(&kind, &text, &[]).unwrap_err();
            assert!(matches!(err, RedactError::Unreadable(_)), "{bad}: {err}");
        }
        // Implementation-defined: an invalid UTF-8 byte in a string off the
        // path is skipped by the extractor, and copied here as it was.
        let text = std::fs::read(samples.join("i_string_invalid_utf-8.json")).unwrap();
        assert_eq!(redacted(&kind, &text, &[]).unwrap(), text);
    }

    #[test]
    fn every_salesforce_tree_record_can_go() {
        // The real sObject tree samples: remove every other record, and
        // each kept record's bytes are in the output as they were.
        let kind =
            ContentKind::json("$.records[*].attributes.referenceId", Some("$.records[*]")).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples/payloads/json");
        for name in [
            "apex-recipes-Accounts.json",
            "apex-recipes-Contacts.json",
            "apex-recipes-Opportunities.json",
        ] {
            let text = std::fs::read(dir.join(name)).unwrap();
            let found = keys(&kind, &text);
            assert!(found.len() > 10, "{name}");
            let ids: Vec<&str> = found.iter().step_by(2).map(|(_, r)| r.as_str()).collect();
            let out = redacted(&kind, &text, &ids).unwrap();
            let kept: Vec<String> = found
                .iter()
                .skip(1)
                .step_by(2)
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(
                keys(&kind, &out)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>(),
                kept,
                "{name}"
            );
            let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
            let after: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let want: Vec<&serde_json::Value> = value["records"]
                .as_array()
                .unwrap()
                .iter()
                .skip(1)
                .step_by(2)
                .collect();
            let got: Vec<&serde_json::Value> =
                after["records"].as_array().unwrap().iter().collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
