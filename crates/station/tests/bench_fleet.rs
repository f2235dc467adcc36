//! `station bench fleet` through the real binary, with tiny numbers: it
//! starts real `station serve` children on its own PostgreSQL database, runs
//! simulated GPUs (some of whose jobs fail) and accounts, and prints one
//! column per process count — and every submitted job ends exactly once.

use std::process::Command;

#[test]
fn a_tiny_fleet_run_reports_side_by_side_and_ends_every_job_exactly_once() {
    let Some(url) = station_testkit::postgres_url() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but STATION_TEST_POSTGRES_URL is not set: the fleet simulation needs PostgreSQL"
        );
        eprintln!("skipped: STATION_TEST_POSTGRES_URL is not set");
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_station"))
        .args([
            "bench",
            "fleet",
            "--processes",
            "1,2",
            "--backends",
            "3",
            "--accounts",
            "50",
            "--seconds",
            "2",
            "--median-ms",
            "40",
            "--failure-rate",
            "0.3",
            "--database-url",
            &url,
        ])
        .env_remove("STATION_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status.code());
    assert!(stdout.contains("| | 1 process | 2 processes |"), "{stdout}");
    for row in [
        "| offered, jobs/s |",
        "| throughput, jobs/s |",
        "| throughput vs 1 process | 1.00× |",
        "| dispatch p50 / p99 / max, ms |",
        "| queued → running p50 / p99, ms |",
        "| fairness (Jain, equal demand) |",
        "| backend utilisation |",
        "| database transactions/s (reads included) |",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    // Each run: jobs were submitted, none refused, and each ended exactly once
    // (a row per accepted create, none unfinished, no backend ran one twice).
    let line = |name: &str| stdout.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    let once = line("| every job done exactly once |");
    assert_eq!(once.matches("yes (").count(), 2, "{once}");
    assert!(!once.contains("NO"), "{once}");
    let submitted = line("| jobs submitted (refused) |");
    let cells: Vec<&str> = submitted.split('|').map(str::trim).filter(|c| !c.is_empty()).skip(1).collect();
    assert_eq!(cells.len(), 2, "{submitted}");
    for cell in cells {
        let (n, refused) = cell.split_once(' ').unwrap();
        assert!(n.parse::<u64>().unwrap() > 0, "{submitted}");
        assert_eq!(refused, "(0)", "{submitted}");
    }
    assert!(stdout.contains("Database load with 2 processes"), "{stdout}");
    assert!(
        stdout.contains("| statement (pg_stat_statements) |") || stdout.contains("pg_stat_statements is not available"),
        "{stdout}"
    );
    assert!(stdout.contains("Targets:"), "{stdout}");
}
