//! The residual scan of verify: every object of the store, whatever its
//! fate or format, read once and searched (by `residual::Scanner`) for the
//! identifiers the plan erased; each object that still names a deleted
//! entity is reported with why it was left.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;

use super::residual::{Erased, Fingerprint, IdentifierKind, Scanner, parse_hash};
use super::{Residual, VerifyError, VerifyReport};
use crate::audit::pseudonym::Pseudonymizer;
use crate::config::Config;
use crate::state::{ObjectHolds, StateStore};
use crate::store::{Listed, StoreError, TechnicalStore};

/// Identifier rows read at a time.
const PAGE: i64 = 10_000;
/// Groups read and scanned at once (each on a blocking thread).
const IN_FLIGHT: usize = 4;
/// Objects of a group opened at once.
const OPENING: usize = 8;

/// Scans the store for the identifiers `plan_id` erased; fills the scan's
/// fields of `report`.
pub(super) async fn residual(
    config: &Config,
    store: &dyn TechnicalStore,
    state: &StateStore,
    plan_id: &str,
    report: &mut VerifyReport,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), VerifyError> {
    let Some(scanner) = load_scanner(config, state, plan_id).await? else {
        return Ok(());
    };
    report.identifiers = scanner.len() as u64;
    let found = store_scan(store, Arc::new(scanner), progress).await?;
    report.objects_scanned += found.scanned;
    report.bytes_scanned += found.bytes;
    report.scan_skipped += found.skipped;
    report.scan_failed += found.failed;
    let mut hits = found.hits;
    hits.sort();
    let fates = crate::state::plans::object_fates(
        state,
        plan_id,
        &hits.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
    )
    .await?;
    let holds = ObjectHolds::from_holds(&state.holds().await?);
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    for (key, named) in hits {
        let why = why_left(holds.holds(&key), fates.get(&key));
        report.residual.push(Residual {
            object: pseudo.show_object(&key),
            entities: named,
            why: why.to_string(),
        });
    }
    Ok(())
}

/// What a scan of the whole store found.
#[derive(Debug, Default)]
pub struct StoreScan {
    /// Objects that name a searched identifier, with how many distinct
    /// entities (the scanner's indices) they name; in key order.
    pub hits: Vec<(String, u64)>,
    pub scanned: u64,
    pub bytes: u64,
    /// Entries the listing skips (symlinks, leftover rewrite files): not
    /// searched.
    pub skipped: u64,
    /// Objects that could not be read (and were not gone since).
    pub failed: u64,
}

/// Reads every object of the store once through `scanner`, several at a
/// time, streaming. Small objects go in groups (as the index groups them:
/// `index::joins_group`), one blocking hand-over per group:
/// one hand-over per object cost more than the search itself (at 300,000
/// objects the scan waited on thread wake-ups, not on reading).
/// `progress(done, total)`.
pub async fn store_scan(
    store: &dyn TechnicalStore,
    scanner: Arc<Scanner>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<StoreScan, VerifyError> {
    let mut out = StoreScan::default();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_bytes = 0u64;
    let mut total = 0u64;
    store
        .list(&mut |l| match l {
            Listed::Object(m) => {
                total += 1;
                let fits = groups
                    .last()
                    .is_some_and(|g| crate::index::joins_group(g.keys.len(), group_bytes, m.size));
                match groups.last_mut() {
                    Some(g) if fits => {
                        group_bytes += m.size;
                        g.keys.push(m.key);
                    }
                    _ => {
                        group_bytes = m.size;
                        groups.push(Group {
                            keys: vec![m.key],
                            small: crate::index::joins_group(0, 0, m.size),
                        });
                    }
                }
            }
            Listed::Skipped { .. } => out.skipped += 1,
        })
        .await?;
    progress(0, total);
    let scans = groups.into_iter().map(|group| {
        let scanner = scanner.clone();
        async move { scan_group(store, scanner, group).await }
    });
    let mut results = futures::stream::iter(scans).buffer_unordered(IN_FLIGHT);
    let mut done = 0;
    while let Some(group) = results.next().await {
        for (key, found) in group {
            done += 1;
            if done % 256 == 0 || done == total {
                progress(done, total);
            }
            match found {
                Ok((bytes, named)) => {
                    out.scanned += 1;
                    out.bytes += bytes;
                    if named > 0 {
                        out.hits.push((key, named));
                    }
                }
                Err(e) => {
                    // Gone since the listing: nothing left in it to find.
                    if !matches!(store.head(&key).await, Ok(None)) {
                        tracing::warn!(error = %e, "residual scan could not read an object");
                        out.failed += 1;
                    }
                }
            }
        }
    }
    drop(results);
    out.hits.sort();
    Ok(out)
}

/// The scanner over the plan's erased identifiers; `None` when it erased
/// none (no type declares `identifiers`, or nothing was deleted).
async fn load_scanner(
    config: &Config,
    state: &StateStore,
    plan_id: &str,
) -> Result<Option<Scanner>, VerifyError> {
    let mut entities: HashMap<String, u32> = HashMap::new();
    let mut erased = Erased::default();
    let mut after: Option<(String, String)> = None;
    loop {
        let rows = crate::state::erased::of_plan(
            state,
            plan_id,
            after.as_ref().map(|(h, e)| (h.as_str(), e.as_str())),
            PAGE,
        )
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.hash.clone(), last.entity.clone()));
        for r in rows {
            let (Ok(kind), Some(hash)) = (r.kind.parse::<IdentifierKind>(), parse_hash(&r.hash))
            else {
                continue;
            };
            let next = entities.len() as u32;
            let id = *entities.entry(r.entity).or_insert(next);
            erased.add(kind, hash, id, r.len);
        }
    }
    Ok(erased.scanner(Fingerprint::new(&config.audit_key)))
}

