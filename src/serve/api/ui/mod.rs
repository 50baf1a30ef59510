//! The dashboard at `/ui/`: server-rendered pages (maud) for the data
//! protection officer, on the same handlers, tokens and scopes as the API.
//!
//! Every page calls the API's handler for what it shows or does, so there
//! is one implementation of every decision (an approval's digest check, a
//! hold's target, a request's deadline) and the pages show what the API
//! shows: entities by the ref the user typed or by pseudonym, counts.
//!
//! Sign-in takes a bearer token once; the session cookie holds a random id
//! (the server keeps its digest → the token's name and scope, with an
//! expiry). Each route group checks the scope as the API's does. Every
//! POST carries the session's CSRF token in its form; the check reads the
//! body before any handler, so a POST without a session or with a wrong
//! token is refused (403) and changes nothing. Every answer carries a strict
//! Content-Security-Policy: no inline script or style, nothing from
//! elsewhere, no framing.

mod pages;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState, Caller};
use crate::config::Scope;

/// The session cookie's name.
const COOKIE: &str = "lethe_session";
/// A session lasts this long from sign-in.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// At most this many sessions are kept (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
/// A form body is at most this long.
const MAX_FORM: usize = 64 * 1024;

pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'";

const STYLE: &str = include_str!("style.css");

/// The language of the pages: the `lethe_lang` cookie the switch sets,
/// else the first of German and English in `Accept-Language`, else English.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lang {
    En,
    De,
}

impl Lang {
    fn of(headers: &axum::http::HeaderMap) -> Lang {
        let chosen = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == LANG_COOKIE)
            .and_then(|(_, v)| Lang::parse(v));
        if let Some(l) = chosen {
            return l;
        }
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|tag| {
                let tag = tag.split(';').next().unwrap_or("").trim();
                Lang::parse(tag.split('-').next().unwrap_or(""))
            })
            .next()
            .unwrap_or(Lang::En)
    }

    fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "de" => Some(Lang::De),
            _ => None,
        }
    }

    pub(super) fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// The text in this language.
    pub(super) fn t(self, en: &'static str, de: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::De => de,
        }
    }
}

/// The language cookie's name.
const LANG_COOKIE: &str = "lethe_lang";

/// Who is signed in: the token's configured name and scope, the session's
/// CSRF token, and when the session ends.
#[derive(Clone, Debug)]
pub(super) struct Session {
    name: String,
    scope: Scope,
    csrf: String,
    expires: Instant,
    /// This request's language (not kept with the session).
    pub(super) lang: Lang,
}

impl Session {
    fn caller(&self) -> Caller {
        Caller(self.name.clone(), self.scope)
    }
}

/// What the dashboard keeps in memory (a restart signs everyone out).
#[derive(Debug, Default)]
pub struct Dashboard {
    sessions: Sessions,
    chain: Mutex<ChainCheck>,
}

/// The last check of the audit chain: the overview shows it rather than
/// walk the whole chain on every load (seconds at a million records), and
/// starts a new one in the background when it is older than
/// [`CHAIN_CHECK_AGE`]; "verify now" on the audit page checks at once.
#[derive(Debug, Default)]
struct ChainCheck {
    last: Option<ChainStatus>,
    running: bool,
}

/// The outcome of one check of the chain.
#[derive(Clone, Debug)]
pub(super) struct ChainStatus {
    pub(super) at: jiff::Timestamp,
    pub(super) records: u64,
    pub(super) problems: Vec<String>,
}

/// The overview checks the chain again when its last check is older.
const CHAIN_CHECK_AGE: Duration = Duration::from_secs(600);

