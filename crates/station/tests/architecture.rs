//! The crate graph's structural invariants (ARCHITECTURE.md, "Invariants"),
//! checked from every crate's own `Cargo.toml`: a dependency that breaks
//! one fails here before it can spread.

use std::collections::BTreeMap;
use std::path::Path;

/// Each crate's normal (not dev) dependencies on other workspace crates and
/// on `sqlx`, by crate name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&crates).expect("crates folder") {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let doc: toml::Table = text.parse().unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let name = doc["package"]["name"].as_str().expect("package name").to_string();
        let deps = doc
            .get("dependencies")
            .and_then(toml::Value::as_table)
            .map(|t| t.keys().filter(|k| k.starts_with("station") || *k == "sqlx").cloned().collect())
            .unwrap_or_default();
        out.insert(name, deps);
    }
    assert!(out.len() >= 14, "expected every crate of the workspace, found {:?}", out.keys());
    out
}

#[test]
fn front_ends_call_station_never_the_store() {
    let deps = dependencies();
    for front in ["station-http", "station-telegram", "station-discord", "station-flows", "station"] {
        let d = &deps[front];
        assert!(!d.iter().any(|x| x == "station-store"), "{front} depends on station-store: {d:?}");
    }
}

#[test]
fn only_the_core_and_its_measuring_tools_reach_the_store() {
    let allowed = ["station-core", "station-bench", "station-testkit"];
    for (name, d) in dependencies() {
        if d.iter().any(|x| x == "station-store") {
            assert!(allowed.contains(&name.as_str()), "{name} depends on station-store");
        }
    }
}

#[test]
fn only_station_store_speaks_sql() {
    for (name, d) in dependencies() {
        if name != "station-store" {
            assert!(!d.iter().any(|x| x == "sqlx"), "{name} depends on sqlx");
        }
    }
}

#[test]
fn the_core_knows_no_front_end_or_platform() {
    let deps = dependencies();
    let core = &deps["station-core"];
    for upper in [
        "station-http",
        "station-flows",
        "station-telegram",
        "station-discord",
        "station-comfyui",
        "station-comfydeploy",
        "station",
    ] {
        assert!(!core.iter().any(|x| x == upper), "station-core depends on {upper}");
    }
    for lower in ["station-store", "station-tools", "station-media", "station-lora"] {
        assert!(!deps[lower].iter().any(|x| x == "station-core"), "{lower} depends on station-core");
    }
}

/// SQLite write transactions take the write lock at `BEGIN` (see
/// `BeginWrite` in station-store's db.rs): a plain `begin()` in the store
/// reads under a snapshot that a later write cannot upgrade once another
/// connection committed, and fails with "database is locked" at once.
#[test]
fn store_transactions_begin_as_writers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../station-store/src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).expect("station-store/src") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains(".begin().await"),
                "{}:{}: use begin_write() (BEGIN IMMEDIATE on SQLite), not begin(): {line}",
                path.display(),
                n + 1
            );
        }
        checked += text.matches(".begin_write().await").count();
    }
    assert!(checked >= 40, "expected the store's write transactions, found {checked}");
}
