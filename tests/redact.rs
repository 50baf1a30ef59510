//! The redaction engine (`lethe::apply::redact`) against an independent
//! model: random CSV, JSON and XML files are generated piece by piece, so
//! the generator knows each record's bytes and what the file must be
//! without any subset of them. A random subset is redacted; the output must
//! be exactly the model's, parse with the same rule and yield exactly the
//! kept records' links, keys in order. And large files redact in bounded
//! memory.

use std::collections::HashSet;
use std::io::{BufWriter, Write};

use lethe::apply::redact::{Redacted, redact};
use lethe::config::ContentKind;
use lethe::index::extract::{Found, content};
use proptest::prelude::*;

/// A generated file: pieces in order, each either a record (with its id,
/// its key if it has one) or bytes that belong to no record.
#[derive(Clone, Debug)]
struct Model {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
enum Piece {
    Other(Vec<u8>),
    Record {
        id: String,
        key: Option<String>,
        bytes: Vec<u8>,
        /// Bytes before the record that go with it when it is removed and
        /// stay when it is kept (XML's whitespace; JSON's separator is the
        /// model's own rule, below).
        lead: Vec<u8>,
    },
}

impl Model {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.pieces {
            match p {
                Piece::Other(b) => out.extend_from_slice(b),
                Piece::Record { bytes, lead, .. } => {
                    out.extend_from_slice(lead);
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    fn ids(&self) -> Vec<&str> {
        self.records().map(|(id, _)| id).collect()
    }

    fn records(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Record { id, key, .. } => Some((id.as_str(), key.as_deref())),
            Piece::Other(_) => None,
        })
    }

