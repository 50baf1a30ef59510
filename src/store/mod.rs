//! Technical stores behind one trait: a local folder (the embedded default),
//! S3 and Azure Blob (`cloud`, with the provider calls object_store does not
//! make in `s3/` and `azure/`, both sending through `http.rs`), and an
//! in-memory store for tests.
//! Backends disagree on deleting a missing object; the trait normalises
//! that once: `delete` answers `AlreadyGone`, never an error.

/// Objects up to this size are read into memory whole (the index parses
/// them from a slice, several times faster than from a stream); larger
/// ones stream or spill to a temporary file, in bounded memory.
pub const SLURP_MAX: u64 = 8 << 20;

pub mod azure;
pub mod cloud;
pub mod folder;
mod http;
pub mod memory;
pub mod pool;
pub mod s3;
pub mod table;

pub use azure::{AzureBlobs, SoftDelete};
pub use s3::{S3Versions, Versioning};

use std::io::Read;

use async_trait::async_trait;

use crate::config::{Config, StoreUrl};
use crate::model::Instant;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Relative to the store's root, `/`-separated.
    pub key: String,
    pub size: u64,
    pub modified: Option<Instant>,
    pub etag: Option<String>,
    /// User metadata (lower-case names), where the store keeps any.
    pub metadata: Vec<(String, String)>,
    /// The name the link rules' globs and path patterns match, where it
    /// is not the key (a payload table's name column); never printed.
    pub name: Option<String>,
}

impl ObjectMeta {
    /// What globs and path patterns match: the name, else the key.
    pub fn rule_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.key)
    }
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    Object(ObjectMeta),
    /// Seen but not an object lethe will read or delete (a symlink, a name
    /// that is not UTF-8); reported, never deleted.
    Skipped {
        key: String,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    AlreadyGone,
    /// Not deleted: the object is no longer the one the index read (its
    /// size, date or etag differ), so its links may be stale.
    Changed,
}

/// What a conditional rewrite (a redaction) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewriteOutcome {
    /// The new content is in place; what the store shows of it now.
    Rewritten(ObjectMeta),
    /// Not rewritten: the object is no longer the one the index read.
    Changed,
    /// Not rewritten: the object is not there.
    AlreadyGone,
}

/// What the index recorded of an object, for a delete that must find the
/// same object (`delete_expecting`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    pub modified: Option<Instant>,
    pub etag: Option<String>,
}

impl Expected {
    /// Whether the store still shows that object: the same size and date,
    /// and the same etag where both sides carry one (some S3-compatible
    /// servers list without etags), quoted or not.
    pub fn matches(&self, now: &ObjectMeta) -> bool {
        // Quotes aside: indexes written before etags were kept bare hold
        // S3's quoted form.
        let etag = match (&self.etag, &now.etag) {
            (Some(a), Some(b)) => a.trim_matches('"') == b.trim_matches('"'),
            _ => true,
        };
        self.size == now.size && self.modified == now.modified && etag
    }
}

/// Whether a store error is worth another try, decided where the error is
/// made (from the HTTP status, the provider's code, the operating system's
/// answer) and carried by the error itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Worth retrying (I/O hiccup, throttling).
    Transient,
    /// Will not succeed by retrying (permission, lock, bad key).
    Permanent,
}

impl StoreErrorKind {
    /// An operating system's error (a local file, a temporary file): a
    /// refusal, an invalid argument or a folder where a file was expected
    /// is permanent; anything else may pass.
    pub(crate) fn of_io(e: &std::io::Error) -> StoreErrorKind {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::IsADirectory => StoreErrorKind::Permanent,
            _ => StoreErrorKind::Transient,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("technical store {store} cannot be opened: {source}; check [technical] url")]
    Open {
        store: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listing the technical store {store} failed at {at}: {source}")]
    List {
        store: String,
        at: String,
        kind: StoreErrorKind,
        #[source]
        source: std::io::Error,
    },
    #[error("object key is not a plain relative path inside the store ({reason})")]
    InvalidKey { reason: &'static str },
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        kind: StoreErrorKind,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// An operating system's error under `op`, classified by what the
    /// system answered (`StoreErrorKind::of_io`).
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> StoreError {
        StoreError::Io {
            op,
            kind: StoreErrorKind::of_io(&source),
            source,
        }
    }

    /// A failure lethe words itself (an HTTP answer, a provider's code, an
    /// injected fault), of the kind given.
    pub(crate) fn failed(
        op: &'static str,
        kind: StoreErrorKind,
        text: impl Into<String>,
    ) -> StoreError {
        StoreError::Io {
            op,
            kind,
            source: std::io::Error::other(text.into()),
        }
    }

    /// The same error again, under `op`: for each key of a request that
    /// failed as a whole (its kind, and so whether it is retried, kept).
    pub(crate) fn again(&self, op: &'static str) -> StoreError {
        let text = match self {
            StoreError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        StoreError::failed(op, self.kind(), text)
    }

    /// Whether retrying may help: the kind the error was made with; an
    /// unopenable store and a bad key are permanent.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Io { kind, .. } | StoreError::List { kind, .. } => *kind,
            StoreError::Open { .. } | StoreError::InvalidKey { .. } => StoreErrorKind::Permanent,
        }
    }
}

#[async_trait]
pub trait TechnicalStore: Send + Sync {
    /// For reports: `folder /srv/technical`, `memory`.
    fn describe(&self) -> String;

