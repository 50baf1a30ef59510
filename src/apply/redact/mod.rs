//! Redaction: a payload rewritten without some of its records, every other
//! byte kept as it was. This module owns the engine, pure over a local spool
//! file of the object: it reads the file once to find the byte spans of the
//! records to remove (parsing it as the rule's extractor does, with the same
//! record ids), then once more to copy everything outside those spans. The
//! store, the journal, the atomic replacement and the re-index are apply's.
//!
//! The same engine runs the other way for a subject's access export:
//! [`extract`] keeps only the named records and removes every other one,
//! with the same spans and separators, so that the envelope (a CSV header,
//! a JSON document around its record array, an XML prolog and root) stays
//! byte for byte around the subject's own records.
//!
//! What a record is comes from the rule (`config::ContentKind`): a CSV row
//! (`csv.rs`), a JSON element of the rule's `record` path (`json.rs`), an
//! XML element of its `record` path (`xml.rs`). Memory is bounded whatever
//! the file's size: a pass holds its buffers and the open path, plus a span
//! and an id per record to remove; a CSV row, a JSON record or an XML record
//! is never held whole (an XML text or comment node outside the records is
//! one quick-xml event).
//!
//! Architecture invariant: the engine only removes whole records, those
//! named by the caller (or, extracting, all but those), and refuses
//! (writing nothing) when any named record is not in the file, when the
//! file does not parse, or when the rule has no records.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::ops::Range;

use crate::config::ContentKind;
use crate::index::extract::Unreadable;

mod csv;
mod json;
mod xml;

/// What a redaction (or an extraction) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Redacted {
    /// Records cut: the named ones (redact), every other one (extract).
    pub records_removed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Why a file was not redacted. No variant carries content or a record id
/// (a JSON pointer may hold a member name from the file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// A JSON or XML rule without `record`: its links are whole-file links.
    #[error(
        "the rule has no records (a JSON or XML rule without `record` links whole files), so nothing can be redacted by it"
    )]
    NoRecords,
    /// The file does not parse as the rule reads it.
    #[error("the file cannot be redacted: {0}")]
    Unreadable(#[from] Unreadable),
    /// Records to remove that the file does not hold (it changed since it
    /// was indexed, or the ids are not the rule's).
    #[error(
        "{missing} of the {asked} records to remove are not in the file; re-index and plan again"
    )]
    Missing { missing: usize, asked: usize },
    /// Records to keep (an extraction) that the file does not hold.
    #[error(
        "{missing} of the {asked} records to keep are not in the file; re-index and export again"
    )]
    MissingToKeep { missing: usize, asked: usize },
    /// A record named (to remove or to keep) occurs twice in the file (a
    /// member name repeats along the record path): which one was meant?
    #[error(
        "a record named occurs twice in the file (a member name repeats along the record path), so it is neither redacted nor extracted"
    )]
    Ambiguous,
    #[error("reading the spool file failed")]
    Read(#[source] std::io::Error),
    /// The output writer failed; what it holds is not to be used.
    #[error("writing the redacted copy failed")]
    Write(#[source] std::io::Error),
}

/// Writes `input` to `out` without the records whose ids (as the rule's
/// extractor writes them: `row 7`, `/records/3`, `record 0`) are in
/// `remove`. On an error nothing usable was written: every check is made
/// before the first byte goes out, except the I/O of the copy itself.
pub fn redact(
    kind: &ContentKind,
    input: &File,
    out: &mut dyn Write,
    remove: &HashSet<String>,
) -> Result<Redacted, RedactError> {
    cut(kind, input, out, Named::remove(remove))
}

/// Writes `input` to `out` with only the records whose ids are in `keep`:
/// every other record of the rule is removed as [`redact`] removes it
/// (with the separators that keep the rest reading as before), and every
/// byte outside the records (a CSV header and byte order mark, a JSON
/// envelope, an XML prolog, root and namespaces, comments between records)
/// stays. Refused, with nothing usable written, when a record to keep is
/// not in the file, as `redact` refuses.
pub fn extract(
    kind: &ContentKind,
    input: &File,
    out: &mut dyn Write,
    keep: &HashSet<String>,
) -> Result<Redacted, RedactError> {
    cut(kind, input, out, Named::keep(keep))
}

/// Which records a pass cuts: the named ones, or every other one.
#[derive(Clone, Copy)]
struct Named<'a> {
    ids: &'a HashSet<String>,
    keep: bool,
}

