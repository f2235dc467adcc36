//! Usage statistics for operators, read from the rows Station already
//! keeps (jobs and the ledger) by time range. The core shapes them
//! (`station_core::stats`).

use serde::Serialize;

use crate::db::{Store, StoreError};

/// Jobs of one day, tool, platform, model and status.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct JobUsageRow {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// The tool.
    pub tool_id: String,
    /// Where the job came from: a chat platform, `cli`, or `api` (the web app included).
    pub platform: String,
    /// The model parameter, if the tool took one.
    pub model: Option<String>,
    /// The job's status.
    pub status: String,
    /// How many jobs.
    pub jobs: i64,
    /// Of them, how many started on a backend.
    pub started: i64,
    /// Sum of their waits, created to started (ms).
    pub wait_ms: i64,
    /// Of them, how many ran to an end.
    pub ran: i64,
    /// Sum of their run times, started to finished (ms).
    pub run_ms: i64,
}

/// Ledger entries of one day and kind.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct PointsUsageRow {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// The entry kind (`capture`, `grant`, …).
    pub kind: String,
    /// Sum of the balance changes.
    pub amount: i64,
    /// How many entries.
    pub entries: i64,
}

/// One account's use in a range.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct AccountUsageRow {
    /// Account id.
    pub account_id: String,
    /// Its display name.
    pub name: String,
    /// Jobs it submitted.
    pub jobs: i64,
    /// Points captured from it.
    pub points_spent: i64,
}

/// Failed jobs by error code.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct FailureRow {
    /// The error code (`unknown` when none was recorded).
    pub code: String,
    /// How many jobs failed with it.
    pub jobs: i64,
    /// One of the messages.
    pub example: Option<String>,
}

/// The jobs-by-group statement with the database's own expressions for
/// where a job came from (the conversation's platform, a `platform` field
/// as the CLI writes, else the API) and its model parameter. One literal
/// per database, so the statement text is static.
macro_rules! job_usage_sql {
    ($platform:literal, $model:literal) => {
        concat!(
            "SELECT created_at / 86400000 AS day, tool_id, ", $platform, " AS platform, ", $model, " AS model, status, ",
            "COUNT(*) AS jobs, COUNT(started_at) AS started, ",
            "CAST(COALESCE(SUM(started_at - created_at), 0) AS BIGINT) AS wait_ms, ",
            "COUNT(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL THEN 1 END) AS ran, ",
            "CAST(COALESCE(SUM(CASE WHEN started_at IS NOT NULL THEN finished_at - started_at END), 0) AS BIGINT) AS run_ms ",
            "FROM jobs WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2, 3, 4, 5"
        )
    };
}

const JOB_USAGE_SQLITE: &str = job_usage_sql!(
    "COALESCE(json_extract(source, '$.conversation.platform'), json_extract(source, '$.platform'), 'api')",
    "json_extract(params, '$.model')"
);
const JOB_USAGE_PG: &str = job_usage_sql!(
    "COALESCE((source::jsonb) -> 'conversation' ->> 'platform', (source::jsonb) ->> 'platform', 'api')",
    "((params::jsonb) ->> 'model')"
);

impl Store {
    /// Jobs created in `[since, until)` (Unix ms) grouped by UTC day, tool,
    /// platform, model and status.
    pub async fn job_usage(&self, since: i64, until: i64) -> Result<Vec<JobUsageRow>, StoreError> {
        Ok(match self {
            Store::Sqlite(p) => sqlx::query_as(JOB_USAGE_SQLITE).bind(since).bind(until).fetch_all(p).await?,
            Store::Postgres(p) => sqlx::query_as(JOB_USAGE_PG).bind(since).bind(until).fetch_all(p).await?,
        })
    }

    /// Ledger entries written in `[since, until)` grouped by UTC day and
    /// kind (holds and releases left out: they move no points for good).
    pub async fn points_usage(&self, since: i64, until: i64) -> Result<Vec<PointsUsageRow>, StoreError> {
        let sql = "SELECT created_at / 86400000 AS day, kind, CAST(SUM(amount) AS BIGINT) AS amount, COUNT(*) AS entries \
                   FROM ledger WHERE created_at >= $1 AND created_at < $2 AND kind NOT IN ('hold', 'release') \
                   GROUP BY 1, 2";
        crate::db::with_pool!(self, p => Ok(sqlx::query_as(sql).bind(since).bind(until).fetch_all(p).await?))
    }

    /// The accounts that spent the most points in `[since, until)` (then
    /// the most jobs), with their job counts; at most `limit`.
    pub async fn top_accounts(&self, since: i64, until: i64, limit: i64) -> Result<Vec<AccountUsageRow>, StoreError> {
        let sql = "SELECT j.account_id, COALESCE(a.name, '') AS name, j.jobs, COALESCE(p.spent, 0) AS points_spent \
                   FROM (SELECT account_id, COUNT(*) AS jobs FROM jobs \
                         WHERE created_at >= $1 AND created_at < $2 GROUP BY account_id) j \
                   LEFT JOIN (SELECT account_id, CAST(-SUM(amount) AS BIGINT) AS spent FROM ledger \
                         WHERE kind = 'capture' AND created_at >= $1 AND created_at < $2 GROUP BY account_id) p \
                     ON p.account_id = j.account_id \
                   LEFT JOIN accounts a ON a.id = j.account_id \
                   ORDER BY COALESCE(p.spent, 0) DESC, j.jobs DESC, j.account_id LIMIT $3";
        crate::db::with_pool!(self, p => Ok(sqlx::query_as(sql).bind(since).bind(until).bind(limit).fetch_all(p).await?))
    }

    /// Failed jobs created in `[since, until)` by error code, most first; at most `limit`.
    pub async fn failure_reasons(&self, since: i64, until: i64, limit: i64) -> Result<Vec<FailureRow>, StoreError> {
        let sql = "SELECT COALESCE(error_code, 'unknown') AS code, COUNT(*) AS jobs, MAX(error) AS example \
                   FROM jobs WHERE status = 'failed' AND created_at >= $1 AND created_at < $2 \
                   GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $3";
        crate::db::with_pool!(self, p => Ok(sqlx::query_as(sql).bind(since).bind(until).bind(limit).fetch_all(p).await?))
    }
}
