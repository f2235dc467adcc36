//! `station points grant|adjust|balance|audit` through the real binary
//! against overflowing amounts (issue 17, item 5), on SQLite and (when
//! `STATION_TEST_POSTGRES_URL` is set) PostgreSQL.

use std::path::Path;
use std::process::{Command, Output};

use station_core::{Config, Station};
use station_testkit::testing::{self, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_station");

fn station(dir: &Path, db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STATION_DATA_DIR", dir.join("data"))
        .env("STATION_DATABASE_URL", &db.url)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs the command, expecting `code`; returns stdout (stderr on failure).
fn expect(dir: &Path, db: &TestDb, env: &[(&str, &str)], args: &[&str], code: i32) -> String {
    let out = station(dir, db, env, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{} {args:?}\nstdout: {stdout}\nstderr: {stderr}", db.kind);
    if code != 0 {
        return stderr.into_owned();
    }
    stdout
}

/// An overflowing grant or adjustment is a clear usage error naming the
/// amount and the limit, with nothing written; balance and audit keep
/// working for everyone.
#[tokio::test]
async fn overflowing_grants_and_adjustments_are_refused() {
    for db in testing::all().await {
        let k = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = Config { data_dir: d.join("data"), ..Config::default() };
        let st = Station::with_store(config, db.store.clone()).unwrap().0;
        let ann = st.account("telegram", "1", "Ann").await.unwrap();
        st.ensure_starting_grant(&ann.id).await.unwrap();
        let max = i64::MAX.to_string();
        let min = i64::MIN.to_string();
        for args in [
            vec!["points", "grant", "telegram:1", max.as_str(), "--reason", "overflow"],
            vec!["points", "grant", "telegram:1", "1000000000001", "--reason", "too much"],
            vec!["points", "adjust", "telegram:1", max.as_str(), "--reason", "overflow"],
            vec!["points", "adjust", "telegram:1", min.as_str(), "--reason", "underflow"],
        ] {
            let err = expect(d, &db, &[], &args, 2);
            assert!(err.contains("amount") && err.contains("points.max_amount"), "{k} {args:?}: {err}");
        }
        // Raised to the top, the balance itself is what refuses.
        let wide = [("STATION_POINTS_MAX_AMOUNT", "9223372036854775807")];
        let err = expect(d, &db, &wide, &["points", "grant", "telegram:1", &max, "--reason", "overflow"], 2);
        assert!(err.contains("amount") && err.contains("most points an account can hold"), "{k}: {err}");
        assert_eq!(st.ledger_history(&ann.id, None, 100).await.unwrap().len(), 1, "{k}: only the starting grant");
        let out = expect(d, &db, &[], &["points", "balance", "--user", "telegram:1"], 0);
        assert!(out.contains("100"), "{k}: {out}");
        let out = expect(d, &db, &[], &["points", "audit"], 0);
        assert!(out.contains("consistent"), "{k}: {out}");
        let out = expect(d, &db, &[], &["points", "grant", "telegram:1", "1000000000000", "--reason", "the most"], 0);
        assert!(out.contains("1000000000100"), "{k}: {out}");
    }
}
