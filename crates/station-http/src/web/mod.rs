//! The web app: sign-in with one-time links, sessions, and the pages, served
//! from the binary with their assets embedded (no CDN, no build step).
//!
//! Pages are small server-rendered shells — navigation, the account's name,
//! the session's CSRF token in `<meta name="csrf-token">`, and which page it is
//! in `<body data-page>` — that the embedded scripts fill by calling the REST
//! API with `fetch`. The scripts send the CSRF token as `X-CSRF-Token` on every
//! state-changing request. No inline scripts or event handlers, so the pages
//! work under a CSP of `script-src 'self'`.
//!
//! Sessions: `GET /login?token=…` redeems a sign-in link and sets the
//! `station_session` cookie (HttpOnly, SameSite=Lax, Path=/, and Secure when
//! the public URL is https). A page requested without an open session
//! redirects to `/signin?next=…`, which explains how to get a link and
//! remembers the page (a `station_next` cookie, same-site paths only), so the
//! link lands there. `POST /logout` (CSRF-checked) ends the session.

// Helpers return `Result<_, Response>` as axum's extractors do.
#![allow(clippy::result_large_err)]

mod assets;
mod wallet_sign_in;

use std::time::Duration;

use crate::extract::{Path, Query};
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use station_core::AccountRow;
use station_core::Station;
use station_core::identity::{AuthError, SessionInfo};

pub use crate::account::SESSION_COOKIE;
use crate::account::session_cookie;
use station_core::identity::same_secret;

/// The Content-Security-Policy of every page: scripts, styles and
/// connections only from Station itself; images also from `data:`/`blob:`
/// (upload previews); no framing.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Routes of the web app: pages, sign-in and sign-out, assets.
pub fn routes() -> Router<Station> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(signin))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route("/signin/wallet/challenge", post(wallet_sign_in::challenge))
        .route("/signin/wallet/verify", post(wallet_sign_in::verify))
        .route("/assets/{file}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .route("/tools", get(|s: WebSession| async move { page(&s, Page::simple("tools", "Tools")) }))
        .route("/tools/{id}", get(tool_page))
        .route("/jobs/{id}", get(job_page))
        .route("/history", get(|s: WebSession| async move { page(&s, Page::simple("history", "History")) }))
        .route("/settings", get(|s: WebSession| async move { page(&s, Page::simple("settings", "Settings")) }))
        .route("/points", get(|s: WebSession| async move { page(&s, Page::simple("points", "Points")) }))
        .route("/keys", get(|s: WebSession| async move { page(&s, Page::simple("keys", "API keys")) }))
        .route("/admin", get(admin_page))
        .route("/wallet", get(|s: WebSession| async move { page(&s, Page::simple("wallet", "Wallet")) }))
        .route("/training", get(|s: WebSession| async move { page(&s, Page::simple("training", "Training")) }))
        .route("/training/{slug}", get(dataset_page))
        .route("/spells", get(|s: WebSession| async move { page(&s, Page::simple("spells", "Spells")) }))
        .route("/collections", get(|s: WebSession| async move { page(&s, Page::simple("collections", "Collections")) }))
        .route("/collections/{id}", get(collection_page))
        .route("/cook", get(|s: WebSession| async move { page(&s, Page::simple("cooks", "Cook")) }))
        .route("/collections/{id}/cook", get(cook_page))
        .route("/collections/{id}/review", get(review_page))
        .route("/c/{key}", get(shared_page))
}

/// A signed-in visitor: the account, the session id (from the cookie) and its
/// CSRF token. Pages take it as an argument; without an open session the
/// visitor is redirected to `/signin` (with `reason=expired` when a cookie
/// was sent but its session is over).
#[derive(Debug, Clone)]
pub struct WebSession {
    /// The signed-in account.
    pub account: AccountRow,
    /// The session id from the cookie.
    pub session_id: String,
    /// The session's details, its CSRF token among them.
    pub info: SessionInfo,
    /// This Station takes crypto deposits (some wallet chain is set up).
    pub wallets: bool,
}

