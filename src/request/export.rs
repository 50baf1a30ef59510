//! The Art. 15/20 access export: one zip with everything lethe finds about a
//! subject, the one output of lethe that holds personal data by design.
//!
//! - `entities/TYPE.json`: the subject's rows of each entity type, a JSON
//!   array, every column as the CRM gave it.
//! - `files/KEY`: each object linked to the subject as a whole, streamed
//!   from the store as stored (bounded memory, whatever its size); from a
//!   shared object only the subject's own records, cut out by the redaction
//!   engine's keep mode (`apply::redact::extract`): the CSV header, the JSON
//!   envelope, the XML prolog and root stay, every other subject's record
//!   goes. The cut is proven before it is written, as apply proves a
//!   redaction: each record to keep links the subject's entities and
//!   nobody else, and the result parses with the same rule and links
//!   exactly what those records linked.
//! - `manifest.json`: the request, what is included (per type a count; per
//!   file its entry, whole or records), the counts, and what was not
//!   included (by pseudonym) and why.
//! - `index.html`: the same, readable, in one page that opens offline
//!   (inline CSS, nothing to fetch, nothing to run; every value escaped).
//!
//! Entry names are safe whatever the key (`entry_name`): `files/` and the
//! key, each character that is not safe in a path written `%XX` (its UTF-8
//! bytes in upper-case hex; `%` and `~` always, so that the name decodes
//! back to the key), a `/` kept only between two non-empty segments, a `.`
//! or a space escaped at the start or end of a segment (no `.` or `..`
//! segment, nothing a file system trims), control and invisible formatting
//! characters escaped, and a Windows device name (`CON`, `LPT1`...) its
//! first letter escaped. A segment longer than 200 bytes is cut and ends
//! in `~` and 16 hex digits of the key's SHA-256; an object whose entry is
//! also the folder of another ends in `~`. The manifest pairs each key
//! with its entry.
//!
//! The zip is written to a temporary file beside `out` and renamed over it
//! when complete: `out` is never half written. Errors name objects by
//! pseudonym and entity types by name, never a key or content.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

use crate::apply::redact::{self, RedactError};
use crate::audit::pseudonym::Pseudonymizer;
use crate::config::{Config, LinkRule};
use crate::index::Link;
use crate::store::{StoreError, TechnicalStore};

mod manifest;
mod names;
mod page;

use manifest::manifest;
use names::Layout;
pub use names::entry_name;

/// The request an export answers.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub id: String,
    pub reference: String,
    /// YYYY-MM-DD.
    pub received: String,
    /// RFC 3339.
    pub made_at: String,
    /// The identifier kinds asked for (`email`), never the values.
    pub subject_kinds: Vec<String>,
}

/// What of an object goes into the export.
#[derive(Clone, Debug)]
pub enum FilePart {
    /// The object as stored.
    Whole,
    /// A shared object: only these records of content rule `rule`, ids as
    /// the index writes them (`row 7`, `/records/3`, `record 0`).
    Records { rule: usize, records: Vec<String> },
}

/// An object linked to the subject.
#[derive(Clone, Debug)]
pub struct ExportFile {
    pub key: String,
    /// Its size as indexed; an object of another size now is refused
    /// (changed since it was indexed).
    pub size: u64,
    pub part: FilePart,
    /// The subject's entities it links (`lead:7`, type and key as the index
    /// links them). A kept record must link one of these.
    pub entities: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ExportInput {
    pub request: ExportRequest,
    /// Per entity type, the subject's rows (every column).
    pub entities: Vec<(String, Vec<Map<String, Value>>)>,
    pub files: Vec<ExportFile>,
    /// Objects that name the subject and are left out: (pseudonym, why).
    pub not_included: Vec<(String, String)>,
}

/// What went into the zip.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportStats {
    /// Rows per entity type.
    pub entities: BTreeMap<String, u64>,
    pub files: u64,
    /// Records kept from shared files.
    pub records: u64,
    /// The zip's size.
    pub bytes: u64,
}

