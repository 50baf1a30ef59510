//! Validation: the raw, deserialized file into a typed [`Config`], one
//! function per section, every problem collected into [`Problems`] with its
//! key path. Pure: nothing here reaches a CRM, a store or the network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::raw::{
    RawApply, RawAudit, RawConfig, RawCrm, RawKeep, RawPolicy, RawSafety, RawSchedule, RawServe,
    RawState, RawTable, RawTechnical,
};
use super::{
    ApiToken, ApplySettings, BodyEncoding, Config, CrmUrl, EntityType, KeepRule, LinkRule, Policy,
    Problems, Retention, SafetySettings, Scope, Seg, ServeSettings, StateUrl, StoreUrl,
    TableSettings, did_you_mean, parse_delay, rules, schedule,
};
use crate::sensitive::Sensitive;

fn required<T: Clone>(value: &Option<T>, path: Vec<Seg>, problems: &mut Problems) -> Option<T> {
    if value.is_none() {
        problems.add(path, "missing; this key is required");
    }
    value.clone()
}

pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    dir: &Path,
    pr: &mut Problems,
) -> Option<Config> {
    let raw_crm = raw.crm.unwrap_or_default();
    let crm = crm_url(&raw_crm, dir, pr);
    let crm_max_in_flight = crm_max_in_flight(&raw_crm, pr);
    let names: BTreeSet<String> = raw_crm.entities.keys().cloned().collect();
    let entities = entity_types(&raw_crm, &names, pr);
    let raw_tech = raw.technical.unwrap_or_default();
    let (store, mut links, orphans_retain) = technical(&raw_tech, &names, dir, pr);
    let table = payload_table(&raw_tech, store.as_ref(), &names, &mut links, pr);
    if let (Some(t), Some(crm)) = (&table, &crm) {
        size_column(t, crm, pr);
    }
    let (max_delete_fraction, safety) = safety(raw.safety.unwrap_or_default(), pr);
    let policies = policies(&raw.policy, &names, pr);
    let (state, plan_retention) = state(raw.state.unwrap_or_default(), dir, pr);
    let audit_key = audit_key(raw.audit, pr);
    let apply = apply(raw.apply, pr);
    let schedule = raw.schedule.and_then(|s| schedule(s, pr));
    let serve = serve(raw.serve, pr);

    let keep_conditions = super::policy::keep_conditions(&policies);
    let compiled_policies = match super::policy::compile_all(&policies, &entities, &keep_conditions)
    {
        Ok(c) => c,
        Err(name) => {
            // Only when a type it names did not validate: said above.
            if pr.found.is_empty() {
                pr.add(
                    p!["policy"],
                    format!("policy `{name}` names an entity type that is not usable"),
                );
            }
            Vec::new()
        }
    };

    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    Some(Config {
        file: PathBuf::new(),
        crm: crm?,
        crm_vacuum: raw_crm.vacuum.unwrap_or(false),
        crm_max_in_flight,
        entities,
        store: store?,
        table,
        links,
        orphans_retain: orphans_retain?,
        max_content_bytes: raw_tech.max_content_bytes.unwrap_or(64 << 20),
        max_line_bytes: raw_tech.max_line_bytes.unwrap_or(16 << 20),
        batch_deletes: raw_tech.batch_deletes.unwrap_or(true),
        redact: raw_tech.redact.unwrap_or(true),
        max_delete_fraction,
        policies,
        compiled_policies,
        keep_conditions,
        state: state?,
        plan_retention,
        audit_key: audit_key?,
        apply,
        schedule,
        serve,
        hash,
        source: text.to_string(),
        safety: safety?,
    })
}

/// `[crm] url`.
fn crm_url(raw_crm: &RawCrm, dir: &Path, pr: &mut Problems) -> Option<CrmUrl> {
    match required(&raw_crm.url, p!["crm", "url"], pr) {
        Some(url) => match expand_env(&url) {
            Ok(url) => parse_crm_url(&url, dir)
                .map_err(|m| pr.add(p!["crm", "url"], m))
                .ok(),
            Err(m) => {
                pr.add(p!["crm", "url"], m);
                None
            }
        },
        None => None,
    }
}

