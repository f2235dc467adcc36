//! `station stats`: usage and revenue for operators — jobs per day, tool,
//! model and platform, points spent and granted, the busiest accounts,
//! failure reasons, waits and run times.

use clap::{Args, Subcommand};
use station_core::Station;
use station_core::stats::{Stats, StatsRange, UsageBy, stats_csv};

use crate::exit;

/// `station stats`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StatsArgs {
    /// Maintenance of the figures (without one: print the report).
    #[command(subcommand)]
    command: Option<StatsCommand>,
    /// The period: whole UTC days (`7d`, today included), another age (`12h`, `2w`),
    /// an RFC 3339 time, or Unix milliseconds.
    #[arg(long, default_value = "7d")]
    since: String,
    /// Print the report as one JSON object.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: one line per day, tool, model and platform (for a spreadsheet).
    #[arg(long)]
    csv: bool,
}

/// `station stats <what>`.
#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// Recompute the daily rollups the report reads from the jobs and the
    /// ledger (after restoring a backup, importing rows, or to repair).
    Rebuild(RebuildArgs),
}

/// `station stats rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// From when: whole UTC days (`90d`, today included), another age, an
    /// RFC 3339 time or Unix milliseconds (default: the first day with any job).
    #[arg(long)]
    since: Option<String>,
}

/// `--since` as a range ending now, or the error to print.
fn parse_range(since: &str, now: i64) -> Result<StatsRange, String> {
    match since.trim().strip_suffix('d').and_then(|d| d.parse::<u32>().ok()) {
        Some(days) if (1..=3660).contains(&days) => Ok(StatsRange::last_days(days, now)),
        _ => match super::audit::parse_since(since, now) {
            Some(since) if since <= now => Ok(StatsRange { since, until: now + 1 }),
            _ => Err(format!(
                "error: --since {since:?}: expected whole days like 7d, an age like 12h or 2w, an RFC 3339 time, \
                 or Unix milliseconds in the past"
            )),
        },
    }
}

/// Runs `station stats rebuild`: every day that is over, one line each.
async fn rebuild(station: &Station, a: RebuildArgs) -> u8 {
    let now = station_core::now_ms();
    let since_day = match a.since.as_deref().map(|s| parse_range(s, now)) {
        None => None,
        Some(Ok(r)) => Some(r.since.div_euclid(86_400_000)),
        Some(Err(e)) => {
            eprintln!("{e}");
            return exit::USAGE;
        }
    };
    let mut progress = |done: usize, total: usize, day: &str| eprintln!("{day} recomputed ({done} of {total})");
    match station.roll_up_stats(since_day, true, &mut progress).await {
        Ok(s) => {
            let days = |n: usize| if n == 1 { "1 day".to_string() } else { format!("{n} days") };
            if s.days == 0 {
                println!("No finished day to roll up yet; reports read today from the jobs themselves.");
            } else {
                println!("Rolled up {} of usage figures.", days(s.rolled));
            }
            if s.unfinished > 0 {
                println!(
                    "{} still {} jobs that have not ended; reports read {} from the jobs until they end.",
                    days(s.unfinished),
                    if s.unfinished == 1 { "holds" } else { "hold" },
                    if s.unfinished == 1 { "it" } else { "them" }
                );
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: cannot roll up the figures: {e}");
            exit::UNAVAILABLE
        }
    }
}

/// Runs `station stats` and returns the exit code.
pub async fn run(station: &Station, a: StatsArgs) -> u8 {
    if let Some(StatsCommand::Rebuild(r)) = a.command {
        return rebuild(station, r).await;
    }
    let now = station_core::now_ms();
    let range = match parse_range(&a.since, now) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return exit::USAGE;
        }
    };
    let stats = match station.stats(range).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read the figures: {e}");
            return exit::UNAVAILABLE;
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stats).unwrap_or_default());
    } else if a.csv {
        print!("{}", stats_csv(&stats));
    } else {
        print!("{}", report(&stats));
    }
    exit::OK
}

/// `1234567` → `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `850 ms`, `4.2 s`, `3 min 5 s`.
fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms < 1_000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn table(out: &mut String, title: &str, rows: &[UsageBy]) {
    if rows.is_empty() {
        return;
    }
    let width = rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(0).max(title.len());
    out.push_str(&format!("\n{title:width$}  {:>8}  {:>7}  {:>9}  {:>9}\n", "jobs", "failed", "avg wait", "avg run"));
    for r in rows {
        out.push_str(&format!(
            "{:width$}  {:>8}  {:>7}  {:>9}  {:>9}\n",
            r.label,
            thousands(r.usage.jobs),
            thousands(r.usage.failed),
            duration(r.usage.avg_wait_ms),
            duration(r.usage.avg_run_ms)
        ));
    }
}

/// The report for a person.
fn report(s: &Stats) -> String {
    let mut out = format!(
        "Usage from {} to {}\n",
        station_core::audit::utc_text(s.since),
        station_core::audit::utc_text(s.until - 1)
    );
    let t = &s.total;
    let rate = t.failure_rate().map(|r| format!(", {:.1} % of those that ended", r * 100.0)).unwrap_or_default();
    out.push_str(&format!(
        "Jobs: {} ({} succeeded, {} failed{rate}, {} cancelled)\n",
        thousands(t.jobs),
        thousands(t.succeeded),
        thousands(t.failed),
        thousands(t.cancelled)
    ));
    out.push_str(&format!(
        "Waited {} on average for a backend; ran {} on average\n",
        duration(t.avg_wait_ms),
        duration(t.avg_run_ms)
    ));
    out.push_str(&format!(
        "Points: {} spent · {} granted or paid in · {} refunded\n",
        thousands(s.points_spent),
        thousands(s.points_granted),
        thousands(s.points_refunded)
    ));
    out.push_str(&format!(
        "\n{:10}  {:>8}  {:>7}  {:>12}  {:>8}\n",
        "day", "jobs", "failed", "points spent", "granted"
    ));
    for d in &s.days {
        out.push_str(&format!(
            "{:10}  {:>8}  {:>7}  {:>12}  {:>8}\n",
            d.date,
            thousands(d.usage.jobs),
            thousands(d.usage.failed),
            thousands(d.points_spent),
            thousands(d.points_granted)
        ));
    }
    table(&mut out, "tool", &s.by_tool);
    table(&mut out, "model", &s.by_model);
    table(&mut out, "platform", &s.by_platform);
    if !s.top_accounts.is_empty() {
        out.push_str("\nBusiest accounts\n");
        for a in &s.top_accounts {
            out.push_str(&format!(
                "  {}: {} points on {} jobs\n",
                a.name,
                thousands(a.points_spent),
                thousands(a.jobs)
            ));
        }
    }
    if !s.failures.is_empty() {
        out.push_str("\nWhy jobs failed\n");
        for f in &s.failures {
            let example = f.example.as_deref().map(|e| format!(" — e.g. {e}")).unwrap_or_default();
            out.push_str(&format!("  {} × {}{example}\n", thousands(f.jobs), f.code));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{duration, thousands};

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(duration(Some(850)), "850 ms");
        assert_eq!(duration(Some(4_250)), "4.2 s");
        assert_eq!(duration(Some(185_000)), "3 min 5 s");
        assert_eq!(duration(None), "—");
    }
}