/// Why no export was written. Objects are named by pseudonym, never by key
/// or content; nothing is left at `out`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The input itself is wrong (a caller's mistake): what is wrong.
    #[error("the export's input is not usable: {0}")]
    Input(String),
    #[error("{object}: reading it from the technical store failed")]
    Store {
        object: String,
        #[source]
        source: StoreError,
    },
    #[error("{object} is no longer in the technical store; run `lethe index` and export again")]
    Gone { object: String },
    #[error(
        "{object} changed since it was indexed (its size differs); run `lethe index` and export again"
    )]
    Changed { object: String },
    #[error(
        "{object}: link rule {rule} is not a content rule with records; re-index and export again"
    )]
    Rule { object: String, rule: usize },
    #[error("{object}: the subject's records could not be extracted")]
    Extract {
        object: String,
        #[source]
        source: RedactError,
    },
    #[error("{object}: {why}; nothing was exported")]
    Proof { object: String, why: String },
    #[error("writing the export failed ({what})")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ExportError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExportError {
        let what = what.into();
        move |source| ExportError::Io { what, source }
    }

    fn zip(what: impl Into<String>) -> impl FnOnce(zip::result::ZipError) -> ExportError {
        let what = what.into();
        move |e| ExportError::Io {
            what,
            source: match e {
                zip::result::ZipError::Io(io) => io,
                other => std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// Writes the export of `input` to `out` (a temporary file beside it,
/// renamed over it when complete).
pub async fn write_export(
    config: &Config,
    store: &dyn TechnicalStore,
    input: &ExportInput,
    out: &Path,
) -> Result<ExportStats, ExportError> {
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let stamp = zip_time(&input.request)?;
    let plan = Layout::of(input)?;

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ExportError::Input("the output path names no file".into()))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(ExportError::io(
            "creating a temporary file beside the output",
        ))?;
    let file = temp
        .as_file()
        .try_clone()
        .map_err(ExportError::io("opening the temporary file"))?;
    let mut zip = Zip {
        w: zip::ZipWriter::new(BufWriter::with_capacity(BUFFER, file)),
        stamp,
    };

    let mut stats = ExportStats::default();
    let mut tables = Vec::with_capacity(input.entities.len());
    for ((t, rows), entry) in input.entities.iter().zip(&plan.entity_entries) {
        tables.push((entry.clone(), json_bytes(rows)?));
        stats.entities.insert(t.clone(), rows.len() as u64);
    }
    zip = blocking(move || {
        for (entry, bytes) in tables {
            zip.bytes(&entry, &bytes)?;
        }
        Ok(zip)
    })
    .await?;

    let mut written = Vec::with_capacity(input.files.len());
    for (f, entry) in input.files.iter().zip(&plan.file_entries) {
        let object = pseudo.show_object(&f.key);
        let (z, bytes) = match &f.part {
            FilePart::Whole => whole(store, zip, f, entry, &object).await?,
            FilePart::Records { rule, records } => {
                let kind = content_rule(config, *rule).ok_or_else(|| ExportError::Rule {
                    object: object.clone(),
                    rule: *rule,
                })?;
                let (z, bytes) =
                    records_of(config, store, zip, f, kind, records, entry, &object).await?;
                stats.records += records.len() as u64;
                (z, bytes)
            }
        };
        zip = z;
        written.push(bytes);
        stats.files += 1;
    }

    let manifest = manifest(input, &plan, &written);
    let manifest_bytes = json_bytes(&manifest)?;
    let page = page::html(input, &manifest).into_bytes();
    let out = out.to_path_buf();
    stats.bytes = blocking(move || {
        zip.bytes("manifest.json", &manifest_bytes)?;
        zip.bytes("index.html", &page)?;
        let mut w = zip
            .w
            .finish()
            .map_err(ExportError::zip("finishing the zip"))?;
        w.flush().map_err(ExportError::io("finishing the zip"))?;
        drop(w);
        temp.as_file()
            .sync_all()
            .map_err(ExportError::io("syncing the zip"))?;
        let len = temp
            .as_file()
            .metadata()
            .map_err(ExportError::io("finishing the zip"))?
            .len();
        temp.persist(&out)
            .map_err(|e| ExportError::io("renaming the zip into place")(e.error))?;
        // The rename is durable once its folder is; not every system can
        // say.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(len)
    })
    .await?;
    Ok(stats)
}

/// A JSON entry's bytes: pretty, with a final line end.
fn json_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ExportError> {
    let mut b = serde_json::to_vec_pretty(value)
        .map_err(|e| ExportError::io("writing a JSON entry")(std::io::Error::other(e)))?;
    b.push(b'\n');
    Ok(b)
}

/// The copy buffer, and the zip writer's.
const BUFFER: usize = 256 * 1024;

/// Entries of the zip: each one whole, in order; the last modified time of
/// every entry is the export's.
struct Zip {
    w: zip::ZipWriter<BufWriter<std::fs::File>>,
    stamp: zip::DateTime,
}

impl Zip {
    fn options(&self, method: CompressionMethod, large: bool) -> SimpleFileOptions {
        SimpleFileOptions::default()
            .compression_method(method)
            .last_modified_time(self.stamp)
            .unix_permissions(0o644)
            .large_file(large)
    }

    fn start(
        &mut self,
        entry: &str,
        method: CompressionMethod,
        size: u64,
    ) -> Result<(), ExportError> {
        // Zip64 where the entry may pass 4 GiB (it is fixed before the
        // first byte).
        let opts = self.options(method, size >= u64::from(u32::MAX) / 2);
        self.w
            .start_file(entry, opts)
            .map_err(ExportError::zip("starting an entry"))
    }

    fn bytes(&mut self, entry: &str, bytes: &[u8]) -> Result<(), ExportError> {
        self.start(entry, CompressionMethod::Deflated, bytes.len() as u64)?;
        self.w
            .write_all(bytes)
            .map_err(ExportError::io("writing an entry"))
    }

    /// Streams `r` into a new entry; the bytes copied.
    fn stream(
        &mut self,
        entry: &str,
        size: u64,
        r: &mut dyn Read,
        object: &str,
    ) -> Result<u64, ExportError> {
        self.start(entry, method_for(entry), size)?;
        let mut buf = vec![0u8; BUFFER];
        let mut n = 0u64;
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ExportError::Store {
                        object: object.to_string(),
                        source: StoreError::io("read", source),
                    });
                }
            };
            self.w
                .write_all(&buf[..k])
                .map_err(ExportError::io("writing a file into the zip"))?;
            n += k as u64;
        }
        Ok(n)
    }
}

