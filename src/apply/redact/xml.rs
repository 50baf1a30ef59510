//! XML records: the elements the rule's `record` path matches (by local
//! name, namespace prefixes ignored, as the extractor matches), named by
//! their ordinal among those elements in document order (`record 0`),
//! counted by the extractor's own `RecordScan`. quick-xml gives each
//! event's byte span; a removed record goes from its `<` to the end of its
//! closing tag (or `/>`), with the whitespace-only text right before it.
//! Nothing is re-serialised: the declaration, namespaces, comments, CDATA,
//! entity references and every kept element are copied as bytes, and
//! entities are never expanded (nor fetched).

use std::collections::HashSet;

use quick_xml::events::Event;

use super::{Cutter, Named, RedactError, Spans, open_past_bom};
use crate::config::rules::XmlPath;
use crate::index::extract::Unreadable;
use crate::index::extract::xml::{MAX_DEPTH, RecordScan, record_id, stack_of, xml_error_class};

/// The spans of the records to cut.
pub(super) fn spans(
    input: &std::fs::File,
    record: &XmlPath,
    named: Named<'_>,
) -> Result<Spans, RedactError> {
    let wanted = ordinals(named.ids);
    let (r, base) = open_past_bom(input)?;
    let mut x = quick_xml::Reader::from_reader(r);
    let mut scan = RecordScan::new(record);
    let mut names = String::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut buf = Vec::new();
    let mut spans = Spans::default();
    let mut cutter = Cutter::exact();
    let mut elements = 0u64;
    // Where the whitespace-only text just before the next event starts.
    let mut blank_before: Option<u64> = None;
    // Where the cut of the removed record open now starts.
    let mut cut_from: Option<u64> = None;
    loop {
        let before = base + x.buffer_position();
        let ev = x.read_event_into(&mut buf).map_err(|e| {
            Unreadable(format!(
                "not well-formed XML at byte {} ({})",
                x.error_position(),
                xml_error_class(&e)
            ))
        })?;
        let after = base + x.buffer_position();
        let mut blank = None;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                elements += 1;
                let local = e.local_name();
                let name: &str = local.as_ref();
                names.push_str(name);
                ends.push(names.len());
                if ends.len() > MAX_DEPTH {
                    return Err(
                        Unreadable(format!("nested deeper than {MAX_DEPTH} elements")).into(),
                    );
                }
                let (open, at) = (&names, &ends);
                if let Some(n) = scan.start(name, || stack_of(open, at), at.len())? {
                    let is_named = wanted.contains(&n);
                    if is_named {
                        spans.found();
                    }
                    if named.cuts(is_named) {
                        cut_from = Some(blank_before.unwrap_or(before));
                    }
                }
                if matches!(ev, Event::Empty(_)) {
                    close(
                        &mut scan,
                        &mut ends,
                        &mut names,
                        &mut cut_from,
                        after,
                        &mut cutter,
                        &mut spans,
                    );
                }
            }
            Event::End(_) => {
                close(
                    &mut scan,
                    &mut ends,
                    &mut names,
                    &mut cut_from,
                    after,
                    &mut cutter,
                    &mut spans,
                );
            }
            Event::Text(ref t) if t.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) => {
                blank = Some(before);
            }
            Event::Eof => {
                if !ends.is_empty() {
                    return Err(Unreadable("truncated XML (unclosed elements)".into()).into());
                }
                if elements == 0 {
                    return Err(Unreadable("no XML element".into()).into());
                }
                return Ok(spans);
            }
            _ => {}
        }
        blank_before = blank;
        buf.clear();
    }
}

/// An element closed (its end tag, or its `/>`) at byte `after`.
fn close(
    scan: &mut RecordScan<'_>,
    ends: &mut Vec<usize>,
    names: &mut String,
    cut_from: &mut Option<u64>,
    after: u64,
    cutter: &mut Cutter,
    spans: &mut Spans,
) {
    if scan.end(ends.len()).is_some()
        && let Some(start) = cut_from.take()
    {
        spans.record(cutter, start..after, true);
    }
    ends.pop();
    names.truncate(ends.last().copied().unwrap_or(0));
}