impl Dashboard {
    /// The last check, and whether one is under way; starts one in the
    /// background when there is none or it is old.
    pub(super) fn chain(&self, app: &AppState) -> (Option<ChainStatus>, bool) {
        let mut c = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        let stale = c.last.as_ref().is_none_or(|l| {
            jiff::Timestamp::now().as_second() - l.at.as_second() > CHAIN_CHECK_AGE.as_secs() as i64
        });
        if stale && !c.running {
            c.running = true;
            let app = app.clone();
            tokio::spawn(async move {
                let result = super::audit_verify(State(app.clone())).await;
                let mut c = app.ui.chain.lock().unwrap_or_else(|e| e.into_inner());
                c.running = false;
                if let Ok(axum::Json(v)) = result {
                    c.last = Some(ChainStatus::of(&v));
                }
            });
        }
        (c.last.clone(), c.running)
    }

    /// A check just made (the audit page's "verify now").
    pub(super) fn checked(&self, v: &crate::audit::Verification) {
        let mut c = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        c.last = Some(ChainStatus::of(v));
    }
}

impl ChainStatus {
    fn of(v: &crate::audit::Verification) -> ChainStatus {
        ChainStatus {
            at: jiff::Timestamp::now(),
            records: v.records,
            problems: v.problems.clone(),
        }
    }
}

/// The signed-in sessions, by the SHA-256 of their id (a lookup's timing
/// says nothing about the ids themselves).
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for a token; answers its id (for the cookie).
    fn open(&self, name: &str, scope: Scope) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&id),
            Session {
                name: name.to_string(),
                scope,
                csrf: random_hex(),
                expires: now + SESSION_TTL,
                lang: Lang::En,
            },
        );
        id
    }

    fn get(&self, id: &str) -> Option<Session> {
        let key = digest(id);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        self.lock().remove(&digest(id));
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// The session id the request's cookie names, if any.
fn session_id(req: &axum::http::HeaderMap) -> Option<String> {
    req.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

// ---------------------------------------------------------------- checks

/// The scope check of a group of pages, and the CSRF check of its POSTs.
async fn require(
    State((app, need)): State<(AppState, Scope)>,
    req: Request,
    next: Next,
) -> Response {
    let lang = Lang::of(req.headers());
    let session = session_id(req.headers())
        .and_then(|id| app.ui.sessions.get(&id))
        .map(|s| Session { lang, ..s });
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    let Some(session) = session else {
        if reading {
            return Redirect::to("/ui/login").into_response();
        }
        return refused(
            lang,
            lang.t(
                "Not signed in (or the session has ended): nothing was changed.",
                "Nicht angemeldet (oder die Sitzung ist abgelaufen): nichts wurde geändert.",
            ),
        );
    };
    if session.scope < need {
        return refused(
            lang,
            &format!(
                "{} {} ({}) → {}. {}",
                lang.t("The token", "Das Token"),
                session.name,
                session.scope.as_str(),
                need.as_str(),
                lang.t(
                    "Its scope may not do this; nothing was changed.",
                    "Sein Bereich darf das nicht; nichts wurde geändert."
                )
            ),
        );
    }
    if !reading && cross_site(req.headers()) {
        return refused(
            lang,
            lang.t(
                "A form from another site: nothing was changed.",
                "Ein Formular einer anderen Website: nichts wurde geändert.",
            ),
        );
    }
    let mut req = req;
    if !reading {
        // The body is read here, once, and handed on unchanged.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return refused(
                lang,
                lang.t(
                    "The form is too large: nothing was changed.",
                    "Das Formular ist zu groß: nichts wurde geändert.",
                ),
            );
        };
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let presented = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        use subtle::ConstantTimeEq;
        if !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return refused(
                lang,
                lang.t(
                    "The form's security token is missing or stale (reload the page): nothing was changed.",
                    "Das Sicherheitstoken des Formulars fehlt oder ist veraltet (Seite neu laden): nichts wurde geändert.",
                ),
            );
        }
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    req.extensions_mut().insert(session.caller());
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// The browser says the request comes from another site (`Sec-Fetch-Site`;
/// absent from clients that are not browsers, whose POSTs the session and
/// CSRF token check alone).
fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
}

