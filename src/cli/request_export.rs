//! `lethe request export`: records an access request, writes the subject's
//! data to a zip, and says plainly what the file is.

use anyhow::Result;

use super::args::{Format, RequestExportArgs};
use super::{EXIT_OK, json, out, usage};
use crate::config::Config;
use crate::request::{self, Subject};
use crate::state::StateStore;
use crate::{crm, store};

pub(super) async fn export(
    config: &Config,
    state: &StateStore,
    a: RequestExportArgs,
    format: Format,
) -> Result<i32> {
    let subject =
        Subject::parse(&a.request.subject).map_err(|e| usage("--subject", e.to_string()))?;
    request::check_reference(&a.request.reference)
        .map_err(|e| usage("--reference", e.to_string()))?;
    if a.out.exists() {
        return Err(usage(
            "--out",
            format!(
                "{} exists; lethe does not overwrite a file",
                a.out.display()
            ),
        ));
    }
    let crm = crm::connect(config).await?;
    let store = store::open(config)?;
    let r = request::record_access(
        config,
        crm.as_ref(),
        state,
        &subject,
        &a.request.reference,
        a.request.received.unwrap_or_else(request::today),
    )
    .await
    .map_err(|e| match e {
        request::RequestError::Usage(m) => usage("--subject", m),
        other => anyhow::Error::new(other),
    })?;
    let stats =
        request::export_request(config, crm.as_ref(), store.as_ref(), state, &r, &a.out).await?;
    out(&match format {
        Format::Text => format!(
            "request {} (access), reference {}: wrote {} — {} entities ({}), {} files, {} records from shared files, {} bytes\n  this file holds the subject's personal data: give it to them and delete it; the audit records that it was made\n",
            r.id,
            r.reference,
            a.out.display(),
            stats.entities.values().sum::<u64>(),
            stats
                .entities
                .iter()
                .map(|(t, n)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", "),
            stats.files,
            stats.records,
            stats.bytes
        ),
        _ => json(&serde_json::json!({ "request": r.id, "out": a.out, "export": stats })),
    });
    Ok(EXIT_OK)
}