/// What scanning one object gave: its size and how many distinct deleted
/// entities it names, or why it could not be read.
type Scanned = (String, Result<(u64, u64), StoreError>);

/// An object opened for reading, or why it could not be.
type Opened = Result<Box<dyn std::io::Read + Send>, StoreError>;

/// An object of a group: read whole with its group (the buffer goes back
/// to the store's pool once searched), or opened alone.
enum Content {
    Read(Vec<u8>),
    Open(Opened),
}

/// Objects listed together and scanned together: up to a group of the
/// index's size, or one large object alone.
struct Group {
    keys: Vec<String>,
    /// All of them small enough to be read whole (`read_batch`).
    small: bool,
}

/// Reads the objects of a group and searches them one after the other on
/// one blocking thread; one answer per key, in order. Small objects are
/// read whole in one batch where the store can (a folder reads them
/// several at once: cold, each waits on the disk); the others are opened
/// and streamed.
async fn scan_group(
    store: &dyn TechnicalStore,
    scanner: Arc<Scanner>,
    group: Group,
) -> Vec<Scanned> {
    let Group { keys, small } = group;
    let bodies = if small {
        store.read_batch(&keys).await
    } else {
        vec![None; keys.len()]
    };
    // The others opened several at a time (a cloud store's read is a
    // request), in order.
    let opened: Vec<(String, Content)> = futures::stream::iter(keys.into_iter().zip(bodies))
        .map(|(key, body)| async move {
            let content = match body {
                Some(body) => Content::Read(body),
                None => Content::Open(store.read(&key).await),
            };
            (key, content)
        })
        .buffered(OPENING)
        .collect()
        .await;
    let names: Vec<String> = opened.iter().map(|(k, _)| k.clone()).collect();
    let scanned = tokio::task::spawn_blocking(move || {
        opened
            .into_iter()
            .map(|(key, content)| {
                let found = match content {
                    Content::Read(body) => {
                        let found = search(&scanner, body.as_slice());
                        crate::store::pool::give(body);
                        found
                    }
                    Content::Open(reader) => reader.and_then(|reader| search(&scanner, reader)),
                };
                (key, found)
            })
            .collect::<Vec<Scanned>>()
    })
    .await;
    settled(scanned, names)
}

/// One object through the scanner: its size and how many distinct deleted
/// entities it names.
fn search(scanner: &Scanner, reader: impl std::io::Read) -> Result<(u64, u64), StoreError> {
    let mut named = BTreeSet::new();
    let stats = scanner
        .scan(reader, &mut |e| {
            named.insert(e);
        })
        .map_err(|e| StoreError::io("scanning an object", e))?;
    Ok((stats.bytes, named.len() as u64))
}

/// A group's answers; when its blocking task panicked, none of its objects
/// counts as searched.
fn settled(
    scanned: Result<Vec<Scanned>, tokio::task::JoinError>,
    names: Vec<String>,
) -> Vec<Scanned> {
    match scanned {
        Ok(group) => group,
        Err(e) => {
            let why = e.to_string();
            names
                .into_iter()
                .map(|key| {
                    let e = std::io::Error::other(why.clone());
                    (key, Err(StoreError::io("scanning an object", e)))
                })
                .collect()
        }
    }
}

