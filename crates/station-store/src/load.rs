//! What benchmarks read about the database itself: throwaway databases,
//! PostgreSQL's own load counters (`pg_stat_statements` when the server
//! preloads it, `pg_stat_database` and `pg_stat_user_tables` always) and
//! every job's timestamps.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::db::{Store, StoreError, mask_url, safe, with_pool};

/// One job's life, for latency and fairness figures.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobTiming {
    /// Job id.
    pub id: String,
    /// Who submitted it.
    pub account_id: String,
    /// Current status (`succeeded`, `failed`, `queued`, …).
    pub status: String,
    /// Claims so far.
    pub attempts: i64,
    /// Backend that ran it last, when known.
    pub backend: Option<String>,
    /// Queued (Unix ms).
    pub created_at: i64,
    /// First handed to a worker that sends it to a backend (Unix ms).
    pub dispatched_at: Option<i64>,
    /// Started running on its backend (Unix ms).
    pub started_at: Option<i64>,
    /// Ended (Unix ms).
    pub finished_at: Option<i64>,
}

/// PostgreSQL's cumulative counters for the current database.
#[derive(Debug, Clone, Copy, Default, PartialEq, sqlx::FromRow)]
pub struct DatabaseCounters {
    /// Transactions committed.
    pub xact_commit: i64,
    /// Transactions rolled back.
    pub xact_rollback: i64,
    /// Blocks found in shared buffers.
    pub blks_hit: i64,
    /// Blocks read from disk (or the OS cache).
    pub blks_read: i64,
    /// Rows returned by sequential and index scans.
    pub tup_returned: i64,
    /// Rows fetched by index scans.
    pub tup_fetched: i64,
    /// Rows inserted.
    pub tup_inserted: i64,
    /// Rows updated.
    pub tup_updated: i64,
    /// Rows deleted.
    pub tup_deleted: i64,
}

/// One table's cumulative counters (`pg_stat_user_tables`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TableCounters {
    /// Table name.
    pub table: String,
    /// Sequential scans.
    pub seq_scan: i64,
    /// Index scans.
    pub idx_scan: i64,
    /// Rows inserted.
    pub inserted: i64,
    /// Rows updated (HOT or not).
    pub updated: i64,
    /// Rows deleted.
    pub deleted: i64,
}

/// One normalised statement's cumulative cost (`pg_stat_statements`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StatementCost {
    /// The statement, constants replaced by `$n`.
    pub query: String,
    /// Times executed.
    pub calls: i64,
    /// Total execution time, ms.
    pub total_ms: f64,
    /// Mean execution time, ms.
    pub mean_ms: f64,
    /// Rows returned or affected.
    pub rows: i64,
}

impl Store {
    /// Creates database `name` on the PostgreSQL server of `url` (a
    /// benchmark's own, so the server's per-database counters are its alone).
    pub async fn create_postgres_database(url: &str, name: &str) -> Result<(), StoreError> {
        let admin = admin(url).await?;
        sqlx::query(safe(&format!("CREATE DATABASE \"{name}\""))).execute(&admin).await?;
        admin.close().await;
        Ok(())
    }

    /// Drops database `name` made by [`Store::create_postgres_database`],
    /// ending any connection still open to it.
    pub async fn drop_postgres_database(url: &str, name: &str) -> Result<(), StoreError> {
        let admin = admin(url).await?;
        sqlx::query(safe(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).execute(&admin).await?;
        admin.close().await;
        Ok(())
    }

    /// Every job's timestamps, oldest first.
    pub async fn job_timings(&self) -> Result<Vec<JobTiming>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT id, account_id, status, attempts, backend, created_at, dispatched_at, started_at, finished_at \
                 FROM jobs ORDER BY created_at, id",
            )
            .fetch_all(p)
            .await?)
        })
    }

    /// The current database's counters (PostgreSQL only: None on SQLite).
    pub async fn database_counters(&self) -> Result<Option<DatabaseCounters>, StoreError> {
        let Store::Postgres(p) = self else { return Ok(None) };
        let row: DatabaseCounters = sqlx::query_as(
            "SELECT xact_commit, xact_rollback, blks_hit, blks_read, tup_returned, tup_fetched, tup_inserted, \
             tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(p)
        .await?;
        Ok(Some(row))
    }

    /// Counters of every table of the current schema (PostgreSQL only).
    pub async fn table_counters(&self) -> Result<Vec<TableCounters>, StoreError> {
        let Store::Postgres(p) = self else { return Ok(vec![]) };
        Ok(sqlx::query_as(
            "SELECT relname::TEXT AS \"table\", COALESCE(seq_scan, 0) AS seq_scan, COALESCE(idx_scan, 0) AS idx_scan, \
             n_tup_ins AS inserted, n_tup_upd AS updated, n_tup_del AS deleted \
             FROM pg_stat_user_tables WHERE schemaname = current_schema() ORDER BY relname",
        )
        .fetch_all(p)
        .await?)
    }

    /// Makes `pg_stat_statements` usable and empties it: Ok(()) when the
    /// server preloads the extension, otherwise the server's reason (the
    /// view only works with `shared_preload_libraries = 'pg_stat_statements'`).
    pub async fn reset_statement_costs(&self) -> Result<(), String> {
        let Store::Postgres(p) = self else { return Err("not PostgreSQL".into()) };
        let run = async {
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(p).await?;
            sqlx::query("SELECT pg_stat_statements_reset()").execute(p).await?;
            Ok::<_, sqlx::Error>(())
        };
        run.await.map_err(|e| match e {
            sqlx::Error::Database(d) => d.message().to_owned(),
            e => e.to_string(),
        })
    }

    /// The `limit` statements of the current database that took the most
    /// time since [`Store::reset_statement_costs`].
    pub async fn top_statements(&self, limit: i64) -> Result<Vec<StatementCost>, StoreError> {
        let Store::Postgres(p) = self else { return Ok(vec![]) };
        Ok(sqlx::query_as(
            "SELECT s.query, s.calls, s.total_exec_time AS total_ms, s.mean_exec_time AS mean_ms, s.rows \
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() ORDER BY s.total_exec_time DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(p)
        .await?)
    }
}

/// One connection to the server of `url`, for `CREATE`/`DROP DATABASE`.
async fn admin(url: &str) -> Result<sqlx::PgPool, StoreError> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::BadUrl { url: mask_url(url), reason: e.to_string() })?;
    Ok(PgPoolOptions::new().max_connections(1).connect_with(opts).await?)
}
