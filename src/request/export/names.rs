//! Entry names: a safe, reversible zip path for every object key (the
//! rules are in the module doc of `request::export`), and the layout of
//! one export's entries.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::{ExportError, ExportInput, FilePart};

/// The entries of an export, in input order.
pub(super) struct Layout {
    pub(super) entity_entries: Vec<String>,
    pub(super) file_entries: Vec<String>,
}

impl Layout {
    pub(super) fn of(input: &ExportInput) -> Result<Layout, ExportError> {
        let mut types = HashSet::new();
        let mut entity_entries = Vec::new();
        for (t, _) in &input.entities {
            if !types.insert(t.as_str()) {
                return Err(ExportError::Input(format!(
                    "entity type {t:?} is given twice"
                )));
            }
            entity_entries.push(format!("entities/{}.json", encode(t, false)));
        }
        let mut keys = HashSet::new();
        let mut file_entries = Vec::new();
        for f in &input.files {
            if !keys.insert(f.key.as_str()) {
                return Err(ExportError::Input("an object is given twice".into()));
            }
            if let FilePart::Records { records, .. } = &f.part {
                if records.is_empty() {
                    return Err(ExportError::Input(
                        "a shared object is given with no records to export".into(),
                    ));
                }
                if records.iter().collect::<HashSet<_>>().len() != records.len() {
                    return Err(ExportError::Input(
                        "a record of a shared object is given twice".into(),
                    ));
                }
            }
            file_entries.push(entry_name(&f.key));
        }
        // An entry that is also the folder of another: a file there would
        // not extract.
        let folders: HashSet<&str> = file_entries
            .iter()
            .flat_map(|e| e.match_indices('/').map(move |(i, _)| &e[..i]))
            .collect();
        let clash: Vec<bool> = file_entries
            .iter()
            .map(|e| folders.contains(e.as_str()))
            .collect();
        for (e, c) in file_entries.iter_mut().zip(clash) {
            if c {
                e.push('~');
            }
        }
        let mut all = HashSet::new();
        for e in entity_entries.iter().chain(&file_entries) {
            if !all.insert(e.as_str()) {
                return Err(ExportError::Input(
                    "two entries of the export would have the same name".into(),
                ));
            }
        }
        Ok(Layout {
            entity_entries,
            file_entries,
        })
    }
}

/// The longest segment of an entry name written out in full.
const MAX_SEGMENT: usize = 200;

/// The zip entry of an object key (see the module doc).
pub fn entry_name(key: &str) -> String {
    let mut out = String::from("files/");
    out.push_str(&encode(key, true));
    out
}

/// `text` as a safe, reversible path: see the module doc. Without
/// `slashes`, every `/` is escaped (one segment).
fn encode(text: &str, slashes: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    // Which `/` separate two non-empty segments.
    let literal = |i: usize| {
        slashes
            && chars[i] == '/'
            && i > 0
            && i + 1 < chars.len()
            && chars[i - 1] != '/'
            && chars[i + 1] != '/'
    };
    let mut segments: Vec<Vec<String>> = vec![Vec::new()];
    for (i, &c) in chars.iter().enumerate() {
        if literal(i) {
            segments.push(Vec::new());
            continue;
        }
        let start = i == 0 || literal(i - 1);
        let end = i + 1 == chars.len() || literal(i + 1);
        let escape = match c {
            '%' | '~' | '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => true,
            '.' | ' ' => start || end,
            c => c.is_control() || invisible(c),
        };
        let unit = if escape { escaped(c) } else { c.to_string() };
        if let Some(seg) = segments.last_mut() {
            seg.push(unit);
        }
    }
    let mut out = String::new();
    for (n, mut seg) in segments.into_iter().enumerate() {
        if n > 0 {
            out.push('/');
        }
        device_name(&mut seg);
        let len: usize = seg.iter().map(String::len).sum();
        if len <= MAX_SEGMENT {
            out.extend(seg);
            continue;
        }
        let mut kept = 0;
        for unit in seg {
            if kept + unit.len() > MAX_SEGMENT - 20 {
                break;
            }
            kept += unit.len();
            out.push_str(&unit);
        }
        let digest = Sha256::digest(text.as_bytes());
        out.push('~');
        out.push_str(&hex::encode(&digest[..8]));
    }
    out
}

/// `%XX` for each byte of `c`.
fn escaped(c: char) -> String {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf)
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect()
}

