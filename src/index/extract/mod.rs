//! Content rules: entity keys found inside JSON, XML and CSV payloads. Each
//! extractor reads from a stream with a byte budget and reports the location
//! of each value (JSON pointer, element index, CSV row). Errors name what is
//! wrong with the file, never what is in it.

use std::io::{BufRead, BufReader, Read};

use crate::config::rules::{XmlPath, local_name};

pub mod jsonstream;

/// A key found in a file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub key: String,
    pub location: String,
}

/// Why a file could not be read by a content rule. The text names the
/// problem, never the content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// Stops reading past the budget, so that a hostile file costs bounded time.
struct Budget<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "larger than technical.max_content_bytes",
            ));
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn budget<R: Read>(r: R, max: u64) -> Budget<R> {
    Budget {
        inner: r,
        left: max.saturating_add(1),
    }
}

/// Whole-document evaluation, for paths that cannot stream: the document is
/// parsed into memory (at most `max` bytes), and rejected when a member name
/// repeats (which of the values would the path mean?).
pub fn json_whole(
    reader: impl Read,
    path: &serde_json_path::JsonPath,
    max: u64,
) -> Result<Vec<Found>, Unreadable> {
    json_whole_with(
        serde_json::Deserializer::from_reader(BufReader::new(budget(reader, max))),
        path,
    )
}

fn json_whole_with<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    path: &serde_json_path::JsonPath,
) -> Result<Vec<Found>, Unreadable> {
    let value: serde_json::Value = <Strict as serde::Deserialize>::deserialize(&mut de)
        .map(|s| s.0)
        .map_err(|e| Unreadable(format!("not valid JSON ({})", json_error_class(&e))))?;
    de.end()
        .map_err(|e| Unreadable(format!("not valid JSON ({})", json_error_class(&e))))?;
    let mut out = Vec::new();
    for node in path.query_located(&value).all() {
        let key = match node.node() {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => continue,
        };
        check_room(&out)?;
        out.push(Found {
            key,
            location: node.location().to_json_pointer(),
        });
    }
    Ok(out)
}

/// The category and position of a JSON error, without the offending text.
pub(crate) fn json_error_class(e: &serde_json::Error) -> String {
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

/// Runs one content rule over an object: from memory when it is small, as a
/// stream when it is not. `size` is the listed size (a hint).
pub fn content(
    kind: &crate::config::ContentKind,
    mut reader: Box<dyn Read + Send>,
    size: u64,
    max_whole: u64,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    use crate::config::ContentKind;
    if size <= SLURP_MAX {
        let mut bytes = Vec::with_capacity(size as usize + 1);
        (&mut reader)
            .take(SLURP_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Unreadable(format!("read failed: {e}")))?;
        if bytes.len() as u64 <= SLURP_MAX {
            // A UTF-8 byte order mark (Windows exports) is not content.
            let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
            let seps: [u8; 2] = match kind {
                ContentKind::Json { .. } => [b'\n', b','],
                ContentKind::Xml(_) => [b'>', b'\n'],
                ContentKind::Csv { .. } => [b'\n', b'\n'],
            };
            // (Most files are shorter than a line may be: nothing to scan.)
            if bytes.len() as u64 > max_line && longest_line(bytes, seps) > max_line {
                return Err(Unreadable(format!(
                    "a line or value longer than technical.max_line_bytes ({max_line})"
                )));
            }
            return match kind {
                ContentKind::Json {
                    steps: Some(steps), ..
                } => jsonstream::extract_with(serde_json::Deserializer::from_slice(bytes), steps),
                ContentKind::Json { path, steps: None } => {
                    if bytes.len() as u64 > max_whole {
                        return Err(Unreadable(format!(
                            "larger than technical.max_content_bytes ({max_whole})"
                        )));
                    }
                    json_whole_with(serde_json::Deserializer::from_slice(bytes), path)
                }
                ContentKind::Xml(p) => xml_from_slice(bytes, p),
                ContentKind::Csv { column, delimiter } => csv_from_slice(bytes, column, *delimiter),
            };
        }
        // It grew since it was listed: stream what was read and the rest.
        let rest: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(bytes).chain(reader));
        return stream(kind, skip_bom(rest)?, max_whole, max_line);
    }
    stream(kind, skip_bom(reader)?, max_whole, max_line)
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
        ContentKind::Json { path, steps } => {
            json(reader, path, steps.as_deref(), max_whole, max_line)
        }
        ContentKind::Xml(p) => xml(reader, p, max_line),
        ContentKind::Csv { column, delimiter } => csv(reader, column, *delimiter, max_line),
    }
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

