//! A rewrite too large for one PUT, in parts: CreateMultipartUpload (with
//! the object's content type and user metadata), UploadPart for each part
//! of the spool (one part in memory at a time), and CompleteMultipartUpload
//! with `If-Match` on the etag the rewrite is conditional on, or
//! AbortMultipartUpload when it does not go through. AWS S3 and s3s-fs
//! honour `If-Match` on the completion; moto ignores it, which is why the
//! caller asks (HEAD) once more right before completing. Until the
//! completion nothing of the object changes: a reader sees the old content
//! or the new.

use http::Method;
use percent_encoding::utf8_percent_encode;

use super::S3Versions;
use crate::store::http::{PATH, QUERY, answer_error, err, header, leaves};
use crate::store::{StoreError, StoreErrorKind, Written, next_part};

/// A multipart upload under way: its key, id and the parts sent.
pub(crate) struct Upload {
    full_key: String,
    id: String,
    /// (part number, etag), in order.
    parts: Vec<(u32, String)>,
}

impl S3Versions {
    fn upload_url(&self, full_key: &str, query: &str) -> String {
        format!(
            "{}/{}?{query}",
            self.bucket_url,
            utf8_percent_encode(full_key, PATH)
        )
    }

    /// Uploads the spool `content` as parts of `part_size` bytes of a new
    /// multipart upload of `full_key` (`headers`: the content type and
    /// user metadata the object keeps). The object is untouched until
    /// `complete_upload`; a failure aborts the upload.
    pub(crate) async fn upload_parts(
        &self,
        full_key: &str,
        content: &std::path::Path,
        part_size: u64,
        headers: &[(String, String)],
    ) -> Result<Upload, StoreError> {
        const OP: &str = "start upload";
        let url = self.upload_url(full_key, "uploads");
        let (status, body, _) = self
            .send_full(OP, Method::POST, &url, headers, Vec::new())
            .await?;
        if status != 200 {
            return Err(answer_error(OP, status, &body));
        }
        let id = leaves(&body)
            .ok()
            .and_then(|l| l.into_iter().find(|(_, n, _)| n == "UploadId"))
            .map(|(_, _, id)| id)
            .ok_or_else(|| {
                err(
                    OP,
                    StoreErrorKind::Transient,
                    "the store answered no upload id".into(),
                )
            })?;
        let mut upload = Upload {
            full_key: full_key.to_string(),
            id,
            parts: Vec::new(),
        };
        match self.send_parts(&mut upload, content, part_size).await {
            Ok(()) => Ok(upload),
            Err(e) => {
                self.abort_upload(&upload).await;
                Err(e)
            }
        }
    }

    async fn send_parts(
        &self,
        upload: &mut Upload,
        content: &std::path::Path,
        part_size: u64,
    ) -> Result<(), StoreError> {
        const OP: &str = "upload part";
        let mut file =
            std::fs::File::open(content).map_err(|source| StoreError::io("open spool", source))?;
        for number in 1u32.. {
            let (f, part) = next_part(file, part_size).await?;
            file = f;
            // An empty spool still needs one (empty) part.
            if part.is_empty() && number > 1 {
                return Ok(());
            }
            let last = (part.len() as u64) < part_size;
            let url = self.upload_url(
                &upload.full_key,
                &format!(
                    "partNumber={number}&uploadId={}",
                    utf8_percent_encode(&upload.id, QUERY)
                ),
            );
            let (status, body, headers) = self.send_full(OP, Method::PUT, &url, &[], part).await?;
            if status != 200 {
                return Err(answer_error(OP, status, &body));
            }
            let etag = header(&headers, "etag").ok_or_else(|| {
                err(
                    OP,
                    StoreErrorKind::Transient,
                    "the store answered no etag for a part".into(),
                )
            })?;
            upload.parts.push((number, etag));
            if last {
                return Ok(());
            }
            if number >= 10_000 {
                return Err(err(
                    OP,
                    StoreErrorKind::Permanent,
                    "more than 10,000 parts".into(),
                ));
            }
        }
        Ok(())
    }

    /// Completes an upload only if the object is still the one `if_match`
    /// names (`ConditionFailed` otherwise, and the upload is aborted).
    pub(crate) async fn complete_upload(
        &self,
        upload: &Upload,
        if_match: &str,
    ) -> Result<Written, StoreError> {
        const OP: &str = "complete upload";
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in &upload.parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(etag.as_str())
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let url = self.upload_url(
            &upload.full_key,
            &format!("uploadId={}", utf8_percent_encode(&upload.id, QUERY)),
        );
        let headers = [
            ("if-match".to_string(), if_match.to_string()),
            ("content-type".to_string(), "application/xml".to_string()),
        ];
        let answer = self
            .send_full(OP, Method::POST, &url, &headers, xml.into_bytes())
            .await;
        let written = match answer {
            Err(e) => Err(e),
            Ok((status, body, headers)) => completion(status, &body, &headers),
        };
        if !matches!(written, Ok(Written::Put { .. })) {
            self.abort_upload(upload).await;
        }
        written
    }

    /// Aborts an upload (its parts are dropped); best effort: an upload
    /// left behind holds only the new content, and a bucket's lifecycle
    /// rule for incomplete uploads removes it.
    pub(crate) async fn abort_upload(&self, upload: &Upload) {
        let url = self.upload_url(
            &upload.full_key,
            &format!("uploadId={}", utf8_percent_encode(&upload.id, QUERY)),
        );
        let _ = self
            .send_full("abort upload", Method::DELETE, &url, &[], Vec::new())
            .await;
    }
}

