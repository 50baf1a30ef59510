//! The redaction engine's keep mode (`lethe::apply::redact::extract`, what
//! an access export cuts a subject's records out of a shared file with)
//! against an independent byte model: random CSV, JSON and XML files are
//! generated piece by piece, so the generator knows each record's bytes and
//! what the file must be with only some of them. A random subset is kept;
//! the output must be exactly the model's, parse with the same rule and
//! yield exactly the kept records' keys, in order, and be what `redact`
//! makes of the file without every other record.

use std::collections::HashSet;

use lethe::apply::redact::{Redacted, extract, redact};
use lethe::config::ContentKind;
use lethe::index::extract::content;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Piece {
    Other(String),
    /// A record: its id, its key (if it has one), the whitespace before it
    /// that goes with it (XML), its bytes.
    Record {
        id: String,
        key: Option<String>,
        lead: String,
        text: String,
    },
}

#[derive(Clone, Debug)]
struct Model {
    pieces: Vec<Piece>,
    /// JSON: kept elements take the separator before them, the first kept
    /// one none; otherwise a record is its lead and its bytes.
    joined: bool,
}

impl Model {
    fn bytes(&self) -> Vec<u8> {
        self.only(&self.ids().into_iter().collect())
    }

    fn ids(&self) -> Vec<String> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Record { id, .. } => Some(id.clone()),
                Piece::Other(_) => None,
            })
            .collect()
    }

    /// The file with only the records `keep`.
    fn only(&self, keep: &HashSet<String>) -> Vec<u8> {
        let mut out = String::new();
        if !self.joined {
            for p in &self.pieces {
                match p {
                    Piece::Other(t) => out.push_str(t),
                    Piece::Record { id, lead, text, .. } if keep.contains(id) => {
                        out.push_str(lead);
                        out.push_str(text);
                    }
                    Piece::Record { .. } => {}
                }
            }
            return out.into_bytes();
        }
        // prefix, element, separator, element, ..., suffix
        let first = self
            .pieces
            .iter()
            .position(|p| matches!(p, Piece::Record { .. }));
        let last = self
            .pieces
            .iter()
            .rposition(|p| matches!(p, Piece::Record { .. }));
        let (Some(first), Some(last)) = (first, last) else {
            for p in &self.pieces {
                if let Piece::Other(t) = p {
                    out.push_str(t);
                }
            }
            return out.into_bytes();
        };
        for p in &self.pieces[..first] {
            if let Piece::Other(t) = p {
                out.push_str(t);
            }
        }
        let mut sep = "";
        let mut any = false;
        for p in &self.pieces[first..=last] {
            match p {
                Piece::Other(t) => sep = t,
                Piece::Record { id, text, .. } if keep.contains(id) => {
                    if any {
                        out.push_str(sep);
                    }
                    out.push_str(text);
                    any = true;
                }
                Piece::Record { .. } => {}
            }
        }
        for p in &self.pieces[last + 1..] {
            if let Piece::Other(t) = p {
                out.push_str(t);
            }
        }
        out.into_bytes()
    }

    fn keys_of(&self, keep: &HashSet<String>) -> Vec<String> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Record { id, key, .. } if keep.contains(id) => key.clone(),
                _ => None,
            })
            .collect()
    }
}

fn key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![1 => Just(None), 5 => (0u8..9).prop_map(|n| Some(format!("K{n}")))]
}

fn csv_model() -> impl Strategy<Value = Model> {
    let row = (
        key(),
        proptest::string::string_regex("[ab,\"\r\n é]{0,5}").unwrap(),
        prop_oneof![Just("\n"), Just("\r\n")],
        proptest::collection::vec(prop_oneof![Just("\n"), Just("\r\n")], 0..2),
    );
    (
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(row, 0..12),
    )
        .prop_map(|(bom, final_end, rows)| {
            let mut pieces = vec![Piece::Other(format!(
                "{}LeadId,Note\r\n",
                if bom { "\u{feff}" } else { "" }
            ))];
            let n = rows.len();
            for (i, (key, note, end, blanks)) in rows.into_iter().enumerate() {
                let last = i + 1 == n;
                let mut text = format!(
                    "{},\"{}\"",
                    key.clone().unwrap_or_default(),
                    note.replace('"', "\"\"")
                );
                if !last || final_end {
                    text.push_str(end);
                }
                pieces.push(Piece::Record {
                    id: format!("row {}", i + 2),
                    key,
                    lead: String::new(),
                    text,
                });
                if !last || final_end {
                    pieces.extend(blanks.into_iter().map(|b| Piece::Other(b.into())));
                }
            }
            Model {
                pieces,
                joined: false,
            }
        })
}

fn ws() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["", " ", "\n", "\n  ", "\r\n\t"])
}