/// Either evaluation, as the rule allows.
pub fn json(
    reader: impl Read,
    path: &serde_json_path::JsonPath,
    steps: Option<&[crate::config::rules::Step]>,
    max_whole: u64,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    match steps {
        Some(steps) => jsonstream::extract(LineGuard::new(reader, max_line, b'\n', b','), steps),
        None => json_whole(reader, path, max_whole),
    }
}

/// Builds a `serde_json::Value`, refusing repeated member names.
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
                Ok(Strict(
                    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into),
                ))
            }
            fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_string<E>(self, v: String) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict(serde_json::Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Strict, A::Error> {
                let mut v = Vec::new();
                while let Some(Strict(x)) = seq.next_element()? {
                    v.push(x);
                }
                Ok(Strict(v.into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Strict, A::Error> {
                let mut m = serde_json::Map::new();
                while let Some(k) = map.next_key::<String>()? {
                    let Strict(v) = map.next_value()?;
                    if m.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                }
                Ok(Strict(m.into()))
            }
        }
        d.deserialize_any(V)
    }
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

pub fn xml(reader: impl Read, path: &XmlPath, max_line: u64) -> Result<Vec<Found>, Unreadable> {
    xml_from(
        BufReader::new(LineGuard::new(reader, max_line, b'>', b'\n')),
        path,
    )
}

/// XML from a stream: each event is copied into a buffer.
fn xml_from(reader: impl BufRead, path: &XmlPath) -> Result<Vec<Found>, Unreadable> {
    let mut r = quick_xml::Reader::from_reader(reader);
    r.config_mut().expand_empty_elements = true;
    let mut scan = XmlScan::new(path);
    let mut buf = Vec::new();
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|e| xml_error(r.error_position(), &e))?;
        if scan.event(ev)? {
            return Ok(scan.out);
        }
        buf.clear();
    }
}

/// XML in memory: events borrow from the bytes (no copy).
fn xml_from_slice(bytes: &[u8], path: &XmlPath) -> Result<Vec<Found>, Unreadable> {
    let mut r = quick_xml::Reader::from_reader(bytes);
    r.config_mut().expand_empty_elements = true;
    let mut scan = XmlScan::new(path);
    loop {
        let ev = r
            .read_event()
            .map_err(|e| xml_error(r.error_position(), &e))?;
        if scan.event(ev)? {
            return Ok(scan.out);
        }
    }
}

fn xml_error(position: u64, e: &quick_xml::Error) -> Unreadable {
    Unreadable(format!(
        "not well-formed XML at byte {position} ({})",
        xml_error_class(e)
    ))
}

/// The element-path matcher, fed one event at a time.
struct XmlScan<'p> {
    path: &'p XmlPath,
    last: Option<&'p str>,
    /// The open elements' local names in one string, and where each ends:
    /// no allocation per element.
    names: String,
    ends: Vec<usize>,
    /// (depth, text so far) of the element being captured.
    capture: Option<(usize, String)>,
    out: Vec<Found>,
    element_index: u64,
}

impl<'p> XmlScan<'p> {
    const MAX_DEPTH: usize = 1024;

    fn new(path: &'p XmlPath) -> Self {
        XmlScan {
            path,
            last: path.steps.last().and_then(|s| s.as_deref()),
            names: String::new(),
            ends: Vec::new(),
            capture: None,
            out: Vec::new(),
            element_index: 0,
        }
    }

