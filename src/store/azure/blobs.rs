//! Deleting an Azure blob with its snapshots (`x-ms-delete-snapshots:
//! include`), only the blob the index read (`If-Match`, a HEAD settling a
//! failed condition), one request per blob; what each Delete Blob answer
//! means; deleting only the snapshots of a blob (the old content a rewrite
//! leaves in them); and snapshots and leases for tests and tooling.

use futures::StreamExt;
use http::Method;
use percent_encoding::utf8_percent_encode;

use super::{AzureBlobs, sign};
use crate::store::http::{
    QUERY, answer_error, err, error_code, request, retrying_with, send, status_error, worth_again,
};
use crate::store::{DeleteOutcome, StoreError, StoreErrorKind};

/// The headers of a Delete Blob: its snapshots go with it; with an etag,
/// only that blob.
pub(super) fn delete_headers(if_match: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![("x-ms-delete-snapshots", "include".to_string())];
    if let Some(etag) = if_match {
        headers.push(("if-match", format!("\"{}\"", etag.trim_matches('"'))));
    }
    headers
}

/// One blob's delete under way, answering with the caller's index (boxed
/// and `Send`, spelled out: async-trait callers need it).
pub(super) type Answering<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (usize, Result<DeleteOutcome, StoreError>)> + Send + 'a>,
>;

/// What a Delete Blob answer says of the blob.
#[derive(Debug)]
pub(super) enum DeleteAnswer {
    Done(DeleteOutcome),
    /// `If-Match` failed: another blob is there, or none at all; a HEAD
    /// tells which.
    Ask,
    Failed(StoreError),
}

/// Reads a Delete Blob answer (a plain request's or a batch part's).
/// `retried`: the request was sent again after a fault, so an earlier try
/// may have deleted the blob. `conditional`: it carried `If-Match`.
pub(super) fn delete_answer(
    status: u16,
    code: Option<&str>,
    retried: bool,
    conditional: bool,
) -> DeleteAnswer {
    match status {
        200 | 202 => DeleteAnswer::Done(DeleteOutcome::Deleted),
        // Gone after a failed attempt: that attempt may have deleted it,
        // and the journal shows it existed (as apply counts it too).
        404 if retried => DeleteAnswer::Done(DeleteOutcome::Deleted),
        404 => DeleteAnswer::Done(DeleteOutcome::AlreadyGone),
        // A lease (`LeaseIdMissing`) is a 412 too, and a failure: the blob
        // is there, unchanged, and not deleted. Without `If-Match` no 412 is
        // a failed condition.
        412 if conditional && code.is_none_or(|c| c == "ConditionNotMet") => DeleteAnswer::Ask,
        _ => DeleteAnswer::Failed(status_error("delete", status, code)),
    }
}

impl AzureBlobs {
    /// Deletes a blob and all its snapshots in one request; a missing blob
    /// is `AlreadyGone`. With an etag, only that blob (`If-Match`): another
    /// one is `Changed`.
    pub async fn delete_with_snapshots(
        &self,
        full_key: &str,
        if_match: Option<&str>,
    ) -> Result<DeleteOutcome, StoreError> {
        let url = self.blob_url(full_key);
        let ((status, body), retried) = self
            .send_retried("delete", Method::DELETE, &url, &delete_headers(if_match))
            .await?;
        let code = error_code(&body);
        let answer = delete_answer(status, code.as_deref(), retried, if_match.is_some());
        self.settle(&url, answer, retried, if_match).await
    }

    /// Turns an answer into the blob's outcome, asking (HEAD) where the
    /// condition failed.
    /// A blob is `Changed` only when the HEAD shows another etag than the
    /// one the delete expected: the same etag after a failed condition is a
    /// failure, never a reason to keep the blob as "rewritten".
    pub(super) async fn settle(
        &self,
        url: &str,
        answer: DeleteAnswer,
        retried: bool,
        expected: Option<&str>,
    ) -> Result<DeleteOutcome, StoreError> {
        match answer {
            DeleteAnswer::Done(outcome) => Ok(outcome),
            DeleteAnswer::Failed(e) => Err(e),
            DeleteAnswer::Ask => {
                let (status, etag) = self.head_etag(url).await?;
                let same = |now: &str| {
                    expected.is_some_and(|e| e.trim_matches('"') == now.trim_matches('"'))
                };
                match (status, etag) {
                    (404, _) if retried => Ok(DeleteOutcome::Deleted),
                    (404, _) => Ok(DeleteOutcome::AlreadyGone),
                    (200, Some(now)) if !same(&now) => Ok(DeleteOutcome::Changed),
                    (200, _) => Err(err(
                        "delete",
                        StoreErrorKind::Transient,
                        "HTTP 412: the condition failed, yet the blob is the one the index read"
                            .into(),
                    )),
                    (status, _) => Err(status_error("head", status, None)),
                }
            }
        }
    }

    /// HEAD of a blob: the status and its etag.
    async fn head_etag(&self, url: &str) -> Result<(u16, Option<String>), StoreError> {
        const OP: &str = "head";
        let (answer, _) = retrying_with(|| async {
            let credential = self.credential(OP).await?;
            let mut req = request(Method::HEAD, url, vec![])?;
            sign(&credential, &self.account, OP, &mut req)?;
            let response = send(&self.http, OP, req).await?;
            let status = response.status().as_u16();
            if worth_again(status) {
                return Err(status_error(OP, status, None));
            }
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((status, etag))
        })
        .await?;
        Ok(answer)
    }

