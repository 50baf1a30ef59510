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
    ApiError, AppState, TargetQuery, audit_lookup, audit_verify, explain as api_explain, holds_add,
    holds_list, holds_remove, plan_apply, plan_show, plans_list, request_export, requests_create,
    requests_list, schedule_show, sweep_show, sweeps_list,
};
use super::{Nav, Session, error_page, layout};
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
fn counts(run: &Value) -> String {
    let s = &run["summary"];
    let mut out = Vec::new();
    if let Some(c) = s["plan"]["cases"].as_u64() {
        out.push(format!("{c} due cases"));
    }
    if let Some(c) = s["apply"]["cases_done"].as_u64() {
        out.push(format!("{c} cases deleted"));
    }
    if let Some(c) = s["apply"]["objects_deleted"].as_u64() {
        out.push(format!("{c} objects deleted"));
    }
    if let Some(r) = s["verify"]["residual"].as_array() {
        out.push(format!("{} residual", r.len()));
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
    match overview_body(&app).await {
        Ok(b) => page(&s, Nav::Overview, "Overview", b),
        Err(e) => error_page(&s, Nav::Overview, e),
    }
}

async fn overview_body(app: &AppState) -> Result<Markup, ApiError> {
    let Json(runs) =
        sweeps_list(State(app.clone()), Ok(Query(body(json!({"limit": 10}))?))).await?;
    let runs = value(&runs);
    let Json(schedule) = schedule_show(State(app.clone())).await?;
    let schedule = value(&schedule);
    let Json(chain) = audit_verify(State(app.clone())).await?;
    let Json(requests) = requests_list(State(app.clone())).await?;
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
    let Json(plans) = plans_list(State(app.clone())).await?;
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
        section.cards aria-label="Status" {
            div.card {
                h2 { "Next scheduled run" }
                @if schedule["configured"] == true {
                    p.big { (text(&schedule["next_run_local"])) }
                    p { code { (text(&schedule["cron"])) } " " (text(&schedule["timezone"])) ", mode " (text(&schedule["mode"])) }
                } @else {
                    p { "No schedule configured." }
                }
                @if schedule["running"] == true { p.info { "A run is in progress." } }
            }
            div.card {
                h2 { "Audit chain" }
                @if chain.problems.is_empty() {
                    p.big.ok { "Intact" }
                } @else {
                    p.big.bad { "Broken" }
                    ul { @for p in &chain.problems { li { (p) } } }
                }
                p { (chain.records) " records" }
            }
            div.card {
                h2 { "Subject requests" }
                p.big { (open) " open" }
                p class=(if overdue > 0 { "bad" } else { "ok" }) { (overdue) " overdue" }
            }
            div.card {
                h2 { "Latest plan" }
                @if let Some(p) = &latest {
                    p.big { a href={ "/ui/plans/" (text(&p["id"])) } { (text(&p["id"])) } }
                    p { (text(&p["status"])) ", " (text(&p["summary"]["cases"])) " due cases" }
                    p { (p["summary"]["reimported"].as_u64().unwrap_or(0)) " re-imported subjects" }
                } @else {
                    p { "No plan yet." }
                }
            }
            div.card {
                h2 { "Last verify" }
                @if let Some(v) = &last_verify {
                    @let residual = v["residual"].as_array().map(Vec::len).unwrap_or(0);
                    p class={ "big " (if residual == 0 { "ok" } else { "bad" }) } { (residual) " residual identifiers" }
                    p { (text(&v["entities_remaining"])) " entities, " (text(&v["objects_remaining"])) " objects remaining" }
                } @else {
                    p { "No apply verified yet." }
                }
            }
        }
        h2 { "Last runs" }
        div.scroll {
            table {
                thead { tr { th { "Run" } th { "Trigger" } th { "Mode" } th { "Started" } th { "Duration" } th { "Outcome" } th { "Counts" } th { "Plan" } } }
                tbody {
                    @for r in runs.as_array().into_iter().flatten() {
                        tr {
                            td { a href={ "/ui/runs/" (text(&r["id"])) } { (text(&r["id"])) } }
                            td { (text(&r["trigger"])) }
                            td { (text(&r["mode"])) }
                            td { (text(&r["started_at"])) }
                            td { (duration(r)) }
                            td { span class=(status_class(r["status"].as_str().unwrap_or(""))) { (text(&r["status"])) } }
                            td { (counts(r)) }
                            td { @if let Some(p) = r["plan_id"].as_str() { a href={ "/ui/plans/" (p) } { (p) } } }
                        }
                    }
                }
            }
        }
        @if let Some(p) = &latest {
            @if let Some(months) = p["summary"]["due_by_month"].as_object() {
                h2 { "Outlook: cases becoming due per month" }
                div.scroll {
                    table {
                        thead { tr { th { "Month" } th { "Cases" } } }
                        tbody { @for (m, n) in months { tr { td { (m) } td.num { (text(n)) } } } }
                    }
                }
            }
        }
    })
}

