//! The brakes: the reasons a plan must not be applied without
//! `--allow-mass-delete` — a type or the store losing more than
//! `safety.max_delete_fraction`, foreign keys naming parents that do not
//! exist (a wrong parent column makes every parent look childless), and a
//! type read far shorter than the previous plan read it, what lethe deleted
//! since set aside (a read that returned nothing is likelier than a CRM
//! that emptied itself).

use crate::config::Config;
use crate::state::StateError;

use super::PlanSummary;

/// The mass-delete brake: reasons this plan must not be applied without
/// `--allow-mass-delete`.
pub(super) async fn brake(
    config: &Config,
    s: &PlanSummary,
    counts: &[u64],
    types: &[String],
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<Vec<String>, StateError> {
    let mut reasons = Vec::new();
    for d in &s.dangling {
        if d.count > 0 && d.count as f64 > config.safety.max_dangling_fraction * d.of as f64 {
            reasons.push(format!(
                "{} of {} {} entities name a {} that does not exist (column `{}`; {}), more than safety.max_dangling_fraction ({}): check `parent = {{ {} = \"{}\" }}` in [crm.entities.{}] — a wrong parent column makes every {} look childless",
                d.count,
                d.of,
                d.entity,
                d.parent,
                d.column,
                percent(d.count, d.of),
                percent_of(config.safety.max_dangling_fraction),
                d.parent,
                d.column,
                d.entity,
                d.parent
            ));
        }
    }
    reasons.extend(mass_delete(config, s, counts, s.objects.total, types));
    // A type (or the store) the previous plan saw, now empty: a read that
    // returned nothing is far likelier than a CRM that emptied itself.
    let previous = crate::state::plans::baseline_summary(tx).await?;
    if let Some(prev) = previous.and_then(|p| serde_json::from_str::<PlanSummary>(&p).ok()) {
        // What lethe itself deleted since (the previous plan's own apply
        // included) is no drop.
        let deleted_since = crate::state::deleted_since(tx, &prev.id).await?;
        let kept_types: std::collections::BTreeSet<&str> = config
            .policies
            .iter()
            .flat_map(|p| p.keep_if.iter().map(|k| k.entity.as_str()))
            .collect();
        for (t, n) in &prev.entities_read {
            let now = s.entities_read.get(t).copied().unwrap_or(0);
            if *n > 0 && now == 0 {
                reasons.push(format!(
                    "sees no {t} entities, but the previous plan {} saw {n}: check the CRM connection and table before allowing this",
                    prev.id
                ));
                continue;
            }
            let expected = n.saturating_sub(deleted_since.get(t).copied().unwrap_or(0));
            let (bound, key) = if kept_types.contains(t.as_str()) {
                (
                    config.safety.max_keep_drop_fraction,
                    "max_keep_drop_fraction",
                )
            } else {
                (config.safety.max_drop_fraction, "max_drop_fraction")
            };
            if expected > 0 && now < expected && (expected - now) as f64 > bound * expected as f64 {
                reasons.push(format!(
                    "reads {now} {t} entities where {expected} were expected (the previous plan {} saw {n}, lethe deleted {} since): a fall of {}, more than safety.{key} ({}){}; check the CRM connection and table before allowing this",
                    prev.id,
                    n - expected,
                    percent(expected - now, expected),
                    percent_of(bound),
                    if key == "max_keep_drop_fraction" {
                        format!(" — {t} keeps cases (keep_if), so a short read of it makes kept cases due")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        if prev.objects.total > 0 && s.objects.total == 0 {
            reasons.push(format!(
                "sees no technical objects, but the previous plan {} saw {}: check the store and run `lethe index`",
                prev.id, prev.objects.total
            ));
        }
    }
    Ok(reasons)
}

/// The mass-delete part of the brake: a type, or the store, losing more
/// than `safety.max_delete_fraction` (`counts`: each type's entities in the
/// CRM, in config order).
pub(super) fn mass_delete(
    config: &Config,
    s: &PlanSummary,
    counts: &[u64],
    objects_total: u64,
    types: &[String],
) -> Vec<String> {
    let mut reasons = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let deleting = s.entities_to_delete.get(t).copied().unwrap_or(0);
        if counts[i] > 0 && deleting as f64 > config.max_delete_fraction * counts[i] as f64 {
            reasons.push(format!(
                "deletes {deleting} of {} {t} entities ({:.0}%), more than safety.max_delete_fraction ({:.0}%)",
                counts[i],
                100.0 * deleting as f64 / counts[i] as f64,
                100.0 * config.max_delete_fraction
            ));
        }
    }
    let objects_deleting = s.objects.delete + s.objects.orphan_delete;
    if objects_total > 0
        && objects_deleting as f64 > config.max_delete_fraction * objects_total as f64
    {
        reasons.push(format!(
            "deletes {objects_deleting} of {} technical objects ({:.0}%), more than safety.max_delete_fraction ({:.0}%)",
            objects_total,
            100.0 * objects_deleting as f64 / objects_total as f64,
            100.0 * config.max_delete_fraction
        ));
    }
    // Records of entities absent from the CRM go by the orphans' rule: a
    // key spelled otherwise in the files than in the CRM makes every
    // entity look absent, and would strip the shared files record by
    // record as it would delete the unshared ones; measured, as objects
    // are, against the whole store. (Entities an earlier plan erased,
    // matched as linked, are not counted.)
    let (absent, all) = (s.objects.redact_absent_suspect, s.objects.record_links);
    if absent > 0 && absent as f64 > config.max_delete_fraction * all as f64 {
        reasons.push(format!(
            "removes {absent} records of entities absent from the CRM, of the store's {all} records ({}), more than safety.max_delete_fraction ({}): check that the link rules read the keys as the CRM spells them (`lethe plan show --fate redact --policy orphans` lists the files)",
            percent(absent, all),
            percent_of(config.max_delete_fraction)
        ));
    }
    reasons
}

/// `12.5%` of a count.
fn percent(part: u64, whole: u64) -> String {
    percent_of(if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    })
}

/// A share as a percentage, to one decimal where it matters (`0.5%`, `10%`).
fn percent_of(share: f64) -> String {
    let p = 100.0 * share;
    if (p - p.round()).abs() < 0.05 {
        format!("{:.0}%", p)
    } else {
        format!("{:.1}%", p)
    }
}
