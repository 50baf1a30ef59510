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
//! A rewrite (a redaction) is `rewrite.rs`'s: a temporary file beside the
//! original, renamed over it; listings skip such temporary files.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

mod rewrite;

use rewrite::{is_rewrite_temp, rewrite_file, temp_name};

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
        name: None,
    }
}

/// Threads that list folders at once. Listing a folder whose entries are
/// out of the kernel's caches waits on the disk, which answers many reads
/// at once: at 1.1M files in 677k folders, cold, 4 walkers listed in 59 s
/// and 32 in 38 s (then both cores are busy in the kernel); warm, the same.
const WALKERS: usize = 32;
/// Entries a walker hands over at once (several small folders' worth).
const HAND_OVER: usize = 512;
/// Files one blocking task of [`read_batch`](TechnicalStore::read_batch)
/// reads one after the other; a batch's chunks are read at once.
const READ_CHUNK: usize = 8;
/// The largest file `read_batch` reads whole; a larger one (grown since
/// the listing) is left to `read`, which streams it.
const BATCH_FILE_BYTES: u64 = 1 << 20;

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
    ///
    /// A store of many small folders (one per lead, say) lists a folder
    /// per handful of files: a walker hands over several folders' entries
    /// at once ([`HAND_OVER`]) and wakes another walker only when it found
    /// folders for it (or when the walk is over), not after each folder.
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
                    // Entries listed and not handed over yet (whole
                    // folders, each in name order).
                    let mut listed_here: Vec<Listed> = Vec::new();
                    let hand_over = |listed_here: &mut Vec<Listed>| {
                        listed_here.is_empty() || tx.send(Ok(std::mem::take(listed_here))).is_ok()
                    };
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
                                    drop(q);
                                    hand_over(&mut listed_here);
                                    return;
                                }
                                // Nothing to list until another walker
                                // finds folders: what this one holds goes
                                // to the sink before it waits.
                                if !listed_here.is_empty() {
                                    drop(q);
                                    if !hand_over(&mut listed_here) {
                                        return;
                                    }
                                    q = match lock.lock() {
                                        Ok(q) => q,
                                        Err(_) => return,
                                    };
                                    continue;
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
                        match listed {
                            Ok((entries, folders)) => {
                                let found = folders.len();
                                q.0.extend(folders);
                                // This walker lists one of them next; the
                                // others are for sleeping walkers. The
                                // last folder listed wakes all to end.
                                if found > 1 || (q.1 == 0 && q.0.is_empty()) {
                                    wake.notify_all();
                                }
                                drop(q);
                                listed_here.extend(entries);
                                if listed_here.len() >= HAND_OVER && !hand_over(&mut listed_here) {
                                    return;
                                }
                            }
                            Err(e) => {
                                q.2 = true;
                                wake.notify_all();
                                drop(q);
                                hand_over(&mut listed_here);
                                let _ = tx.send(Err(e));
                                return;
                            }
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

    /// "Not found" counts as gone only when the store itself answers: a
    /// root that vanished (an unmounted share) is an error, not success.
    fn root_is_there(&self) -> Result<(), StoreError> {
        if std::fs::metadata(&self.root).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        Err(StoreError::Open {
            store: self.root.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the store's root folder is gone",
            ),
        })
    }

    fn meta_of(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        meta_in(&self.dir, key)
    }
}

/// A file's metadata inside `dir`; `None` when it is not there or not a
/// file (a symlink is not followed).
fn meta_in(dir: &Dir, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
    match dir.symlink_metadata(path_of_key(key)?) {
        Ok(m) if m.is_file() => Ok(Some(object_meta(key.to_string(), &m))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::io("stat", source)),
    }
}

/// A small file's whole content, for `read_batch`; `None` when it cannot
/// be read this way (gone, unreadable, larger than [`BATCH_FILE_BYTES`]),
/// and the caller opens it with `read`.
fn read_whole(dir: &Dir, key: &str) -> Option<Vec<u8>> {
    let file = dir.open(path_of_key(key).ok()?).ok()?.into_std();
    // One buffer of the file's size (and a byte to see it did not grow),
    // from the pool (`store::pool`): grown by doubling, or fresh for each
    // file, the buffers cost the kernel's zeroing of fresh pages as much
    // as parsing the files.
    let len = file.metadata().ok().filter(|m| m.is_file())?.len();
    if len > BATCH_FILE_BYTES {
        return None;
    }
    let mut content = super::pool::take(len as usize + 1);
    file.take(BATCH_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .ok()?;
    if content.len() as u64 > BATCH_FILE_BYTES {
        super::pool::give(content);
        return None;
    }
    Some(content)
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

    /// Opens on a blocking thread: out of the kernel's caches an open
    /// waits on the disk, and on the async threads it held up every other
    /// task. (Reading is the caller's, on its own blocking thread.)
    async fn read(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let (dir, path) = (self.dir.clone(), path_of_key(key)?);
        let f = tokio::task::spawn_blocking(move || dir.open(path))
            .await
            .map_err(|e| StoreError::io("open", std::io::Error::other(e.to_string())))?
            .map_err(|source| StoreError::io("open", source))?;
        Ok(Box::new(f.into_std()))
    }

    /// Reads the files [`READ_CHUNK`] at a time on each of several
    /// blocking threads at once: a file out of the kernel's caches waits
    /// on the disk for its inode and its data, and the disk answers many
    /// such reads at once.
    async fn read_batch(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let chunks = keys.chunks(READ_CHUNK).map(|chunk| {
            let (dir, chunk) = (self.dir.clone(), chunk.to_vec());
            let n = chunk.len();
            async move {
                tokio::task::spawn_blocking(move || {
                    chunk
                        .iter()
                        .map(|key| read_whole(&dir, key))
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_else(|_| vec![None; n])
            }
        });
        futures::future::join_all(chunks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.meta_of(key)
    }

    async fn delete(&self, key: &str) -> Result<DeleteOutcome, StoreError> {
        self.delete_expecting(key, None).await
    }

    /// The check and the delete on one blocking thread: the check's `stat`
    /// is what waits on the disk when the file is out of the kernel's
    /// caches, and on the async threads it ran two at a time whatever
    /// `apply.parallel_deletes` said.
    async fn delete_expecting(
        &self,
        key: &str,
        expected: Option<&Expected>,
    ) -> Result<DeleteOutcome, StoreError> {
        let (dir, key, expected) = (self.dir.clone(), key.to_string(), expected.cloned());
        let outcome = tokio::task::spawn_blocking(move || {
            // Not there: the delete itself says what it finds.
            if let Some(e) = expected
                && let Some(now) = meta_in(&dir, &key)?
                && !e.matches(&now)
            {
                return Ok(DeleteOutcome::Changed);
            }
            remove(&dir, &key)
        })
        .await
        .map_err(|e| StoreError::io("delete", std::io::Error::other(e.to_string())))??;
        if outcome == DeleteOutcome::AlreadyGone {
            self.root_is_there()?;
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
        if outcome == RewriteOutcome::AlreadyGone {
            self.root_is_there()?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