    /// Reachability and what the store can and cannot do, in words.
    async fn check(&self) -> Result<Vec<String>, StoreError>;

    /// Streams every entry under the root. An error means the listing is
    /// incomplete and must not be used to plan anything (fail closed).
    async fn list(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError>;

    /// Opens an object's content for reading.
    async fn read(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError>;

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// The contents of several small objects in one request (a folder: read
    /// several at once), for the index and the residual scan (a group of
    /// the listing, in its order, about a megabyte at most):
    /// one entry per key, `None` for each the store did not read this way
    /// (too large, gone, unreadable, or no batch read at all), which the
    /// caller then opens with [`read`](Self::read), as it would have. Only
    /// the index and the residual scan read this way; what they record is
    /// what they read, as with `read`. Deletes and rewrites never use these
    /// contents.
    async fn read_batch(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        vec![None; keys.len()]
    }

    /// The object's user metadata (S3 `x-amz-meta-*`, Azure blob metadata),
    /// names in lower case. Stores without metadata answer empty.
    async fn metadata(&self, _key: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// The object key a reference names (a key, a path, a URL), as written
    /// in a CRM column; `None` when it points outside this store.
    fn key_of(&self, reference: &str) -> Option<String> {
        let r = reference.trim().trim_start_matches('/');
        validate_key(r).ok().map(|_| r.to_string())
    }

    /// Deletes one object; a missing object is `AlreadyGone`.
    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError>;

    /// Deletes an object only if it is still the one `expected` describes
    /// (`Changed` otherwise); without an expectation, as `delete`. Stores
    /// that can check within the delete request itself override this.
    async fn delete_expecting(
        &self,
        key: &str,
        expected: Option<&Expected>,
    ) -> Result<DeleteOutcome, StoreError> {
        // Not there: the delete itself says what it finds.
        if let Some(e) = expected
            && let Some(now) = self.head(key).await?
            && !e.matches(&now)
        {
            return Ok(DeleteOutcome::Changed);
        }
        self.delete(key).await
    }

    /// `delete_many` for objects that must still be the ones the index read
    /// (`expected`, one per key): a changed one is `Changed`, not deleted.
    async fn delete_many_expecting(
        &self,
        keys: &[String],
        expected: &[Option<Expected>],
    ) -> Vec<Result<DeleteOutcome, StoreError>> {
        let mut out: Vec<Option<Result<DeleteOutcome, StoreError>>> =
            (0..keys.len()).map(|_| None).collect();
        let mut through = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let Some(Some(e)) = expected.get(i) else {
                through.push(i);
                continue;
            };
            match self.head(k).await {
                Ok(Some(now)) if !e.matches(&now) => out[i] = Some(Ok(DeleteOutcome::Changed)),
                Ok(_) => through.push(i),
                Err(err) => out[i] = Some(Err(err)),
            }
        }
        let ask: Vec<String> = through.iter().map(|&i| keys[i].clone()).collect();
        for (i, r) in through.into_iter().zip(self.delete_many(&ask).await) {
            out[i] = Some(r);
        }
        answered(out)
    }

    /// Replaces an object's content with the local file `content` (a spool
    /// lethe wrote), only if the object is still the one `expected`
    /// describes. Atomic: a reader sees the old content or the new, never a
    /// mix; older versions or snapshots that hold the old content are
    /// removed as a delete would remove them.
    ///
    /// `Changed` leaves the object untouched; `AlreadyGone` when there is
    /// none. An object that no longer matches `expected` but already holds
    /// exactly `content` (the answer to an earlier rewrite was lost, or a
    /// resumed apply) is `Rewritten` as it is: a rewrite may be retried.
    /// `Rewritten` carries what a listing or a HEAD shows of the new object
    /// (size, date, etag), for the index. An error after the new content
    /// is in place (older versions that could not be deleted) says so.
    async fn rewrite(
        &self,
        _key: &str,
        _expected: &Expected,
        _content: &std::path::Path,
    ) -> Result<RewriteOutcome, StoreError> {
        Err(StoreError::failed(
            "rewriting an object",
            StoreErrorKind::Permanent,
            format!("{} cannot rewrite objects", self.describe()),
        ))
    }

    /// What a delete here leaves behind (old versions, snapshots,
    /// soft-deleted copies), said plainly in every apply report that deleted
    /// objects; `None` when a delete removes the object outright.
    fn erasure_note(&self) -> Option<String> {
        None
    }

    /// The CRM table under a `crm://` store, whose rows that reference
    /// entities by a foreign key apply deletes in the case's transaction.
    fn payload_table(&self) -> Option<&crate::crm::payloads::PayloadTable> {
        None
    }

    /// How many objects `delete_many` deletes per request: 1 for stores
    /// without a batch call (apply then runs single deletes side by side).
    fn delete_batch_size(&self) -> usize {
        1
    }

    /// Deletes several objects in as few requests as the store allows (S3
    /// DeleteObjects), or several requests at once (Azure): one result per key, in the order
    /// given, so that a partly failed batch fails exactly its failed keys.
    async fn delete_many(&self, keys: &[String]) -> Vec<Result<DeleteOutcome, StoreError>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.delete(k).await);
        }
        out
    }
}

