//! The durable job queue.
//!
//! Fairness is start-time fair queuing: a new job's `fair_key` is
//! `max(account's last key + 1, service virtual clock)`, and claims take the
//! smallest keys first (after priority). One account's hundred queued jobs get
//! keys 1..100 while another account arriving later starts at the clock, so it
//! is served next instead of after the hundred. The clock advances to the key
//! of each claimed job, so an account that was idle does not bank credit.
//!
//! Workers claim jobs with a lease; every state change after the claim is
//! fenced by `lease_owner`, so a worker that lost its lease (crash, pause) can
//! never overwrite the outcome decided by the worker that took over.

use crate::db::BeginWrite as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{Store, StoreError, safe, with_pool};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Written and waiting for a worker.
    Queued,
    /// Claimed by a worker, being sent to a backend.
    Dispatched,
    /// The backend is executing it.
    Running,
    /// Finished with outputs.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled by its owner or an operator.
    Cancelled,
}

impl JobStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Dispatched => "dispatched",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "dispatched" => JobStatus::Dispatched,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job row, as stored.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct JobRow {
    /// Job id (UUIDv7 text: time-ordered, unguessable enough for display).
    pub id: String,
    /// Owner account.
    pub account_id: String,
    /// Tool that runs it.
    pub tool_id: String,
    /// Executing service (`comfyui`, `media`).
    pub service: String,
    /// Merged, validated parameters (JSON object text).
    pub params: String,
    /// Status text; see [`JobRow::status`].
    pub status: String,
    /// Higher runs first.
    pub priority: i64,
    /// Fair-queuing key (smaller runs first within a priority).
    pub fair_key: i64,
    /// Submissions to a backend so far.
    pub attempts: i64,
    /// Submissions allowed before transient failures become final.
    pub max_attempts: i64,
    /// Not claimable before this time (retry backoff).
    pub run_after: i64,
    /// Execution time limit.
    pub timeout_ms: i64,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease lapses unless renewed.
    pub lease_expires_at: Option<i64>,
    /// Backend the job was last sent to.
    pub backend: Option<String>,
    /// The backend's id for the current submission (ComfyUI prompt id).
    pub remote_id: Option<String>,
    /// Last known progress, 0..1.
    pub progress: f64,
    /// Output media ids (JSON array text) once succeeded.
    pub outputs: Option<String>,
    /// Stable error code when failed.
    pub error_code: Option<String>,
    /// Human-readable error or last transient error.
    pub error: Option<String>,
    /// The owner asked to cancel while it was running.
    pub cancel_requested: bool,
    /// Where the request came from (JSON: platform, conversation), for delivery.
    pub source: Option<String>,
    /// Timestamps (Unix ms).
    pub created_at: i64,
    /// First claim.
    pub dispatched_at: Option<i64>,
    /// Backend started executing.
    pub started_at: Option<i64>,
    /// Reached a terminal state.
    pub finished_at: Option<i64>,
    /// Prompts ahead of it in its backend's own queue at the executor's last
    /// look, while it waits there (status `dispatched`); None when unknown.
    pub backend_ahead: Option<i64>,
}

impl JobRow {
    /// Parsed status (unknown text reads as failed, which is never silently retried).
    pub fn status(&self) -> JobStatus {
        JobStatus::parse(&self.status).unwrap_or(JobStatus::Failed)
    }

    /// Parameters as a JSON object.
    pub fn params_json(&self) -> serde_json::Map<String, Value> {
        serde_json::from_str(&self.params).unwrap_or_default()
    }

    /// Output media ids.
    pub fn output_ids(&self) -> Vec<String> {
        self.outputs.as_deref().and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default()
    }
}

/// Queued jobs of one service ([`Store::queued_by_service`]).
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq)]
pub struct ServiceQueued {
    /// The service.
    pub service: String,
    /// Jobs waiting for a worker.
    pub queued: i64,
    /// Creation time of the oldest (Unix ms).
    pub oldest_created_at: Option<i64>,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Id chosen by the caller (so it can be returned before the insert).
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Tool id.
    pub tool_id: String,
    /// Executing service.
    pub service: String,
    /// Validated parameters.
    pub params: serde_json::Map<String, Value>,
    /// Priority (0 normal).
    pub priority: i64,
    /// Backend submissions allowed.
    pub max_attempts: i64,
    /// Execution time limit.
    pub timeout_ms: i64,
    /// Origin, for delivery.
    pub source: Option<Value>,
}

/// Parameters of one claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Service whose jobs to claim.
    pub service: &'a str,
    /// Worker identity written into the lease.
    pub owner: &'a str,
    /// At most this many jobs.
    pub limit: i64,
    /// Lease length.
    pub lease_ms: i64,
    /// Per-account cap on dispatched + running jobs of this service.
    pub per_account_running_cap: i64,
    /// Claim time.
    pub now: i64,
}