/// A 403 page.
fn refused(lang: Lang, message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        bare(
            lang,
            lang.t("Refused", "Abgelehnt"),
            html! { p.error role="alert" { (message) } },
        ),
    )
        .into_response()
}

/// Security headers on every `/ui` answer.
async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

// ---------------------------------------------------------------- router

pub(super) fn router(app: AppState) -> axum::Router<AppState> {
    let read = axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/logout", post(logout))
        .route("/ui/plans", get(pages::plans))
        .route("/ui/plans/{id}", get(pages::plan))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/explain", get(pages::explain))
        .route("/ui/holds", get(pages::holds))
        .route("/ui/requests", get(pages::requests))
        .route("/ui/requests/{id}", get(pages::request))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/audit/export", get(pages::audit_download))
        .route("/ui/{*rest}", get(not_found))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Read),
            require,
        ));
    let operate = axum::Router::new()
        .route("/ui/holds", post(pages::hold_add))
        .route("/ui/holds/lift", post(pages::hold_lift))
        .route("/ui/requests", post(pages::request_create))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Operate),
            require,
        ));
    let admin = axum::Router::new()
        .route("/ui/plans/{id}/approve", post(pages::approve))
        .route("/ui/requests/{id}/export", get(pages::export))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Admin),
            require,
        ));
    let open = axum::Router::new()
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/lang/{lang}", get(switch_lang))
        .route("/ui/style.css", get(style));
    read.merge(operate)
        .merge(admin)
        .merge(open)
        .route_layer(middleware::from_fn(headers))
}

async fn not_found(axum::Extension(s): axum::Extension<Session>) -> Response {
    error_page(
        &s,
        Nav::Overview,
        ApiError::not_found(s.lang.t(
            "No such page of the dashboard.",
            "Diese Seite gibt es nicht.",
        )),
    )
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

// ---------------------------------------------------------------- sign-in

async fn login_form(headers: axum::http::HeaderMap) -> Response {
    login_page(Lang::of(&headers), StatusCode::OK, None)
}

/// The language switch: a cookie for `/ui`, then the overview.
async fn switch_lang(axum::extract::Path(lang): axum::extract::Path<String>) -> Response {
    let lang = Lang::parse(&lang).unwrap_or(Lang::En);
    let mut r = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={}; Secure; SameSite=Strict; Path=/ui; Max-Age=31536000",
        lang.code()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn login_page(l: Lang, status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        h1 { (l.t("Sign in", "Anmelden")) }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action="/ui/login" {
            label for="token" { (l.t("API token", "API-Token")) }
            input #token type="password" name="token" autocomplete="off" required;
            button type="submit" { (l.t("Sign in", "Anmelden")) }
        }
        p.hint { (l.t("The token of a ", "Das Token eines ")) code { "[[serve.token]]" } (l.t(" in lethe's configuration; its scope (read, operate, admin) decides what you may do.", " in der Konfiguration von lethe; sein Bereich (read, operate, admin) bestimmt, was Sie tun dürfen.")) }
    };
    (status, bare(l, l.t("Sign in", "Anmelden"), body)).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let l = Lang::of(&headers);
    // A sign-in posted from another site would sign the browser in with
    // someone else's token.
    if cross_site(&headers) {
        return login_page(
            l,
            StatusCode::FORBIDDEN,
            Some(l.t(
                "A sign-in from another site is refused.",
                "Eine Anmeldung von einer anderen Website wird abgelehnt.",
            )),
        );
    }
    let Ok(axum::Form(f)) = form else {
        return login_page(
            l,
            StatusCode::BAD_REQUEST,
            Some(l.t("Enter a token.", "Geben Sie ein Token ein.")),
        );
    };
    let Some(t) = super::known_token(&app.tokens, f.token.trim()) else {
        return login_page(
            l,
            StatusCode::UNAUTHORIZED,
            Some(l.t("Unknown token.", "Unbekanntes Token.")),
        );
    };
    let id = app.ui.sessions.open(&t.name, t.scope);
    let cookie = format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/ui");
    let mut r = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(app): State<AppState>, req: Request) -> Response {
    if let Some(id) = session_id(req.headers()) {
        app.ui.sessions.close(&id);
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "lethe_session=; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age=0",
        ),
    );
    r
}