pub fn open(config: &Config) -> Result<Box<dyn TechnicalStore>, StoreError> {
    let batches = |s: cloud::CloudStore| {
        if config.batch_deletes {
            s
        } else {
            s.without_batches()
        }
    };
    match &config.store {
        StoreUrl::Folder(path) => Ok(Box::new(folder::FolderStore::open(path)?)),
        StoreUrl::Memory => Ok(Box::new(memory::MemoryStore::default())),
        StoreUrl::S3(location) => Ok(Box::new(batches(cloud::CloudStore::s3(location)?))),
        StoreUrl::Azure(location) => Ok(Box::new(batches(cloud::CloudStore::azure(location)?))),
        StoreUrl::CrmTable => {
            let settings = config.table.clone().ok_or_else(|| StoreError::Open {
                store: "crm://".into(),
                source: std::io::Error::other("[technical.table] is missing"),
            })?;
            let entity_tables = config
                .entities
                .iter()
                .map(|e| (e.name.clone(), e.table.clone()))
                .collect();
            Ok(Box::new(table::TableStore::open(
                &config.crm,
                settings,
                entity_tables,
            )?))
        }
    }
}

/// Whether two readers yield the same bytes (an object and a rewrite's
/// spool), read in bounded memory.
pub(crate) fn same_content(a: impl Read, b: impl Read) -> std::io::Result<bool> {
    use std::io::BufRead;
    let mut a = std::io::BufReader::with_capacity(1 << 16, a);
    let mut b = std::io::BufReader::with_capacity(1 << 16, b);
    loop {
        let (x, y) = (a.fill_buf()?, b.fill_buf()?);
        if x.is_empty() || y.is_empty() {
            return Ok(x.is_empty() && y.is_empty());
        }
        let n = x.len().min(y.len());
        if x[..n] != y[..n] {
            return Ok(false);
        }
        a.consume(n);
        b.consume(n);
    }
}

/// What a conditional write of a rewrite came to (a cloud store's PUT, or
/// its upload in parts).
#[derive(Debug)]
pub(crate) enum Written {
    /// The new object, by etag and version where the store names them.
    Put {
        e_tag: Option<String>,
        version: Option<String>,
    },
    /// The condition failed: another object is there, or none.
    ConditionFailed,
}

/// The next part of a spool (up to `size` bytes; empty at its end), read
/// off the async threads; the file comes back for the part after it.
pub(crate) async fn next_part(
    file: std::fs::File,
    size: u64,
) -> Result<(std::fs::File, Vec<u8>), StoreError> {
    tokio::task::spawn_blocking(move || {
        let mut part = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
        (&file).take(size).read_to_end(&mut part)?;
        Ok((file, part))
    })
    .await
    .map_err(|e| StoreError::io("read spool", std::io::Error::other(e.to_string())))?
    .map_err(|source| StoreError::io("read spool", source))
}

