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

/// XML in memory: events borrow from the bytes (no copy).
pub(super) fn xml_from_slice(
    bytes: &[u8],
    path: &XmlPath,
    record: Option<&XmlPath>,
) -> Result<Vec<Found>, Unreadable> {
    let mut r = quick_xml::Reader::from_reader(bytes);
    r.config_mut().expand_empty_elements = true;
    let mut scan = XmlScan::new(path, record);
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

    fn json_keys(f: Vec<Found>) -> Vec<String> {
        f.into_iter().map(|f| f.key).collect()
    }
}
