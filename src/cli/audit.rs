//! `lethe audit verify|export|lookup`: the audit chain checked, written out
//! (JSON lines, JSON or CSV), or searched for one entity's or object's
//! records by pseudonym.

use std::path::Path;

use anyhow::Result;

use super::args::{AuditCommand, Format};
use super::{EXIT_FAILED, EXIT_OK, json, load_config, out, parse_entity_ref, render, usage};
use crate::audit::{self, pseudonym::Pseudonymizer};
use crate::config::Config;
use crate::model::EntityRef;
use crate::state::StateStore;
use crate::{crm, holds};

pub(super) async fn audit_cmd(path: &Path, cmd: AuditCommand, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    match cmd {
        AuditCommand::Verify { expect_head } => {
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            let v =
                audit::verify_paged(&state, &pseudo, audit::JOURNAL_PAGE, expect_head.as_deref())
                    .await?;
            out(&match format {
                Format::Text => render::audit_verify(&v),
                _ => json(&v),
            });
            Ok(if v.problems.is_empty() {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        AuditCommand::Export => export(&state, format).await,
        AuditCommand::Lookup { target } => lookup(&config, &state, &target, format).await,
    }
}

/// `audit export`: every record in chain order, as JSON lines, one JSON
/// array or CSV.
async fn export(state: &StateStore, format: Format) -> Result<i32> {
    let mut records = Vec::new();
    audit::for_each(state, &mut |r| records.push(r)).await?;
    let lines = match format {
        Format::Csv => format!("{}{}", audit::CSV_HEADER, audit::csv_rows(&records)?),
        Format::Json => json(&records),
        _ => audit::jsonl(&records)?,
    };
    out(&lines);
    Ok(EXIT_OK)
}

/// `audit lookup TARGET`: the records of one entity or object, found by its
/// pseudonym.
async fn lookup(config: &Config, state: &StateStore, target: &str, format: Format) -> Result<i32> {
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let p = if let Some(k) = target.strip_prefix("object:") {
        pseudo.object(k)
    } else {
        // The ref as the key column stores it (`lead:018` is
        // lead 18, as it was audited); an auditor without access to
        // the CRM gets the ref as typed, and is told so.
        let kinds = match crm::connect(config).await {
            Ok(c) => crm::refs::KeyKinds::read(config, c.as_ref()).await.ok(),
            Err(_) => None,
        };
        let r = match &kinds {
            Some(kinds) => {
                parse_entity_ref(config, kinds, target)
                    .map_err(|m| usage("TARGET", m))?
                    .0
            }
            None => {
                eprintln!(
                    "lethe: warning: the CRM is out of reach, so {} is looked up as typed (lead:018 and lead:18 differ)",
                    crm::refs::printable(target)
                );
                EntityRef::parse(target).map_err(|e| usage("TARGET", e.to_string()))?
            }
        };
        pseudo.entity(&r.entity_type, &r.key)
    };
    let records = audit::lookup(state, &p).await?;
    out(&match format {
        Format::Text if records.is_empty() => {
            format!("{target}: no audit record (lethe has not deleted it)\n")
        }
        Format::Text => records
            .iter()
            .map(|r| {
                if let Some(author) = &r.author {
                    return format!(
                        "{target}: {} at {} by {}\n",
                        r.action,
                        r.at,
                        holds::escape(author)
                    );
                }
                format!(
                    "{target}: {} at {} by plan {} under policy {} ({})\n",
                    r.action,
                    r.at,
                    r.plan_id,
                    r.policy.as_deref().unwrap_or("-"),
                    r.basis.as_deref().unwrap_or("-")
                )
            })
            .collect(),
        _ => json(&serde_json::json!({ "target": target, "pseudonym": p, "records": records })),
    });
    Ok(EXIT_OK)
}
