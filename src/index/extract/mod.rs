//! Content rules: entity keys found inside JSON, XML and CSV payloads. Each
//! extractor reads from a stream with a byte budget and reports the location
//! of each value (JSON pointer, element index, CSV row). Errors name what is
//! wrong with the file, never what is in it.
//!
//! This module owns what the formats share: the answer ([`Found`]) and the
//! refusal ([`Unreadable`]), the links cap ([`MAX_LINKS`]), the line guard,
//! the JSON error classes (both JSON evaluators use them), and the dispatch
//! of one content rule over one object ([`content`]: from memory or as a
//! stream). The formats live below it and import only from here and
//! downward: `json` (whole-document JSONPath, and the choice of evaluator),
//! `jsonstream` (the streaming subset), `xml`, `csv`.

use std::io::Read;

mod csv;
mod json;
pub mod jsonstream;
pub(crate) mod xml;

pub use self::csv::csv;
pub(crate) use self::csv::{first_line as csv_first_line, sniff_delimiter};
pub use self::json::{json, json_whole};
pub use self::xml::xml;

/// A key found in a file, and where. Under a rule with records, `record` is
/// `Some` for every value (the record is a proper prefix of the path, so
/// every value sits in one): a CSV row (`row N`, as its location), a JSON
/// record's pointer (`/records/3`, the same from both JSON evaluators), an
/// XML record's ordinal among the elements matching the record path
/// (`record 0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub key: String,
    pub location: String,
    /// The record the key sits in, when the rule names one (a CSV row; the
    /// element of a JSON or XML rule's `record`): what a redaction removes.
    /// `None`: the key links the whole file.
    pub record: Option<String>,
}

/// Why a file could not be read by a content rule. The text names the
/// problem, never the content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// The category and position of a JSON error, without the offending text.
pub fn json_error_class(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => {
            // Our own budget error or an I/O error: neither quotes content.
            return format!("read failed: {e}");
        }
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "truncated",
    };
    if e.to_string().contains(TOO_MANY) {
        return TOO_MANY.to_string();
    }
    if e.to_string().contains("duplicate member name") {
        return format!("a member name repeats in one object at line {}", e.line());
    }
    if e.to_string().contains("recursion limit") {
        return format!("nested deeper than 128 levels at line {}", e.line());
    }
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// At most this many links from one object: beyond it the object is
/// unreadable (a hostile file must not turn into unbounded memory).
pub const MAX_LINKS: usize = 100_000;
pub(crate) const TOO_MANY: &str = "more than 100000 links in one object";

fn check_room(out: &[Found]) -> Result<(), Unreadable> {
    if out.len() >= MAX_LINKS {
        Err(Unreadable(TOO_MANY.into()))
    } else {
        Ok(())
    }
}

/// Objects up to this size are read into memory and parsed from a slice,
/// which is several times faster than parsing from a stream; larger ones
/// stream in bounded memory. (The store reads them whole up to the same
/// size, so the bound lives with the stores.)
pub use crate::store::SLURP_MAX;

/// Where an object's content comes from: bytes the store read whole (a
/// group's small objects, `read_batch`), or a reader.
pub enum Source {
    Bytes(std::sync::Arc<Vec<u8>>),
    Reader(Box<dyn Read + Send>),
}

/// Runs one content rule over an object's content: bytes already read are
/// parsed where they are (never copied), a reader as [`content`] reads it.
pub fn content_of(
    kind: &crate::config::ContentKind,
    source: Source,
    size: u64,
    max_whole: u64,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    match source {
        Source::Bytes(bytes) if bytes.len() as u64 <= SLURP_MAX => {
            // A UTF-8 byte order mark (Windows exports) is not content.
            let content = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
            from_slice(kind, content, max_whole, max_line)
        }
        // (Larger than a parse from memory may be: streamed from them.)
        Source::Bytes(bytes) => {
            let reader = Box::new(std::io::Cursor::new(Shared(bytes)));
            stream(kind, skip_bom(reader)?, max_whole, max_line)
        }
        Source::Reader(reader) => content(kind, reader, size, max_whole, max_line),
    }
}