    /// Takes one event; `Ok(true)` at the end of the document.
    fn event(&mut self, ev: quick_xml::events::Event<'_>) -> Result<bool, Unreadable> {
        use quick_xml::events::Event;
        match ev {
            Event::Start(e) => {
                self.element_index += 1;
                let local = e.local_name();
                let name: &str = local.as_ref();
                self.names.push_str(name);
                self.ends.push(self.names.len());
                if self.ends.len() > Self::MAX_DEPTH {
                    return Err(Unreadable(format!(
                        "nested deeper than {} elements",
                        Self::MAX_DEPTH
                    )));
                }
                // Cheap test first: the element's own name must be the last step.
                if self.last == Some(name) && self.path.matches(&stack_of(&self.names, &self.ends))
                {
                    match &self.path.attribute {
                        Some(attr) => {
                            for a in e.attributes().flatten() {
                                let an: &str = a.key.as_ref();
                                if local_name(an) == attr {
                                    let v = a
                                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                        .map_err(|_| {
                                            Unreadable("attribute with an invalid escape".into())
                                        })?;
                                    check_room(&self.out)?;
                                    self.out.push(Found {
                                        key: v.trim().to_string(),
                                        location: format!("element {}", self.element_index),
                                    });
                                }
                            }
                        }
                        None => self.capture = Some((self.ends.len(), String::new())),
                    }
                }
            }
            Event::Text(t) => {
                if let Some((_, text)) = self.capture.as_mut() {
                    text.push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0));
                    if text.len() > 4096 {
                        return Err(Unreadable("an identifier element longer than 4 KiB".into()));
                    }
                }
            }
            // Entity references are never expanded (no DTD, no external
            // fetch); an identifier that uses one is not taken.
            Event::GeneralRef(_) if self.capture.is_some() => {
                self.capture = None;
            }
            Event::CData(t) => {
                if let Some((_, text)) = self.capture.as_mut() {
                    text.push_str(t.as_ref());
                }
            }
            Event::End(_) => {
                if let Some((depth, text)) = &self.capture
                    && *depth == self.ends.len()
                {
                    let key = text.trim().to_string();
                    if !key.is_empty() {
                        check_room(&self.out)?;
                        self.out.push(Found {
                            key,
                            location: format!("element {}", self.element_index),
                        });
                    }
                    self.capture = None;
                }
                self.ends.pop();
                self.names.truncate(self.ends.last().copied().unwrap_or(0));
            }
            Event::Eof => {
                if !self.ends.is_empty() {
                    return Err(Unreadable("truncated XML (unclosed elements)".into()));
                }
                if self.element_index == 0 {
                    return Err(Unreadable("no XML element".into()));
                }
                return Ok(true);
            }
            _ => {}
        }
        Ok(false)
    }
}

fn stack_of(names: &str, ends: &[usize]) -> Vec<String> {
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let s = names[start..end].to_string();
            start = end;
            s
        })
        .collect()
}

fn xml_error_class(e: &quick_xml::Error) -> &'static str {
    match e {
        quick_xml::Error::Io(_) => "read failed, or a line longer than technical.max_line_bytes",
        quick_xml::Error::Syntax(_) => "syntax",
        quick_xml::Error::IllFormed(_) => "ill-formed",
        quick_xml::Error::Encoding(_) => "encoding",
        _ => "invalid",
    }
}

pub fn csv(
    reader: impl Read,
    column: &str,
    delimiter: Option<u8>,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    csv_from(
        BufReader::with_capacity(64 * 1024, LineGuard::new(reader, max_line, b'\n', b'\n')),
        column,
        delimiter,
    )
}