    /// CSV rows and XML elements: a removed record takes its own bytes
    /// (and its lead) and nothing else.
    fn without(&self, remove: &HashSet<String>) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.pieces {
            match p {
                Piece::Other(b) => out.extend_from_slice(b),
                Piece::Record { id, .. } if remove.contains(id) => {}
                Piece::Record { bytes, lead, .. } => {
                    out.extend_from_slice(lead);
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    /// JSON: the pieces are prefix, element, separator, element, ...,
    /// suffix. The result is the bytes before the first element, then the
    /// kept elements each preceded by the separator that preceded it in the
    /// input (the first kept one by none), then the bytes after the last.
    fn without_joined(&self, remove: &HashSet<String>) -> Vec<u8> {
        let first = self
            .pieces
            .iter()
            .position(|p| matches!(p, Piece::Record { .. }));
        let Some(first) = first else {
            return self.bytes();
        };
        let last = self
            .pieces
            .iter()
            .rposition(|p| matches!(p, Piece::Record { .. }))
            .unwrap_or(first);
        let mut out = Vec::new();
        for p in &self.pieces[..first] {
            if let Piece::Other(b) = p {
                out.extend_from_slice(b);
            }
        }
        let mut kept_any = false;
        let mut sep: &[u8] = &[];
        for p in &self.pieces[first..=last] {
            match p {
                Piece::Other(b) => sep = b,
                Piece::Record { id, bytes, .. } => {
                    if !remove.contains(id) {
                        if kept_any {
                            out.extend_from_slice(sep);
                        }
                        out.extend_from_slice(bytes);
                        kept_any = true;
                    }
                }
            }
        }
        for p in &self.pieces[last + 1..] {
            if let Piece::Other(b) = p {
                out.extend_from_slice(b);
            }
        }
        out
    }
}

// ── generators ─────────────────────────────────────────────────────────

fn key() -> impl Strategy<Value = Option<String>> {
    // Keys repeat across records (a file may name an entity twice), some
    // records have none.
    prop_oneof![
        1 => Just(None),
        6 => (0u8..12).prop_map(|n| Some(format!("K{n}"))),
    ]
}

fn csv_field_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c \"\r\n,;\t|\u{e9}]{0,6}").unwrap()
}

/// A CSV field as written: quoted when it must be (or at random).
fn csv_field(text: &str, delimiter: u8, quote: bool) -> String {
    let must = text
        .bytes()
        .any(|b| b == delimiter || b == b'"' || b == b'\r' || b == b'\n');
    if must || quote {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[derive(Clone, Debug)]
struct CsvRow {
    key: Option<String>,
    note: String,
    quote: (bool, bool),
    end: &'static str,
    blanks: Vec<&'static str>,
}

fn csv_model() -> impl Strategy<Value = (Model, Option<u8>)> {
    let row = (
        key(),
        csv_field_text(),
        (any::<bool>(), any::<bool>()),
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        proptest::collection::vec(prop_oneof![Just("\n"), Just("\r\n")], 0..2),
    )
        .prop_map(|(key, note, quote, end, blanks)| CsvRow {
            key,
            note,
            quote,
            end,
            blanks,
        });
    (
        proptest::sample::select(vec![b',', b';', b'\t', b'|']),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(row, 0..24),
    )
        .prop_map(|(d, sniff, bom, key_first, final_end, rows)| {
            let ds = (d as char).to_string();
            let mut pieces = Vec::new();
            let mut header = if bom {
                "\u{feff}".to_string()
            } else {
                String::new()
            };
            header.push_str(&if key_first {
                format!("LeadId{ds}Note\r\n")
            } else {
                format!("Note{ds}LeadId\r\n")
            });
            pieces.push(Piece::Other(header.into_bytes()));
            let n = rows.len();
            for (i, r) in rows.into_iter().enumerate() {
                let k = csv_field(r.key.as_deref().unwrap_or(""), d, r.quote.0);
                let note = csv_field(&r.note, d, r.quote.1);
                let mut line = if key_first {
                    format!("{k}{ds}{note}")
                } else {
                    format!("{note}{ds}{k}")
                };
                let last = i + 1 == n;
                if !last || final_end {
                    line.push_str(r.end);
                }
                pieces.push(Piece::Record {
                    id: format!("row {}", i + 2),
                    key: r.key,
                    bytes: line.into_bytes(),
                    lead: Vec::new(),
                });
                if !last || final_end {
                    for b in r.blanks {
                        // A blank `\n` after a lone `\r` would make that
                        // row's line end `\r\n`.
                        let b = if r.end == "\r" && b == "\n" {
                            "\r\n"
                        } else {
                            b
                        };
                        pieces.push(Piece::Other(b.as_bytes().to_vec()));
                    }
                }
            }
            (Model { pieces }, if sniff { None } else { Some(d) })
        })
}

fn json_string_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c\"\\\\/\\]\\[{},:\u{e9}\u{1f600}\n\t\u{1}]{0,6}").unwrap()
}

/// A JSON string, each character escaped at random (`\uXXXX`) where it
/// need not be.
fn json_string(text: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(text).unwrap();
    }
    let mut s = String::from("\"");
    for unit in text.encode_utf16() {
        s.push_str(&format!("\\u{unit:04x}"));
    }
    s.push('"');
    s
}

fn ws() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["", " ", "\n", "\n  ", "\r\n\t", "  \n    "])
}