fn json_model() -> impl Strategy<Value = Model> {
    let element = (
        key(),
        proptest::string::string_regex("[a\"\\\\\\]\\[{},:é\n]{0,5}").unwrap(),
        ws(),
        ws(),
    );
    (any::<bool>(), proptest::collection::vec(element, 0..10), ws())
        .prop_map(|(bom, elements, w)| {
            let mut pieces = vec![Piece::Other(format!(
                "{}{{{w}\"meta\": {{\"records\": [{{\"lead\": {{\"id\": \"K99\"}}}}]}},{w}\"records\":{w}[{w}",
                if bom { "\u{feff}" } else { "" }
            ))];
            let n = elements.len();
            for (i, (key, note, a, b)) in elements.into_iter().enumerate() {
                let id = key
                    .as_ref()
                    .map_or("null".to_string(), |k| serde_json::to_string(k).unwrap());
                let note = serde_json::to_string(&note).unwrap();
                pieces.push(Piece::Record {
                    id: format!("/records/{i}"),
                    key,
                    lead: String::new(),
                    text: format!("{{\"note\":{a}{note},{b}\"lead\":{{\"id\":{id}}}}}"),
                });
                if i + 1 < n {
                    pieces.push(Piece::Other(format!("{a},{b}")));
                }
            }
            pieces.push(Piece::Other(format!("{w}],{w}\"n\": [[], {{}}, \"]\"]}}\n")));
            Model {
                pieces,
                joined: true,
            }
        })
}

fn xml_model() -> impl Strategy<Value = Model> {
    let child = prop_oneof![
        4 => (key(), 0u8..3).prop_map(|(k, note)| (Some(k), note)),
        1 => (0u8..3).prop_map(|n| (None, n)),
    ];
    (
        any::<bool>(),
        proptest::collection::vec((child, ws()), 0..10),
        ws(),
    )
        .prop_map(|(decl, children, last)| {
            let mut head = String::new();
            if decl {
                head.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<!-- batch -->\n");
            }
            head.push_str("<b:Batch xmlns:b=\"urn:b\" xmlns=\"urn:d\">");
            let mut pieces = vec![Piece::Other(head)];
            let mut ordinal = 0;
            for ((record, n), gap) in children {
                match record {
                    Some(key) => {
                        let note = match n {
                            0 => "",
                            1 => "<Note>R&amp;D &lt;x&gt;</Note>",
                            _ => "<Note><![CDATA[</b:Lead><b:Lead><Id>K98</Id>]]></Note>",
                        };
                        let text = match &key {
                            Some(k) => format!("<b:Lead><b:Id>{k}</b:Id>{note}</b:Lead>"),
                            None => "<b:Lead kind=\"a&amp;b\"/>".to_string(),
                        };
                        pieces.push(Piece::Record {
                            id: format!("record {ordinal}"),
                            key,
                            lead: gap.into(),
                            text,
                        });
                        ordinal += 1;
                    }
                    None => {
                        let text = match n {
                            0 => "<Other><Lead><Id>K97</Id></Lead></Other>",
                            1 => "<!-- <b:Lead><b:Id>K96</b:Id></b:Lead> -->",
                            _ => "<?pi x?>",
                        };
                        pieces.push(Piece::Other(format!("{gap}{text}")));
                    }
                }
            }
            pieces.push(Piece::Other(format!("{last}</b:Batch>\n")));
            Model {
                pieces,
                joined: false,
            }
        })
}

fn keys(kind: &ContentKind, bytes: &[u8]) -> Vec<String> {
    content(
        kind,
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        bytes.len() as u64,
        1 << 30,
        1 << 30,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)))
    .into_iter()
    .map(|f| f.key)
    .collect()
}

fn check(kind: &ContentKind, model: &Model, pick: &[bool]) -> Result<(), TestCaseError> {
    let input = model.bytes();
    let ids = model.ids();
    let keep: HashSet<String> = ids
        .iter()
        .zip(pick.iter().cycle())
        .filter(|(_, p)| **p)
        .map(|(id, _)| id.clone())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object");
    std::fs::write(&path, &input).unwrap();
    let mut out = Vec::new();
    let r = extract(kind, &std::fs::File::open(&path).unwrap(), &mut out, &keep)
        .unwrap_or_else(|e| panic!("{e}"));
    prop_assert_eq!(
        r,
        Redacted {
            records_removed: (ids.len() - keep.len()) as u64,
            bytes_in: input.len() as u64,
            bytes_out: out.len() as u64,
        }
    );
    let want = model.only(&keep);
    prop_assert!(
        out == want,
        "got {:?}\nwant {:?}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
    prop_assert_eq!(keys(kind, &out), model.keys_of(&keep));
    // Keeping some is removing the others.
    let others: HashSet<String> = ids.into_iter().filter(|i| !keep.contains(i)).collect();
    let mut redacted = Vec::new();
    let _ = redact(
        kind,
        &std::fs::File::open(&path).unwrap(),
        &mut redacted,
        &others,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    prop_assert!(out == redacted);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn csv_extraction_keeps_exactly_the_named_rows(model in csv_model(), pick in proptest::collection::vec(any::<bool>(), 1..6)) {
        let kind = ContentKind::Csv { column: "LeadId".into(), delimiter: None };
        check(&kind, &model, &pick)?;
    }

    #[test]
    fn json_extraction_keeps_the_envelope_and_the_named_elements(model in json_model(), pick in proptest::collection::vec(any::<bool>(), 1..6)) {
        let kind = ContentKind::json("$.records[*].lead.id", Some("$.records[*]")).unwrap();
        check(&kind, &model, &pick)?;
        let out = model.only(&HashSet::new());
        let text = out.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&out);
        prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok());
    }

    #[test]
    fn xml_extraction_keeps_the_prolog_root_and_the_named_records(model in xml_model(), pick in proptest::collection::vec(any::<bool>(), 1..6)) {
        let kind = ContentKind::xml("/Batch/Lead/Id", Some("/Batch/Lead")).unwrap();
        check(&kind, &model, &pick)?;
    }
}