/// `[crm] max_in_flight`: Dataverse's limit of concurrent requests per
/// user is 52, so at most 51.
fn crm_max_in_flight(raw_crm: &RawCrm, pr: &mut Problems) -> usize {
    const MAX: usize = crate::crm::dataverse::client::MAX_IN_FLIGHT;
    match raw_crm.max_in_flight {
        None => crate::crm::dataverse::client::DEFAULT_IN_FLIGHT,
        Some(n) if (1..=MAX).contains(&n) => n,
        Some(n) => {
            pr.add(
                p!["crm", "max_in_flight"],
                format!("{n} requests in flight: write 1 to {MAX} (Dataverse refuses more than 52 concurrent requests per user)"),
            );
            crate::crm::dataverse::client::DEFAULT_IN_FLIGHT
        }
    }
}

/// `[crm.entities.*]`, parents first (as declared when they form a cycle,
/// which is reported).
fn entity_types(raw_crm: &RawCrm, names: &BTreeSet<String>, pr: &mut Problems) -> Vec<EntityType> {
    if names.is_empty() {
        pr.add(
            p!["crm", "entities"],
            "no entity types; declare at least one [crm.entities.NAME] table",
        );
    }
    let mut entities = Vec::new();
    for (name, e) in &raw_crm.entities {
        let at = |k: &str| p!["crm", "entities", name, k];
        if !is_identifier(name) {
            pr.add(
                p!["crm", "entities", name],
                "entity type names are letters, digits, `_` and `-`",
            );
        }
        let table = required(&e.table, at("table"), pr).unwrap_or_default();
        let key = required(&e.key, at("key"), pr).unwrap_or_default();
        let clock = e.clock.clone().map(|c| c.into_vec()).unwrap_or_default();
        if clock.is_empty() {
            pr.add(
                at("clock"),
                "missing; name the column(s) holding the last activity, e.g. clock = [\"modified_at\", \"created_at\"]",
            );
        }
        for column in clock.iter().chain([&table, &key]) {
            if !column.is_empty() && !is_sql_name(column) {
                pr.add(
                    at("clock"),
                    format!("`{column}` is not a plain SQL identifier (letters, digits, `_`, optionally schema.table)"),
                );
            }
        }
        let mut parents = Vec::new();
        for (parent, column) in &e.parent {
            if !names.contains(parent) {
                pr.add(
                    p!["crm", "entities", name, "parent", parent],
                    format!(
                        "unknown entity type `{parent}`; declared types: {}",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if !is_sql_name(column) {
                pr.add(
                    p!["crm", "entities", name, "parent", parent],
                    format!("`{column}` is not a plain SQL identifier"),
                );
            }
            parents.push((parent.clone(), column.clone()));
        }
        let subject = e.subject.clone().map(|s| s.into_vec()).unwrap_or_default();
        let identifiers = e
            .identifiers
            .clone()
            .map(|s| s.into_vec())
            .unwrap_or_default();
        for column in &identifiers {
            if !subject.contains(column) {
                pr.add(
                    p!["crm", "entities", name, "identifiers"],
                    format!(
                        "`{column}` is not one of this type's subject columns ({}); identifiers are the subject columns that identify a person, so add it to `subject` too",
                        if subject.is_empty() {
                            "none declared".to_string()
                        } else {
                            subject.join(", ")
                        }
                    ),
                );
            } else if !is_sql_name(column) {
                pr.add(
                    p!["crm", "entities", name, "identifiers"],
                    format!("`{column}` is not a plain SQL identifier"),
                );
            }
        }
        entities.push(EntityType {
            name: name.clone(),
            table,
            key,
            clock,
            parents,
            subject,
            identifiers,
        });
    }
    match topo_order(&entities) {
        Ok(order) => order,
        Err(cycle) => {
            pr.add(
                p!["crm", "entities", &cycle[0], "parent"],
                format!(
                    "the parent relations form a cycle ({}); a case must be a tree of descendants",
                    cycle.join(" → ")
                ),
            );
            entities
        }
    }
}

/// `[technical]`: the store, the compiled link rules, the orphans' period.
fn technical(
    raw_tech: &RawTechnical,
    names: &BTreeSet<String>,
    dir: &Path,
    pr: &mut Problems,
) -> (Option<StoreUrl>, Vec<LinkRule>, Option<Retention>) {
    let store = match required(&raw_tech.url, p!["technical", "url"], pr) {
        Some(url) => match expand_env(&url) {
            Ok(url) => Some(parse_store_url(&url, dir)),
            Err(m) => {
                pr.add(p!["technical", "url"], m);
                None
            }
        },
        None => None,
    };
    let mut links = Vec::new();
    for (i, rule) in raw_tech.link.iter().enumerate() {
        match rules::compile(i, rule, names) {
            Ok(r) => links.push(r),
            Err(errs) => {
                for (key, m) in errs {
                    pr.add(p!["technical", "link", i, key], m);
                }
            }
        }
    }
    let orphans_text = raw_tech
        .orphans
        .as_ref()
        .and_then(|o| o.retain.clone())
        .unwrap_or_else(|| "30 days".into());
    let orphans_retain = Retention::parse(&orphans_text)
        .map_err(|m| pr.add(p!["technical", "orphans", "retain"], m))
        .ok();
    (store, links, orphans_retain)
}

/// `[technical.table]`: the payload table's columns, read with
/// `url = "crm://"` only (and required by it). Each direct link column becomes a metadata
/// rule after the `[[technical.link]]` rules (glob `**`, the name
/// `TableSettings::link_name` gives it), which the table store answers
/// from the row: whole-file links, read with the listing.
fn payload_table(
    raw_tech: &RawTechnical,
    store: Option<&StoreUrl>,
    names: &BTreeSet<String>,
    links: &mut Vec<LinkRule>,
    pr: &mut Problems,
) -> Option<TableSettings> {
    let raw = match (&raw_tech.table, store) {
        (None, Some(StoreUrl::CrmTable)) => {
            pr.add(
                p!["technical", "table"],
                "missing; url = \"crm://\" keeps payloads in a CRM table, which [technical.table] names (table, key, body, encoding, modified)",
            );
            return None;
        }
        (None, _) => return None,
        (Some(raw), _) => raw,
    };
    let RawTable {
        table,
        key,
        body,
        encoding,
        name,
        modified,
        version,
        size,
        links: direct,
        polymorphic,
    } = raw;
    let col = |v: &Option<String>, k: &str, pr: &mut Problems| -> Option<String> {
        let path = || {
            let mut path = p!["technical", "table"];
            path.extend(k.split('.').map(Seg::from));
            path
        };
        match v {
            Some(c) if !c.trim().is_empty() => Some(c.trim().to_string()),
            Some(_) => {
                pr.add(path(), "empty; name a column");
                None
            }
            None => {
                pr.add(path(), "missing; this key is required");
                None
            }
        }
    };
    let (table, key, body, modified) = (
        col(table, "table", pr),
        col(key, "key", pr),
        col(body, "body", pr),
        col(modified, "modified", pr),
    );
    let encoding = match encoding.as_deref() {
        Some("raw") => Some(BodyEncoding::Raw),
        Some("base64") => Some(BodyEncoding::Base64),
        Some(other) => {
            pr.add(
                p!["technical", "table", "encoding"],
                format!("`{other}` is not an encoding; write \"raw\" (bytes) or \"base64\" (text)"),
            );
            None
        }
        None => {
            pr.add(
                p!["technical", "table", "encoding"],
                "missing; write \"raw\" (a bytea/BLOB column) or \"base64\" (Base64 text)",
            );
            None
        }
    };
    let name = name.as_ref().and_then(|_| col(name, "name", pr));
    let version = version.as_ref().and_then(|_| col(version, "version", pr));
    let size = size.as_ref().and_then(|_| col(size, "size", pr));
    let mut direct_links = Vec::new();
    for (entity, column) in direct {
        if !names.contains(entity) {
            pr.add(
                p!["technical", "table", "links", entity.as_str()],
                format!(
                    "unknown entity type `{entity}`{}",
                    did_you_mean(entity, names.iter().map(String::as_str))
                ),
            );
        } else if column.trim().is_empty() {
            pr.add(
                p!["technical", "table", "links", entity.as_str()],
                "empty; name the foreign-key column",
            );
        } else {
            direct_links.push((entity.clone(), column.trim().to_string()));
        }
    }
    let polymorphic = polymorphic.as_ref().and_then(|p| {
        let id = col(&p.id, "polymorphic.id", pr);
        let type_column = col(&p.type_column, "polymorphic.type", pr);
        let mut types = Vec::new();
        for (code, entity) in &p.types {
            if names.contains(entity) {
                types.push((code.clone(), entity.clone()));
            } else {
                pr.add(
                    p!["technical", "table", "polymorphic", "types", code.as_str()],
                    format!(
                        "unknown entity type `{entity}`{}",
                        did_you_mean(entity, names.iter().map(String::as_str))
                    ),
                );
            }
        }
        if p.types.is_empty() {
            pr.add(
                p!["technical", "table", "polymorphic", "types"],
                "missing; map each type code to an entity type: types = { \"4\" = \"lead\" }",
            );
        }
        Some(super::Polymorphic {
            id: id?,
            type_column: type_column?,
            types,
        })
    });
    let settings = TableSettings {
        table: table?,
        key: key?,
        body: body?,
        encoding: encoding?,
        name,
        modified: modified?,
        version,
        size,
        links: direct_links,
        polymorphic,
    };
    // Read only with url = "crm://" (another store has no such columns).
    if store != Some(&StoreUrl::CrmTable) {
        return Some(settings);
    }
    let mut add = |name: String, entity: &str| {
        let glob = globset::GlobBuilder::new("**")
            .build()
            .expect("`**` is a glob")
            .compile_matcher();
        links.push(LinkRule::Metadata {
            index: links.len(),
            glob,
            glob_text: "**".into(),
            name,
            entity: entity.to_string(),
        });
    };
    for (entity, column) in &settings.links {
        add(TableSettings::link_name(column, None), entity);
    }
    if let Some(p) = &settings.polymorphic {
        let mut entities: Vec<&String> = p.types.iter().map(|(_, e)| e).collect();
        entities.sort();
        entities.dedup();
        for e in entities {
            add(TableSettings::link_name(&p.id, Some(e)), e);
        }
    }
    Some(settings)
}

/// `[technical.table] size`: Dataverse's Web API cannot compute a body's
/// size, so its table names the column that keeps it (`filesize`); an SQL
/// CRM computes the size of the body itself, and a column beside it could
/// disagree with the body.
fn size_column(t: &TableSettings, crm: &CrmUrl, pr: &mut Problems) {
    match (crm, &t.size) {
        (CrmUrl::Sqlite(_) | CrmUrl::Postgres(_) | CrmUrl::Mysql(_), Some(_)) => pr.add(
            p!["technical", "table", "size"],
            "an SQL CRM computes each body's size from the body itself; remove `size` (it is for Dataverse, whose Web API cannot)",
        ),
        (CrmUrl::Dataverse { .. }, None) => pr.add(
            p!["technical", "table", "size"],
            "missing; the Dataverse Web API cannot compute a body's size: name the column that keeps it (size = \"filesize\" for notes)",
        ),
        _ => {}
    }
    if matches!(crm, CrmUrl::Dataverse { .. }) && t.encoding == BodyEncoding::Raw {
        pr.add(
            p!["technical", "table", "encoding"],
            "the Dataverse Web API gives a body as Base64 text; write encoding = \"base64\"",
        );
    }
}

/// `[safety]`: the brakes' shares, each between 0 and 1; the mass-delete
/// brake's apart, as it falls back to its default when invalid.
fn safety(raw_safety: RawSafety, pr: &mut Problems) -> (f64, Option<SafetySettings>) {
    let defaults = SafetySettings::default();
    let mut share = |value: Option<f64>, key: &str, default: f64| -> Option<f64> {
        let v = value.unwrap_or(default);
        // `-0.0` is inside 0..=1 for the comparison, and prints as "-0%".
        if v.is_nan() || v.is_sign_negative() || v > 1.0 {
            pr.add(
                p!["safety", key],
                format!("{v} is not a share between 0 and 1 (write e.g. 0.5 for 50%)"),
            );
            return None;
        }
        Some(v)
    };
    let max_delete_fraction = share(raw_safety.max_delete_fraction, "max_delete_fraction", 0.5);
    let safety = (|| {
        Some(SafetySettings {
            max_dangling_fraction: share(
                raw_safety.max_dangling_fraction,
                "max_dangling_fraction",
                defaults.max_dangling_fraction,
            )?,
            max_drop_fraction: share(
                raw_safety.max_drop_fraction,
                "max_drop_fraction",
                defaults.max_drop_fraction,
            )?,
            max_keep_drop_fraction: share(
                raw_safety.max_keep_drop_fraction,
                "max_keep_drop_fraction",
                defaults.max_keep_drop_fraction,
            )?,
        })
    })();
    let max_delete_fraction = max_delete_fraction.unwrap_or(0.5);
    (max_delete_fraction, safety)
}

/// `[[policy]]`.
fn policies(raw_policy: &[RawPolicy], names: &BTreeSet<String>, pr: &mut Problems) -> Vec<Policy> {
    if raw_policy.is_empty() {
        pr.add(
            p!["policy"],
            "no [[policy]]; without one nothing is ever due",
        );
    }
    let mut policies = Vec::new();
    let mut policy_names = BTreeSet::new();
    let mut conditional = BTreeSet::new();
    for (i, rp) in raw_policy.iter().enumerate() {
        let name = required(&rp.name, p!["policy", i, "name"], pr).unwrap_or_default();
        if !name.is_empty() && !policy_names.insert(name.clone()) {
            pr.add(
                p!["policy", i, "name"],
                format!("policy `{name}` is declared twice"),
            );
        }
        let root = required(&rp.root, p!["policy", i, "root"], pr).unwrap_or_default();
        if !root.is_empty() && !names.contains(&root) {
            pr.add(
                p!["policy", i, "root"],
                format!(
                    "unknown entity type `{root}`{}; declared types: {}",
                    did_you_mean(&root, names.iter().map(String::as_str)),
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        let retain = required(&rp.retain, p!["policy", i, "retain"], pr).and_then(|t| {
            Retention::parse(&t)
                .map_err(|m| pr.add(p!["policy", i, "retain"], m))
                .ok()
        });
        let mut keep_if = Vec::new();
        for (j, k) in rp.keep_if.iter().enumerate() {
            let rule = match k {
                RawKeep::Type(t) => KeepRule {
                    entity: t.clone(),
                    condition: None,
                },
                RawKeep::Where { entity, condition } => KeepRule {
                    entity: entity.clone(),
                    condition: condition.clone().filter(|c| !c.trim().is_empty()),
                },
            };
            if !names.contains(&rule.entity) {
                pr.add(
                    p!["policy", i, "keep_if", j],
                    format!(
                        "unknown entity type `{}`{}; declared types: {}",
                        rule.entity,
                        did_you_mean(&rule.entity, names.iter().map(String::as_str)),
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if let Some(c) = &rule.condition {
                if c.contains(';') {
                    pr.add(
                        p!["policy", i, "keep_if", j],
                        "a keep_if condition is one SQL expression; `;` is not allowed",
                    );
                }
                conditional.insert(rule.clone());
            }
            keep_if.push(rule);
        }
        let basis = required(&rp.basis, p!["policy", i, "basis"], pr).unwrap_or_default();
        if let Some(retain) = retain {
            policies.push(Policy {
                name,
                root,
                retain,
                keep_if,
                basis,
            });
        }
    }
    if conditional.len() > 32 {
        pr.add(p!["policy"], "more than 32 distinct keep_if conditions");
    }
    policies
}

/// `[state]`: the state database and how long plans are kept.
fn state(
    raw_state: RawState,
    dir: &Path,
    pr: &mut Problems,
) -> (Option<StateUrl>, Option<Retention>) {
    let plan_retention = raw_state.plan_retention.as_deref().and_then(|t| {
        Retention::parse(t)
            .map_err(|m| pr.add(p!["state", "plan_retention"], m))
            .ok()
    });
    let state_text = raw_state
        .url
        .unwrap_or_else(|| "sqlite://lethe-state.db".into());
    let state = match expand_env(&state_text) {
        Ok(u) => parse_state_url(&u, dir)
            .map_err(|m| pr.add(p!["state", "url"], m))
            .ok(),
        Err(m) => {
            pr.add(p!["state", "url"], m);
            None
        }
    };
    (state, plan_retention)
}

/// `[audit] key`, required and at least 16 bytes.
fn audit_key(raw_audit: Option<RawAudit>, pr: &mut Problems) -> Option<Sensitive<Vec<u8>>> {
    match raw_audit.and_then(|a| a.key) {
        None => {
            pr.add(
                p!["audit", "key"],
                "missing; the audit key pseudonymizes every record: set [audit] key = \"${LETHE_AUDIT_KEY}\" and export a secret of 16 characters or more",
            );
            None
        }
        Some(k) => match expand_env(&k) {
            Ok(k) if k.len() >= 16 => Some(Sensitive::new(k.into_bytes())),
            Ok(_) => {
                pr.add(p!["audit", "key"], "too short; use 16 characters or more");
                None
            }
            Err(m) => {
                pr.add(p!["audit", "key"], m);
                None
            }
        },
    }
}

/// `[apply]`, over the defaults.
fn apply(raw_apply: Option<RawApply>, pr: &mut Problems) -> ApplySettings {
    let mut apply = ApplySettings::default();
    if let Some(a) = raw_apply {
        let positive = |v: Option<usize>, key: &str, default: usize, pr: &mut Problems| match v {
            Some(0) => {
                pr.add(p!["apply", key], "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        };
        apply.max_attempts = positive(a.max_attempts, "max_attempts", apply.max_attempts, pr);
        apply.batch_cases = positive(a.batch_cases, "batch_cases", apply.batch_cases, pr);
        apply.batch_objects = positive(a.batch_objects, "batch_objects", apply.batch_objects, pr);
        apply.parallel_deletes = positive(
            a.parallel_deletes,
            "parallel_deletes",
            apply.parallel_deletes,
            pr,
        );
        if let Some(b) = &a.backoff {
            match parse_delay(b) {
                Ok(d) => apply.backoff = d,
                Err(m) => pr.add(p!["apply", "backoff"], m),
            }
        }
        if let Some(b) = &a.max_backoff {
            match parse_delay(b) {
                Ok(d) => apply.max_backoff = d,
                Err(m) => pr.add(p!["apply", "max_backoff"], m),
            }
        }
        if let Some(b) = &a.worker_timeout {
            match parse_delay(b) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => apply.worker_timeout = d,
                Ok(_) => pr.add(p!["apply", "worker_timeout"], "must be at least 1s"),
                Err(m) => pr.add(p!["apply", "worker_timeout"], m),
            }
        }
    }
    apply
}

/// `[schedule]`.
fn schedule(s: RawSchedule, pr: &mut Problems) -> Option<schedule::Schedule> {
    use schedule::{Mode, Schedule};
    let mode = match s.mode.as_deref() {
        None | Some("sweep") => Mode::Sweep,
        Some("plan") => Mode::Plan,
        Some(other) => {
            pr.add(
                p!["schedule", "mode"],
                format!("`{other}` is not a mode; write \"sweep\" (plan and apply) or \"plan\" (each plan waits for approval)"),
            );
            Mode::Sweep
        }
    };
    let Some(cron) = s.cron else {
        pr.add(
            p!["schedule", "cron"],
            "missing; write e.g. cron = \"0 3 * * *\" (03:00 daily)",
        );
        return None;
    };
    let tz = s.timezone.unwrap_or_else(|| "UTC".into());
    Schedule::parse(&cron, &tz, mode)
        .map_err(|m| {
            let key = if m.contains("time zone") {
                "timezone"
            } else {
                "cron"
            };
            pr.add(p!["schedule", key], m)
        })
        .ok()
}

/// `[serve]`, over the defaults, with its API tokens.
fn serve(raw_serve: Option<RawServe>, pr: &mut Problems) -> ServeSettings {
    let mut serve = ServeSettings::default();
    if let Some(s) = raw_serve {
        if let Some(l) = s.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                pr.add(
                    p!["serve", "listen"],
                    format!("`{l}` is not an address; write e.g. \"127.0.0.1:8080\""),
                );
            }
            serve.listen = l;
        }
        match s.body_limit {
            Some(0) => pr.add(p!["serve", "body_limit"], "must be at least 1 (bytes)"),
            Some(n) => serve.body_limit = n,
            None => {}
        }
        if let Some(t) = &s.request_timeout {
            match parse_delay(t) {
                Ok(d) if !d.is_zero() => serve.request_timeout = d,
                Ok(_) => pr.add(p!["serve", "request_timeout"], "must be more than 0"),
                Err(m) => pr.add(p!["serve", "request_timeout"], m),
            }
        }
        for (i, t) in s.token.into_iter().enumerate() {
            let name = t.name.unwrap_or_else(|| format!("token {}", i + 1));
            let scope = match t.scope.as_deref().map(|s| (s, Scope::parse(s))) {
                Some((_, Some(s))) => Some(s),
                Some((other, None)) => {
                    pr.add(
                        p!["serve", "token", i, "scope"],
                        format!(
                            "`{other}` is not a scope; write \"read\", \"operate\" or \"admin\""
                        ),
                    );
                    None
                }
                None => {
                    pr.add(
                        p!["serve", "token", i, "scope"],
                        format!("missing for {name}"),
                    );
                    None
                }
            };
            let hash = match t.sha256.as_deref().map(expand_env) {
                Some(Ok(h)) => match hex::decode(h.trim()) {
                    Ok(b) if b.len() == 32 => b.try_into().ok(),
                    _ => {
                        pr.add(
                            p!["serve", "token", i, "sha256"],
                            format!("for {name}: not 64 hex digits; write the SHA-256 of the token, e.g. `printf %s \"$TOKEN\" | sha256sum`"),
                        );
                        None
                    }
                },
                Some(Err(m)) => {
                    pr.add(p!["serve", "token", i, "sha256"], m);
                    None
                }
                None => {
                    pr.add(
                        p!["serve", "token", i, "sha256"],
                        format!("missing for {name}"),
                    );
                    None
                }
            };
            if let (Some(scope), Some(sha256)) = (scope, hash) {
                serve.tokens.push(ApiToken {
                    name,
                    sha256,
                    scope,
                });
            }
        }
    }
    serve
}

/// Expands `${NAME}` from the environment.
fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => {
                return Err(format!(
                    "environment variable {name} is not set (referenced as ${{{name}}})"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_sql_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        })
}

/// Orders types parents-first; on a cycle returns the types on it.
fn topo_order(entities: &[EntityType]) -> Result<Vec<EntityType>, Vec<String>> {
    let by_name: BTreeMap<&str, &EntityType> =
        entities.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut order = Vec::new();
    let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 1 visiting, 2 done
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a EntityType>,
        state: &mut BTreeMap<&'a str, u8>,
        order: &mut Vec<EntityType>,
        stack: &mut Vec<String>,
    ) -> Result<(), Vec<String>> {
        match state.get(name) {
            Some(2) => return Ok(()),
            Some(1) => {
                let start = stack.iter().position(|s| s == name).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(name.to_string());
                return Err(cycle);
            }
            _ => {}
        }
        let Some(e) = by_name.get(name) else {
            return Ok(()); // unknown parent: reported elsewhere
        };
        state.insert(name, 1);
        stack.push(name.to_string());
        for (parent, _) in &e.parents {
            if let Some((k, _)) = by_name.get_key_value(parent.as_str()) {
                visit(k, by_name, state, order, stack)?;
            }
        }
        stack.pop();
        state.insert(name, 2);
        order.push((*e).clone());
        Ok(())
    }
    for e in entities {
        visit(&e.name, &by_name, &mut state, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

fn strip_scheme<'a>(url: &'a str, schemes: &[&str]) -> Option<&'a str> {
    schemes.iter().find_map(|s| url.strip_prefix(s))
}

fn parse_crm_url(url: &str, dir: &Path) -> Result<CrmUrl, String> {
    if let Some(rest) = strip_scheme(url, &["sqlite://", "sqlite:"]) {
        let rest = rest.split('?').next().unwrap_or(rest);
        if rest.is_empty() {
            return Err("sqlite URL without a file: write sqlite://crm.db".into());
        }
        return Ok(CrmUrl::Sqlite(resolve_path(dir, rest)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(CrmUrl::Postgres(Sensitive::new(url.to_string())));
    }
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        return Ok(CrmUrl::Mysql(Sensitive::new(url.to_string())));
    }
    if let Some(rest) = url.strip_prefix("dataverse+http://") {
        let host = dataverse_host(rest)?;
        let bare = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        if !crate::crm::dataverse::client::is_loopback(bare) {
            return Err(format!(
                "dataverse+http:// (plain http) is for a test server on a loopback address; `{bare}` is not one: use dataverse://HOST (https)"
            ));
        }
        return Ok(CrmUrl::Dataverse {
            origin: format!("http://{host}"),
        });
    }
    if let Some(rest) = url.strip_prefix("dataverse://") {
        let host = dataverse_host(rest)?;
        return Ok(CrmUrl::Dataverse {
            origin: format!("https://{host}"),
        });
    }
    Err("unsupported CRM URL; use sqlite://FILE, postgres://…, mysql://… or dataverse://ORG.crm4.dynamics.com".into())
}

/// The host (and port) of a `dataverse://` URL: nothing else, no path, no
/// credentials (those come from the `AZURE_*` environment).
fn dataverse_host(rest: &str) -> Result<&str, String> {
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() {
        return Err("dataverse URL without a host: write dataverse://ORG.crm4.dynamics.com".into());
    }
    if host.contains(['/', '?', '#', '@']) || host.chars().any(char::is_whitespace) {
        return Err("a dataverse URL is the environment's host and nothing else (dataverse://ORG.crm4.dynamics.com); the Web API path is implied and credentials come from AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET".into());
    }
    Ok(host)
}

fn parse_state_url(url: &str, dir: &Path) -> Result<StateUrl, String> {
    if let Some(rest) = strip_scheme(url, &["sqlite://", "sqlite:"]) {
        let rest = rest.split('?').next().unwrap_or(rest);
        if rest.is_empty() {
            return Err("sqlite URL without a file: write sqlite://lethe-state.db".into());
        }
        return Ok(StateUrl::Sqlite(resolve_path(dir, rest)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StateUrl::Postgres(Sensitive::new(url.to_string())));
    }
    Err("unsupported state URL; use sqlite://FILE or postgres://…".into())
}

fn parse_store_url(url: &str, dir: &Path) -> StoreUrl {
    if url == "memory://" || url == "memory:" {
        StoreUrl::Memory
    } else if url == "crm://" || url == "crm:" {
        StoreUrl::CrmTable
    } else if let Some(rest) = url.strip_prefix("s3://") {
        StoreUrl::S3(rest.to_string())
    } else if let Some(rest) = url.strip_prefix("az://") {
        StoreUrl::Azure(rest.to_string())
    } else if let Some(rest) = url.strip_prefix("file://") {
        StoreUrl::Folder(resolve_path(dir, rest))
    } else {
        StoreUrl::Folder(resolve_path(dir, url))
    }
}
