//! Subject requests (Art. 15, 17, 20): a person asks for their data, or for
//! its erasure, and lethe answers within the month the GDPR allows
//! (Art. 12(3)). This module owns the subject (`--subject email=…`, or an
//! entity ref), its resolution to the CRM's entities (matched by SQL on the
//! `identifiers` columns, normalised), the erasure request's plan (made by
//! `plan::request`, applied like any plan), the search of the whole store
//! for objects that name the subject but link none of its entities, the
//! access export (`export.rs`), and the request's record (`state::requests`).
//!
//! Invariant: no identifier value leaves this module except into the CRM's
//! own query and into the subject's own export; what is stored is the keyed
//! hash of each (`verify::residual::Fingerprint`) and the refs it resolved
//! to.

mod access;
pub mod export;

pub use access::{export_request, record_access};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::crm::{CaseRequest, Crm, CrmError, RecheckInput};
use crate::model::{EntityKey, EntityRef};
use crate::plan::{PlanError, PlanSummary};
use crate::sensitive::Sensitive;
use crate::state::plans::NewReview;
use crate::state::requests::{Request, RequestKind, RequestStatus, StoredSubject, SubjectHash};
use crate::state::{StateError, StateStore};
use crate::store::TechnicalStore;
use crate::verify::residual::{Fingerprint, IdentifierKind, Scanner, normalise};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// What the user typed cannot name a subject (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("searching the technical store failed: {0}")]
    Scan(String),
}

/// One part of a subject as given: an identifier (kind and normalised
/// value) or an entity ref.
#[derive(Clone, Debug)]
pub enum SubjectPart {
    Identifier {
        kind: IdentifierKind,
        value: Sensitive<String>,
    },
    Ref(String),
}

/// The subject of a request: every part given (`--subject` repeated).
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub parts: Vec<SubjectPart>,
}

impl Subject {
    /// Reads `--subject` arguments: `email=jane@example.com`,
    /// `phone=+49 30 1234567`, or an entity ref `lead:4711`. A value that
    /// is not an e-mail address or a phone number (7 to 20 digits) is
    /// refused, and the message never repeats it.
    pub fn parse(args: &[String]) -> Result<Subject, RequestError> {
        if args.is_empty() {
            return Err(RequestError::Usage(
                "no subject: give --subject email=ADDRESS, --subject phone=NUMBER or an entity ref such as --subject lead:4711".into(),
            ));
        }
        let mut parts = Vec::new();
        for a in args {
            if let Some((kind, value)) = a.split_once('=') {
                let kind: IdentifierKind = kind.trim().parse().map_err(|_| {
                    RequestError::Usage(format!(
                        "`{}=…`: the kinds of identifier are email and phone",
                        printable(kind.trim())
                    ))
                })?;
                let Some(normalised) = normalise(kind, value) else {
                    return Err(RequestError::Usage(match kind {
                        IdentifierKind::Email => {
                            "the email given is not an e-mail address (it needs one @ with text on both sides)".into()
                        }
                        IdentifierKind::Phone => {
                            "the phone given is not a phone number (7 to 20 digits; spaces, dashes, brackets and + are allowed)".into()
                        }
                    }));
                };
                parts.push(SubjectPart::Identifier {
                    kind,
                    value: Sensitive::new(normalised),
                });
            } else if a.contains(':') {
                // Not the parser's message: it repeats the text, which may
                // be an identifier typed where a ref goes.
                EntityRef::parse(a).map_err(|_| {
                    RequestError::Usage(
                        "an entity ref is type:key, for example lead:4711 (the text given is not repeated)".into(),
                    )
                })?;
                parts.push(SubjectPart::Ref(a.clone()));
            } else {
                return Err(RequestError::Usage(
                    "a subject is KIND=VALUE (email=…, phone=…) or an entity ref (type:key)".into(),
                ));
            }
        }
        Ok(Subject { parts })
    }

    /// The identifiers given, with their keyed hashes (what is stored).
    pub fn stored(&self, fingerprint: &Fingerprint) -> StoredSubject {
        let mut s = StoredSubject::default();
        for p in &self.parts {
            match p {
                SubjectPart::Identifier { kind, value } => s.identifiers.push(SubjectHash {
                    kind: kind.as_str().to_string(),
                    hash: fingerprint.hex(*kind, value.expose()),
                }),
                SubjectPart::Ref(r) => s.refs.push(r.clone()),
            }
        }
        s
    }

    fn identifiers(&self) -> impl Iterator<Item = (IdentifierKind, &str)> {
        self.parts.iter().filter_map(|p| match p {
            SubjectPart::Identifier { kind, value } => Some((*kind, value.expose().as_str())),
            SubjectPart::Ref(_) => None,
        })
    }
}

