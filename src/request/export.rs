//! The access export (Art. 15/20).

/// What an export wrote (placeholder until the writer lands).
#[derive(Debug, Default, serde::Serialize)]
pub struct ExportStats {
    pub files: u64,
    pub bytes: u64,
}
