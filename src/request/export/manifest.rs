//! manifest.json: the request, what is included, the counts, and what was
//! not included and why. Nothing in it that the subject's own data does
//! not hold: keys and entity refs are theirs, left-out objects are named
//! by pseudonym.

use serde::Serialize;

use super::names::Layout;
use super::{ExportInput, FilePart};

/// manifest.json.
#[derive(Debug, Serialize)]
pub(super) struct Manifest<'a> {
    format: &'static str,
    request: ManifestRequest<'a>,
    pub(super) counts: Counts,
    pub(super) entities: Vec<ManifestEntities<'a>>,
    pub(super) files: Vec<ManifestFile<'a>>,
    pub(super) not_included: Vec<NotIncluded<'a>>,
}

#[derive(Debug, Serialize)]
struct ManifestRequest<'a> {
    id: &'a str,
    reference: &'a str,
    received: &'a str,
    made_at: &'a str,
    subject_kinds: &'a [String],
}

#[derive(Debug, Serialize)]
pub(super) struct Counts {
    pub(super) entities: u64,
    pub(super) files: u64,
    pub(super) records: u64,
    pub(super) not_included: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct ManifestEntities<'a> {
    #[serde(rename = "type")]
    pub(super) entity_type: &'a str,
    pub(super) entry: String,
    pub(super) count: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct ManifestFile<'a> {
    pub(super) key: &'a str,
    pub(super) entry: String,
    /// `whole` or `records`.
    pub(super) part: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) records: Option<u64>,
    pub(super) bytes: u64,
    pub(super) entities: &'a [String],
}

#[derive(Debug, Serialize)]
pub(super) struct NotIncluded<'a> {
    pub(super) object: &'a str,
    pub(super) why: &'a str,
}

pub(super) fn manifest<'a>(input: &'a ExportInput, plan: &Layout, written: &[u64]) -> Manifest<'a> {
    let r = &input.request;
    let entities: Vec<ManifestEntities<'a>> = input
        .entities
        .iter()
        .zip(&plan.entity_entries)
        .map(|((t, rows), entry)| ManifestEntities {
            entity_type: t,
            entry: entry.clone(),
            count: rows.len() as u64,
        })
        .collect();
    let files: Vec<ManifestFile<'a>> = input
        .files
        .iter()
        .zip(&plan.file_entries)
        .zip(written)
        .map(|((f, entry), bytes)| ManifestFile {
            key: &f.key,
            entry: entry.clone(),
            part: match f.part {
                FilePart::Whole => "whole",
                FilePart::Records { .. } => "records",
            },
            records: match &f.part {
                FilePart::Whole => None,
                FilePart::Records { records, .. } => Some(records.len() as u64),
            },
            bytes: *bytes,
            entities: &f.entities,
        })
        .collect();
    Manifest {
        format: "lethe-access-export/1",
        request: ManifestRequest {
            id: &r.id,
            reference: &r.reference,
            received: &r.received,
            made_at: &r.made_at,
            subject_kinds: &r.subject_kinds,
        },
        counts: Counts {
            entities: entities.iter().map(|e| e.count).sum(),
            files: files.len() as u64,
            records: files.iter().filter_map(|f| f.records).sum(),
            not_included: input.not_included.len() as u64,
        },
        entities,
        files,
        not_included: input
            .not_included
            .iter()
            .map(|(object, why)| NotIncluded { object, why })
            .collect(),
    }
}
