//! Running one `station` command against a test database, as the operator
//! `tester`, for the command-line tests.
#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;
use std::process::{Command, Output};

use station_testkit::testing::TestDb;

/// Runs `station ARGS` with its data in `dir/data` and `db`'s database.
pub fn station(dir: &Path, db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_station"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "tester")
        .env("STATION_DATA_DIR", dir.join("data"))
        .env("STATION_DATABASE_URL", &db.url)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs the command expecting exit `code`; returns (stdout, stderr).
pub fn expect(dir: &Path, db: &TestDb, args: &[&str], code: i32) -> (String, String) {
    let out = station(dir, db, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{} {args:?}\nstdout: {stdout}\nstderr: {stderr}", db.kind);
    (stdout, stderr)
}
