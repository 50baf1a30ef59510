//! The XML extractor: element paths matched by local name (namespaces
//! ignored), an attribute or an element's text as the key, no entity
//! expansion, bounded depth; from a stream or, borrowing, from memory.
//! Under a record path, each value carries the ordinal of the record
//! element it sits in ([`RecordScan`], which the redaction engine counts
//! with too).

use std::io::{BufRead, BufReader, Read};

use super::{Found, LineGuard, Unreadable, check_room};
use crate::config::rules::{XmlPath, local_name};

/// The values at `path`; under a `record` path, each with the record it
/// sits in (`record N`, N the 0-based ordinal of the element among all
/// elements matching the record path, in document order).
pub fn xml(
    reader: impl Read,
    path: &XmlPath,
    record: Option<&XmlPath>,
    max_line: u64,
) -> Result<Vec<Found>, Unreadable> {
    xml_from(
        BufReader::new(LineGuard::new(reader, max_line, b'>', b'\n')),
        path,
        record,
    )
}

/// XML from a stream: each event is copied into a buffer.
fn xml_from(
    reader: impl BufRead,
    path: &XmlPath,
    record: Option<&XmlPath>,
) -> Result<Vec<Found>, Unreadable> {
    let mut r = quick_xml::Reader::from_reader(reader);
    r.config_mut().expand_empty_elements = true;
    let mut scan = XmlScan::new(path, record);
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

/// XML in memory: events borrow from the bytes (no copy). Under a path of
/// names from the root (`/Quotation/ID`, no `//`), an element that can hold
/// no match is not parsed at all: [`skip_element`] jumps over its content on
/// the raw bytes, counting the elements it passes (their ordinals are the
/// links' locations) and checking what quick-xml would, and quick-xml goes
/// on at its end tag. Where the skip finds anything it does not vouch for,
/// it leaves the rest of the document to quick-xml, whose errors stand.
pub(super) fn xml_from_slice(
    bytes: &[u8],
    path: &XmlPath,
    record: Option<&XmlPath>,
) -> Result<Vec<Found>, Unreadable> {
    let mut r = quick_xml::Reader::from_reader(bytes);
    r.config_mut().expand_empty_elements = true;
    let mut scan = XmlScan::new(path, record);
    let mut skip = rooted_names(path) && record.is_none_or(rooted_names);
    // Bytes jumped over, which quick-xml's positions do not count.
    let mut skipped = 0u64;
    loop {
        let ev = r
            .read_event()
            .map_err(|e| xml_error(r.error_position() + skipped, &e))?;
        use quick_xml::events::Event;
        let (opened, markup) = match ev {
            Event::Start(_) => (true, true),
            Event::End(_) => (false, true),
            _ => (false, false),
        };
        if scan.event(ev)? {
            return Ok(scan.out);
        }
        // After a tag, inside an element: its children that can hold no
        // match are jumped over, up to the next one that can (or the
        // element's end tag).
        if skip
            && markup
            && !scan.ends.is_empty()
            && let Some(wanted) = scan.wanted_children()
        {
            let rest: &[u8] = r.get_ref();
            let at = bytes.len() - rest.len();
            // `<a/>`: quick-xml gives its end next, from no bytes.
            if opened && bytes[..at].ends_with(b"/>") {
                continue;
            }
            match skip_element(rest, scan.ends.len(), &wanted) {
                Some((len, elements)) => {
                    *r.get_mut() = &rest[len..];
                    skipped += len as u64;
                    scan.element_index += elements;
                }
                // Once is enough: a document the skip gives up on is read
                // as it always was (and never scanned twice).
                None => skip = false,
            }
        }
    }
}

/// A path of element names from the root, with no `//` step.
fn rooted_names(path: &XmlPath) -> bool {
    path.steps.iter().all(Option::is_some)
}

/// The content of an element whose start tag (or a child's end tag) ended
/// just before `rest`, `depth` elements deep: how many bytes it takes up
/// to its end tag's `<`, or up to the `<` of the next child whose local
/// name is `wanted`, and how many elements start before that. `None` when
/// the content is anything but what quick-xml would read without
/// complaint — a mismatched or missing end tag, an unterminated comment,
/// CDATA section or processing instruction, a declaration or DOCTYPE, a
/// `&` that is no reference, nesting beyond [`MAX_DEPTH`] — so that
/// quick-xml reads it and reports.
fn skip_element(rest: &[u8], depth: usize, wanted: &[&str]) -> Option<(usize, u64)> {
    let mut open: Vec<&[u8]> = Vec::new();
    let mut elements = 0u64;
    let mut i = 0;
    loop {
        let j = i + memchr::memchr2(b'<', b'&', &rest[i..])?;
        if rest[j] == b'&' {
            // A reference ends with `;` before any other `&` or markup.
            let k = j + 1 + memchr::memchr3(b';', b'&', b'<', &rest[j + 1..])?;
            if rest[k] != b';' {
                return None;
            }
            i = k + 1;
            continue;
        }
        let tag = &rest[j..];
        match tag.get(1)? {
            // `</name>` of the innermost open element, as start tags
            // spell it (names pushed hold no `>`): no search.
            b'/' if open.last().is_some_and(|o| {
                tag[2..].starts_with(o) && tag.get(2 + o.len()) == Some(&b'>')
            }) =>
            {
                let len = open.pop().map_or(0, <[u8]>::len);
                i = j + 2 + len + 1;
            }
            b'/' => {
                let close = memchr::memchr(b'>', tag)?;
                let name = tag[2..close].trim_ascii_end();
                match open.pop() {
                    None if !name.is_empty() => return Some((j, elements)),
                    Some(o) if o == name => i = j + close + 1,
                    _ => return None,
                }
            }
            b'!' => {
                let (body, end): (usize, &[u8]) = if tag.starts_with(b"<!--") {
                    (4, b"-->")
                } else if tag.starts_with(b"<![CDATA[") {
                    (9, b"]]>")
                } else {
                    return None;
                };
                let k = memchr::memmem::find(&tag[body..], end)?;
                i = j + body + k + end.len();
            }
            b'?' => {
                let target_end = tag[2..]
                    .iter()
                    .position(|b| b.is_ascii_whitespace() || *b == b'?')?;
                if tag[2..2 + target_end].eq_ignore_ascii_case(b"xml") {
                    return None;
                }
                let k = memchr::memmem::find(&tag[2..], b"?>")?;
                i = j + 2 + k + 2;
            }
            _ => {
                // A start tag: its name runs up to the first space, `/`,
                // `>` or quote (one pass; most tags, `<cbc:ID>`, end
                // there), its `>` is the first outside quotes.
                let n = 1 + tag[1..].iter().position(|&b| NAME_ENDS[b as usize])?;
                let name = &tag[1..n];
                // (A name with quotes in it is left to quick-xml: the end
                // tags above are matched by the names pushed.)
                if name.is_empty() {
                    return None;
                }
                let close = match tag[n] {
                    b'>' => n,
                    b'"' | b'\'' => return None,
                    _ => {
                        let mut k = n;
                        loop {
                            k += memchr::memchr3(b'>', b'"', b'\'', &tag[k..])?;
                            match tag[k] {
                                b'>' => break k,
                                q => k += 1 + memchr::memchr(q, &tag[k + 1..])? + 1,
                            }
                        }
                    }
                };
                // A child that can hold a match: quick-xml reads it. (Its
                // local name as quick-xml's: after the first `:`.)
                if open.is_empty() && !wanted.is_empty() {
                    let local = memchr::memchr(b':', name).map_or(name, |c| &name[c + 1..]);
                    if wanted.iter().any(|w| w.as_bytes() == local) {
                        return Some((j, elements));
                    }
                }
                elements += 1;
                if tag[close - 1] != b'/' {
                    open.push(name);
                    if depth + open.len() > MAX_DEPTH {
                        return None;
                    }
                }
                i = j + close + 1;
            }
        }
    }
}

/// The bytes that end an element's name in a start tag: ASCII white
/// space, `/`, `>` and quotes.
const NAME_ENDS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_whitespace() || matches!(b as u8, b'/' | b'>' | b'"' | b'\'');
        b += 1;
    }
    t
};

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
    records: Option<RecordScan<'p>>,
}