/// Why an object that names a deleted entity was left, from the plan's
/// decision about it (`state::plans::object_fates`) and the holds now.
fn why_left(held: bool, fate: Option<&(String, Option<String>)>) -> &'static str {
    if held {
        return "held";
    }
    let Some((fate, status)) = fate else {
        // Linked only to retained entities, or newer than the plan's index:
        // it names a deleted entity that no link tied it to.
        return "unlinked";
    };
    match (fate.as_str(), status.as_deref()) {
        ("held", _) => "held",
        ("unreadable", _) => "unreadable",
        ("shared", _) => "shared",
        (_, Some("skipped")) => "changed",
        (_, Some("failed" | "planned" | "executing")) => "failed",
        // Redacted: the value sits outside the records that went (a kept
        // record, a header, a comment).
        ("redact", _) => "shared",
        _ => "unlinked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensitive::Sensitive;
    use crate::verify::residual::normalise;

    /// Grouped scans find what each object holds, in a folder and in
    /// memory: every object once, the large ones alone, the hits by key
    /// with the number of deleted entities each names.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_scans_find_every_object_once() {
        let key = Sensitive::new(b"scan-test-key-0123456789".to_vec());
        let fp = Fingerprint::new(&key);
        let emails = ["ann@example.com", "bob@example.com", "cy@example.com"];
        let erased: Vec<_> = emails
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let n = normalise(IdentifierKind::Email, e).unwrap();
                (
                    IdentifierKind::Email,
                    fp.hash(IdentifierKind::Email, &n),
                    i as u32,
                )
            })
            .collect();
        let scanner = Arc::new(Scanner::new(fp, erased));
        let dir = tempfile::tempdir().unwrap();
        let memory = crate::store::memory::MemoryStore::default();
        let mut want = Vec::new();
        let mut bytes = 0u64;
        for i in 0..300u32 {
            let mut body = format!(
                "{{\"n\": {i}, \"pad\": \"{}\"",
                "x".repeat(100 + i as usize)
            );
            if i % 97 == 5 {
                body.push_str(&format!(
                    ", \"to\": \"{}\"",
                    emails[(i % 3) as usize].to_uppercase()
                ));
                want.push((format!("o/{i:03}.json"), 1u64));
            }
            if i == 150 {
                body.push_str(", \"cc\": [\"ann@example.com\", \"bob@example.com\"]");
                want.push((format!("o/{i:03}.json"), 2));
            }
            if i % 50 == 7 {
                // Over a group's bytes: read alone.
                body.push_str(&format!(", \"big\": \"{}\"", "y".repeat((1 << 20) + 10)));
            }
            body.push('}');
            bytes += body.len() as u64;
            std::fs::create_dir_all(dir.path().join("o")).unwrap();
            std::fs::write(dir.path().join(format!("o/{i:03}.json")), &body).unwrap();
            memory.put(&format!("o/{i:03}.json"), body.into_bytes(), 1_700_000_000);
        }
        want.sort();
        let folder = crate::store::folder::FolderStore::open(dir.path()).unwrap();
        for store in [&folder as &dyn TechnicalStore, &memory] {
            let found = store_scan(store, scanner.clone(), &|_, _| {})
                .await
                .unwrap();
            assert_eq!(found.scanned, 300);
            assert_eq!(found.bytes, bytes);
            assert_eq!(found.failed, 0);
            assert_eq!(found.hits, want);
        }
    }

    #[test]
    fn why_follows_the_plan_and_the_holds() {
        let f = |fate: &str, status: Option<&str>| (fate.to_string(), status.map(String::from));
        assert_eq!(why_left(true, Some(&f("delete", Some("deleted")))), "held");
        assert_eq!(why_left(false, Some(&f("held", None))), "held");
        assert_eq!(why_left(false, Some(&f("shared", None))), "shared");
        assert_eq!(why_left(false, Some(&f("unreadable", None))), "unreadable");
        assert_eq!(
            why_left(false, Some(&f("redact", Some("skipped")))),
            "changed"
        );
        assert_eq!(
            why_left(false, Some(&f("delete", Some("failed")))),
            "failed"
        );
        assert_eq!(
            why_left(false, Some(&f("redact", Some("redacted")))),
            "shared"
        );
        assert_eq!(why_left(false, Some(&f("orphan-young", None))), "unlinked");
        assert_eq!(why_left(false, None), "unlinked");
    }
}
