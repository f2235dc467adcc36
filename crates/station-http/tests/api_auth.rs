//! Authentication and authorisation of every documented operation, table-
//! driven from the OpenAPI document itself, so a route added later is
//! covered without touching this file: without credentials (or with a wrong
//! key) every operation but the public ones answers 401 in the error shape;
//! every admin operation answers a normal user 403 `forbidden` and lets an
//! administrator in — on SQLite and PostgreSQL.

mod common;

use common::serve;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use station_testkit::testing;

/// Operations anyone may call, as the document declares them (`security:
/// [{}]`): the health checks and the API's own documentation. Opening
/// another one is a deliberate change of this list.
const PUBLIC: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /api/v1/openapi.json",
    "GET /api/v1/docs",
    "GET /api/v1/docs/docs.js",
    "GET /api/v1/docs/docs.css",
    // Collections opened by a share link or an unlisted/public address (issue 24).
    "GET /api/v1/collections/public",
    "GET /api/v1/shared/{key}",
    "GET /api/v1/shared/{key}/items/{item}/image",
    "GET /api/v1/shared/{key}/items/{item}/thumbnail",
];

/// Every `(method, path, "METHOD /path", declared public)` in the OpenAPI
/// document, path parameters filled in.
async fn operations(s: &common::Server) -> Vec<(Method, String, String, bool)> {
    let doc = s.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK, "{}", doc.body);
    let mut out = vec![];
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else { continue };
            if !matches!(m, Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
                continue;
            }
            // Any value will do: authentication comes before the id is looked at.
            let mut concrete = String::new();
            let mut rest = path.as_str();
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').unwrap() + open;
                concrete.push_str(&rest[..open]);
                concrete.push_str("x1");
                rest = &rest[close + 1..];
            }
            concrete.push_str(rest);
            let public = op["security"] == json!([{}]);
            out.push((m.clone(), concrete, format!("{} {path}", m.as_str()), public));
        }
    }
    assert!(out.len() > 20, "the document lists the API: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_needs_credentials_and_admin_ones_the_admin_role() {
    for db in testing::all().await {
        let s = serve(&db, false, |_| {}).await;
        let k = s.kind;
        let ops = operations(&s).await;
        let body = |m: &Method| (m != Method::GET && m != Method::DELETE).then(|| json!({}));
        let mut public: Vec<&str> = ops.iter().filter(|o| o.3).map(|o| o.2.as_str()).collect();
        public.sort();
        let mut want = PUBLIC.to_vec();
        want.sort();
        assert_eq!(public, want, "{k}: operations documented as public");
        for (m, path, name, open) in &ops {
            let a = s.call(m.clone(), path, None, body(m)).await;
            if *open {
                assert!(!matches!(a.status.as_u16(), 401 | 403), "{k}: {name} is public: {}", a.status);
                continue;
            }
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{k}: {name} without credentials: {}", a.body);
            assert_eq!(a.code(), "unauthorized", "{k}: {name}");
            assert!(a.headers.contains_key("www-authenticate"), "{k}: {name}: a 401 says how to authenticate");
            let a = s.call(m.clone(), path, Some("st_not_a_key"), body(m)).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{k}: {name} with a wrong key: {}", a.body);
        }

        let admin_ops: Vec<_> = ops.iter().filter(|o| o.2.contains(" /api/v1/admin")).collect();
        assert!(admin_ops.len() >= 4, "{k}: admin operations: {admin_ops:?}");
        for (m, path, name, _) in admin_ops {
            let a = s.call(m.clone(), path, Some(&s.alice_key), body(m)).await;
            assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "forbidden"), "{k}: {name} as a user: {}", a.body);
            let a = s.call(m.clone(), path, Some(&s.admin_key), body(m)).await;
            assert!(
                !matches!(a.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                "{k}: {name} as the admin: {} {}",
                a.status,
                a.body
            );
        }
        // A normal user reaches every other operation (whatever it then says about the input).
        for (m, path, name, _) in ops.iter().filter(|o| !o.2.contains(" /api/v1/admin") && !o.3) {
            let a = s.call(m.clone(), path, Some(&s.alice_key), body(m)).await;
            assert!(
                !matches!(a.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                "{k}: {name} as a user: {} {}",
                a.status,
                a.body
            );
            if a.status.is_client_error() {
                let v: &Value = &a.body;
                assert!(v["error"]["code"].is_string(), "{k}: {name}: the one error shape: {v}");
            }
        }
        s.stop().await;
    }
}