/// Filter for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this account's jobs.
    pub account_id: Option<String>,
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this tool.
    pub tool_id: Option<String>,
    /// Page: jobs created strictly before this job id (ids are time-ordered).
    pub before_id: Option<String>,
    /// Page size.
    pub limit: i64,
}

/// Where a queued job stands.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueuePosition {
    /// Queued jobs of the same service that will be claimed before it.
    pub ahead: i64,
    /// Jobs of the same service currently dispatched or running.
    pub running: i64,
}

/// A job as a status read shows it (see [`Store::job_status`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobStatusRow {
    /// The job.
    #[sqlx(flatten)]
    pub job: JobRow,
    /// The owner's rating, 1–5.
    pub mark_rating: Option<i64>,
    /// Hidden from the owner's history.
    pub mark_hidden: bool,
    /// Queued jobs of the same service claimed before it (queued jobs only).
    pub queue_ahead: Option<i64>,
    /// Dispatched or running jobs of the same service (queued jobs only).
    pub queue_running: Option<i64>,
}

impl JobStatusRow {
    /// The queue position, for a queued job.
    pub fn queue_position(&self) -> Option<QueuePosition> {
        Some(QueuePosition { ahead: self.queue_ahead?, running: self.queue_running? })
    }
}

/// [`Store::job_status`]'s query. The position subqueries run only for a
/// queued job (both engines evaluate a CASE branch lazily) and use the
/// `jobs_claim` index; the ordering is the claim order, as in
/// [`Store::queue_position`].
/// Built once and leaked, so every call passes sqlx a `&'static str` (no copy).
static JOB_STATUS_SQL: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {JOB_COLUMNS}, \
         (SELECT m.rating FROM job_marks m WHERE m.job_id = jobs.id) AS mark_rating, \
         COALESCE((SELECT m.hidden FROM job_marks m WHERE m.job_id = jobs.id), FALSE) AS mark_hidden, \
         CASE WHEN status = 'queued' THEN (SELECT COUNT(*) FROM jobs q WHERE q.service = jobs.service \
           AND q.status = 'queued' AND q.id <> jobs.id AND (q.priority > jobs.priority \
           OR (q.priority = jobs.priority AND (q.fair_key < jobs.fair_key \
           OR (q.fair_key = jobs.fair_key AND q.created_at <= jobs.created_at))))) END AS queue_ahead, \
         CASE WHEN status = 'queued' THEN (SELECT COUNT(*) FROM jobs r WHERE r.service = jobs.service \
           AND r.status IN {ACTIVE}) END AS queue_running \
         FROM jobs WHERE id = $1"
    )
    .leak()
});

/// Queue overview for operators.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    /// Count per status.
    pub by_status: Vec<(String, i64)>,
    /// Creation time of the oldest queued job.
    pub oldest_queued_at: Option<i64>,
}

pub(crate) const JOB_COLUMNS: &str = "id, account_id, tool_id, service, params, status, priority, fair_key, attempts, \
    max_attempts, run_after, timeout_ms, lease_owner, lease_expires_at, backend, remote_id, progress, outputs, \
    error_code, error, cancel_requested, source, created_at, dispatched_at, started_at, finished_at, backend_ahead";

/// Inserts `job` inside an open transaction (the body is compiled once per
/// database by `with_pool!`, so this is a macro rather than a generic fn).
macro_rules! insert_job_in_tx {
    ($tx:ident, $job:expr, $now:expr, $key_sql:expr, $job_sql:expr) => {{
        let job: &NewJob = $job;
        let params = Value::Object(job.params.clone()).to_string();
        let source = job.source.as_ref().map(|s| s.to_string());
        let (fair_key,): (i64,) =
            sqlx::query_as(safe(&$key_sql)).bind(&job.account_id).bind(&job.service).fetch_one(&mut *$tx).await?;
        sqlx::query(safe(&$job_sql))
            .bind(&job.id)
            .bind(&job.account_id)
            .bind(&job.tool_id)
            .bind(&job.service)
            .bind(&params)
            .bind(job.priority)
            .bind(fair_key)
            .bind(job.max_attempts)
            .bind($now)
            .bind(job.timeout_ms)
            .bind(&source)
            .execute(&mut *$tx)
            .await?;
    }};
}
pub(crate) use insert_job_in_tx;

/// The two statements that insert a job: its fair key, then the row. Shared by
/// [`Store::insert_job`] and the ledger's job-with-hold transaction.
pub(crate) fn job_insert_sql(store: &Store) -> (String, String) {
    let greatest = store.greatest();
    let key_sql = format!(
        "INSERT INTO queue_accounts (account_id, service, last_fair_key) \
         VALUES ($1, $2, COALESCE((SELECT vtime FROM queue_clock WHERE service = $2), 0)) \
         ON CONFLICT (account_id, service) DO UPDATE SET last_fair_key = {greatest}(\
           queue_accounts.last_fair_key + 1, \
           COALESCE((SELECT vtime FROM queue_clock WHERE service = $2), 0)) \
         RETURNING last_fair_key"
    );
    let job_sql = "INSERT INTO jobs (id, account_id, tool_id, service, params, status, priority, fair_key, \
         max_attempts, run_after, timeout_ms, source, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11, $9)"
        .to_string();
    (key_sql, job_sql)
}

