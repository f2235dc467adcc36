//! `station flags` through the real binary on SQLite and PostgreSQL: set a
//! rollout for some, check it for an account, list, switch a tool off for
//! everyone (the binary's own `station run` then calls it unknown), refuse
//! bad rules naming the field, and remove a flag.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::cli::expect;
use station_testkit::testing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_roll_features_out_and_switch_tools_off() {
    for db in testing::all().await {
        let k = db.kind;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (empty, _) = expect(dir, &db, &["flags", "list"], 0);
        assert!(empty.contains("no flags set: everything is on for everyone"), "{k}: {empty}");
        assert!(empty.contains("training") && empty.contains("LoRA training"), "{k}: features are listed: {empty}");

        expect(dir, &db, &["users", "create", "alice"], 0);
        expect(dir, &db, &["users", "create", "bob"], 0);
        let (set, _) = expect(
            dir,
            &db,
            &["flags", "set", "training", "--accounts", "alice", "--admins", "--description", "beta testers first"],
            0,
        );
        assert!(set.contains("training is on for 1 listed account and administrators: LoRA training"), "{k}: {set}");
        let (on, _) = expect(dir, &db, &["flags", "check", "training", "--user", "alice"], 0);
        assert_eq!(on.trim(), "training is on for alice", "{k}");
        let (off, _) = expect(dir, &db, &["flags", "check", "training", "--user", "bob"], 0);
        assert_eq!(off.trim(), "training is off for bob", "{k}");

        // A tool off for everyone: the binary's own `run` refuses it as unknown.
        expect(dir, &db, &["flags", "set", "tool.invert", "--off"], 0);
        let (_, err) = expect(dir, &db, &["run", "invert", "--user", "alice", "--no-wait"], 2);
        assert!(err.contains("unknown tool"), "{k}: {err}");

        let (list, _) = expect(dir, &db, &["flags", "list"], 0);
        assert!(list.contains("tool.invert") && list.contains("switches the tool Invert colours"), "{k}: {list}");
        assert!(list.contains("beta testers first") && list.contains("by operator:tester"), "{k}: {list}");

        // Bad input names the field; nothing is stored.
        let (_, err) = expect(dir, &db, &["flags", "set", "platform.myspace", "--off"], 2);
        assert!(err.contains("name: unknown platform \"myspace\""), "{k}: {err}");
        let (_, err) = expect(dir, &db, &["flags", "set", "spells"], 2);
        assert!(err.contains("say who the flag is on for"), "{k}: {err}");
        let (_, err) = expect(dir, &db, &["flags", "set", "spells", "--platforms", "fax"], 2);
        assert!(err.contains("platforms: unknown platform \"fax\""), "{k}: {err}");

        let (gone, _) = expect(dir, &db, &["flags", "unset", "tool.invert"], 0);
        assert!(gone.contains("tool.invert removed: the tool Invert colours is on for everyone"), "{k}: {gone}");
        let (_, err) = expect(dir, &db, &["flags", "unset", "tool.invert"], 2);
        assert!(err.contains("there is no flag"), "{k}: {err}");
        let (audit, _) = expect(dir, &db, &["audit", "--action", "flag."], 0);
        assert_eq!(audit.lines().count(), 3, "{k}: {audit}");
    }
}
