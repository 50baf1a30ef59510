//! The rewrite of a file of the folder store (a redaction).
//!
//! A rewrite writes the new content to a temporary file beside the
//! original, named after it (`.<name>.lethe-rewrite`, or a hash of the name
//! where that would be too long), so a retried or resumed rewrite reuses
//! that one file and never leaves several; it is fsynced, the
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
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cap_std::fs::Dir;

use super::{object_meta, path_of_key};
use crate::store::{Expected, ObjectMeta, RewriteOutcome, StoreError};

/// How a rewrite's temporary file ends.
const TEMP_SUFFIX: &str = ".lethe-rewrite";

/// Whether a file name is one of [`temp_name`]'s.
pub(super) fn is_rewrite_temp(name: &str) -> bool {
    name.len() > TEMP_SUFFIX.len() + 1 && name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// The temporary file a rewrite of `name` writes, in the same folder:
/// `.<name>.lethe-rewrite`, or, where that would pass the 255 bytes a file
/// name may have, a hash of the name in its place. Always the same for the
/// same name, so a retried rewrite reuses it.
pub(super) fn temp_name(name: &OsStr) -> OsString {
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
    crate::store::same_content(a.into_std(), b).map_err(|source| StoreError::io("compare", source))
}

/// Rewrites `key` inside `dir` with `content` (see the module doc): only the
/// object `expected` describes; gone is `AlreadyGone`, another one
/// `Changed` (untouched), one that already holds exactly `content` (a
/// retried or resumed rewrite) `Rewritten` as it is.
pub(super) fn rewrite_file(
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
