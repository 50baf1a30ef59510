//! Redaction: a payload rewritten without some of its records, every other
//! byte kept as it was. This module owns the engine, pure over a local spool
//! file of the object: it reads the file once to find the byte spans of the
//! records to remove (parsing it as the rule's extractor does, with the same
//! record ids), then once more to copy everything outside those spans. The
//! store, the journal, the atomic replacement and the re-index are apply's.
//!
//! What a record is comes from the rule (`config::ContentKind`): a CSV row
//! (`csv.rs`), a JSON element of the rule's `record` path (`json.rs`), an
//! XML element of its `record` path (`xml.rs`). Memory is bounded whatever
//! the file's size: a pass holds its buffers and the open path, plus a span
//! and an id per record to remove; a CSV row, a JSON record or an XML record
//! is never held whole (an XML text or comment node outside the records is
//! one quick-xml event).
//!
//! Architecture invariant: the engine only removes whole records named by
//! the caller, and refuses (writing nothing) when any of them is not in the
//! file, when the file does not parse, or when the rule has no records.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::ops::Range;
use std::path::Path;

use crate::config::ContentKind;
use crate::index::extract::Unreadable;

mod csv;
mod json;
mod xml;

/// What a redaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Redacted {
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
    /// A record to remove is named twice in the file (a member name repeats
    /// along the record path): which one did the plan mean?
    #[error(
        "a record to remove occurs twice in the file (a member name repeats along the record path), so it is not redacted"
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
    input: &Path,
    out: &mut dyn Write,
    remove: &HashSet<String>,
) -> Result<Redacted, RedactError> {
    let bytes_in = std::fs::metadata(input).map_err(RedactError::Read)?.len();
    let found = match kind {
        ContentKind::Csv { delimiter, .. } => csv::spans(input, *delimiter, remove)?,
        ContentKind::Json {
            record: Some(record),
            ..
        } => json::spans(input, record, remove)?,
        ContentKind::Xml(_, Some(record)) => xml::spans(input, record, remove)?,
        ContentKind::Json { record: None, .. } | ContentKind::Xml(_, None) => {
            return Err(RedactError::NoRecords);
        }
    };
    if found.records != remove.len() {
        return Err(RedactError::Missing {
            missing: remove.len().saturating_sub(found.records),
            asked: remove.len(),
        });
    }
    let bytes_out = copy_without(input, &found.cuts, out)?;
    Ok(Redacted {
        records_removed: found.records as u64,
        bytes_in,
        bytes_out,
    })
}

/// The spans a format found: what to cut, and how many of the records to
/// remove they cover.
#[derive(Debug, Default)]
struct Spans {
    cuts: Vec<Range<u64>>,
    records: usize,
}

impl Spans {
    /// Counts a record to remove whose id cannot repeat (a row number, an
    /// ordinal).
    fn found(&mut self) {
        self.records += 1;
    }

    /// Counts a record to remove whose id might repeat (a JSON pointer, when
    /// a member name repeats): a second sighting makes the file ambiguous.
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
fn open_past_bom(input: &Path) -> Result<(BufReader<File>, u64), RedactError> {
    let mut file = File::open(input).map_err(RedactError::Read)?;
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

/// Copies `input` to `out` except the byte ranges `cuts` (sorted, apart).
fn copy_without(
    input: &Path,
    cuts: &[Range<u64>],
    out: &mut dyn Write,
) -> Result<u64, RedactError> {
    let mut r = BufReader::with_capacity(BUFFER, File::open(input).map_err(RedactError::Read)?);
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

    use super::{RedactError, redact};
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
        let r = redact(kind, &path, &mut out, &remove)?;
        assert_eq!(r.records_removed, ids.len() as u64);
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

    #[test]
    fn a_rule_without_records_redacts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, br#"{"lead": {"id": 1}}"#).unwrap();
        let kind = ContentKind::json("$.lead.id", None).unwrap();
        let mut out = Vec::new();
        let err = redact(&kind, &path, &mut out, &HashSet::new()).unwrap_err();
        assert!(matches!(err, RedactError::NoRecords), "{err}");
        assert!(out.is_empty());
        let kind = ContentKind::xml("/Lead/Id", None).unwrap();
        let err = redact(&kind, &path, &mut out, &HashSet::new()).unwrap_err();
        assert!(matches!(err, RedactError::NoRecords), "{err}");
    }
}
