//! `station points sponsor set|show|remove` through the real binary, on
//! SQLite and (when `STATION_TEST_POSTGRES_URL` is set) PostgreSQL; the
//! sponsorship it sets pays for a member's job submitted through the core.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use station_core::points::PaidBy;
use station_core::{Config, Station, SubmitRequest};
use station_testkit::testing::{self, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_station");

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

/// Runs the command, expecting `code`; returns stdout (stderr on failure).
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

#[tokio::test]
async fn sponsor_set_show_remove() {
    for db in testing::all().await {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = Config { data_dir: d.join("data"), ..Config::default() };
        // The template is hidden (admins only): the members run a public copy.
        station_testkit::install_tools(&config.tools_dir(), &[station_testkit::public_builtin("txt2img-sd15")]);
        let st = Station::with_store(config, db.store.clone()).unwrap().0;
        let patron = st.account("telegram", "1", "Patron").await.unwrap();
        let ann = st.account("telegram", "2", "Ann").await.unwrap();
        st.grant_points(&patron, 50, "for the group", &station_core::audit::Actor::operator("test"), None)
            .await
            .unwrap();

        let scope = "telegram:-100123";
        let err = expect(d, &db, &["points", "sponsor", "show", scope], 1);
        assert!(err.contains("no sponsor") && err.contains("sponsor set"), "{err}");
        let err = expect(d, &db, &["points", "sponsor", "set", scope, "--user", "telegram:1", "--daily-cap", "0"], 2);
        assert!(err.contains("per_member_daily_cap"), "{err}");
        let err = expect(d, &db, &["points", "sponsor", "set", "group", "--user", "telegram:1", "--daily-cap", "5"], 2);
        assert!(err.contains("scope") && err.contains("KIND:ID"), "{err}");
        let err = expect(d, &db, &["points", "sponsor", "set", scope, "--user", "telegram:404", "--daily-cap", "5"], 2);
        assert!(err.contains("no account"), "{err}");
        let out = expect(d, &db, &["points", "sponsor", "set", scope, "--user", "telegram:1", "--daily-cap", "30"], 0);
        assert!(out.contains("Patron") && out.contains("up to 30 points"), "{out}");

        let shown: Value =
            serde_json::from_str(&expect(d, &db, &["points", "sponsor", "show", scope, "--json"], 0)).unwrap();
        assert_eq!(shown["account_id"], json!(patron.id), "{}", db.kind);
        assert_eq!((shown["per_member_daily_cap"].clone(), shown["available"].clone()), (json!(30), json!(50)));

        // What the command set is what a submission in the group uses.
        let req = SubmitRequest {
            tool: "txt2img-sd15".into(),
            params: json!({"prompt": "a cat"}).as_object().cloned().unwrap(),
            sponsor_scope: Some(scope.into()),
            ..Default::default()
        };
        let job = st.submit(&ann, req).await.unwrap();
        assert_eq!(db.store.hold_for_job(&job.id).await.unwrap().unwrap().account_id, patron.id, "{}", db.kind);

        let out = expect(d, &db, &["points", "sponsor", "remove", scope], 0);
        assert!(out.contains("no longer sponsored"), "{out}");
        let err = expect(d, &db, &["points", "sponsor", "remove", scope], 1);
        assert!(err.contains("had no sponsor"), "{err}");
        let req = SubmitRequest {
            tool: "txt2img-sd15".into(),
            params: json!({"prompt": "a dog"}).as_object().cloned().unwrap(),
            sponsor_scope: Some(scope.into()),
            ..Default::default()
        };
        let q = st.quote(&ann, &req).await.unwrap();
        assert_eq!(q.paid_by, PaidBy::Own { allowance: 0, balance: 20 }, "{}", db.kind);
        assert!(st.audit_points().await.unwrap().is_empty(), "{}", db.kind);
    }
}
