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
    let mut reader = LineGuard::new(reader, max_line, b'\n', b'\n');
    let (delimiter, head) = match delimiter {
        Some(d) => (d, Vec::new()),
        None => {
            let head =
                first_line(&mut reader).map_err(|e| Unreadable(format!("read failed: {e}")))?;
            (sniff_delimiter(&head), head)
        }
    };
    csv_from(
        BufReader::with_capacity(64 * 1024, std::io::Cursor::new(head).chain(reader)),
        column,
        Some(delimiter),
    )
}

/// The delimiter is sniffed on at most this much of the first line.
const SNIFF_BYTES: usize = 64 * 1024;

/// Reads up to the end of the first line, or [`SNIFF_BYTES`], whichever
/// comes first (the bytes read, to be read again). A single read may
/// return a few bytes only: the line is read for sure.
pub(crate) fn first_line(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while head.len() < SNIFF_BYTES && memchr::memchr(b'\n', &head).is_none() {
        let want = chunk.len().min(SNIFF_BYTES - head.len());
        match reader.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(head)
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
        // In memory: the whole first line is at hand.
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

/// The most frequent of `,` `;` tab `|` in the first line (its first
/// [`SNIFF_BYTES`], however it is read).
pub(crate) fn sniff_delimiter(head: &[u8]) -> u8 {
    let head = &head[..head.len().min(SNIFF_BYTES)];
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

    /// Regression: a streamed CSV (larger than the in-memory bound) had its
    /// delimiter sniffed on the first read only, which after the byte order
    /// mark check is three bytes: every `;`, tab or `|` export over 8 MiB
    /// was read with `,` and yielded no link at all.
    #[test]
    fn a_streamed_csv_sniffs_its_whole_first_line() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let doc = b"Note;LeadId\r\nx;17\r\n;18";
        let slice = csv_from_slice(doc, "LeadId", None).unwrap();
        assert_eq!(slice.len(), 2);
        assert_eq!(csv(Trickle(doc), "LeadId", None, 1 << 20).unwrap(), slice);
        let size = u64::MAX; // past the in-memory bound: streamed
        let kind = crate::config::ContentKind::Csv {
            column: "LeadId".into(),
            delimiter: None,
        };
        let streamed = super::super::content(
            &kind,
            Box::new(std::io::Cursor::new(doc.to_vec())),
            size,
            1 << 20,
            1 << 20,
        )
        .unwrap();
        assert_eq!(streamed, slice);
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