/// CSV in memory. Without a quote character anywhere, and with `\r` only
/// before `\n`, RFC 4180 reduces to splitting lines and fields, which
/// memchr does several times faster than a general CSV reader; the answer
/// is the same (`csv_fast_path_agrees_with_the_csv_reader`). Anything else
/// goes through the csv crate.
fn csv_from_slice(
    bytes: &[u8],
    column: &str,
    delimiter: Option<u8>,
) -> Result<Vec<Found>, Unreadable> {
    let plain = memchr::memchr(b'"', bytes).is_none()
        && memchr::memchr_iter(b'\r', bytes).all(|at| bytes.get(at + 1) == Some(&b'\n'));
    if !plain {
        return csv_from(bytes, column, delimiter);
    }
    let delimiter = delimiter.unwrap_or_else(|| sniff_delimiter(bytes));
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty());
    let Some(header) = lines.next() else {
        return Ok(Vec::new());
    };
    let Some(col) = key_column(header.split(|b| *b == delimiter), column) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut row = 1u64;
    for line in lines {
        row += 1;
        let Some(v) = memchr::memchr_iter(delimiter, line)
            .chain(std::iter::once(line.len()))
            .scan(0usize, |start, end| {
                let field = &line[*start..end];
                *start = end + 1;
                Some(field)
            })
            .nth(col)
        else {
            continue;
        };
        push_row_key(&mut out, row, v)?;
    }
    Ok(out)
}

/// The position of the key column among the header's names.
fn key_column<'h>(mut names: impl Iterator<Item = &'h [u8]>, column: &str) -> Option<usize> {
    names.position(|h| {
        String::from_utf8_lossy(h)
            .trim_start_matches('\u{feff}')
            .trim()
            == column
    })
}

/// A row's key (blank: none) as a link at its row.
fn push_row_key(out: &mut Vec<Found>, row: u64, value: &[u8]) -> Result<(), Unreadable> {
    let v = std::str::from_utf8(value)
        .map_err(|_| Unreadable(format!("row {row}: the key column is not UTF-8")))?
        .trim();
    if !v.is_empty() {
        check_room(out)?;
        out.push(Found {
            key: v.to_string(),
            location: format!("row {row}"),
        });
    }
    Ok(())
}

fn csv_from(
    mut buffered: impl BufRead,
    column: &str,
    delimiter: Option<u8>,
) -> Result<Vec<Found>, Unreadable> {
    let delimiter = match delimiter {
        Some(d) => d,
        None => {
            let head = buffered
                .fill_buf()
                .map_err(|e| Unreadable(format!("read failed: {e}")))?;
            sniff_delimiter(head)
        }
    };
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(buffered);
    let headers = r
        .byte_headers()
        .map_err(|e| Unreadable(format!("CSV header unreadable ({})", csv_error_class(&e))))?
        .clone();
    let Some(col) = key_column(headers.iter(), column) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut row = 1u64;
    loop {
        match r.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                row += 1;
                if let Some(v) = record.get(col) {
                    push_row_key(&mut out, row, v)?;
                }
            }
            Err(e) => {
                return Err(Unreadable(format!(
                    "CSV unreadable after row {row} ({})",
                    csv_error_class(&e)
                )));
            }
        }
    }
    Ok(out)
}

fn csv_error_class(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Io(io) => format!("read failed: {io}"),
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".into(),
        csv::ErrorKind::UnequalLengths { .. } => "rows of unequal length".into(),
        _ => "malformed".into(),
    }
}