impl FromRequestParts<Station> for WebSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, station: &Station) -> Result<Self, Self::Rejection> {
        let next = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let Some(session_id) = session_cookie(&parts.headers) else {
            return Err(to_signin("required", &next));
        };
        match station.session_account(&session_id).await {
            Ok((account, info)) => {
                Ok(WebSession { account, session_id, info, wallets: !station.wallet_chains().is_empty() })
            }
            Err(AuthError::Suspended(_)) => Err(to_signin("suspended", &next)),
            Err(AuthError::Store(e)) => {
                tracing::error!(error = %e, "session lookup failed");
                Err(error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Station cannot read its database right now; try again in a moment.",
                ))
            }
            Err(_) => Err(to_signin("expired", &next)),
        }
    }
}

fn to_signin(reason: &str, next: &str) -> Response {
    let next = safe_next(next).unwrap_or("/");
    Redirect::to(&format!("/signin?reason={reason}&next={}", encode(next))).into_response()
}

/// The cookie that carries `next` from `/signin` to `/login`: the sign-in
/// link arrives by chat or from the operator and cannot know the page.
pub const NEXT_COOKIE: &str = "station_next";

/// How long `/signin` remembers the page to return to.
const NEXT_TTL_SECS: i64 = 3600;

/// `next` if it is a path on this site to send a browser to after sign-in:
/// it starts with one `/` and holds only printable ASCII without `\`, so no
/// `//host`, `/\host`, scheme, or control or space character (which URL
/// parsers drop or fold, turning a path into another host) gets through.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.len() <= 2048
        && next.starts_with('/')
        && !next.starts_with("//")
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    ok.then_some(next)
}

