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
        name: None,
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

/// A tree of many small folders (one per lead, as integration services
/// keep them), wide and deep, is listed whole by the walkers: each file
/// once, each folder's files together and in name order, however the
/// walkers hand their folders over.
#[test]
fn many_small_folders_are_listed_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for year in 0..3 {
        for lead in 0..700 {
            let dir = format!("leads/{year}/lead-{lead:04}");
            std::fs::create_dir_all(tmp.path().join(&dir)).unwrap();
            for file in 0..(lead % 3) {
                let key = format!("{dir}/{file}.json");
                std::fs::write(tmp.path().join(&key), "{}").unwrap();
                want.push(key);
            }
            if lead % 50 == 0 {
                let deep = format!("{dir}/a/b/c");
                std::fs::create_dir_all(tmp.path().join(&deep)).unwrap();
                std::fs::write(tmp.path().join(format!("{deep}/x.xml")), "<x/>").unwrap();
                want.push(format!("{deep}/x.xml"));
            }
        }
    }
    let store = FolderStore::open(tmp.path()).unwrap();
    for _ in 0..3 {
        let mut keys = Vec::new();
        let n = store
            .walk(&mut |l| match l {
                Listed::Object(m) => keys.push(m.key),
                Listed::Skipped { key, .. } => panic!("skipped {key}"),
            })
            .unwrap();
        assert_eq!(n as usize, want.len());
        // A folder's files arrive together, in name order.
        let folder = |k: &str| k.rsplit_once('/').map(|(f, _)| f.to_string());
        let mut done = std::collections::HashSet::new();
        for (i, k) in keys.iter().enumerate().skip(1) {
            if folder(k) == folder(&keys[i - 1]) {
                assert!(keys[i - 1] < *k, "{} before {k}", keys[i - 1]);
            } else {
                done.insert(folder(&keys[i - 1]));
                assert!(
                    !done.contains(&folder(k)),
                    "{k}'s folder listed in two parts"
                );
            }
        }
        let mut got = keys.clone();
        got.sort();
        let mut all = want.clone();
        all.sort();
        assert_eq!(got, all);
    }
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
        listed
            .iter()
            .any(|l| matches!(l, Listed::Skipped { reason, .. } if reason.contains("U+10FF80")))
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

/// A batch read answers each key in order with that file's whole content,
/// as `read` would, and `None` for what it must leave to `read` or refuse:
/// a file gone, a folder, a file over the batch's size, a name through a
/// symlink out of the root, a key that climbs out of it. Many keys (more
/// than one chunk of reads) keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_answer_each_key_in_order_and_never_leave_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.json"), "outside").unwrap();
    std::os::unix::fs::symlink(outside.path(), tmp.path().join("link")).unwrap();
    std::fs::create_dir_all(tmp.path().join("in/sub")).unwrap();
    let odd = tmp.path().join(OsStr::from_bytes(b"in/\xff.csv"));
    std::fs::write(&odd, "odd name").unwrap();
    let big = vec![b'x'; BATCH_FILE_BYTES as usize + 1];
    std::fs::write(tmp.path().join("in/big.csv"), &big).unwrap();
    let mut keys = Vec::new();
    let mut want = Vec::new();
    for i in 0..(READ_CHUNK * 3 + 5) {
        let body = format!("file {i}: {}", "y".repeat(i));
        std::fs::write(tmp.path().join(format!("in/{i:02}.json")), &body).unwrap();
        keys.push(format!("in/{i:02}.json"));
        want.push(Some(body.into_bytes()));
    }
    let extra: [(&str, Option<&[u8]>); 6] = [
        ("in/\u{10ffff}.csv", Some(b"odd name")),
        ("in/gone.json", None),
        ("in/sub", None),
        ("in/big.csv", None),
        ("link/secret.json", None),
        ("../secret.json", None),
    ];
    for (at, (key, body)) in [3, 9, 10, 17, 20, 30].into_iter().zip(extra) {
        keys.insert(at, key.to_string());
        want.insert(at, body.map(<[u8]>::to_vec));
    }
    let store = FolderStore::open(tmp.path()).unwrap();
    let read = store.read_batch(&keys).await;
    assert_eq!(read, want);
    // The buffers go back to the pool and are read into again, the longer
    // files' for shorter ones: each answer is its own file, nothing more.
    read.into_iter()
        .flatten()
        .for_each(crate::store::pool::give);
    let (mut keys_back, mut want_back) = (keys.clone(), want.clone());
    keys_back.reverse();
    want_back.reverse();
    for _ in 0..3 {
        let read = store.read_batch(&keys_back).await;
        assert_eq!(read, want_back);
        read.into_iter()
            .flatten()
            .for_each(crate::store::pool::give);
    }
    // What the batch read is what `read` reads.
    let read_all = |key: &'static str| {
        let store = &store;
        async move {
            let mut all = Vec::new();
            store
                .read(key)
                .await
                .unwrap()
                .read_to_end(&mut all)
                .unwrap();
            all
        }
    };
    assert_eq!(
        Some(read_all("in/05.json").await),
        want[keys.iter().position(|k| k == "in/05.json").unwrap()]
    );
    // The file over the batch's size is still read whole by `read`.
    assert_eq!(read_all("in/big.csv").await.len(), big.len());
}