/// Which record element the scan is in, under a rule with a record path.
/// The engine that removes records (`apply::redact`) counts the same way.
pub(crate) struct RecordScan<'p> {
    path: &'p XmlPath,
    last: Option<&'p str>,
    /// Record elements seen so far.
    seen: u64,
    /// (depth, ordinal) of the record element open now.
    open: Option<(usize, u64)>,
}

impl<'p> RecordScan<'p> {
    pub(crate) fn new(path: &'p XmlPath) -> Self {
        RecordScan {
            path,
            last: path.steps.last().and_then(|s| s.as_deref()),
            seen: 0,
            open: None,
        }
    }

    /// An element opened (its name is the stack's last): its ordinal when
    /// it is a record. Records never nest (which one would a value be in?).
    pub(crate) fn start(
        &mut self,
        name: &str,
        stack: impl FnOnce() -> Vec<String>,
        depth: usize,
    ) -> Result<Option<u64>, Unreadable> {
        if self.last != Some(name) || !self.path.matches(&stack()) {
            return Ok(None);
        }
        if self.open.is_some() {
            return Err(Unreadable(format!(
                "a record element ({}) inside another: records must not nest",
                self.path.text
            )));
        }
        let n = self.seen;
        self.seen += 1;
        self.open = Some((depth, n));
        Ok(Some(n))
    }