/// A user's text, printable in a message (control characters escaped).
fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).take(40).collect()
}

/// The subject's entities in the CRM: every entity of a type with
/// `identifiers` whose identifier column matches a given identifier (SQL,
/// normalised), and every ref given; as (type index, key), without repeats.
pub async fn resolve(
    config: &Config,
    crm: &dyn Crm,
    subject: &Subject,
) -> Result<Vec<(u16, EntityKey)>, RequestError> {
    let mut found: BTreeSet<(u16, EntityKey)> = BTreeSet::new();
    let with_identifiers: Vec<(usize, &crate::config::EntityType)> = config
        .entities
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.identifiers.is_empty())
        .collect();
    let mut any_identifier = false;
    for (kind, value) in subject.identifiers() {
        any_identifier = true;
        for (ti, et) in &with_identifiers {
            for column in &et.identifiers {
                for key in crm.find_by_identifier(et, column, kind, value).await? {
                    found.insert((*ti as u16, key));
                }
            }
        }
    }
    if any_identifier && with_identifiers.is_empty() {
        return Err(RequestError::Usage(
            "no entity type declares `identifiers` ([crm.entities.TYPE] identifiers = [\"email\", \"phone\"]), so no subject can be found by an identifier; name its entities by ref instead (--subject lead:4711)".into(),
        ));
    }
    let refs: Vec<&str> = subject
        .parts
        .iter()
        .filter_map(|p| match p {
            SubjectPart::Ref(r) => Some(r.as_str()),
            SubjectPart::Identifier { .. } => None,
        })
        .collect();
    if !refs.is_empty() {
        let kinds = crate::crm::refs::KeyKinds::read(config, crm).await?;
        for r in refs {
            let (r, key) = kinds
                .parse(config, r)
                .map_err(|_| ref_refused(config, &kinds, r))?;
            let Some(ti) = config.entity_index(&r.entity_type) else {
                continue;
            };
            let Some(et) = config.entities.get(ti) else {
                continue;
            };
            // Only a ref the CRM has names a subject's entity.
            for k in crm.existing(et, std::slice::from_ref(&key)).await? {
                found.insert((ti as u16, k));
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Why a subject's ref names no entity, without repeating it (what was
/// given as a subject may be an identifier typed where a ref goes): the
/// type when it is one of the config's, else the config's types.
fn ref_refused(config: &Config, kinds: &crate::crm::refs::KeyKinds, input: &str) -> RequestError {
    let known = input.split_once(':').and_then(|(t, _)| config.entity(t));
    RequestError::Usage(match known {
        Some(et) => {
            use crate::crm::refs::KeyKind;
            format!(
                "a {0} ref given as the subject has no key lethe can read: write {0}:KEY with the key as column {1} holds it{2}, without blanks around it or control characters (the text given is not repeated)",
                et.name,
                et.key,
                match kinds.of(&et.name) {
                    KeyKind::Integer => " (an integer)",
                    KeyKind::Uuid => " (a UUID)",
                    KeyKind::Text => "",
                }
            )
        }
        None => format!(
            "a ref given as the subject names no entity type of this config (its types: {}); write email=…, phone=… or a ref such as lead:4711 (the text given is not repeated)",
            config.type_names().join(", ")
        ),
    })
}

/// The current subtrees of the subject's entities.
async fn subtrees(
    config: &Config,
    crm: &dyn Crm,
    roots: &[(u16, EntityKey)],
) -> Result<Vec<crate::crm::CaseNow>, RequestError> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let input = RecheckInput {
        entities: config.entities.clone(),
        conditions: config.keep_conditions.clone(),
        cases: roots
            .iter()
            .enumerate()
            .map(|(i, (ty, key))| CaseRequest {
                case_id: i as u64,
                root_ty: *ty,
                root_key: key.clone(),
            })
            .collect(),
        payloads: None,
    };
    Ok(crm.subtrees(&input).await?)
}

/// The scanner for the subject: the identifiers given and those the CRM
/// holds for the subject's entities (read, hashed at once, never kept).
async fn subject_scanner(
    config: &Config,
    crm: &dyn Crm,
    subject: &Subject,
    keys_by_type: &[Vec<EntityKey>],
) -> Result<Option<Scanner>, RequestError> {
    let fingerprint = Fingerprint::new(&config.audit_key);
    let mut values: BTreeSet<(IdentifierKind, String)> = subject
        .identifiers()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    for (ti, keys) in keys_by_type.iter().enumerate() {
        let Some(et) = config.entities.get(ti) else {
            continue;
        };
        if et.identifiers.is_empty() || keys.is_empty() {
            continue;
        }
        for (_, row) in crm.identifier_values(et, keys).await? {
            for raw in row.into_iter().flatten() {
                let kind = if raw.contains('@') {
                    IdentifierKind::Email
                } else {
                    IdentifierKind::Phone
                };
                if let Some(n) = normalise(kind, &raw) {
                    values.insert((kind, n));
                }
            }
        }
    }
    if values.is_empty() {
        return Ok(None);
    }
    let mut lengths: BTreeMap<IdentifierKind, BTreeSet<usize>> = BTreeMap::new();
    let erased: Vec<(IdentifierKind, [u8; 32], u32)> = values
        .iter()
        .map(|(k, v)| {
            lengths.entry(*k).or_default().insert(v.len());
            (*k, fingerprint.hash(*k, v), 0)
        })
        .collect();
    let mut scanner = Scanner::new(fingerprint, erased);
    for (kind, set) in lengths {
        scanner = scanner.only_lengths(kind, set);
    }
    Ok(Some(scanner))
}

/// What `request erase` did.
#[derive(Clone, Debug, Serialize)]
pub struct EraseOutcome {
    pub request: Request,
    pub plan: PlanSummary,
    /// Per identifier given (in order, by kind only): on the suppression
    /// list already (erased before)?
    pub suppressed: Vec<Suppressed>,
    /// Entities of the subject found in the CRM (their subtrees included).
    pub entities_found: u64,
    /// Objects that name the subject but link none of its entities: listed
    /// for review in the plan (`names-subject`), never deleted
    /// automatically.
    pub names_subject: u64,
    /// The search of the store: objects and bytes read, objects not read.
    pub scanned_objects: u64,
    pub scanned_bytes: u64,
    pub not_searched: u64,
    /// Nothing of the subject in the CRM or the store.
    pub nothing_held: bool,
    /// Seconds to the stored plan (resolution, subtrees, judgement, the
    /// store's search, writing), of which the search.
    pub seconds: f64,
    pub seconds_scan: f64,
}

/// One identifier's answer from the suppression list (never its value).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Suppressed {
    pub kind: String,
    pub suppressed: bool,
}

/// Whether each identifier given is on the suppression list, in order.
pub async fn suppression_check(
    config: &Config,
    state: &StateStore,
    subject: &Subject,
) -> Result<Vec<Suppressed>, RequestError> {
    let fingerprint = Fingerprint::new(&config.audit_key);
    let hashes: Vec<(IdentifierKind, String)> = subject
        .identifiers()
        .map(|(k, v)| (k, fingerprint.hex(k, v)))
        .collect();
    let on = crate::state::erased::suppressed(
        state,
        &hashes.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>(),
    )
    .await?;
    Ok(hashes
        .into_iter()
        .map(|(k, h)| Suppressed {
            kind: k.as_str().to_string(),
            suppressed: on.contains(&h),
        })
        .collect())
}

/// What `suppression rm` did for one identifier (never its value).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Lifted {
    pub kind: String,
    /// It was on the list and is off it now (false: it was not on it).
    pub lifted: bool,
}

