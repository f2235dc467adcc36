//! `station audit`: the audit log of administrative actions, newest first.

use clap::Args;
use station_core::Station;
use station_core::audit::{AuditQuery, describe_action, utc_text};

use crate::exit;

/// `station audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only actions since then: an age (`30m`, `12h`, `7d`), an RFC 3339 time or Unix milliseconds.
    #[arg(long)]
    since: Option<String>,
    /// Only actions by this actor (`operator:NAME` or `account:ID`).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (`points.grant`), or all under a prefix ending in a dot (`points.`).
    #[arg(long)]
    action: Option<String>,
    /// Only actions about this target (an account id, tool, backend or LoRA slug).
    #[arg(long)]
    target: Option<String>,
    /// How many entries to show.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
    limit: i64,
    /// Print JSON lines (one object per entry).
    #[arg(long)]
    json: bool,
}

/// Runs `station audit` and returns the exit code.
pub async fn run(station: &Station, a: AuditArgs) -> u8 {
    let since = match a.since.as_deref().map(|t| (t, parse_since(t, station_core::now_ms()))) {
        None => None,
        Some((_, Some(ms))) => Some(ms),
        Some((t, None)) => {
            eprintln!(
                "error: --since {t:?}: expected an age like 30m, 12h or 7d, an RFC 3339 time, or Unix milliseconds"
            );
            return exit::USAGE;
        }
    };
    let query =
        AuditQuery { since, actor: a.actor, action: a.action, target: a.target, before_id: None, limit: a.limit };
    let rows = match station.audit_log(&query).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot read the audit log: {e}");
            return exit::UNAVAILABLE;
        }
    };
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        return exit::OK;
    }
    if rows.is_empty() {
        println!("no administrative actions recorded{}", if since.is_some() { " in that time" } else { "" });
        return exit::OK;
    }
    for r in &rows {
        println!(
            "{}  {} via {}: {} ({})  {}",
            utc_text(r.at),
            r.actor,
            r.via,
            describe_action(&r.action),
            r.target,
            r.detail
        );
    }
    exit::OK
}

/// `30m`, `12h`, `7d`, `2w` before `now`, an RFC 3339 time, or Unix ms.
pub(crate) fn parse_since(text: &str, now: i64) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    let unit = text.chars().last()?;
    let n: i64 = text[..text.len() - unit.len_utf8()].parse().ok().filter(|n| *n >= 0)?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    Some(now - n.checked_mul(ms)?)
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn ages_times_and_milliseconds() {
        assert_eq!(parse_since("7d", 10 * 86_400_000), Some(3 * 86_400_000));
        assert_eq!(parse_since("30m", 3_600_000), Some(1_800_000));
        assert_eq!(parse_since("1700000000000", 0), Some(1_700_000_000_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 0), Some(1000));
        assert_eq!(parse_since("7x", 0), None);
        assert_eq!(parse_since("-3d", 0), None);
        assert_eq!(parse_since("", 0), None);
    }
}
