//! The dashboard's pages. Each calls the API handler of what it shows or
//! does and renders its answer; nothing here decides anything itself.

use axum::Extension;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::super::{
    ApiError, AppState, ExportQuery, TargetQuery, audit_export, audit_lookup, audit_verify,
    explain as api_explain, holds_add, holds_list, holds_remove, plan_apply, plan_show, plans_list,
    request_export, request_show, requests_create, requests_list, schedule_show, sweep_show,
    sweeps_list,
};
use super::{Lang, Nav, Session, error_page, layout};
use crate::config::Scope;

type Page = Response;

/// An API answer as JSON, as a client of the API would read it.
fn value<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// A handler's body built from JSON, as the API would parse it.
fn body<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn page(s: &Session, nav: Nav, title: &str, body: Markup) -> Page {
    layout(s, nav, title, false, body).into_response()
}

/// A definition list of an object's scalar fields.
fn scalars(v: &Value) -> Markup {
    html! {
        dl.facts {
            @if let Some(o) = v.as_object() {
                @for (k, x) in o {
                    @if !x.is_object() && !x.is_array() {
                        dt { (k.replace('_', " ")) } dd { (text(x)) }
                    }
                }
            }
        }
    }
}

/// The duration of a run, when it has finished.
fn duration(run: &Value) -> String {
    let t = |k: &str| {
        run[k]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    };
    match (t("started_at"), t("finished_at")) {
        (Some(a), Some(b)) => {
            let ms = b.as_millisecond() - a.as_millisecond();
            format!("{:.1} s", ms as f64 / 1000.0)
        }
        _ => "—".into(),
    }
}

/// A run's counts in a line: due cases, deletions, verify.
fn counts(l: Lang, run: &Value) -> String {
    let s = &run["summary"];
    let mut out = Vec::new();
    if let Some(c) = s["plan"]["cases"].as_u64() {
        out.push(format!("{c} {}", l.t("due cases", "fällige Fälle")));
    }
    if let Some(c) = s["apply"]["cases_done"].as_u64() {
        out.push(format!("{c} {}", l.t("cases deleted", "Fälle gelöscht")));
    }
    if let Some(c) = s["apply"]["objects_deleted"].as_u64() {
        out.push(format!(
            "{c} {}",
            l.t("objects deleted", "Objekte gelöscht")
        ));
    }
    if let Some(r) = s["verify"]["residual"].as_array() {
        out.push(format!("{} {}", r.len(), l.t("residual", "verblieben")));
    }
    if out.is_empty() {
        "—".into()
    } else {
        out.join(", ")
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "done" | "applied" => "ok",
        "running" | "applying" | "awaiting-approval" | "planned" => "info",
        _ => "bad",
    }
}

// ---------------------------------------------------------------- overview

pub(super) async fn overview(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
) -> Page {
    match overview_body(&app, s.lang).await {
        Ok(b) => page(&s, Nav::Overview, s.lang.t("Overview", "Übersicht"), b),
        Err(e) => error_page(&s, Nav::Overview, e),
    }
}

