//! CSV records are rows, numbered as the extractor numbers them
//! (`index::extract`'s csv.rs: the header is row 1, blank lines are no
//! rows, quoted fields may hold delimiters and line ends). Row boundaries
//! come from csv-core, the state machine under the csv crate the extractor
//! reads with, with the same settings; it is driven here over a buffer and
//! its field output is thrown away, so that not even one row is held. A row
//! is cut from its first byte through its own line end (`\r\n`, `\n` or a
//! lone `\r`), so kept rows, blank lines and a missing final line end stay
//! exactly as they were.

use std::collections::HashSet;
use std::io::BufRead;

use super::{Cutter, Named, RedactError, Spans, open_past_bom};

/// The spans of the rows to cut.
pub(super) fn spans(
    input: &std::fs::File,
    delimiter: Option<u8>,
    named: Named<'_>,
) -> Result<Spans, RedactError> {
    let wanted = rows(named.ids);
    let delimiter = match delimiter {
        Some(d) => d,
        // As the extractor does: on the first line past the mark.
        None => {
            let (mut r, _) = open_past_bom(input)?;
            let head = crate::index::extract::csv_first_line(&mut r).map_err(RedactError::Read)?;
            crate::index::extract::sniff_delimiter(&head)
        }
    };
    let (mut r, base) = open_past_bom(input)?;
    let mut rows = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
    // Field bytes are not needed: csv-core reports a full buffer, and is
    // called again with the same one.
    let (mut fields, mut ends) = ([0u8; 4096], [0usize; 64]);
    let mut at = base;
    let mut row = 0u64;
    let mut spans = Spans::default();
    let mut cutter = Cutter::exact();
    loop {
        // Blank lines, and the `\n` of a `\r\n` taken below: csv-core
        // discards them before a record, so they belong to no row.
        if !skip_line_ends(&mut r, &mut at)? {
            break;
        }
        let start = at;
        let mut last = 0u8;
        loop {
            let buf = r.fill_buf().map_err(RedactError::Read)?;
            let eof = buf.is_empty();
            let (res, nin, _, _) = rows.read_record(buf, &mut fields, &mut ends);
            if nin > 0 {
                last = buf[nin - 1];
            }
            r.consume(nin);
            at += nin as u64;
            match res {
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
                _ if eof => break,
                _ => {}
            }
        }
        // csv-core ends a record at the `\r` of `\r\n`: the row's line end
        // is both bytes.
        if last == b'\r' && r.fill_buf().map_err(RedactError::Read)?.first() == Some(&b'\n') {
            r.consume(1);
            at += 1;
        }
        row += 1;
        if row == 1 {
            continue; // the header
        }
        let is_named = wanted.contains(&row);
        if is_named {
            spans.found();
        }
        spans.record(&mut cutter, start..at, named.cuts(is_named));
    }
    Ok(spans)
}

/// The row numbers of the ids that are row ids exactly as the extractor
/// writes them (`row 7`); any other id is found nowhere.
fn rows(ids: &HashSet<String>) -> HashSet<u64> {
    ids.iter()
        .filter_map(|id| {
            let n: u64 = id.strip_prefix("row ")?.parse().ok()?;
            (row_id(n) == *id).then_some(n)
        })
        .collect()
}

fn row_id(n: u64) -> String {
    format!("row {n}")
}

