//! `station collections cook|review` through the real binary on SQLite and
//! PostgreSQL (issue 24): a recipe refused with every field named on
//! standard error (the trait tree's, then the tool's own on a sample
//! piece); a cook cannot start without a recipe; review with nothing made
//! says so.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::cli::expect;
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cook_recipe_is_checked_at_the_command_line() {
    for db in testing::all().await {
        let k = db.kind;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // The collections are the operator's own (local:$USER, here `tester`).
        expect(dir, &db, &["users", "create", "tester"], 0);
        let (id, _) = expect(dir, &db, &["collections", "create", "Hats"], 0);
        let id = id.split_whitespace().next().unwrap().to_owned();

        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            r#"{"tool": "txt2img", "supply": 5, "params": {"prompt": "a cat in [[Hat]] [[Moon]]"},
                "categories": [{"name": "Hat", "traits": [{"name": "Crown", "weight": 0}]}]}"#,
        )
        .unwrap();
        let (_, err) = expect(dir, &db, &["collections", "cook", &id, "--recipe", bad.to_str().unwrap()], 2);
        assert!(err.contains("error: categories[0].traits[0].weight:"), "{k}: {err}");
        assert!(err.contains("error: params.prompt: [[Moon]] names no category"), "{k}: {err}");

        // A valid tree whose tool refuses its sample piece (resize takes no
        // prompt and needs an image), named as the parameter.
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            r#"{"tool": "resize", "supply": 5, "params": {"prompt": "a cat in [[Hat]]"},
                "categories": [{"name": "Hat", "traits": [{"name": "Crown", "value": "a crown", "weight": 1},
                                                         {"name": "Cap", "value": "a cap", "weight": 3}]}]}"#,
        )
        .unwrap();
        let (_, err) = expect(dir, &db, &["collections", "cook", &id, "--recipe", good.to_str().unwrap()], 2);
        assert!(err.contains("error: params."), "{k}: {err}");
        let (_, err) = expect(dir, &db, &["collections", "cook", &id, "--start"], 2);
        assert!(err.contains("error: recipe: this collection has no recipe yet"), "{k}: {err}");
        let (_, err) = expect(dir, &db, &["collections", "cook", &id], 2);
        assert!(err.contains("has not been cooked"), "{k}: {err}");
        let (out, _) = expect(dir, &db, &["collections", "review", &id], 0);
        assert!(out.contains("Nothing left to review"), "{k}: {out}");
    }
}
