//! Azure Blob calls object_store does not make, on one container:
//! `AzureBlobs` and its signed requests (Shared Key, bearer token or SAS
//! from object_store's own credential chain, sent through `http.rs`).
//! `blobs.rs` deletes a blob with its snapshots and `If-Match`, and takes
//! snapshots and leases (tests and tooling); `batch.rs` deletes 256 at a
//! time in a Blob Batch of our own; `settings.rs` reads the account's soft
//! delete; `blocks.rs` writes a large rewrite as blocks and commits them
//! conditional on an etag.

pub mod batch;
mod blobs;
mod blocks;
mod settings;

pub use settings::SoftDelete;

use std::sync::Arc;

use http::Method;
use object_store::azure::{AzureAuthorizer, MicrosoftAzure};
use object_store::client::{HttpClient, HttpRequest};
use percent_encoding::utf8_percent_encode;

use super::http::{
    PATH, answer_error, err, exchange, exchange_with_headers, http_client, request, retrying,
    retrying_with, with_headers, with_named_headers, worth_again,
};
use super::{StoreError, StoreErrorKind};

/// Signs an Azure request (Shared Key, bearer token or SAS: whatever the
/// credential chain gave).
pub(super) fn sign(
    credential: &object_store::azure::AzureCredential,
    account: &str,
    op: &'static str,
    req: &mut HttpRequest,
) -> Result<(), StoreError> {
    AzureAuthorizer::new(credential, account)
        .try_authorize(req)
        .map_err(|e| {
            err(
                op,
                StoreErrorKind::Transient,
                format!("signing failed ({e})"),
            )
        })
}

/// Azure Blob calls on one container.
pub struct AzureBlobs {
    az: MicrosoftAzure,
    http: HttpClient,
    account: String,
    /// `https://account.blob.core.windows.net` or the emulator's
    /// `http://127.0.0.1:10000/devstoreaccount1`; no trailing slash.
    account_url: String,
    container: String,
    soft_delete: tokio::sync::OnceCell<SoftDelete>,
    /// Set once the account refused a Blob Batch as a whole: later deletes
    /// go one request per blob.
    batch_refused: std::sync::atomic::AtomicBool,
}

impl AzureBlobs {
    pub fn new(
        az: MicrosoftAzure,
        account: &str,
        account_url: &str,
        container: &str,
    ) -> Result<AzureBlobs, StoreError> {
        let account_url = account_url.trim_end_matches('/').to_string();
        let allow_http = account_url.starts_with("http://");
        Ok(AzureBlobs {
            az,
            http: http_client(allow_http)?,
            account: account.to_string(),
            account_url,
            container: container.to_string(),
            soft_delete: tokio::sync::OnceCell::new(),
            batch_refused: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn credential(
        &self,
        op: &'static str,
    ) -> Result<Arc<object_store::azure::AzureCredential>, StoreError> {
        self.az.credentials().get_credential().await.map_err(|_| {
            err(
                op,
                StoreErrorKind::Permanent,
                "no Azure credentials (the AZURE_STORAGE_* environment or the credential chain)"
                    .into(),
            )
        })
    }

    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<(u16, Vec<u8>), StoreError> {
        self.send_retried(op, method, url, headers)
            .await
            .map(|(answer, _)| answer)
    }

    /// As `send`, and whether a retry was needed.
    async fn send_retried(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<((u16, Vec<u8>), bool), StoreError> {
        retrying(op, || self.send_once(op, method.clone(), url, headers)).await
    }

    async fn send_once(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<(u16, Vec<u8>), StoreError> {
        let credential = self.credential(op).await?;
        let mut req = request(method, url, vec![])?;
        with_headers(&mut req, headers)?;
        sign(&credential, &self.account, op, &mut req)?;
        exchange(&self.http, op, req).await
    }

    /// As `send`, with a body, headers of any name, and the answer's
    /// headers.
    async fn send_full(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>, http::HeaderMap), StoreError> {
        retrying_with(|| async {
            let credential = self.credential(op).await?;
            let mut req = request(method.clone(), url, body.clone())?;
            with_named_headers(&mut req, headers)?;
            sign(&credential, &self.account, op, &mut req)?;
            let (status, answer, h) = exchange_with_headers(&self.http, op, req).await?;
            if worth_again(status) {
                return Err(answer_error(op, status, &answer));
            }
            Ok((status, answer, h))
        })
        .await
        .map(|(answer, _)| answer)
    }

    fn blob_url(&self, full_key: &str) -> String {
        format!(
            "{}/{}/{}",
            self.account_url,
            self.container,
            utf8_percent_encode(full_key, PATH)
        )
    }
}