/// Skips `\r` and `\n` bytes; `false` at the end of the file.
fn skip_line_ends(r: &mut impl BufRead, at: &mut u64) -> Result<bool, RedactError> {
    loop {
        let buf = r.fill_buf().map_err(RedactError::Read)?;
        if buf.is_empty() {
            return Ok(false);
        }
        let n = buf
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(buf.len());
        let more = n == buf.len();
        r.consume(n);
        *at += n as u64;
        if !more {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use crate::apply::redact::{RedactError, redact};
    use crate::config::ContentKind;

    fn kind() -> ContentKind {
        ContentKind::Csv {
            column: "LeadId".into(),
            delimiter: None,
        }
    }

    use crate::apply::redact::test_support::links;

    /// Redacts `text`, removing the rows holding `keys`; checks the result
    /// against the extractor and returns it.
    fn without(kind: &ContentKind, text: &[u8], keys: &[&str]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, text).unwrap();
        let before = links(kind, text);
        let remove: HashSet<String> = before
            .iter()
            .filter(|f| keys.contains(&f.key.as_str()))
            .map(|f| f.record.clone().unwrap())
            .collect();
        assert_eq!(remove.len(), keys.len(), "each key in one row");
        let mut out = Vec::new();
        let r = redact(
            kind,
            &std::fs::File::open(&path).unwrap(),
            &mut out,
            &remove,
        )
        .unwrap();
        assert_eq!(r.records_removed, keys.len() as u64);
        assert_eq!(
            (r.bytes_in, r.bytes_out),
            (text.len() as u64, out.len() as u64)
        );
        let kept: Vec<String> = before
            .iter()
            .map(|f| f.key.clone())
            .filter(|k| !keys.contains(&k.as_str()))
            .collect();
        let after: Vec<String> = links(kind, &out).into_iter().map(|f| f.key).collect();
        assert_eq!(after, kept, "{:?}", String::from_utf8_lossy(&out));
        out
    }

    #[test]
    fn quoted_newlines_and_delimiters_stay_in_their_row() {
        let text = b"Name,LeadId,Note\r\n\"Doe, Jane\",1,\"two\r\nlines\"\r\nRoe,2,\"a \"\"quote\"\"\"\r\n\"Poe\nEd\",3,x\r\n";
        assert_eq!(
            without(&kind(), text, &["1"]),
            b"Name,LeadId,Note\r\nRoe,2,\"a \"\"quote\"\"\"\r\n\"Poe\nEd\",3,x\r\n"
        );
        assert_eq!(
            without(&kind(), text, &["2"]),
            b"Name,LeadId,Note\r\n\"Doe, Jane\",1,\"two\r\nlines\"\r\n\"Poe\nEd\",3,x\r\n"
        );
        assert_eq!(
            without(&kind(), text, &["1", "2", "3"]),
            b"Name,LeadId,Note\r\n"
        );
    }

    #[test]
    fn bom_mixed_line_ends_blank_lines_and_no_final_newline() {
        let text = b"\xef\xbb\xbfLeadId;Name\n1;a\r\n\r\n2;b\n\n3;c\r4;d";
        // Row 3 (key 2) goes with its own `\n`; the blank lines stay.
        assert_eq!(
            without(&kind(), text, &["2"]),
            b"\xef\xbb\xbfLeadId;Name\n1;a\r\n\r\n\n3;c\r4;d"
        );
        // The last row, without a line end: the row before keeps its own.
        assert_eq!(
            without(&kind(), text, &["4"]),
            b"\xef\xbb\xbfLeadId;Name\n1;a\r\n\r\n2;b\n\n3;c\r"
        );
        assert_eq!(
            without(&kind(), text, &["1", "3"]),
            b"\xef\xbb\xbfLeadId;Name\n\r\n2;b\n\n4;d"
        );
    }

    #[test]
    fn row_numbers_are_the_extractors_on_the_csv_spectrum() {
        // Every row of the hostile samples, removed one at a time and all
        // at once: the rest reads the same rows with the same keys.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
        let cases = [
            ("bad-input/csv/comma_in_quotes.csv", "first"),
            ("bad-input/csv/escaped_quotes.csv", "a"),
            ("bad-input/csv/quotes_and_newlines.csv", "a"),
            ("bad-input/csv/newlines_crlf.csv", "a"),
            ("bad-input/csv/utf8.csv", "a"),
            ("payloads/csv/apex-recipes-Accounts.csv", "name"),
            ("payloads/csv/apex-recipes-Contacts.csv", "email"),
            ("payloads/csv/apex-recipes-Opportunities.csv", "name"),
        ];
        for (file, column) in cases {
            let text = std::fs::read(dir.join(file)).unwrap();
            let kind = ContentKind::Csv {
                column: column.into(),
                delimiter: None,
            };
            let found = links(&kind, &text);
            assert!(!found.is_empty(), "{file}");
            let keys: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
            let unique: HashSet<&str> = keys.iter().copied().collect();
            if unique.len() != keys.len() {
                continue; // the helper names rows by key
            }
            for k in &keys {
                without(&kind, &text, &[k]);
            }
            let all = without(&kind, &text, &keys);
            assert!(links(&kind, &all).is_empty(), "{file}");
        }
    }

    #[test]
    fn ids_not_in_the_file_refuse_the_whole_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "LeadId\n1\n2\n").unwrap();
        for ids in [
            vec!["row 4"],
            vec!["row 1"],
            vec!["row 02"],
            vec!["row 2", "row 9"],
            vec!["/records/0"],
        ] {
            let remove: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
            let mut out = Vec::new();
            let err = redact(
                &kind(),
                &std::fs::File::open(&path).unwrap(),
                &mut out,
                &remove,
            )
            .unwrap_err();
            assert!(matches!(err, RedactError::Missing { .. }), "{ids:?}: {err}");
            assert!(out.is_empty(), "nothing written");
        }
    }
}
