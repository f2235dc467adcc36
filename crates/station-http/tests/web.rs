//! The web app's sign-in over real HTTP: one-time login links, the session
//! cookie's flags, pages behind the session, CSRF-checked sign-out, expired
//! sessions, the admin page, embedded assets and the pages' security headers —
//! on SQLite and (when configured) PostgreSQL.

use station_core::Role;
use std::time::Duration;

use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode, redirect};
use station_core::{Config, Station};
use station_testkit::testing::{self, TestDb};

struct Server {
    base: String,
    station: Station,
    http: Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(db: &TestDb, public_url: Option<&str>) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.web.public_url = public_url.map(str::to_string);
    let station = Station::with_store(config, db.store.clone()).unwrap().0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(station_http::serve(listener, station.clone(), axum::Router::new(), async move {
        let _ = stopped.await;
    }));
    let http = Client::builder().redirect(redirect::Policy::none()).build().unwrap();
    Server { base, station, http, _dir: dir, _stop: stop }
}

impl Server {
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.unwrap()
    }

    /// Signs `account` in through a fresh login link; returns the `name=value` cookie and the Set-Cookie text.
    async fn sign_in(&self, account: &station_core::AccountRow) -> (String, String) {
        let (token, _) = self.station.create_login_token(account).await.unwrap();
        let r = self.get(&format!("/login?token={token}"), None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "a good link redirects");
        assert_eq!(r.headers()[LOCATION], "/tools");
        let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
        (set.split(';').next().unwrap().to_string(), set)
    }
}