async fn overview_body(app: &AppState, l: Lang) -> Result<Markup, ApiError> {
    // The overview's reads are independent: asked at once, the page waits
    // for the slowest, not for their sum.
    let (Json(runs), Json(schedule), Json(requests), Json(plans)) = tokio::try_join!(
        sweeps_list(State(app.clone()), Ok(Query(body(json!({"limit": 10}))?))),
        schedule_show(State(app.clone())),
        requests_list(State(app.clone())),
        plans_list(State(app.clone())),
    )?;
    let runs = value(&runs);
    let schedule = value(&schedule);
    let (chain, checking) = app.ui.chain(app);
    let requests = value(&requests);
    let open = requests
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|r| !r["status"].as_str().unwrap_or("").starts_with("done"))
                .count()
        })
        .unwrap_or(0);
    let overdue = requests
        .as_array()
        .map(|r| r.iter().filter(|r| r["overdue"] == true).count())
        .unwrap_or(0);
    let plans = value(&plans);
    let latest = match plans
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["id"].as_str())
    {
        Some(id) => {
            let Json(p) = plan_show(State(app.clone()), Ok(Path(id.to_string()))).await?;
            Some(value(&p))
        }
        None => None,
    };
    let last_verify = runs
        .as_array()
        .and_then(|r| r.iter().find(|r| r["summary"]["verify"].is_object()))
        .map(|r| r["summary"]["verify"].clone());
    Ok(html! {
        section.cards aria-label=(l.t("Status", "Stand")) {
            div.card {
                h2 { (l.t("Next scheduled run", "Nächster geplanter Lauf")) }
                @if schedule["configured"] == true {
                    p.big { (text(&schedule["next_run_local"])) }
                    p { code { (text(&schedule["cron"])) } " " (text(&schedule["timezone"])) (l.t(", mode ", ", Modus ")) (text(&schedule["mode"])) }
                } @else {
                    p { (l.t("No schedule configured.", "Kein Zeitplan konfiguriert.")) }
                }
                @if schedule["running"] == true { p.info { (l.t("A run is in progress.", "Ein Lauf ist im Gang.")) } }
            }
            div.card {
                h2 { (l.t("Audit chain", "Audit-Kette")) }
                @match &chain {
                    Some(c) => {
                        @if c.problems.is_empty() {
                            p.big.ok { (l.t("Intact", "Intakt")) }
                        } @else {
                            p.big.bad { (l.t("Broken", "Gebrochen")) }
                            ul { @for p in &c.problems { li { (p) } } }
                        }
                        p { (c.records) (l.t(" records", " Einträge")) }
                        p.hint { (l.t("checked ", "geprüft ")) (c.at.round(jiff::Unit::Second).unwrap_or(c.at)) }
                    }
                    None => { p.big { (l.t("Being checked…", "Wird geprüft…")) } }
                }
                @if checking && chain.is_some() { p.hint { (l.t("A new check is under way.", "Eine neue Prüfung läuft.")) } }
                p { a href="/ui/audit?verify=1" { (l.t("Verify now", "Jetzt prüfen")) } }
            }
            div.card {
                h2 { (l.t("Subject requests", "Betroffenenanträge")) }
                p.big { (open) (l.t(" open", " offen")) }
                p class=(if overdue > 0 { "bad" } else { "ok" }) { (overdue) (l.t(" overdue", " überfällig")) }
            }
            div.card {
                h2 { (l.t("Latest plan", "Neuester Plan")) }
                @if let Some(p) = &latest {
                    p.big { a href={ "/ui/plans/" (text(&p["id"])) } { (text(&p["id"])) } }
                    p { (text(&p["status"])) ", " (text(&p["summary"]["cases"])) (l.t(" due cases", " fällige Fälle")) }
                    p { (p["summary"]["reimported"].as_u64().unwrap_or(0)) (l.t(" re-imported subjects", " wieder importierte Betroffene")) }
                } @else {
                    p { (l.t("No plan yet.", "Noch kein Plan.")) }
                }
            }
            div.card {
                h2 { (l.t("Last verify", "Letzte Prüfung")) }
                @if let Some(v) = &last_verify {
                    @let residual = v["residual"].as_array().map(Vec::len).unwrap_or(0);
                    p class={ "big " (if residual == 0 { "ok" } else { "bad" }) } { (residual) (l.t(" residual identifiers", " verbliebene Kennungen")) }
                    p { (text(&v["entities_remaining"])) (l.t(" entities, ", " Entitäten, ")) (text(&v["objects_remaining"])) (l.t(" objects remaining", " Objekte verblieben")) }
                } @else {
                    p { (l.t("No apply verified yet.", "Noch keine Ausführung geprüft.")) }
                }
            }
        }
        h2 { (l.t("Last runs", "Letzte Läufe")) }
        div.scroll {
            table {
                thead { tr { th { (l.t("Run", "Lauf")) } th { (l.t("Trigger", "Auslöser")) } th { (l.t("Mode", "Modus")) } th { (l.t("Started", "Gestartet")) } th { (l.t("Duration", "Dauer")) } th { (l.t("Outcome", "Ergebnis")) } th { (l.t("Counts", "Zahlen")) } th { (l.t("Plan", "Plan")) } } }
                tbody {
                    @for r in runs.as_array().into_iter().flatten() {
                        tr {
                            td { a href={ "/ui/runs/" (text(&r["id"])) } { (text(&r["id"])) } }
                            td { (text(&r["trigger"])) }
                            td { (text(&r["mode"])) }
                            td { (text(&r["started_at"])) }
                            td { (duration(r)) }
                            td { span class=(status_class(r["status"].as_str().unwrap_or(""))) { (text(&r["status"])) } }
                            td { (counts(l, r)) }
                            td { @if let Some(p) = r["plan_id"].as_str() { a href={ "/ui/plans/" (p) } { (p) } } }
                        }
                    }
                }
            }
        }
        @if let Some(p) = &latest {
            @if let Some(months) = p["summary"]["due_by_month"].as_object() {
                h2 { (l.t("Outlook: cases becoming due per month", "Ausblick: fällig werdende Fälle je Monat")) }
                @let policies: Vec<&Value> = p["summary"]["policies"].as_array().into_iter().flatten().collect();
                div.scroll {
                    table {
                        thead { tr {
                            th { (l.t("Month", "Monat")) }
                            @for pol in &policies { th { (text(&pol["name"])) } }
                            th { (l.t("All cases", "Alle Fälle")) }
                        } }
                        tbody { @for (m, n) in months { tr {
                            td { (m) }
                            @for pol in &policies { td.num { (text(&pol["due_by_month"][m.as_str()])) } }
                            td.num { (text(n)) }
                        } } }
                    }
                }
            }
        }
    })
}

// ---------------------------------------------------------------- plans

