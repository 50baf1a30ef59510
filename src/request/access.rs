//! Access requests (Art. 15, 20): the subject resolved to their entities
//! and recorded, then the export of what lethe holds about them — every
//! column of their rows, their files, from shared files only their records
//! (`export.rs` writes the zip) — audited and marked done.

use std::collections::{BTreeMap, BTreeSet};

use super::{RequestError, Subject, check_reference, export, new_request, resolve, subtrees};
use crate::config::Config;
use crate::crm::Crm;
use crate::model::EntityKey;
use crate::state::StateStore;
use crate::state::requests::{Request, RequestKind, RequestStatus};
use crate::store::TechnicalStore;
use crate::verify::residual::Fingerprint;

/// Records an access request (Art. 15/20): the subject resolved to its
/// entities (and their descendants), kept as refs for the export.
pub async fn record_access(
    config: &Config,
    crm: &dyn Crm,
    state: &StateStore,
    subject: &Subject,
    reference: &str,
    received: jiff::civil::Date,
) -> Result<Request, RequestError> {
    check_reference(reference)?;
    crate::plan::require_fit(config, crm).await?;
    let fingerprint = Fingerprint::new(&config.audit_key);
    let mut request = new_request(
        RequestKind::Access,
        reference,
        received,
        subject.stored(&fingerprint),
    );
    let roots = resolve(config, crm, subject).await?;
    request.entities = entity_refs(config, &subtrees(config, crm, &roots).await?);
    crate::state::requests::insert(state, &request).await?;
    Ok(request)
}

/// The refs of every entity in `cases` (type:key), without repeats.
fn entity_refs(config: &Config, cases: &[crate::crm::CaseNow]) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    for c in cases {
        for e in &c.entities {
            if let Some(et) = config.entities.get(e.ty as usize) {
                out.insert(format!("{}:{}", et.name, e.key.canonical()));
            }
        }
    }
    out.into_iter().collect()
}

/// Writes the access export of `request` (its resolved entities, read now)
/// to `out`, marks an access request done, and audits the export
/// (`access-export`: the request's id, counts, bytes).
///
/// What goes in: every column of the subject's entities; each object the
/// index links to them — whole when every link it has is the subject's,
/// only the subject's records when it is shared and its other links are
/// records of one shape too; otherwise left out and said so (it holds other
/// people's data that no record boundary separates).
pub async fn export_request(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    request: &Request,
    out: &std::path::Path,
) -> Result<export::ExportStats, RequestError> {
    use export::{ExportInput, ExportRequest};
    let kinds = crate::crm::refs::KeyKinds::read(config, crm).await?;
    let mut keys: BTreeMap<usize, Vec<EntityKey>> = BTreeMap::new();
    let mut mine: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &request.entities {
        let (r, key) = kinds.parse(config, r).map_err(RequestError::Usage)?;
        if let Some(ti) = config.entity_index(&r.entity_type) {
            keys.entry(ti).or_default().push(key);
            mine.insert((r.entity_type.clone(), r.key.clone()));
        }
    }
    let mut entities = Vec::new();
    for (ti, ks) in &keys {
        let Some(et) = config.entities.get(*ti) else {
            continue;
        };
        entities.push((et.name.clone(), crm.export_rows(et, ks).await?));
    }
    let pairs: Vec<(String, String)> = mine.iter().cloned().collect();
    let linking = crate::state::index::entries_linking(state, &pairs, &kinds.uuid_types()).await?;
    let (files, not_included) = choose_files(config, linking, &mine);
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let input = ExportInput {
        request: ExportRequest {
            id: request.id.clone(),
            reference: request.reference.clone(),
            received: request.received.clone(),
            made_at: now.to_string(),
            subject_kinds: request
                .subject
                .identifiers
                .iter()
                .map(|h| h.kind.clone())
                .collect(),
        },
        entities,
        files,
        not_included,
    };
    let stats = export::write_export(config, store, &input, out)
        .await
        .map_err(|e| RequestError::Scan(format!("the export was not written: {e}")))?;
    let detail = serde_json::json!({
        "entities": stats.entities,
        "files": stats.files,
        "records": stats.records,
        "bytes": stats.bytes,
    });
    let mut tx = state
        .begin_write()
        .await
        .map_err(crate::state::q("recording the export"))?;
    crate::audit::append(
        &mut tx,
        vec![crate::audit::NewRecord {
            plan_id: String::new(),
            policy: None,
            basis: Some("GDPR Art. 15, Art. 20".into()),
            action: crate::state::audit_log::ACCESS_EXPORT,
            entity_type: None,
            pseudonym: request.id.clone(),
            bytes: Some(stats.bytes as i64),
            author: None,
            reason_chars: None,
            detail: Some(detail.to_string()),
        }],
    )
    .await?;
    tx.commit()
        .await
        .map_err(crate::state::q("recording the export"))?;
    if request.kind == RequestKind::Access {
        crate::state::requests::set_status(
            state,
            &request.id,
            RequestStatus::Done,
            Some(&now.to_string()),
            Some(&detail),
        )
        .await?;
    }
    Ok(stats)
}