/// Shared bytes as a cursor reads them.
struct Shared(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Runs one content rule over an object: from memory when it is small, as a
/// stream when it is not. `size` is the listed size (a hint).
pub fn content(
    kind: &crate::config::ContentKind,
    mut reader: Box<dyn Read + Send>,
    size: u64,
    max_whole: u64,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    if size <= SLURP_MAX {
        // Small objects are read into this thread's buffer, used again for
        // the next object (a fresh allocation per object cost the kernel's
        // page zeroing as much as parsing it).
        let mut bytes = SLURP.with(|b| std::mem::take(&mut *b.borrow_mut()));
        bytes.clear();
        bytes.reserve(size as usize + 1);
        (&mut reader)
            .take(SLURP_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Unreadable(format!("read failed: {e}")))?;
        if bytes.len() as u64 <= SLURP_MAX {
            // A UTF-8 byte order mark (Windows exports) is not content.
            let content = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
            let found = from_slice(kind, content, max_whole, max_line);
            if bytes.capacity() <= REUSE_MAX {
                SLURP.with(|b| *b.borrow_mut() = bytes);
            }
            return found;
        }
        // It grew since it was listed: stream what was read and the rest.
        let rest: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(bytes).chain(reader));
        return stream(kind, skip_bom(rest)?, max_whole, max_line);
    }
    stream(kind, skip_bom(reader)?, max_whole, max_line)
}

