//! S3 calls object_store does not make, on one bucket: `S3Versions` and
//! its signed requests (SigV4 with object_store's own credential chain, sent
//! through `http.rs`). `versions.rs` lists and deletes every version and
//! delete marker of a key (ListObjectVersions, DeleteObjects with version
//! ids, or `DELETE ?versionId=` one by one where `technical.batch_deletes =
//! false`); `settings.rs` reads what the bucket keeps after a delete
//! (versioning, MFA delete, Object Lock); `parts.rs` uploads a large
//! rewrite in parts and completes it conditional on an etag.

mod parts;
mod settings;
mod versions;

pub use settings::Versioning;

use http::Method;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::HttpClient;

use super::http::{
    answer_error, err, exchange_with_headers, http_client, request, retrying_with,
    with_named_headers, worth_again,
};
use super::{StoreError, StoreErrorKind};

/// S3 calls on one bucket.
pub struct S3Versions {
    s3: AmazonS3,
    http: HttpClient,
    /// `https://s3.region.amazonaws.com/bucket`, `http://127.0.0.1:9000/bucket`,
    /// or the virtual-hosted form; no trailing slash.
    bucket_url: String,
    region: String,
    versioning: tokio::sync::OnceCell<Versioning>,
}

impl S3Versions {
    pub fn new(
        s3: AmazonS3,
        bucket: &str,
        endpoint: Option<&str>,
        region: &str,
        virtual_hosted: bool,
    ) -> Result<S3Versions, StoreError> {
        let bucket_url = match (endpoint, virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let allow_http = bucket_url.starts_with("http://");
        Ok(S3Versions {
            s3,
            http: http_client(allow_http)?,
            bucket_url,
            region: region.to_string(),
            versioning: tokio::sync::OnceCell::new(),
        })
    }

    /// The bucket's versioning as far as it has been read (for reports).
    pub fn seen(&self) -> Option<&Versioning> {
        self.versioning.get()
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), StoreError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        self.send_full(op, method, url, &headers, body)
            .await
            .map(|(status, body, _)| (status, body))
    }

    /// As `send`, with headers of any name and the answer's headers.
    async fn send_full(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>, http::HeaderMap), StoreError> {
        retrying_with(|| async {
            let (status, answer, h) = self
                .send_once(op, method.clone(), url, headers, body.clone())
                .await?;
            if worth_again(status) {
                return Err(answer_error(op, status, &answer));
            }
            Ok((status, answer, h))
        })
        .await
        .map(|(answer, _)| answer)
    }

    async fn send_once(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>, http::HeaderMap), StoreError> {
        let credential = self.s3.credentials().get_credential().await.map_err(|_| {
            err(
                op,
                StoreErrorKind::Permanent,
                "no S3 credentials (the AWS_* environment or the credential chain)".into(),
            )
        })?;
        let mut req = request(method, url, body)?;
        with_named_headers(&mut req, headers)?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| {
                err(
                    op,
                    StoreErrorKind::Transient,
                    format!("signing failed ({e})"),
                )
            })?;
        exchange_with_headers(&self.http, op, req).await
    }
}
