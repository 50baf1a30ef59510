//! A local folder as a technical store. Every access goes through a cap-std
//! `Dir` opened on the root, so no path — not even one through a symlink
//! planted inside — resolves outside it. Listing never follows symlinks: they
//! are reported as skipped. Deleting removes the directories the delete
//! emptied, never the root.
//!
//! Keys are `String`s, file names are bytes: a byte that is not part of
//! valid UTF-8 stands in the key as one character of U+10FF80..=U+10FFFF
//! (the end of a private use plane), so every name has a key that leads
//! back to exactly that name. A name that itself holds such a character is
//! skipped with that reason (its key would be ambiguous).
//!
//! A rewrite (a redaction) writes the new content to a temporary file beside
//! the original, named after it (`.<name>.lethe-rewrite`, or a hash of the
//! name where that would be too long), so a retried or resumed rewrite
//! reuses that one file and never leaves several; it is fsynced, the
//! original is checked once more against what the index read, renamed over
//! and the folder fsynced. A reader sees the old content or the new, never a
//! mix. The new file keeps the original's permission bits (and its owner and
//! group where lethe may set them: as root, or as the owner); its
//! modification time is the time of the rewrite, so the index sees a new
//! object. A local filesystem has no compare-and-swap: a writer that changes
//! the original between that last check and the rename loses its write (a
//! window of one `stat`). Listings skip these temporary files (an
//! interrupted rewrite's is removed by the next rewrite of that object).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::{
    DeleteOutcome, Expected, Listed, ObjectMeta, RewriteOutcome, StoreError, StoreErrorKind,
    TechnicalStore, validate_key,
};

/// Where the characters that stand for bytes that are not UTF-8 begin.
const BYTE_CHARS: u32 = 0x10FF00;

fn is_byte_char(c: char) -> bool {
    (BYTE_CHARS + 0x80..=BYTE_CHARS + 0xFF).contains(&u32::from(c))
}

/// The key of a file name (or a relative path of names).
fn key_of_name(name: &OsStr) -> Result<String, &'static str> {
    let mut key = String::with_capacity(name.len());
    for chunk in name.as_bytes().utf8_chunks() {
        if chunk.valid().chars().any(is_byte_char) {
            return Err(
                "file name holds characters U+10FF80..U+10FFFF, which lethe uses for bytes that are not UTF-8",
            );
        }
        key.push_str(chunk.valid());
        for &b in chunk.invalid() {
            key.push(char::from_u32(BYTE_CHARS + u32::from(b)).ok_or("file name is not UTF-8")?);
        }
    }
    Ok(key)
}

/// The relative path a key names: the inverse of [`key_of_name`]. Only the
/// key the listing gives a name leads to it (the characters of valid UTF-8
/// written as byte characters do not).
fn path_of_key(key: &str) -> Result<PathBuf, StoreError> {
    validate_key(key)?;
    if !key.chars().any(is_byte_char) {
        return Ok(PathBuf::from(key));
    }
    let mut bytes = Vec::with_capacity(key.len());
    let mut buf = [0u8; 4];
    for c in key.chars() {
        match u32::from(c).checked_sub(BYTE_CHARS) {
            Some(b) if is_byte_char(c) => bytes.push(b as u8),
            _ => bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    let name = OsString::from_vec(bytes);
    if key_of_name(&name).as_deref() != Ok(key) {
        return Err(StoreError::InvalidKey {
            reason: "stands for bytes that are valid UTF-8; no file name has this key",
        });
    }
    Ok(PathBuf::from(name))
}

/// A file's listing entry: size and modification time (whole seconds).
fn object_meta(key: String, m: &cap_std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: m.len(),
        modified: m.modified().ok().and_then(|m| {
            m.into_std()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64)
        }),
        etag: None,
        metadata: Vec::new(),
    }
}

/// Threads that list folders at once.
const WALKERS: usize = 4;

pub struct FolderStore {
    root: PathBuf,
    /// Shared with the blocking threads that run deletes in parallel.
    dir: Arc<Dir>,
}

