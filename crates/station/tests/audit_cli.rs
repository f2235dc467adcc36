//! `station audit` through the real binary: administrative commands run at
//! the command line (`users suspend`, `points grant`, `backends add`) are
//! listed with the operator who ran them, filtered by action and time, as
//! text or JSON lines. Runs on SQLite, and on PostgreSQL when
//! `STATION_TEST_POSTGRES_URL` is set.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::cli::expect;
use serde_json::Value;
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_actions_are_audited_and_listed() {
    for db in testing::all().await {
        let k = db.kind;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (empty, _) = expect(dir, &db, &["audit"], 0);
        assert!(empty.contains("no administrative actions recorded"), "{k}: {empty}");

        expect(dir, &db, &["users", "create", "alice"], 0);
        expect(dir, &db, &["points", "grant", "local:alice", "25", "--reason", "welcome back"], 0);
        expect(dir, &db, &["users", "suspend", "alice"], 0);
        expect(dir, &db, &["backends", "add", "gpu-1", "http://127.0.0.1:9"], 0);

        let (text, _) = expect(dir, &db, &["audit"], 0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{k}: {text}");
        assert!(lines[0].contains("operator:tester via cli: added a backend (gpu-1)"), "{k}: {text}");
        assert!(lines[1].contains("suspended an account"), "{k}: {text}");
        assert!(
            lines[2].contains("granted points") && lines[2].contains("25 points to alice: welcome back"),
            "{k}: {text}"
        );
        assert!(lines[2].contains(" UTC "), "{k}: times are readable: {text}");

        let (json, _) = expect(dir, &db, &["audit", "--action", "points.", "--since", "1h", "--json"], 0);
        let rows: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), 1, "{k}: {json}");
        assert_eq!(
            (&rows[0]["action"], &rows[0]["actor"], &rows[0]["via"]),
            (&"points.grant".into(), &"operator:tester".into(), &"cli".into()),
            "{k}"
        );
        let (none, _) = expect(dir, &db, &["audit", "--since", "2999-01-01T00:00:00Z"], 0);
        assert!(none.contains("in that time"), "{k}: {none}");
        let (_, err) = expect(dir, &db, &["audit", "--since", "yesterday"], 2);
        assert!(err.contains("--since") && err.contains("7d"), "{k}: {err}");
    }
}