/// The ordinals of the ids that are XML record ids exactly as the
/// extractor writes them (`record 0`); any other id is found nowhere.
fn ordinals(ids: &HashSet<String>) -> HashSet<u64> {
    ids.iter()
        .filter_map(|id| {
            let n: u64 = id.strip_prefix("record ")?.parse().ok()?;
            (record_id(n) == *id).then_some(n)
        })
        .collect()
}

#[cfg(test)]
mod tests {

    use crate::apply::redact::RedactError;
    use crate::config::ContentKind;
    use crate::index::extract::content;

    fn keys(kind: &ContentKind, bytes: &[u8]) -> Vec<(String, String)> {
        content(
            kind,
            Box::new(std::io::Cursor::new(bytes.to_vec())),
            bytes.len() as u64,
            1 << 30,
            1 << 30,
        )
        .unwrap()
        .into_iter()
        .map(|f| (f.key, f.record.unwrap()))
        .collect()
    }

    use crate::apply::redact::test_support::redacted;

    const BATCH: &str = concat!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n",
        "<!DOCTYPE b:Batch [<!ENTITY co \"ACME &amp; Co\">]>\r\n",
        "<!-- leads of March -->\r\n",
        "<b:Batch xmlns:b=\"urn:batch\" xmlns=\"urn:default\">\r\n",
        "  <b:Lead kind=\"web\"><b:Id>L1</b:Id><Note><![CDATA[<Lead><Id>L9</Id></Lead>]]></Note></b:Lead>\r\n",
        "  <!-- a comment between records -->\r\n",
        "  <Lead><Id>L2</Id><Company>&co; &#x26; &lt;Partners&gt;</Company></Lead>\r\n",
        "  <Lead><Id>L3</Id></Lead><Lead><Id>L4</Id></Lead>\r\n",
        "  <Lead/>\r\n",
        "  <Other><Lead><Id>not a record</Id></Lead></Other>\r\n",
        "</b:Batch>",
    );

    #[test]
    fn namespaces_cdata_comments_and_entities_are_copied_as_bytes() {
        let kind = ContentKind::xml("/Batch/Lead/Id", Some("/Batch/Lead")).unwrap();
        assert_eq!(
            keys(&kind, BATCH.as_bytes()),
            [
                ("L1", "record 0"),
                ("L2", "record 1"),
                ("L3", "record 2"),
                ("L4", "record 3")
            ]
            .map(|(k, r)| (k.to_string(), r.to_string()))
        );
        let r = |ids: &[&str]| {
            String::from_utf8(redacted(&kind, BATCH.as_bytes(), ids).unwrap()).unwrap()
        };
        assert_eq!(
            r(&["record 0"]),
            BATCH.replace("\r\n  <b:Lead kind=\"web\"><b:Id>L1</b:Id><Note><![CDATA[<Lead><Id>L9</Id></Lead>]]></Note></b:Lead>", "")
        );
        assert_eq!(
            r(&["record 1"]),
            BATCH.replace(
                "\r\n  <Lead><Id>L2</Id><Company>&co; &#x26; &lt;Partners&gt;</Company></Lead>",
                ""
            )
        );
        // Records side by side: the second has no whitespace before it.
        assert_eq!(
            r(&["record 3"]),
            BATCH.replace("<Lead><Id>L4</Id></Lead>", "")
        );
        assert_eq!(
            r(&["record 2", "record 3", "record 4"]),
            BATCH.replace(
                "\r\n  <Lead><Id>L3</Id></Lead><Lead><Id>L4</Id></Lead>\r\n  <Lead/>",
                ""
            )
        );
        let all = r(&["record 0", "record 1", "record 2", "record 3", "record 4"]);
        assert!(keys(&kind, all.as_bytes()).is_empty());
        assert!(all.ends_with("<!-- a comment between records -->\r\n  <Other><Lead><Id>not a record</Id></Lead></Other>\r\n</b:Batch>"), "{all}");
        assert!(all.starts_with("\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<!DOCTYPE b:Batch [<!ENTITY co \"ACME &amp; Co\">]>"));
    }

    #[test]
    fn attributes_in_the_record_element() {
        let kind = ContentKind::xml("//Lead/@id", Some("//Lead")).unwrap();
        let text =
            b"<a><Lead id=\"1\"/>\n<x><Lead id=\"2\">t</Lead></x>\n<Lead id=\"3\"></Lead></a>";
        assert_eq!(
            keys(&kind, text),
            [("1", "record 0"), ("2", "record 1"), ("3", "record 2")]
                .map(|(k, r)| (k.to_string(), r.to_string()))
        );
        assert_eq!(
            redacted(&kind, text, &["record 1", "record 2"]).unwrap(),
            b"<a><Lead id=\"1\"/>\n<x></x></a>"
        );
    }

    #[test]
    fn nested_records_unreadable_and_missing_ids_are_refused() {
        let kind = ContentKind::xml("//Lead/Id", Some("//Lead")).unwrap();
        let nested = b"<a><Lead><Id>1</Id><Lead><Id>2</Id></Lead></Lead></a>";
        let err = redacted(&kind, nested, &["record 0"]).unwrap_err();
        assert!(matches!(err, RedactError::Unreadable(_)), "{err}");
        let err = redacted(&kind, b"<a><Lead><Id>1</Id></Lead>", &["record 0"]).unwrap_err();
        assert!(err.to_string().contains("unclosed"), "{err}");
        let err = redacted(&kind, b"<a><Lead><Id>1</Id></Lead></b>", &["record 0"]).unwrap_err();
        assert!(matches!(err, RedactError::Unreadable(_)), "{err}");
        for ids in [&["record 1"][..], &["record 00"], &["row 2"], &["/a/0"]] {
            let err = redacted(&kind, b"<a><Lead><Id>1</Id></Lead></a>", ids).unwrap_err();
            assert!(matches!(err, RedactError::Missing { .. }), "{ids:?}: {err}");
        }
    }

    #[test]
    fn entities_are_never_expanded() {
        // The defusedxml bombs (nested, quadratic, cyclic, external), their
        // references inside records: a record is removed or kept as bytes;
        // nothing is expanded or fetched.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples/bad-input/xml");
        let kind = ContentKind::xml("/batch/Lead/Id", Some("/batch/Lead")).unwrap();
        for name in ["xmlbomb.xml", "quadratic.xml", "external.xml", "cyclic.xml"] {
            let text = String::from_utf8(std::fs::read(dir.join(name)).unwrap()).unwrap();
            let (prolog, body) = text.split_at(text.find("]>").unwrap() + 2);
            let body = body.trim();
            let first = format!("\n  <Lead><Id>1</Id>{body}</Lead>");
            let doc =
                format!("{prolog}\n<batch>{first}\n  <Lead><Id>2</Id>{body}</Lead>\n</batch>\n");
            let out = redacted(&kind, doc.as_bytes(), &["record 0"]).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                doc.replace(&first, ""),
                "{name}"
            );
        }
    }

    #[test]
    fn a_ubl_invoice_is_redacted_only_by_the_record_a_rule_names() {
        // No guessing: the buyer's PartyIdentification/ID sits in a Party,
        // which is not the buyer's record; a rule that names the whole
        // AccountingCustomerParty as its record removes the buyer's name
        // and address with the id, and the seller's stay.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples/payloads/xml/UBL-Invoice-2.1-Example.xml");
        let text = std::fs::read(&path).unwrap();
        let kind = ContentKind::xml(
            "/Invoice/AccountingCustomerParty/Party/PartyIdentification/ID",
            Some("/Invoice/AccountingCustomerParty"),
        )
        .unwrap();
        let found = keys(&kind, &text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, "record 0");
        let out = String::from_utf8(redacted(&kind, &text, &["record 0"]).unwrap()).unwrap();
        let before = String::from_utf8(text.clone()).unwrap();
        assert!(before.contains("AccountingCustomerParty"));
        assert!(!out.contains("AccountingCustomerParty"));
        assert!(out.contains("AccountingSupplierParty"));
        assert!(keys(&kind, out.as_bytes()).is_empty());
        // Every other byte is the input's.
        let start = before.find("<cac:AccountingCustomerParty>").unwrap();
        let end = before.find("</cac:AccountingCustomerParty>").unwrap()
            + "</cac:AccountingCustomerParty>".len();
        let blank = before[..start]
            .trim_end_matches([' ', '\t', '\r', '\n'])
            .len();
        assert_eq!(out, format!("{}{}", &before[..blank], &before[end..]));
    }
}