/// What a CompleteMultipartUpload answer says: S3 may answer 200 with an
/// error in the body; a failed `If-Match` is 412, or 404 `NoSuchKey` when
/// the object is gone.
fn completion(status: u16, body: &[u8], headers: &http::HeaderMap) -> Result<Written, StoreError> {
    const OP: &str = "complete upload";
    let fields = leaves(body).unwrap_or_default();
    let code = fields
        .iter()
        .find(|(p, n, _)| p == "Error" && n == "Code")
        .map(|(_, _, c)| c.as_str());
    match (status, code) {
        (200, None) => Ok(Written::Put {
            e_tag: fields
                .iter()
                .find(|(_, n, _)| n == "ETag")
                .map(|(_, _, e)| e.clone())
                .or_else(|| header(headers, "etag")),
            version: header(headers, "x-amz-version-id"),
        }),
        (200 | 412, Some("PreconditionFailed")) | (412, None) => Ok(Written::ConditionFailed),
        (404, Some("NoSuchKey")) => Ok(Written::ConditionFailed),
        (200, Some(c)) => Err(crate::store::http::status_error(OP, 500, Some(c))),
        _ => Err(answer_error(OP, status, body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completion is read by status and code: an error inside a 200 is
    /// an error, a failed condition (412, or NoSuchKey for a gone object)
    /// is no error but `ConditionFailed`.
    #[test]
    fn completions_read_as_written_or_not() {
        let none = http::HeaderMap::new();
        let ok = b"<CompleteMultipartUploadResult><ETag>\"abc-2\"</ETag></CompleteMultipartUploadResult>";
        assert!(matches!(
            completion(200, ok, &none),
            Ok(Written::Put { e_tag: Some(e), .. }) if e == "\"abc-2\""
        ));
        let failed = b"<Error><Code>PreconditionFailed</Code></Error>";
        assert!(matches!(
            completion(412, failed, &none),
            Ok(Written::ConditionFailed)
        ));
        assert!(matches!(
            completion(200, failed, &none),
            Ok(Written::ConditionFailed)
        ));
        let gone = b"<Error><Code>NoSuchKey</Code></Error>";
        assert!(matches!(
            completion(404, gone, &none),
            Ok(Written::ConditionFailed)
        ));
        let inside = b"<Error><Code>InternalError</Code><Message>a/b.csv</Message></Error>";
        let e = completion(200, inside, &none).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Transient);
        assert!(!e.to_string().contains("a/b.csv"), "{e}");
        let upload = b"<Error><Code>NoSuchUpload</Code></Error>";
        assert!(completion(404, upload, &none).is_err());
    }

    /// s3s-fs (CI's S3 server) checks `If-Match` on the completion: an
    /// upload whose object was written since is refused and leaves that
    /// write; the one naming the object's etag goes through. (moto ignores
    /// the condition there, which is why a rewrite asks once more before
    /// completing.) Skipped without LETHE_TEST_S3_ENDPOINT, a failure under
    /// CI=true.
    #[tokio::test]
    async fn s3s_fs_refuses_a_completion_whose_if_match_fails() {
        let Ok(endpoint) = std::env::var("LETHE_TEST_S3_ENDPOINT") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "LETHE_TEST_S3_ENDPOINT must be set under CI=true"
            );
            eprintln!("LETHE_TEST_S3_ENDPOINT not set: S3 is not tested here");
            return;
        };
        let location = format!("lethe-test/parts-{}", std::process::id());
        let store = crate::store::cloud::CloudStore::s3_at(
            &location,
            &endpoint,
            &std::env::var("LETHE_TEST_S3_KEY").unwrap_or_default(),
            &std::env::var("LETHE_TEST_S3_SECRET").unwrap_or_default(),
        )
        .unwrap();
        let api = store.s3_versions().unwrap();
        let full = store.full_key("a.csv").unwrap();
        store.put("a.csv", b"old".to_vec()).await.unwrap();
        let old_etag = crate::store::TechnicalStore::head(&store, "a.csv")
            .await
            .unwrap()
            .and_then(|m| m.etag)
            .unwrap();
        let spool = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(spool.path(), b"new").unwrap();
        let upload = api
            .upload_parts(&full, spool.path(), 5 << 20, &[])
            .await
            .unwrap();
        store.put("a.csv", b"theirs".to_vec()).await.unwrap();
        let refused = api
            .complete_upload(&upload, &format!("\"{old_etag}\""))
            .await
            .unwrap();
        assert!(matches!(refused, Written::ConditionFailed), "{refused:?}");
        let mut now = Vec::new();
        std::io::Read::read_to_end(
            &mut crate::store::TechnicalStore::read(&store, "a.csv")
                .await
                .unwrap(),
            &mut now,
        )
        .unwrap();
        assert_eq!(now, b"theirs");
        let theirs = crate::store::TechnicalStore::head(&store, "a.csv")
            .await
            .unwrap()
            .and_then(|m| m.etag)
            .unwrap();
        let upload = api
            .upload_parts(&full, spool.path(), 5 << 20, &[])
            .await
            .unwrap();
        let done = api
            .complete_upload(&upload, &format!("\"{theirs}\""))
            .await
            .unwrap();
        assert!(matches!(done, Written::Put { .. }), "{done:?}");
        crate::store::TechnicalStore::delete(&store, "a.csv")
            .await
            .unwrap();
    }
}
