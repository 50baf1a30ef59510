//! The XML extractor: element paths matched by local name (namespaces
//! ignored), an attribute or an element's text as the key, no entity
//! expansion, bounded depth; from a stream or, borrowing, from memory.

use std::io::{BufRead, BufReader, Read};

use super::{Found, LineGuard, Unreadable, check_room};
use crate::config::rules::{XmlPath, local_name};

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
pub(super) fn xml_from_slice(bytes: &[u8], path: &XmlPath) -> Result<Vec<Found>, Unreadable> {
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
                                        record: None,
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
                            record: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_by_local_name() {
        let p = XmlPath::parse("/Quotation/ID").unwrap();
        let doc = br#"<?xml version="1.0"?><q:Quotation xmlns:q="urn:x" xmlns:cbc="urn:c"><cbc:ID> Q-1 </cbc:ID><X><cbc:ID>no</cbc:ID></X></q:Quotation>"#;
        assert_eq!(json_keys(xml(&doc[..], &p, 1 << 20).unwrap()), vec!["Q-1"]);
        let err = xml(&b"<a><b></a>"[..], &p, 1 << 20).unwrap_err();
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
                let memory = xml_from_slice(&bytes, &path).unwrap();
                let streamed = xml(&bytes[..], &path, 1 << 20).unwrap();
                assert_eq!(memory, streamed, "{p}");
                compared += memory.len();
            }
        }
        assert!(compared > 20, "the samples yield values ({compared})");
    }

    fn json_keys(f: Vec<Found>) -> Vec<String> {
        f.into_iter().map(|f| f.key).collect()
    }
}