impl<'a> Named<'a> {
    fn remove(ids: &'a HashSet<String>) -> Self {
        Named { ids, keep: false }
    }

    fn keep(ids: &'a HashSet<String>) -> Self {
        Named { ids, keep: true }
    }

    /// Whether a record, named or not, is cut.
    fn cuts(&self, named: bool) -> bool {
        named != self.keep
    }
}

fn cut(
    kind: &ContentKind,
    input: &File,
    out: &mut dyn Write,
    named: Named<'_>,
) -> Result<Redacted, RedactError> {
    let bytes_in = input.metadata().map_err(RedactError::Read)?.len();
    let found = match kind {
        ContentKind::Csv { delimiter, .. } => csv::spans(input, *delimiter, named)?,
        ContentKind::Json {
            record: Some(record),
            ..
        } => json::spans(input, record, named)?,
        ContentKind::Xml(_, Some(record)) => xml::spans(input, record, named)?,
        ContentKind::Json { record: None, .. } | ContentKind::Xml(_, None) => {
            return Err(RedactError::NoRecords);
        }
    };
    let asked = named.ids.len();
    if found.records != asked {
        let missing = asked.saturating_sub(found.records);
        return Err(if named.keep {
            RedactError::MissingToKeep { missing, asked }
        } else {
            RedactError::Missing { missing, asked }
        });
    }
    let bytes_out = copy_without(input, &found.cuts, out)?;
    Ok(Redacted {
        records_removed: found.removed,
        bytes_in,
        bytes_out,
    })
}

/// The spans a format found: what to cut, how many of the named records
/// the file holds, and how many records the cuts cover.
#[derive(Debug, Default)]
struct Spans {
    cuts: Vec<Range<u64>>,
    records: usize,
    removed: u64,
}

impl Spans {
    /// One record of the rule, in document order, to `cutter`: cut or not.
    fn record(&mut self, cutter: &mut Cutter, span: Range<u64>, cut: bool) {
        if cut {
            self.removed += 1;
        }
        cutter.record(span, cut, &mut self.cuts);
    }

    /// Counts a named record whose id cannot repeat (a row number, an
    /// ordinal).
    fn found(&mut self) {
        self.records += 1;
    }

    /// Counts a named record whose id might repeat (a JSON pointer, when a
    /// member name repeats): a second sighting makes the file ambiguous.
    fn found_once(&mut self, seen: &mut HashSet<String>, id: &str) -> Result<(), RedactError> {
        if !seen.insert(id.to_string()) {
            return Err(RedactError::Ambiguous);
        }
        self.records += 1;
        Ok(())
    }
}

/// The buffer every pass reads through.
const BUFFER: usize = 64 * 1024;

/// The spool file opened for a pass, past a UTF-8 byte order mark (which
/// the extractors skip too), and the offset reading starts at.
fn open_past_bom(input: &File) -> Result<(BufReader<File>, u64), RedactError> {
    let mut file = reopen(input)?;
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RedactError::Read(e)),
        }
    }
    let skip = if n == 3 && &head == b"\xef\xbb\xbf" {
        3
    } else {
        0
    };
    file.seek(std::io::SeekFrom::Start(skip))
        .map_err(RedactError::Read)?;
    Ok((BufReader::with_capacity(BUFFER, file), skip))
}