    /// An element closed at `depth`: the ordinal of the record it ends.
    pub(crate) fn end(&mut self, depth: usize) -> Option<u64> {
        match self.open {
            Some((d, n)) if d == depth => {
                self.open = None;
                Some(n)
            }
            _ => None,
        }
    }

    /// The record open now, as a record id.
    fn current(&self) -> Option<String> {
        self.open.map(|(_, n)| record_id(n))
    }
}

/// The id of the XML record with ordinal `n`.
pub(crate) fn record_id(n: u64) -> String {
    format!("record {n}")
}

/// Elements nest at most this deep (the redaction engine holds the same).
pub(crate) const MAX_DEPTH: usize = 1024;

impl<'p> XmlScan<'p> {
    fn new(path: &'p XmlPath, record: Option<&'p XmlPath>) -> Self {
        XmlScan {
            path,
            last: path.steps.last().and_then(|s| s.as_deref()),
            names: String::new(),
            ends: Vec::new(),
            capture: None,
            out: Vec::new(),
            element_index: 0,
            records: record.map(RecordScan::new),
        }
    }

    /// The record of a value found now: `Some` under a rule with records
    /// (a value outside every record cannot be, the record being a proper
    /// prefix of the path).
    fn record(&self) -> Result<Option<String>, Unreadable> {
        match &self.records {
            None => Ok(None),
            Some(r) => r
                .current()
                .map(Some)
                .ok_or_else(|| Unreadable("a value outside any record".into())),
        }
    }

    /// Under a path of names from the root (as is the record's, if any),
    /// with no text being captured: the local names of the children of the
    /// innermost open element that can hold a match of either — the next
    /// step of each path the open elements follow so far. Empty when
    /// nothing inside can match (the open elements stray from both paths,
    /// or go as deep as their ends); `None` while text is captured.
    fn wanted_children(&self) -> Option<Vec<&'p str>> {
        if self.capture.is_some() {
            return None;
        }
        let depth = self.ends.len();
        let next = |p: &'p XmlPath| {
            if p.steps.len() <= depth {
                return None;
            }
            let mut start = 0;
            let follows = self.ends.iter().zip(&p.steps).all(|(&end, step)| {
                let name = &self.names[start..end];
                start = end;
                step.as_deref() == Some(name)
            });
            if follows {
                p.steps[depth].as_deref()
            } else {
                None
            }
        };
        let record = self.records.as_ref().and_then(|r| next(r.path));
        Some(next(self.path).into_iter().chain(record).collect())
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
                if self.ends.len() > MAX_DEPTH {
                    return Err(Unreadable(format!(
                        "nested deeper than {MAX_DEPTH} elements"
                    )));
                }
                if let Some(records) = &mut self.records {
                    let (names, ends) = (&self.names, &self.ends);
                    records.start(name, || stack_of(names, ends), ends.len())?;
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
                                    let record = self.record()?;
                                    self.out.push(Found {
                                        key: v.trim().to_string(),
                                        location: format!("element {}", self.element_index),
                                        record,
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
                        let record = self.record()?;
                        self.out.push(Found {
                            key,
                            location: format!("element {}", self.element_index),
                            record,
                        });
                    }
                    self.capture = None;
                }
                if let Some(records) = &mut self.records {
                    records.end(self.ends.len());
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

pub(crate) fn stack_of(names: &str, ends: &[usize]) -> Vec<String> {
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let s = names[start..end].to_string();
            start = end;
            s
        })
        .collect()
}