/// The CSRF token in a page's `<meta name="csrf-token">`.
fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf-token" content=""#).expect("page carries a CSRF token") + 27;
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_link_opens_a_session_once_and_logout_needs_the_csrf_token() {
    for db in testing::all().await {
        let kind = db.kind;
        let s = serve(&db, None).await;
        let alice = s.station.account("telegram", "1", "alice").await.unwrap();

        // Without a session, pages send you to the sign-in help.
        let r = s.get("/tools", None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{kind:?}");
        assert_eq!(r.headers()[LOCATION], "/signin?reason=required&next=/tools");
        let help = s.get("/signin?reason=required", None).await.text().await.unwrap();
        assert!(help.contains("/web") && help.contains("station users login-link"), "{help}");

        let (token, _) = s.station.create_login_token(&alice).await.unwrap();
        let r = s.get(&format!("/login?token={token}"), None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
        for flag in ["station_session=", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set.contains(flag), "{kind:?}: cookie {set} lacks {flag}");
        }
        assert!(!set.contains("Secure"), "plain http public URL: no Secure flag ({set})");
        let cookie = set.split(';').next().unwrap().to_string();

        // The link works once.
        let again = s.get(&format!("/login?token={token}"), None).await;
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
        assert!(again.headers().get(SET_COOKIE).is_none());
        assert!(again.text().await.unwrap().contains("already used"));
        let bad = s.get("/login?token=nonsense", None).await;
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

        // Signed in: the page carries the account's name, a CSRF token and a strict CSP.
        let page = s.get("/tools", Some(&cookie)).await;
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        let html = page.text().await.unwrap();
        assert!(html.contains("alice") && html.contains(r#"data-page="tools""#));
        assert!(!html.contains("<script>") && !html.contains(" onclick="), "no inline scripts or handlers");
        let csrf = csrf_of(&html);
        assert!(!html.contains(r#"href="/admin""#), "no admin link for a user");

        // Sign-out without the token is refused and the session stays open.
        let post = |body: String, c: &str| {
            s.http
                .post(format!("{}/logout", s.base))
                .header(COOKIE, c)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let r = post(String::new(), &cookie).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{kind:?}");
        let r = post("csrf=wrong".into(), &cookie).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(s.get("/tools", Some(&cookie)).await.status(), StatusCode::OK);

        // With it, the session ends and the cookie is cleared.
        let r = post(format!("csrf={csrf}"), &cookie).await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], "/signin?reason=signed-out");
        assert!(r.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
        let r = s.get("/history", Some(&cookie)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], "/signin?reason=expired&next=/history");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_redirect_and_the_admin_page_is_for_admins() {
    for db in testing::all().await {
        let kind = db.kind;
        let s = serve(&db, Some("https://station.example.com/")).await;
        let bob = s.station.account("telegram", "2", "bob").await.unwrap();
        let root = s.station.account("local", "root", "root").await.unwrap();
        s.station.set_account_role(&root.id, Role::Admin, &station_core::audit::Actor::operator("test")).await.unwrap();
        let root = s.station.account_by_id(&root.id).await.unwrap().unwrap();

        // https public URL: the cookie is Secure.
        let (bob_cookie, set) = s.sign_in(&bob).await;
        assert!(set.contains("; Secure"), "{kind:?}: {set}");
        let r = s.get("/admin", Some(&bob_cookie)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{kind:?}");
        assert!(r.text().await.unwrap().contains("administrators only"));

        let (root_cookie, _) = s.sign_in(&root).await;
        let r = s.get("/admin", Some(&root_cookie)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let html = r.text().await.unwrap();
        assert!(html.contains(r#"data-page="admin""#) && html.contains(r#"href="/admin""#));

        // A session past its expiry sends the visitor to sign in again.
        let (short, _, _) = s.station.create_session(&bob, Duration::from_millis(50)).await.unwrap();
        let cookie = format!("station_session={short}");
        tokio::time::sleep(Duration::from_millis(120)).await;
        let r = s.get("/tools/blur?x=1", Some(&cookie)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], "/signin?reason=expired&next=/tools/blur%3Fx%3D1");
        let help = s.get("/signin?reason=expired", None).await.text().await.unwrap();
        assert!(help.contains("session has ended"));

        // Home: the gallery when signed in, the sign-in help otherwise.
        assert_eq!(s.get("/", Some(&bob_cookie)).await.headers()[LOCATION], "/tools");
        assert!(s.get("/", None).await.text().await.unwrap().contains("Sign in to Station"));

        // A suspended account's session no longer opens pages.
        s.station.set_account_suspended(&bob.id, true, &station_core::audit::Actor::operator("test")).await.unwrap();
        let r = s.get("/tools", Some(&bob_cookie)).await;
        assert_eq!(r.headers()[LOCATION], "/signin?reason=suspended&next=/tools");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_embedded_with_their_types() {
    let db = testing::sqlite().await;
    let s = serve(&db, None).await;
    for (file, mime) in [
        ("main.js", "text/javascript"),
        ("app.js", "text/javascript"),
        ("pages.js", "text/javascript"),
        ("app.css", "text/css"),
    ] {
        let r = s.get(&format!("/assets/{file}"), None).await;
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        assert!(r.headers()[CONTENT_TYPE].to_str().unwrap().starts_with(mime), "{file}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    // Revalidation: the ETag answers 304.
    let r = s.get("/assets/main.js", None).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let again = s.http.get(format!("{}/assets/main.js", s.base)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(s.get("/assets/nope.js", None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.get("/assets/..%2Fsrc%2Flib.rs", None).await.status(), StatusCode::NOT_FOUND);
}

/// Every `Set-Cookie` of a response.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_returns_to_the_page_that_asked_and_never_to_another_site() {
    for db in testing::all().await {
        let kind = db.kind;
        let s = serve(&db, None).await;
        let alice = s.station.account("telegram", "1", "alice").await.unwrap();

        // Signed out on a deep page: to the sign-in help, which remembers the page.
        let r = s.get("/jobs/0123abc?tab=info", None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{kind:?}");
        let signin = r.headers()[LOCATION].to_str().unwrap().to_string();
        assert_eq!(signin, "/signin?reason=required&next=/jobs/0123abc%3Ftab%3Dinfo");
        let r = s.get(&signin, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let remembered = set_cookies(&r).into_iter().find(|c| c.starts_with("station_next=")).expect("next kept");
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
            assert!(remembered.contains(flag), "{kind:?}: {remembered} lacks {flag}");
        }
        let next_cookie = remembered.split(';').next().unwrap().to_string();

        // The one-time link, opened in this browser, lands there and forgets it.
        let (token, _) = s.station.create_login_token(&alice).await.unwrap();
        let r = s.get(&format!("/login?token={token}"), Some(&next_cookie)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{kind:?}");
        assert_eq!(r.headers()[LOCATION], "/jobs/0123abc?tab=info", "{kind:?}");
        let cookies = set_cookies(&r);
        assert!(cookies.iter().any(|c| c.starts_with("station_session=") && !c.contains("Max-Age=0")), "{cookies:?}");
        assert!(cookies.iter().any(|c| c.starts_with("station_next=;") && c.contains("Max-Age=0")), "{cookies:?}");
        let session = cookies.iter().find(|c| c.starts_with("station_session=")).unwrap();
        let session = session.split(';').next().unwrap();
        assert_eq!(s.get("/jobs/0123abc?tab=info", Some(session)).await.status(), StatusCode::OK, "{kind:?}");

        // A link may also say where to go.
        let (token, _) = s.station.create_login_token(&alice).await.unwrap();
        let r = s.get(&format!("/login?token={token}&next=%2Fhistory"), None).await;
        assert_eq!(r.headers()[LOCATION], "/history", "{kind:?}");

        // Open redirects: other hosts, schemes, backslashes, characters browsers
        // drop or fold — neither remembered, nor followed from the link or a forged cookie.
        for evil in [
            "//evil.example/x",
            "https://evil.example/",
            "http:evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/ /evil.example",
            "/\n/evil.example",
            "",
        ] {
            let q = urlencode(evil);
            let r = s.get(&format!("/signin?reason=required&next={q}"), None).await;
            assert_eq!(r.status(), StatusCode::OK, "{kind:?}: {evil:?}");
            assert!(set_cookies(&r).iter().all(|c| !c.starts_with("station_next")), "{kind:?}: {evil:?} remembered");

            let (token, _) = s.station.create_login_token(&alice).await.unwrap();
            let r = s.get(&format!("/login?token={token}&next={q}"), None).await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{kind:?}: {evil:?}");
            assert_eq!(r.headers()[LOCATION], "/tools", "{kind:?}: next={evil:?} followed");

            let (token, _) = s.station.create_login_token(&alice).await.unwrap();
            let forged = format!("station_next={q}");
            let r = s.get(&format!("/login?token={token}"), Some(&forged)).await;
            assert_eq!(r.headers()[LOCATION], "/tools", "{kind:?}: cookie {evil:?} followed");
        }
    }
}

/// Percent-encodes every byte but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_ends_the_session_on_the_server_and_the_api_refuses_ended_or_expired_ones() {
    for db in testing::all().await {
        let kind = db.kind;
        let s = serve(&db, None).await;
        let alice = s.station.account("telegram", "1", "alice").await.unwrap();
        let (cookie, _) = s.sign_in(&alice).await;
        let session_id = cookie.strip_prefix("station_session=").unwrap().to_string();
        let api = |c: String| s.http.get(format!("{}/api/v1/points", s.base)).header(COOKIE, c).send();
        assert_eq!(api(cookie.clone()).await.unwrap().status(), StatusCode::OK, "{kind:?}");
        let html = s.get("/settings", Some(&cookie)).await.text().await.unwrap();
        let csrf = csrf_of(&html);

        let r = s
            .http
            .post(format!("{}/logout", s.base))
            .header(COOKIE, &cookie)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{kind:?}");
        // The server forgot the session: a browser that kept the cookie gets nothing with it.
        assert!(s.station.session_account(&session_id).await.is_err(), "{kind:?}: session still open");
        let r = api(cookie.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{kind:?}");
        let r = s
            .http
            .put(format!("{}/api/v1/settings/resize", s.base))
            .header(COOKIE, &cookie)
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({"params": {"width": 3}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{kind:?}: a write with the old token");
        assert_eq!(
            s.get("/settings", Some(&cookie)).await.headers()[LOCATION],
            "/signin?reason=expired&next=/settings"
        );

        // A session past its lifetime is refused by the API as well as the pages.
        let (short, _, _) = s.station.create_session(&alice, Duration::from_millis(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let r = api(format!("station_session={short}")).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{kind:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{kind:?}: {body}");
    }
}