#[derive(Clone, Debug)]
struct JsonElement {
    key: Option<String>,
    number: bool,
    escape: bool,
    note: String,
    lead_first: bool,
    ws: [&'static str; 4],
}

fn json_element() -> impl Strategy<Value = JsonElement> {
    (
        key(),
        any::<bool>(),
        any::<bool>(),
        json_string_text(),
        any::<bool>(),
        [ws(), ws(), ws(), ws()],
    )
        .prop_map(|(key, number, escape, note, lead_first, ws)| JsonElement {
            key,
            number,
            escape,
            note,
            lead_first,
            ws,
        })
}

impl JsonElement {
    fn text(&self) -> (String, Option<String>) {
        let [a, b, c, d] = self.ws;
        let (id, key) = match &self.key {
            // A number key is its digits.
            Some(k) if self.number => {
                let digits = k.trim_start_matches('K');
                (digits.to_string(), Some(digits.to_string()))
            }
            Some(k) => (json_string(k, self.escape), Some(k.clone())),
            None => ("null".to_string(), None),
        };
        let lead = format!(
            "{}:{a}{{{b}\"id\"{c}:{d}{id}}}",
            json_string("lead", self.escape)
        );
        let note = format!(
            "{}:{a}{}",
            json_string("note", self.escape),
            json_string(&self.note, false)
        );
        let body = if self.lead_first {
            format!("{{{a}{lead},{b}{note}{c}}}")
        } else {
            format!("{{{note},{d}{lead}}}")
        };
        (body, key)
    }
}

fn json_model() -> impl Strategy<Value = (Model, ContentKind)> {
    (
        any::<bool>(),
        proptest::collection::vec(proptest::sample::select(vec!["w", "a b", "x~/y"]), 0..3),
        json_string_text(),
        proptest::collection::vec((json_element(), ws(), ws()), 0..16),
        [ws(), ws(), ws()],
    )
        .prop_map(|(bom, wrap, meta, elements, [w0, w1, w2])| {
            let mut prefix = String::new();
            if bom {
                prefix.push('\u{feff}');
            }
            let mut suffix = String::new();
            let mut path = String::from("$");
            let mut pointer = String::new();
            for name in &wrap {
                prefix.push_str(&format!(
                    "{{{w0}\"meta\":{w1}{},{w2}{}:{w0}",
                    json_string(&meta, false),
                    json_string(name, false)
                ));
                suffix.insert_str(0, &format!("{w1}}}"));
                path.push_str(&format!("['{name}']"));
                pointer.push_str(&format!("/{}", name.replace('~', "~0").replace('/', "~1")));
            }
            prefix.push_str(&format!("{{\"records\":{w1}[{w2}"));
            suffix.insert_str(0, &format!("{w0}],{w1}\"n\":{w2}[[], {{}}, \"]\"]}}"));
            let mut pieces = vec![Piece::Other(prefix.into_bytes())];
            let n = elements.len();
            for (i, (e, before, after)) in elements.into_iter().enumerate() {
                let (text, key) = e.text();
                pieces.push(Piece::Record {
                    id: format!("{pointer}/records/{i}"),
                    key,
                    bytes: text.into_bytes(),
                    lead: Vec::new(),
                });
                if i + 1 < n {
                    pieces.push(Piece::Other(format!("{before},{after}").into_bytes()));
                }
            }
            pieces.push(Piece::Other(suffix.into_bytes()));
            let kind = ContentKind::json(
                &format!("{path}.records[*].lead.id"),
                Some(&format!("{path}['records'][*]")),
            )
            .unwrap();
            (Model { pieces }, kind)
        })
}

#[derive(Clone, Debug)]
enum XmlChild {
    Record {
        key: Option<String>,
        prefixed: bool,
        empty: bool,
        cdata_key: bool,
        note: u8,
    },
    Other(u8),
}

fn xml_child() -> impl Strategy<Value = XmlChild> {
    prop_oneof![
        5 => (key(), any::<bool>(), any::<bool>(), any::<bool>(), 0u8..4).prop_map(
            |(key, prefixed, empty, cdata_key, note)| XmlChild::Record {
                key,
                prefixed,
                empty,
                cdata_key,
                note
            }
        ),
        1 => (0u8..3).prop_map(XmlChild::Other),
    ]
}

fn xml_model() -> impl Strategy<Value = Model> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec((xml_child(), ws()), 0..16),
        ws(),
    )
        .prop_map(|(bom, decl, prefixed_root, children, last_ws)| {
            let mut head = String::new();
            if bom {
                head.push('\u{feff}');
            }
            if decl {
                head.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<!-- batch -->\n");
            }
            let root = if prefixed_root { "b:Batch" } else { "Batch" };
            head.push_str(&format!("<{root} xmlns:b=\"urn:b\" xmlns=\"urn:d\">"));
            let mut pieces = vec![Piece::Other(head.into_bytes())];
            let mut ordinal = 0;
            for (child, gap) in children {
                match child {
                    XmlChild::Record {
                        key,
                        prefixed,
                        empty,
                        cdata_key,
                        note,
                    } => {
                        let name = if prefixed { "x:Lead" } else { "Lead" };
                        let ns = if prefixed { " xmlns:x=\"urn:x\"" } else { "" };
                        let (text, key) = if empty && key.is_none() {
                            (format!("<{name}{ns} kind=\"a&amp;b\"/>"), None)
                        } else {
                            let id = match &key {
                                Some(k) if cdata_key => format!("<Id><![CDATA[ {k} ]]></Id>"),
                                Some(k) => format!("<Id>\n  {k}\n</Id>"),
                                None => String::new(),
                            };
                            let note = match note {
                                0 => "",
                                1 => "<Note>R&amp;D &lt;team&gt; &#xe9;</Note>",
                                2 => "<Note><![CDATA[</Lead><Lead><Id>K99</Id>]]></Note>",
                                _ => "<!-- </Lead> --><?pi x?>",
                            };
                            (format!("<{name}{ns}>{note}{id}</{name}>"), key)
                        };
                        pieces.push(Piece::Record {
                            id: format!("record {ordinal}"),
                            key,
                            bytes: text.into_bytes(),
                            lead: gap.as_bytes().to_vec(),
                        });
                        ordinal += 1;
                    }
                    XmlChild::Other(n) => {
                        let text = match n {
                            0 => "<Other><Lead><Id>K50</Id></Lead></Other>",
                            1 => "<!-- <Lead><Id>K51</Id></Lead> -->",
                            _ => "<Lead2><Id>K52</Id></Lead2>",
                        };
                        pieces.push(Piece::Other(format!("{gap}{text}").into_bytes()));
                    }
                }
            }
            pieces.push(Piece::Other(format!("{last_ws}</{root}>\n").into_bytes()));
            Model { pieces }
        })
}