/// The most frequent of `,` `;` tab `|` in the first line.
fn sniff_delimiter(head: &[u8]) -> u8 {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(head);
    let mut best = (0usize, b',');
    for d in [b',', b';', b'\t', b'|'] {
        let n = line.iter().filter(|b| **b == d).count();
        if n > best.0 {
            best = (n, d);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_with_pointers_and_big_ids() {
        let p = serde_json_path::JsonPath::parse("$.leads[*].id").unwrap();
        let doc = br#"{"leads":[{"id":9007199254740993},{"id":"A-7"},{"id":1.5}]}"#;
        let found = json_whole(&doc[..], &p, 1 << 20).unwrap();
        assert_eq!(
            found,
            vec![
                Found {
                    key: "9007199254740993".into(),
                    location: "/leads/0/id".into()
                },
                Found {
                    key: "A-7".into(),
                    location: "/leads/1/id".into()
                },
            ]
        );
    }

    #[test]
    fn json_errors_do_not_quote_content() {
        let p = serde_json_path::JsonPath::parse("$.id").unwrap();
        let err = json_whole(&b"{\"email\": \"jane@example.com\""[..], &p, 1 << 20).unwrap_err();
        assert!(!err.0.contains("jane"), "{err}");
        let err = json_whole(&b"{\"id\": 1} trailing"[..], &p, 1 << 20).unwrap_err();
        assert!(err.0.contains("not valid JSON"));
        let err = json_whole(&br#"{"id": "0123456789"}"#[..], &p, 8).unwrap_err();
        assert!(err.0.contains("max_content_bytes"), "{err}");
    }

    #[test]
    fn xml_by_local_name() {
        let p = XmlPath::parse("/Quotation/ID").unwrap();
        let doc = br#"<?xml version="1.0"?><q:Quotation xmlns:q="urn:x" xmlns:cbc="urn:c"><cbc:ID> Q-1 </cbc:ID><X><cbc:ID>no</cbc:ID></X></q:Quotation>"#;
        assert_eq!(json_keys(xml(&doc[..], &p, 1 << 20).unwrap()), vec!["Q-1"]);
        let err = xml(&b"<a><b></a>"[..], &p, 1 << 20).unwrap_err();
        assert!(err.0.contains("XML"), "{err}");
    }

    #[test]
    fn csv_semicolons_bom_and_quotes() {
        let doc = "\u{feff}Name;LeadId\r\n\"Doe; Jane\";17\r\nX;\"18\"\r\n";
        let found = csv(doc.as_bytes(), "LeadId", None, 1 << 20).unwrap();
        assert_eq!(
            found,
            vec![
                Found {
                    key: "17".into(),
                    location: "row 2".into()
                },
                Found {
                    key: "18".into(),
                    location: "row 3".into()
                },
            ]
        );
    }

    /// The in-memory reader (events borrowed from the bytes) and the
    /// streaming one (events copied through a buffer) find the same values
    /// at the same places, on the real UBL and XRechnung samples.
    #[test]
    fn xml_in_memory_and_streamed_agree_on_the_samples() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples/payloads/xml");
        let paths = [
            "//ID",
            "/Invoice/AccountingCustomerParty/Party/PartyIdentification/ID",
            "//@schemeID",
            "/*/BuyerReference",
        ];
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for p in paths {
                let Ok(path) = XmlPath::parse(p) else {
                    continue;
                };
                let memory = xml_from_slice(&bytes, &path).unwrap();
                let streamed = xml(&bytes[..], &path, 1 << 20).unwrap();
                assert_eq!(memory, streamed, "{p}");
                compared += memory.len();
            }
        }
        assert!(compared > 20, "the samples yield values ({compared})");
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

    proptest::proptest! {
        /// The unquoted fast path and the csv crate find the same keys in
        /// the same rows, on CSV made of the characters that matter.
        #[test]
        fn csv_fast_path_agrees_with_the_csv_reader(
            cells in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::string::string_regex("[a-c \t;,|\r\n\u{e9}]{0,4}").unwrap(),
                    0..5,
                ),
                0..8,
            ),
            sep in proptest::sample::select(vec![b',', b';', b'\t', b'|']),
            crlf in proptest::bool::ANY,
            named in proptest::bool::ANY,
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut text = if named { format!("x{}a{}b{end}", sep as char, sep as char) } else { String::new() };
            for row in &cells {
                text.push_str(&row.join(&(sep as char).to_string()));
                text.push_str(end);
            }
            for delimiter in [None, Some(sep)] {
                let fast = csv_from_slice(text.as_bytes(), "a", delimiter);
                let general = csv_from(text.as_bytes(), "a", delimiter);
                proptest::prop_assert_eq!(&fast, &general, "{:?}", text);
            }
        }
    }

    fn json_keys(f: Vec<Found>) -> Vec<String> {
        f.into_iter().map(|f| f.key).collect()
    }
}