impl Store {
    /// The two-argument maximum: SQLite's scalar `MAX`, PostgreSQL's `GREATEST`.
    fn greatest(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "MAX",
            Store::Postgres(_) => "GREATEST",
        }
    }
}

const ACTIVE: &str = "('dispatched','running')";

/// What [`Store::record_submission_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submission {
    /// The backend and remote id are recorded (one attempt counted).
    Recorded,
    /// This worker no longer holds the job.
    LeaseLost,
    /// The backend already has its capacity of jobs: nothing was written.
    Full,
}

/// Records a terminal outcome, fenced by the lease owner ($7).
const FINISH_SQL: &str = "UPDATE jobs SET status = $1, outputs = COALESCE($2, outputs), error_code = $3, error = $4, \
     finished_at = $5, progress = CASE WHEN $1 = 'succeeded' THEN 1.0 ELSE progress END, \
     lease_owner = NULL, lease_expires_at = NULL \
     WHERE id = $6 AND lease_owner = $7 AND status IN ('dispatched','running')";

/// One outcome for [`Store::finish_jobs`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobFinish {
    /// The job.
    pub job_id: String,
    /// The worker that must still hold the job's lease for the outcome to count.
    pub owner: String,
    /// A terminal status.
    pub status: JobStatus,
    /// Output media ids (kept as they were when None).
    pub outputs: Option<Vec<String>>,
    /// Error code and message, for failures and cancellations.
    pub error: Option<(String, String)>,
    /// Finish time.
    pub now: i64,
    /// Output media rows, inserted in the finish's transaction only when the
    /// outcome is applied (so a worker that lost its lease leaves no row and
    /// removes none of its successor's). Earlier output rows of the job are
    /// replaced by these.
    pub media: Vec<crate::media::MediaRow>,
    /// The job's prompt must not go on running on its backend (a timeout):
    /// it is recorded as a prompt to cancel there, with the outcome.
    pub cancel_remote: bool,
    /// Settle the job's points hold in the same transaction when the outcome
    /// applies (one commit per job instead of two). A settlement that cannot
    /// apply (no active hold, already settled) is rolled back to its own
    /// savepoint and never costs the batch its outcomes.
    pub settle: Option<FinishSettle>,
}

/// How [`JobFinish::settle`] settles the job's hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishSettle {
    /// The job's account: settlements in one batch lock balances in this
    /// order, so two processes' batches cannot deadlock on PostgreSQL.
    pub account_id: String,
    /// Points to capture (capped at the hold), or None to release it all.
    pub charge: Option<i64>,
    /// Why, for a release (the job's error code).
    pub reason: Option<String>,
    /// Who settles, for the ledger entry.
    pub actor: String,
}

/// What [`Store::finish_jobs_settling`] did with one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The outcome was recorded (the worker still held the lease).
    pub recorded: bool,
    /// What the settlement in the same transaction did: `Captured` or
    /// `Released`, or `NoHold` when the job had no active hold (none was
    /// taken, or it was settled before). None: not asked, or it could not
    /// apply there; settle the job on its own afterwards.
    pub settled: Option<crate::ledger::Settlement>,
}

