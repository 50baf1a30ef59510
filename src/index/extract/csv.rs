//! The CSV extractor: the key column found by its header name (delimiter
//! given or sniffed), one key per row; a memchr fast path for unquoted CSV
//! in memory, the csv crate for the rest.

use std::io::{BufRead, BufReader, Read};

use super::{Found, LineGuard, Unreadable, check_room};

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
pub(super) fn csv_from_slice(
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
        let location = format!("row {row}");
        out.push(Found {
            key: v.to_string(),
            record: Some(location.clone()),
            location,
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
    fn csv_semicolons_bom_and_quotes() {
        let doc = "\u{feff}Name;LeadId\r\n\"Doe; Jane\";17\r\nX;\"18\"\r\n";
        let found = csv(doc.as_bytes(), "LeadId", None, 1 << 20).unwrap();
        assert_eq!(
            found,
            vec![
                Found {
                    key: "17".into(),
                    location: "row 2".into(),
                    record: Some("row 2".into())
                },
                Found {
                    key: "18".into(),
                    location: "row 3".into(),
                    record: Some("row 3".into())
                },
            ]
        );
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
}