// ── the check ──────────────────────────────────────────────────────────

fn links(kind: &ContentKind, bytes: &[u8]) -> Vec<Found> {
    let slice = content(
        kind,
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        bytes.len() as u64,
        1 << 30,
        1 << 30,
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)));
    // The listed size decides the reader: past the in-memory bound, the
    // same bytes stream.
    let streamed = content(
        kind,
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        u64::MAX,
        1 << 30,
        1 << 30,
    )
    .unwrap();
    assert_eq!(slice, streamed, "in memory and streamed");
    slice
}

/// Redacts `model` under `kind` without the records `pick` chooses, and
/// checks the result against `expected`, the extractor and the model.
fn check(
    kind: &ContentKind,
    model: &Model,
    pick: &[bool],
    expected: impl Fn(&HashSet<String>) -> Vec<u8>,
) -> Result<(), TestCaseError> {
    let input = model.bytes();
    let found = links(kind, &input);
    // The extractor names the model's records, in order.
    let model_links: Vec<(String, String)> = model
        .records()
        .filter_map(|(id, key)| key.map(|k| (k.to_string(), id.to_string())))
        .collect();
    let got: Vec<(String, String)> = found
        .iter()
        .map(|f| (f.key.clone(), f.record.clone().expect("a record per value")))
        .collect();
    prop_assert_eq!(&got, &model_links);

    let ids = model.ids();
    let remove: HashSet<String> = ids
        .iter()
        .zip(pick.iter().cycle())
        .filter(|(_, p)| **p)
        .map(|(id, _)| id.to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object");
    std::fs::write(&path, &input).unwrap();
    let mut out = Vec::new();
    let r = redact(
        kind,
        &std::fs::File::open(&path).unwrap(),
        &mut out,
        &remove,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    prop_assert_eq!(
        r,
        Redacted {
            records_removed: remove.len() as u64,
            bytes_in: input.len() as u64,
            bytes_out: out.len() as u64,
        }
    );
    // Exactly the model's bytes: every kept record, and every byte outside
    // the removed ones, as they were.
    let want = expected(&remove);
    prop_assert!(
        out == want,
        "got {:?}\nwant {:?}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
    // The output parses with the same rule and yields the kept links.
    let kept: Vec<String> = model
        .records()
        .filter(|(id, _)| !remove.contains(*id))
        .filter_map(|(_, k)| k.map(str::to_string))
        .collect();
    let after: Vec<String> = links(kind, &out).into_iter().map(|f| f.key).collect();
    prop_assert_eq!(after, kept);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn csv_redaction_keeps_every_other_byte((model, delimiter) in csv_model(), pick in proptest::collection::vec(any::<bool>(), 1..8)) {
        let kind = ContentKind::Csv { column: "LeadId".into(), delimiter };
        check(&kind, &model, &pick, |r| model.without(r))?;
    }

    #[test]
    fn json_redaction_keeps_every_other_byte((model, kind) in json_model(), pick in proptest::collection::vec(any::<bool>(), 1..8)) {
        check(&kind, &model, &pick, |r| model.without_joined(r))?;
        // The output is JSON.
        let out_model = model.without_joined(&model.ids().iter().map(|s| s.to_string()).collect());
        let text = out_model.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&out_model);
        prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok());
    }

    #[test]
    fn xml_redaction_keeps_every_other_byte(model in xml_model(), pick in proptest::collection::vec(any::<bool>(), 1..8)) {
        let kind = ContentKind::xml("/Batch/Lead/Id", Some("/Batch/Lead")).unwrap();
        check(&kind, &model, &pick, |r| model.without(r))?;
    }
}

// ── bounded memory ─────────────────────────────────────────────────────

/// The peak resident memory since the last reset, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn current_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Redacts the file at `path` into a file, and returns the result and how
/// far the resident memory rose above where it was (when measurable).
fn redact_measured(
    kind: &ContentKind,
    path: &std::path::Path,
    remove: &HashSet<String>,
) -> (Redacted, Option<u64>, std::time::Duration) {
    let out_path = path.with_extension("out");
    let mut out = BufWriter::new(std::fs::File::create(&out_path).unwrap());
    // Resets the peak to the current resident size (Linux >= 4.0).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let base = current_rss();
    let t = std::time::Instant::now();
    let r = redact(kind, &std::fs::File::open(path).unwrap(), &mut out, remove)
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    drop(out);
    let rise = match (reset, base, peak_rss()) {
        (true, Some(b), Some(p)) => Some(p.saturating_sub(b)),
        _ => None,
    };
    assert_eq!(
        std::fs::metadata(&out_path).unwrap().len(),
        r.bytes_out,
        "what was written"
    );
    std::fs::remove_file(&out_path).unwrap();
    (r, rise, took)
}

/// Writes `n` CSV rows streaming (the test never holds the file either).
fn write_csv(path: &std::path::Path, n: u64) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    w.write_all(b"LeadId,Email,Note\r\n").unwrap();
    for i in 0..n {
        write!(
            w,
            "{i},lead{i}@example.com,\"a note, with a comma\r\nand a line end, number {i}\"\r\n"
        )
        .unwrap();
    }
}