impl Store {
    /// Writes a new queued job, assigning its fair-queuing key. Returns the row.
    pub async fn insert_job(&self, job: &NewJob, now: i64) -> Result<JobRow, StoreError> {
        let (key_sql, job_sql) = job_insert_sql(self);
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            insert_job_in_tx!(tx, job, now, key_sql, job_sql);
            tx.commit().await?;
        });
        self.get_job(&job.id).await?.ok_or_else(|| StoreError::NotFound { what: "job", id: job.id.clone() })
    }

    /// Atomically claims up to `limit` queued jobs of one service, in priority
    /// then fair-key order, skipping accounts already at their running cap.
    /// On PostgreSQL concurrent claimers skip each other's rows
    /// (`FOR UPDATE SKIP LOCKED`); SQLite serialises writers, so one statement
    /// is atomic on its own.
    pub async fn claim_jobs(&self, req: &ClaimRequest<'_>) -> Result<Vec<JobRow>, StoreError> {
        // A bounded window of candidates keeps each claim O(window), not O(queue).
        // `busy` is joined, not a correlated subquery: SQLite re-ran that
        // GROUP BY once per candidate, which dominated a small claim.
        // The window only has to reach past jobs of accounts at their cap; fair
        // keys interleave accounts, so a few slots per claimed job suffice.
        let window = req.limit * 8 + 32;
        let order = "priority DESC, fair_key, created_at";
        let candidates = format!(
            "busy AS (SELECT account_id, COUNT(*) AS n FROM jobs \
                      WHERE service = $4 AND status IN {ACTIVE} GROUP BY account_id), \
             ranked AS (SELECT c.id, c.priority, c.fair_key, c.created_at, \
                          ROW_NUMBER() OVER (PARTITION BY c.account_id ORDER BY {order}) \
                            + COALESCE(b.n, 0) AS load \
                        FROM cand c LEFT JOIN busy b ON b.account_id = c.account_id), \
             picked AS (SELECT id FROM ranked WHERE load <= $5 ORDER BY {order} LIMIT $6)"
        );
        let set = "status = 'dispatched', lease_owner = $1, lease_expires_at = $2, \
                   dispatched_at = COALESCE(dispatched_at, $3)";
        let sql = match self {
            Store::Sqlite(_) => format!(
                "UPDATE jobs SET {set} WHERE id IN (\
                   WITH cand AS (SELECT id, account_id, priority, fair_key, created_at FROM jobs \
                                 WHERE service = $4 AND status = 'queued' AND run_after <= $3 \
                                 ORDER BY {order} LIMIT $7), \
                   {candidates} SELECT id FROM picked) \
                 RETURNING {JOB_COLUMNS}"
            ),
            Store::Postgres(_) => format!(
                "WITH cand AS (SELECT id, account_id, priority, fair_key, created_at FROM jobs \
                               WHERE service = $4 AND status = 'queued' AND run_after <= $3 \
                               ORDER BY {order} LIMIT $7 FOR UPDATE SKIP LOCKED), \
                 {candidates} \
                 UPDATE jobs SET {set} FROM picked WHERE jobs.id = picked.id \
                 RETURNING {}",
                JOB_COLUMNS.split(", ").map(|c| format!("jobs.{c}")).collect::<Vec<_>>().join(", ")
            ),
        };
        let greatest = self.greatest();
        let clock_sql = format!(
            "INSERT INTO queue_clock (service, vtime) VALUES ($1, $2) \
             ON CONFLICT (service) DO UPDATE SET vtime = {greatest}(queue_clock.vtime, excluded.vtime)"
        );
        // The claim and the clock advance share one transaction: one commit
        // (one WAL flush on PostgreSQL) per claim instead of two, and the clock
        // can never lag behind jobs that were already handed out.
        let mut rows: Vec<JobRow> = with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let rows: Vec<JobRow> = sqlx::query_as(safe(&sql))
                .bind(req.owner)
                .bind(req.now + req.lease_ms)
                .bind(req.now)
                .bind(req.service)
                .bind(req.per_account_running_cap)
                .bind(req.limit)
                .bind(window)
                .fetch_all(&mut *tx)
                .await?;
            if let Some(first) = rows.iter().map(|r| r.fair_key).min() {
                sqlx::query(safe(&clock_sql)).bind(req.service).bind(first).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            rows
        });
        rows.sort_by(|a, b| {
            b.priority.cmp(&a.priority).then(a.fair_key.cmp(&b.fair_key)).then(a.created_at.cmp(&b.created_at))
        });
        Ok(rows)
    }

    /// Renews the leases of every active job held by `owner`. Returns the ids of
    /// those jobs whose cancellation was requested meanwhile.
    pub async fn heartbeat(&self, owner: &str, lease_until: i64) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            sqlx::query(safe(&format!(
                "UPDATE jobs SET lease_expires_at = $1 WHERE lease_owner = $2 AND status IN {ACTIVE}"
            )))
            .bind(lease_until)
            .bind(owner)
            .execute(p)
            .await?;
            let ids: Vec<(String,)> = sqlx::query_as(safe(&format!(
                "SELECT id FROM jobs WHERE lease_owner = $1 AND cancel_requested = TRUE AND status IN {ACTIVE}"
            )))
            .bind(owner)
            .fetch_all(p)
            .await?;
            Ok(ids.into_iter().map(|r| r.0).collect())
        })
    }

    /// Renews the leases of the jobs `owner` is still working on (`ids`;
    /// a job whose worker gave up — say its outcome could not be written
    /// while the database was unreachable — is not renewed, so its lease
    /// lapses and another worker reconciles it). Returns those whose owner
    /// asked to cancel.
    pub async fn heartbeat_jobs(
        &self,
        owner: &str,
        ids: &[String],
        lease_until: i64,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut cancel = vec![];
        for chunk in ids.chunks(500) {
            let list = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "UPDATE jobs SET lease_expires_at = $1 WHERE lease_owner = $2 AND status IN {ACTIVE} \
                 AND id IN ({list}) RETURNING id, cancel_requested"
            );
            with_pool!(self, p => {
                let mut q = sqlx::query_as::<_, (String, bool)>(safe(&sql)).bind(lease_until).bind(owner);
                for id in chunk {
                    q = q.bind(id);
                }
                let rows = q.fetch_all(p).await?;
                cancel.extend(rows.into_iter().filter(|r| r.1).map(|r| r.0));
            });
        }
        Ok(cancel)
    }

    /// Puts jobs whose lease lapsed back in the queue, keeping `backend` and
    /// `remote_id` so the next worker reconciles with the backend before doing
    /// anything else. Returns how many were requeued.
    pub async fn requeue_expired(&self, now: i64) -> Result<u64, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(safe(&format!(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, backend_ahead = NULL \
                 WHERE status IN {ACTIVE} AND lease_expires_at < $1"
            )))
            .bind(now)
            .execute(p)
            .await?;
            Ok(r.rows_affected())
        })
    }

    /// Lets go of every lease `owner` holds (graceful shutdown): the jobs are
    /// requeued at once for another process to reconcile and resume.
    pub async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(safe(&format!(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, backend_ahead = NULL \
                 WHERE lease_owner = $1 AND status IN {ACTIVE}"
            )))
            .bind(owner)
            .execute(p)
            .await?;
            Ok(r.rows_affected())
        })
    }

    /// Records where a job is about to be submitted, BEFORE it is sent, so a
    /// crash right after the send can be reconciled by asking that backend
    /// about `remote_id`. Counts one attempt. False if the lease was lost.
    pub async fn record_submission(
        &self,
        job_id: &str,
        owner: &str,
        backend: &str,
        remote_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.record_submission_within(job_id, owner, backend, remote_id, None).await? == Submission::Recorded)
    }

    /// [`Store::record_submission`], and when `capacity` is given only while
    /// fewer than `capacity` other jobs are dispatched or running on
    /// `backend` — counted in this database, so every process sharing it
    /// sees the same count. The count and the write are one transaction
    /// that excludes every other submission to the same backend (SQLite: its
    /// single writer, taken by the transaction's first statement;
    /// PostgreSQL: a transaction-scoped advisory lock on the backend's
    /// name), so two processes never both take its last slot.
    pub async fn record_submission_within(
        &self,
        job_id: &str,
        owner: &str,
        backend: &str,
        remote_id: &str,
        capacity: Option<i64>,
    ) -> Result<Submission, StoreError> {
        // The job's earlier prompt, if any, may still be on its backend (it
        // could not be reached, or answered "unknown"): it becomes a prompt
        // to cancel there, in the same fenced transaction.
        let orphan_sql = format!(
            "INSERT INTO remote_cancels (backend, remote_id, job_id, created_at) \
             SELECT backend, remote_id, id, $3 FROM jobs WHERE id = $1 AND lease_owner = $2 \
             AND status IN {ACTIVE} AND backend IS NOT NULL AND remote_id IS NOT NULL AND remote_id <> $4 \
             ON CONFLICT (backend, remote_id) DO NOTHING"
        );
        // Same predicate as the partial index jobs_active_backend (migration 0033).
        let busy_sql = format!(
            "SELECT COUNT(*) FROM jobs WHERE backend = $1 AND status IN {ACTIVE} AND id <> $2 \
             AND service = (SELECT service FROM jobs WHERE id = $2)"
        );
        let update_sql = format!(
            "UPDATE jobs SET backend = $1, remote_id = $2, attempts = attempts + 1 \
             WHERE id = $3 AND lease_owner = $4 AND status IN {ACTIVE}"
        );
        macro_rules! body {
            ($tx:ident) => {{
                sqlx::query(safe(&orphan_sql))
                    .bind(job_id)
                    .bind(owner)
                    .bind(crate::now_ms())
                    .bind(remote_id)
                    .execute(&mut *$tx)
                    .await?;
                if let Some(capacity) = capacity {
                    let busy: i64 =
                        sqlx::query_scalar(safe(&busy_sql)).bind(backend).bind(job_id).fetch_one(&mut *$tx).await?;
                    if busy >= capacity {
                        $tx.rollback().await?;
                        return Ok(Submission::Full);
                    }
                }
                let r = sqlx::query(safe(&update_sql))
                    .bind(backend)
                    .bind(remote_id)
                    .bind(job_id)
                    .bind(owner)
                    .execute(&mut *$tx)
                    .await?;
                $tx.commit().await?;
                Ok(if r.rows_affected() == 1 { Submission::Recorded } else { Submission::LeaseLost })
            }};
        }
        match self {
            // The INSERT is a write: it takes SQLite's one write lock before the count is read.
            Store::Sqlite(p) => {
                let mut tx = p.begin_write().await?;
                body!(tx)
            }
            Store::Postgres(p) => {
                let mut tx = p.begin_write().await?;
                if capacity.is_some() {
                    sqlx::query("SELECT pg_advisory_xact_lock(28, hashtext($1))")
                        .bind(backend)
                        .execute(&mut *tx)
                        .await?;
                }
                body!(tx)
            }
        }
    }

    /// Marks a dispatched job as running on its backend.
    pub async fn mark_running(&self, job_id: &str, owner: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, $1), backend_ahead = NULL \
                 WHERE id = $2 AND lease_owner = $3 AND status IN ('dispatched','running')",
            )
            .bind(now)
            .bind(job_id)
            .bind(owner)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Notes how many prompts are ahead of a dispatched job in its backend's
    /// own queue (None: unknown). Fenced: only the lease holder, and only
    /// while the job waits there (`dispatched`). False if nothing changed.
    pub async fn set_backend_ahead(&self, job_id: &str, owner: &str, ahead: Option<i64>) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(
                "UPDATE jobs SET backend_ahead = $1 \
                 WHERE id = $2 AND lease_owner = $3 AND status = 'dispatched'",
            )
            .bind(ahead)
            .bind(job_id)
            .bind(owner)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Moves a job that waited too long in its backend's own queue back to
    /// Station's queue (claimable at once, keeping its fair key), in one
    /// fenced transaction: its prompt there becomes a `remote_cancels` row
    /// (deleted from the backend's queue by whoever next sees the backend
    /// healthy, so a crash right after forgets nothing), the prompt id is
    /// cleared (the next claim submits afresh; `backend` stays, so routing
    /// avoids it) and the submission that never started is not counted as
    /// an attempt. False (nothing written) if the lease was lost or the job
    /// already runs.
    pub async fn requeue_waiting(&self, job_id: &str, owner: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let remember = "INSERT INTO remote_cancels (backend, remote_id, job_id, created_at) \
             SELECT backend, remote_id, id, $2 FROM jobs WHERE id = $1 AND lease_owner = $3 \
             AND status = 'dispatched' AND backend IS NOT NULL AND remote_id IS NOT NULL \
             ON CONFLICT (backend, remote_id) DO NOTHING";
        let requeue = "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, \
             run_after = $1, error = $2, remote_id = NULL, backend_ahead = NULL, progress = 0, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE id = $3 AND lease_owner = $4 AND status = 'dispatched'";
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(remember).bind(job_id).bind(now).bind(owner).execute(&mut *tx).await?;
            let r = sqlx::query(requeue).bind(now).bind(reason).bind(job_id).bind(owner).execute(&mut *tx).await?;
            if r.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Stores the latest progress figure (callers throttle).
    pub async fn set_progress(&self, job_id: &str, owner: &str, progress: f64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(safe(&format!(
                "UPDATE jobs SET progress = $1 WHERE id = $2 AND lease_owner = $3 AND status IN {ACTIVE}"
            )))
            .bind(progress)
            .bind(job_id)
            .bind(owner)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Finishes a job the caller still holds. Returns false (and changes
    /// nothing) when the lease was lost, so an outcome is decided exactly once.
    pub async fn finish_job(
        &self,
        job_id: &str,
        owner: &str,
        status: JobStatus,
        outputs: Option<&[String]>,
        error: Option<(&str, &str)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let finish = JobFinish {
            settle: None,
            job_id: job_id.to_string(),
            owner: owner.to_string(),
            status,
            outputs: outputs.map(<[String]>::to_vec),
            error: error.map(|(c, m)| (c.to_string(), m.to_string())),
            now,
            media: vec![],
            cancel_remote: false,
        };
        Ok(self.finish_jobs(std::slice::from_ref(&finish)).await?[0])
    }

    /// Finishes many jobs in ONE transaction (one commit, so one WAL flush on
    /// PostgreSQL and one write-lock round on SQLite for the whole batch).
    /// Each job is still fenced by its own lease owner: the result says, in
    /// the order given, whether that job's outcome was recorded (false: its
    /// lease was lost and nothing was changed for it). Either every recorded
    /// outcome is committed or, on error, none is.
    pub async fn finish_jobs(&self, batch: &[JobFinish]) -> Result<Vec<bool>, StoreError> {
        Ok(self.finish_jobs_settling(batch).await?.into_iter().map(|f| f.recorded).collect())
    }

    /// [`Store::finish_jobs`], also settling in the same transaction the
    /// points hold of each recorded job that asks for it
    /// ([`JobFinish::settle`]), each behind its own savepoint.
    pub async fn finish_jobs_settling(&self, batch: &[JobFinish]) -> Result<Vec<Finished>, StoreError> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut applied = Vec::with_capacity(batch.len());
            for f in batch {
                debug_assert!(f.status.is_terminal());
                let outputs = f.outputs.as_ref().map(|o| serde_json::to_string(o).unwrap_or_else(|_| "[]".into()));
                let (code, msg) = match &f.error {
                    Some((c, m)) => (Some(c.as_str()), Some(m.as_str())),
                    None => (None, None),
                };
                let r = sqlx::query(safe(FINISH_SQL))
                    .bind(f.status.as_str())
                    .bind(outputs)
                    .bind(code)
                    .bind(msg)
                    .bind(f.now)
                    .bind(&f.job_id)
                    .bind(&f.owner)
                    .execute(&mut *tx)
                    .await?;
                let done = r.rows_affected() == 1;
                if done && f.cancel_remote {
                    sqlx::query(crate::backends::REMEMBER_CURRENT_PROMPT_SQL)
                        .bind(&f.job_id)
                        .bind(f.now)
                        .execute(&mut *tx)
                        .await?;
                }
                // Fenced with the outcome: only the lease holder's outputs
                // replace the job's media rows, in the same transaction.
                if done && !f.media.is_empty() {
                    sqlx::query("DELETE FROM media WHERE job_id = $1 AND kind = 'output'")
                        .bind(&f.job_id)
                        .execute(&mut *tx)
                        .await?;
                    for m in &f.media {
                        sqlx::query(crate::media::INSERT_MEDIA_SQL)
                            .bind(&m.id).bind(&m.hash).bind(&m.mime).bind(m.size).bind(m.width).bind(m.height)
                            .bind(&m.account_id).bind(&m.job_id).bind(&m.kind).bind(m.created_at)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                applied.push(done);
            }
            let mut settled: Vec<Option<crate::ledger::Settlement>> = vec![None; batch.len()];
            let mut order: Vec<(&str, usize)> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| applied[*i])
                .filter_map(|(i, f)| Some((f.settle.as_ref()?.account_id.as_str(), i)))
                .collect();
            order.sort_unstable();
            for (_, i) in order {
                let f = &batch[i];
                let Some(s) = &f.settle else { continue };
                let (state, charge) = match s.charge {
                    Some(c) => ("captured", c.max(0)),
                    None => ("released", 0),
                };
                let mut op = crate::ledger::settle_op(&f.job_id, state, charge, &s.actor, s.reason.as_deref(), None, f.now);
                let kind = op.kind;
                let mut sp = sqlx::Acquire::begin(&mut tx).await?;
                match crate::ledger::apply_in_tx!(sp, op) {
                    Ok(crate::ledger::InTx::Done(crate::ledger::Applied::Settled { amount, charged })) => {
                        sp.commit().await?;
                        settled[i] = Some(crate::ledger::settlement_of(kind, amount, charged));
                    }
                    Ok(crate::ledger::InTx::NoActiveHold) => {
                        sp.rollback().await?;
                        settled[i] = Some(crate::ledger::Settlement::NoHold);
                    }
                    // Not settled here (or a statement failed): undone to the
                    // savepoint; the caller settles it on its own.
                    _ => sp.rollback().await?,
                }
            }
            tx.commit().await?;
            Ok(applied.into_iter().zip(settled).map(|(recorded, settled)| Finished { recorded, settled }).collect())
        })
    }

    /// Sends a job back to the queue after a transient failure, not claimable
    /// before `run_after`. The last submission's `backend` and `remote_id` are
    /// KEPT: an unreachable backend may still hold (and later run) the prompt,
    /// so the next attempt reconciles with it first (follow or collect rather
    /// than run twice) and routing avoids it if it has to resubmit.
    pub async fn retry_job(&self, job_id: &str, owner: &str, run_after: i64, error: &str) -> Result<bool, StoreError> {
        self.retry_job_counting(job_id, owner, run_after, error, false).await
    }

    /// [`Store::retry_job`], also counting one attempt when `count_attempt`
    /// (a try that never reached a backend), in the same fenced statement.
    pub async fn retry_job_counting(
        &self,
        job_id: &str,
        owner: &str,
        run_after: i64,
        error: &str,
        count_attempt: bool,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query(safe(&format!(
                "UPDATE jobs SET status = 'queued', run_after = $1, error = $2, \
                 lease_owner = NULL, lease_expires_at = NULL, progress = 0, backend_ahead = NULL, \
                 attempts = attempts + $5 \
                 WHERE id = $3 AND lease_owner = $4 AND status IN {ACTIVE}"
            )))
            .bind(run_after)
            .bind(error)
            .bind(job_id)
            .bind(owner)
            .bind(i64::from(count_attempt))
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Cancels a job: a queued one at once (returns its new row), an active one
    /// by flagging it for its worker. Terminal jobs are returned unchanged.
    pub async fn cancel_job(&self, job_id: &str, now: i64) -> Result<JobRow, StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', finished_at = $1, error_code = 'cancelled', \
                 error = 'cancelled by request' WHERE id = $2 AND status = 'queued'",
            )
            .bind(now)
            .bind(job_id)
            .execute(p)
            .await?;
            sqlx::query(safe(&format!(
                "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND status IN {ACTIVE}"
            )))
            .bind(job_id)
            .execute(p)
            .await?;
        });
        self.get_job(job_id).await?.ok_or_else(|| StoreError::NotFound { what: "job", id: job_id.to_string() })
    }

    /// One job by id.
    pub async fn get_job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(safe(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")))
                .bind(job_id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Ids of jobs starting with `prefix`, in id order, at most `limit`.
    /// `prefix` must hold only characters of job ids (hex digits and `-`),
    /// so it carries no `LIKE` wildcard.
    pub async fn job_ids_with_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        debug_assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        with_pool!(self, p => {
            Ok(sqlx::query_scalar("SELECT id FROM jobs WHERE id LIKE $1 ORDER BY id LIMIT $2")
                .bind(format!("{prefix}%"))
                .bind(limit)
                .fetch_all(p)
                .await?)
        })
    }

    /// Jobs newest first, filtered and paged.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.account_id.is_some() {
            sql += &format!(" AND account_id = {}", next());
        }
        if f.status.is_some() {
            sql += &format!(" AND status = {}", next());
        }
        if f.tool_id.is_some() {
            sql += &format!(" AND tool_id = {}", next());
        }
        if f.before_id.is_some() {
            sql += &format!(" AND id < {}", next());
        }
        sql += &format!(" ORDER BY id DESC LIMIT {}", next());
        with_pool!(self, p => {
            let mut q = sqlx::query_as::<_, JobRow>(safe(&sql));
            if let Some(a) = &f.account_id { q = q.bind(a); }
            if let Some(s) = f.status { q = q.bind(s.as_str()); }
            if let Some(t) = &f.tool_id { q = q.bind(t); }
            if let Some(b) = &f.before_id { q = q.bind(b); }
            Ok(q.bind(f.limit.clamp(1, 1000)).fetch_all(p).await?)
        })
    }

    /// A job with what a status read shows beside it, in one query: the
    /// owner's mark (rating, hidden) and, for a queued job only, its queue
    /// position (the same counts as [`Store::queue_position`]).
    pub async fn job_status(&self, job_id: &str) -> Result<Option<JobStatusRow>, StoreError> {
        let sql: &'static str = *JOB_STATUS_SQL;
        with_pool!(self, p => {
            Ok(sqlx::query_as::<_, JobStatusRow>(sql)
                .bind(job_id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// How many queued jobs of the same service will be claimed before `job`.
    pub async fn queue_position(&self, job: &JobRow) -> Result<QueuePosition, StoreError> {
        with_pool!(self, p => {
            let (ahead,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM jobs WHERE service = $1 AND status = 'queued' AND id <> $5 AND \
                 (priority > $2 OR (priority = $2 AND (fair_key < $3 OR (fair_key = $3 AND created_at <= $4))))",
            )
            .bind(&job.service)
            .bind(job.priority)
            .bind(job.fair_key)
            .bind(job.created_at)
            .bind(&job.id)
            .fetch_one(p)
            .await?;
            let (running,): (i64,) = sqlx::query_as(safe(&format!(
                "SELECT COUNT(*) FROM jobs WHERE service = $1 AND status IN {ACTIVE}"
            )))
            .bind(&job.service)
            .fetch_one(p)
            .await?;
            Ok(QueuePosition { ahead, running })
        })
    }

    /// Mean run time (ms) of the last `n` successful jobs of a tool, for ETAs.
    pub async fn recent_run_ms(&self, tool_id: &str, n: i64) -> Result<Option<f64>, StoreError> {
        with_pool!(self, p => {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "SELECT finished_at - COALESCE(started_at, dispatched_at) FROM jobs \
                 WHERE tool_id = $1 AND status = 'succeeded' AND finished_at IS NOT NULL \
                 AND COALESCE(started_at, dispatched_at) IS NOT NULL ORDER BY finished_at DESC LIMIT $2",
            )
            .bind(tool_id)
            .bind(n)
            .fetch_all(p)
            .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            Ok(Some(rows.iter().map(|r| r.0 as f64).sum::<f64>() / rows.len() as f64))
        })
    }

    /// Counts per status and the oldest queued job.
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        with_pool!(self, p => {
            let by_status: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
                    .fetch_all(p)
                    .await?;
            let (oldest,): (Option<i64>,) =
                sqlx::query_as("SELECT MIN(created_at) FROM jobs WHERE status = 'queued'")
                    .fetch_one(p)
                    .await?;
            Ok(QueueStats { by_status, oldest_queued_at: oldest })
        })
    }

    /// Per service: jobs waiting for a worker and the creation time of the
    /// oldest of them (for the metrics exporter's queue gauges).
    pub async fn queued_by_service(&self) -> Result<Vec<ServiceQueued>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as(
                "SELECT service, COUNT(*) AS queued, MIN(created_at) AS oldest_created_at FROM jobs \
                 WHERE status = 'queued' GROUP BY service ORDER BY service",
            )
            .fetch_all(p)
            .await?)
        })
    }
}