// ---------------------------------------------------------------- plans

pub(super) async fn plans(State(app): State<AppState>, Extension(s): Extension<Session>) -> Page {
    let list = match plans_list(State(app)).await {
        Ok(Json(l)) => value(&l),
        Err(e) => return error_page(&s, Nav::Plans, e),
    };
    let mut rows: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    rows.reverse();
    page(
        &s,
        Nav::Plans,
        "Plans",
        html! {
            @if rows.is_empty() { p { "No stored plans." } }
            @else {
                div.scroll {
                    table {
                        thead { tr { th { "Plan" } th { "Created" } th { "As of" } th { "Status" } } }
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
        ("delete", o.delete + o.orphan_delete),
        ("redact", o.redact),
        ("shared (kept whole)", o.shared),
        ("retained", o.retained),
        ("orphan, too young", o.orphan_young),
        ("unlinked", o.unlinked),
        ("unreadable", o.unreadable),
        ("held", o.held),
    ];
    let code = notice
        .as_ref()
        .map(|e| e.status)
        .unwrap_or(axum::http::StatusCode::OK);
    let body = html! {
        @if let Some(e) = &notice {
            p.error role="alert" {
                @if e.status == axum::http::StatusCode::UNPROCESSABLE_ENTITY {
                    "That is not this plan's digest."
                } @else {
                    (e.message)
                }
                " Nothing was changed."
            }
        }
        dl.facts {
            dt { "Status" } dd { span class=(status_class(status)) { (status) } }
            dt { "As of" } dd { (summary.as_of) }
            dt { "Created" } dd { (summary.created_at) }
            dt { "Due cases" } dd { (summary.cases) }
            @if let Some(r) = &summary.request { dt { "Subject request" } dd { (r) } }
            dt { "Re-imported subjects" } dd { (summary.reimported) }
            dt { "Digest" } dd { code.digest { (summary.digest) } }
        }
        h2 { "Due and kept per policy" }
        div.scroll {
            table {
                thead { tr { th { "Policy" } th { "Root" } th { "Retain" } th { "Basis" } th { "Read" } th { "Due" } th { "Kept, and why" } } }
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
        h2 { "Objects by fate" }
        dl.facts { @for (f, n) in fates { dt { (f) } dd { (n) } } }
        h2 { "Mass-delete brake" }
        @if brake.is_empty() {
            p.ok { "The brake does not hold this plan." }
        } @else {
            p.bad { "The brake holds this plan:" }
            ul { @for b in &brake { li { (b) } } }
        }
        @if status != "applied" {
            h2 { "Approve" }
            @if s.scope >= Scope::Admin {
                form.approve method="post" action={ "/ui/plans/" (summary.id) "/approve" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="digest" { "Type or paste the plan's digest to approve it" }
                    input #digest type="text" name="digest" autocomplete="off" spellcheck="false" required;
                    @if !brake.is_empty() {
                        label.check {
                            input type="checkbox" name="allow_mass_delete" value="true";
                            " Apply although the brake holds it (I have reviewed why)"
                        }
                    }
                    button type="submit" { "Approve and apply" }
                }
            } @else {
                p { "Approving needs a token with the admin scope." }
            }
        }
    };
    (
        code,
        layout(s, Nav::Plans, &format!("Plan {}", summary.id), false, body),
    )
        .into_response()
}

#[derive(Deserialize)]
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
    let r = match sweep_show(State(app), id).await {
        Ok(Json(r)) => value(&r),
        Err(e) => return error_page(&s, Nav::Plans, e),
    };
    let status = r["status"].as_str().unwrap_or("");
    let running = status == "running";
    let verify = &r["summary"]["verify"];
    let body = html! {
        p role="status" {
            "Status: " span class={ "status " (status_class(status)) } { (status) }
            @if running { " — this page refreshes every second until the run ends." }
        }
        dl.facts {
            dt { "Trigger" } dd { (text(&r["trigger"])) }
            dt { "Mode" } dd { (text(&r["mode"])) }
            dt { "Started" } dd { (text(&r["started_at"])) }
            dt { "Finished" } dd { (text(&r["finished_at"])) }
            dt { "Duration" } dd { (duration(&r)) }
            @if let Some(p) = r["plan_id"].as_str() { dt { "Plan" } dd { a href={ "/ui/plans/" (p) } { (p) } } }
            @if let Some(e) = r["error"].as_str() { dt { "Error" } dd.bad { (e) } }
        }
        @if verify.is_object() {
            h2 { "Verify" }
            @let residual = verify["residual"].as_array().cloned().unwrap_or_default();
            @if residual.is_empty() {
                p.ok.verified { "Verified: no residual identifiers." }
            } @else {
                p.bad.verified { (residual.len()) " objects still name a deleted entity:" }
                ul { @for x in &residual { li { code { (text(&x["object"])) } " (" (text(&x["why"])) ")" } } }
            }
            (scalars(verify))
        }
        @if r["summary"]["apply"].is_object() {
            h2 { "Apply" }
            (scalars(&r["summary"]["apply"]))
        }
    };
    layout(
        &s,
        Nav::Plans,
        &format!("Run {}", text(&r["id"])),
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
            label for="entity" { "Entity ref (type:key)" }
            input #entity type="text" name="entity" value=(entity.unwrap_or("")) placeholder="lead:4711" required;
            button type="submit" { "Explain" }
        }
        @match &answer {
            None => {}
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            Some(Ok(v)) => {
                @if v["exists"] == false {
                    p.result { (text(&v["entity"])) " is not in the CRM." }
                } @else {
                    p.result {
                        (text(&v["entity"])) ": "
                        @if v["deleted_by_next_sweep"] == true { strong.bad { "due — deleted by the next sweep" } }
                        @else { strong.ok { "kept" } }
                    }
                    div.scroll {
                        table {
                            thead { tr { th { "Policy" } th { "Case clock" } th { "Due" } th { "Kept because" } th { "Due at" } } }
                            tbody {
                                @for c in v["cases"].as_array().into_iter().flatten() {
                                    tr {
                                        td { (text(&c["policy"])) }
                                        td { (text(&c["case_clock"])) }
                                        td { @if c["due"] == true { "yes" } @else { "no" } }
                                        td.why { (text(&c["kept_because"])) }
                                        td { (text(&c["due_at"])) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&s, Nav::Explain, "Explain", body)
}

// ---------------------------------------------------------------- holds

pub(super) async fn holds(State(app): State<AppState>, Extension(s): Extension<Session>) -> Page {
    holds_page(&app, &s, None).await
}

/// The holds; `notice` is the outcome of a change just made.
async fn holds_page(app: &AppState, s: &Session, notice: Option<Result<String, ApiError>>) -> Page {
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
            p { "No legal holds." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th { "Target" } th { "Reason" } th { "Author" } th { "Since" } @if operate { th { span.sr { "Action" } } } } }
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
                                            button type="submit" aria-label={ "Lift the hold on " (text(&h["target"])) } { "Lift" }
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
            h2 { "Add a hold" }
            form.stack method="post" action="/ui/holds" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="target" { "Entity ref, object:KEY or prefix:PREFIX" }
                input #target type="text" name="target" placeholder="lead:4711" required;
                label for="reason" { "Reason (a case number, not personal data)" }
                input #reason type="text" name="reason" required;
                label.check { input type="checkbox" name="allow_absent" value="true"; " The entity is not in the CRM yet" }
                button type="submit" { "Add hold" }
            }
        } @else {
            p { "Adding and lifting holds needs the operate scope." }
        }
    };
    (code, layout(s, Nav::Holds, "Legal holds", false, body)).into_response()
}

#[derive(Deserialize)]
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
                    format!("{} is on hold.", text(&c["target"]))
                } else {
                    format!("{} was on hold already.", text(&c["target"]))
                }
            }),
        Err(e) => Err(e),
    };
    holds_page(&app, &s, Some(outcome)).await
}

#[derive(Deserialize)]
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
    .map(|Json(c)| format!("The hold on {} is lifted.", text(&value(&c)["target"])));
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
            p { "No subject requests." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th { "Request" } th { "Kind" } th { "Reference" } th { "Received" } th { "Due" } th { "Days left" } th { "Status" } th { "Plan" } @if s.scope >= Scope::Admin { th { "Export" } } } }
                    tbody {
                        @for r in list.as_array().into_iter().flatten() {
                            @let days = r["days_left"].as_i64().unwrap_or(0);
                            @let done = r["status"].as_str().unwrap_or("").starts_with("done");
                            tr {
                                td { (text(&r["id"])) }
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
                                    td { @if r["kind"] == "access" { a href={ "/ui/requests/" (text(&r["id"])) "/export" } { "Download" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if s.scope >= Scope::Operate {
            h2 { "Receive a request" }
            form.stack method="post" action="/ui/requests" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="kind" { "Kind" }
                select #kind name="kind" {
                    option value="erase" { "Erasure (Art. 17)" }
                    option value="access" { "Access / portability (Art. 15, 20)" }
                }
                label for="subject" { "Subject: email=…, phone=… or an entity ref, one per line (not shown again)" }
                textarea #subject name="subject" rows="2" required {}
                label for="reference" { "Reference (ticket or letter)" }
                input #reference type="text" name="reference" required;
                label for="received" { "Received (YYYY-MM-DD; empty: today)" }
                input #received type="date" name="received";
                button type="submit" { "Receive" }
            }
        }
    };
    (
        code,
        layout(s, Nav::Requests, "Subject requests", false, body),
    )
        .into_response()
}

#[derive(Deserialize)]
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
                html! {
                    "Request " (text(&r["id"])) " received, due " (text(&r["due"])) "; "
                    (text(&r["entities"])) " entities found."
                    @if let Some(p) = r["plan_id"].as_str() {
                        " Its erasure plan: " a href={ "/ui/plans/" (p) } { (p) } "."
                    }
                }
            }),
        Err(e) => Err(e),
    };
    requests_page(&app, &s, Some(outcome)).await
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
    let verified = match q.verify {
        Some(_) => Some(audit_verify(State(app.clone())).await.map(|Json(v)| v)),
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
            button type="submit" { "Verify the chain now" }
        }
        @match &verified {
            None => {}
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            Some(Ok(v)) => {
                @if v.problems.is_empty() {
                    p.ok.result role="status" { "The chain is intact: " (v.records) " records." }
                } @else {
                    p.bad.result role="status" { "The chain is broken:" }
                    ul { @for p in &v.problems { li { (p) } } }
                }
                (scalars(&value(v)))
            }
        }
        h2 { "Look up an entity or object" }
        form.inline #lookup method="get" action="/ui/audit" {
            label for="target" { "Entity ref or object:KEY" }
            input #target type="text" name="target" value=(target.unwrap_or("")) placeholder="lead:4711" required;
            button type="submit" { "Look up" }
        }
        @match &found {
            None => {}
            Some(Err(e)) => { p.error role="alert" { (e.message) } }
            Some(Ok(v)) => {
                @let records = v["records"].as_array().cloned().unwrap_or_default();
                p.result {
                    (text(&v["target"])) " (pseudonym " code { (text(&v["pseudonym"])) } "): "
                    @if records.is_empty() { "lethe has not deleted it." }
                    @else { (records.len()) " audit records." }
                }
                @if !records.is_empty() {
                    div.scroll {
                        table {
                            thead { tr { th { "When" } th { "Action" } th { "Policy" } th { "Basis" } th { "Plan" } } }
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