/// The spool for one more pass, from its start. The passes take turns
/// (each is done with the file before the next opens it), so the handles
/// sharing one offset never read at once. (A spool is an open file with
/// no name: a process killed mid-redaction leaves no copy of the records
/// behind.)
fn reopen(input: &File) -> Result<File, RedactError> {
    let mut file = input.try_clone().map_err(RedactError::Read)?;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(RedactError::Read)?;
    Ok(file)
}

/// Copies `input` to `out` except the byte ranges `cuts` (sorted, apart).
fn copy_without(
    input: &File,
    cuts: &[Range<u64>],
    out: &mut dyn Write,
) -> Result<u64, RedactError> {
    let mut r = BufReader::with_capacity(BUFFER, reopen(input)?);
    let mut w = std::io::BufWriter::with_capacity(BUFFER, out);
    let mut at = 0u64;
    let mut written = 0u64;
    for cut in cuts {
        // The formats yield their spans in document order, apart.
        if cut.start < at || cut.end < cut.start {
            return Err(RedactError::Unreadable(Unreadable(
                "record spans overlap (an internal error; nothing was written)".into(),
            )));
        }
        written += copy(&mut r, &mut w, Some(cut.start - at))?;
        let skip = i64::try_from(cut.end - cut.start)
            .map_err(|_| RedactError::Read(std::io::Error::other("a record beyond 8 EiB")))?;
        // Within the buffer when the cut is short: no system call.
        r.seek_relative(skip).map_err(RedactError::Read)?;
        at = cut.end;
    }
    written += copy(&mut r, &mut w, None)?;
    w.flush().map_err(RedactError::Write)?;
    Ok(written)
}

/// Copies `n` bytes (`None`: the rest of the file).
fn copy(
    r: &mut BufReader<File>,
    w: &mut impl Write,
    mut n: Option<u64>,
) -> Result<u64, RedactError> {
    let mut done = 0u64;
    while n != Some(0) {
        let buf = r.fill_buf().map_err(RedactError::Read)?;
        if buf.is_empty() {
            if n.is_none() {
                break;
            }
            return Err(RedactError::Read(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the spool file shrank while it was redacted",
            )));
        }
        let k = n.map_or(buf.len(), |n| {
            buf.len().min(usize::try_from(n).unwrap_or(usize::MAX))
        });
        w.write_all(&buf[..k]).map_err(RedactError::Write)?;
        r.consume(k);
        done += k as u64;
        if let Some(left) = n.as_mut() {
            *left -= k as u64;
        }
    }
    Ok(done)
}

/// Cuts for the records of one container (a CSV file, a JSON array or
/// object, an XML parent), fed each record's span in order: a run of
/// removed records goes with the separators that make the rest read as
/// before. Each kept record keeps the separator that preceded it, except
/// a first kept one after removed ones, which takes the place (and the
/// leading bytes) of the first record. CSV and XML records carry their own
/// separators (a row's line end, an element's leading whitespace), so they
/// cut exactly their span: `Cutter::exact`.
struct Cutter {
    /// Bytes between records belong to the record after them (JSON commas)
    /// rather than being cut only with the record's own span.
    joined: bool,
    prev_end: Option<u64>,
    /// Where the current run of removed records starts, and whether it
    /// starts at the container's first record.
    run: Option<(u64, bool)>,
}

impl Cutter {
    fn joined() -> Cutter {
        Cutter {
            joined: true,
            prev_end: None,
            run: None,
        }
    }

    fn exact() -> Cutter {
        Cutter {
            joined: false,
            prev_end: None,
            run: None,
        }
    }

    fn record(&mut self, span: Range<u64>, remove: bool, cuts: &mut Vec<Range<u64>>) {
        if !self.joined {
            if remove {
                match cuts.last_mut() {
                    Some(last) if last.end == span.start => last.end = span.end,
                    _ => cuts.push(span),
                }
            }
            return;
        }
        if remove {
            if self.run.is_none() {
                self.run = Some(match self.prev_end {
                    None => (span.start, true),
                    Some(end) => (end, false),
                });
            }
        } else if let Some((start, first)) = self.run.take() {
            let end = if first {
                span.start
            } else {
                self.prev_end.unwrap_or(span.start)
            };
            cuts.push(start..end);
        }
        self.prev_end = Some(span.end);
    }

