//! What an S3 bucket keeps after a delete, as `check` reports it:
//! GetBucketVersioning (with MFA delete) and GetObjectLockConfiguration.

use http::Method;

use super::S3Versions;
use crate::store::StoreError;
use crate::store::http::{answer_error, leaf, settings};

/// What the bucket keeps after a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// Versioning was never enabled: a delete removes the object.
    Off,
    /// `Enabled` or `Suspended`: older versions and delete markers may exist,
    /// and apply deletes each of them.
    On { status: String, mfa_delete: bool },
    /// The setting could not be read (the reason, without keys): apply
    /// deletes the current version, and the report says older ones may remain.
    Unknown(String),
}

impl S3Versions {
    /// GetBucketVersioning, read once per process.
    pub async fn versioning(&self) -> Result<Versioning, StoreError> {
        self.versioning
            .get_or_try_init(|| async {
                let url = format!("{}?versioning", self.bucket_url);
                let (status, body) = self
                    .send("versioning", Method::GET, &url, &[], vec![])
                    .await?;
                let l = settings("versioning", status, &body)?;
                match status {
                    200 => Ok(match leaf(&l, "Status") {
                        Some(s) if s == "Enabled" || s == "Suspended" => Versioning::On {
                            status: s,
                            mfa_delete: leaf(&l, "MfaDelete").as_deref() == Some("Enabled"),
                        },
                        _ => Versioning::Off,
                    }),
                    401 | 403 | 404 | 405 | 501 => Ok(Versioning::Unknown(format!(
                        "GetBucketVersioning answered HTTP {status}"
                    ))),
                    _ => Err(answer_error("versioning", status, &body)),
                }
            })
            .await
            .cloned()
    }

    /// GetObjectLockConfiguration, in words; `None` when the bucket has no
    /// Object Lock.
    pub async fn object_lock(&self) -> Result<Option<String>, StoreError> {
        let url = format!("{}?object-lock", self.bucket_url);
        let (status, body) = self
            .send("object lock", Method::GET, &url, &[], vec![])
            .await?;
        let l = settings("object lock", status, &body)?;
        match status {
            200 => {
                if leaf(&l, "ObjectLockEnabled").as_deref() != Some("Enabled") {
                    return Ok(None);
                }
                let default = match (leaf(&l, "Mode"), leaf(&l, "Days"), leaf(&l, "Years")) {
                    (Some(m), Some(d), _) => format!("default retention {m} for {d} days"),
                    (Some(m), _, Some(y)) => format!("default retention {m} for {y} years"),
                    _ => "no default retention".into(),
                };
                Ok(Some(format!(
                    "s3: Object Lock is enabled ({default}); a version under retention or legal hold cannot be deleted, and apply fails its item as blocked"
                )))
            }
            404 => Ok(None),
            401 | 403 | 405 | 501 => Ok(Some(format!(
                "s3: the Object Lock setting could not be read (HTTP {status}); a locked version would fail its item as blocked"
            ))),
            _ => Err(answer_error("object lock", status, &body)),
        }
    }
}