const MIB: u64 = 1 << 20;

/// 48 MB of CSV, 18 MB of JSON and of XML, every 10th record removed: the
/// resident memory rises by far less than the file (a few buffers and the
/// removed records' spans), and the output is a tenth smaller.
#[test]
fn large_files_redact_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("big.csv");
    let rows = 600_000;
    write_csv(&csv, rows);
    let size = std::fs::metadata(&csv).unwrap().len();
    assert!(size > 45 * MIB, "{size}");
    let remove: HashSet<String> = (0..rows)
        .step_by(10)
        .map(|i| format!("row {}", i + 2))
        .collect();
    let kind = ContentKind::Csv {
        column: "LeadId".into(),
        delimiter: None,
    };
    let (r, rise, took) = redact_measured(&kind, &csv, &remove);
    assert_eq!(r.records_removed, rows / 10);
    assert!(r.bytes_out < size && r.bytes_out > size * 8 / 10, "{r:?}");
    eprintln!(
        "csv: {} MiB in {took:?}, memory rose {:?} KiB",
        size / MIB,
        rise.map(|b| b / 1024)
    );
    if let Some(rise) = rise {
        assert!(
            rise < 16 * MIB,
            "memory rose by {rise} bytes for a {size}-byte file"
        );
    }

    let json = dir.path().join("big.json");
    let n = 200_000u64;
    {
        let mut w = BufWriter::new(std::fs::File::create(&json).unwrap());
        w.write_all(b"{\"records\": [\n").unwrap();
        for i in 0..n {
            let sep = if i + 1 < n { "," } else { "" };
            writeln!(
                w,
                "  {{\"lead\": {{\"id\": {i}}}, \"email\": \"lead{i}@example.com\", \"note\": \"\\\"quoted\\\" ]}}, [{{\"}}{sep}"
            )
            .unwrap();
        }
        w.write_all(b"]}\n").unwrap();
    }
    let size = std::fs::metadata(&json).unwrap().len();
    assert!(size > 16 * MIB, "{size}");
    let remove: HashSet<String> = (0..n)
        .step_by(10)
        .map(|i| format!("/records/{i}"))
        .collect();
    let kind = ContentKind::json("$.records[*].lead.id", Some("$.records[*]")).unwrap();
    let (r, rise, took) = redact_measured(&kind, &json, &remove);
    assert_eq!(r.records_removed, n / 10);
    eprintln!(
        "json: {} MiB in {took:?}, memory rose {:?} KiB",
        size / MIB,
        rise.map(|b| b / 1024)
    );
    if let Some(rise) = rise {
        assert!(
            rise < 16 * MIB,
            "memory rose by {rise} bytes for a {size}-byte file"
        );
    }

    let xml = dir.path().join("big.xml");
    {
        let mut w = BufWriter::new(std::fs::File::create(&xml).unwrap());
        w.write_all(b"<?xml version=\"1.0\"?>\n<b:Batch xmlns:b=\"urn:b\">\n")
            .unwrap();
        for i in 0..n {
            writeln!(
                w,
                "  <b:Lead><Id>{i}</Id><Email>lead{i}@example.com</Email><Note><![CDATA[</b:Lead>]]> &amp; more</Note></b:Lead>"
            )
            .unwrap();
        }
        w.write_all(b"</b:Batch>\n").unwrap();
    }
    let size = std::fs::metadata(&xml).unwrap().len();
    assert!(size > 16 * MIB, "{size}");
    let remove: HashSet<String> = (0..n).step_by(10).map(|i| format!("record {i}")).collect();
    let kind = ContentKind::xml("/Batch/Lead/Id", Some("/Batch/Lead")).unwrap();
    let (r, rise, took) = redact_measured(&kind, &xml, &remove);
    assert_eq!(r.records_removed, n / 10);
    eprintln!(
        "xml: {} MiB in {took:?}, memory rose {:?} KiB",
        size / MIB,
        rise.map(|b| b / 1024)
    );
    if let Some(rise) = rise {
        assert!(
            rise < 16 * MIB,
            "memory rose by {rise} bytes for a {size}-byte file"
        );
    }
}