// ---------------------------------------------------------------- layout

/// A page with no navigation (sign-in, refusals).
fn bare(l: Lang, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · lethe" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header { a.brand href="/ui/" { "lethe" } (switch(l)) }
                main { (body) }
            }
        }
    }
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Plans,
    Explain,
    Holds,
    Requests,
    Audit,
}

/// A page with the navigation, the signed-in token and sign-out.
fn layout(s: &Session, nav: Nav, title: &str, refresh: bool, body: Markup) -> Markup {
    let l = s.lang;
    let items = [
        (Nav::Overview, "/ui/", l.t("Overview", "Übersicht")),
        (Nav::Plans, "/ui/plans", l.t("Plans", "Pläne")),
        (Nav::Explain, "/ui/explain", l.t("Explain", "Erklären")),
        (Nav::Holds, "/ui/holds", l.t("Holds", "Sperren")),
        (Nav::Requests, "/ui/requests", l.t("Requests", "Anträge")),
        (Nav::Audit, "/ui/audit", "Audit"),
    ];
    html! {
        (DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="1"; }
                title { (title) " · lethe" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header {
                    a.brand href="/ui/" { "lethe" }
                    nav aria-label=(l.t("Main", "Hauptmenü")) {
                        ul {
                            @for (n, href, label) in items {
                                li {
                                    @if n == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.signout method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        span.who { (s.name) " (" (s.scope.as_str()) ")" }
                        button type="submit" { (l.t("Sign out", "Abmelden")) }
                    }
                    (switch(l))
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The link to the other language.
fn switch(l: Lang) -> Markup {
    html! {
        @match l {
            Lang::En => a.lang href="/ui/lang/de" lang="de" hreflang="de" { "Deutsch" },
            Lang::De => a.lang href="/ui/lang/en" lang="en" hreflang="en" { "English" },
        }
    }
}

/// An API error as a page of its status.
fn error_page(s: &Session, nav: Nav, e: ApiError) -> Response {
    (
        e.status,
        layout(
            s,
            nav,
            s.lang.t("Error", "Fehler"),
            false,
            html! { p.error role="alert" { (e.message) } },
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_its_expiry_and_at_sign_out() {
        let sessions = Sessions::default();
        let id = sessions.open("dpo", Scope::Admin);
        let s = sessions.get(&id).expect("open");
        assert_eq!((s.name.as_str(), s.scope), ("dpo", Scope::Admin));
        assert_eq!(s.csrf.len(), 64);
        assert!(sessions.get("not-an-id").is_none());
        // Kept by digest, never by the id itself.
        assert!(!sessions.lock().contains_key(id.as_bytes()));

        for s in sessions.lock().values_mut() {
            s.expires = Instant::now() - Duration::from_secs(1);
        }
        assert!(sessions.get(&id).is_none(), "expired");
        assert!(sessions.lock().is_empty(), "and forgotten");

        let id = sessions.open("dpo", Scope::Admin);
        sessions.close(&id);
        assert!(sessions.get(&id).is_none(), "signed out");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lethe_session=abc; b=2"),
        );
        assert_eq!(session_id(&h).as_deref(), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("lethe_sessionx=abc"),
        );
        assert_eq!(session_id(&h), None);
    }

    #[test]
    fn cross_site_is_what_the_browser_says_it_is() {
        let mut h = axum::http::HeaderMap::new();
        assert!(!cross_site(&h), "not a browser");
        for (v, cross) in [
            ("same-origin", false),
            ("none", false),
            ("same-site", true),
            ("cross-site", true),
        ] {
            h.insert("sec-fetch-site", HeaderValue::from_static(v));
            assert_eq!(cross_site(&h), cross, "{v}");
        }
    }
}