    /// One Delete Blob request per blob, 32 in flight; answers by the
    /// items' first field.
    pub async fn delete_each(
        &self,
        items: &[(usize, String, Option<String>)],
    ) -> Vec<(usize, Result<DeleteOutcome, StoreError>)> {
        let mut deletes: Vec<Answering<'_>> = Vec::with_capacity(items.len());
        for (i, key, etag) in items {
            deletes.push(Box::pin(async move {
                (*i, self.delete_with_snapshots(key, etag.as_deref()).await)
            }));
        }
        futures::stream::iter(deletes)
            .buffer_unordered(32)
            .collect()
            .await
    }

    /// Deletes every snapshot of a blob and keeps the blob itself
    /// (`x-ms-delete-snapshots: only`): after a rewrite, the snapshots hold
    /// the old content. A blob that is gone has none left.
    pub async fn delete_snapshots(&self, full_key: &str) -> Result<(), StoreError> {
        let url = self.blob_url(full_key);
        let headers = [("x-ms-delete-snapshots", "only".to_string())];
        let (status, body) = self
            .send("delete snapshots", Method::DELETE, &url, &headers)
            .await?;
        match status {
            200 | 202 | 404 => Ok(()),
            _ => Err(answer_error("delete snapshots", status, &body)),
        }
    }

    /// Takes a snapshot of a blob (tests and tooling; lethe itself never
    /// writes). Answers the snapshot's timestamp.
    pub async fn snapshot(&self, full_key: &str) -> Result<String, StoreError> {
        let credential = self.credential("snapshot").await?;
        let url = format!("{}?comp=snapshot", self.blob_url(full_key));
        let mut req = request(Method::PUT, &url, vec![])?;
        sign(&credential, &self.account, "snapshot", &mut req)?;
        let response = send(&self.http, "snapshot", req).await?;
        let status = response.status().as_u16();
        let stamp = response
            .headers()
            .get("x-ms-snapshot")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (status, stamp) {
            (201, Some(s)) => Ok(s),
            _ => Err(err(
                "snapshot",
                StoreErrorKind::Transient,
                format!("HTTP {status}"),
            )),
        }
    }

    /// Acquires an infinite lease on a blob (`acquire`) or breaks it at
    /// once (`break`): tests and tooling; a leased blob refuses deletes.
    pub async fn lease(&self, full_key: &str, action: &'static str) -> Result<(), StoreError> {
        let url = format!("{}?comp=lease", self.blob_url(full_key));
        let mut headers = vec![("x-ms-lease-action", action.to_string())];
        match action {
            "acquire" => headers.push(("x-ms-lease-duration", "-1".into())),
            _ => headers.push(("x-ms-lease-break-period", "0".into())),
        }
        let (status, body) = self.send("lease", Method::PUT, &url, &headers).await?;
        match status {
            200..=202 => Ok(()),
            _ => Err(answer_error("lease", status, &body)),
        }
    }

    /// Whether a snapshot of a blob is still there (tests and tooling).
    pub async fn snapshot_exists(&self, full_key: &str, stamp: &str) -> Result<bool, StoreError> {
        let url = format!(
            "{}?snapshot={}",
            self.blob_url(full_key),
            utf8_percent_encode(stamp, QUERY)
        );
        let (status, body) = self.send("head", Method::HEAD, &url, &[]).await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(answer_error("head", status, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each Delete Blob answer means: only a failed `If-Match` asks
    /// again; a lease or any other 412 fails the blob; after a retry, a
    /// missing blob may be ours.
    #[test]
    fn delete_answers_read_as_outcomes() {
        let done = |status, code: Option<&str>, retried| match delete_answer(
            status, code, retried, true,
        ) {
            DeleteAnswer::Done(o) => Some(o),
            _ => None,
        };
        assert_eq!(done(202, None, false), Some(DeleteOutcome::Deleted));
        assert_eq!(done(200, None, true), Some(DeleteOutcome::Deleted));
        assert_eq!(
            done(404, Some("BlobNotFound"), false),
            Some(DeleteOutcome::AlreadyGone)
        );
        assert_eq!(
            done(404, Some("BlobNotFound"), true),
            Some(DeleteOutcome::Deleted)
        );
        for code in [Some("ConditionNotMet"), None] {
            assert!(matches!(
                delete_answer(412, code, false, true),
                DeleteAnswer::Ask
            ));
            // Without `If-Match`, a 412 is no failed condition.
            assert!(matches!(
                delete_answer(412, code, false, false),
                DeleteAnswer::Failed(_)
            ));
        }
        for (status, code) in [
            (412, "LeaseIdMissing"),
            (409, "SnapshotsPresent"),
            (403, "AuthorizationPermissionMismatch"),
            (503, "ServerBusy"),
        ] {
            match delete_answer(status, Some(code), false, true) {
                DeleteAnswer::Failed(e) => {
                    let text = e.to_string();
                    assert!(
                        text.contains(code) && text.contains(&status.to_string()),
                        "{text}"
                    );
                }
                other => panic!("{status} {code}: {other:?}"),
            }
        }
        // Throttling is worth a retry, a lease is not.
        let kind = |status, code| match delete_answer(status, Some(code), false, true) {
            DeleteAnswer::Failed(e) => e.kind(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(503, "ServerBusy"),
            crate::store::StoreErrorKind::Transient
        );
        assert_eq!(
            kind(412, "LeaseIdMissing"),
            crate::store::StoreErrorKind::Permanent
        );
    }
}
