//! Every version and delete marker of a key in a versioned S3 bucket:
//! ListObjectVersions (exactly the key, not the others it prefixes; keys
//! whose latest entry is a delete marker), and deleting them with
//! DeleteObjects by version id, 1,000 at a time, or `DELETE ?versionId=` one
//! by one: all of them for a delete, all but the new one after a rewrite.

use std::sync::Arc;

use futures::StreamExt;
use http::Method;
use percent_encoding::utf8_percent_encode;

use super::S3Versions;
use crate::store::http::{PATH, QUERY, answer_error, err, leaf, leaves, records};
use crate::store::{DeleteOutcome, StoreError, StoreErrorKind};

/// One entry of a version listing.
struct ListedVersion {
    key: String,
    version: String,
    /// A delete marker, not a version.
    marker: bool,
    latest: bool,
    /// A version's size, date and etag.
    meta: Option<crate::store::ObjectMeta>,
}

/// A version of a key to delete: its index in the caller's list, the full
/// key, the version id.
type VersionItem = (usize, String, String);

impl S3Versions {
    /// Every version id and delete marker of `full_key` (exactly that key,
    /// not the others it prefixes).
    pub async fn versions_of(&self, full_key: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.versions_and_latest(full_key).await?.0)
    }

    /// One page of ListObjectVersions under `prefix`, from `after` on: its
    /// versions and delete markers in key order, and where the next page
    /// starts (`None` on the last page).
    async fn versions_page(
        &self,
        prefix: &str,
        after: Option<&(String, String)>,
    ) -> Result<(Vec<ListedVersion>, Option<(String, String)>), StoreError> {
        let mut url = format!(
            "{}?versions&max-keys=1000&prefix={}",
            self.bucket_url,
            utf8_percent_encode(prefix, QUERY)
        );
        if let Some((k, v)) = after {
            url.push_str(&format!(
                "&key-marker={}&version-id-marker={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            ));
        }
        let (status, body) = self
            .send("list versions", Method::GET, &url, &[], vec![])
            .await?;
        if status != 200 {
            return Err(answer_error("list versions", status, &body));
        }
        let invalid = |e| err("list versions", StoreErrorKind::Transient, e);
        let top: Vec<_> = leaves(&body)
            .map_err(invalid)?
            .into_iter()
            .filter(|(p, _, _)| p == "ListVersionsResult")
            .collect();
        let next = match (
            leaf(&top, "IsTruncated").as_deref() == Some("true"),
            leaf(&top, "NextKeyMarker"),
            leaf(&top, "NextVersionIdMarker"),
        ) {
            (true, Some(k), Some(v)) => Some((k, v)),
            _ => None,
        };
        // Each entry on its own, whatever the order of its fields. The
        // answer lists versions and markers in elements of their own: sorted
        // by key (stably, newest first within a key), a key's are together.
        let mut entries = Vec::new();
        for entry in ["Version", "DeleteMarker"] {
            for rec in records(&body, entry).map_err(invalid)? {
                let field = |n: &str| {
                    rec.iter()
                        .find(|(name, _)| name == n)
                        .map(|(_, t)| t.clone())
                };
                let (Some(key), Some(version)) = (field("Key"), field("VersionId")) else {
                    continue;
                };
                let marker = entry == "DeleteMarker";
                entries.push(ListedVersion {
                    meta: (!marker).then(|| crate::store::ObjectMeta {
                        key: key.clone(),
                        size: field("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                        modified: field("LastModified")
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .map(|t| t.as_second()),
                        etag: field("ETag").map(|e| e.trim_matches('"').to_string()),
                        metadata: Vec::new(),
                        name: None,
                    }),
                    key,
                    version,
                    marker,
                    latest: field("IsLatest").as_deref() == Some("true"),
                });
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((entries, next))
    }

    /// The version ids of `full_key` and, when its latest entry is a version
    /// (not a delete marker), that version's size, date and etag.
    async fn versions_and_latest(
        &self,
        full_key: &str,
    ) -> Result<(Vec<String>, Option<crate::store::ObjectMeta>), StoreError> {
        let mut latest = None;
        let mut out = Vec::new();
        for e in self.entries_of(full_key).await? {
            if e.latest && !e.marker {
                latest = e.meta;
            }
            out.push(e.version);
        }
        Ok((out, latest))
    }

    /// Every version and delete marker of `full_key`, exactly that key.
    async fn entries_of(&self, full_key: &str) -> Result<Vec<ListedVersion>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (entries, next) = self.versions_page(full_key, after.as_ref()).await?;
            // Keys come in order: once past the key, the rest are others.
            let past = entries.iter().any(|e| e.key.as_str() > full_key);
            out.extend(entries.into_iter().filter(|e| e.key == full_key));
            if out.len() > 1_000_000 {
                return Err(err(
                    "list versions",
                    StoreErrorKind::Transient,
                    "more than a million versions of one key".into(),
                ));
            }
            match next {
                Some(n) if !past => after = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// After a rewrite of `full_key`: deletes every version and delete
    /// marker of it but `keep` (the version the rewrite wrote) and the
    /// latest one (the rewrite's, or a write after it: never the object
    /// the store now shows). Answers how many went; a version that could
    /// not be deleted (Object Lock, MFA delete) fails the whole call, and
    /// the next rewrite or delete of the key lists again.
    pub async fn delete_versions_except(
        self: &Arc<Self>,
        full_key: &str,
        keep: Option<&str>,
        batch: bool,
    ) -> Result<usize, StoreError> {
        let items: Vec<VersionItem> = self
            .entries_of(full_key)
            .await?
            .into_iter()
            .filter(|e| !e.latest && Some(e.version.as_str()) != keep)
            .map(|e| (0, e.key, e.version))
            .collect();
        let n = items.len();
        for (_, r) in self.delete_items(items, batch).await {
            r?;
        }
        Ok(n)
    }

    /// Deletes the versions given, in DeleteObjects of 1,000 (four in
    /// flight) or one request each (16 in flight): an answer per item.
    async fn delete_items(
        self: &Arc<Self>,
        items: Vec<VersionItem>,
        batch: bool,
    ) -> Vec<(usize, Result<(), StoreError>)> {
        if batch {
            let chunks: Vec<Vec<VersionItem>> = items.chunks(1000).map(|c| c.to_vec()).collect();
            futures::stream::iter(chunks.into_iter().map(|chunk| {
                let this = self.clone();
                async move { this.delete_batch(&chunk).await }
            }))
            .buffer_unordered(4)
            .flat_map(futures::stream::iter)
            .collect()
            .await
        } else {
            futures::stream::iter(items.into_iter().map(|(i, k, v)| {
                let this = self.clone();
                async move { (i, this.delete_one(&k, &v).await) }
            }))
            .buffer_unordered(16)
            .collect()
            .await
        }
    }

    /// Keys under `prefix` whose latest entry is a delete marker but which
    /// keep older versions: content no listing shows (so lethe cannot link
    /// it), still stored. Answers (keys, versions); one pass over the
    /// version listing, a key at a time in memory.
    pub async fn hidden_versions(&self, prefix: &str) -> Result<(u64, u64), StoreError> {
        let (mut keys, mut versions) = (0u64, 0u64);
        // The key being read: (name, latest is a marker, versions so far).
        let mut current: Option<(String, bool, u64)> = None;
        let mut flush = |c: Option<(String, bool, u64)>| {
            if let Some((_, true, n)) = c
                && n > 0
            {
                keys += 1;
                versions += n;
            }
        };
        let mut after = None;
        loop {
            let (entries, next) = self.versions_page(prefix, after.as_ref()).await?;
            for e in entries {
                if current.as_ref().map(|c| &c.0) != Some(&e.key) {
                    flush(current.take());
                    current = Some((e.key, false, 0));
                }
                if let Some(c) = current.as_mut() {
                    c.1 |= e.latest && e.marker;
                    c.2 += u64::from(!e.marker);
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        flush(current.take());
        Ok((keys, versions))
    }

    /// DeleteObjects for up to 1,000 versions: one answer per item.
    async fn delete_batch(&self, items: &[VersionItem]) -> Vec<(usize, Result<(), StoreError>)> {
        let mut xml = String::from("<Delete><Quiet>false</Quiet>");
        for (_, key, version) in items {
            xml.push_str(&format!(
                "<Object><Key>{}</Key><VersionId>{}</VersionId></Object>",
                quick_xml::escape::escape(key.as_str()),
                quick_xml::escape::escape(version.as_str())
            ));
        }
        xml.push_str("</Delete>");
        let body = xml.into_bytes();
        use base64::Engine;
        use md5::Digest;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let url = format!("{}?delete", self.bucket_url);
        let answer = self
            .send(
                "delete versions",
                Method::POST,
                &url,
                &[
                    ("content-md5", md5),
                    ("content-type", "application/xml".into()),
                ],
                body,
            )
            .await;
        let whole = |e: &StoreError| {
            items
                .iter()
                .map(|(i, _, _)| (*i, Err(e.again("delete versions"))))
                .collect::<Vec<_>>()
        };
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => return whole(&e),
        };
        if status != 200 {
            return whole(&answer_error("delete versions", status, &body));
        }
        // Answers name (key, version): match them back to the items. An
        // error without a version id (some servers omit it) fails every
        // version of its key; a deletion without one answers nothing.
        let mut by_id: std::collections::HashMap<(&str, &str), Vec<usize>> =
            std::collections::HashMap::new();
        let mut by_key: std::collections::HashMap<&str, Vec<(usize, &str)>> =
            std::collections::HashMap::new();
        for (i, key, version) in items {
            by_id
                .entry((key.as_str(), version.as_str()))
                .or_default()
                .push(*i);
            by_key
                .entry(key.as_str())
                .or_default()
                .push((*i, version.as_str()));
        }
        let mut out = Vec::with_capacity(items.len());
        let mut answered: std::collections::HashSet<(String, String)> =
            std::collections::HashSet::new();
        for entry in ["Deleted", "Error"] {
            let recs = match records(&body, entry) {
                Ok(r) => r,
                Err(e) => {
                    return whole(&err("delete versions", StoreErrorKind::Transient, e));
                }
            };
            for rec in recs {
                let field = |n: &str| {
                    rec.iter()
                        .find(|(name, _)| name == n)
                        .map(|(_, t)| t.as_str())
                };
                let Some(key) = field("Key") else { continue };
                let targets: Vec<(usize, &str)> = match field("VersionId") {
                    Some(v) => by_id
                        .get(&(key, v))
                        .map(|idx| idx.iter().map(|i| (*i, v)).collect())
                        .unwrap_or_default(),
                    None if entry == "Error" => by_key.get(key).cloned().unwrap_or_default(),
                    None => Vec::new(),
                };
                for (i, v) in targets {
                    answered.insert((key.to_string(), v.to_string()));
                    let r = if entry == "Deleted" {
                        Ok(())
                    } else {
                        Err(version_error(field("Code").unwrap_or("no code")))
                    };
                    out.push((i, r));
                }
            }
        }
        for (i, k, v) in items {
            if !answered.contains(&(k.clone(), v.clone())) {
                out.push((
                    *i,
                    Err(err(
                        "delete versions",
                        StoreErrorKind::Transient,
                        "the store did not answer for a version".into(),
                    )),
                ));
            }
        }
        out
    }

    /// `DELETE ?versionId=` for one version (gateways without DeleteObjects).
    async fn delete_one(&self, full_key: &str, version: &str) -> Result<(), StoreError> {
        let url = format!(
            "{}/{}?versionId={}",
            self.bucket_url,
            utf8_percent_encode(full_key, PATH),
            utf8_percent_encode(version, QUERY)
        );
        let (status, body) = self
            .send("delete version", Method::DELETE, &url, &[], vec![])
            .await?;
        match status {
            200 | 204 => Ok(()),
            _ => {
                let code = leaves(&body)
                    .ok()
                    .and_then(|l| l.into_iter().find(|(_, n, _)| n == "Code"))
                    .map(|(_, _, c)| c)
                    .unwrap_or_else(|| format!("HTTP {status}"));
                Err(version_error(&code))
            }
        }
    }

    /// Deletes every version and delete marker of each key: `Deleted` when
    /// there was any, `AlreadyGone` when there was none. A key with one
    /// version left undeleted fails as a whole (the next run lists again).
    pub async fn delete_all_versions(
        self: &Arc<Self>,
        keys: &[(usize, String, Option<crate::store::Expected>)],
        batch: bool,
    ) -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
        // A key whose current version is not the one the index read is
        // `Changed` and keeps every version.
        let listed: Vec<(usize, Result<Vec<String>, StoreError>, bool)> =
            futures::stream::iter(keys.iter().cloned().map(|(i, k, expected)| {
                let this = self.clone();
                async move {
                    match this.versions_and_latest(&k).await {
                        Ok((ids, Some(now)))
                            if expected.as_ref().is_some_and(|e| !e.matches(&now)) =>
                        {
                            (i, Ok(ids), true)
                        }
                        Ok((ids, _)) => (i, Ok(ids), false),
                        Err(e) => (i, Err(e), false),
                    }
                }
            }))
            .buffered(crate::store::ASKS_IN_FLIGHT)
            .collect()
            .await;
        let mut out = Vec::with_capacity(keys.len());
        let mut items: Vec<VersionItem> = Vec::new();
        let key_of: std::collections::HashMap<usize, &String> =
            keys.iter().map(|(i, k, _)| (*i, k)).collect();
        let mut pending = std::collections::HashSet::new();
        for (i, r, changed) in listed {
            match r {
                _ if changed => out.push((i, Ok(DeleteOutcome::Changed))),
                Err(e) => out.push((i, Err(e))),
                Ok(v) if v.is_empty() => out.push((i, Ok(DeleteOutcome::AlreadyGone))),
                Ok(v) => {
                    pending.insert(i);
                    for version in v {
                        items.push((i, key_of[&i].clone(), version));
                    }
                }
            }
        }
        let answers = self.delete_items(items, batch).await;
        let mut failed: std::collections::HashMap<usize, StoreError> =
            std::collections::HashMap::new();
        for (i, r) in answers {
            if let Err(e) = r {
                failed.entry(i).or_insert(e);
            }
        }
        for i in pending {
            match failed.remove(&i) {
                Some(e) => out.push((i, Err(e))),
                None => out.push((i, Ok(DeleteOutcome::Deleted))),
            }
        }
        out
    }
}

/// A version that could not be deleted, by the provider's code.
fn version_error(code: &str) -> StoreError {
    let code: String = code.chars().take(60).collect();
    match code.as_str() {
        "AccessDenied" => err(
            "delete version",
            StoreErrorKind::Permanent,
            "blocked: AccessDenied (Object Lock retention or legal hold, MFA delete, or no s3:DeleteObjectVersion permission)".into(),
        ),
        "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => err(
            "delete version",
            StoreErrorKind::Transient,
            format!("{code} (retried in a later run)"),
        ),
        _ => err(
            "delete version",
            StoreErrorKind::Transient,
            format!("the store refused: {code}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_versions_say_why_without_the_key() {
        assert!(
            version_error("AccessDenied")
                .to_string()
                .contains("blocked")
        );
    }
}