/// Deflate, except what is compressed already (deflating it again costs
/// time and saves nothing).
fn method_for(entry: &str) -> CompressionMethod {
    const PACKED: &[&str] = &[
        "7z", "avif", "br", "bz2", "docx", "gif", "gz", "heic", "jpeg", "jpg", "lz4", "mp3", "mp4",
        "odt", "ods", "pdf", "png", "pptx", "rar", "tgz", "webp", "xlsx", "xz", "zip", "zst",
    ];
    let ext = entry
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if PACKED.contains(&ext.as_str()) {
        CompressionMethod::Stored
    } else {
        CompressionMethod::Deflated
    }
}

/// The export's instant as the zip's time of every entry (UTC; zip times
/// have no zone and start in 1980).
fn zip_time(r: &ExportRequest) -> Result<zip::DateTime, ExportError> {
    let at: jiff::Timestamp = r
        .made_at
        .parse()
        .map_err(|_| ExportError::Input("made_at is not an RFC 3339 instant".into()))?;
    r.received
        .parse::<jiff::civil::Date>()
        .map_err(|_| ExportError::Input("received is not a date (YYYY-MM-DD)".into()))?;
    let t = at.to_zoned_datetime(jiff::tz::TimeZone::UTC).datetime();
    let (Ok(year), Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) = (
        u16::try_from(t.year()),
        u8::try_from(t.month()),
        u8::try_from(t.day()),
        u8::try_from(t.hour()),
        u8::try_from(t.minute()),
        u8::try_from(t.second()),
    ) else {
        return Ok(zip::DateTime::default());
    };
    Ok(
        zip::DateTime::from_date_and_time(year, month, day, hour, minute, second)
            .unwrap_or_default(),
    )
}

/// The content rule `rule` (by its index, as the plan and the index name
/// rules), if it has records.
fn content_rule(config: &Config, rule: usize) -> Option<&LinkRule> {
    config.links.iter().find(|r| {
        r.index() == rule
            && matches!(r, LinkRule::Content { kind, .. } if kind.record_signature().is_some())
    })
}

/// The object as the index read it, or why not.
async fn check_unchanged(
    store: &dyn TechnicalStore,
    f: &ExportFile,
    object: &str,
) -> Result<(), ExportError> {
    let store_err = |source| ExportError::Store {
        object: object.to_string(),
        source,
    };
    match store.head(&f.key).await.map_err(store_err)? {
        None => Err(ExportError::Gone {
            object: object.to_string(),
        }),
        Some(m) if m.size != f.size => Err(ExportError::Changed {
            object: object.to_string(),
        }),
        Some(_) => Ok(()),
    }
}

/// Runs blocking work (local files, the store's reader) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExportError> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExportError::io("a blocking task")(std::io::Error::other(e.to_string())))?
}

/// A whole object, streamed from the store into its entry.
async fn whole(
    store: &dyn TechnicalStore,
    mut zip: Zip,
    f: &ExportFile,
    entry: &str,
    object: &str,
) -> Result<(Zip, u64), ExportError> {
    check_unchanged(store, f, object).await?;
    let mut r = store
        .read(&f.key)
        .await
        .map_err(|source| ExportError::Store {
            object: object.to_string(),
            source,
        })?;
    let (entry, object, size) = (entry.to_string(), object.to_string(), f.size);
    blocking(move || {
        let n = zip.stream(&entry, size, &mut r, &object)?;
        if n != size {
            return Err(ExportError::Changed { object });
        }
        Ok((zip, n))
    })
    .await
}