pub(super) async fn plans(State(app): State<AppState>, Extension(s): Extension<Session>) -> Page {
    let l = s.lang;
    let list = match plans_list(State(app)).await {
        Ok(Json(l)) => value(&l),
        Err(e) => return error_page(&s, Nav::Plans, e),
    };
    let mut rows: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    rows.reverse();
    page(
        &s,
        Nav::Plans,
        s.lang.t("Plans", "Pläne"),
        html! {
            @if rows.is_empty() { p { (l.t("No stored plans.", "Keine gespeicherten Pläne.")) } }
            @else {
                div.scroll {
                    table {
                        thead { tr { th { (l.t("Plan", "Plan")) } th { (l.t("Created", "Erstellt")) } th { (l.t("As of", "Stichtag")) } th { (l.t("Status", "Status")) } } }
                        tbody {
                            @for p in &rows {
                                tr {
                                    td { a href={ "/ui/plans/" (text(&p["id"])) } { (text(&p["id"])) } }
                                    td { (text(&p["created_at"])) }
                                    td { (text(&p["as_of"])) }
                                    td { span class=(status_class(p["status"].as_str().unwrap_or(""))) { (text(&p["status"])) } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(super) async fn plan(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Page {
    plan_page(&app, &s, &id, None).await
}

/// A plan's page; `notice` is the answer to an approval that was refused.
async fn plan_page(app: &AppState, s: &Session, id: &str, notice: Option<ApiError>) -> Page {
    let l = s.lang;
    let p = match plan_show(State(app.clone()), Ok(Path(id.to_string()))).await {
        Ok(Json(p)) => value(&p),
        Err(e) => return error_page(s, Nav::Plans, e),
    };
    let summary: crate::plan::PlanSummary = match body(p["summary"].clone()) {
        Ok(x) => x,
        Err(e) => return error_page(s, Nav::Plans, e),
    };
    let status = p["status"].as_str().unwrap_or("");
    let brake: Vec<String> = body(p["brake"].clone()).unwrap_or_default();
    let o = &summary.objects;
    let fates = [
        (l.t("delete", "löschen"), o.delete + o.orphan_delete),
        (l.t("redact", "schwärzen"), o.redact),
        (
            l.t("shared (kept whole)", "geteilt (ganz behalten)"),
            o.shared,
        ),
        (l.t("retained", "behalten"), o.retained),
        (
            l.t("orphan, too young", "verwaist, zu jung"),
            o.orphan_young,
        ),
        (l.t("unlinked", "unverknüpft"), o.unlinked),
        (l.t("unreadable", "unlesbar"), o.unreadable),
        (l.t("held", "gesperrt"), o.held),
    ];
    let code = notice
        .as_ref()
        .map(|e| e.status)
        .unwrap_or(axum::http::StatusCode::OK);
    let body = html! {
        @if let Some(e) = &notice {
            p.error role="alert" {
                @if e.status == axum::http::StatusCode::UNPROCESSABLE_ENTITY {
                    (l.t("That is not this plan's digest.", "Das ist nicht die Prüfsumme dieses Plans."))
                } @else {
                    (e.message)
                }
                " Nothing was changed."
            }
        }
        dl.facts {
            dt { (l.t("Status", "Status")) } dd { span class=(status_class(status)) { (status) } }
            dt { (l.t("As of", "Stichtag")) } dd { (summary.as_of) }
            dt { (l.t("Created", "Erstellt")) } dd { (summary.created_at) }
            dt { (l.t("Due cases", "Fällige Fälle")) } dd { (summary.cases) }
            @if let Some(r) = &summary.request { dt { (l.t("Subject request", "Betroffenenantrag")) } dd { (r) } }
            dt { (l.t("Re-imported subjects", "Wieder importierte Betroffene")) } dd { (summary.reimported) }
            dt { (l.t("Digest", "Prüfsumme")) } dd { code.digest { (summary.digest) } }
        }
        h2 { (l.t("Due and kept per policy", "Fällig und behalten je Regel")) }
        div.scroll {
            table {
                thead { tr { th { (l.t("Policy", "Regel")) } th { (l.t("Root", "Wurzel")) } th { (l.t("Retain", "Aufbewahren")) } th { (l.t("Basis", "Rechtsgrundlage")) } th { (l.t("Read", "Gelesen")) } th { (l.t("Due", "Fällig")) } th { (l.t("Kept, and why", "Behalten, und warum")) } } }
                tbody {
                    @for pol in &summary.policies {
                        tr {
                            td { (pol.name) } td { (pol.root) } td { (pol.retain) } td { (pol.basis) }
                            td.num { (pol.read) } td.num { (pol.due) }
                            td {
                                @if pol.kept.is_empty() { "—" }
                                ul.plain { @for (why, n) in &pol.kept { li { (why) ": " (n) } } }
                            }
                        }
                    }
                }
            }
        }
        h2 { (l.t("Objects by fate", "Objekte nach Schicksal")) }
        dl.facts { @for (f, n) in fates { dt { (f) } dd { (n) } } }
        h2 { (l.t("Mass-delete brake", "Massenlösch-Bremse")) }
        @if brake.is_empty() {
            p.ok { (l.t("The brake does not hold this plan.", "Die Bremse hält diesen Plan nicht auf.")) }
        } @else {
            p.bad { (l.t("The brake holds this plan:", "Die Bremse hält diesen Plan auf:")) }
            ul { @for b in &brake { li { (b) } } }
        }
        @if status != "applied" {
            h2 { (l.t("Approve", "Freigeben")) }
            @if s.scope >= Scope::Admin {
                form.approve method="post" action={ "/ui/plans/" (summary.id) "/approve" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="digest" { (l.t("Type or paste the plan's digest to approve it", "Prüfsumme des Plans eingeben oder einfügen, um ihn freizugeben")) }
                    input #digest type="text" name="digest" autocomplete="off" spellcheck="false" required;
                    @if !brake.is_empty() {
                        label.check {
                            input type="checkbox" name="allow_mass_delete" value="true";
                            " Apply although the brake holds it (I have reviewed why)"
                        }
                    }
                    button type="submit" { (l.t("Approve and apply", "Freigeben und ausführen")) }
                }
            } @else {
                p { (l.t("Approving needs a token with the admin scope.", "Freigeben erfordert ein Token mit dem Bereich admin.")) }
            }
        }
    };
    (
        code,
        layout(
            s,
            Nav::Plans,
            &format!("{} {}", l.t("Plan", "Plan"), summary.id),
            false,
            body,
        ),
    )
        .into_response()
}

/// Missing fields are empty, for the API's check to name.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct ApproveForm {
    digest: String,
    allow_mass_delete: Option<String>,
}

pub(super) async fn approve(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    form: Form<ApproveForm>,
) -> Page {
    let Form(f) = form;
    let approval = match body(json!({
        "confirm": f.digest.trim(),
        "allow_mass_delete": f.allow_mass_delete.is_some(),
    })) {
        Ok(a) => a,
        Err(e) => return plan_page(&app, &s, &id, Some(e)).await,
    };
    match plan_apply(State(app.clone()), Ok(Path(id.clone())), Ok(Json(approval))).await {
        Ok((_, Json(started))) => {
            Redirect::to(&format!("/ui/runs/{}", started.run)).into_response()
        }
        Err(e) => plan_page(&app, &s, &id, Some(e)).await,
    }
}

pub(super) async fn run(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    id: Result<Path<i64>, PathRejection>,
) -> Page {
    let l = s.lang;
    let r = match sweep_show(State(app), id).await {
        Ok(Json(r)) => value(&r),
        Err(e) => return error_page(&s, Nav::Plans, e),
    };
    let status = r["status"].as_str().unwrap_or("");
    let running = status == "running";
    let verify = &r["summary"]["verify"];
    let body = html! {
        p role="status" {
            (l.t("Status: ", "Status: ")) span class={ "status " (status_class(status)) } { (status) }
            @if running { (l.t(" — this page refreshes every second until the run ends.", " — diese Seite lädt sich jede Sekunde neu, bis der Lauf endet.")) }
        }
        dl.facts {
            dt { (l.t("Trigger", "Auslöser")) } dd { (text(&r["trigger"])) }
            dt { (l.t("Mode", "Modus")) } dd { (text(&r["mode"])) }
            dt { (l.t("Started", "Gestartet")) } dd { (text(&r["started_at"])) }
            dt { (l.t("Finished", "Beendet")) } dd { (text(&r["finished_at"])) }
            dt { (l.t("Duration", "Dauer")) } dd { (duration(&r)) }
            @if let Some(p) = r["plan_id"].as_str() { dt { (l.t("Plan", "Plan")) } dd { a href={ "/ui/plans/" (p) } { (p) } } }
            @if let Some(e) = r["error"].as_str() { dt { (l.t("Error", "Fehler")) } dd.bad { (e) } }
        }
        @if verify.is_object() {
            h2 { (l.t("Verify", "Prüfung")) }
            @let residual = verify["residual"].as_array().cloned().unwrap_or_default();
            @if residual.is_empty() {
                p.ok.verified { (l.t("Verified: no residual identifiers.", "Geprüft: keine verbliebenen Kennungen.")) }
            } @else {
                p.bad.verified { (residual.len()) (l.t(" objects still name a deleted entity:", " Objekte nennen noch eine gelöschte Entität:")) }
                ul { @for x in &residual { li { code { (text(&x["object"])) } " (" (text(&x["why"])) ")" } } }
            }
            (scalars(verify))
        }
        @if r["summary"]["apply"].is_object() {
            h2 { (l.t("Apply", "Ausführung")) }
            (scalars(&r["summary"]["apply"]))
        }
    };
    layout(
        &s,
        Nav::Plans,
        &format!("{} {}", s.lang.t("Run", "Lauf"), text(&r["id"])),
        running,
        body,
    )
    .into_response()
}

// ---------------------------------------------------------------- explain

#[derive(Deserialize)]
pub(super) struct EntityQuery {
    entity: Option<String>,
}

pub(super) async fn explain(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<EntityQuery>,
) -> Page {
    let l = s.lang;
    let entity = q.entity.as_deref().map(str::trim).filter(|e| !e.is_empty());
    let answer = match entity {
        None => None,
        Some(e) => Some(match body(json!({})) {
            Ok(now) => api_explain(State(app), Ok(Path(e.to_string())), Ok(Query(now)))
                .await
                .map(|Json(v)| v),
            Err(err) => Err(err),
        }),
    };
    let body = html! {
        form.inline method="get" action="/ui/explain" {
            label for="entity" { (l.t("Entity ref (type:key)", "Entitätsreferenz (Typ:Schlüssel)")) }
            input #entity type="text" name="entity" value=(entity.unwrap_or("")) placeholder="lead:4711" required;
            button type="submit" { (l.t("Explain", "Erklären")) }
        }
        @match &answer {
            None => {}
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            Some(Ok(v)) => {
                @if v["exists"] == false {
                    p.result { (text(&v["entity"])) (l.t(" is not in the CRM.", " ist nicht im CRM.")) }
                } @else {
                    p.result {
                        (text(&v["entity"])) ": "
                        @if v["deleted_by_next_sweep"] == true { strong.bad { (l.t("due — deleted by the next sweep", "fällig — wird beim nächsten Lauf gelöscht")) } }
                        @else { strong.ok { (l.t("kept", "behalten")) } }
                    }
                    div.scroll {
                        table {
                            thead { tr { th { (l.t("Policy", "Regel")) } th { (l.t("Case clock", "Fallzeitpunkt")) } th { (l.t("Due", "Fällig")) } th { (l.t("Kept because", "Behalten wegen")) } th { (l.t("Due at", "Fällig am")) } } }
                            tbody {
                                @for c in v["cases"].as_array().into_iter().flatten() {
                                    tr {
                                        td { (text(&c["policy"])) }
                                        td { (text(&c["case_clock"])) }
                                        td { @if c["due"] == true { (l.t("yes", "ja")) } @else { (l.t("no", "nein")) } }
                                        td.why { (text(&c["kept_because"])) }
                                        td { (text(&c["due_at"])) }
                                    }
                                }
                            }
                        }
                    }
                    h2 { (l.t("Linked objects", "Verknüpfte Objekte")) " (" (text(&v["objects_linked"])) ")" }
                    @if v["objects"].as_array().is_some_and(|o| !o.is_empty()) {
                        div.scroll {
                            table {
                                thead { tr { th { (l.t("Object (pseudonym)", "Objekt (Pseudonym)")) } th { (l.t("Links", "Verknüpfungen")) } th { (l.t("By record", "Per Datensatz")) } th { (l.t("Shared", "Geteilt")) } } }
                                tbody {
                                    @for o in v["objects"].as_array().into_iter().flatten() {
                                        tr {
                                            td { code { (text(&o["object"])) } }
                                            td { (text(&o["links"])) }
                                            td { @if o["by_record"] == true { (l.t("yes", "ja")) } @else { (l.t("no", "nein")) } }
                                            td { @if o["shared"] == true { (l.t("yes", "ja")) } @else { (l.t("no", "nein")) } }
                                        }
                                    }
                                }
                            }
                        }
                    } @else {
                        p { (l.t("The link index links no object to it.", "Der Verknüpfungsindex verknüpft kein Objekt damit.")) }
                    }
                }
            }
        }
    };
    page(&s, Nav::Explain, l.t("Explain", "Erklären"), body)
}

// ---------------------------------------------------------------- holds

pub(super) async fn holds(State(app): State<AppState>, Extension(s): Extension<Session>) -> Page {
    holds_page(&app, &s, None).await
}

/// The holds; `notice` is the outcome of a change just made.
async fn holds_page(app: &AppState, s: &Session, notice: Option<Result<String, ApiError>>) -> Page {
    let l = s.lang;
    let list = match holds_list(State(app.clone())).await {
        Ok(Json(l)) => value(&l),
        Err(e) => return error_page(s, Nav::Holds, e),
    };
    let operate = s.scope >= Scope::Operate;
    let code = match &notice {
        Some(Err(e)) => e.status,
        _ => axum::http::StatusCode::OK,
    };
    let body = html! {
        @match &notice {
            Some(Ok(m)) => { p.notice role="status" { (m) } }
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            None => {}
        }
        @if list.as_array().is_none_or(|l| l.is_empty()) {
            p { (l.t("No legal holds.", "Keine rechtlichen Sperren.")) }
        } @else {
            div.scroll {
                table {
                    thead { tr { th { (l.t("Target", "Ziel")) } th { (l.t("Reason", "Grund")) } th { (l.t("Author", "Urheber")) } th { (l.t("Since", "Seit")) } @if operate { th { span.sr { (l.t("Action", "Aktion")) } } } } }
                    tbody {
                        @for h in list.as_array().into_iter().flatten() {
                            tr {
                                td { code { (text(&h["target"])) } }
                                td { (text(&h["reason"])) }
                                td { (text(&h["author"])) }
                                td { (text(&h["created_at"])) }
                                @if operate {
                                    td {
                                        form method="post" action="/ui/holds/lift" {
                                            input type="hidden" name="csrf" value=(s.csrf);
                                            input type="hidden" name="target" value=(text(&h["target"]));
                                            button type="submit" aria-label={ (l.t("Lift the hold on ", "Sperre aufheben: ")) (text(&h["target"])) } { (l.t("Lift", "Aufheben")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if operate {
            h2 { (l.t("Add a hold", "Sperre setzen")) }
            form.stack method="post" action="/ui/holds" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="target" { (l.t("Entity ref, object:KEY or prefix:PREFIX", "Entitätsreferenz, object:SCHLÜSSEL oder prefix:PRÄFIX")) }
                input #target type="text" name="target" placeholder="lead:4711" required;
                label for="reason" { (l.t("Reason (a case number, not personal data)", "Grund (ein Aktenzeichen, keine personenbezogenen Daten)")) }
                input #reason type="text" name="reason" required;
                label.check { input type="checkbox" name="allow_absent" value="true"; " The entity is not in the CRM yet" }
                button type="submit" { (l.t("Add hold", "Sperre setzen")) }
            }
        } @else {
            p { (l.t("Adding and lifting holds needs the operate scope.", "Sperren setzen und aufheben erfordert den Bereich operate.")) }
        }
    };
    (
        code,
        layout(
            s,
            Nav::Holds,
            l.t("Legal holds", "Rechtliche Sperren"),
            false,
            body,
        ),
    )
        .into_response()
}

/// Missing fields are empty, for the API's check to name.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct HoldForm {
    target: String,
    reason: String,
    allow_absent: Option<String>,
}

pub(super) async fn hold_add(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<HoldForm>,
) -> Page {
    let outcome = match body(json!({
        "target": f.target.trim(),
        "reason": f.reason,
        "allow_absent": f.allow_absent.is_some(),
    })) {
        Ok(h) => holds_add(State(app.clone()), Some(Extension(s.caller())), Ok(Json(h)))
            .await
            .map(|Json(c)| {
                let c = value(&c);
                if c["changed"] == true {
                    format!(
                        "{} {}",
                        text(&c["target"]),
                        s.lang.t("is on hold.", "ist gesperrt.")
                    )
                } else {
                    format!(
                        "{} {}",
                        text(&c["target"]),
                        s.lang.t("was on hold already.", "war schon gesperrt.")
                    )
                }
            }),
        Err(e) => Err(e),
    };
    holds_page(&app, &s, Some(outcome)).await
}

/// Missing fields are empty, for the API's check to name.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct LiftForm {
    target: String,
}

pub(super) async fn hold_lift(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<LiftForm>,
) -> Page {
    let outcome = holds_remove(
        State(app.clone()),
        Some(Extension(s.caller())),
        Ok(Query(TargetQuery { target: f.target })),
    )
    .await
    .map(|Json(c)| {
        format!(
            "{} {} {}",
            s.lang.t("The hold on", "Die Sperre auf"),
            text(&value(&c)["target"]),
            s.lang.t("is lifted.", "ist aufgehoben.")
        )
    });
    holds_page(&app, &s, Some(outcome)).await
}

// ---------------------------------------------------------------- requests

fn days_class(days: i64) -> &'static str {
    if days >= 10 {
        "days-ok"
    } else if days >= 5 {
        "days-warn"
    } else {
        "days-late"
    }
}

pub(super) async fn requests(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
) -> Page {
    requests_page(&app, &s, None).await
}

async fn requests_page(
    app: &AppState,
    s: &Session,
    notice: Option<Result<Markup, ApiError>>,
) -> Page {
    let l = s.lang;
    let list = match requests_list(State(app.clone())).await {
        Ok(Json(l)) => value(&l),
        Err(e) => return error_page(s, Nav::Requests, e),
    };
    let code = match &notice {
        Some(Err(e)) => e.status,
        _ => axum::http::StatusCode::OK,
    };
    let body = html! {
        @match &notice {
            Some(Ok(m)) => { p.notice role="status" { (m) } }
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            None => {}
        }
        @if list.as_array().is_none_or(|l| l.is_empty()) {
            p { (l.t("No subject requests.", "Keine Betroffenenanträge.")) }
        } @else {
            div.scroll {
                table {
                    thead { tr { th { (l.t("Request", "Antrag")) } th { (l.t("Kind", "Art")) } th { (l.t("Reference", "Referenz")) } th { (l.t("Received", "Eingegangen")) } th { (l.t("Due", "Fällig")) } th { (l.t("Days left", "Tage übrig")) } th { (l.t("Status", "Status")) } th { (l.t("Plan", "Plan")) } @if s.scope >= Scope::Admin { th { (l.t("Export", "Export")) } } } }
                    tbody {
                        @for r in list.as_array().into_iter().flatten() {
                            @let days = r["days_left"].as_i64().unwrap_or(0);
                            @let done = r["status"].as_str().unwrap_or("").starts_with("done");
                            tr {
                                td { a href={ "/ui/requests/" (text(&r["id"])) } { (text(&r["id"])) } }
                                td { (text(&r["kind"])) }
                                td { (text(&r["reference"])) }
                                td { (text(&r["received"])) }
                                td { (text(&r["due"])) }
                                td.num {
                                    @if done { "—" } @else { span class=(days_class(days)) { (days) } }
                                }
                                td { (text(&r["status"])) }
                                td { @if let Some(p) = r["plan_id"].as_str() { a href={ "/ui/plans/" (p) } { (p) } } }
                                @if s.scope >= Scope::Admin {
                                    td { @if r["kind"] == "access" { a href={ "/ui/requests/" (text(&r["id"])) "/export" } { (l.t("Download", "Herunterladen")) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if s.scope >= Scope::Operate {
            h2 { (l.t("Receive a request", "Antrag erfassen")) }
            form.stack method="post" action="/ui/requests" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="kind" { (l.t("Kind", "Art")) }
                select #kind name="kind" {
                    option value="erase" { (l.t("Erasure (Art. 17)", "Löschung (Art. 17)")) }
                    option value="access" { (l.t("Access / portability (Art. 15, 20)", "Auskunft / Übertragbarkeit (Art. 15, 20)")) }
                }
                label for="subject" { (l.t("Subject: email=…, phone=… or an entity ref, one per line (not shown again)", "Betroffene Person: email=…, phone=… oder eine Entitätsreferenz, eine je Zeile (wird nicht wieder angezeigt)")) }
                textarea #subject name="subject" rows="2" required {}
                label for="reference" { (l.t("Reference (ticket or letter)", "Referenz (Ticket oder Schreiben)")) }
                input #reference type="text" name="reference" required;
                label for="received" { (l.t("Received (YYYY-MM-DD; empty: today)", "Eingegangen (JJJJ-MM-TT; leer: heute)")) }
                input #received type="date" name="received";
                button type="submit" { (l.t("Receive", "Erfassen")) }
            }
        }
    };
    (
        code,
        layout(
            s,
            Nav::Requests,
            l.t("Subject requests", "Betroffenenanträge"),
            false,
            body,
        ),
    )
        .into_response()
}

/// Missing fields are empty, for the API's check to name.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RequestForm {
    kind: String,
    subject: String,
    reference: String,
    received: Option<String>,
}

pub(super) async fn request_create(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<RequestForm>,
) -> Page {
    let subject: Vec<&str> = f
        .subject
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let received = f
        .received
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let outcome = match body(json!({
        "kind": f.kind,
        "subject": subject,
        "reference": f.reference,
        "received": received,
    })) {
        Ok(b) => requests_create(State(app.clone()), Ok(Json(b)))
            .await
            .map(|(_, Json(r))| {
                let r = value(&r);
                let l = s.lang;
                html! {
                    (l.t("Request ", "Antrag ")) (text(&r["id"])) (l.t(" received, due ", " erfasst, fällig ")) (text(&r["due"])) "; "
                    (text(&r["entities"])) (l.t(" entities found.", " Entitäten gefunden."))
                    @if let Some(p) = r["plan_id"].as_str() {
                        (l.t(" Its erasure plan: ", " Sein Löschplan: ")) a href={ "/ui/plans/" (p) } { (p) } "."
                    }
                }
            }),
        Err(e) => Err(e),
    };
    requests_page(&app, &s, Some(outcome)).await
}

pub(super) async fn request(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Page {
    let l = s.lang;
    let r = match request_show(State(app), Ok(Path(id))).await {
        Ok(Json(r)) => value(&r),
        Err(e) => return error_page(&s, Nav::Requests, e),
    };
    let days = r["days_left"].as_i64().unwrap_or(0);
    let done = r["status"].as_str().unwrap_or("").starts_with("done");
    let kinds: Vec<String> = body(r["subject_kinds"].clone()).unwrap_or_default();
    let body = html! {
        dl.facts {
            dt { (l.t("Kind", "Art")) } dd { (text(&r["kind"])) }
            dt { (l.t("Reference", "Referenz")) } dd { (text(&r["reference"])) }
            dt { (l.t("Received", "Eingegangen")) } dd { (text(&r["received"])) }
            dt { (l.t("Due", "Fällig")) } dd { (text(&r["due"])) }
            dt { (l.t("Days left", "Tage übrig")) }
            dd { @if done { "—" } @else { span class=(days_class(days)) { (days) } } }
            dt { (l.t("Status", "Status")) } dd { (text(&r["status"])) }
            dt { (l.t("Identified by", "Identifiziert durch")) } dd { (kinds.join(", ")) }
            dt { (l.t("Entities found", "Gefundene Entitäten")) } dd { (text(&r["entities"])) }
            @if let Some(p) = r["plan_id"].as_str() {
                dt { (l.t("Erasure plan", "Löschplan")) } dd { a href={ "/ui/plans/" (p) } { (p) } }
            }
            dt { (l.t("Done", "Erledigt")) } dd { (text(&r["done_at"])) }
        }
        @if r["kind"] == "access" {
            @if s.scope >= Scope::Admin {
                p { a href={ "/ui/requests/" (text(&r["id"])) "/export" } { (l.t("Download the export (zip)", "Export herunterladen (zip)")) } }
            } @else {
                p { (l.t("Downloading the export needs the admin scope.", "Den Export herunterzuladen erfordert den Bereich admin.")) }
            }
        }
        @if r["summary"].is_object() {
            h2 { (l.t("Counts", "Zahlen")) }
            (scalars(&r["summary"]))
        }
    };
    layout(
        &s,
        Nav::Requests,
        &format!("{} {}", l.t("Request", "Antrag"), text(&r["id"])),
        false,
        body,
    )
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct DownloadQuery {
    format: Option<String>,
}

/// The audit export, as the API answers it.
pub(super) async fn audit_download(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<DownloadQuery>,
) -> Page {
    match audit_export(State(app), Ok(Query(ExportQuery { format: q.format }))).await {
        Ok(r) => r,
        Err(e) => error_page(&s, Nav::Audit, e),
    }
}

pub(super) async fn export(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Page {
    match request_export(State(app), Ok(Path(id))).await {
        Ok(r) => r,
        Err(e) => error_page(&s, Nav::Requests, e),
    }
}

// ---------------------------------------------------------------- audit

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    target: Option<String>,
    verify: Option<String>,
}

pub(super) async fn audit(
    State(app): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> Page {
    let l = s.lang;
    let verified = match q.verify {
        Some(_) => Some(audit_verify(State(app.clone())).await.map(|Json(v)| {
            app.ui.checked(&v);
            v
        })),
        None => None,
    };
    let target = q.target.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let found = match target {
        Some(t) => Some(
            audit_lookup(
                State(app.clone()),
                Ok(Query(TargetQuery {
                    target: t.to_string(),
                })),
            )
            .await
            .map(|Json(v)| v),
        ),
        None => None,
    };
    let body = html! {
        form.inline #verify method="get" action="/ui/audit" {
            input type="hidden" name="verify" value="1";
            button type="submit" { (l.t("Verify the chain now", "Kette jetzt prüfen")) }
        }
        @match &verified {
            None => {}
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            Some(Ok(v)) => {
                @if v.problems.is_empty() {
                    p.ok.result role="status" { (l.t("The chain is intact: ", "Die Kette ist intakt: ")) (v.records) (l.t(" records.", " Einträge.")) }
                } @else {
                    p.bad.result role="status" { (l.t("The chain is broken:", "Die Kette ist gebrochen:")) }
                    ul { @for p in &v.problems { li { (p) } } }
                }
                (scalars(&value(v)))
            }
        }
        p.downloads {
            (l.t("Every record: ", "Alle Einträge: "))
            a href="/ui/audit/export?format=csv" download { "CSV" }
            " · "
            a href="/ui/audit/export?format=jsonl" download { "JSON lines" }
        }
        h2 { (l.t("Look up an entity or object", "Entität oder Objekt nachschlagen")) }
        form.inline #lookup method="get" action="/ui/audit" {
            label for="target" { (l.t("Entity ref or object:KEY", "Entitätsreferenz oder object:SCHLÜSSEL")) }
            input #target type="text" name="target" value=(target.unwrap_or("")) placeholder="lead:4711" required;
            button type="submit" { (l.t("Look up", "Nachschlagen")) }
        }
        @match &found {
            None => {}
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            Some(Ok(v)) => {
                @let records = v["records"].as_array().cloned().unwrap_or_default();
                p.result {
                    (text(&v["target"])) (l.t(" (pseudonym ", " (Pseudonym ")) code { (text(&v["pseudonym"])) } "): "
                    @if records.is_empty() { (l.t("lethe has not deleted it.", "lethe hat es nicht gelöscht.")) }
                    @else { (records.len()) (l.t(" audit records.", " Audit-Einträge.")) }
                }
                @if !records.is_empty() {
                    div.scroll {
                        table {
                            thead { tr { th { (l.t("When", "Wann")) } th { (l.t("Action", "Aktion")) } th { (l.t("Policy", "Regel")) } th { (l.t("Basis", "Rechtsgrundlage")) } th { (l.t("Plan", "Plan")) } } }
                            tbody {
                                @for r in &records {
                                    tr {
                                        td { (text(&r["at"])) }
                                        td { (text(&r["action"])) }
                                        td { (text(&r["policy"])) }
                                        td { (text(&r["basis"])) }
                                        td { a href={ "/ui/plans/" (text(&r["plan_id"])) } { (text(&r["plan_id"])) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&s, Nav::Audit, "Audit", body)
}

#[cfg(test)]
mod tests {
    use super::days_class;

    #[test]
    fn days_left_are_green_from_10_amber_below_red_below_5() {
        assert_eq!(days_class(30), "days-ok");
        assert_eq!(days_class(10), "days-ok");
        assert_eq!(days_class(9), "days-warn");
        assert_eq!(days_class(5), "days-warn");
        assert_eq!(days_class(4), "days-late");
        assert_eq!(days_class(-3), "days-late");
    }
}
