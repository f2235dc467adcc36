//! Usage statistics for operators, read from the rows Station already
//! keeps (jobs and the ledger) by time range. The core shapes them
//! (`station_core::stats`).

use crate::db::BeginWrite as _;
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
/// per database, so the statement text is static. `job_usage_select!`
/// is the part before the `WHERE`, shared with the rollups.
macro_rules! job_usage_select {
    ($platform:literal, $model:literal) => {
        concat!(
            "SELECT created_at / 86400000 AS day, tool_id, ", $platform, " AS platform, ", $model, " AS model, status, ",
            "COUNT(*) AS jobs, COUNT(started_at) AS started, ",
            "CAST(COALESCE(SUM(started_at - created_at), 0) AS BIGINT) AS wait_ms, ",
            "COUNT(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL THEN 1 END) AS ran, ",
            "CAST(COALESCE(SUM(CASE WHEN started_at IS NOT NULL THEN finished_at - started_at END), 0) AS BIGINT) AS run_ms ",
            "FROM jobs"
        )
    };
}

macro_rules! job_usage_sql {
    ($platform:literal, $model:literal) => {
        concat!(
            job_usage_select!($platform, $model),
            " WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2, 3, 4, 5"
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
const JOB_SELECT_SQLITE: &str = job_usage_select!(
    "COALESCE(json_extract(source, '$.conversation.platform'), json_extract(source, '$.platform'), 'api')",
    "json_extract(params, '$.model')"
);
const JOB_SELECT_PG: &str = job_usage_select!(
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

/// Where a report's figures come from: runs of whole UTC days already
/// rolled up (read from the daily rollup tables, migration 0028) and time
/// ranges aggregated from the raw jobs and ledger. The two never overlap;
/// with no rolled runs the figures are the raw aggregation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSources {
    /// Runs of rolled-up days `[first, end)` (days since 1970-01-01, UTC).
    pub rolled: Vec<(i64, i64)>,
    /// Ranges `[since, until)` (Unix ms) read from raw rows.
    pub raw: Vec<(i64, i64)>,
}

/// Statuses of jobs that have not ended: a day holding one is not rolled up.
const UNFINISHED: &str = "('queued', 'dispatched', 'running')";

/// A `UNION ALL` of statements, each bound to one `[a, b)` pair; `{a}` and
/// `{b}` in a part become its numbered placeholders.
#[derive(Default)]
struct Parts {
    sql: Vec<String>,
    binds: Vec<i64>,
}

impl Parts {
    fn push(&mut self, template: &str, a: i64, b: i64) {
        let n = self.binds.len();
        self.sql.push(template.replace("{a}", &format!("${}", n + 1)).replace("{b}", &format!("${}", n + 2)));
        self.binds.extend([a, b]);
    }

    fn union(&self) -> String {
        self.sql.join(" UNION ALL ")
    }

    /// The placeholder after the parts' own.
    fn next(&self) -> String {
        format!("${}", self.binds.len() + 1)
    }
}

fn parts(src: &StatsSources, rolled: &str, raw: &str) -> Parts {
    let mut p = Parts::default();
    for &(a, b) in &src.rolled {
        p.push(rolled, a, b);
    }
    for &(a, b) in &src.raw {
        p.push(raw, a, b);
    }
    p
}

const ROLLED_JOBS: &str = "SELECT day, tool_id, platform, model, status, jobs, started, wait_ms, ran, run_ms \
                           FROM stats_jobs_daily WHERE day >= {a} AND day < {b}";
const ROLLED_POINTS: &str = "SELECT day, kind, amount, entries FROM stats_points_daily WHERE day >= {a} AND day < {b}";
const RAW_POINTS: &str = "SELECT created_at / 86400000 AS day, kind, CAST(SUM(amount) AS BIGINT) AS amount, \
                          COUNT(*) AS entries FROM ledger WHERE created_at >= {a} AND created_at < {b} \
                          AND kind NOT IN ('hold', 'release') GROUP BY 1, 2";
const ROLLED_ACCOUNTS: &str = "SELECT account_id, jobs, points_spent AS spent FROM stats_accounts_daily \
                               WHERE day >= {a} AND day < {b}";
const RAW_ACCOUNTS: &str = "SELECT account_id, COUNT(*) AS jobs, CAST(0 AS BIGINT) AS spent FROM jobs \
                            WHERE created_at >= {a} AND created_at < {b} GROUP BY account_id \
                            UNION ALL SELECT account_id, CAST(0 AS BIGINT) AS jobs, CAST(-SUM(amount) AS BIGINT) AS spent \
                            FROM ledger WHERE kind = 'capture' AND created_at >= {a} AND created_at < {b} GROUP BY account_id";
const ROLLED_FAILURES: &str = "SELECT code, jobs, example FROM stats_failures_daily WHERE day >= {a} AND day < {b}";
const RAW_FAILURES: &str = "SELECT COALESCE(error_code, 'unknown') AS code, COUNT(*) AS jobs, MAX(error) AS example \
                            FROM jobs WHERE status = 'failed' AND created_at >= {a} AND created_at < {b} GROUP BY 1";

impl Store {
    /// [`Store::job_usage`] over `src`: rolled-up days from the rollups, the rest from raw rows.
    pub async fn job_usage_from(&self, src: &StatsSources) -> Result<Vec<JobUsageRow>, StoreError> {
        let select = match self {
            Store::Sqlite(_) => JOB_SELECT_SQLITE,
            Store::Postgres(_) => JOB_SELECT_PG,
        };
        let raw = format!("{select} WHERE created_at >= {{a}} AND created_at < {{b}} GROUP BY 1, 2, 3, 4, 5");
        let parts = parts(src, ROLLED_JOBS, &raw);
        if parts.sql.is_empty() {
            return Ok(Vec::new());
        }
        let sql = parts.union();
        crate::db::with_pool!(self, p => {
            let mut q = sqlx::query_as(crate::db::safe(&sql));
            for b in &parts.binds {
                q = q.bind(*b);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    /// [`Store::points_usage`] over `src`.
    pub async fn points_usage_from(&self, src: &StatsSources) -> Result<Vec<PointsUsageRow>, StoreError> {
        let parts = parts(src, ROLLED_POINTS, RAW_POINTS);
        if parts.sql.is_empty() {
            return Ok(Vec::new());
        }
        let sql = parts.union();
        crate::db::with_pool!(self, p => {
            let mut q = sqlx::query_as(crate::db::safe(&sql));
            for b in &parts.binds {
                q = q.bind(*b);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    /// [`Store::top_accounts`] over `src`: summed per account across the
    /// sources, ranked and named in the same statement (so ties order as
    /// the raw statement orders them).
    pub async fn top_accounts_from(&self, src: &StatsSources, limit: i64) -> Result<Vec<AccountUsageRow>, StoreError> {
        let parts = parts(src, ROLLED_ACCOUNTS, RAW_ACCOUNTS);
        if parts.sql.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT t.account_id, COALESCE(a.name, '') AS name, t.jobs, t.points_spent FROM \
             (SELECT account_id, CAST(SUM(jobs) AS BIGINT) AS jobs, CAST(SUM(spent) AS BIGINT) AS points_spent \
              FROM ({}) u GROUP BY account_id HAVING SUM(jobs) > 0) t \
             LEFT JOIN accounts a ON a.id = t.account_id \
             ORDER BY t.points_spent DESC, t.jobs DESC, t.account_id LIMIT {}",
            parts.union(),
            parts.next()
        );
        crate::db::with_pool!(self, p => {
            let mut q = sqlx::query_as(crate::db::safe(&sql));
            for b in &parts.binds {
                q = q.bind(*b);
            }
            Ok(q.bind(limit).fetch_all(p).await?)
        })
    }

    /// [`Store::failure_reasons`] over `src`.
    pub async fn failure_reasons_from(&self, src: &StatsSources, limit: i64) -> Result<Vec<FailureRow>, StoreError> {
        let parts = parts(src, ROLLED_FAILURES, RAW_FAILURES);
        if parts.sql.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT code, CAST(SUM(jobs) AS BIGINT) AS jobs, MAX(example) AS example FROM ({}) u \
             GROUP BY code ORDER BY 2 DESC, 1 LIMIT {}",
            parts.union(),
            parts.next()
        );
        crate::db::with_pool!(self, p => {
            let mut q = sqlx::query_as(crate::db::safe(&sql));
            for b in &parts.binds {
                q = q.bind(*b);
            }
            Ok(q.bind(limit).fetch_all(p).await?)
        })
    }

    /// The days in `[first, end)` that are rolled up, in order.
    pub async fn stats_rolled_days(&self, first: i64, end: i64) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT day FROM stats_days WHERE day >= $1 AND day < $2 ORDER BY day";
        let rows: Vec<(i64,)> =
            crate::db::with_pool!(self, p => sqlx::query_as(sql).bind(first).bind(end).fetch_all(p).await?);
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// The days in `[first, end)` holding jobs that have not ended (queued,
    /// dispatched or running), in order.
    pub async fn stats_unfinished_days(&self, first: i64, end: i64) -> Result<Vec<i64>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT created_at / 86400000 AS day FROM jobs WHERE status IN {UNFINISHED} \
             AND created_at >= $1 AND created_at < $2 ORDER BY 1"
        );
        let (since, until) = (first.saturating_mul(DAY_MS), end.saturating_mul(DAY_MS));
        let rows: Vec<(i64,)> = crate::db::with_pool!(self, p => sqlx::query_as(crate::db::safe(&sql)).bind(since).bind(until).fetch_all(p).await?);
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// The day of the oldest job or ledger entry, if there is any.
    pub async fn stats_first_day(&self) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MIN(m) FROM (SELECT MIN(created_at) AS m FROM jobs \
                   UNION ALL SELECT MIN(created_at) AS m FROM ledger) t";
        let row: (Option<i64>,) = crate::db::with_pool!(self, p => sqlx::query_as(sql).fetch_one(p).await?);
        Ok(row.0.map(|m| m.div_euclid(DAY_MS)))
    }

    /// Recomputes the rollup of UTC `day` from the raw rows in one
    /// transaction: its rows are deleted, its aggregates inserted and the
    /// day recorded in `stats_days` — or, when the day still holds jobs
    /// that have not ended, its rollup (if any) is dropped so reports read
    /// it raw. Returns whether the day is now rolled up. Idempotent; the
    /// `stats_days` row is written first, so a second process rolling the
    /// same day waits for the first and then replaces its rows (never
    /// adds to them). The caller decides that the day is over.
    pub async fn roll_up_stats_day(&self, day: i64, now: i64) -> Result<bool, StoreError> {
        let (since, until) = (day.saturating_mul(DAY_MS), day.saturating_add(1).saturating_mul(DAY_MS));
        let select = match self {
            Store::Sqlite(_) => JOB_SELECT_SQLITE,
            Store::Postgres(_) => JOB_SELECT_PG,
        };
        let jobs = format!(
            "INSERT INTO stats_jobs_daily (day, tool_id, platform, model, status, jobs, started, wait_ms, ran, run_ms) \
             {select} WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2, 3, 4, 5"
        );
        let unfinished =
            format!("SELECT COUNT(*) FROM jobs WHERE status IN {UNFINISHED} AND created_at >= $1 AND created_at < $2");
        const POINTS: &str = "INSERT INTO stats_points_daily (day, kind, amount, entries) \
             SELECT created_at / 86400000, kind, CAST(SUM(amount) AS BIGINT), COUNT(*) FROM ledger \
             WHERE created_at >= $1 AND created_at < $2 AND kind NOT IN ('hold', 'release') GROUP BY 1, 2";
        const ACCOUNTS: &str = "INSERT INTO stats_accounts_daily (day, account_id, jobs, points_spent) \
             SELECT CAST($3 AS BIGINT), account_id, CAST(SUM(jobs) AS BIGINT), CAST(SUM(spent) AS BIGINT) FROM (\
               SELECT account_id, COUNT(*) AS jobs, CAST(0 AS BIGINT) AS spent FROM jobs \
               WHERE created_at >= $1 AND created_at < $2 GROUP BY account_id \
               UNION ALL SELECT account_id, CAST(0 AS BIGINT) AS jobs, CAST(-SUM(amount) AS BIGINT) AS spent FROM ledger \
               WHERE kind = 'capture' AND created_at >= $1 AND created_at < $2 GROUP BY account_id) u \
             GROUP BY account_id";
        const FAILURES: &str = "INSERT INTO stats_failures_daily (day, code, jobs, example) \
             SELECT CAST($3 AS BIGINT), COALESCE(error_code, 'unknown'), COUNT(*), MAX(error) FROM jobs \
             WHERE status = 'failed' AND created_at >= $1 AND created_at < $2 GROUP BY COALESCE(error_code, 'unknown')";
        const TABLES: [&str; 4] = [
            "DELETE FROM stats_jobs_daily WHERE day = $1",
            "DELETE FROM stats_points_daily WHERE day = $1",
            "DELETE FROM stats_accounts_daily WHERE day = $1",
            "DELETE FROM stats_failures_daily WHERE day = $1",
        ];
        crate::db::with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // First a write: it takes the day's lock (PostgreSQL row lock,
            // SQLite's writer lock) before anything is read.
            sqlx::query(
                "INSERT INTO stats_days (day, rolled_at) VALUES ($1, $2) \
                 ON CONFLICT (day) DO UPDATE SET rolled_at = excluded.rolled_at",
            )
            .bind(day)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for delete in TABLES {
                sqlx::query(delete).bind(day).execute(&mut *tx).await?;
            }
            let (open,): (i64,) = sqlx::query_as(crate::db::safe(&unfinished)).bind(since).bind(until).fetch_one(&mut *tx).await?;
            if open > 0 {
                sqlx::query("DELETE FROM stats_days WHERE day = $1").bind(day).execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(false);
            }
            sqlx::query(crate::db::safe(&jobs)).bind(since).bind(until).execute(&mut *tx).await?;
            sqlx::query(POINTS).bind(since).bind(until).execute(&mut *tx).await?;
            sqlx::query(ACCOUNTS).bind(since).bind(until).bind(day).execute(&mut *tx).await?;
            sqlx::query(FAILURES).bind(since).bind(until).bind(day).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}

const DAY_MS: i64 = 86_400_000;

/// An ended job written by [`Store::insert_history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryJob {
    /// Job id.
    pub id: String,
    /// Who submitted it.
    pub account_id: String,
    /// The tool (also used as its service).
    pub tool_id: String,
    /// Its parameters (JSON text).
    pub params: String,
    /// Where it came from (JSON text), if recorded.
    pub source: Option<String>,
    /// Its status (`succeeded`, `failed`, `cancelled`; or `queued`/`running` to leave a day open).
    pub status: String,
    /// Error code of a failure.
    pub error_code: Option<String>,
    /// Error message of a failure.
    pub error: Option<String>,
    /// When it was submitted (Unix ms).
    pub created_at: i64,
    /// When a backend started it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
}

/// A ledger entry written by [`Store::insert_history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Unique key of the entry.
    pub idem_key: String,
    /// Whose balance it changes.
    pub account_id: String,
    /// `capture`, `grant`, `refund`, …
    pub kind: String,
    /// The change (captures negative).
    pub amount: i64,
    /// The job it belongs to.
    pub job_id: Option<String>,
    /// When it was written (Unix ms).
    pub created_at: i64,
}

/// Rows per multi-row `INSERT` (SQLite allows 32,766 placeholders).
const HISTORY_CHUNK: usize = 1_000;

impl Store {
    /// Writes accounts (`(id, name)`, existing ones kept), ended jobs and
    /// ledger entries with the times given, in one transaction. **For
    /// benchmarks and tests only** (`station bench stats`, the rollup
    /// tests): it bypasses the queue and leaves balances alone, so the
    /// ledger audit will not match afterwards.
    pub async fn insert_history(
        &self,
        accounts: &[(String, String)],
        jobs: &[HistoryJob],
        entries: &[HistoryEntry],
    ) -> Result<(), StoreError> {
        crate::db::with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for chunk in accounts.chunks(HISTORY_CHUNK) {
                let mut q = sqlx::QueryBuilder::new("INSERT INTO accounts (id, name, created_at) ");
                q.push_values(chunk, |mut b, (id, name)| {
                    b.push_bind(id.clone()).push_bind(name.clone()).push_bind(0i64);
                });
                q.push(" ON CONFLICT (id) DO NOTHING");
                q.build().execute(&mut *tx).await?;
            }
            for chunk in jobs.chunks(HISTORY_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO jobs (id, account_id, tool_id, service, params, status, fair_key, run_after, timeout_ms, \
                     error_code, error, source, created_at, dispatched_at, started_at, finished_at) ",
                );
                q.push_values(chunk, |mut b, j| {
                    b.push_bind(j.id.clone())
                        .push_bind(j.account_id.clone())
                        .push_bind(j.tool_id.clone())
                        .push_bind(j.tool_id.clone())
                        .push_bind(j.params.clone())
                        .push_bind(j.status.clone())
                        .push_bind(0i64)
                        .push_bind(j.created_at)
                        .push_bind(600_000i64)
                        .push_bind(j.error_code.clone())
                        .push_bind(j.error.clone())
                        .push_bind(j.source.clone())
                        .push_bind(j.created_at)
                        .push_bind(j.started_at)
                        .push_bind(j.started_at)
                        .push_bind(j.finished_at);
                });
                q.build().execute(&mut *tx).await?;
            }
            for chunk in entries.chunks(HISTORY_CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO ledger (idem_key, account_id, kind, amount, held, job_id, actor, created_at) ",
                );
                q.push_values(chunk, |mut b, e| {
                    b.push_bind(e.idem_key.clone())
                        .push_bind(e.account_id.clone())
                        .push_bind(e.kind.clone())
                        .push_bind(e.amount)
                        .push_bind(0i64)
                        .push_bind(e.job_id.clone())
                        .push_bind("history")
                        .push_bind(e.created_at);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