pub(crate) fn xml_error_class(e: &quick_xml::Error) -> &'static str {
    match e {
        quick_xml::Error::Io(_) => "read failed, or a line longer than technical.max_line_bytes",
        quick_xml::Error::Syntax(_) => "syntax",
        quick_xml::Error::IllFormed(_) => "ill-formed",
        quick_xml::Error::Encoding(_) => "encoding",
        _ => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_by_local_name() {
        let p = XmlPath::parse("/Quotation/ID").unwrap();
        let doc = br#"<?xml version="1.0"?><q:Quotation xmlns:q="urn:x" xmlns:cbc="urn:c"><cbc:ID> Q-1 </cbc:ID><X><cbc:ID>no</cbc:ID></X></q:Quotation>"#;
        assert_eq!(
            json_keys(xml(&doc[..], &p, None, 1 << 20).unwrap()),
            vec!["Q-1"]
        );
        let err = xml(&b"<a><b></a>"[..], &p, None, 1 << 20).unwrap_err();
        assert!(err.0.contains("XML"), "{err}");
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
                let memory = xml_from_slice(&bytes, &path, None).unwrap();
                let streamed = xml(&bytes[..], &path, None, 1 << 20).unwrap();
                assert_eq!(memory, streamed, "{p}");
                compared += memory.len();
            }
        }
        assert!(compared > 20, "the samples yield values ({compared})");
    }

    /// Under a record rule every value names its record, the same in
    /// memory and streamed: the ordinal of the enclosing element among
    /// those matching the record path.
    #[test]
    fn records_are_ordinals_of_the_record_elements() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples/payloads/xml");
        let rules = [
            (
                "/Invoice/InvoiceLine/Item/SellersItemIdentification/ID",
                "/Invoice/InvoiceLine",
            ),
            (
                "/*/AccountingCustomerParty/Party/PartyIdentification/ID",
                "/*/AccountingCustomerParty",
            ),
            ("//Contact/ElectronicMail", "//Contact"),
            ("//Party/PartyName/Name", "//Party"),
            (
                "//AdditionalDocumentReference/@schemeID",
                "//AdditionalDocumentReference",
            ),
        ];
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for (p, r) in rules {
                let (path, record) = (XmlPath::parse(p).unwrap(), XmlPath::parse(r).unwrap());
                let memory = xml_from_slice(&bytes, &path, Some(&record)).unwrap();
                let streamed = xml(&bytes[..], &path, Some(&record), 1 << 20).unwrap();
                assert_eq!(memory, streamed, "{p}");
                assert!(memory.iter().all(|f| f.record.is_some()), "{p}");
                compared += memory.len();
            }
        }
        assert!(compared > 10, "the samples yield values ({compared})");
        let doc = br#"<B><L><Id>a</Id></L><L/><x:L xmlns:x="u"><Id>b</Id><Id>c</Id></x:L><M><L><Id>no</Id></L></M></B>"#;
        let (path, record) = (
            XmlPath::parse("/B/L/Id").unwrap(),
            XmlPath::parse("/B/L").unwrap(),
        );
        let found = xml(&doc[..], &path, Some(&record), 1 << 20).unwrap();
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.key.as_str(), f.record.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            [("a", "record 0"), ("b", "record 2"), ("c", "record 2")]
        );
        // Nested records: which would a value be in? Refused.
        let (path, record) = (
            XmlPath::parse("//L/Id").unwrap(),
            XmlPath::parse("//L").unwrap(),
        );
        let err = xml(
            &b"<B><L><L><Id>1</Id></L></L></B>"[..],
            &path,
            Some(&record),
            1 << 20,
        )
        .unwrap_err();
        assert!(err.0.contains("must not nest"), "{err}");
    }

    /// The skip over elements that cannot match (in memory, under a path
    /// of names from the root) finds what the streaming reader, which
    /// reads every event, finds: the same values at the same element
    /// ordinals, and the same complaint about a malformed document.
    #[test]
    fn skipped_elements_change_nothing_found() {
        let docs: [&[u8]; 14] = [
            // Namespaces: the prefix is ignored in the path, not in end tags.
            br#"<?xml version="1.0"?><q:Quotation xmlns:q="urn:q" xmlns:c="urn:c"><c:Lines><c:Line><c:ID>L1</c:ID></c:Line></c:Lines><c:ID>Q-1</c:ID><c:Party id="P>1/"><c:ID>no</c:ID></c:Party><c:ID>Q-2</c:ID></q:Quotation>"#,
            // CDATA and comments that look like markup, in skipped elements
            // and in the captured one; processing instructions.
            br#"<Quotation><X><![CDATA[</X><ID>no</ID>]]><!-- <ID>no</ID></X> --><?pi </X>?></X><ID><![CDATA[Q-3]]></ID><Y a='>'/><ID><!-- c -->Q-4</ID></Quotation>"#,
            // Self-closing elements, skipped and matched.
            br#"<Quotation><X/><ID/><Y><Z/><ID>no</ID></Y><ID>Q-5</ID><ID key="k"/></Quotation>"#,
            // Same-named nested elements: only the one at the path's depth.
            br#"<Quotation><Quotation><ID>no</ID></Quotation><ID>Q-6<ID>inner</ID></ID><ID><ID>x</ID></ID></Quotation>"#,
            // References in skipped text; a wrong root is skipped whole.
            br#"<Quotation><X>a &amp; b &#60; &lt;ID&gt;</X><ID>Q-7</ID></Quotation>"#,
            br#"<Invoice><ID>no</ID><X><ID>no</ID></X></Invoice>"#,
            // Malformed inside what would be skipped: the same errors.
            br#"<Quotation><X><Y></X></Quotation>"#,
            br#"<Quotation><X>a & b</X><ID>1</ID></Quotation>"#,
            br#"<Quotation><X><!-- open </X></Quotation>"#,
            br#"<Quotation><X><![CDATA[ open </X></Quotation>"#,
            br#"<Quotation><X><?xml version="1.0"?></X><ID>1</ID></Quotation>"#,
            br#"<Quotation><X><!DOCTYPE x></X><ID>1</ID></Quotation>"#,
            br#"<Quotation><X><Y>"#,
            br#"<Quotation><X></Y></X><ID>1</ID></Quotation>"#,
        ];
        let rules = [
            ("/Quotation/ID", None),
            ("/Quotation/@id", None),
            ("/Quotation/Party/@id", None),
            ("/Quotation/ID/@key", None),
            ("/Quotation/Lines/Line/ID", Some("/Quotation/Lines/Line")),
            ("/Quotation/ID", Some("/Quotation/ID")),
        ];
        let mut found = 0;
        for doc in docs {
            for (p, r) in rules {
                let path = XmlPath::parse(p).unwrap();
                let record = r.map(|r| XmlPath::parse(r).unwrap());
                let memory = xml_from_slice(doc, &path, record.as_ref());
                let streamed = xml(doc, &path, record.as_ref(), 1 << 20);
                assert_eq!(memory, streamed, "{p} in {}", String::from_utf8_lossy(doc));
                found += memory.map(|f| f.len()).unwrap_or(0);
            }
        }
        assert!(found > 15, "the documents yield values ({found})");
        let keys = xml_from_slice(docs[1], &XmlPath::parse("/Quotation/ID").unwrap(), None)
            .unwrap()
            .into_iter()
            .map(|f| (f.key, f.location))
            .collect::<Vec<_>>();
        assert_eq!(
            keys,
            [
                ("Q-3".to_string(), "element 3".to_string()),
                ("Q-4".to_string(), "element 5".to_string())
            ]
        );
    }

    /// Random documents (nested same names, namespaces, comments, CDATA,
    /// self-closing and empty elements, attributes holding `>` and `/`):
    /// in memory with skips and streamed without, the same values.
    #[test]
    fn skipping_agrees_with_reading_every_event_on_random_documents() {
        struct Lcg(u64);
        impl Lcg {
            fn next(&mut self, below: u64) -> u64 {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (self.0 >> 33) % below
            }
        }
        fn element(rng: &mut Lcg, depth: u32, out: &mut String) {
            let names = ["A", "B", "ID", "n:A", "n:ID", "q\"x"];
            let odd = rng.next(30) == 0;
            let name = names[rng.next(if odd { 6 } else { 5 }) as usize];
            out.push('<');
            out.push_str(name);
            if rng.next(3) == 0 {
                out.push_str(r#" k="v>/" x='1'"#);
            }
            if rng.next(5) == 0 {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for _ in 0..rng.next(if depth > 5 { 1 } else { 4 }) {
                match rng.next(6) {
                    0 => out.push_str("t &amp; u"),
                    1 => out.push_str("<!-- <ID>c</ID> -->"),
                    2 => out.push_str("<![CDATA[<ID>d</ID>]]>"),
                    _ => element(rng, depth + 1, out),
                }
            }
            // Now and then an end tag the skip must not take for its
            // element's: spaced, of another name sharing the prefix, of
            // another name.
            let end = match rng.next(40) {
                0 => format!("{name} "),
                1 => format!("{name}X"),
                2 => "B".to_string(),
                _ => name.to_string(),
            };
            out.push_str(&format!("{}</{end}>", rng.next(100)));
        }
        let rules = [
            ("/A/ID", None),
            ("/A/B/ID", None),
            ("/A/A/ID", None),
            ("/ID", None),
            ("/A/B/@k", None),
            ("/B/ID/@x", None),
            ("/A/B/ID", Some("/A/B")),
            ("/A/A/B/ID", Some("/A/A")),
            ("/A/ID/@k", Some("/A/ID")),
        ];
        let (mut found, mut in_records) = (0, 0);
        for seed in 0..1000 {
            let mut rng = Lcg(seed);
            let mut doc = String::new();
            element(&mut rng, 0, &mut doc);
            for (p, r) in rules {
                let path = XmlPath::parse(p).unwrap();
                let record = r.map(|r| XmlPath::parse(r).unwrap());
                let memory = xml_from_slice(doc.as_bytes(), &path, record.as_ref());
                let streamed = xml(doc.as_bytes(), &path, record.as_ref(), 1 << 20);
                assert_eq!(memory, streamed, "{p} in {doc}");
                let n = memory.map(|f| f.len()).unwrap_or(0);
                found += n;
                in_records += if r.is_some() { n } else { 0 };
            }
        }
        assert!(found > 80, "the documents yield values ({found})");
        assert!(in_records > 20, "the records hold values ({in_records})");
    }

    /// What the skip reads: up to the `<` of the end tag that closes the
    /// element, counting the elements in it; nothing it does not vouch for.
    #[test]
    fn the_skip_stops_at_the_closing_tag() {
        let rest = br#"<a k="</x>"><b/><!-- </x> --><a>t</a ></a><![CDATA[</x>]]>&amp;</x>tail"#;
        let (len, elements) = skip_element(rest, 1, &[]).unwrap();
        assert_eq!(&rest[len..], b"</x>tail");
        assert_eq!(elements, 3);
        assert_eq!(skip_element(b"</x>", 1, &[]), Some((0, 0)));
        for bad in [
            &b"<a></b></x>"[..],
            b"<a>",
            b"a & b</x>",
            b"<!-- x",
            b"<!DOCTYPE d></x>",
            b"<?xml version='1.0'?></x>",
            b"< a></x>",
        ] {
            assert_eq!(
                skip_element(bad, 1, &[]),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Up to the next child that can hold a match (by local name, as
        // quick-xml gives it), counting the elements before it; a
        // grandchild of that name is not one.
        let rest = br#" <a><ID>no</ID></a> t <n:ID>yes</n:ID><ID/></x>"#;
        let (len, elements) = skip_element(rest, 1, &["ID"]).unwrap();
        assert_eq!(&rest[len..], b"<n:ID>yes</n:ID><ID/></x>");
        assert_eq!(elements, 2);
        let rest = br#"<IDX/><I/><b:c:ID/></x>"#;
        assert_eq!(skip_element(rest, 1, &["ID"]), Some((rest.len() - 4, 3)));
        let deep = "<a>".repeat(MAX_DEPTH);
        assert_eq!(skip_element(deep.as_bytes(), 1, &[]), None);
    }

    fn json_keys(f: Vec<Found>) -> Vec<String> {
        f.into_iter().map(|f| f.key).collect()
    }
}
