//! `station stats` through the real binary on SQLite and PostgreSQL: a
//! resize run at the command line is counted for the `cli` platform, with
//! the point it cost and the starting grant, as text, JSON and CSV; a bad
//! period is refused.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::cli::expect;
use serde_json::Value;
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_command_line_work_is_reported() {
    for db in testing::all().await {
        let k = db.kind;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (empty, _) = expect(dir, &db, &["stats"], 0);
        assert!(empty.contains("Jobs: 0 (0 succeeded, 0 failed, 0 cancelled)"), "{k}: {empty}");

        let input = dir.join("in.png");
        image::RgbaImage::from_pixel(16, 16, image::Rgba([10, 20, 30, 255])).save(&input).unwrap();
        let out = dir.join("out");
        expect(
            dir,
            &db,
            &[
                "run",
                "resize",
                "--image",
                input.to_str().unwrap(),
                "--param",
                "width=8",
                "--out",
                out.to_str().unwrap(),
                "--yes",
            ],
            0,
        );

        let (text, _) = expect(dir, &db, &["stats", "--since", "1d"], 0);
        assert!(
            text.contains("Jobs: 1 (1 succeeded, 0 failed, 0.0 % of those that ended, 0 cancelled)"),
            "{k}: {text}"
        );
        assert!(text.contains("Points: 1 spent"), "{k}: {text}");
        assert!(text.lines().any(|l| l.starts_with("Resize ") && l.contains(" 1 ")), "{k}: by tool: {text}");
        assert!(text.lines().any(|l| l.starts_with("cli ")), "{k}: by platform: {text}");
        assert!(text.contains("Busiest accounts\n  tester: 1 points on 1 jobs"), "{k}: {text}");

        let (json, _) = expect(dir, &db, &["stats", "--json"], 0);
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["days"].as_array().unwrap().len(), 7, "{k}: the default is seven days");
        assert_eq!(v["by_platform"][0]["key"], "cli", "{k}: {v}");
        assert_eq!(v["points_spent"], 1, "{k}");

        let (csv, _) = expect(dir, &db, &["stats", "--since", "2d", "--csv"], 0);
        assert!(csv.lines().any(|l| l.starts_with("tool,resize,Resize,1,1,0,0,")), "{k}: {csv}");

        let (_, err) = expect(dir, &db, &["stats", "--since", "yesterday"], 2);
        assert!(err.contains("--since \"yesterday\""), "{k}: {err}");
    }
}