/// What of each object linked to the subject goes into the export: whole
/// when every link it has is the subject's; from a shared one only the
/// subject's records, when each of the subject's links is a record link of
/// one record shape; otherwise nothing, and the reason (by pseudonym).
fn choose_files(
    config: &Config,
    linking: Vec<crate::state::index::IndexedEntry>,
    mine: &BTreeSet<(String, String)>,
) -> (Vec<export::ExportFile>, Vec<(String, String)>) {
    use export::{ExportFile, FilePart};
    let pseudo = crate::audit::pseudonym::Pseudonymizer::new(config.audit_key.clone());
    let signatures: std::collections::HashMap<usize, Option<String>> = config
        .links
        .iter()
        .map(|r| (r.index(), r.record_signature()))
        .collect();
    let mut files = Vec::new();
    let mut not_included = Vec::new();
    for e in linking {
        let theirs: Vec<bool> = e.links.iter().map(|l| mine.contains(l)).collect();
        let refs: BTreeSet<String> = e
            .links
            .iter()
            .filter(|l| mine.contains(*l))
            .map(|(t, k)| format!("{t}:{k}"))
            .collect();
        if theirs.iter().all(|m| *m) {
            files.push(ExportFile {
                key: e.key.clone(),
                size: e.size,
                part: FilePart::Whole,
                entities: refs.into_iter().collect(),
            });
            continue;
        }
        // Shared: only the subject's records, when every link of the
        // subject is a record link of one record shape.
        let mut rule = None;
        let mut shape: Option<Option<String>> = None;
        let mut records = BTreeSet::new();
        let mut separable = true;
        for ((_, (r, record)), is_mine) in e.links.iter().zip(&e.records).zip(&theirs) {
            if !is_mine {
                continue;
            }
            let sig = signatures.get(r).cloned().flatten();
            match (record, &sig) {
                (Some(rec), Some(_)) if shape.as_ref().is_none_or(|s| *s == sig) => {
                    shape = Some(sig.clone());
                    rule.get_or_insert(*r);
                    records.insert(rec.clone());
                }
                _ => separable = false,
            }
        }
        match (separable, rule) {
            (true, Some(rule)) => files.push(ExportFile {
                key: e.key.clone(),
                size: e.size,
                part: FilePart::Records {
                    rule,
                    records: records.into_iter().collect(),
                },
                entities: refs.into_iter().collect(),
            }),
            _ => not_included.push((
                pseudo.show_object(&e.key),
                "shared with other people's entities, and the subject's part is not a record of one shape (a whole-file link): not separable".to_string(),
            )),
        }
    }
    (files, not_included)
}