impl FolderStore {
    pub fn open(root: &Path) -> Result<FolderStore, StoreError> {
        let dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(|source| {
            StoreError::Open {
                store: root.display().to_string(),
                source,
            }
        })?;
        // The store's identity (`describe`, which the index keeps to know
        // its entries are of this store) must not depend on how the config
        // path was spelled: `-c lethe.toml` from the folder and
        // `-c /etc/lethe/lethe.toml` from a service are the same store.
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        Ok(FolderStore {
            root,
            dir: Arc::new(dir),
        })
    }

    /// Lists the whole tree: folders are listed by [`WALKERS`] threads at
    /// once (a listing is mostly the kernel's work per entry, and it runs
    /// on both cores), each folder's entries handed to `sink` together, in
    /// name order. Any failure fails the whole listing.
    fn walk(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError> {
        use std::sync::{Condvar, Mutex};
        // Folders still to list, as relative prefixes, and how many are
        // being listed; each is opened only when its turn comes, so a
        // million folders cost no file handles.
        let queue = (
            Mutex::new((vec![String::new()], 0usize, false)),
            Condvar::new(),
        );
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<Result<Vec<Listed>, StoreError>>(WALKERS * 4);
        let mut n = 0;
        let mut failed = None;
        std::thread::scope(|scope| {
            for _ in 0..WALKERS {
                let (queue, tx) = (&queue, tx.clone());
                scope.spawn(move || {
                    let (lock, wake) = queue;
                    loop {
                        let prefix = {
                            let Ok(mut q) = lock.lock() else { return };
                            loop {
                                if q.2 {
                                    return;
                                }
                                if let Some(p) = q.0.pop() {
                                    q.1 += 1;
                                    break p;
                                }
                                if q.1 == 0 {
                                    return;
                                }
                                q = match wake.wait(q) {
                                    Ok(q) => q,
                                    Err(_) => return,
                                };
                            }
                        };
                        let listed = self.list_dir(&prefix);
                        let Ok(mut q) = lock.lock() else { return };
                        q.1 -= 1;
                        let entries = match listed {
                            Ok((entries, folders)) => {
                                q.0.extend(folders);
                                Ok(entries)
                            }
                            Err(e) => {
                                q.2 = true;
                                Err(e)
                            }
                        };
                        wake.notify_all();
                        drop(q);
                        if tx.send(entries).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for batch in rx {
                match batch {
                    Ok(entries) => {
                        for l in entries {
                            n += u64::from(matches!(l, Listed::Object(_)));
                            sink(l);
                        }
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// One folder's entries (sorted by name) and its subfolders.
    fn list_dir(&self, prefix: &str) -> Result<(Vec<Listed>, Vec<String>), StoreError> {
        // Object keys can carry personal data: an error names the depth of
        // the entry that failed, never its name.
        let list_err = |at: &str, source: std::io::Error| StoreError::List {
            store: self.root.display().to_string(),
            at: if at.is_empty() {
                "the root".into()
            } else {
                format!(
                    "an entry {} folder(s) deep",
                    at.trim_end_matches('/').matches('/').count()
                )
            },
            kind: StoreErrorKind::of_io(&source),
            source,
        };
        let dir = if prefix.is_empty() {
            self.dir.try_clone().map_err(|e| list_err("", e))?
        } else {
            let path = path_of_key(prefix.trim_end_matches('/')).map_err(|e| {
                list_err(
                    prefix,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                )
            })?;
            self.dir.open_dir(path).map_err(|e| list_err(prefix, e))?
        };
        let entries = dir.entries().map_err(|e| list_err(prefix, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| list_err(prefix, e))?;
            names.push(entry);
        }
        // Sorted listings make runs reproducible.
        names.sort_by_key(|e| e.file_name());
        let (mut out, mut folders) = (Vec::with_capacity(names.len()), Vec::new());
        for entry in names {
            let name = entry.file_name();
            let name = match key_of_name(&name) {
                Ok(name) => name,
                Err(reason) => {
                    out.push(Listed::Skipped {
                        key: format!("{prefix}{}", name.to_string_lossy()),
                        reason: reason.into(),
                    });
                    continue;
                }
            };
            let key = format!("{prefix}{name}");
            let ft = entry.file_type().map_err(|e| list_err(&key, e))?;
            if is_rewrite_temp(&name) {
                out.push(Listed::Skipped {
                    key,
                    reason: "an interrupted rewrite's temporary file (the next rewrite of its object removes it)".into(),
                });
            } else if ft.is_symlink() {
                out.push(Listed::Skipped {
                    key,
                    reason: "symbolic link (never followed)".into(),
                });
            } else if ft.is_dir() {
                folders.push(format!("{key}/"));
            } else if ft.is_file() {
                let meta = entry.metadata().map_err(|e| list_err(&key, e))?;
                out.push(Listed::Object(object_meta(key, &meta)));
            } else {
                out.push(Listed::Skipped {
                    key,
                    reason: "not a regular file".into(),
                });
            }
        }
        Ok((out, folders))
    }

    fn meta_of(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self.dir.symlink_metadata(path_of_key(key)?) {
            Ok(m) if m.is_file() => Ok(Some(object_meta(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::io("stat", source)),
        }
    }
}

/// How a rewrite's temporary file ends.
const TEMP_SUFFIX: &str = ".lethe-rewrite";

/// Whether a file name is one of [`temp_name`]'s.
fn is_rewrite_temp(name: &str) -> bool {
    name.len() > TEMP_SUFFIX.len() + 1 && name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// The temporary file a rewrite of `name` writes, in the same folder:
/// `.<name>.lethe-rewrite`, or, where that would pass the 255 bytes a file
/// name may have, a hash of the name in its place. Always the same for the
/// same name, so a retried rewrite reuses it.
fn temp_name(name: &OsStr) -> OsString {
    let mut t = OsString::from(".");
    if name.len() + 1 + TEMP_SUFFIX.len() <= 255 {
        t.push(name);
    } else {
        use sha2::Digest;
        t.push(hex::encode(&sha2::Sha256::digest(name.as_bytes())[..16]));
    }
    t.push(TEMP_SUFFIX);
    t
}

/// What the original of a rewrite is now.
enum Original {
    Gone,
    /// Its listing entry, and the permission bits, owner and group the new
    /// file takes over.
    Here(ObjectMeta, Owner),
}

#[derive(Clone, Copy)]
struct Owner {
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The original of a rewrite: gone, or a regular file with its listing
/// entry; a symlink or anything but a file is refused, as a delete refuses
/// it.
fn original(dir: &Dir, path: &Path, key: &str) -> Result<Original, StoreError> {
    match dir.symlink_metadata(path) {
        Ok(m) if m.is_symlink() => Err(StoreError::InvalidKey {
            reason: "a symbolic link; lethe never rewrites through links",
        }),
        Ok(m) if !m.is_file() => Err(StoreError::InvalidKey {
            reason: "not a regular file",
        }),
        Ok(m) => {
            use cap_std::fs::MetadataExt;
            let owner = Owner {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            };
            Ok(Original::Here(object_meta(key.to_string(), &m), owner))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Original::Gone),
        Err(source) => Err(StoreError::io("stat", source)),
    }
}

/// Whether the file at `path` in `dir` holds exactly the bytes of `content`.
fn same_bytes(dir: &Dir, path: &Path, content: &Path) -> Result<bool, StoreError> {
    let a = dir
        .open(path)
        .map_err(|source| StoreError::io("open", source))?;
    let b = std::fs::File::open(content).map_err(|source| StoreError::io("open spool", source))?;
    super::same_content(a.into_std(), b).map_err(|source| StoreError::io("compare", source))
}

/// Rewrites `key` inside `dir` with `content` (see the module doc): only the
/// object `expected` describes; gone is `AlreadyGone`, another one
/// `Changed` (untouched), one that already holds exactly `content` (a
/// retried or resumed rewrite) `Rewritten` as it is.
fn rewrite_file(
    dir: &Dir,
    key: &str,
    expected: &Expected,
    content: &Path,
) -> Result<RewriteOutcome, StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = path_of_key(key)?;
    let (folder, name) = match (path.parent(), path.file_name()) {
        (Some(f), Some(n)) => (f.to_path_buf(), n.to_os_string()),
        _ => {
            return Err(StoreError::InvalidKey {
                reason: "no file name",
            });
        }
    };
    let temp = folder.join(temp_name(&name));
    let drop_temp = || match dir.remove_file(&temp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::io("remove temporary file", source)),
    };
    let spool_len = std::fs::metadata(content)
        .map_err(|source| StoreError::io("stat spool", source))?
        .len();
    // Asked before the copy, so that a changed object costs no copy.
    let (now, owner) = match original(dir, &path, key)? {
        Original::Gone => {
            drop_temp()?;
            return Ok(RewriteOutcome::AlreadyGone);
        }
        Original::Here(now, owner) => (now, owner),
    };
    if !expected.matches(&now) {
        drop_temp()?;
        if now.size == spool_len && same_bytes(dir, &path, content)? {
            return Ok(RewriteOutcome::Rewritten(now));
        }
        return Ok(RewriteOutcome::Changed);
    }
    let written = (|| -> std::io::Result<()> {
        // A file (or a link someone planted) under the temporary name goes
        // first; the new one is created afresh, never opened through a link.
        match dir.remove_file(&temp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = cap_std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        // Nobody else may read the new content before it has the
        // original's bits.
        cap_std::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let out = dir.open_with(&temp, &options)?.into_std();
        // Keeping the owner needs the right to give a file away; without
        // it the file is lethe's user's, as any file it writes.
        let _ = std::os::unix::fs::fchown(&out, Some(owner.uid), Some(owner.gid));
        out.set_permissions(std::fs::Permissions::from_mode(owner.mode))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
        let mut from = std::fs::File::open(content)?;
        std::io::copy(&mut from, &mut out)?;
        let out = out.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()
    })();
    if let Err(source) = written {
        let _ = drop_temp();
        return Err(StoreError::io("write temporary file", source));
    }
    // The last look before the rename: the copy may have taken a while.
    match original(dir, &path, key) {
        Ok(Original::Here(again, _)) if expected.matches(&again) => {}
        Ok(Original::Here(_, _)) => {
            drop_temp()?;
            return Ok(RewriteOutcome::Changed);
        }
        Ok(Original::Gone) => {
            drop_temp()?;
            return Ok(RewriteOutcome::AlreadyGone);
        }
        Err(e) => {
            let _ = drop_temp();
            return Err(e);
        }
    }
    if let Err(source) = dir.rename(&temp, dir, &path) {
        let _ = drop_temp();
        return Err(StoreError::io("rename over the original", source));
    }
    // The rename is durable once the folder is (opened for reading: the
    // `Dir` handles are not readable descriptors).
    let parent = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder.as_path()
    };
    dir.open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::io("fsync the folder", source))?;
    match original(dir, &path, key)? {
        Original::Here(new, _) => Ok(RewriteOutcome::Rewritten(new)),
        // Deleted right after the rename: the new content was in place.
        Original::Gone => Ok(RewriteOutcome::AlreadyGone),
    }
}

/// Deletes one file inside `dir`, then the folders the delete emptied.
fn remove(dir: &Dir, key: &str) -> Result<DeleteOutcome, StoreError> {
    let path = path_of_key(key)?;
    match dir.symlink_metadata(&path) {
        Ok(m) if m.is_symlink() => {
            return Err(StoreError::InvalidKey {
                reason: "a symbolic link; lethe never deletes through links",
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DeleteOutcome::AlreadyGone);
        }
        Err(source) => return Err(StoreError::io("stat", source)),
    }
    match dir.remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DeleteOutcome::AlreadyGone);
        }
        Err(source) => {
            return Err(StoreError::io("delete", source));
        }
    }
    // An interrupted rewrite's temporary file goes with its object.
    if let (Some(folder), Some(name)) = (path.parent(), path.file_name()) {
        let _ = dir.remove_file(folder.join(temp_name(name)));
    }
    // Remove the folders this delete emptied, deepest first; stop at the
    // first one that still holds something. The root is never a candidate.
    let mut parent = key;
    while let Some((up, _)) = parent.rsplit_once('/') {
        let Ok(up_path) = path_of_key(up) else { break };
        if dir.remove_dir(up_path).is_err() {
            break;
        }
        parent = up;
    }
    Ok(DeleteOutcome::Deleted)
}

#[async_trait]
impl TechnicalStore for FolderStore {
    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        self.dir.entries().map_err(|source| StoreError::Open {
            store: self.root.display().to_string(),
            source,
        })?;
        Ok(vec![
            format!("folder {}: readable", self.root.display()),
            "folder store: no object metadata (metadata link rules find nothing here)".into(),
            "folder store: no versions or snapshots kept by lethe; filesystem snapshots or backups are outside its reach".into(),
        ])
    }

    fn key_of(&self, reference: &str) -> Option<String> {
        let r = reference.trim();
        let r = r.strip_prefix("file://").unwrap_or(r);
        let path = Path::new(r);
        let rel = if path.is_absolute() {
            key_of_name(path.strip_prefix(&self.root).ok()?.as_os_str()).ok()?
        } else {
            r.to_string()
        };
        path_of_key(&rel).ok().map(|_| rel)
    }

    async fn list(&self, sink: &mut (dyn FnMut(Listed) + Send)) -> Result<u64, StoreError> {
        tokio::task::block_in_place(|| self.walk(sink))
    }

    async fn read(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let f = self
            .dir
            .open(path_of_key(key)?)
            .map_err(|source| StoreError::io("open", source))?;
        Ok(Box::new(f.into_std()))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.meta_of(key)
    }

    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError> {
        let (dir, key) = (self.dir.clone(), key.to_string());
        let root = self.root.clone();
        let outcome = tokio::task::spawn_blocking(move || remove(&dir, &key))
            .await
            .map_err(|e| StoreError::io("delete", std::io::Error::other(e.to_string())))??;
        // "Not found" counts as gone only when the store itself answers: a
        // root that vanished (an unmounted share) is an error, not success.
        if outcome == DeleteOutcome::AlreadyGone
            && !std::fs::metadata(&root).is_ok_and(|m| m.is_dir())
        {
            return Err(StoreError::Open {
                store: root.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the store's root folder is gone",
                ),
            });
        }
        Ok(outcome)
    }

    async fn rewrite(
        &self,
        key: &str,
        expected: &Expected,
        content: &Path,
    ) -> Result<RewriteOutcome, StoreError> {
        let (dir, key, expected) = (self.dir.clone(), key.to_string(), expected.clone());
        let content = content.to_path_buf();
        let outcome =
            tokio::task::spawn_blocking(move || rewrite_file(&dir, &key, &expected, &content))
                .await
                .map_err(|e| StoreError::io("rewrite", std::io::Error::other(e.to_string())))??;
        // As for a delete: "not found" is an answer only from a root that
        // is still there.
        if outcome == RewriteOutcome::AlreadyGone
            && !std::fs::metadata(&self.root).is_ok_and(|m| m.is_dir())
        {
            return Err(StoreError::Open {
                store: self.root.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the store's root folder is gone",
                ),
            });
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(store: &FolderStore) -> Vec<Listed> {
        let mut out = Vec::new();
        store.walk(&mut |l| out.push(l)).unwrap();
        out
    }

    #[test]
    fn lists_files_and_skips_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.json"), "{}").unwrap();
        std::fs::create_dir_all(tmp.path().join("inbound/1")).unwrap();
        std::fs::write(tmp.path().join("inbound/1/a.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("escape")).unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        let listed = collect(&store);
        assert!(listed.contains(&Listed::Object(ObjectMeta {
            key: "inbound/1/a.json".into(),
            size: 2,
            modified: listed.iter().find_map(|l| match l {
                Listed::Object(m) => m.modified,
                _ => None,
            }),
            etag: None,
            metadata: Vec::new(),
        })));
        assert!(
            listed
                .iter()
                .any(|l| matches!(l, Listed::Skipped { key, .. } if key == "escape"))
        );
        assert_eq!(
            listed.len(),
            2,
            "nothing listed through the symlink: {listed:?}"
        );
    }

    /// Names with bytes that are not UTF-8 are listed under keys that lead
    /// back to exactly them (and are deleted by them); a key spelling valid
    /// UTF-8 as byte characters names no file.
    #[test]
    fn names_that_are_not_utf8_are_listed_and_deleted_by_their_key() {
        let tmp = tempfile::tempdir().unwrap();
        let raw = |b: &[u8]| tmp.path().join(OsStr::from_bytes(b));
        std::fs::create_dir_all(raw(b"in\xff")).unwrap();
        std::fs::write(raw(b"in\xff/a\xe9.json"), "x").unwrap();
        std::fs::write(raw("caf\u{e9}".as_bytes()), "y").unwrap();
        std::fs::write(raw("odd\u{10ff90}".as_bytes()), "z").unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        let listed = collect(&store);
        let keys: Vec<&str> = listed
            .iter()
            .filter_map(|l| match l {
                Listed::Object(m) => Some(m.key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(keys.len(), 2, "{listed:?}");
        let odd = keys
            .iter()
            .find(|k| k.starts_with("in"))
            .unwrap()
            .to_string();
        assert_eq!(odd, "in\u{10ffff}/a\u{10ffe9}.json");
        assert!(
            listed.iter().any(
                |l| matches!(l, Listed::Skipped { reason, .. } if reason.contains("U+10FF80"))
            )
        );
        // "caf\xc3\xa9" spelled as byte characters is not the name café.
        assert!(remove(&store.dir, "caf\u{10ffc3}\u{10ffa9}").is_err());
        assert!(tmp.path().join("caf\u{e9}").exists());
        assert_eq!(remove(&store.dir, &odd).unwrap(), DeleteOutcome::Deleted);
        assert!(!raw(b"in\xff").exists(), "its emptied folder goes too");
        assert_eq!(
            remove(&store.dir, "caf\u{e9}").unwrap(),
            DeleteOutcome::Deleted
        );
    }

    /// A file:// URL or absolute path names an object when it is inside the
    /// root, however the root was spelled when the store was opened.
    #[test]
    fn file_urls_inside_the_root_name_their_object() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("t/in")).unwrap();
        let spelled = tmp.path().join("t/in/..");
        let store = FolderStore::open(&spelled).unwrap();
        let abs = std::fs::canonicalize(tmp.path())
            .unwrap()
            .join("t/in/a.json");
        let want = Some("in/a.json".to_string());
        assert_eq!(store.key_of(&format!("file://{}", abs.display())), want);
        assert_eq!(store.key_of(&abs.display().to_string()), want);
        assert_eq!(store.key_of("in/a.json"), want);
        assert_eq!(store.key_of("file:///elsewhere/a.json"), None);
        assert_eq!(store.key_of("../a.json"), None);
    }

    #[test]
    fn delete_stays_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("link")).unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        assert!(remove(&store.dir, "link/victim").is_err());
        assert!(remove(&store.dir, "../victim").is_err());
        assert!(
            remove(&store.dir, "link").is_err(),
            "a symlink itself is not deleted"
        );
        assert!(outside.path().join("victim").exists());
    }

    #[test]
    fn delete_removes_emptied_folders_but_not_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
        std::fs::write(tmp.path().join("a/b/c/x"), "x").unwrap();
        std::fs::write(tmp.path().join("a/keep"), "k").unwrap();
        std::fs::write(tmp.path().join("top"), "t").unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        assert_eq!(
            remove(&store.dir, "a/b/c/x").unwrap(),
            DeleteOutcome::Deleted
        );
        assert!(!tmp.path().join("a/b").exists());
        assert!(tmp.path().join("a/keep").exists());
        assert_eq!(
            remove(&store.dir, "a/b/c/x").unwrap(),
            DeleteOutcome::AlreadyGone
        );
        assert_eq!(remove(&store.dir, "top").unwrap(), DeleteOutcome::Deleted);
        assert_eq!(
            remove(&store.dir, "a/keep").unwrap(),
            DeleteOutcome::Deleted
        );
        assert!(tmp.path().exists(), "the root stays");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    fn expected_of(store: &FolderStore, key: &str) -> Expected {
        let m = store.meta_of(key).unwrap().unwrap();
        Expected {
            size: m.size,
            modified: m.modified,
            etag: m.etag,
        }
    }

    fn spool(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, content).unwrap();
        f
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// A file at the root: the new content under the old name, with the
    /// original's permission bits, a fresh date, and no temporary file left.
    #[test]
    fn rewrites_keep_the_mode_and_leave_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.csv");
        std::fs::write(&file, "id\n1\n2\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        let expected = expected_of(&store, "a.csv");
        let new = spool(b"id\n2\n");
        let meta = match rewrite_file(&store.dir, "a.csv", &expected, new.path()).unwrap() {
            RewriteOutcome::Rewritten(meta) => meta,
            other => panic!("{other:?}"),
        };
        assert_eq!(std::fs::read(&file).unwrap(), b"id\n2\n");
        assert_eq!(meta.size, 5);
        assert!(
            meta.modified > expected.modified,
            "the date is the rewrite's"
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(names(tmp.path()), vec!["a.csv"]);
    }

    /// A symlinked original is refused as a delete refuses it, and what it
    /// points to is untouched; a link planted under the temporary name is
    /// removed, never written through.
    #[test]
    fn rewrites_never_write_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim.csv"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim.csv"), tmp.path().join("l.csv"))
            .unwrap();
        std::fs::write(tmp.path().join("inside.csv"), "keep me").unwrap();
        std::fs::write(tmp.path().join("b.csv"), "id\n1\n").unwrap();
        std::os::unix::fs::symlink("inside.csv", tmp.path().join(".b.csv.lethe-rewrite")).unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        let any = expected_of(&store, "b.csv");
        let new = spool(b"id\n");
        assert!(rewrite_file(&store.dir, "l.csv", &any, new.path()).is_err());
        assert_eq!(
            std::fs::read(outside.path().join("victim.csv")).unwrap(),
            b"x"
        );
        assert!(matches!(
            rewrite_file(&store.dir, "b.csv", &any, new.path()).unwrap(),
            RewriteOutcome::Rewritten(_)
        ));
        assert_eq!(
            std::fs::read(tmp.path().join("inside.csv")).unwrap(),
            b"keep me"
        );
        assert_eq!(std::fs::read(tmp.path().join("b.csv")).unwrap(), b"id\n");
        assert_eq!(names(tmp.path()), vec!["b.csv", "inside.csv", "l.csv"]);
    }

    /// What an interrupted rewrite leaves (its temporary file) is listed as
    /// skipped, never as an object; the next rewrite of the object, or its
    /// delete, removes it.
    #[test]
    fn an_interrupted_rewrites_temporary_file_is_skipped_then_removed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("x/y")).unwrap();
        for n in ["x/c.csv", "x/y/d.csv"] {
            std::fs::write(tmp.path().join(n), "id\n1\n").unwrap();
        }
        std::fs::write(tmp.path().join("x/.c.csv.lethe-rewrite"), "id\n").unwrap();
        std::fs::write(tmp.path().join("x/y/.d.csv.lethe-rewrite"), "id").unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        let listed = collect(&store);
        let objects: Vec<&str> = listed
            .iter()
            .filter_map(|l| match l {
                Listed::Object(m) => Some(m.key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(objects.len(), 2, "{listed:?}");
        assert!(listed.iter().any(|l| matches!(l,
            Listed::Skipped { key, reason } if key == "x/.c.csv.lethe-rewrite" && reason.contains("interrupted rewrite"))));
        let expected = expected_of(&store, "x/c.csv");
        let new = spool(b"id\n");
        assert!(matches!(
            rewrite_file(&store.dir, "x/c.csv", &expected, new.path()).unwrap(),
            RewriteOutcome::Rewritten(_)
        ));
        assert_eq!(
            remove(&store.dir, "x/y/d.csv").unwrap(),
            DeleteOutcome::Deleted
        );
        assert!(
            !tmp.path().join("x/y").exists(),
            "its emptied folder goes too"
        );
        assert_eq!(names(&tmp.path().join("x")), vec!["c.csv"]);
    }

    /// A name too long for the suffix gets a temporary file named by its
    /// hash, the same on every try.
    #[test]
    fn long_names_are_rewritten_through_a_hashed_temporary_name() {
        let long = format!("{}.csv", "n".repeat(246));
        let t = temp_name(OsStr::new(&long));
        assert!(t.len() <= 255 && is_rewrite_temp(&t.to_string_lossy()));
        assert_eq!(t, temp_name(OsStr::new(&long)));
        assert_eq!(
            temp_name(OsStr::new("a.csv")),
            OsString::from(".a.csv.lethe-rewrite")
        );
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(&long), "id\n1\n").unwrap();
        let store = FolderStore::open(tmp.path()).unwrap();
        let expected = expected_of(&store, &long);
        let new = spool(b"id\n");
        assert!(matches!(
            rewrite_file(&store.dir, &long, &expected, new.path()).unwrap(),
            RewriteOutcome::Rewritten(_)
        ));
        assert_eq!(names(tmp.path()), vec![long]);
    }
}
