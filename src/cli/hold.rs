//! `lethe hold add|rm|list`: legal holds as the operator gives them (checked
//! and stored by `holds`), with the CRM asked whether an entity target names
//! a row.

use std::path::Path;

use anyhow::{Result, bail};

use super::args::{Format, HoldCommand};
use super::{EXIT_OK, json, load_config, out, render, usage};
use crate::audit::{self, pseudonym::Pseudonymizer};
use crate::config::Config;
use crate::model::EntityRef;
use crate::state::{HoldKind, StateStore};
use crate::{crm, holds};

/// The texts of `hold add` / `hold rm` within their bounds and printable
/// (see `holds`), before anything else reads them.
fn check_hold_args(target: &str, reason: Option<&str>) -> Result<()> {
    holds::check_target(target).map_err(|e| usage("TARGET", e.to_string()))?;
    if let Some(reason) = reason {
        holds::check_reason(reason).map_err(|e| usage("--reason", e.to_string()))?;
    }
    Ok(())
}

/// Who puts or lifts a hold: `--author`, else `$USER`; never a made-up name.
pub(super) fn hold_author(given: Option<String>) -> Result<String> {
    let (author, key) = match given {
        Some(a) => (a, "--author"),
        None => match std::env::var("USER") {
            Ok(u) if !u.trim().is_empty() => (u, "$USER"),
            _ => {
                return Err(usage(
                    "--author",
                    "no author: $USER is not set; say who puts or lifts the hold with --author NAME"
                        .into(),
                ));
            }
        },
    };
    holds::check_author(&author).map_err(|e| usage(key, e.to_string()))?;
    Ok(author)
}

/// The CRM and the key kinds a hold target needs: none for `object:` and
/// `prefix:` targets, so that a file can be held while the CRM is down.
async fn hold_crm(
    config: &Config,
    target: &str,
) -> Result<(Option<Box<dyn crm::Crm>>, crm::refs::KeyKinds)> {
    if target.starts_with("object:") || target.starts_with("prefix:") {
        return Ok((None, crm::refs::KeyKinds::default()));
    }
    let crm = crm::connect(config).await?;
    let kinds = crm::refs::KeyKinds::read(config, crm.as_ref()).await?;
    Ok((Some(crm), kinds))
}

/// A hold's target as the user typed it (see `holds::parse_target`).
fn parse_hold_target(
    config: &Config,
    kinds: &crm::refs::KeyKinds,
    target: &str,
) -> Result<(HoldKind, String, Option<crate::model::EntityKey>)> {
    holds::parse_target(config, kinds, target).map_err(|m| usage("TARGET", m))
}

/// What the audit says of an entity that is not in the CRM: " (lethe
/// deleted it at T under policy P)", or nothing.
pub(super) async fn erased_note(config: &Config, state: &StateStore, r: &str) -> Result<String> {
    let Ok(r) = EntityRef::parse(r) else {
        return Ok(String::new());
    };
    let pseudo = Pseudonymizer::new(config.audit_key.clone());
    let records = audit::lookup(&state.clone(), &pseudo.entity(&r.entity_type, &r.key)).await?;
    Ok(records
        .iter()
        .rev()
        .find(|rec| rec.action == "delete-entity")
        .map(|rec| {
            format!(
                "; the audit shows lethe deleted it at {} by plan {} under policy {}",
                rec.at,
                rec.plan_id,
                rec.policy.as_deref().unwrap_or("-")
            )
        })
        .unwrap_or_default())
}

pub(super) async fn hold(path: &Path, cmd: HoldCommand, format: Format) -> Result<i32> {
    let config = load_config(path)?;
    let state = StateStore::open(&config).await?;
    match cmd {
        HoldCommand::Add {
            target,
            reason,
            author,
            allow_absent,
        } => {
            check_hold_args(&target, Some(&reason))?;
            let author = hold_author(author)?;
            let (crm, kinds) = hold_crm(&config, &target).await?;
            let (kind, t, key) = parse_hold_target(&config, &kinds, &target)?;
            if let (HoldKind::Entity, Some(key), Some(crm)) = (kind, &key, &crm) {
                let ty = t.split_once(':').map(|(ty, _)| ty).unwrap_or_default();
                if !crm::refs::exists(&config, crm.as_ref(), ty, key).await? {
                    let note = erased_note(&config, &state, &t).await?;
                    if !allow_absent {
                        return Err(usage(
                            "TARGET",
                            format!(
                                "{t} is not in the CRM{note}; a hold on it protects only the payloads that name it so. Check the ref, or pass --allow-absent if the hold is meant for an entity not yet created"
                            ),
                        ));
                    }
                    eprintln!(
                        "lethe: warning: {t} is not in the CRM{note}; held as asked (--allow-absent)"
                    );
                }
            }
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            let added = holds::add(&state, &pseudo, kind, &t, &reason, &author).await?;
            out(&match format {
                Format::Text if added => format!("hold added on {}\n", holds::canonical(kind, &t)),
                Format::Text => format!("{} was already on hold\n", holds::canonical(kind, &t)),
                _ => json(
                    &serde_json::json!({ "target": holds::canonical(kind, &t), "added": added }),
                ),
            });
        }
        HoldCommand::Rm { target, author } => {
            check_hold_args(&target, None)?;
            let author = hold_author(author)?;
            let (_crm, kinds) = hold_crm(&config, &target).await?;
            let (kind, t, _) = parse_hold_target(&config, &kinds, &target)?;
            let pseudo = Pseudonymizer::new(config.audit_key.clone());
            let mut removed = holds::remove(&state, &pseudo, kind, &t, &author).await?;
            // A hold stored as typed before refs were read canonically
            // (`lead:018`) is lifted by the same text.
            if !removed && kind == HoldKind::Entity && t != target {
                removed = holds::remove(&state, &pseudo, kind, &target, &author).await?;
            }
            if !removed {
                bail!("{target} is not on hold; `lethe hold list` shows the holds");
            }
            out(&match format {
                Format::Text => format!("hold on {target} lifted\n"),
                _ => json(&serde_json::json!({ "target": target, "removed": true })),
            });
        }
        HoldCommand::List => {
            let holds = state.holds().await?;
            out(&match format {
                Format::Text => render::holds(&holds),
                _ => json(
                    &holds
                        .iter()
                        .map(|h| {
                            serde_json::json!({
                                "kind": h.kind.as_str(), "target": holds::canonical(h.kind, &h.target),
                                "reason": h.reason, "author": h.author,
                                "created_at": holds::show_instant(&h.created_at)
                            })
                        })
                        .collect::<Vec<_>>(),
                ),
            });
        }
    }
    Ok(EXIT_OK)
}