/// Characters that change how a name shows without showing themselves
/// (bidirectional overrides, zero-width spaces, the byte order mark).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A segment Windows reads as a device (`CON`, `nul.txt`, `COM1`): its
/// first letter escaped.
fn device_name(seg: &mut [String]) {
    let base: String = seg
        .iter()
        .map(String::as_str)
        .take_while(|u| *u != ".")
        .collect::<String>()
        .to_ascii_uppercase();
    let device = matches!(base.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((base.starts_with("COM") || base.starts_with("LPT"))
            && base.len() == 4
            && base.as_bytes()[3].is_ascii_digit());
    if device && let Some(first) = seg.first_mut() {
        let c = first.chars().next().unwrap_or('_');
        *first = escaped(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::export::{ExportFile, ExportRequest};

    #[test]
    fn entry_names_are_safe_and_distinct() {
        let cases = [
            ("a/b.csv", "files/a/b.csv"),
            ("../../etc/passwd", "files/%2E%2E/%2E%2E/etc/passwd"),
            ("a/./b/../c", "files/a/%2E/b/%2E%2E/c"),
            ("/abs", "files/%2Fabs"),
            ("a//b/", "files/a%2F%2Fb%2F"),
            ("x\0y\u{1}\r\n", "files/x%00y%01%0D%0A"),
            ("50%~off?.txt", "files/50%25%7Eoff%3F.txt"),
            ("c:\\win\\x", "files/c%3A%5Cwin%5Cx"),
            (" lead .json ", "files/%20lead .json%20"),
            (".hidden", "files/%2Ehidden"),
            ("trail.", "files/trail%2E"),
            ("nul.txt", "files/%6Eul.txt"),
            ("dir/COM1", "files/dir/%43OM1"),
            ("COM10", "files/COM10"),
            ("r\u{202e}txt.exe", "files/r%E2%80%AEtxt.exe"),
            ("Zoë/日本.csv", "files/Zoë/日本.csv"),
        ];
        for (key, want) in cases {
            assert_eq!(entry_name(key), want, "{key:?}");
        }
        let long = "x".repeat(300);
        let e = entry_name(&format!("{long}/{long}"));
        for seg in e.split('/').skip(1) {
            assert!(seg.len() <= MAX_SEGMENT, "{}", seg.len());
            assert!(seg.contains('~'));
        }
        assert_ne!(e, entry_name(&format!("{long}/{long}y")));
    }

    #[test]
    fn entry_names_decode_back_to_their_keys() {
        fn decode(entry: &str) -> String {
            let s = entry.strip_prefix("files/").unwrap_or(entry).as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < s.len() {
                if s[i] == b'%' {
                    let hex = std::str::from_utf8(&s[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(s[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        }
        let keys = [
            "a/b",
            "a//b",
            "a%2F%2Fb",
            "/a",
            "a/",
            "..",
            "...",
            ". .",
            "%",
            "~",
            "a/./b",
            "con",
            "tab\there",
        ];
        let mut seen = HashSet::new();
        for k in keys {
            let e = entry_name(k);
            assert_eq!(decode(&e), k, "{e}");
            assert!(seen.insert(e.clone()), "{e} twice");
            for seg in e.split('/') {
                assert!(!seg.is_empty() && seg != "." && seg != "..", "{e}");
            }
        }
    }

    #[test]
    fn an_entry_that_is_also_a_folder_is_marked() {
        let file = |key: &str| ExportFile {
            key: key.into(),
            size: 0,
            part: FilePart::Whole,
            entities: vec![],
        };
        let input = ExportInput {
            request: ExportRequest {
                id: "r".into(),
                reference: "T".into(),
                received: "2026-01-01".into(),
                made_at: "2026-01-02T03:04:05Z".into(),
                subject_kinds: vec![],
            },
            entities: vec![("lead".into(), vec![]), ("a/b".into(), vec![])],
            files: vec![file("a"), file("a/b")],
            not_included: vec![],
        };
        let l = Layout::of(&input).unwrap();
        assert_eq!(l.file_entries, ["files/a~", "files/a/b"]);
        assert_eq!(
            l.entity_entries,
            ["entities/lead.json", "entities/a%2Fb.json"]
        );
        let mut twice = input.clone();
        twice.files.push(file("a"));
        assert!(matches!(Layout::of(&twice), Err(ExportError::Input(_))));
    }
}