/// The issue's figure: a 1 GB CSV, 10% of its rows removed, in bounded
/// memory. About a minute in a debug build; run with
/// `cargo test --release --test redact -- --ignored --nocapture`.
#[test]
#[ignore = "writes and redacts 1 GB; run on demand with --ignored"]
fn a_gigabyte_csv_redacts_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("huge.csv");
    let rows = 12_500_000;
    write_csv(&csv, rows);
    let size = std::fs::metadata(&csv).unwrap().len();
    assert!(size > 1000 * MIB, "{size}");
    let remove: HashSet<String> = (0..rows)
        .step_by(10)
        .map(|i| format!("row {}", i + 2))
        .collect();
    let kind = ContentKind::Csv {
        column: "LeadId".into(),
        delimiter: None,
    };
    let (r, rise, took) = redact_measured(&kind, &csv, &remove);
    assert_eq!(r.records_removed, rows / 10);
    eprintln!(
        "csv: {} MiB in {took:?} ({:.0} MiB/s), memory rose {:?} KiB with {} ids to remove",
        size / MIB,
        size as f64 / MIB as f64 / took.as_secs_f64(),
        rise.map(|b| b / 1024),
        remove.len()
    );
    if let Some(rise) = rise {
        // The spans of 1.25M removed rows (16 bytes each) and a few buffers.
        assert!(
            rise < 64 * MIB,
            "memory rose by {rise} bytes for a {size}-byte file"
        );
    }
}
