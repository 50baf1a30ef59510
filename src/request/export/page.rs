//! index.html: the export for a person to read. One page that opens
//! offline (inline CSS; no script, no image, no font, nothing fetched):
//! who asked and when, the subject's records per entity type as tables,
//! the files and what each is, what was left out and why. Every value is
//! the subject's own data and is escaped, cell by cell.

use serde_json::Value;

use super::ExportInput;
use super::manifest::Manifest;
use crate::report::escape;

pub(super) fn html(input: &ExportInput, m: &Manifest<'_>) -> String {
    let r = &input.request;
    let kinds = if r.subject_kinds.is_empty() {
        "the records named in the request".to_string()
    } else {
        r.subject_kinds
            .iter()
            .map(|k| format!("<b>{}</b>", escape(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Your personal data: request {reference}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 66rem; color: #1d2330; padding: 0 1rem; line-height: 1.45; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ccd; padding-bottom: .2rem; }}
h3 {{ font-size: 1rem; margin: 1.4rem 0 .4rem; }} .meta {{ color: #445; }} .none {{ color: #778; }}
.cards {{ display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; }}
.card {{ border: 1px solid #ccd; border-radius: 6px; padding: .7rem 1rem; min-width: 9rem; }}
.card .v {{ font-size: 1.5rem; font-weight: 600; }} .card .l {{ color: #556; font-size: .85rem; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }}
th, td {{ border-bottom: 1px solid #e3e6ee; padding: .35rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f5f9; white-space: nowrap; }} td {{ white-space: pre-wrap; overflow-wrap: anywhere; }}
code {{ font-size: .85rem; overflow-wrap: anywhere; }}
</style></head>
<body>
<h1>The personal data held about you</h1>
<p class="meta">Your request <b>{reference}</b>, received {received}. This copy was made {made_at} (request <code>{id}</code>). You were found by {kinds}.</p>
<div class="cards">{cards}</div>
<p>This package is your copy under Articles 15 and 20 of the GDPR. This page is a summary to read; the same data, for a computer to read or to take elsewhere, is in <code>manifest.json</code>, in <code>entities/</code> (one JSON file per kind of record) and in <code>files/</code> (the files themselves).</p>
<h2>Records about you</h2>
{entities}
<h2>Files that hold your data</h2>
<p>A file that held only your data is included as it was stored. From a file shared with other people, only your own records are included, with the file's header or outer structure; the other people's records are left out.</p>
{files}
<h2>Not included</h2>
{not_included}
</body></html>
"##,
        reference = escape(&r.reference),
        received = escape(&r.received),
        made_at = escape(&r.made_at),
        id = escape(&r.id),
        cards = cards(m),
        entities = entities(input, m),
        files = files(m),
        not_included = not_included(m),
    )
}

fn cards(m: &Manifest<'_>) -> String {
    [
        (m.counts.entities, "records about you"),
        (m.counts.files, "files"),
        (m.counts.records, "records from shared files"),
        (m.counts.not_included, "not included"),
    ]
    .iter()
    .map(|(v, l)| {
        format!(r#"<div class="card"><div class="v">{v}</div><div class="l">{l}</div></div>"#)
    })
    .collect()
}

/// One table per entity type, a column per field (in the order the first
/// rows give them).
fn entities(input: &ExportInput, m: &Manifest<'_>) -> String {
    if input.entities.iter().all(|(_, rows)| rows.is_empty()) {
        return r#"<p class="none">No records about you were found.</p>"#.into();
    }
    let mut out = String::new();
    for ((t, rows), e) in input.entities.iter().zip(&m.entities) {
        let mut columns: Vec<&str> = Vec::new();
        for row in rows {
            for k in row.keys() {
                if !columns.contains(&k.as_str()) {
                    columns.push(k);
                }
            }
        }
        out.push_str(&format!(
            "<h3>{} <span class=\"none\">({} · <a href=\"{}\"><code>{}</code></a>)</span></h3>\n",
            escape(t),
            rows.len(),
            href(&e.entry),
            escape(&e.entry)
        ));
        if rows.is_empty() {
            out.push_str("<p class=\"none\">None.</p>\n");
            continue;
        }
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|c| match row.get(*c) {
                        None | Some(Value::Null) => "<span class=\"none\">—</span>".to_string(),
                        Some(Value::String(s)) => escape(s),
                        Some(v) => escape(&v.to_string()),
                    })
                    .collect()
            })
            .collect();
        out.push_str(&table(&columns, &body));
    }
    out
}

fn files(m: &Manifest<'_>) -> String {
    if m.files.is_empty() {
        return r#"<p class="none">No files hold data about you.</p>"#.into();
    }
    let rows: Vec<Vec<String>> = m
        .files
        .iter()
        .map(|f| {
            let what = match f.records {
                None => format!("the whole file as stored, {}", size(f.bytes)),
                Some(1) => format!("your record from a shared file, {}", size(f.bytes)),
                Some(n) => format!("your {n} records from a shared file, {}", size(f.bytes)),
            };
            vec![
                format!(
                    "<a href=\"{}\"><code>{}</code></a>",
                    href(&f.entry),
                    escape(&f.entry)
                ),
                escape(f.key),
                escape(&what),
                escape(&f.entities.join(", ")),
            ]
        })
        .collect();
    table(&["in this package", "stored as", "what", "about"], &rows)
}

fn not_included(m: &Manifest<'_>) -> String {
    if m.not_included.is_empty() {
        return r#"<p class="none">Nothing that names you was left out.</p>"#.into();
    }
    let rows: Vec<Vec<String>> = m
        .not_included
        .iter()
        .map(|n| vec![format!("<code>{}</code>", escape(n.object)), escape(n.why)])
        .collect();
    format!(
        "<p>These objects name you but are not in this package. Each is named by a pseudonym, a code that stands for it without showing its name.</p>\n{}",
        table(&["object", "why"], &rows)
    )
}

/// A table of cells already escaped.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in head {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(&format!("<td>{cell}</td>"));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// A relative link to an entry: every byte but letters, digits and `/._-`
/// percent-encoded (an entry name's own `%` too), so that it opens the file
/// once the package is unpacked.
fn href(entry: &str) -> String {
    entry
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} bytes"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}
