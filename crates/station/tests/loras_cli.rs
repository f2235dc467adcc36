//! `station loras …` through the real binary, and `POST /api/v1/loras/resolve`
//! agreeing with it. Runs on SQLite, and on PostgreSQL when
//! `STATION_TEST_POSTGRES_URL` is set.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use station_core::{Config, Station};
use station_testkit::testing::{self, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_station");

const CATALOG: &str = r#"[
  {"slug": "milady-v1", "name": "Milady", "trigger_words": ["milady"], "cognates": [{"word": "miladies"}],
   "default_weight": 0.8, "checkpoint": "SD1.5", "filename": "milady_v1.safetensors",
   "visibility": "private", "owned_by": "telegram:123", "updated_at": 1700000000000,
   "grants": [{"account": "discord:9", "expires_at": null}]},
  {"slug": "ink", "trigger_words": ["ink sketch"], "checkpoint": "SD1.5",
   "filename": "station-test-lora.safetensors", "visibility": "public", "updated_at": 1700000000001},
  {"slug": "xl-glow", "trigger_words": ["glow"], "checkpoint": "SDXL",
   "filename": "glow_xl.safetensors", "visibility": "public", "updated_at": 1700000000002}
]"#;

fn station(dir: &Path, db: &TestDb, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATION_DATA_DIR", dir.join("data"))
        .env("STATION_DATABASE_URL", &db.url)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs the command, expecting `code`; returns stdout.
fn expect(dir: &Path, db: &TestDb, args: &[&str], code: i32) -> String {
    let out = station(dir, db, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{} {args:?}\nstdout: {stdout}\nstderr: {stderr}", db.kind);
    if code != 0 {
        return stderr.into_owned();
    }
    stdout
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// POSTs `body` to the resolve endpoint of a router serving `station`, with
/// `key` as the caller's API key (none: anonymous).
async fn post(port: u16, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/loras/resolve"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_resolve_export_and_http_agree() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for db in testing::all().await {
        let kind = db.kind;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("loras.json");
        std::fs::write(&file, CATALOG).unwrap();

        let report = json_of(&expect(dir, &db, &["loras", "import", file.to_str().unwrap()], 0));
        assert_eq!(report, json!({"created": ["milady-v1", "ink", "xl-glow"], "updated": [], "errors": []}), "{kind}");

        // The owner, by platform identity, gets the private LoRA; `!` raises 0.8 to 1.
        let cases: Vec<(Vec<&str>, Value)> = vec![
            (
                vec!["--user", "telegram:123", "--base-model", "SD1.5", "an ink sketch of milady! in the glow"],
                json!({
                    "prompt": "an <lora:ink:1>ink sketch of <lora:milady-v1:1>milady in the glow",
                    "applied": [
                        {"slug": "ink", "weight": 1.0, "matched": "ink sketch"},
                        {"slug": "milady-v1", "weight": 1.0, "matched": "milady"}
                    ],
                    "warnings": []
                }),
            ),
            // Anonymous: the private LoRA is plain text, and an SDXL tool takes the SDXL one.
            (
                vec!["--base-model", "SDXL", "miladies in the glow"],
                json!({
                    "prompt": "miladies in the <lora:xl-glow:1>glow",
                    "applied": [{"slug": "xl-glow", "weight": 1.0, "matched": "glow"}],
                    "warnings": []
                }),
            ),
            // A grantee by identity; an inline tag for an unknown LoRA is removed with a warning.
            (
                vec!["--user", "discord:9", "miladies <lora:nope:1>"],
                json!({
                    "prompt": "<lora:milady-v1:0.8>milady",
                    "applied": [{"slug": "milady-v1", "weight": 0.8, "matched": "miladies"}],
                    "warnings": ["removed <lora:nope:1>: no LoRA named \"nope\" is available"]
                }),
            ),
        ];
        let mut cli_answers = vec![];
        for (args, want) in &cases {
            let mut full = vec!["loras", "resolve"];
            full.extend(args);
            let got = json_of(&expect(dir, &db, &full, 0));
            if got["warnings"] != want["warnings"] {
                // The warning wording belongs to station_lora; only its presence is ours.
                assert_eq!(
                    got["warnings"].as_array().map(Vec::len),
                    want["warnings"].as_array().map(Vec::len),
                    "{kind} {args:?}: {got}"
                );
                assert!(got["warnings"][0].as_str().unwrap().contains("nope"), "{kind}: {got}");
            }
            assert_eq!(got["prompt"], want["prompt"], "{kind} {args:?}");
            assert_eq!(got["applied"], want["applied"], "{kind} {args:?}");
            assert_eq!(got.as_object().unwrap().len(), 3, "{kind}: exactly prompt, applied, warnings");
            cli_answers.push(got);
        }

        let err = expect(dir, &db, &["loras", "resolve", "--user", "telegram:999", "milady"], 2);
        assert!(err.contains("user: no account \"telegram:999\""), "{kind}: {err}");

        // The HTTP endpoint gives the same answers to an administrator, who
        // may name any account (without one: for the administrator, who owns nothing).
        expect(dir, &db, &["users", "create", "--admin", "ops"], 0);
        let admin_key =
            expect(dir, &db, &["keys", "create", "--user", "local:ops", "--name", "t"], 0).trim().to_owned();
        let owner_key =
            expect(dir, &db, &["keys", "create", "--user", "telegram:123", "--name", "t"], 0).trim().to_owned();
        let config = Config { data_dir: dir.join("data"), ..Default::default() };
        let (st, _) = Station::with_store(config, db.store.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move { axum_serve(listener, st).await });
        let bodies = [
            json!({"prompt": "an ink sketch of milady! in the glow", "account": "telegram:123", "base_model": "SD1.5"}),
            json!({"prompt": "miladies in the glow", "base_model": "SDXL"}),
            json!({"prompt": "miladies <lora:nope:1>", "account": "discord:9", "base_model": null}),
        ];
        for (body, cli) in bodies.iter().zip(&cli_answers) {
            let (status, got) = post(port, Some(&admin_key), &body.to_string()).await;
            assert_eq!(status, 200, "{kind}: {got}");
            assert_eq!(&got, cli, "{kind}: HTTP and CLI disagree for {body}");
        }
        // Which private LoRAs an account has is not public: no caller, no answer;
        // a user resolves for themselves only, and naming any account (even a
        // missing one) is refused before it is looked up.
        let own = json!({"prompt": "an ink sketch of milady! in the glow", "base_model": "SD1.5"}).to_string();
        let (status, got) = post(port, None, &own).await;
        assert_eq!((status, got["error"]["code"].as_str()), (401, Some("unauthorized")), "{kind}: {got}");
        let (status, got) = post(port, Some(&owner_key), &own).await;
        assert_eq!((status, &got), (200, &cli_answers[0]), "{kind}: the owner's own resolution");
        for account in ["discord:9", "telegram:999"] {
            let body = json!({"prompt": "milady", "account": account}).to_string();
            let (status, got) = post(port, Some(&owner_key), &body).await;
            assert_eq!((status, got["error"]["code"].as_str()), (403, Some("forbidden")), "{kind}: {got}");
            assert_eq!(got["error"]["fields"][0]["field"], "account", "{kind}: {got}");
        }
        for (body, field) in [
            (r#"{"base_model": "SD1.5"}"#, "prompt"),
            (r#"{"prompt": 5}"#, "prompt"),
            (r#"{"prompt": "x", "acount": "telegram:123"}"#, "acount"),
            (r#"{"prompt": "x", "account": "telegram:999"}"#, "account"),
        ] {
            let (status, got) = post(port, Some(&admin_key), body).await;
            assert_eq!(status, 400, "{kind} {body}: {got}");
            assert_eq!(got["error"]["code"], "invalid_input", "{kind} {body}: {got}");
            assert_eq!(got["error"]["fields"][0]["field"], field, "{kind} {body}: {got}");
        }
        let (status, got) = post(port, Some(&admin_key), "{not json").await;
        assert_eq!((status, got["error"]["code"].as_str()), (400, Some("invalid_json")), "{kind}");
        server.abort();

        // Export prints the import format: importing it changes nothing.
        let exported = expect(dir, &db, &["loras", "export"], 0);
        let again = dir.join("again.json");
        std::fs::write(&again, &exported).unwrap();
        let report = json_of(&expect(dir, &db, &["loras", "import", again.to_str().unwrap()], 0));
        assert_eq!(report["updated"], json!(["ink", "milady-v1", "xl-glow"]), "{kind}");
        assert_eq!(json_of(&expect(dir, &db, &["loras", "export"], 0)), json_of(&exported), "{kind}");

        // Grants and revocation from the command line change what resolves.
        expect(dir, &db, &["loras", "grant", "milady-v1", "local:bob", "--expires", "2999-01-01T00:00:00Z"], 0);
        let bob = json_of(&expect(dir, &db, &["loras", "resolve", "--user", "local:bob", "milady"], 0));
        assert_eq!(bob["prompt"], "<lora:milady-v1:0.8>milady", "{kind}");
        expect(dir, &db, &["loras", "revoke", "milady-v1", "local:bob"], 0);
        let bob = json_of(&expect(dir, &db, &["loras", "resolve", "--user", "local:bob", "milady"], 0));
        assert_eq!(bob["prompt"], "milady", "{kind}");
        let err = expect(dir, &db, &["loras", "grant", "milady-v1", "local:bob", "--expires", "soon"], 2);
        assert!(err.contains("expires: \"soon\""), "{kind}: {err}");

        // add / edit / show / list / remove.
        expect(
            dir,
            &db,
            &[
                "loras",
                "add",
                "neon",
                "--checkpoint",
                "SDXL",
                "--filename",
                "neon.safetensors",
                "--visibility",
                "public",
                "--trigger",
                "neon",
            ],
            0,
        );
        expect(dir, &db, &["loras", "edit", "neon", "--weight", "0.5", "--tag", "style"], 0);
        let shown = json_of(&expect(dir, &db, &["loras", "show", "neon"], 0));
        assert_eq!((shown["default_weight"].as_f64(), shown["tags"].clone()), (Some(0.5), json!(["style"])), "{kind}");
        let listed = json_of(&expect(dir, &db, &["loras", "list", "--tag", "style", "--json"], 0));
        assert_eq!(listed.as_array().unwrap().len(), 1, "{kind}");
        let err = expect(dir, &db, &["loras", "edit", "neon", "--weight", "3"], 2);
        assert!(err.contains("default_weight: 3 is outside [0, 2]"), "{kind}: {err}");
        expect(dir, &db, &["loras", "remove", "neon"], 0);
        let err = expect(dir, &db, &["loras", "show", "neon"], 2);
        assert!(err.contains("no LoRA with slug \"neon\""), "{kind}: {err}");

        // A broken import file is refused whole, naming the record and field.
        std::fs::write(&file, r#"[{"slug": "x", "checkpoint": "SD1.5", "filename": "f", "visibility": "secret"}]"#)
            .unwrap();
        let err = expect(dir, &db, &["loras", "import", file.to_str().unwrap()], 2);
        assert!(err.contains("record 0 (slug \"x\"): field `visibility`"), "{kind}: {err}");
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, station: Station) {
    station_http::serve(listener, station, axum::Router::new(), std::future::pending()).await.unwrap();
}