/// The subject's records of a shared object: spooled, cut out by the
/// engine's keep mode, proven, and copied into its entry.
#[allow(clippy::too_many_arguments)]
async fn records_of(
    config: &Config,
    store: &dyn TechnicalStore,
    mut zip: Zip,
    f: &ExportFile,
    rule: &LinkRule,
    records: &[String],
    entry: &str,
    object: &str,
) -> Result<(Zip, u64), ExportError> {
    check_unchanged(store, f, object).await?;
    let store_err = |source| ExportError::Store {
        object: object.to_string(),
        source,
    };
    let mut r = store.read(&f.key).await.map_err(store_err)?;
    let keep: HashSet<String> = records.iter().cloned().collect();
    let subject: HashSet<String> = f.entities.iter().cloned().collect();
    let limits = (config.max_content_bytes, config.max_line_bytes);
    let (rule, entry, object, size) = (rule.clone(), entry.to_string(), object.to_string(), f.size);
    blocking(move || {
        // (No name: other people's records are in it; see `apply::redaction`.)
        let mut spool = tempfile::tempfile().map_err(ExportError::io("creating a spool file"))?;
        let n = std::io::copy(&mut r, &mut spool).map_err(|source| ExportError::Store {
            object: object.clone(),
            source: StoreError::io("read", source),
        })?;
        if n != size {
            return Err(ExportError::Changed { object });
        }
        let mut cut = cut_records(limits, &rule, &spool, size, &keep, &subject)
            .map_err(|e| e.naming(&object))?;
        drop(spool);
        let len = cut
            .as_file()
            .metadata()
            .map_err(ExportError::io("reading the extracted records"))?
            .len();
        cut.rewind()
            .map_err(ExportError::io("reading the extracted records"))?;
        let copied = zip.stream(&entry, len, cut.as_file_mut(), &object)?;
        Ok((zip, copied))
    })
    .await
}

/// Why a shared object's records could not be cut out (the object is
/// named by the caller).
enum CutError {
    Extract(RedactError),
    Proof(String),
    Io(std::io::Error),
}

impl CutError {
    fn naming(self, object: &str) -> ExportError {
        let object = object.to_string();
        match self {
            CutError::Extract(source) => ExportError::Extract { object, source },
            CutError::Proof(why) => ExportError::Proof { object, why },
            CutError::Io(source) => ExportError::Io {
                what: format!("extracting the records of {object}"),
                source,
            },
        }
    }
}

/// Only the records `keep` of the spooled object, in a new temporary file,
/// proven as apply proves a redaction: the same rule reads the spool, and
/// every record to keep links the subject's entities and nobody else; the
/// result parses with the same rule and links exactly what those records
/// linked (`apply::redaction::tally`).
fn cut_records(
    limits: (u64, u64),
    rule: &LinkRule,
    spool: &std::fs::File,
    size: u64,
    keep: &HashSet<String>,
    subject: &HashSet<String>,
) -> Result<tempfile::NamedTempFile, CutError> {
    use crate::apply::redaction::{links_of_file, tally};
    let LinkRule::Content { kind, .. } = rule else {
        return Err(CutError::Proof("not a content rule".into()));
    };
    let before = links_of_file(limits, &[rule], spool, size)
        .map_err(|why| CutError::Proof(format!("the object does not parse ({why})")))?;
    let kept: Vec<Link> = before
        .into_iter()
        .filter(|l| l.record.as_ref().is_some_and(|r| keep.contains(r)))
        .collect();
    let mut linked = HashSet::new();
    for l in &kept {
        if !subject.contains(&format!("{}:{}", l.entity_type, l.entity_key)) {
            return Err(CutError::Proof(
                "a record to export links an entity that is not the subject's".into(),
            ));
        }
        linked.extend(l.record.as_deref());
    }
    if linked.len() != keep.len() {
        return Err(CutError::Proof(
            "a record to export links none of the subject's entities, or is not in the object"
                .into(),
        ));
    }

    let mut out = tempfile::NamedTempFile::new().map_err(CutError::Io)?;
    let done = {
        let mut w = BufWriter::with_capacity(BUFFER, out.as_file_mut());
        let done = redact::extract(kind, spool, &mut w, keep).map_err(CutError::Extract)?;
        w.flush().map_err(CutError::Io)?;
        done
    };
    let len = out.as_file().metadata().map_err(CutError::Io)?.len();
    if len != done.bytes_out {
        return Err(CutError::Io(std::io::Error::other(
            "the extracted copy is not the length written",
        )));
    }
    let after = links_of_file(limits, &[rule], out.as_file(), len)
        .map_err(|why| CutError::Proof(format!("the extracted records do not parse ({why})")))?;
    if tally(&after) != tally(&kept) {
        return Err(CutError::Proof(
            "the extracted records would not link exactly what the subject's records link".into(),
        ));
    }
    Ok(out)
}