thread_local! {
    /// The buffer small objects are read into, one per parsing thread.
    static SLURP: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer that grew past this (a large object) is let go, not kept.
const REUSE_MAX: usize = 1 << 20;

/// Runs one content rule over an object held in memory (a byte order mark
/// already dropped).
fn from_slice(
    kind: &crate::config::ContentKind,
    bytes: &[u8],
    max_whole: u64,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    use crate::config::ContentKind;
    let seps: [u8; 2] = match kind {
        ContentKind::Json { .. } => [b'\n', b','],
        ContentKind::Xml(..) => [b'>', b'\n'],
        ContentKind::Csv { .. } => [b'\n', b'\n'],
    };
    // (Most files are shorter than a line may be: nothing to scan.)
    if bytes.len() as u64 > max_line && longest_line(bytes, seps) > max_line {
        return Err(Unreadable(format!(
            "a line or value longer than technical.max_line_bytes ({max_line})"
        )));
    }
    match kind {
        ContentKind::Json {
            steps: Some(steps),
            record,
            ..
        } => jsonstream::extract_with(
            serde_json::Deserializer::from_slice(bytes),
            steps,
            record_depth(record),
        ),
        ContentKind::Json {
            path,
            steps: None,
            record,
        } => {
            if bytes.len() as u64 > max_whole {
                return Err(Unreadable(format!(
                    "larger than technical.max_content_bytes ({max_whole})"
                )));
            }
            json::json_whole_with(
                serde_json::Deserializer::from_slice(bytes),
                path,
                record_depth(record),
            )
        }
        ContentKind::Xml(p, record) => xml::xml_from_slice(bytes, p, record.as_ref()),
        ContentKind::Csv { column, delimiter } => {
            self::csv::csv_from_slice(bytes, column, *delimiter)
        }
    }
}

/// Drops a leading UTF-8 byte order mark from a stream.
fn skip_bom(mut reader: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>, Unreadable> {
    let mut head = Vec::with_capacity(3);
    (&mut reader)
        .take(3)
        .read_to_end(&mut head)
        .map_err(|e| Unreadable(format!("read failed: {e}")))?;
    if head == b"\xef\xbb\xbf" {
        Ok(reader)
    } else {
        Ok(Box::new(std::io::Cursor::new(head).chain(reader)))
    }
}

fn stream(
    kind: &crate::config::ContentKind,
    reader: Box<dyn Read + Send>,
    max_whole: u64,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    use crate::config::ContentKind;
    match kind {
        ContentKind::Json {
            path,
            steps,
            record,
        } => json(
            reader,
            path,
            steps.as_deref(),
            record_depth(record),
            max_whole,
            max_line,
        ),
        ContentKind::Xml(p, record) => xml(reader, p, record.as_ref(), max_line),
        ContentKind::Csv { column, delimiter } => csv(reader, column, *delimiter, max_line),
    }
}

/// How many steps of a JSON rule's path lead to its record.
fn record_depth(record: &Option<crate::config::rules::JsonRecord>) -> Option<usize> {
    record.as_ref().map(|r| r.steps.len())
}

/// The longest run of bytes without either separator.
fn longest_line(bytes: &[u8], seps: [u8; 2]) -> u64 {
    let mut longest = 0;
    let mut start = 0;
    for at in memchr::memchr2_iter(seps[0], seps[1], bytes) {
        longest = longest.max(at - start);
        start = at + 1;
    }
    longest.max(bytes.len() - start) as u64
}

/// Stops a stream whose "lines" grow past `max` bytes: a gigabyte line (or
/// a gigabyte text node) must cost bounded memory, not all of it. Any of the
/// two separator bytes ends a line.
pub struct LineGuard<R> {
    inner: R,
    max: u64,
    since: u64,
    seps: [u8; 2],
}

impl<R> LineGuard<R> {
    pub fn new(inner: R, max: u64, sep: u8, sep2: u8) -> Self {
        LineGuard {
            inner,
            max,
            since: 0,
            seps: [sep, sep2],
        }
    }
}

impl<R: Read> Read for LineGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for b in &buf[..n] {
            if *b == self.seps[0] || *b == self.seps[1] {
                self.since = 0;
            } else {
                self.since += 1;
                if self.since > self.max {
                    return Err(std::io::Error::other(format!(
                        "a line or value longer than technical.max_line_bytes ({})",
                        self.max
                    )));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects read one after another on one thread share its buffer: a
    /// short object after a long one yields only its own rows, and one
    /// with a byte order mark after one without is read without it.
    #[test]
    fn objects_read_in_turn_on_one_thread_yield_only_their_own_links() {
        let kind = crate::config::ContentKind::Csv {
            column: "LeadId".into(),
            delimiter: None,
        };
        let run = |doc: &[u8]| {
            let keys: Vec<String> = content(
                &kind,
                Box::new(std::io::Cursor::new(doc.to_vec())),
                doc.len() as u64,
                1 << 30,
                1 << 20,
            )
            .unwrap()
            .into_iter()
            .map(|f| f.key)
            .collect();
            keys
        };
        let mut long = b"LeadId;Name\n".to_vec();
        for i in 0..2000 {
            long.extend(format!("{i};name {i}\n").as_bytes());
        }
        assert_eq!(run(&long).len(), 2000);
        assert_eq!(run(b"\xef\xbb\xbfLeadId;Name\n77;x\n"), ["77"]);
        assert_eq!(run(b"LeadId\n5"), ["5"]);
        assert_eq!(run(&long).len(), 2000);
        // A buffer past the bound is let go, and the next object is read
        // into a fresh one all the same.
        let mut huge = b"LeadId;Pad\n".to_vec();
        let mut rows = 0;
        while huge.len() <= REUSE_MAX {
            huge.extend(format!("7;{}\n", "x".repeat(97)).as_bytes());
            rows += 1;
        }
        assert_eq!(run(&huge).len(), rows);
        assert_eq!(run(b"LeadId\n6\n"), ["6"]);
    }

    #[test]
    fn longest_line_is_the_longest_run_between_separators() {
        let naive = |b: &[u8], s: [u8; 2]| {
            b.split(|c| *c == s[0] || *c == s[1])
                .map(|l| l.len() as u64)
                .max()
                .unwrap_or(0)
        };
        for (text, seps) in [
            (&b""[..], [b'\n', b',']),
            (b"abc", [b'\n', b',']),
            (b"a,bc\ndefg,", [b'\n', b',']),
            (b"<a><bb>cccc</bb>\n", [b'>', b'\n']),
            (b"\n\n\n", [b'\n', b'\n']),
            (b"x\nyyyyy", [b'\n', b'\n']),
        ] {
            assert_eq!(
                longest_line(text, seps),
                naive(text, seps),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