    /// The container closed: a run reaching its last record ends there.
    fn finish(&mut self, cuts: &mut Vec<Range<u64>>) {
        if let (Some((start, _)), Some(end)) = (self.run.take(), self.prev_end) {
            cuts.push(start..end);
        }
        self.prev_end = None;
    }
}

/// What the format engines' tests share: redact bytes through a spool, and
/// read links back with the extractors.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::HashSet;

    use super::{RedactError, extract, redact};
    use crate::config::ContentKind;
    use crate::index::extract::{Found, content};

    /// The links the extractor finds in `bytes`.
    pub fn links(kind: &ContentKind, bytes: &[u8]) -> Vec<Found> {
        content(
            kind,
            Box::new(std::io::Cursor::new(bytes.to_vec())),
            bytes.len() as u64,
            1 << 30,
            1 << 30,
        )
        .unwrap()
    }

    /// `text` without the records `ids`, checking the counts the engine
    /// reports.
    pub fn redacted(kind: &ContentKind, text: &[u8], ids: &[&str]) -> Result<Vec<u8>, RedactError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, text).unwrap();
        let remove: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let r = redact(
            kind,
            &std::fs::File::open(&path).unwrap(),
            &mut out,
            &remove,
        )?;
        assert_eq!(r.records_removed, ids.len() as u64);
        assert_eq!(
            (r.bytes_in, r.bytes_out),
            (text.len() as u64, out.len() as u64)
        );
        Ok(out)
    }

    /// `text` with only the records `ids`, checking the counts the engine
    /// reports (`removed`: how many other records went).
    pub fn extracted(
        kind: &ContentKind,
        text: &[u8],
        ids: &[&str],
        removed: u64,
    ) -> Result<Vec<u8>, RedactError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, text).unwrap();
        let keep: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let r = extract(kind, &std::fs::File::open(&path).unwrap(), &mut out, &keep)?;
        assert_eq!(r.records_removed, removed);
        assert_eq!(
            (r.bytes_in, r.bytes_out),
            (text.len() as u64, out.len() as u64)
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, spans: &[(Range<u64>, bool)]) -> String {
        let mut cuts = Vec::new();
        let mut c = Cutter::joined();
        for (s, r) in spans {
            c.record(s.clone(), *r, &mut cuts);
        }
        c.finish(&mut cuts);
        let mut out = String::new();
        let mut at = 0;
        for cut in cuts {
            out.push_str(&text[at..cut.start as usize]);
            at = cut.end as usize;
        }
        out.push_str(&text[at..]);
        out
    }

    #[test]
    fn joined_runs_take_their_separators() {
        // [ a , b , c ]: spans of a, b, c.
        let text = "[ a , b , c ]";
        let s = [2..3u64, 6..7, 10..11];
        let run = |removed: [bool; 3]| {
            apply(
                text,
                &s.iter()
                    .cloned()
                    .zip(removed)
                    .collect::<Vec<(Range<u64>, bool)>>(),
            )
        };
        assert_eq!(run([false, false, false]), text);
        assert_eq!(run([true, false, false]), "[ b , c ]");
        assert_eq!(run([false, true, false]), "[ a , c ]");
        assert_eq!(run([false, false, true]), "[ a , b ]");
        assert_eq!(run([true, true, false]), "[ c ]");
        assert_eq!(run([false, true, true]), "[ a ]");
        assert_eq!(run([true, false, true]), "[ b ]");
        assert_eq!(run([true, true, true]), "[  ]");
    }

    use super::test_support::{extracted, links};

    /// The keys the rule links in `bytes`, in order.
    fn keys(kind: &ContentKind, bytes: &[u8]) -> Vec<String> {
        links(kind, bytes).into_iter().map(|f| f.key).collect()
    }

    #[test]
    fn extract_keeps_the_csv_header_and_exactly_the_named_rows() {
        // BOM, CRLF, a quoted line break and a quoted delimiter; rows 3 and
        // 5 of rows 2..=6 kept.
        let text = b"\xef\xbb\xbfLeadId,Name,Note\r\n\
1,Ann,plain\r\n\
2,\"Doe, Jane\",\"two\r\nlines\"\r\n\
3,Bob,x\r\n\
4,\"Max \"\"M\"\"\",\"a\nb\"\r\n\
5,Eve,last";
        let kind = ContentKind::Csv {
            column: "LeadId".into(),
            delimiter: None,
        };
        let out = extracted(&kind, text, &["row 3", "row 5"], 3).unwrap();
        assert_eq!(
            out,
            b"\xef\xbb\xbfLeadId,Name,Note\r\n\
2,\"Doe, Jane\",\"two\r\nlines\"\r\n\
4,\"Max \"\"M\"\"\",\"a\nb\"\r\n"
        );
        assert_eq!(keys(&kind, &out), ["2", "4"]);
        // The last row, without its line end; the header alone stays.
        let out = extracted(&kind, text, &["row 6"], 4).unwrap();
        assert_eq!(out, b"\xef\xbb\xbfLeadId,Name,Note\r\n5,Eve,last");
    }

    #[test]
    fn extract_keeps_the_json_envelope_around_the_named_element() {
        let text = br#"{
  "meta": {"batch": "2020-01", "records": "not these"},
  "data": {
    "leads": [
      {"lead": {"id": 1}, "email": "ann@example.com"},
      {"lead": {"id": 2}, "email": "jane@example.com", "tags": ["a", "]"]},
      {"lead": {"id": 3}, "email": "max@example.com"}
    ],
    "count": 3
  }
}
"#;
        let kind = ContentKind::json("$.data.leads[*].lead.id", Some("$.data.leads[*]")).unwrap();
        let r = |ids: &[&str]| String::from_utf8(extracted(&kind, text, ids, 2).unwrap()).unwrap();
        let middle = r(&["/data/leads/1"]);
        assert_eq!(
            middle,
            r#"{
  "meta": {"batch": "2020-01", "records": "not these"},
  "data": {
    "leads": [
      {"lead": {"id": 2}, "email": "jane@example.com", "tags": ["a", "]"]}
    ],
    "count": 3
  }
}
"#
        );
        let first = r(&["/data/leads/0"]);
        let last = r(&["/data/leads/2"]);
        for (out, key) in [(&middle, "2"), (&first, "1"), (&last, "3")] {
            let v: serde_json::Value = serde_json::from_str(out).unwrap();
            assert_eq!(v["meta"]["batch"], "2020-01");
            assert_eq!(v["data"]["leads"].as_array().unwrap().len(), 1);
            assert_eq!(keys(&kind, out.as_bytes()), [key]);
        }
    }

    #[test]
    fn extract_keeps_the_xml_prolog_root_and_namespaces() {
        let text = concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<!-- nightly batch -->\n",
            "<b:Batch xmlns:b=\"urn:example:batch\" xmlns=\"urn:d\">\n",
            "  <b:Lead><b:Id>1</b:Id><Mail>ann@example.com</Mail></b:Lead>\n",
            "  <!-- between -->\n",
            "  <b:Lead><b:Id>2</b:Id><Mail>jane@example.com</Mail><Co>A &amp; B</Co></b:Lead>\n",
            "  <b:Lead><b:Id>3</b:Id></b:Lead>\n",
            "</b:Batch>\n",
        );
        let kind = ContentKind::xml("/Batch/Lead/Id", Some("/Batch/Lead")).unwrap();
        let out = extracted(&kind, text.as_bytes(), &["record 1"], 2).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                "<!-- nightly batch -->\n",
                "<b:Batch xmlns:b=\"urn:example:batch\" xmlns=\"urn:d\">\n",
                "  <!-- between -->\n",
                "  <b:Lead><b:Id>2</b:Id><Mail>jane@example.com</Mail><Co>A &amp; B</Co></b:Lead>\n",
                "</b:Batch>\n",
            )
        );
        assert_eq!(keys(&kind, &out), ["2"]);
    }

    #[test]
    fn extract_refuses_records_that_are_not_in_the_file() {
        let csv = ContentKind::Csv {
            column: "LeadId".into(),
            delimiter: None,
        };
        let json = ContentKind::json("$.r[*].id", Some("$.r[*]")).unwrap();
        let xml = ContentKind::xml("/a/L/Id", Some("/a/L")).unwrap();
        let cases: [(&ContentKind, &[u8], &[&str]); 6] = [
            (&csv, b"LeadId\n1\n2\n", &["row 4"]),
            (&csv, b"LeadId\n1\n2\n", &["row 2", "row 1"]),
            (&json, br#"{"r": [{"id": 1}]}"#, &["/r/0", "/r/1"]),
            (&json, br#"{"r": [{"id": 1}]}"#, &["/r/00"]),
            (&xml, b"<a><L><Id>1</Id></L></a>", &["record 1"]),
            (&xml, b"<a><L><Id>1</Id></L></a>", &["row 2"]),
        ];
        for (kind, text, ids) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in");
            std::fs::write(&path, text).unwrap();
            let keep: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
            let mut out = Vec::new();
            let err =
                extract(kind, &std::fs::File::open(&path).unwrap(), &mut out, &keep).unwrap_err();
            assert!(
                matches!(err, RedactError::MissingToKeep { asked, .. } if asked == ids.len()),
                "{ids:?}: {err}"
            );
            assert!(out.is_empty(), "{ids:?}: nothing written");
        }
        // Unreadable: refused the same, and the message quotes nothing.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, br#"{"r": [{"id": "jane@example.com"}"#).unwrap();
        let keep: HashSet<String> = ["/r/0".to_string()].into();
        let mut out = Vec::new();
        let err =
            extract(&json, &std::fs::File::open(&path).unwrap(), &mut out, &keep).unwrap_err();
        assert!(matches!(err, RedactError::Unreadable(_)), "{err}");
        assert!(!err.to_string().contains("jane") && out.is_empty());
    }

    #[test]
    fn extract_is_redact_of_every_other_record() {
        // The sObject tree samples: keeping every third record is removing
        // the others, byte for byte.
        let kind =
            ContentKind::json("$.records[*].attributes.referenceId", Some("$.records[*]")).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples/payloads/json/apex-recipes-Contacts.json");
        let text = std::fs::read(&path).unwrap();
        let found = links(&kind, &text);
        let ids: Vec<&str> = found.iter().filter_map(|f| f.record.as_deref()).collect();
        let keep: Vec<&str> = ids.iter().copied().step_by(3).collect();
        let others: Vec<&str> = ids.iter().copied().filter(|i| !keep.contains(i)).collect();
        let out = extracted(&kind, &text, &keep, others.len() as u64).unwrap();
        let want = super::test_support::redacted(&kind, &text, &others).unwrap();
        assert_eq!(out, want);
        assert_eq!(keys(&kind, &out).len(), keep.len());
    }

    #[test]
    fn a_rule_without_records_redacts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, br#"{"lead": {"id": 1}}"#).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let kind = ContentKind::json("$.lead.id", None).unwrap();
        let mut out = Vec::new();
        let err = redact(&kind, &file, &mut out, &HashSet::new()).unwrap_err();
        assert!(matches!(err, RedactError::NoRecords), "{err}");
        assert!(out.is_empty());
        let kind = ContentKind::xml("/Lead/Id", None).unwrap();
        let err = redact(&kind, &file, &mut out, &HashSet::new()).unwrap_err();
        assert!(matches!(err, RedactError::NoRecords), "{err}");
    }
}
