//! A rewrite too large for one Put Blob, as blocks: Put Block for each part
//! of the spool (one part in memory at a time; uncommitted blocks change
//! nothing of the blob), then Put Block List with `If-Match` on the etag the
//! rewrite is conditional on, the blob's content type and user metadata.
//! Azure (and Azurite) check the condition on the commit itself: a reader
//! sees the old content or the new.

use base64::Engine;
use http::Method;

use super::AzureBlobs;
use crate::store::http::{answer_error, err, error_code, header};
use crate::store::{StoreError, StoreErrorKind, Written, next_part};

/// The id of the `n`th block: the same length for every block of a blob,
/// as Azure requires.
fn block_id(n: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("lethe-rewrite-{n:06}"))
}

impl AzureBlobs {
    /// Stages the spool `content` as blocks of `block_size` bytes of
    /// `full_key`; answers their ids in order. Nothing of the blob changes
    /// until `commit_blocks`.
    pub(crate) async fn put_blocks(
        &self,
        full_key: &str,
        content: &std::path::Path,
        block_size: u64,
    ) -> Result<Vec<String>, StoreError> {
        const OP: &str = "put block";
        let mut file =
            std::fs::File::open(content).map_err(|source| StoreError::io("open spool", source))?;
        let mut ids = Vec::new();
        for n in 0u32.. {
            let (f, block) = next_part(file, block_size).await?;
            file = f;
            // An empty spool commits an empty list.
            if block.is_empty() {
                break;
            }
            if n >= 50_000 {
                return Err(err(
                    OP,
                    StoreErrorKind::Permanent,
                    "more than 50,000 blocks".into(),
                ));
            }
            let last = (block.len() as u64) < block_size;
            let id = block_id(n);
            let url = format!(
                "{}?comp=block&blockid={}",
                self.blob_url(full_key),
                percent_encoding::utf8_percent_encode(&id, crate::store::http::QUERY)
            );
            let headers = [("content-length".to_string(), block.len().to_string())];
            let (status, body, _) = self
                .send_full(OP, Method::PUT, &url, &headers, block)
                .await?;
            if status != 201 {
                return Err(answer_error(OP, status, &body));
            }
            ids.push(id);
            if last {
                break;
            }
        }
        Ok(ids)
    }

    /// Commits the blocks `ids` as the blob's content, only if the blob is
    /// still the one `if_match` names (`ConditionFailed` otherwise: another
    /// blob, or none). `headers`: the content type and user metadata the
    /// blob keeps. A lease refuses the commit (an error, not a failed
    /// condition).
    pub(crate) async fn commit_blocks(
        &self,
        full_key: &str,
        ids: &[String],
        if_match: &str,
        headers: &[(String, String)],
    ) -> Result<Written, StoreError> {
        const OP: &str = "put block list";
        let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for id in ids {
            xml.push_str(&format!("<Latest>{id}</Latest>"));
        }
        xml.push_str("</BlockList>");
        let body = xml.into_bytes();
        let mut all = vec![
            ("if-match".to_string(), if_match.to_string()),
            ("content-length".to_string(), body.len().to_string()),
        ];
        all.extend_from_slice(headers);
        let url = format!("{}?comp=blocklist", self.blob_url(full_key));
        let (status, answer, h) = self.send_full(OP, Method::PUT, &url, &all, body).await?;
        match (status, error_code(&answer).as_deref()) {
            (201, _) => Ok(Written::Put {
                e_tag: header(&h, "etag"),
                version: None,
            }),
            (412, None | Some("ConditionNotMet")) | (404, _) => Ok(Written::ConditionFailed),
            _ => Err(answer_error(OP, status, &answer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length() {
        assert_eq!(block_id(0).len(), block_id(49_999).len());
        assert_ne!(block_id(1), block_id(2));
    }
}
