//! The configuration file exactly as written: serde structs with no
//! behaviour. `config::load` turns them into the typed `Config`.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub crm: Option<RawCrm>,
    pub technical: Option<RawTechnical>,
    pub safety: Option<RawSafety>,
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
    pub state: Option<RawState>,
    pub audit: Option<RawAudit>,
    pub apply: Option<RawApply>,
    pub schedule: Option<RawSchedule>,
    pub serve: Option<RawServe>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSchedule {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServe {
    pub listen: Option<String>,
    pub body_limit: Option<usize>,
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub token: Vec<RawToken>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawToken {
    pub name: Option<String>,
    pub sha256: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawApply {
    pub max_attempts: Option<usize>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub batch_cases: Option<usize>,
    pub batch_objects: Option<usize>,
    pub parallel_deletes: Option<usize>,
    pub worker_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCrm {
    pub url: Option<String>,
    /// PostgreSQL: run VACUUM on tables with dead rows after apply.
    pub vacuum: Option<bool>,
    /// Dataverse: Web API requests in flight at most (1..=51).
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub entities: IndexMap<String, RawEntity>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEntity {
    pub table: Option<String>,
    pub key: Option<String>,
    pub clock: Option<OneOrMany>,
    #[serde(default)]
    pub parent: IndexMap<String, String>,
    pub subject: Option<OneOrMany>,
    pub identifiers: Option<OneOrMany>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTechnical {
    pub url: Option<String>,
    #[serde(default)]
    pub link: Vec<RawLink>,
    pub orphans: Option<RawOrphans>,
    /// Whole-document JSON evaluation skips objects larger than this.
    pub max_content_bytes: Option<u64>,
    /// A content rule stops at a line (or XML text) longer than this.
    pub max_line_bytes: Option<u64>,
    /// Batched deletes (default), or single deletes.
    pub batch_deletes: Option<bool>,
    /// Redact shared objects (default), or keep them whole.
    pub redact: Option<bool>,
    /// `url = "crm://"`: the payload table in the CRM's database.
    pub table: Option<RawTable>,
}

/// `[technical.table]`: a table of the CRM that holds payloads, one per row.
#[derive(Debug, Default, Deserialize)]
pub struct RawTable {
    pub table: Option<String>,
    pub key: Option<String>,
    pub body: Option<String>,
    pub encoding: Option<String>,
    pub name: Option<String>,
    pub modified: Option<String>,
    pub version: Option<String>,
    /// The decoded body's size in bytes, kept by the CRM (Dataverse:
    /// `filesize`).
    pub size: Option<String>,
    /// entity type → foreign-key column
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    pub polymorphic: Option<RawPolymorphic>,
}

/// `[technical.table.polymorphic]`: an id column and a type-code column.
#[derive(Debug, Default, Deserialize)]
pub struct RawPolymorphic {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub type_column: Option<String>,
    /// type code → entity type
    #[serde(default)]
    pub types: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLink {
    pub path: Option<String>,
    pub glob: Option<String>,
    pub json: Option<String>,
    pub xml: Option<String>,
    pub csv: Option<String>,
    pub delimiter: Option<String>,
    /// JSON and XML rules: the prefix of the path that ends at the repeated
    /// element a redaction removes.
    pub record: Option<String>,
    pub metadata: Option<String>,
    pub crm: Option<String>,
    pub entity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOrphans {
    pub retain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSafety {
    pub max_delete_fraction: Option<f64>,
    pub max_dangling_fraction: Option<f64>,
    pub max_drop_fraction: Option<f64>,
    pub max_keep_drop_fraction: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPolicy {
    pub name: Option<String>,
    pub root: Option<String>,
    pub retain: Option<String>,
    #[serde(default)]
    pub keep_if: Vec<RawKeep>,
    pub basis: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawKeep {
    Type(String),
    Where {
        entity: String,
        #[serde(rename = "where")]
        condition: Option<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
pub struct RawState {
    pub url: Option<String>,
    pub plan_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAudit {
    pub key: Option<String>,
}
