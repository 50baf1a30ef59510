//! The account's blob soft delete (Get Blob Service Properties), as `check`
//! and the apply report say it.

use http::Method;

use super::AzureBlobs;
use crate::store::StoreError;
use crate::store::http::{answer_error, leaf, settings};

/// The account's blob soft delete, as Get Blob Service Properties says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SoftDelete {
    Off,
    /// Deleted blobs and snapshots can be restored for this many days.
    Days(u32),
    Unknown(String),
}

impl AzureBlobs {
    /// The soft delete as far as it has been read (for reports).
    pub fn seen(&self) -> Option<&SoftDelete> {
        self.soft_delete.get()
    }

    /// The account's soft-delete retention for blobs, read once per process.
    pub async fn soft_delete(&self) -> Result<SoftDelete, StoreError> {
        self.soft_delete
            .get_or_try_init(|| self.read_soft_delete())
            .await
            .cloned()
    }

    async fn read_soft_delete(&self) -> Result<SoftDelete, StoreError> {
        let url = format!("{}/?restype=service&comp=properties", self.account_url);
        let (status, body) = self
            .send("service properties", Method::GET, &url, &[])
            .await?;
        // Only the blob retention policy: the answer has other `Enabled`s.
        let l: Vec<_> = settings("service properties", status, &body)?
            .into_iter()
            .filter(|(p, _, _)| p == "DeleteRetentionPolicy")
            .collect();
        match status {
            200 => Ok(match (leaf(&l, "Enabled").as_deref(), leaf(&l, "Days")) {
                (Some("true"), Some(d)) => SoftDelete::Days(d.parse().unwrap_or(0)),
                (Some("true"), None) => SoftDelete::Days(0),
                _ => SoftDelete::Off,
            }),
            401 | 403 | 404 | 405 | 501 => Ok(SoftDelete::Unknown(format!(
                "Get Blob Service Properties answered HTTP {status}"
            ))),
            _ => Err(answer_error("service properties", status, &body)),
        }
    }
}