/// Undoes [`encode`] (`None` for broken escapes or non-UTF-8).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of cookie `name`, if sent.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// `Set-Cookie` for the page to return to (`None`: clear it).
fn next_cookie_header(station: &Station, next: Option<&str>) -> HeaderValue {
    let secure = if secure(station) { "; Secure" } else { "" };
    let (value, age) = match next {
        Some(n) => (encode(n), NEXT_TTL_SECS),
        None => (String::new(), 0),
    };
    let cookie = format!("{NEXT_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={age}{secure}");
    HeaderValue::from_str(&cookie).expect("encoded cookie text is ASCII")
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Escapes text for HTML content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether cookies must be `Secure`: the public URL is https.
fn secure(station: &Station) -> bool {
    station.config.public_url().starts_with("https://")
}

fn session_cookie_header(station: &Station, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if secure(station) { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&cookie).expect("cookie text is ASCII")
}

/// `GET /`: the tool gallery when signed in, else the sign-in help.
async fn home(State(station): State<Station>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers)
        && station.session_account(&id).await.is_ok()
    {
        return Redirect::to("/tools").into_response();
    }
    signin_page(&station, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct SigninQuery {
    reason: Option<String>,
    next: Option<String>,
}

/// `GET /signin`: how to get a sign-in link, and why you are here. A safe
/// `next` is remembered in a cookie for an hour, so the link (opened in this
/// browser) lands on the page that asked for a sign-in.
async fn signin(State(station): State<Station>, Query(q): Query<SigninQuery>) -> Response {
    let reason = match q.reason.as_deref() {
        Some("expired") => Some("Your session has ended. Sign in again with a new link."),
        Some("required") => Some("Please sign in to see that page."),
        Some("signed-out") => Some("You are signed out."),
        Some("suspended") => Some("This account is suspended; ask the operator."),
        _ => None,
    };
    let mut r = signin_page(&station, StatusCode::OK, reason);
    if let Some(next) = q.next.as_deref().and_then(safe_next).filter(|n| *n != "/") {
        r.headers_mut().append(header::SET_COOKIE, next_cookie_header(&station, Some(next)));
    }
    r
}

fn signin_page(station: &Station, status: StatusCode, message: Option<&str>) -> Response {
    let message = message.map(|m| format!(r#"<p class="notice" role="status">{}</p>"#, esc(m))).unwrap_or_default();
    let wallet = wallet_sign_in_section(station);
    let body = format!(
        r#"<main id="main" class="narrow">
<h1>Sign in to Station</h1>
{message}
<p>Station signs you in with a one-time link instead of a password.</p>
<ul class="steps">
<li>In a chat with the Station bot (Telegram or Discord), send <code>/web</code>: the bot answers with your link.</li>
<li>Operators: run <code>station users login-link NAME</code> on the server (or <code>station users create --admin NAME</code> for the first administrator).</li>
</ul>
<p>A link works once, for 15 minutes. Opening it signs this browser in.</p>
{wallet}</main>"#
    );
    shell(status, "Sign in", "signin", "", None, &body)
}

/// The "Sign in with your wallet" part of the sign-in page, when
/// `web.wallet_sign_in` is on and chains are configured (the page's script
/// does the rest, see wallet.js).
fn wallet_sign_in_section(station: &Station) -> String {
    let chains = station.deposit_info();
    if !station.config.web.wallet_sign_in || chains.is_empty() {
        return String::new();
    }
    let options: String =
        chains.iter().map(|c| format!(r#"<option value="{}">{}</option>"#, c.chain_id, esc(&c.name))).collect();
    let hidden = if chains.len() == 1 { " hidden" } else { "" };
    format!(
        r#"<section class="card" id="wallet-sign-in">
<h2>Or sign in with your wallet</h2>
<p>If you have linked a wallet to your account (on the Wallet page), your browser wallet can sign you in: it asks you to sign a message, which costs nothing.</p>
<div class="field"{hidden}><label for="ws-chain">Chain</label><select id="ws-chain">{options}</select></div>
<p><button type="button" class="primary" id="ws-connect">Sign in with your wallet</button></p>
<p id="ws-status" role="status"></p>
</section>
"#
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
    next: Option<String>,
}

/// `GET /login?token=…[&next=/path]`: redeems a sign-in link, opens a
/// session and sends the browser on: to `next` (the query's, else the one
/// `/signin` remembered) when it is a path on this site, else to the tool
/// gallery.
async fn login(State(station): State<Station>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let Some(token) = q.token.filter(|t| !t.trim().is_empty()) else {
        return signin_page(
            &station,
            StatusCode::BAD_REQUEST,
            Some("This sign-in link has no token. Copy the whole link, or ask for a new one."),
        );
    };
    let account = match station.redeem_login_token(&token).await {
        Ok(a) => a,
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "sign-in failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Station cannot read its database right now; try the link again in a moment.",
            );
        }
        Err(e) => {
            let why = match e {
                AuthError::Used(_) => "This sign-in link was already used: each link works once.",
                AuthError::Expired(_) => "This sign-in link has expired: links work for 15 minutes.",
                AuthError::Suspended(_) => "This account is suspended; ask the operator.",
                _ => "This sign-in link is not valid. Check that you copied all of it.",
            };
            return signin_page(
                &station,
                StatusCode::UNAUTHORIZED,
                Some(&format!("{why} Get a new one as described below.")),
            );
        }
    };
    let ttl = Duration::from_secs(station.config.web.session_hours.max(1) * 3600);
    match station.create_session(&account, ttl).await {
        Ok((id, _csrf, _expires)) => {
            let remembered = cookie(&headers, NEXT_COOKIE).and_then(|c| decode(&c));
            let next = q.next.as_deref().and_then(safe_next).or(remembered.as_deref().and_then(safe_next));
            let mut r = Redirect::to(next.unwrap_or("/tools")).into_response();
            r.headers_mut().insert(header::SET_COOKIE, session_cookie_header(&station, &id, ttl.as_secs() as i64));
            if remembered.is_some() {
                r.headers_mut().append(header::SET_COOKIE, next_cookie_header(&station, None));
            }
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "creating a session failed");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Station could not start your session; try the link again in a moment.",
            )
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

/// `POST /logout`: ends the session (the CSRF token must come as the `csrf`
/// form field or the `X-CSRF-Token` header) and clears the cookie.
async fn logout(
    State(station): State<Station>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let Some(id) = session_cookie(&headers) else {
        return Redirect::to("/signin?reason=signed-out").into_response();
    };
    let sent = form
        .ok()
        .and_then(|Form(f)| f.csrf)
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string));
    match station.session_account(&id).await {
        Ok((_, info)) => {
            if !sent.is_some_and(|s| same_secret(s.as_bytes(), info.csrf_token.as_bytes())) {
                return error_page(
                    StatusCode::FORBIDDEN,
                    "Sign-out refused: the request did not carry this page's CSRF token. Reload the page and use its Sign out button.",
                );
            }
            if let Err(e) = station.end_session(&id).await {
                tracing::error!(error = %e, "ending a session failed");
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Station could not sign you out; try again in a moment.",
                );
            }
        }
        // Already over: just clear the cookie.
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "session lookup failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Station cannot read its database right now; try again.",
            );
        }
        Err(_) => {}
    }
    let mut r = Redirect::to("/signin?reason=signed-out").into_response();
    r.headers_mut().insert(header::SET_COOKIE, session_cookie_header(&station, "", 0));
    r
}

/// What the shell of one page carries.
struct Page {
    name: &'static str,
    title: String,
    /// Extra `data-*` attributes on `<body>` (already escaped).
    data: String,
}

impl Page {
    fn simple(name: &'static str, title: &str) -> Page {
        Page { name, title: title.into(), data: String::new() }
    }
}

/// Tool and job ids are the API's to judge; here they only must be plain.
fn plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

async fn tool_page(s: WebSession, Path(id): Path<String>) -> Response {
    if !plain_id(&id) {
        return error_page(StatusCode::NOT_FOUND, "No such tool. The gallery lists them.");
    }
    page(&s, Page { name: "tool", title: "Tool".into(), data: format!(r#" data-tool="{}""#, esc(&id)) })
}

async fn job_page(s: WebSession, Path(id): Path<String>) -> Response {
    if !plain_id(&id) {
        return error_page(StatusCode::NOT_FOUND, "No such generation. Your history lists them.");
    }
    page(&s, Page { name: "job", title: "Generation".into(), data: format!(r#" data-job="{}""#, esc(&id)) })
}

async fn collection_page(s: WebSession, Path(id): Path<String>) -> Response {
    if !plain_id(&id) {
        return error_page(StatusCode::NOT_FOUND, "No such collection. Your collections page lists them.");
    }
    let data = format!(r#" data-collection="{}""#, esc(&id));
    page(&s, Page { name: "collection", title: "Collection".into(), data })
}

/// A collection's recipe editor, cook controls and live progress.
async fn cook_page(s: WebSession, Path(id): Path<String>) -> Response {
    if !plain_id(&id) {
        return error_page(StatusCode::NOT_FOUND, "No such collection. Your cooks page lists them.");
    }
    let data = format!(r#" data-collection="{}""#, esc(&id));
    page(&s, Page { name: "cook", title: "Cook".into(), data })
}

/// The review grid of a collection's cook (the owner and its reviewers).
async fn review_page(s: WebSession, Path(id): Path<String>) -> Response {
    if !plain_id(&id) {
        return error_page(StatusCode::NOT_FOUND, "No such collection. Your cooks page lists them.");
    }
    let data = format!(r#" data-collection="{}""#, esc(&id));
    page(&s, Page { name: "review", title: "Review".into(), data })
}

async fn dataset_page(s: WebSession, Path(slug): Path<String>) -> Response {
    if !plain_id(&slug) {
        return error_page(StatusCode::NOT_FOUND, "No such dataset. Your training page lists them.");
    }
    let data = format!(r#" data-dataset="{}""#, esc(&slug));
    page(&s, Page { name: "dataset", title: "Training".into(), data })
}

/// The public page of a collection (a share link's token, or the id of an
/// unlisted or public collection): no sign-in. The script reads the
/// collection through the API, which answers a clear 404 for an expired or
/// revoked link; an unknown key is answered 404 here already.
async fn shared_page(State(station): State<Station>, Path(key): Path<String>) -> Response {
    if !plain_id(&key) {
        return error_page(StatusCode::NOT_FOUND, "No such collection.");
    }
    if let Err(e) = station.shared_collection(&key).await {
        let message = match e {
            station_core::CollectionError::Gone(m) => m,
            station_core::CollectionError::NotFound { .. } => {
                "No such collection: the link is wrong, or the collection is private.".to_string()
            }
            e => {
                tracing::error!(error = %e, "shared collection lookup failed");
                return error_page(StatusCode::SERVICE_UNAVAILABLE, "Station cannot show this right now; try again.");
            }
        };
        return error_page(StatusCode::NOT_FOUND, &message);
    }
    let body = r#"<header class="top"><a class="brand" href="/">Station</a></header>
<main id="main" aria-live="polite"><p class="loading">Loading…</p></main>"#;
    let data = format!(r#" data-key="{}""#, esc(&key));
    shell(StatusCode::OK, "Collection", "shared", &data, None, body)
}

async fn admin_page(s: WebSession) -> Response {
    if !s.account.is_admin() {
        return error_page(StatusCode::FORBIDDEN, "The admin dashboard is for administrators only.");
    }
    page(&s, Page::simple("admin", "Admin"))
}

/// A signed-in page: navigation, account, sign-out form, and an empty
/// `<main>` the page's script fills.
fn page(s: &WebSession, p: Page) -> Response {
    let admin = s.account.is_admin();
    let link = |href: &str, name: &str, label: &str| {
        // A tool's page belongs to the Tools tab, a generation's to History.
        let section = match p.name {
            "tool" => "tools",
            "job" => "history",
            "collection" => "collections",
            "cook" | "review" => "cooks",
            "dataset" => "training",
            other => other,
        };
        let current = if section == name { r#" aria-current="page""# } else { "" };
        format!(r#"<a href="{href}"{current}>{label}</a>"#)
    };
    let mut nav = [
        link("/tools", "tools", "Tools"),
        link("/history", "history", "History"),
        link("/collections", "collections", "Collections"),
        link("/cook", "cooks", "Cook"),
        link("/training", "training", "Training"),
        link("/spells", "spells", "Spells"),
        link("/points", "points", "Points"),
        link("/settings", "settings", "Settings"),
        link("/keys", "keys", "API keys"),
    ]
    .join("");
    if s.wallets {
        nav.push_str(&link("/wallet", "wallet", "Wallet"));
    }
    if admin {
        nav.push_str(&link("/admin", "admin", "Admin"));
    }
    let header = format!(
        r#"<header class="top"><a class="brand" href="/tools">Station</a>
<nav aria-label="Main">{nav}</nav>
<div class="who"><span class="name">{name}</span> · <a href="/points" id="balance" aria-label="Points balance">… points</a>
<form method="post" action="/logout" class="signout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form></div>
</header>"#,
        name = esc(&s.account.name),
        csrf = esc(&s.info.csrf_token),
    );
    let body = format!(
        "{header}\n<main id=\"main\" aria-live=\"polite\"><p class=\"loading\">Loading…</p></main>\n<div id=\"toast\" role=\"status\" aria-live=\"polite\"></div>"
    );
    let data =
        format!(r#"{} data-role="{}" data-account="{}""#, p.data, esc(s.account.role.as_str()), esc(&s.account.id));
    shell(StatusCode::OK, &p.title, p.name, &data, Some(&s.info.csrf_token), &body)
}

/// A plain error page (no session needed).
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        r#"<main id="main" class="narrow"><h1>{}</h1><p>{}</p><p><a href="/">Back to Station</a></p></main>"#,
        status.canonical_reason().unwrap_or("Error"),
        esc(message)
    );
    shell(status, "Error", "error", "", None, &body)
}

/// The HTML document around a page body, with the CSP and no caching.
fn shell(status: StatusCode, title: &str, name: &str, data: &str, csrf: Option<&str>, body: &str) -> Response {
    let csrf = csrf.map(|c| format!(r#"<meta name="csrf-token" content="{}">"#, esc(c))).unwrap_or_default();
    let v = assets::VERSION;
    let html = format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Station</title>
{csrf}
<link rel="icon" href="/assets/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/app.css?v={v}">
<script type="module" src="/assets/main.js?v={v}"></script>
</head>
<body data-page="{name}"{data}>
<a class="skip" href="#main">Skip to content</a>
{body}
</body>
</html>
"##,
        title = esc(title),
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}