/// One result per key, in order: a key the store gave no answer for failed.
pub(crate) fn answered(
    out: Vec<Option<Result<DeleteOutcome, StoreError>>>,
) -> Vec<Result<DeleteOutcome, StoreError>> {
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(unanswered())))
        .collect()
}

/// Per-key requests a cloud store has in flight at once (HEADs before
/// DeleteObjects, version listings, the HEADs that settle failed Azure
/// conditions): enough to hide a remote endpoint's round trip (64 at 20 ms
/// is 3,200 keys/s, under S3's 5,500 HEADs per second per prefix).
pub(crate) const ASKS_IN_FLIGHT: usize = 64;

pub(crate) fn unanswered() -> StoreError {
    StoreError::failed(
        "delete",
        StoreErrorKind::Transient,
        "no answer for this key",
    )
}

/// Rejects keys that are not plain relative paths (no `..`, no absolute
/// paths, no empty segments, no NUL). Every other character is part of a
/// name: a backslash, a newline or a tab is an ordinary byte of a Unix file
/// name and of an S3 or Azure key, so a key the listing yields stays
/// deletable.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey { reason: "empty" });
    }
    if key.starts_with('/') || key.contains('\0') {
        return Err(StoreError::InvalidKey {
            reason: "absolute, or NUL",
        });
    }
    // Where `\` separates folders, it would lead where `/` may not.
    if cfg!(windows) && key.contains('\\') {
        return Err(StoreError::InvalidKey {
            reason: "backslash on Windows",
        });
    }
    for seg in key.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(StoreError::InvalidKey {
                reason: "empty, `.` or `..` segment",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod expected_tests {
    use super::*;

    /// Readers that hand out their bytes in different pieces compare by
    /// content alone.
    #[test]
    fn contents_compare_byte_for_byte_whatever_the_reads() {
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let long: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert!(same_content(Dribble(&long, 7), &long[..]).unwrap());
        assert!(same_content(&b""[..], &b""[..]).unwrap());
        assert!(!same_content(&long[..long.len() - 1], &long[..]).unwrap());
        assert!(!same_content(&long[..], Dribble(&long[..long.len() - 1], 3)).unwrap());
        let mut other = long.clone();
        other[150_000] ^= 1;
        assert!(!same_content(Dribble(&other, 4096), &long[..]).unwrap());
    }

    #[test]
    fn expectations_compare_size_date_and_etag_quoted_or_not() {
        let now = ObjectMeta {
            key: "a".into(),
            size: 9,
            modified: Some(100),
            etag: Some("abc".into()),
            metadata: Vec::new(),
            name: None,
        };
        let e = |size, modified, etag: Option<&str>| Expected {
            size,
            modified,
            etag: etag.map(String::from),
        };
        assert!(e(9, Some(100), Some("\"abc\"")).matches(&now));
        assert!(e(9, Some(100), None).matches(&now), "no etag listed");
        assert!(!e(9, Some(100), Some("abd")).matches(&now));
        assert!(!e(10, Some(100), Some("abc")).matches(&now));
        assert!(!e(9, Some(101), Some("abc")).matches(&now));
    }

    /// The kind is the one the error was made with, and `again` keeps it
    /// (and the text) for every key of a request that failed as a whole.
    #[test]
    fn errors_carry_their_kind_through_again() {
        for kind in [StoreErrorKind::Transient, StoreErrorKind::Permanent] {
            let e = StoreError::failed("delete", kind, "HTTP 503 ServerBusy");
            assert_eq!(e.kind(), kind);
            let again = e.again("batch delete");
            assert_eq!(again.kind(), kind);
            assert_eq!(
                again.to_string(),
                "batch delete failed: HTTP 503 ServerBusy"
            );
        }
        let key = StoreError::InvalidKey { reason: "empty" };
        assert_eq!(key.again("delete").kind(), StoreErrorKind::Permanent);
        let denied = StoreError::io("stat", std::io::ErrorKind::PermissionDenied.into());
        assert_eq!(denied.kind(), StoreErrorKind::Permanent);
        let reset = StoreError::io("open", std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(reset.kind(), StoreErrorKind::Transient);
    }

    /// Regression: `inbound/18/a\\b.json` was indexed and planned, then
    /// refused at delete; every byte but NUL and `/` is part of a name.
    #[test]
    fn keys_may_hold_any_character_but_not_leave_the_root() {
        for ok in [
            "a\\b.json",
            "new\nline",
            "tab\there",
            "50% off",
            "ä ö/ü.json",
            "a/.b",
            "..a",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "/abs", "a//b", "a/", "./a", "a/../b", "..", "a\0b"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }
}