/// Lifts each identifier of `subject` from the suppression list (renewed
/// consent), each with its `suppression-rm` audit record in the same
/// transaction: the identifier's keyed hash, the reason's length, the
/// author.
pub async fn lift_suppression(
    config: &Config,
    state: &StateStore,
    subject: &Subject,
    reason: &str,
    author: &str,
) -> Result<Vec<Lifted>, RequestError> {
    let fingerprint = Fingerprint::new(&config.audit_key);
    let mut out = Vec::new();
    for (kind, value) in subject.identifiers() {
        let hash = fingerprint.hex(kind, value);
        let mut tx = state
            .begin_write()
            .await
            .map_err(crate::state::q("lifting a suppression"))?;
        let n = crate::state::erased::lift(&mut tx, &hash).await?;
        if n > 0 {
            crate::audit::append(
                &mut tx,
                vec![crate::audit::NewRecord {
                    plan_id: String::new(),
                    policy: None,
                    basis: None,
                    action: crate::state::audit_log::SUPPRESSION_RM,
                    entity_type: None,
                    pseudonym: hash,
                    bytes: None,
                    author: Some(author.to_string()),
                    reason_chars: Some(reason.chars().count() as i64),
                    detail: None,
                }],
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(crate::state::q("lifting a suppression"))?;
        out.push(Lifted {
            kind: kind.as_str().to_string(),
            lifted: n > 0,
        });
    }
    Ok(out)
}

/// A new request's id: `R-` and the time, with a random tail.
fn new_request_id(now: jiff::Timestamp) -> String {
    let z = now.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    format!(
        "R-{}-{:04x}",
        z.strftime("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// The day a request is due: received + 1 month (Art. 12(3)), calendar-
/// aware (31 January + 1 month is 28 or 29 February).
pub fn due_date(received: jiff::civil::Date) -> jiff::civil::Date {
    received
        .checked_add(jiff::Span::new().months(1))
        .unwrap_or(received)
}

/// Today in UTC.
pub fn today() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
}

/// Days left until the request is due (negative: past), and whether it is
/// overdue (past and not done).
pub fn days_left(r: &Request, today: jiff::civil::Date) -> (i64, bool) {
    let left = r
        .due
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|due| today.until(due).ok())
        .map(|s| s.get_days() as i64)
        .unwrap_or(0);
    (left, left < 0 && !r.status.is_done())
}

/// A new request's record.
pub fn new_request(
    kind: RequestKind,
    reference: &str,
    received: jiff::civil::Date,
    subject: StoredSubject,
) -> Request {
    let now = jiff::Timestamp::now();
    Request {
        id: new_request_id(now),
        kind,
        reference: reference.to_string(),
        received: received.to_string(),
        due: due_date(received).to_string(),
        created_at: jiff::Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
        subject,
        entities: Vec::new(),
        plan_id: None,
        status: RequestStatus::Open,
        done_at: None,
        summary: None,
    }
}

/// A reference is the user's (a ticket number): printable, one line, short.
pub fn check_reference(reference: &str) -> Result<(), RequestError> {
    if reference.trim().is_empty() {
        return Err(RequestError::Usage(
            "--reference is empty: give the ticket or letter this request came with".into(),
        ));
    }
    if reference.chars().count() > 200 || reference.chars().any(char::is_control) {
        return Err(RequestError::Usage(
            "--reference must be one line of at most 200 characters (a ticket number, not the request's text)".into(),
        ));
    }
    Ok(())
}

/// What a person asked, as received: who, the ticket it came with, when.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    pub subject: &'a Subject,
    pub reference: &'a str,
    pub received: jiff::civil::Date,
}

/// `request erase`: resolves the subject, judges its entities with the
/// request policies, searches the whole store for objects that name the
/// subject without a link, and stores the request and its plan. The plan
/// is applied like any plan (`lethe apply PLAN_ID`).
pub async fn erase(
    config: &Config,
    crm: &dyn Crm,
    store: &dyn TechnicalStore,
    state: &StateStore,
    asked: Asked<'_>,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<EraseOutcome, RequestError> {
    let Asked {
        subject,
        reference,
        received,
    } = asked;
    let started = std::time::Instant::now();
    check_reference(reference)?;
    crate::plan::require_fit(config, crm).await?;
    let fingerprint = Fingerprint::new(&config.audit_key);
    let mut request = new_request(
        RequestKind::Erase,
        reference,
        received,
        subject.stored(&fingerprint),
    );
    let suppressed = suppression_check(config, state, subject).await?;
    progress("resolving the subject", 0, 0);
    let roots = resolve(config, crm, subject).await?;
    let cases = subtrees(config, crm, &roots).await?;
    let as_of = crate::pipeline::now_seconds();
    let judged = crate::plan::request::judge(config, crm, state, &cases, as_of).await?;
    let entities = judged.entities();
    request.entities = entities.iter().map(|(t, k)| format!("{t}:{k}")).collect();

    // The whole store, for objects that name the subject without a link.
    let scan_started = std::time::Instant::now();
    let mut review = Vec::new();
    let (mut scanned_objects, mut scanned_bytes, mut not_searched) = (0, 0, 0);
    if let Some(scanner) = subject_scanner(config, crm, subject, &judged.keys_by_type()).await? {
        let found = crate::verify::scan::store_scan(store, Arc::new(scanner), &|d, t| {
            progress("searching the store", d, t)
        })
        .await
        .map_err(|e| RequestError::Scan(e.to_string()))?;
        scanned_objects = found.scanned;
        scanned_bytes = found.bytes;
        not_searched = found.skipped + found.failed;
        for (key, _) in found.hits {
            if judged.linked_objects.contains(&key) {
                continue;
            }
            review.push(NewReview {
                kind: "object",
                entity_type: None,
                key,
                size: None,
                fate: "names-subject".into(),
                reason: Some(
                    "names the subject but links none of its entities: review it; lethe never deletes it on its own".into(),
                ),
                entities: None,
            });
        }
    }
    let seconds_scan = scan_started.elapsed().as_secs_f64();
    let names_subject = review.len() as u64;

    let mut totals = Vec::with_capacity(config.entities.len());
    for et in &config.entities {
        totals.push(crm.count(et).await?);
    }
    progress("writing plan", 0, 0);
    let plan =
        crate::plan::request::write(config, state, judged, &request.id, &totals, review, started)
            .await?;
    let goes = plan.cases > 0 || plan.objects.redact > 0 || plan.objects.delete > 0;
    let kept = kept_anything(&plan);
    request.plan_id = Some(plan.id.clone());
    request.status = if goes {
        RequestStatus::Planned
    } else if kept {
        RequestStatus::DoneWithKept
    } else {
        RequestStatus::Done
    };
    if request.status.is_done() {
        request.done_at = Some(request.created_at.clone());
    }
    let nothing_held = entities.is_empty() && names_subject == 0;
    request.summary = Some(serde_json::json!({
        "entities": entities.len(),
        "cases": plan.cases,
        "objects_delete": plan.objects.delete,
        "objects_redact": plan.objects.redact,
        "names_subject": names_subject,
        "kept": kept,
        "nothing_held": nothing_held,
    }));
    crate::state::requests::insert(state, &request).await?;
    Ok(EraseOutcome {
        entities_found: entities.len() as u64,
        request,
        plan,
        suppressed,
        names_subject,
        scanned_objects,
        scanned_bytes,
        not_searched,
        nothing_held,
        seconds: started.elapsed().as_secs_f64(),
        seconds_scan,
    })
}

/// Whether a request's plan keeps anything of the subject (a case kept by a
/// `keep_if` or a hold, an object kept whole).
pub fn kept_anything(plan: &PlanSummary) -> bool {
    plan.policies
        .iter()
        .any(|p| p.kept.values().any(|n| *n > 0))
        || plan.objects.shared > 0
        || plan.objects.held > 0
        || plan.objects.retained > 0
}

/// After a request's plan was applied (and verified): the request is done,
/// or done with some of it kept (by the plan, or skipped at apply). Only
/// when the apply finished without a failure and verify found nothing left
/// but held objects (`applied_fully`); else it stays planned, and the next
/// apply of the plan settles it. A plan that is no request's is left alone.
pub async fn settle_after_apply(
    state: &StateStore,
    plan: &PlanSummary,
    applied_fully: bool,
    skipped_at_apply: bool,
) -> Result<(), StateError> {
    let Some(id) = &plan.request else {
        return Ok(());
    };
    if !applied_fully {
        return Ok(());
    }
    let status = if kept_anything(plan) || skipped_at_apply {
        RequestStatus::DoneWithKept
    } else {
        RequestStatus::Done
    };
    let now = jiff::Timestamp::now();
    let now = jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    crate::state::requests::set_status(state, id, status, Some(&now), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_read_and_bad_values_refused_without_echo() {
        let s = Subject::parse(&["email= Jane.Doe@Example.COM ".into(), "lead:4711".into()])
            .expect("parses");
        assert_eq!(s.parts.len(), 2);
        match &s.parts[0] {
            SubjectPart::Identifier { kind, value } => {
                assert_eq!(*kind, IdentifierKind::Email);
                assert_eq!(value.expose(), "jane.doe@example.com");
            }
            other => panic!("not an identifier: {other:?}"),
        }
        let e = Subject::parse(&["email=not-an-address".into()]).unwrap_err();
        assert!(!e.to_string().contains("not-an-address"), "{e}");
        let e = Subject::parse(&["phone=12-34".into()]).unwrap_err();
        assert!(!e.to_string().contains("12-34"), "{e}");
        assert!(Subject::parse(&["fax=123".into()]).is_err());
        assert!(Subject::parse(&["jane".into()]).is_err());
        let e = Subject::parse(&["jane@example.com:".into()]).unwrap_err();
        assert!(!e.to_string().contains("jane"), "{e}");
        assert!(Subject::parse(&[]).is_err());
    }

    #[test]
    fn a_request_is_due_a_calendar_month_after_receipt() {
        let d = |s: &str| s.parse::<jiff::civil::Date>().unwrap();
        assert_eq!(due_date(d("2026-11-20")), d("2026-12-20"));
        assert_eq!(due_date(d("2027-01-31")), d("2027-02-28"));
        assert_eq!(due_date(d("2028-01-31")), d("2028-02-29"));
    }

    #[test]
    fn references_are_one_short_line() {
        assert!(check_reference("TICKET-4711").is_ok());
        assert!(check_reference("  ").is_err());
        assert!(check_reference("a\nb").is_err());
        assert!(check_reference(&"x".repeat(201)).is_err());
    }
}
